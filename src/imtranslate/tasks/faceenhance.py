"""Face enhancement with dynamic degradation (SPEC S5, seed 003): task ``faceenhance``.

Training pairs are made on the fly: a good face ``y`` (an aligned crop, or a built-in synthetic
face) is degraded by the typed pipeline of ``data/degradations.py`` at the task's current
coefficients ``c`` (one per step, in [0, 1]): ``x = P_c(y)``. Phases of one step::

    e = G(x)                                           # nets/face_enhancer.py
    D step:  GAN(D(y) -> real) + GAN(D(e.detach()) -> fake)
    G step:  lambda_l1 |e - y| + lambda_perceptual sum_l w_l |phi_l(e) - phi_l(y)|
             + lambda_gan GAN(D(e) -> real)
             + lambda_identity (1 - cos(R(e), R(y)))       # R: ArcFace IResNet (model.identity)
             + lambda_distill (|e - T(x)| + mean_l MSE(A_l(f_l^G), f_l^T))   # model.teacher=CKPT

**Dynamic degradation.** Every ``adapt_every`` steps D scores the batch's degraded, real and
enhanced faces; with ``m_x, m_y, m_e`` the mean of D's logits over the pixels of its map and
the number of images of each kind, the *augmentation factor* is

    a = (m_e - m_x) / (m_y - m_x)        (0 when |m_y - m_x| < 1e-6)

how far the enhanced faces have moved from the degraded ones towards the real ones, in D's own
eyes: ``a ~ 0`` when G undoes nothing, ``a ~ 1`` when D cannot tell enhanced from real. It is a
ratio of differences, so it does not depend on where D's logits sit (they drift during training)
nor on their scale. If ``a > band[1]`` the degradations are too easy for the generator now, and
every coefficient is raised by ``adapt_step``; if ``a < band[0]`` they are too hard and every
coefficient is lowered; inside the band they stay (clamped to ``coef_range``). The
coefficients, the last factor and the history are task state: logged (TensorBoard), saved in
checkpoints, restored exactly on resume.

Held-out faces (validation and ``imtranslate eval``) are degraded at the *config's*
coefficients with fixed seeds, so figures of runs with and without adaptation compare.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import metrics
from ..data.datasets import FolderPairs, check_dataset, input_kind, split_records
from ..data.degrade import SeededItems
from ..data.degradations import DEGRADATION_TYPES, DOWNSCALE_KERNELS, DegradationStep, apply_pipeline
from ..errors import ConfigError
from ..losses import DistillLoss, FeatureTaps, GANLoss, GanMode, identity_loss, identity_similarity, l1_loss
from ..losses.perceptual import PERCEPTUAL_LAYERS, PERCEPTUAL_WEIGHTS
from ..nets.vgg import LAYER_NAMES, VGG19Features
from . import register_task
from .base import Task, set_requires_grad

_PERCEPTUAL_WEIGHT = dict(zip(PERCEPTUAL_LAYERS, PERCEPTUAL_WEIGHTS))


@dataclass
class FaceEnhanceConfig:
    # ---- the generator (nets/face_enhancer.py): widths per level, finest first
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 128])  # encoder
    dec_widths: list[int] = field(default_factory=list)  # decoder; [] = widths
    latent_dim: int = 128  # the attribute vector of the mapping network
    n_mapping: int = 2  # linear layers of the mapping network
    d_widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # discriminator
    # ---- degradation pipeline (data/degradations.py), in order, one coefficient each
    degradations: list[str] = field(default_factory=lambda: ["gaussian_blur", "downscale", "gaussian_noise", "jpeg"])
    coefficients: list[float] = field(default_factory=lambda: [0.3, 0.3, 0.2, 0.4])  # start (and held-out) values
    kernel: Literal["bicubic", "bilinear", "area", "nearest"] = "bicubic"  # the downscale step's kernel
    spread: float = 0.5  # each face draws its strength in [c (1 - spread), c]
    # ---- dynamic degradation
    dynamic: bool = True  # adapt the coefficients from D's outputs (module doc)
    adapt_every: int = 50  # steps between adaptations
    band: list[float] = field(default_factory=lambda: [0.3, 0.7])  # target band of the augmentation factor
    adapt_step: float = 0.05  # how far each coefficient moves per adaptation
    coef_range: list[float] = field(default_factory=lambda: [0.05, 1.0])  # the coefficients stay inside
    # ---- losses
    lambda_l1: float = 1.0
    lambda_perceptual: float = 0.1  # VGG feature L1 (pix2pixHD's layer weights); needs VGG weights
    perceptual_layers: list[str] = field(default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1"])
    vgg_weights: str = "imagenet"  # imagenet (search) | random (tests only) | path
    lambda_gan: float = 0.01
    gan_mode: GanMode = "lsgan"
    identity: str = "arcface"  # arcface (search the weights folders) | off | random (tests) | path to the file
    lambda_identity: float = 0.1
    teacher: str = ""  # a faceenhance checkpoint to distil from ("" = none)
    lambda_distill: float = 1.0  # output + decoder-feature distillation from the teacher
    # ---- channel reduction in rounds while training (SPEC S5; train/pruning.py, docs/FACE.md)
    prune_rounds: int = 0  # 0: off; R: the run trains in R + 1 rounds with a pruning round after each of the first R
    prune_ratio: float = 0.25  # share of each conv layer's channels cut per round (halved for a layer that fails)
    prune_quality: str = "psnr:30"  # each cut alone vs the net before the cut on held-out faces: psnr:DB | ssim:X | l1:X
    prune_importance: Literal["activation", "l2"] = "activation"  # which channels go first


class _HeldOut(Dataset):
    """Marks items as held out, so their degradation uses the config's coefficients."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return {**self.ds[i], "heldout": torch.tensor(True)}

    def __getattr__(self, name):
        if name == "ds":
            raise AttributeError(name)
        return getattr(self.ds, name)


