"""Stylise and super-resolve in one network (SPEC S4): a small photo in, a ``scale`` x larger picture out.

High-resolution photographs are read (``data.dataset=photos``: a folder, or the synthetic
scenes' photos without ``data.root``); the low-resolution input is made from each HR crop on the
fly (``imtranslate.data.degrade``: optional blur, bicubic/area downscale by ``scale``, optional
noise and JPEG, strengths drawn per picture from the ranges in the config). With ``x = LR(hr)``
and ``y = G(x)`` (``scale`` x the size of ``x``), one step is::

    D step (lambda_gan > 0):  GAN(D(real) -> real) + GAN(D(y.detach()) -> fake), halved
    G step, by model.target:
      sr       lambda_l1 * |y - hr| + lambda_perceptual * sum_l w_l |phi_l(y) - phi_l(hr)| + lambda_gan * GAN(D(y))
      teacher  the same against t = the style-swap pipeline's output on the HR photo (cached on disk)
      style    lambda_content * rel(phi_c(y), phi_c(hr)) + lambda_style * mean_l rel(Gram_l(y), Gram_l(s))
               + lambda_tv * TV(y) + lambda_gan * GAN(D(y))
    rel(a, b) = |a - b|^2 / |b|^2 per picture (scale-free, so one weight serves ImageNet and random VGG)

``real`` is the HR crop (sr), the teacher's output (teacher) or random crops of the style picture
``s`` (style); ``phi`` is a frozen VGG-19 (``model.vgg_weights``). The style loss works at the
output resolution: the style picture is scaled so its shorter side is ``model.style_size``
(default ``data.crop_size``, the HR crop side).

Held-out figures: for sr and teacher, PSNR / SSIM / L1 of ``y`` against the target and the same
for the bicubic up-sampled input (``bicubic_psnr``, ``bicubic_ssim``), the baseline to beat; for
style, the content and style errors of ``y`` and of the bicubic picture.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics
from ..data import read_image, to_tensor, write_image
from ..data.datasets import FolderPairs, PairRecord, _cache_home, check_dataset, input_kind, split_records
from ..data.degrade import Degradation, DownscaleMethod, SeededItems, degrade_batch, upscale_bicubic
from ..data.styles import builtin_style
from ..data.transforms import resize_image, resized_shape
from ..errors import ConfigError, DataError
from ..losses import GANLoss, GanMode, gram_matrix, l1_loss, tv_loss
from ..losses.perceptual import PERCEPTUAL_LAYERS, PERCEPTUAL_WEIGHTS
from ..nets.layers import Norm
from ..ops import pad_to_multiple
from ..nets.vgg import LAYER_NAMES, VGG19Features
from . import register_task
from .base import Task, set_requires_grad
from .styleswap import relative_error

_PERCEPTUAL_WEIGHT = dict(zip(PERCEPTUAL_LAYERS, PERCEPTUAL_WEIGHTS))


@dataclass
class StyleSRConfig:
    target: Literal["sr", "style", "teacher"] = "sr"  # what the large picture should be (module doc)
    scale: Literal[2, 4] = 4  # output size / input size
    # ---- the net (nets/stylesr.py)
    ngf: int = 32  # width of the finest level (x2 per coarser level) unless widths is given
    n_levels: int = 3  # encoder/decoder levels
    widths: list[int] = field(default_factory=list)  # one width per level (pruned nets); [] = ngf * 2**j
    n_blocks: int = 2  # residual blocks per encoder / decoder level
    head_width: int = 0  # channels of the pixel-shuffle head; 0 = the finest level's width
    separable: bool = False  # depthwise-separable convs but the first and last layer (the light net)
    residual: bool = True  # add the bicubic up-sampled input before the output tanh
    norm: Norm = "none"  # inside the residual blocks: none (SR) | instance (stylisation) | batch
    # ---- how the LR input is made from the HR crop (data/degrade.py), ranges [low, high]
    downscale: DownscaleMethod = "bicubic"  # bicubic (antialiased) | area
    blur: list[float] = field(default_factory=lambda: [0.0, 0.0])  # Gaussian sigma in HR pixels, before downscale
    noise: list[float] = field(default_factory=lambda: [0.0, 0.0])  # Gaussian std in 0..255 levels, after
    jpeg: list[int] = field(default_factory=lambda: [0, 0])  # JPEG quality range, last; [0, 0] = none
    # ---- losses (sr / teacher)
    lambda_l1: float = 1.0
    lambda_perceptual: float = 0.1  # VGG feature L1 (pix2pixHD's layer weights)
    perceptual_layers: list[str] = field(default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
    # ---- losses (style)
    lambda_content: float = 1.0  # relative VGG feature error vs the HR photo
    content_layers: list[str] = field(default_factory=lambda: ["relu3_1"])
    lambda_style: float = 5.0  # relative Gram error vs the style picture
    style_layers: list[str] = field(default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
    lambda_tv: float = 0.0  # total variation of the output
    style_image: str = ""  # style / teacher: the style picture; "" = the built-in generated one (data/styles.py)
    style_size: int = 0  # shorter side the style picture is scaled to; 0 = data.crop_size
    # ---- teacher (target=teacher): a styleswap checkpoint whose pipeline makes the targets
    teacher: str = ""  # path of the styleswap checkpoint
    teacher_fast: bool = False  # the approximate (coarse-to-fine) swap: much faster on the CPU
    teacher_cache: str = ""  # folder of the cached teacher outputs; "" = <imtranslate cache>/stylesr_teacher
    # ---- adversarial
    lambda_gan: float = 0.01  # 0 = no discriminator
    gan_mode: GanMode = "lsgan"
    ndf: int = 32
    n_layers_d: int = 3  # PatchGAN depth (3: 70x70 patches of the output)
    norm_d: Norm = "instance"
    vgg_weights: str = "imagenet"  # imagenet (torch cache) | random (tests only) | path to a file


def _check_range(name: str, v: list, lo: float, hi: float | None = None) -> None:
    if len(v) != 2 or v[0] > v[1] or v[0] < lo or (hi is not None and v[1] > hi):
        bound = f"{lo} <= low <= high" + (f" <= {hi}" if hi is not None else "")
        raise ConfigError(f"model.{name} must be [low, high] with {bound}, got {list(v)}")


def degradation_of(m) -> Degradation:
    """How the task makes LR inputs, from its ``model`` config (the demo and benchmarks use it too)."""
    return Degradation(scale=m.scale, method=m.downscale, blur=tuple(m.blur), noise=tuple(m.noise),
                       jpeg=tuple(int(q) for q in m.jpeg))


# --------------------------------------------------------------------------------------------
# Style picture and teacher targets
# --------------------------------------------------------------------------------------------
def style_picture(m, crop_size: int) -> np.ndarray:
    """uint8 (H, W, 3): ``model.style_image`` (or the built-in style), shorter side ``style_size``."""
    side = m.style_size or crop_size
    img = read_image(m.style_image, "rgb") if m.style_image else builtin_style(max(side, 64))
    h, w = img.shape[:2]
    return resize_image(img, resized_shape(h, w, side))


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class TeacherTargets:
    """The style-swap pipeline's output on each HR photo, computed once and cached on disk.

    The pipeline is the one ``imtranslate stylize`` runs (VGG-19 encoder, style swap, the
    checkpoint's inverse net), assembled here from the pure functions of ``nets/inverse.py`` and
    ``nets/style_swap.py`` and :func:`~imtranslate.checkpoint_file.load_generator`, so the task
    layer needs nothing from ``infer/``. Encoding and decoding run over tiles and the swap in
    bounded chunks (bounded memory for any photo). A cached file is named by a hash of the photo's
    bytes, the style picture, the teacher checkpoint's bytes and the swap options: change any and
    it is computed again.
    """

    def __init__(self, cfg):
        from ..checkpoint_file import read_meta

        m = cfg.model
        self.path = Path(m.teacher)
        meta = read_meta(self.path)  # CheckpointError names the file and the problem
        if meta.get("task") != "styleswap":
            raise ConfigError(f"model.teacher: {self.path} is a {meta.get('task')} checkpoint; target=teacher "
                              "needs a styleswap checkpoint (train one with task=styleswap)")
        tm = meta["config"]["model"]
        self.layer, self.patch, self.stride = tm["encoder_layer"], int(tm["patch"]), int(tm["stride"])
        self.vgg_weights, self.fast = str(tm["vgg_weights"]), bool(m.teacher_fast)
        self.style = style_picture(m, cfg.data.crop_size)
        self.style_name = m.style_image or "<built-in style>"
        self.cache = Path(m.teacher_cache) if m.teacher_cache else _cache_home() / "stylesr_teacher"
        options = {"layer": self.layer, "patch": self.patch, "stride": self.stride, "fast": self.fast,
                   "vgg": self.vgg_weights, "teacher": _file_digest(self.path), "v": 1}
        h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.style).tobytes() + str(self.style.shape).encode())
        self.key = h.hexdigest()
        self._pipeline = None

    def target_file(self, photo: Path) -> Path:
        h = hashlib.sha256(self.key.encode())
        h.update(Path(photo).read_bytes())
        return self.cache / f"{Path(photo).stem}-{h.hexdigest()[:20]}.png"

    def _load(self):
        from ..checkpoint_file import load_generator
        from ..nets.inverse import build_encoder, encoder_geometry

        inverse = load_generator(self.path).net.eval()
        encoder = build_encoder(self.layer, self.vgg_weights)
        mult = 2 ** encoder_geometry(self.layer)[1]
        style = pad_to_multiple(to_tensor(self.style)[None], mult)
        with torch.inference_mode():
            s_feat = encoder(style)[self.layer].float()
        if min(s_feat.shape[-2:]) < self.patch:
            raise DataError(self.style_name, f"style picture too small for {self.patch}x{self.patch} patches",
                            f"raise model.style_size to at least {self.patch * mult}")
        self._pipeline = (inverse, encoder, mult, s_feat)

    @torch.inference_mode()
    def stylise(self, photo: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) -> the teacher's stylised picture, uint8 (H, W, 3).

        The photo is encoded and decoded whole (the tiling engine is an inference tool, a layer
        above the tasks); the swap itself runs in bounded memory. A training photo of N
        megapixels takes about 0.3 N GB here, once: the result is cached on disk."""
        from ..nets.style_swap import style_swap, style_swap_fast

        if self._pipeline is None:
            self._load()
        inverse, encoder, mult, s_feat = self._pipeline
        h, w = photo.shape[:2]
        x = pad_to_multiple(to_tensor(photo)[None], mult)  # (1, 3, H', W')
        c_feat = encoder(x)[self.layer].float()
        h_x = (style_swap_fast if self.fast else style_swap)(c_feat, s_feat, self.patch, self.stride)
        out = inverse(h_x)[..., :h, :w]
        return ((out[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()

    def records(self, records: list[PairRecord]) -> list[PairRecord]:
        """``(name, photo, teacher output)`` for each photo record, computing what is not cached."""
        out = []
        for r in records:
            target = self.target_file(r.a)
            if not target.is_file():
                tmp = target.with_name(target.name + ".tmp.png")
                write_image(tmp, self.stylise(read_image(r.a, "rgb")))
                tmp.replace(target)  # atomic: a crash never leaves half a target
            out.append(PairRecord(r.name, r.a, target))
        return out


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------
@register_task
class StyleSRTask(Task):
    name = "stylesr"
    Config = StyleSRConfig

    @classmethod
    def check_config(cls, cfg) -> None:
        m, d = cfg.model, cfg.data
        if d.crop_size <= 0 or d.crop_size % m.scale:
            raise ConfigError(f"data.crop_size (the HR crop side) must be a positive multiple of model.scale="
                              f"{m.scale}, got {d.crop_size}")
        _check_range("blur", m.blur, 0.0)
        _check_range("noise", m.noise, 0.0)
        if list(m.jpeg) != [0, 0]:
            _check_range("jpeg", m.jpeg, 1, 100)
        for key in ("perceptual_layers", "content_layers", "style_layers"):
            bad = [n for n in getattr(m, key) if n not in LAYER_NAMES]
            if bad:
                raise ConfigError(f"model.{key}: {bad} are not VGG-19 layers; known: {', '.join(LAYER_NAMES)}")
        if m.target == "teacher" and not m.teacher:
            raise ConfigError("model.target=teacher needs model.teacher=CHECKPOINT (a styleswap checkpoint)")
        if m.target == "style" and (m.lambda_content <= 0 and m.lambda_style <= 0):
            raise ConfigError("model.target=style needs model.lambda_content or model.lambda_style > 0")
        if m.style_image and not Path(m.style_image).is_file():
            raise DataError(m.style_image, "style picture not found", "check model.style_image")

    # ---- data: HR photos; the teacher's outputs as targets for target=teacher -----------------
    @staticmethod
    def require_photos(cfg) -> None:
        """The data must be RGB photographs (checked when the task is built and before data is read)."""
        d = cfg.data
        if d.dataset != "photos":
            raise ConfigError(f"stylesr reads high-resolution photographs and makes its inputs from them: use "
                              f"data.dataset=photos with data.root=FOLDER (no root: the synthetic scenes' photos), "
                              f"not data.dataset={d.dataset}")
        if input_kind(d) != "rgb" or d.output_channels != 3:
            raise ConfigError("stylesr works on RGB photographs: data.input_kind=rgb and data.output_channels=3")

    @classmethod
    def _records(cls, cfg, split: str) -> list[PairRecord]:
        cls.require_photos(cfg)
        recs = split_records(cfg.data)[split]
        if split == "train" and cfg.data.max_items > 0:
            recs = recs[: cfg.data.max_items]
        if cfg.model.target == "teacher" and recs:
            recs = TeacherTargets(cfg).records(recs)
        return recs

    @classmethod
    def check_data(cls, cfg) -> dict:
        cls.require_photos(cfg)
        summary = check_dataset(cfg.data)
        if cfg.model.target == "teacher":  # the expensive part, once, before the first step
            summary["teacher_targets"] = len(cls._records(cfg, "train")) + len(cls._records(cfg, "val"))
        return summary

    @classmethod
    def build_dataset(cls, cfg, split: str):
        ds = FolderPairs(cls._records(cfg, split), cfg.data, train=split == "train", seed=cfg.train.seed)
        return SeededItems(ds, seed=cfg.train.seed, train=split == "train")

    @classmethod
    def eval_inputs(cls, batch: dict, cfg) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out photos: the LR input made as in training (fixed seeds: every run of eval
        sees the same degradation), the photo itself the target (``target=sr``)."""
        m = cfg.model
        if m.target != "sr":
            raise ConfigError(f"imtranslate eval compares outputs with targets; a target={m.target} net has "
                              "none on plain photos (its quality figures are in benchmarks/stylesr.py)")
        hr = batch["A"]
        h, w = hr.shape[-2] // m.scale * m.scale, hr.shape[-1] // m.scale * m.scale
        hr = hr[..., :h, :w]  # whole LR pixels
        seeds = torch.arange(hr.shape[0])
        return degrade_batch(hr, seeds, degradation_of(m)), hr

    def to_device(self, batch: dict) -> dict:
        """Moves the batch and makes the LR input: ``A`` <- LR(``A``), the HR photo kept as ``hr``."""
        batch = super().to_device(batch)
        if "hr" not in batch:
            seeds = batch["seed"] if "seed" in batch else torch.randint(0, 2**62, (batch["A"].shape[0],))
            batch["hr"] = batch["A"]
            batch["A"] = degrade_batch(batch["A"], seeds, self.degradation)
        return batch

    # ---- nets ---------------------------------------------------------------------------------
    def build(self) -> None:
        self.require_photos(self.cfg)  # a clear message, not a channel mismatch deep in the net
        m = self.m
        self.degradation = degradation_of(m)
        G = self.add_net("G", "stylesr", in_channels=self.in_channels, out_channels=self.out_channels,
                         scale=m.scale, ngf=m.ngf, n_levels=m.n_levels, widths=list(m.widths) or None,
                         n_blocks=m.n_blocks, head_width=m.head_width, separable=m.separable,
                         residual=m.residual, norm=m.norm)
        self.add_optimizer("G", G.parameters(), self.cfg.train.lr_g)
        self.gan = GANLoss(m.gan_mode)
        if m.lambda_gan > 0:
            D = self.add_net("D", "patch", in_channels=self.out_channels, ndf=m.ndf, n_layers=m.n_layers_d,
                             norm=m.norm_d)
            self.check_patch_size(D, self.cfg.data.crop_size, "the discriminator")
            self.add_optimizer("D", D.parameters(), self.cfg.train.lr_d)
        layers = set()
        if m.target in ("sr", "teacher") and m.lambda_perceptual > 0:
            layers |= set(m.perceptual_layers)
        if m.target == "style":
            layers |= set(m.content_layers) | set(m.style_layers)
        if m.target == "teacher":
            layers |= set(m.style_layers)  # the Gram distance to the style, a held-out figure
        self.vgg = None
        if layers:
            self.vgg = VGG19Features(layers=tuple(sorted(layers, key=LAYER_NAMES.index)),
                                     weights=m.vgg_weights).to(self.device)
        self.style = None
        if m.target in ("style", "teacher"):
            self.style = to_tensor(style_picture(m, self.cfg.data.crop_size))[None].to(self.device)  # (1, 3, Hs, Ws)
            with torch.no_grad():
                feats = self.vgg(self.style)
            self.style_grams = {n: gram_matrix(feats[n]) for n in m.style_layers}  # (1, C, C)

    # ---- loss terms -----------------------------------------------------------------------------
    def style_error(self, feats: dict) -> torch.Tensor:
        """Per picture: the mean over style layers of the relative Gram error vs the style picture, (B,)."""
        errs = []
        for n in self.m.style_layers:
            g = gram_matrix(feats[n])
            errs.append(relative_error(g, self.style_grams[n].expand_as(g)))
        return torch.stack(errs).mean(0)

    def content_error(self, feats: dict, ref: dict) -> torch.Tensor:
        """Per picture: the mean over content layers of the relative feature error, (B,)."""
        return torch.stack([relative_error(feats[n], ref[n]) for n in self.m.content_layers]).mean(0)

    def style_crops(self, n: int, size: tuple[int, int]) -> torch.Tensor:
        """``n`` random crops of the style picture of ``size`` (the discriminator's real pictures)."""
        s = self.style
        if s.shape[-2] < size[0] or s.shape[-1] < size[1]:
            s = F.interpolate(s, scale_factor=max(size[0] / s.shape[-2], size[1] / s.shape[-1]) * 1.001,
                              mode="bicubic", align_corners=False).clamp(-1, 1)
        ys = torch.randint(0, s.shape[-2] - size[0] + 1, (n,)).tolist()
        xs = torch.randint(0, s.shape[-1] - size[1] + 1, (n,)).tolist()
        return torch.cat([s[..., y:y + size[0], x:x + size[1]] for y, x in zip(ys, xs)])

    # ---- training -------------------------------------------------------------------------------
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        G, m = self.nets["G"], self.m
        lr, hr, target = batch["A"], batch["hr"], batch["B"]  # (B, 3, h, w), (B, 3, s*h, s*w) x 2
        with self.autocast():
            fake = G(lr)  # (B, 3, s*h, s*w)
        logs = {}
        D = self.nets.get("D")
        if D is not None:
            # ---- D phase
            real = self.style_crops(fake.shape[0], fake.shape[-2:]) if m.target == "style" else target
            set_requires_grad(D, True)
            with self.autocast():
                loss_d = 0.5 * self.gan.d_loss(D(real), D(fake.detach()))
            self.backward_step(loss_d, "D")
            set_requires_grad(D, False)
            logs["loss_D"] = loss_d.item()

        # ---- G phase
        with self.autocast():
            out = fake.float()
            loss_g = out.new_zeros(())
            if m.target == "style":
                fp = self.vgg(out)
                with torch.no_grad():
                    fh = self.vgg(hr.float())
                content = self.content_error(fp, fh).mean()
                style = self.style_error(fp).mean()
                loss_g = loss_g + m.lambda_content * content + m.lambda_style * style
                logs.update(G_content=content.item(), G_style=style.item())
            else:
                l1 = l1_loss(out, target)
                loss_g = loss_g + m.lambda_l1 * l1
                logs["G_l1"] = l1.item()
                if m.lambda_perceptual > 0:
                    fp = self.vgg(out)
                    with torch.no_grad():
                        ft = self.vgg(target.float())
                    perc = sum(_PERCEPTUAL_WEIGHT.get(n, 1.0) * F.l1_loss(fp[n], ft[n]) for n in m.perceptual_layers)
                    loss_g = loss_g + m.lambda_perceptual * perc
                    logs["G_perceptual"] = perc.item()
            if m.lambda_tv > 0:
                tv = tv_loss(out)
                loss_g = loss_g + m.lambda_tv * tv
                logs["G_tv"] = tv.item()
            if D is not None:
                gan = self.gan.g_loss(D(fake))
                loss_g = loss_g + m.lambda_gan * gan
                logs["G_gan"] = gan.item()
        self.backward_step(loss_g, "G")
        if D is not None:
            set_requires_grad(D, True)  # leave every net trainable between steps
        logs["loss_G"] = loss_g.item()
        return logs

    # ---- validation ------------------------------------------------------------------------------
    def validation_metrics(self, G, batch: dict) -> dict[str, torch.Tensor]:
        out = self.validation_translate(G, batch).float()
        bic = upscale_bicubic(batch["A"].float(), self.m.scale)
        if self.m.target == "style":
            fh = self.vgg(batch["hr"].float())
            fo, fb = self.vgg(out), self.vgg(bic)
            return {"content": self.content_error(fo, fh), "style": self.style_error(fo),
                    "bicubic_content": self.content_error(fb, fh), "bicubic_style": self.style_error(fb)}
        target = batch["B"].float()
        res = {"l1": metrics.l1(out, target), "psnr": metrics.psnr(out, target), "ssim": metrics.ssim(out, target),
               "bicubic_psnr": metrics.psnr(bic, target), "bicubic_ssim": metrics.ssim(bic, target)}
        if self.m.target == "teacher":
            res["style"] = self.style_error(self.vgg(out))
        return res

    @classmethod
    def translate(cls, G, A, cfg, extras=None, batch=None, **options) -> torch.Tensor:
        """A picture (B, 3, H, W) -> (B, 3, scale * H, scale * W)."""
        return G(A)

