"""The inverse network of style swap: VGG features back to a picture in one forward pass.

It mirrors VGG-19 up to the encoder layer: the encoder halves the size at each max-pool, the
inverse net doubles it with nearest-neighbour up-sampling followed by reflect-padded 3x3
convolutions (no transposed convolutions, hence no checkerboard artefacts). With the default
encoder layer ``relu3_1`` (256 channels, 1/4 size) and ``depth=9`` (the seed's nine
convolution layers) it is::

    1/4 size  conv 256->256, conv 256->256, conv 256->128      (ReLU after each)
    x2 nearest
    1/2 size  conv 128->128, conv 128->128, conv 128->64
    x2 nearest
    full size conv 64->64,   conv 64->64,   conv 64->3, tanh

``depth`` convolutions are spread over the levels (deeper levels get the extra ones first);
each level ends with the convolution that narrows to the next level's width, and the last
one outputs RGB in [-1, 1].

Its ``scale`` (output size / input size, as every generator declares) is ``2**n_up``: the
encoder's down factor. Large feature maps are decoded in tiles by the one tiling engine
(``imtranslate.infer.tiling.tile_translate``, wrapped by ``infer.stylize.invert_tiled``).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn as nn

from .layers import ConvNormAct, NORMS
from .registry import init_config, register_net
from .vgg import _BLOCKS, LAYER_NAMES, VGG19Features

#: random VGG weights are drawn from this seed, so a net trained on them can be used again later
RANDOM_VGG_SEED = 19


def encoder_geometry(layer: str) -> tuple[int, int]:
    """``(channels, n_pools)`` of a VGG-19 layer: the width of its features and how many
    max-pools come before it (the features are ``2**n_pools`` times smaller than the picture)."""
    if layer not in LAYER_NAMES:
        raise ValueError(f"unknown VGG-19 layer {layer!r}; known: {', '.join(LAYER_NAMES)}")
    kind, rest = layer[:4], layer[4:]
    block, _, idx = rest.partition("_")
    b = int(block)
    if kind == "pool":
        return _BLOCKS[b - 1][-1], b
    return _BLOCKS[b - 1][int(idx) - 1], b - 1


def encoder_receptive_field(layer: str) -> int:
    """Side in pixels of the receptive field of one feature of ``layer`` (for tiling margins)."""
    rf, jump = 1, 1
    for name in LAYER_NAMES[: LAYER_NAMES.index(layer) + 1]:
        if name.startswith("conv"):
            rf += 2 * jump
        elif name.startswith("pool"):
            rf += jump
            jump *= 2
    return rf


def build_encoder(layer: str = "relu3_1", weights: str | os.PathLike = "imagenet") -> VGG19Features:
    """The frozen VGG-19 encoder of style swap (the perceptual losses' extractor, one layer).

    Weights follow :class:`VGG19Features`'s offline rules. ``"random"`` weights are drawn from
    a fixed seed (without disturbing the caller's random stream), so an inverse net trained on
    a random encoder meets the same encoder again at inference.
    """
    if str(weights) == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_VGG_SEED)
            return VGG19Features(layers=(layer,), weights="random")
    return VGG19Features(layers=(layer,), weights=weights)


def level_plan(depth: int, n_levels: int) -> list[int]:
    """Convolutions per level (deepest first): as even as possible, deeper levels get the extra."""
    if depth < n_levels:
        raise ValueError(f"depth={depth} is too small: the inverse net needs at least one convolution per "
                         f"resolution level ({n_levels})")
    base, extra = divmod(depth, n_levels)
    return [base + (1 if i < extra else 0) for i in range(n_levels)]


@register_net("style_inverse")
class InverseNet(nn.Module):
    """Decoder from VGG features (B, in_channels, h, w) to pictures (B, 3, h * 2**n_up, w * 2**n_up).

    Args:
        in_channels: channels of the encoder layer (256 for relu3_1).
        n_up: how many x2 up-samplings (= max-pools before the encoder layer; 2 for relu3_1).
        ngf: width at full resolution; level ``l`` (0 = full size) has ``ngf * 2**l`` channels,
            as VGG has (64, 128, 256, 512).
        max_channels: cap on the level widths.
        depth: number of 3x3 convolutions in all (the seed prefers 9).
        norm: ``"none"`` (default, as AdaIN's decoder), ``"instance"`` or ``"batch"``.
        out_channels: 3 (RGB).
    """

    def __init__(self, *, in_channels: int = 256, n_up: int = 2, ngf: int = 64, max_channels: int = 512,
                 depth: int = 9, norm: str = "none", out_channels: int = 3):
        super().__init__()
        self.config = init_config(locals())
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
        self.n_up = n_up
        self.multiple = 1  # feature maps of any size
        # output size / input size: the encoder's down factor (4 for relu3_1), so that
        # encoder scale x inverse scale = 1 (a picture comes back at its own size)
        self.scale = 2**n_up
        widths = [min(max_channels, ngf * 2**lvl) for lvl in range(n_up, -1, -1)]  # deepest first
        plan = level_plan(depth, n_up + 1)
        layers: list[nn.Module] = []
        c_in = in_channels
        for lvl, (width, n_conv) in enumerate(zip(widths, plan)):
            last_level = lvl == len(widths) - 1
            c_end = out_channels if last_level else widths[lvl + 1]
            for i in range(n_conv):
                last = i == n_conv - 1
                c_out = c_end if last else width
                final = last and last_level
                layers.append(ConvNormAct(c_in, c_out, 3, pad_mode="reflect", norm="none" if final else norm,
                                          act="tanh" if final else "relu"))
                c_in = c_out
            if not last_level:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.body = nn.Sequential(*layers)

    def receptive_radius(self) -> int:
        """How far (in feature pixels, rounded up) an output pixel looks; tiles need this margin."""
        r, scale = 0.0, 1.0
        for m in self.body:
            if isinstance(m, nn.Upsample):
                r += scale  # nearest up-sampling can shift the footprint by one source pixel
                scale /= 2
            else:
                r += scale  # a 3x3 convolution adds one pixel at the current scale
        return math.ceil(r) + 1

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, h, w) -> (B, out_channels, h * 2**n_up, w * 2**n_up) in [-1, 1]."""
        return self.body(feat)


__all__ = ["InverseNet", "build_encoder", "encoder_geometry", "encoder_receptive_field", "level_plan",
           "RANDOM_VGG_SEED"]
