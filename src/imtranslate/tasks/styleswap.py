"""Style swap (SPEC S3, Chen & Schmidt 2016): train the inverse network that turns features into pictures.

A frozen VGG-19 encoder ``phi`` (up to ``model.encoder_layer``) gives features of a content crop
``c`` and a style crop ``s``; style swap (``imtranslate.nets.style_swap``) replaces every content
patch by its best style patch. The inverse net ``I`` is trained to be the encoder's inverse on
all three kinds of features it will meet, so that at inference one forward pass turns swapped
features of any new content and style into the initial stylised picture::

    h_c = phi(c),  h_s = phi(s),  h_x = swap(h_c, h_s)          (no gradient)
    loss = lambda_content * rel(phi(I(h_c)), h_c)
         + lambda_style   * rel(phi(I(h_s)), h_s)
         + lambda_swap    * rel(phi(I(h_x)), h_x)               (feature reconstruction)
         + lambda_pixel   * (|I(h_c) - c|_1 + |I(h_s) - s|_1)   (optional)
         + lambda_tv      * TV(I(h_x))

    rel(a, h) = |a - h|^2 / |h|^2   per picture, averaged over the batch

The feature errors are relative: the squared error of plain features is ~1e-3 with random VGG
weights and ~1 with ImageNet ones, so fixed weights would mean different things for each; the
relative error is scale-free and one set of weights serves both.

One optimiser, one phase per step (there is no discriminator). The checkpoint's generator is the
inverse net; ``imtranslate stylize`` / :class:`imtranslate.infer.stylize.Stylizer` use it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import metrics
from ..errors import ConfigError
from ..losses import l1_loss, tv_loss
from ..nets.inverse import build_encoder, encoder_geometry
from ..nets.layers import Norm
from ..nets.style_swap import style_swap, style_swap_fast
from ..nets.vgg import LAYER_NAMES
from . import register_task
from .base import Task


def relative_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per picture ``|pred - target|^2 / |target|^2`` over (C, H, W): shape (B,), scale-free."""
    num = (pred - target).pow(2).flatten(1).sum(1)
    return num / target.pow(2).flatten(1).sum(1).clamp_min(1e-12)


@dataclass
class StyleSwapConfig:
    encoder_layer: str = "relu3_1"  # VGG-19 layer whose features are swapped (relu3_1 as in the paper)
    vgg_weights: str = "imagenet"  # imagenet (torch cache only) | path to a .safetensors/.pth | random (tests)
    patch: int = 3  # style swap patch side, in feature pixels
    stride: int = 1  # style swap stride, in feature pixels
    fast_swap: bool = False  # train on the approximate (coarse-to-fine) swap: much faster on the CPU
    depth: int = 9  # convolutions in the inverse net (the seed's nine)
    ngf: int = 64  # inverse net width at full resolution (x2 per level, as VGG)
    norm: Norm = "none"  # inverse net normalisation: none | instance | batch
    lambda_content: float = 1.0  # feature reconstruction of content features (relative squared error)
    lambda_style: float = 1.0  # feature reconstruction of style features
    lambda_swap: float = 1.0  # feature reconstruction of swapped features
    lambda_pixel: float = 0.0  # L1 between I(phi(x)) and x for content and style (optional)
    lambda_tv: float = 1e-3  # total variation of the stylised output


