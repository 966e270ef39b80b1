"""The stylise + super-resolve network (SPEC S4): one pass from a small photo to a large picture.

Layout (``L = n_levels`` levels, widths ``w_0 .. w_{L-1}``, all at the *input's* resolution or
coarser; only the head works at the output resolution)::

    x (B, 3, H, W)                                   padded to a multiple of 2**(L-1)
    stem       3x3 conv -> w_0                       (full conv: the first layer)
    encoder    level 0: n_blocks residual blocks; level j > 0: stride-2 conv w_{j-1} -> w_j, blocks
    decoder    level j = L-2 .. 0:  concat[ up2(d_{j+1}),  resize(e_i, level j) for every i ]
                                    -> 1x1 fuse -> w_j -> n_blocks residual blocks  = d_j
    head       log2(scale) x [ conv -> 4 * head_width, pixel shuffle x2, LeakyReLU ]
    out        3x3 conv head_width -> 3              (full conv: the last layer)
    y          tanh(out + atanh(bicubic_up(x)))      with ``residual``; tanh(out) without

Multi-scale fusion: every decoder level sees the encoder features of *every* scale (finer ones
average-pooled down, coarser ones bilinearly up-sampled to its size), not only the same-size skip
of a U-Net, so fine detail and coarse context both reach each level as the decoder climbs.

Up-sampling head: **pixel shuffle** (sub-pixel convolution, Shi et al. 2016), not resize-conv.
The convolution runs at the lower resolution and emits the ``r*r`` sub-pixels of each output
pixel as channels, so it costs a quarter of a resize-conv of the same width per output pixel
(resize-conv convolves the already up-sampled map). Its known artefact, checkerboards, comes
from sub-pixel kernels that start out different; ICNR initialisation (Aitken et al. 2017) makes
them start identical (the head begins as a nearest-neighbour up-sampler followed by learnt
filters), which removes the checkerboard at initialisation and keeps training from creating it.

``separable=True`` (the light variant for CPUs): every 3x3 conv except the stem and the output
conv is depthwise-separable (:class:`~imtranslate.nets.layers.SeparableConv2d`); the 1x1 fuse
convs are pointwise already.

``residual=True`` adds the bicubic up-sampled input *before* the tanh (in atanh space, the
bicubic clamped to +-0.99 so atanh stays finite): with the head's output near zero the net
returns the bicubic picture, so training starts from the classic baseline and learns the
difference; the output stays in [-1, 1]. The output conv starts at a tenth of its usual scale
for that reason. Leave it off for strong stylisation, whose output is far from the photo.

Any input size, odd included: the input is padded to ``multiple`` and the output cropped to
exactly ``scale * (H, W)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import crop_to, pad_to_multiple
from .layers import Conv2d, conv2d, make_norm
from .registry import init_config, register_net

#: the bicubic residual is clamped to this before atanh (atanh(0.99) = 2.65, a finite pre-activation)
_RESIDUAL_CLAMP = 0.99


def icnr_(weight: torch.Tensor, r: int) -> torch.Tensor:
    """ICNR init in place for a conv followed by ``PixelShuffle(r)``: weight (C * r*r, C_in, k, k).

    PixelShuffle sends input channels ``c*r*r .. c*r*r + r*r - 1`` to the ``r x r`` sub-pixels of
    output channel ``c``; giving those channels one shared kernel makes the up-sampling start as
    nearest-neighbour (no checkerboard) while every kernel can still learn its own values.
    """
    out_c, in_c, kh, kw = weight.shape
    if out_c % (r * r):
        raise ValueError(f"ICNR needs output channels divisible by {r * r}, got {out_c}")
    sub = torch.empty(out_c // (r * r), in_c, kh, kw)
    nn.init.kaiming_normal_(sub, a=0.2, nonlinearity="leaky_relu")
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(r * r, dim=0))
    return weight


class _ResBlock(nn.Module):
    """``x + conv(act(norm(conv(x))))`` (norm optional, LeakyReLU 0.2; separable convs in the light net)."""

    def __init__(self, channels: int, *, separable: bool, norm: str):
        super().__init__()
        bias = norm == "none"
        self.conv1 = conv2d(channels, channels, 3, separable=separable, bias=bias)
        self.norm1 = make_norm(norm, channels) or nn.Identity()
        self.act = nn.LeakyReLU(0.2)
        self.conv2 = conv2d(channels, channels, 3, separable=separable, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, C, h, w)
        return x + self.conv2(self.act(self.norm1(self.conv1(x))))


def _resize(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Up (factor > 1, bilinear) or down (factor < 0: average over -factor x -factor) by a power of 2."""
    if factor == 1:
        return x
    if factor > 1:
        return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    return F.avg_pool2d(x, -factor)


