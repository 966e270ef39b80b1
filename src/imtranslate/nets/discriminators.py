"""PatchGAN (pix2pix) and multi-scale (pix2pixHD) discriminators.

Every discriminator returns ``list[list[Tensor]]``: outer over scales, inner over the outputs
of its layers, the LAST one being the real/fake logit map (B, 1, h, w). The intermediate ones
feed the feature-matching loss.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import ConvNormAct, downsample_avg
from .registry import init_config, register_net


@register_net("patch")
class PatchDiscriminator(nn.Module):
    """PatchGAN: classifies overlapping patches as real or fake (70x70 for ``n_layers=3``).

    4x4 convs with LeakyReLU 0.2: the first (no norm) and the next ``n_layers - 1`` have
    stride 2 and double the width (capped at ``8 * ndf``); the last two have stride 1, the
    final one giving the 1-channel logit map. ``in_channels`` defaults to 6: a conditional D
    sees the input and the (real or generated) output concatenated.
    """

    def __init__(self, *, in_channels: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        self.config = init_config(locals())
        width = [ndf * min(2**j, 8) for j in range(n_layers + 1)]
        layers = [ConvNormAct(in_channels, ndf, 4, stride=2, padding=1, norm="none", act="lrelu")]
        layers += [
            ConvNormAct(width[j - 1], width[j], 4, stride=2 if j < n_layers else 1, padding=1, norm=norm, act="lrelu")
            for j in range(1, n_layers + 1)
        ]
        layers.append(nn.Conv2d(width[-1], 1, 4, stride=1, padding=1))
        self.layers = nn.ModuleList(layers)
        # n_layers stride-2 convs (each floors the size to half), then two 4x4 stride-1 convs
        # (each takes 1 off): smaller inputs leave nothing to classify.
        self.min_size = 3 * 2**n_layers

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"the PatchGAN discriminator needs inputs of at least {self.min_size}x{self.min_size} "
                f"(n_layers={len(self.layers) - 2}), got {tuple(x.shape[-2:])}: use larger crops or fewer layers"
            )
        features = []
        for layer in self.layers:
            x = layer(x)  # (B, C_j, H_j, W_j); the last is the (B, 1, h, w) logit map
            features.append(x)
        return [features]


@register_net("multiscale")
class MultiScaleDiscriminator(nn.Module):
    """``num_d`` PatchGAN discriminators on the input at full, 1/2, 1/4 ... size (pix2pixHD).

    Each halving is :func:`downsample_avg` (3x3 average pool, stride 2, border-aware).
    Returns one inner list per scale, finest first.
    """

    def __init__(
        self, *, in_channels: int = 6, ndf: int = 64, n_layers: int = 3, num_d: int = 3, norm: str = "instance"
    ):
        super().__init__()
        self.config = init_config(locals())
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(in_channels=in_channels, ndf=ndf, n_layers=n_layers, norm=norm) for _ in range(num_d)
        )
        # Smallest full-size input whose coarsest copy (ceil-halved num_d - 1 times) is usable.
        self.min_size = self.discriminators[0].min_size * 2 ** (num_d - 1) - (2 ** (num_d - 1) - 1)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"this {len(self.discriminators)}-scale discriminator needs inputs of at least "
                f"{self.min_size}x{self.min_size}, got {tuple(x.shape[-2:])}: use larger crops, fewer "
                f"scales (num_d) or fewer layers (n_layers)"
            )
        outputs = []
        for j, d in enumerate(self.discriminators):
            if j > 0:
                x = downsample_avg(x)  # (B, C, ceil(H/2), ceil(W/2))
            outputs.extend(d(x))
        return outputs
