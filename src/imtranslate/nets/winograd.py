"""Winograd F(2x2, 3x3) convolution: inference of wide 3x3 convolutions on small maps (CPU, fp32).

A 3x3 convolution computes each 2x2 block of its output from a 4x4 block of its input. Winograd's
minimal filtering algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
CVPR 2016) writes that block as ``A^T [(G g G^T) * (B^T d B)] A``: the filter ``g`` and the input
tile ``d`` are moved into a 4x4 transform domain, multiplied element by element and moved back.
Over all channels the element-wise products are 16 matrix products ``U[k] @ V[k]`` (``U[k]``:
C_out x C_in, ``V[k]``: C_in x tiles), 16 multiplies per 4 outputs where the direct
convolution needs 36: 2.25x fewer multiply-adds. The result is the same function; it is rounded
differently (relative error ~1e-6 in fp32 against ``torch.nn.functional.conv2d``).

Why imtranslate has its own: neither PyTorch's CPU convolutions (oneDNN's direct kernels,
PyTorch's im2col + GEMM) nor NNPACK (its Winograd measured 2.6x slower than the GEMM path on a 1024-channel layer) give a faster 3x3 conv on
these shapes. Measured on this 2-core CPU (fp32, batch 1, 2 threads, medians of 7; the best of
oneDNN and the GEMM path against this file, transformed filters cached): 1024 channels on 16x16
maps (pix2pixHD's residual blocks at 256^2) 24-32 ms against 14-17 ms (1.7-1.9x); 1024 on 32x32
1.8x, 32x64 1.5x, 64x64 1.4x, 64x128 0.9x; 512 on 8x8 1.35x, 16x16 1.7x, 32x32 1.5x, 64x64
0.95x; 256 on 16x16 1.25x, 32x32 1.4x; 1024 on 4x4 0.5x (too few tiles for the filter traffic).
Hence :func:`winograd_wins`. Transforming the filters costs as much as a whole direct conv
(27-31 ms for 1024x1024, memory-bound), so only inference with cached transformed filters pays:
training (the filters change every step) keeps PyTorch's kernels. The cache holds 16/9 of the
layer's weights (pix2pixHD's 18 residual convs: 1.2 GB beside their 0.68 GB; a predictor's peak
measured 1.33 -> 2.45 GB).

Each transform is one small matrix product over the 16 tile positions (``kron`` of the 1-D
transforms), so the whole conv is four matrix products and two copies, no per-tile Python.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_BT = [[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]]
_G = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]]
_AT = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]]

#: the rule of :func:`winograd_wins` (see the measurements above)
MIN_CHANNELS = 256
MIN_POSITIONS = 64
POSITIONS_PER_CHANNEL = 4


def _kron(a, b) -> torch.Tensor:
    return torch.kron(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))


# the 2-D transforms, built once (float64; cast to the data's dtype per call): vec(B^T d B) = KB vec(d),
# vec(G g G^T) = KG vec(g), vec(A^T m A) = KA vec(m)
_KB, _KG, _KA = _kron(_BT, _BT), _kron(_G, _G), _kron(_AT, _AT)


def winograd_filters(weight: torch.Tensor) -> torch.Tensor:
    """``(C_out, C_in, 3, 3)`` filters -> ``(16, C_out, C_in)``: ``G g G^T`` of every filter, the
    16 transform-domain positions first (the layout the matrix products read)."""
    if weight.dim() != 4 or weight.shape[-2:] != (3, 3):
        raise ValueError(f"Winograd F(2x2, 3x3) needs 3x3 filters, got shape {tuple(weight.shape)}")
    o, i = weight.shape[:2]
    kg = _KG.to(weight)  # (16, 9)
    return (kg @ weight.reshape(o * i, 9).t()).view(16, o, i)


def winograd_conv3x3(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A *valid* 3x3 convolution (stride 1, no padding: pad ``x`` first) of ``x`` (N, C_in, H, W)
    with filters transformed by :func:`winograd_filters`; returns (N, C_out, H - 2, W - 2),
    contiguous. Pictures of a batch are computed one by one, so a batch gives exactly the numbers
    its pictures give alone."""
    n, c, h, w = x.shape
    if filters.shape[0] != 16 or filters.shape[2] != c:
        raise ValueError(f"transformed filters of shape {tuple(filters.shape)} do not take {c} input channels")
    if h < 3 or w < 3:
        raise ValueError(f"a valid 3x3 convolution needs at least 3x3 inputs, got {h}x{w}")
    o = filters.shape[1]
    ho, wo = h - 2, w - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    if 2 * th != ho or 2 * tw != wo:  # odd output size: one more (zero) row / column of tiles, cropped after
        x = F.pad(x, (0, 2 * tw - wo, 0, 2 * th - ho))
    kb, ka = _KB.to(x), _KA.to(x)  # (16, 16), (4, 16)
    out = []
    for picture in x.split(1):
        tiles = picture.unfold(2, 4, 2).unfold(3, 4, 2)  # 1, C, th, tw, 4, 4 (a view)
        d = tiles.permute(4, 5, 1, 0, 2, 3).reshape(16, c * th * tw)  # the one input copy
        v = (kb @ d).view(16, c, th * tw)  # B^T d B
        m = torch.bmm(filters, v)  # 16, C_out, tiles: the element-wise products, summed over C_in
        y = (ka @ m.view(16, o * th * tw)).view(2, 2, o, th, tw)  # A^T m A
        out.append(y.permute(2, 3, 0, 4, 1).reshape(1, o, 2 * th, 2 * tw))
    y = torch.cat(out) if n > 1 else out[0]
    if 2 * th != ho or 2 * tw != wo:
        y = y[:, :, :ho, :wo].contiguous()
    if bias is not None:
        y += bias.view(1, -1, 1, 1)
    return y


def winograd_wins(c_in: int, c_out: int, positions: int) -> bool:
    """Whether F(2x2, 3x3) with cached filters beats PyTorch's kernels for a conv of ``c_in`` ->
    ``c_out`` channels whose output has ``positions`` pixels per picture (measured above)."""
    return (min(c_in, c_out) >= MIN_CHANNELS
            and MIN_POSITIONS <= positions <= POSITIONS_PER_CHANNEL * c_in)