@register_net("stylesr")
class StyleSRNet(nn.Module):
    """Encoder-decoder with multi-scale fusion and a pixel-shuffle head (see the module doc).

    Args:
        in_channels, out_channels: picture channels (3 / 3).
        scale: output size / input size, 2 or 4.
        ngf: width of level 0 when ``widths`` is not given (level j: ``ngf * 2**j``).
        n_levels: encoder/decoder levels (1 = no down-sampling).
        widths: one width per level (e.g. after channel pruning); overrides ``ngf``.
        n_blocks: residual blocks per encoder and per decoder level.
        head_width: channels of the up-sampling head (0 = ``widths[0]``).
        separable: depthwise-separable 3x3 convs except the first and last layer (light variant).
        residual: add the bicubic up-sampled input before the output tanh.
        norm: ``none`` | ``instance`` | ``batch`` inside the residual blocks (``none`` for SR:
            normalisation shifts colours and brightness; ``instance`` helps stylisation).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        scale: int = 4,
        ngf: int = 32,
        n_levels: int = 3,
        widths: list[int] | None = None,
        n_blocks: int = 2,
        head_width: int = 0,
        separable: bool = False,
        residual: bool = True,
        norm: str = "none",
    ):
        super().__init__()
        self.config = init_config(locals())
        if scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, got {scale}")
        if n_levels < 1 or n_blocks < 0:
            raise ValueError(f"n_levels must be >= 1 and n_blocks >= 0, got {n_levels} and {n_blocks}")
        width = list(widths) if widths else [ngf * 2**j for j in range(n_levels)]
        if len(width) != n_levels or min(width) < 1:
            raise ValueError(f"widths needs {n_levels} positive channel counts (one per level), got {widths}")
        if residual and in_channels != out_channels:
            raise ValueError("residual=True adds the up-sampled input to the output: in_channels must equal "
                             f"out_channels (got {in_channels} and {out_channels})")
        self.scale = int(scale)
        self.multiple = 2 ** (n_levels - 1)
        self.residual = residual
        self.widths = width
        hw = head_width or width[0]
        sep = separable

        def blocks(c: int) -> nn.Sequential:
            return nn.Sequential(*[_ResBlock(c, separable=sep, norm=norm) for _ in range(n_blocks)])

        self.stem = nn.Sequential(Conv2d(in_channels, width[0], 3, padding=1), nn.LeakyReLU(0.2))
        enc = [blocks(width[0])]
        for j in range(1, n_levels):
            enc.append(nn.Sequential(conv2d(width[j - 1], width[j], 3, stride=2, separable=sep), nn.LeakyReLU(0.2),
                                     blocks(width[j])))
        self.encoder = nn.ModuleList(enc)
        # fuse[k] builds decoder level j = n_levels - 2 - k from the level above and every encoder scale
        self.fuse = nn.ModuleList([
            nn.Sequential(Conv2d(width[j + 1] + sum(width), width[j], 1), nn.LeakyReLU(0.2))
            for j in range(n_levels - 2, -1, -1)])
        self.decoder = nn.ModuleList([blocks(width[j]) for j in range(n_levels - 2, -1, -1)])

        head, c = [], width[0]
        for _ in range(int(math.log2(scale))):
            conv = conv2d(c, 4 * hw, 3, separable=sep)
            last = conv.pw if sep else conv
            icnr_(last.weight, 2)
            nn.init.zeros_(last.bias)  # equal sub-pixels need equal biases too
            head += [conv, nn.PixelShuffle(2), nn.LeakyReLU(0.2)]
            c = hw
        self.head = nn.Sequential(*head)
        self.out = Conv2d(hw, out_channels, 3, padding=1)
        if residual:  # start near the bicubic picture (see the module doc)
            with torch.no_grad():
                self.out.weight.mul_(0.1)
                self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        xp = pad_to_multiple(x, self.multiple)  # (B, C_in, H', W')
        feats = []
        h = self.stem(xp)
        for j, level in enumerate(self.encoder):
            h = level(h)  # (B, w_j, H' / 2**j, W' / 2**j)
            feats.append(h)
        n = len(feats)
        d = feats[-1]
        for k, (fuse, dec) in enumerate(zip(self.fuse, self.decoder)):
            j = n - 2 - k  # the level this step builds
            parts = [_resize(d, 2)] + [_resize(f, 2 ** (i - j) if i >= j else -(2 ** (j - i)))
                                       for i, f in enumerate(feats)]
            d = dec(fuse(torch.cat(parts, 1)))  # (B, w_j, H' / 2**j, W' / 2**j)
        y = self.out(self.head(d))  # (B, C_out, scale * H', scale * W')
        if self.residual:
            up = F.interpolate(xp, scale_factor=self.scale, mode="bicubic", align_corners=False)
            u = up.clamp(-_RESIDUAL_CLAMP, _RESIDUAL_CLAMP)
            y = y + 0.5 * torch.log((1 + u) / (1 - u))  # atanh(u), written so ONNX opset 17 can export it
        return crop_to(torch.tanh(y), size)  # (B, C_out, scale * H, scale * W)
