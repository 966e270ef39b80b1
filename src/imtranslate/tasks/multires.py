"""The multi-resolution, multi-loss translator (SPEC S1).

The input is shrunk in steps of 1/2 into an N-level pyramid (the original included); one
encoder per level, finer features fused coarse-ward into a fixed-width bottleneck, and a
cascaded decoder that takes each level's input features in as it climbs back up
(``nets/multires.py``). Training sees N outputs, one per level, each with its own losses:

    L = sum_i w_i * ( lambda_l1 * |out_i - B_i| + lambda_gan * GAN(D_i(A_i, out_i)) + lambda_style * Style(out_i, B_i) )

with one PatchGAN ``D_i`` per level (or one shared by the levels, ``discriminator=shared``) and the
style loss on Gram matrices of VGG-19 features. Cheaper-step options (``style_layers_coarse``,
``style_every``, ``coarse_every``, ``n_enc_blocks_coarse``) are measured in docs/BENCHMARKS.md §1;
the default step is the cheaper one that won at equal CPU time there (style losses to relu3_1,
to relu2_1 below the finest active level, every 2nd step), the original is one config away.

Schedule (coarse to fine, then joint): stage 0 trains the coarsest module alone, stage k adds
level k (only its modules are trained while ``freeze_trained_levels``), and the last stage
trains the whole model jointly. Inference: N pyramid inputs, one output of the input's size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from ..data import build_pyramid, input_read_mode
from ..data.pyramid import PyramidMethod
from ..errors import ConfigError
from ..losses import GANLoss, GanMode, VGGLoss, l1_loss
from ..nets.layers import Norm
from ..nets.vgg import VGG19Features
from . import register_task
from .base import Task, check_gan_options, set_requires_grad



@dataclass
class MultiResConfig:
    n_levels: int = 3  # pyramid levels N (the original + N-1 halvings)
    pyramid_method: PyramidMethod = "bilinear"  # nearest | bilinear | bicubic | lanczos | area (labels: nearest)
    ngf: int = 32  # width of the finest level; doubles per coarser level
    max_channels: int = 256  # width cap and the bottleneck's width
    n_enc_blocks: int = 1
    n_bottleneck_down: int = 2
    n_res_blocks: int = 3
    n_dec_blocks: int = 1
    norm: Norm = "instance"  # batch | instance | none
    fusion: Literal["concat", "sum"] = "concat"  # how a coarser level's features join a finer one
    ndf: int = 32  # per-level PatchGAN width
    n_layers_d: int = 3  # of the finest level's D (70x70 patches); one fewer per coarser level
    norm_d: Norm = "instance"
    gan_mode: GanMode = "lsgan"  # lsgan | vanilla | hinge
    lambda_l1: float = 100.0
    lambda_gan: float = 1.0
    lambda_style: float = 10.0  # Gram-matrix style loss (relative Gram error, see style_norm)
    style_norm: Literal["relative", "none"] = "relative"  # relative: |G(out)-G(B)|^2/|G(B)|^2, independent of VGG feature scale; none: MSE
    # style layers of the finest active level; the original step used relu1_1..relu4_1 (the deepest
    # layer is the longest VGG pass; docs/BENCHMARKS.md §1.2: three layers, coarse levels two, style
    # loss every 2nd step halves the step and beat pix2pix and pix2pixHD at equal time on all three
    # datasets at 4 CPU minutes and on the photographs at 15)
    style_layers: list[str] = field(default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1"])
    level_weights: list[float] = field(default_factory=list)  # per level, coarsest first; [] = equal
    stage_steps: list[int] = field(default_factory=list)  # steps of each coarse-to-fine stage; [] = stage_fraction
    stage_fraction: float = 0.15  # with stage_steps empty: each of the N stages gets this share of train.steps
    freeze_trained_levels: bool = True  # in stage k only level k's modules learn; joint stage: all
    vgg_weights: str = "imagenet"  # imagenet (torch cache) | random (tests only) | path to a file
    lambda_temporal: float = 0.0  # > 0: temporal loss on a randomly warped copy of the input (steadier video)
    # ---- cheaper steps (docs/BENCHMARKS.md §1 profiles them). The defaults are the fastest variant
    # that beat pix2pix and pix2pixHD at equal CPU time (§1.2); the original step is
    # style_layers=[relu1_1,relu2_1,relu3_1,relu4_1] style_layers_coarse=[] style_every=1
    # per_level: one PatchGAN per level, one layer fewer per coarser level (the original);
    # shared: ONE PatchGAN whose weights judge every level's output at that level's own size (a
    # pix2pixHD-style multi-scale D whose scales come from the pyramid instead of average pooling);
    # its depth is n_layers_d, lowered until it fits the coarsest level
    discriminator: Literal["per_level", "shared"] = "per_level"
    # style layers below the finest active level, of those in style_layers; [] = style_layers
    # (shallower = a shorter VGG pass)
    style_layers_coarse: list[str] = field(default_factory=lambda: ["relu1_1", "relu2_1"])
    style_every: int = 2  # the style loss (its VGG passes) every k steps, at every level; 1 = every step
    coarse_every: int = 1  # losses and D updates of the levels below the finest active one every k steps; 1 = every step
    n_enc_blocks_coarse: int = -1  # residual blocks in the encoders of the coarser levels; -1 = n_enc_blocks


@register_task
class MultiResTask(Task):
    name = "multires"
    Config = MultiResConfig

    @classmethod
    def check_config(cls, cfg) -> None:
        m = cfg.model
        if m.n_levels < 1:
            raise ConfigError("model.n_levels must be at least 1")
        if m.stage_steps and len(m.stage_steps) != m.n_levels:
            raise ConfigError(f"model.stage_steps needs {m.n_levels} entries (one per coarse-to-fine stage), "
                              f"got {len(m.stage_steps)}")
        if m.level_weights and len(m.level_weights) != m.n_levels:
            raise ConfigError(f"model.level_weights needs {m.n_levels} entries (coarsest first)")
        check_gan_options(m)
        if m.style_every < 1 or m.coarse_every < 1:
            raise ConfigError("model.style_every and model.coarse_every must be at least 1 (1 = every step)")
        if m.discriminator not in ("per_level", "shared"):
            raise ConfigError(f"model.discriminator must be per_level or shared, got {m.discriminator!r}")
        if sum(cls.stage_bounds(cfg)[:-1]) > cfg.train.steps and not m.stage_steps:
            raise ConfigError("model.stage_fraction * n_levels exceeds the run; lower model.stage_fraction")

    # ---- schedule ----------------------------------------------------------------------------
    @staticmethod
    def stage_bounds(cfg) -> list[int]:
        """Steps of each stage: N coarse-to-fine stages, then the joint stage (the rest of the run)."""
        m, steps = cfg.model, cfg.train.steps
        lengths = list(m.stage_steps) or [int(round(m.stage_fraction * steps))] * m.n_levels
        return lengths + [max(0, steps - sum(lengths))]

    def stage_index(self, step: int) -> int:
        """0..N-1: coarse-to-fine stage adding level k; N: joint."""
        edge = 0
        for k, length in enumerate(self.stage_bounds(self.cfg)):
            edge += length
            if step < edge:
                return k
        return self.m.n_levels

    def stage_at(self, step: int) -> str:
        k = self.stage_index(step)
        return "joint" if k >= self.m.n_levels else f"level{k}"

    def on_step_start(self, step: int) -> str | None:
        k = self.stage_index(step)
        if k == self.stage:
            return None
        self.set_stage(k)
        n = self.m.n_levels
        return (f"stage joint: all {n} levels train together" if k >= n
                else f"stage level{k}: {k + 1} of {n} levels active, training level {k}")

    def set_stage(self, k: int) -> None:
        G, n = self.nets["G"], self.m.n_levels
        self.stage = k
        active = n if k >= n else k + 1
        G.set_active_levels(active)
        if k >= n or not self.m.freeze_trained_levels:
            set_requires_grad(G, True)
        else:
            set_requires_grad(G, False)
            for p in G.level_parameters(k):
                p.requires_grad_(True)
        if self.m.discriminator == "per_level":
            for i in range(n):  # only the discriminators of active levels learn
                set_requires_grad(self.nets[f"D{i}"], i < active)

    # ---- construction ------------------------------------------------------------------------
    def build(self) -> None:
        m = self.m
        G = self.add_net("G", "multires", in_channels=self.in_channels, out_channels=self.out_channels,
                         n_levels=m.n_levels, ngf=m.ngf, max_channels=m.max_channels, n_enc_blocks=m.n_enc_blocks,
                         n_bottleneck_down=m.n_bottleneck_down, n_res_blocks=m.n_res_blocks,
                         n_dec_blocks=m.n_dec_blocks, norm=m.norm, fusion=m.fusion,
                         **({"n_enc_blocks_coarse": m.n_enc_blocks_coarse} if m.n_enc_blocks_coarse >= 0 else {}))
        coarsest = self.cfg.data.crop_size // 2 ** (m.n_levels - 1)
        c_in = self.in_channels + self.out_channels
        if m.discriminator == "shared":
            # the deepest PatchGAN (at most n_layers_d) that still fits the coarsest level: 3 * 2**n px
            n_layers = m.n_layers_d
            while n_layers > 1 and coarsest and coarsest < 3 * 2 ** n_layers:
                n_layers -= 1
            D = self.add_net("D", "patch", in_channels=c_in, ndf=m.ndf, n_layers=n_layers, norm=m.norm_d)
            self.check_patch_size(D, coarsest, "the shared D (coarsest level)")
            Ds = [D]
        else:
            # one PatchGAN per level; a coarser level's pixels cover twice the area, so one layer
            # fewer per halving keeps every D's receptive field the same patch of the scene
            Ds = [self.add_net(f"D{i}", "patch", in_channels=c_in, ndf=m.ndf,
                               n_layers=max(1, m.n_layers_d - (m.n_levels - 1 - i)), norm=m.norm_d)
                  for i in range(m.n_levels)]
            for i, D in enumerate(Ds):
                self.check_patch_size(D, self.cfg.data.crop_size // 2 ** (m.n_levels - 1 - i), f"D{i} (level {i})")
        self.gan = GANLoss(m.gan_mode)
        self.vgg_loss = self.vgg_loss_coarse = None
        if m.lambda_style > 0:
            def style_loss_of(layers):
                vgg = VGG19Features(layers=tuple(layers), weights=m.vgg_weights).to(self.device)
                return VGGLoss(vgg, perceptual_layers=(), perceptual_weights=(), style_layers=tuple(layers),
                               style_norm=m.style_norm)
            self.vgg_loss = style_loss_of(m.style_layers)
            # coarse levels: a VGG-19 cut at their (shallower) layers, so their pass is shorter
            # (those of style_layers_coarse that style_layers has: the default [relu1_1, relu2_1]
            # must not reach deeper than a user's shorter style_layers)
            coarse = [layer for layer in m.style_layers_coarse if layer in m.style_layers]
            self.vgg_loss_coarse = (self.vgg_loss if not coarse or coarse == list(m.style_layers)
                                    else style_loss_of(coarse))
        self.add_optimizer("G", G.parameters(), self.cfg.train.lr_g)
        self.add_optimizer("D", [p for D in Ds for p in D.parameters()], self.cfg.train.lr_d)
        w = list(m.level_weights) or [1.0] * m.n_levels
        self.level_weights = w
        self.input_is_label = input_read_mode(self.cfg.data) == "label"
        self.stage = -1
        self.set_stage(self.stage_index(0))

    # ---- training ------------------------------------------------------------------------------
    def pyramids(self, batch: dict):
        A = build_pyramid(batch["A"], self.m.n_levels, self.m.pyramid_method, is_label=self.input_is_label)
        # targets are pictures: always the configured interpolation (never nearest-forced)
        B = build_pyramid(batch["B"], self.m.n_levels, self.m.pyramid_method)
        return A, B

    def level_discriminators(self, active: int) -> list:
        """The discriminator judging each active level's output (coarsest first): its own PatchGAN,
        or the one shared D for every level (``model.discriminator``)."""
        if self.m.discriminator == "shared":
            return [self.nets["D"]] * active
        return [self.nets[f"D{i}"] for i in range(active)]

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        G, m = self.nets["G"], self.m
        A_pyr, B_pyr = self.pyramids(batch)  # coarsest first
        active = G.active_levels
        Ds = self.level_discriminators(active)
        w = self.level_weights[:active]
        wsum = sum(w)
        # levels with losses this step: the finest active one always, the coarser ones every
        # coarse_every steps (a skipped level's terms are absent; the weights still divide by wsum)
        on = [i == active - 1 or step % m.coarse_every == 0 for i in range(active)]
        with_style = self.vgg_loss is not None and step % m.style_every == 0
        with self.autocast():
            outs = G(A_pyr, return_all=True)  # list of `active` tensors, coarsest first

        # ---- D phase: every active level's discriminator on (input, real) vs (input, fake)
        with self.autocast():
            loss_d = sum(wi * 0.5 * self.gan.d_loss(D(torch.cat([a, b], 1)), D(torch.cat([a, o.detach()], 1)))
                         for wi, D, a, b, o, k in zip(w, Ds, A_pyr, B_pyr, outs, on) if k) / wsum
        self.backward_step(loss_d, "D")

        # ---- G phase: L1 + GAN + style at every active level
        unique_Ds = list(dict.fromkeys(Ds))
        frozen = [[p.requires_grad for p in D.parameters()] for D in unique_Ds]
        set_requires_grad(unique_Ds, False)
        logs = {}
        total_l1 = total_gan = total_style = 0.0
        with self.autocast():
            for i, (wi, D, a, b, o) in enumerate(zip(w, Ds, A_pyr, B_pyr, outs)):
                if not on[i]:
                    continue
                l1 = l1_loss(o.float(), b)
                gan = self.gan.g_loss(D(torch.cat([a, o], 1)))
                vgg_loss = self.vgg_loss if i == active - 1 else self.vgg_loss_coarse
                style = vgg_loss(o.float(), b)["style"] if with_style else o.new_zeros(())
                total_l1 = total_l1 + wi * l1
                total_gan = total_gan + wi * gan
                total_style = total_style + wi * style
                logs[f"l1_level{i}"] = float(l1.detach())
            total_l1, total_gan, total_style = total_l1 / wsum, total_gan / wsum, total_style / wsum
            loss_g = m.lambda_l1 * total_l1 + m.lambda_gan * total_gan + m.lambda_style * total_style
            if m.lambda_temporal > 0:  # on the finest active output
                loss_t = self.temporal_term(
                    batch["A"], outs[-1],
                    lambda a: G(build_pyramid(a, m.n_levels, m.pyramid_method, is_label=self.input_is_label),
                                return_all=True)[-1],
                    nearest=self.input_is_label)
                loss_g = loss_g + m.lambda_temporal * loss_t
                logs["G_temporal"] = float(loss_t.detach())
        self.backward_step(loss_g, "G")
        for D, flags in zip(unique_Ds, frozen):
            for p, f in zip(D.parameters(), flags):
                p.requires_grad_(f)
        logs.update(loss_D=loss_d.item(), loss_G=loss_g.item(), G_l1=float(total_l1.detach()),
                    G_gan=float(total_gan.detach()), G_style=float(total_style.detach()))
        return logs

    # ---- inference -----------------------------------------------------------------------------
    @classmethod
    def size_multiple(cls, G, cfg) -> int:
        return int(G.multiple)

    def validation_translate(self, G, batch) -> torch.Tensor:
        G.set_active_levels(self.nets["G"].active_levels)  # the EMA copy follows the schedule too
        return self.translate(G, batch["A"], self.cfg)

    @classmethod
    def translate(cls, G, A, cfg, extras=None, batch=None, **options) -> torch.Tensor:
        m = cfg.model
        pyr = build_pyramid(A, m.n_levels, m.pyramid_method, is_label=input_read_mode(cfg.data) == "label")
        out = G(pyr, return_all=True)[-1]  # the finest active level
        if out.shape[-2:] != A.shape[-2:]:
            # mid-schedule (finer levels not trained yet): bring the output to full size for metrics
            out = F.interpolate(out, size=A.shape[-2:], mode="bilinear", align_corners=False)
        return out
