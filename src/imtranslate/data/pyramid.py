"""Image pyramids for the multi-resolution translator (coarsest level first).

Each level is half the width and height of the next one; the finest level is the input itself.
Every level is computed directly from the finest image (not from the previous level), so the
error of one downscale is not compounded through the pyramid.
"""
from __future__ import annotations

import typing
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PyramidMethod = Literal["nearest", "bilinear", "bicubic", "lanczos", "area"]  # how levels are shrunk
PYRAMID_METHODS: tuple[str, ...] = typing.get_args(PyramidMethod)


def pyramid_multiple(levels: int) -> int:
    """The number H and W must be divisible by for a ``levels``-level pyramid (2**(levels-1))."""
    if levels < 1:
        raise ValueError(f"a pyramid needs at least 1 level, got {levels}")
    return 2 ** (levels - 1)


def _lanczos(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased Lanczos-3 resize of a (B, C, H, W) float tensor, computed on the CPU.

    Pillow's LANCZOS widens its kernel by the scale factor when shrinking, so fine detail is
    filtered out instead of aliasing; OpenCV's INTER_LANCZOS4 uses a fixed 8-tap kernel and
    aliases badly at 2x and beyond, which is why Pillow's float ("F") mode is used here.
    """
    h, w = size
    src = x.detach().to("cpu", torch.float32).numpy()
    out = np.empty(src.shape[:2] + (h, w), dtype=np.float32)
    for b in range(src.shape[0]):
        for c in range(src.shape[1]):
            img = Image.fromarray(np.ascontiguousarray(src[b, c]), mode="F")
            out[b, c] = np.asarray(img.resize((w, h), Image.Resampling.LANCZOS))
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def downscale(x: torch.Tensor, factor: int, method: str) -> torch.Tensor:
    """Shrink the last two dims of ``x`` by an integer ``factor`` with ``method``."""
    if factor == 1:
        return x
    h, w = x.shape[-2] // factor, x.shape[-1] // factor
    if method == "nearest":
        # Same pixels F.interpolate(mode="nearest") picks, but works for any dtype (labels).
        return x[..., ::factor, ::factor].contiguous()
    if method == "area":
        return F.interpolate(x, size=(h, w), mode="area")
    if method in ("bilinear", "bicubic"):
        return F.interpolate(x, size=(h, w), mode=method, align_corners=False, antialias=True)
    if method == "lanczos":
        return _lanczos(x, (h, w))
    raise ValueError(f"unknown pyramid method {method!r}; choose one of {', '.join(PYRAMID_METHODS)}")


def build_pyramid(x: torch.Tensor, levels: int, method: str = "bilinear", is_label: bool = False) -> list[torch.Tensor]:
    """Build an image pyramid of ``levels`` tensors, **coarsest first**.

    Args:
        x: ``(B, C, H, W)`` tensor; H and W must be divisible by ``2**(levels-1)``
            (pad first; see :func:`pyramid_multiple`). Label maps may also be ``(B, H, W)``.
        levels: number of levels (1 returns ``[x]``).
        method: ``nearest``, ``bilinear`` / ``bicubic`` (antialiased), ``lanczos`` (antialiased
            Lanczos-3, computed on the CPU and moved back) or ``area`` (box average).
        is_label: the tensor holds class ids or one-hot maps; forces ``nearest`` whatever
            ``method`` says, so coarse levels only contain values present in ``x``.

    Returns:
        ``[x_coarsest, ..., x]``, each level half the height and width of the next.
        Bicubic and Lanczos may overshoot the input range slightly; no clamping is done.
    """
    if method not in PYRAMID_METHODS:
        raise ValueError(f"unknown pyramid method {method!r}; choose one of {', '.join(PYRAMID_METHODS)}")
    mult = pyramid_multiple(levels)
    if is_label:
        method = "nearest"
    if x.ndim != 4 and not (method == "nearest" and x.ndim == 3):
        raise ValueError(f"build_pyramid expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if method != "nearest" and not x.is_floating_point():
        raise ValueError(f"pyramid method {method!r} needs a floating-point tensor, got {x.dtype}")
    h, w = x.shape[-2:]
    if h % mult or w % mult:
        raise ValueError(
            f"a {levels}-level pyramid needs height and width divisible by {mult}, got {h}x{w}; "
            f"pad the input to a multiple of {mult} first"
        )
    return [downscale(x, 2**k, method) for k in range(levels - 1, -1, -1)]
