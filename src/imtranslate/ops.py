"""Pure tensor operations every layer may use: nothing here knows configs, nets or files.

* ``warp_tensor`` pulls a batch along a dense flow (data clips, the temporal loss and video
  translation all use it, with one convention: ``out[y] = x[y + flow[y]]``).
* ``pad_to_multiple`` / ``pad_to_size`` / ``crop_to``: the one pad-then-crop-back pair that
  lets every net take any image size. Nets use it inside ``forward``, the predictor, the tiling
  engine, the stylizer and the ONNX graph around the whole net. ``crop_to`` takes the net's
  output ``scale`` (output size / input size, :func:`as_ratio`), so the output of a x4 net is
  cropped to 4x the input's size. Both are written so that ``torch.jit.trace`` (the ONNX
  exporter) records pads and crops that follow the input's size.
"""
from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------------------------
# Sizes: output scale, pad to a multiple, crop back
# --------------------------------------------------------------------------------------------
def as_ratio(scale) -> tuple[int, int]:
    """``(up, down)`` of an output scale: 4 -> (4, 1); ``Fraction(1, 4)`` or 0.25 -> (1, 4).

    A net of scale ``up / down`` maps an ``n``-pixel side to ``n * up / down`` pixels (rounded
    up): 1 for same-size translators, 4 for a x4 super-resolver or the inverse net of a
    relu3_1 encoder, 1/4 for that encoder itself.
    """
    f = Fraction(scale).limit_denominator(1 << 16)
    if f <= 0:
        raise ValueError(f"an output scale must be positive, got {scale!r}")
    return f.numerator, f.denominator


def scale_size(n, scale):
    """``ceil(n * scale)`` in integer arithmetic (``n`` may be a traced size)."""
    up, down = as_ratio(scale)
    if down == 1:  # no division: a traced size stays exact in any exporter
        return n if up == 1 else n * up
    return -(-n * up // down)


def pad_to_size(x: torch.Tensor, size, mode: str = "reflect") -> torch.Tensor:
    """Pad ``x`` (B, C, H, W) at the bottom and right to ``size`` = (H', W') >= (H, W).

    Reflection padding (the default) keeps image statistics at the border; where the pad is as
    large as the image itself (reflection cannot do that), the edge is replicated instead.
    ``mode="replicate"`` always replicates (optical flow wants no mirrored motion).
    """
    h, w = x.shape[-2:]
    ph, pw = size[0] - h, size[1] - w
    if ph < 0 or pw < 0:
        raise ValueError(f"cannot pad a {h}x{w} tensor to the smaller size {size[0]}x{size[1]}")
    if not (ph or pw):
        return x
    if mode not in ("reflect", "replicate"):
        raise ValueError(f"pad mode must be 'reflect' or 'replicate', got {mode!r}")
    if mode == "reflect" and not (ph < h and pw < w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``x`` (B, C, H, W) at the bottom and right so that H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    # (-h) % m rather than ceil(h / m) * m: under tracing h is a tensor and the pad follows it
    return pad_to_size(x, (h + (-h) % multiple, w + (-w) % multiple))


def crop_to(x: torch.Tensor, size, scale=1) -> torch.Tensor:
    """The top-left window of ``x`` (B, C, H', W') that is ``scale`` times ``size`` = (H, W):
    undoes :func:`pad_to_multiple` on the output of a net of that scale.

    A crop that cuts nothing returns ``x`` itself, so a tracer records no slice of a fixed size
    for it (nets compute their crop sizes in Python, which a trace would freeze).
    """
    h, w = scale_size(size[0], scale), scale_size(size[1], scale)
    if (int(x.shape[-2]), int(x.shape[-1])) == (int(h), int(w)):
        return x
    return x[..., :h, :w]


def base_grid(h: int, w: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return xx, yy  # (h, w) each


def warp_tensor(x: torch.Tensor, flow: torch.Tensor, *, mode: str = "bilinear",
                padding_mode: str = "border") -> torch.Tensor:
    """Pull ``x (B, C, H, W)`` along ``flow (B, 2, H, W)`` (pixels): ``out[y] = x[y + flow[y]]``.

    Differentiable in both ``x`` and ``flow`` (``mode="bilinear"``); ``mode="nearest"`` keeps
    one-hot label inputs one-hot. Same convention as :func:`imtranslate.infer.flow.warp`.
    """
    b, _, h, w = x.shape
    if flow.shape[0] != b or flow.shape[1] != 2 or flow.shape[-2:] != (h, w):
        raise ValueError(f"warp_tensor: flow {tuple(flow.shape)} does not fit x {tuple(x.shape)}")
    xx, yy = base_grid(h, w, x.device, flow.dtype)
    # grid_sample wants (x, y) in [-1, 1]; align_corners=True maps -1/1 to the corner pixel centres
    gx = (xx + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (yy + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)  # (B, H, W, 2)
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode=padding_mode, align_corners=True)
