"""Low-resolution inputs made from high-resolution crops on the fly, one batch at a time (torch).

The classic degradation model of super-resolution, in this order::

    LR = JPEG_q( downscale_s( blur_sigma(HR) ) + noise_std )

* ``blur``: Gaussian, ``sigma`` in HR pixels drawn per picture from a range (0 = none);
* ``downscale``: by the integer ``scale``: ``bicubic`` (antialiased, as Pillow/Matlab's
  ``imresize``) or ``area`` (the mean of each ``scale x scale`` block);
* ``noise``: Gaussian, ``std`` in 0..255 grey levels drawn per picture (0 = none);
* ``jpeg``: a JPEG round trip at a quality drawn per picture (Pillow's codec).

The primitives are those of :mod:`imtranslate.data.degradations` (the typed, coefficient-driven
pipeline of face enhancement and ``data pairs --kind degrade``); this module fixes their order
and draws their strengths from ranges, as stylesr's config states them: one batched pass on
the device the model trains on (blur and downscale are grouped convolutions, no uint8 round
trip except for JPEG), applied to the exact crop the losses see, so every epoch gets fresh
strengths without writing files.

Each picture's strengths (and its noise) come from its own seed (``batch["seed"]``, added by
:class:`SeededItems`): a function of ``(seed, epoch, index)`` in training and fixed for held-out
items, so runs are reproducible with any number of DataLoader workers and resume exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

# the one implementation of each degradation (data/degradations.py); re-exported for stylesr's callers
from .degradations import downscale, gaussian_blur, jpeg_roundtrip, upscale_bicubic  # noqa: F401

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