@register_task
class StyleSwapTask(Task):
    name = "styleswap"
    Config = StyleSwapConfig
    generator_key = "inverse"

    @classmethod
    def size_scale(cls, G, cfg):
        """Pictures in, pictures out: the inverse net's own scale undoes the encoder's."""
        return 1

    @classmethod
    def check_config(cls, cfg) -> None:
        m = cfg.model
        if m.encoder_layer not in LAYER_NAMES:
            raise ConfigError(f"model.encoder_layer: {m.encoder_layer!r} is not a VGG-19 layer; known: "
                              f"{', '.join(LAYER_NAMES)}")
        if m.patch < 1 or not 1 <= m.stride <= m.patch:
            raise ConfigError(f"model.patch must be >= 1 and 1 <= model.stride <= model.patch "
                              f"(got patch={m.patch}, stride={m.stride})")
        _, n_pools = encoder_geometry(m.encoder_layer)
        if m.depth < n_pools + 1:
            raise ConfigError(f"model.depth={m.depth} is too small for {m.encoder_layer}: at least "
                              f"{n_pools + 1} convolutions (one per resolution)")
        if cfg.data.dataset == "unpaired" and cfg.data.crop_size and cfg.data.crop_size < m.patch * 2**n_pools:
            raise ConfigError(f"data.crop_size={cfg.data.crop_size} gives {m.encoder_layer} features smaller than "
                              f"a {m.patch}x{m.patch} patch; use at least {m.patch * 2**n_pools}")

    # ---- data: a content folder and a style folder ------------------------------------------
    @classmethod
    def check_data(cls, cfg) -> dict:
        from ..data.unpaired import check_unpaired

        return check_unpaired(cfg.data)

    @classmethod
    def build_dataset(cls, cfg, split: str):
        from ..data.unpaired import build_unpaired

        return build_unpaired(cfg.data, split, seed=cfg.train.seed)

    # ---- nets ------------------------------------------------------------------------------
    def build(self) -> None:
        m = self.m
        channels, n_pools = encoder_geometry(m.encoder_layer)
        self.encoder = build_encoder(m.encoder_layer, m.vgg_weights).to(self.device)  # frozen, not saved
        G = self.add_net("inverse", "style_inverse", in_channels=channels, n_up=n_pools, ngf=m.ngf,
                         depth=m.depth, norm=m.norm)
        self.add_optimizer("inverse", G.parameters(), self.cfg.train.lr_g)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pictures (B, 3, H, W) in [-1, 1] -> encoder features (B, C, H / 2**n, W / 2**n)."""
        return self.encoder(x)[self.m.encoder_layer]

    def swap(self, content_feat: torch.Tensor, style_feat: torch.Tensor) -> torch.Tensor:
        fn = style_swap_fast if self.m.fast_swap else style_swap
        return fn(content_feat.float(), style_feat.float(), self.m.patch, self.m.stride)

    # ---- training ---------------------------------------------------------------------------
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        G, m = self.nets["inverse"], self.m
        c, s = batch["A"], batch["style"]
        B = c.shape[0]
        with torch.no_grad(), self.autocast():
            h_c, h_s = self.encode(c).float(), self.encode(s).float()
        h_x = self.swap(h_c, h_s)
        parts = [("content", h_c, m.lambda_content), ("style", h_s, m.lambda_style), ("swap", h_x, m.lambda_swap)]
        # one batched pass over every kind of features that has a weight (zero-weighted kinds are skipped,
        # except that the swapped ones are always decoded: the TV term and the logs need them)
        used = [(k, h, w) for k, h, w in parts if w > 0 or k == "swap"
                or (k in ("content", "style") and m.lambda_pixel > 0)]
        feats = torch.cat([h for _, h, _ in used])
        with self.autocast():
            out = G(feats)  # (n*B, 3, H, W)
            rec = self.encode(out).float()
        logs, loss = {}, out.new_zeros((), dtype=torch.float32)
        for i, (k, h, w) in enumerate(used):
            feat_loss = relative_error(rec[i * B:(i + 1) * B], h).mean()
            logs[f"feat_{k}"] = feat_loss.item()
            loss = loss + w * feat_loss
        pics = {"content": c, "style": s}
        if m.lambda_pixel > 0:
            pix = sum(l1_loss(out[i * B:(i + 1) * B].float(), pics[k]) for i, (k, _, _) in enumerate(used)
                      if k in pics)
            logs["pixel"] = pix.item()
            loss = loss + m.lambda_pixel * pix
        i_swap = [k for k, _, _ in used].index("swap")
        tv = tv_loss(out[i_swap * B:(i_swap + 1) * B].float())
        logs["tv"] = tv.item()
        loss = loss + m.lambda_tv * tv
        self.backward_step(loss, "inverse")
        logs["loss"] = loss.item()
        return logs

    # ---- validation and samples ---------------------------------------------------------------
    def validation_metrics(self, G, batch: dict) -> dict[str, torch.Tensor]:
        """Per picture: relative feature reconstruction errors of swapped, content and style features, and
        the PSNR of the content picture decoded from its own features (how invertible the encoder is)."""
        c, s = batch["A"], batch["style"]
        h_c, h_s = self.encode(c).float(), self.encode(s).float()
        h_x = self.swap(h_c, h_s)
        out = {}
        for k, h in (("swap", h_x), ("content", h_c), ("style", h_s)):
            pic = G(h)
            out[f"feat_{k}"] = relative_error(self.encode(pic).float(), h)  # (B,)
            if k == "content":
                out["content_psnr"] = metrics.psnr(pic.float(), c.float())
        return out

    def validation_translate(self, G, batch: dict) -> torch.Tensor:
        """The stylised content crops (content in ``batch["A"]``, styles in ``batch["style"]``)."""
        h_x = self.swap(self.encode(batch["A"]).float(), self.encode(batch["style"]).float())
        return G(h_x)

    @classmethod
    def translate(cls, G, A, cfg, extras=None, batch=None, **options):
        raise ConfigError("a styleswap checkpoint holds an inverse network: stylise with "
                          "`imtranslate stylize CONTENT --style STYLE --inverse CKPT` or imtranslate.load_stylizer(CKPT)")
