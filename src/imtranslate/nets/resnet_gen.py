"""The ResNet generator (Johnson et al. 2016; CycleGAN; pix2pixHD's global generator G1)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import crop_to, pad_to_multiple
from .layers import ConvNormAct, down_block, output_head, res_blocks, up_block
from .registry import init_config, register_net


@register_net("resnet")
class ResNetGenerator(nn.Module):
    """7x7 conv, ``n_downsampling`` stride-2 convs (width doubling), ``n_blocks`` residual
    blocks, as many transposed convs back up, and a 7x7 conv + tanh output head.

    ``body`` (everything but the head) and ``head`` are separate attributes so pix2pixHD can
    reuse this net as its global generator and feed ``body``'s features to a local enhancer.
    Input (B, in_channels, H, W) of any size -> (B, out_channels, H, W).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_downsampling: int = 2,
        n_blocks: int = 9,
        norm: str = "instance",
        dropout: bool = False,
    ):
        super().__init__()
        self.config = init_config(locals())
        self.multiple = 2**n_downsampling  # inputs are padded to a multiple of this
        self.scale = 1  # output size / input size
        width = [ngf * 2**j for j in range(n_downsampling + 1)]
        self.body = nn.Sequential(
            ConvNormAct(in_channels, ngf, 7, pad_mode="reflect", norm=norm),
            *[down_block(width[j], width[j + 1], norm=norm) for j in range(n_downsampling)],
            *res_blocks(width[-1], n_blocks, norm=norm, dropout=0.5 if dropout else 0.0),
            *[up_block(width[j + 1], width[j], norm=norm) for j in reversed(range(n_downsampling))],
        )
        self.head = output_head(ngf, out_channels)
        self.feature_channels = ngf  # width of ``body``'s features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.head(self.body(pad_to_multiple(x, self.multiple)))  # (B, C_out, H', W')
        return crop_to(y, size)  # (B, C_out, H, W)
