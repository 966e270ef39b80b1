"""Low-resolution inputs made from high-resolution crops on the fly, one batch at a time (torch).

The classic degradation model of super-resolution, in this order::

    LR = JPEG_q( downscale_s( blur_sigma(HR) ) + noise_std )

* ``blur``: Gaussian, ``sigma`` in HR pixels drawn per picture from a range (0 = none);
* ``downscale``: by the integer ``scale``: ``bicubic`` (antialiased, as Pillow/Matlab's
  ``imresize``) or ``area`` (the mean of each ``scale x scale`` block);
* ``noise``: Gaussian, ``std`` in 0..255 grey levels drawn per picture (0 = none);
* ``jpeg``: a JPEG round trip at a quality drawn per picture (Pillow's codec).

These are torch versions of what :func:`imtranslate.data.pairs.degrade` does to one numpy
picture: one batched pass on the device the model trains on (blur and downscale are grouped
convolutions, no uint8 round trip except for JPEG), applied to the exact crop the losses see, so
every epoch gets fresh strengths without writing files. ``pairs.degrade`` blurs and adds noise at
a single resolution; here the blur acts before the downscale and the noise after it.

Each picture's strengths (and its noise) come from its own seed (``batch["seed"]``, added by
:class:`SeededItems`): a function of ``(seed, epoch, index)`` in training and fixed for held-out
items, so runs are reproducible with any number of DataLoader workers and resume exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

DownscaleMethod = Literal["bicubic", "area"]


@dataclass(frozen=True)
class Degradation:
    """How an LR input is made from an HR picture; each range is ``(low, high)``, drawn uniformly."""

    scale: int = 4
    method: DownscaleMethod = "bicubic"
    blur: tuple[float, float] = (0.0, 0.0)  # Gaussian sigma in HR pixels (0 = no blur)
    noise: tuple[float, float] = (0.0, 0.0)  # Gaussian std in 0..255 levels (0 = no noise)
    jpeg: tuple[int, int] = (0, 0)  # JPEG quality 1..100 ((0, 0) = no JPEG)

    def __post_init__(self):
        for name in ("blur", "noise", "jpeg"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi < lo:
                raise ValueError(f"degradation {name} range must be 0 <= low <= high, got ({lo}, {hi})")
        if self.jpeg != (0, 0) and not (1 <= self.jpeg[0] <= self.jpeg[1] <= 100):
            raise ValueError(f"JPEG quality range must lie in 1..100, got {self.jpeg}")
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")


def downscale(x: torch.Tensor, scale: int, method: str = "bicubic") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H / scale, W / scale); H and W must be multiples of ``scale``."""
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"a {h}x{w} picture cannot be downscaled by exactly {scale}")
    if scale == 1:
        return x
    if method == "area":
        return F.avg_pool2d(x, scale)
    if method == "bicubic":
        return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", align_corners=False,
                             antialias=True).clamp(-1, 1)
    raise ValueError(f"unknown downscale method {method!r}; choose bicubic or area")


def upscale_bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline: (B, C, H, W) -> (B, C, scale * H, scale * W), clamped to [-1, 1]."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur picture ``i`` of ``x`` (B, C, H, W) with a Gaussian of std ``sigmas[i]`` (0 = untouched).

    One separable, grouped convolution for the whole batch (reflection at the borders).
    """
    b, c, h, w = x.shape
    smax = float(sigmas.max()) if sigmas.numel() else 0.0
    if smax <= 0:
        return x
    r = min(max(1, math.ceil(3 * smax)), (min(h, w) - 1))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    s = sigmas.to(x).clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)  # (B, 2r + 1)
    k = k / k.sum(1, keepdim=True)
    k = torch.where(sigmas.to(x.device)[:, None] > 0, k, (t[None] == 0).to(x))  # sigma 0: identity taps
    k = k.repeat_interleave(c, 0)  # one kernel per (picture, channel)
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)  # along W
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)  # along H
    return y.reshape(b, c, h, w)


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """One picture (C, H, W) in [-1, 1] through JPEG at ``quality`` and back (Pillow's codec, as
    :func:`imtranslate.data.pairs.degrade` uses)."""
    import io

    from PIL import Image

    u8 = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as jpeg:
        back = torch.from_numpy(np.asarray(jpeg.convert("RGB")).copy()).permute(2, 0, 1)
    return (back.float() / 127.5 - 1.0).to(x)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


@torch.no_grad()
def degrade_batch(hr: torch.Tensor, seeds: torch.Tensor, d: Degradation) -> torch.Tensor:
    """HR pictures (B, C, H, W) in [-1, 1] -> LR inputs (B, C, H / scale, W / scale) (module doc)."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]
    sigmas = torch.tensor([_uniform(g, *d.blur) for g in gens])
    stds = [_uniform(g, *d.noise) / 127.5 for g in gens]  # 0..255 levels -> [-1, 1] units
    quals = [int(round(_uniform(g, *d.jpeg))) for g in gens]
    x = gaussian_blur(hr.float(), sigmas)
    x = downscale(x, d.scale, d.method)
    if d.noise[1] > 0:
        noise = torch.stack([torch.randn(x.shape[1:], generator=g) * s for g, s in zip(gens, stds)])
        x = (x + noise.to(x)).clamp(-1, 1)
    if d.jpeg[1] > 0:
        x = torch.stack([jpeg_roundtrip(xi, q) for xi, q in zip(x, quals)])
    return x.to(hr.dtype)


class SeededItems(Dataset):
    """A dataset whose items also carry ``"seed"`` (int64): the random stream of their degradation.

    Training items: a function of ``(seed, epoch, index)`` (fresh every epoch, independent of
    DataLoader workers); held-out items: of ``(seed, index)`` only, the same at every validation.
    """

    def __init__(self, dataset: Dataset, *, seed: int = 0, train: bool = True):
        self.dataset, self.seed, self.train, self.epoch = dataset, int(seed), train, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        key = [self.seed & 0xFFFFFFFF, self.epoch, int(index), 1] if self.train else \
            [self.seed & 0xFFFFFFFF, 0x5EED, int(index)]
        item["seed"] = torch.tensor(int(np.random.default_rng(key).integers(0, 2**62)), dtype=torch.int64)
        return item

    def __getattr__(self, name):  # names, records, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"SeededItems({self.dataset!r})"