def pipeline_of(m) -> tuple[DegradationStep, ...]:
    """The degradation steps of a ``faceenhance`` model config (at the config's coefficients)."""
    return tuple(DegradationStep(t, float(c), m.kernel) for t, c in zip(m.degradations, m.coefficients))


def augmentation_factor(m_degraded: float, m_real: float, m_enhanced: float) -> float:
    """``(m_e - m_x) / (m_y - m_x)``: how far enhanced moved from degraded towards real (module doc)."""
    gap = m_real - m_degraded
    if abs(gap) < 1e-6:
        return 0.0
    return float((m_enhanced - m_degraded) / gap)


def adapt_coefficients(coefs: list[float], factor: float, band, step: float, lo: float, hi: float) -> list[float]:
    """Raise every coefficient by ``step`` above the band, lower it below, keep it inside; clamp."""
    move = step if factor > band[1] else -step if factor < band[0] else 0.0
    return [float(min(max(c + move, lo), hi)) for c in coefs]


def d_mean(D, x: torch.Tensor) -> float:
    """D's mean logit over its map's pixels and the images of ``x``."""
    return float(D(x)[0][-1].float().mean())


@register_task
class FaceEnhanceTask(Task):
    name = "faceenhance"
    Config = FaceEnhanceConfig

    @classmethod
    def check_config(cls, cfg) -> None:
        m, d = cfg.model, cfg.data
        if len(m.degradations) != len(m.coefficients):
            raise ConfigError(f"model.degradations ({len(m.degradations)}) and model.coefficients "
                              f"({len(m.coefficients)}) must have one entry each")
        bad = [t for t in m.degradations if t not in DEGRADATION_TYPES]
        if bad:
            raise ConfigError(f"model.degradations: unknown {bad}; known: {', '.join(DEGRADATION_TYPES)}")
        if any(not 0 <= c <= 1 for c in m.coefficients):
            raise ConfigError(f"model.coefficients must lie in [0, 1], got {list(m.coefficients)}")
        if m.kernel not in DOWNSCALE_KERNELS:
            raise ConfigError(f"model.kernel: choose one of {', '.join(DOWNSCALE_KERNELS)}")
        if len(m.band) != 2 or m.band[0] > m.band[1]:
            raise ConfigError(f"model.band must be [low, high] with low <= high, got {list(m.band)}")
        if len(m.coef_range) != 2 or not 0 <= m.coef_range[0] <= m.coef_range[1] <= 1:
            raise ConfigError(f"model.coef_range must be [low, high] inside [0, 1], got {list(m.coef_range)}")
        if m.adapt_every < 1:
            raise ConfigError(f"model.adapt_every must be >= 1, got {m.adapt_every}")
        bad = [n for n in m.perceptual_layers if n not in LAYER_NAMES]
        if bad:
            raise ConfigError(f"model.perceptual_layers: {bad} are not VGG-19 layers")
        if m.prune_rounds < 0 or not 0 < m.prune_ratio < 1:
            raise ConfigError(f"model.prune_rounds must be >= 0 and model.prune_ratio in (0, 1), got "
                              f"{m.prune_rounds} and {m.prune_ratio}")
        if m.prune_rounds:
            from ..prune.rounds import parse_quality

            parse_quality(m.prune_quality)
        if d.crop_size and d.crop_size % (2 ** (len(m.widths) - 1)):
            raise ConfigError(f"data.crop_size={d.crop_size} must be a multiple of 2**(len(model.widths) - 1) = "
                              f"{2 ** (len(m.widths) - 1)}")

    # ---- data ---------------------------------------------------------------------------------
    @staticmethod
    def require_faces(cfg) -> None:
        """The data must be RGB face crops (checked when the task is built and before data is read)."""
        d = cfg.data
        if d.dataset not in ("photos", "synthetic_faces"):
            raise ConfigError(f"faceenhance reads good face crops and degrades them itself: use data.dataset="
                              f"synthetic_faces (built in) or data.dataset=photos with data.root=FOLDER, not "
                              f"data.dataset={d.dataset}")
        if input_kind(d) != "rgb" or d.output_channels != 3:
            raise ConfigError("faceenhance works on RGB faces: data.input_kind=rgb and data.output_channels=3")

    @classmethod
    def check_data(cls, cfg) -> dict:
        cls.require_faces(cfg)
        return check_dataset(cfg.data)

    @classmethod
    def build_dataset(cls, cfg, split: str):
        cls.require_faces(cfg)
        recs = split_records(cfg.data)[split]
        if split == "train" and cfg.data.max_items > 0:
            recs = recs[: cfg.data.max_items]
        ds = SeededItems(FolderPairs(recs, cfg.data, train=split == "train", seed=cfg.train.seed),
                         seed=cfg.train.seed, train=split == "train")
        return ds if split == "train" else _HeldOut(ds)

    @classmethod
    def eval_inputs(cls, batch: dict, cfg) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out faces degraded by the config's pipeline (fixed seeds), the face the target."""
        good = batch["B"] if "B" in batch else batch["A"]
        seeds = torch.arange(good.shape[0])
        return apply_pipeline(good, seeds, pipeline_of(cfg.model), spread=cfg.model.spread), good

    def to_device(self, batch: dict) -> dict:
        """Moves the batch and degrades it: ``A`` <- P_c(``B``), at the current coefficients in
        training and at the config's for held-out items."""
        batch = super().to_device(batch)
        if batch.get("degraded") is None:
            good = batch["B"]
            seeds = batch["seed"] if "seed" in batch else torch.randint(0, 2**62, (good.shape[0],))
            held = "heldout" in batch
            coefs = list(self.m.coefficients) if held else self.coefficients
            batch["A"] = apply_pipeline(good.cpu(), seeds.cpu(), self.steps, coefs, spread=self.m.spread).to(good)
            batch["degraded"] = True
        return batch

    # ---- nets ---------------------------------------------------------------------------------
    def build(self) -> None:
        self.require_faces(self.cfg)
        self.check_config(self.cfg)
        m = self.m
        self.steps = pipeline_of(m)
        self.coefficients = [float(c) for c in m.coefficients]
        self.last_factor: float | None = None
        self.history: list[list[float]] = []  # [step, factor, *coefficients] per adaptation
        G = self.add_net("G", "face_enhancer", in_channels=3, out_channels=3, widths=list(m.widths),
                         dec_widths=list(m.dec_widths) or None, latent_dim=m.latent_dim, n_mapping=m.n_mapping)
        D = self.add_net("D", "face_discriminator", in_channels=3, widths=list(m.d_widths))
        self.check_patch_size(D, self.cfg.data.crop_size, "the discriminator")
        self.gan = GANLoss(m.gan_mode)
        self.vgg = None
        if m.lambda_perceptual > 0:
            self.vgg = VGG19Features(layers=tuple(sorted(m.perceptual_layers, key=LAYER_NAMES.index)),
                                     weights=m.vgg_weights).to(self.device)
        self.recog = None
        if m.identity != "off":
            from ..nets.face_recog import load_identity_net

            self.recog = load_identity_net(m.identity, self.device)
        self.teacher = None
        params = list(G.parameters())
        if m.teacher:
            from ..checkpoint_file import load_generator

            T = load_generator(m.teacher, device=self.device).net
            if T.net_name != "face_enhancer":
                raise ConfigError(f"model.teacher={m.teacher}: a {T.net_name} net, not a faceenhance checkpoint")
            self.teacher = T.eval().requires_grad_(False)
            self.distill = DistillLoss(G.feature_channels(), T.feature_channels()).to(self.device)
            params += list(self.distill.parameters())
            self._net_listeners.append(self._follow_generator)
        self.add_optimizer("G", params, self.cfg.train.lr_g)
        self.add_optimizer("D", D.parameters(), self.cfg.train.lr_d)

    def _follow_generator(self, key: str, G) -> None:
        """G was rebuilt with other widths (pruned): adapters to the teacher's features follow;
        an adapter whose student width is unchanged keeps its weights and Adam moments."""
        if key != "G":
            return
        new = DistillLoss(G.feature_channels(), self.teacher.feature_channels()).to(self.device)
        pairs, added = {}, []
        for a_old, a_new in zip(self.distill.adapters, new.adapters):
            old_p, new_p = list(a_old.parameters()), list(a_new.parameters())
            if [p.shape for p in old_p] == [p.shape for p in new_p]:
                a_new.load_state_dict(a_old.state_dict())
            pairs.update({id(o): n for o, n in zip(old_p, new_p)})
            added += new_p[len(old_p):]  # an identity adapter (equal widths) became a 1x1 conv
        self.distill = new
        self.swap_parameters(pairs)
        if added:
            self.optimizers["G"].add_param_group({"params": added})

    # ---- the step -------------------------------------------------------------------------------
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        G, D, m = self.nets["G"], self.nets["D"], self.m
        x, y = batch["A"], batch["B"]  # degraded, real
        taps = FeatureTaps(G, G.feature_names()) if self.teacher is not None else None
        with self.autocast():
            e = G(x)  # enhanced
        logs: dict[str, float] = {}

        # ---- dynamic degradation: D's mean outputs on degraded / real / enhanced
        if m.dynamic and step > 0 and step % m.adapt_every == 0:
            with torch.no_grad():
                md, mr, me = d_mean(D, x), d_mean(D, y), d_mean(D, e.detach())
            self.last_factor = augmentation_factor(md, mr, me)
            self.coefficients = adapt_coefficients(self.coefficients, self.last_factor, m.band, m.adapt_step,
                                                   *m.coef_range)
            self.history.append([float(step), self.last_factor, *self.coefficients])
            logs.update({"D_degraded": md, "D_real": mr, "D_enhanced": me})

        # ---- D phase
        set_requires_grad(D, True)
        with self.autocast():
            loss_d = self.gan.d_loss(D(y), D(e.detach()))
        self.backward_step(loss_d, "D")

        # ---- G phase
        set_requires_grad(D, False)
        with self.autocast():
            loss_l1 = l1_loss(e.float(), y)
            loss_g = m.lambda_l1 * loss_l1
            logs["G_l1"] = loss_l1.item()
            if m.lambda_gan > 0:
                loss_gan = self.gan.g_loss(D(e))
                loss_g = loss_g + m.lambda_gan * loss_gan
                logs["G_gan"] = loss_gan.item()
            if self.vgg is not None:
                fe, fy = self.vgg(e.float()), self.vgg(y.float())
                perc = sum(_PERCEPTUAL_WEIGHT.get(n, 1.0) * F.l1_loss(fe[n], fy[n].detach()) for n in m.perceptual_layers)
                loss_g = loss_g + m.lambda_perceptual * perc
                logs["G_perceptual"] = perc.item()
            if self.recog is not None and m.lambda_identity > 0:
                loss_id = identity_loss(self.recog, e.float(), y.float())
                loss_g = loss_g + m.lambda_identity * loss_id
                logs["G_identity"] = loss_id.item()
            if self.teacher is not None:
                fs = taps.take()
                with torch.no_grad(), FeatureTaps(self.teacher, self.teacher.feature_names()) as ttaps:
                    te = self.teacher(x)
                    ft = ttaps.take()
                loss_dist = self.distill(e, te, fs, ft)
                loss_g = loss_g + m.lambda_distill * loss_dist
                logs["G_distill"] = loss_dist.item()
        self.backward_step(loss_g, "G")
        set_requires_grad(D, True)
        if taps is not None:
            taps.remove()
        logs.update({"loss_D": loss_d.item(), "loss_G": loss_g.item()})
        if m.dynamic:
            logs["aug_factor"] = self.last_factor if self.last_factor is not None else 0.0
            logs.update({f"coef_{t}": c for t, c in zip(m.degradations, self.coefficients)})
        return logs

    # ---- held-out figures ---------------------------------------------------------------------
    def validation_metrics(self, G, batch: dict) -> dict[str, torch.Tensor]:
        out = self.validation_translate(G, batch).float()
        x, y = batch["A"].float(), batch["B"].float()
        res = {"l1": metrics.l1(out, y), "psnr": metrics.psnr(out, y), "ssim": metrics.ssim(out, y),
               "input_psnr": metrics.psnr(x, y), "input_ssim": metrics.ssim(x, y)}
        if self.recog is not None:
            with torch.no_grad():
                res["identity"] = identity_similarity(self.recog(out), self.recog(y))
        return res

    # ---- task state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {**super().state_dict(), "coefficients": list(self.coefficients), "last_factor": self.last_factor,
                "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "coefficients" in state:
            if len(state["coefficients"]) != len(self.coefficients):
                raise ConfigError(f"the checkpoint has {len(state['coefficients'])} degradation coefficients, the "
                                  f"config {len(self.coefficients)}: keep model.degradations on resume")
            self.coefficients = [float(c) for c in state["coefficients"]]
            f = state.get("last_factor")
            self.last_factor = None if f is None else float(f)
            self.history = [list(map(float, h)) for h in state.get("history", [])]
