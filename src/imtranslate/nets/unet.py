"""The pix2pix U-Net generator (Isola et al. 2017)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import crop_to, pad_to_multiple
from .layers import ConvNormAct
from .registry import init_config, register_net


@register_net("unet")
class UNetGenerator(nn.Module):
    """U-Net: ``num_downs`` 4x4 stride-2 convs down, as many transposed convs up, and a skip
    connection from every encoder level to the decoder level of the same size.

    Widths are ``ngf * min(2**j, 8)`` at encoder level j, or any list ``widths`` (one per
    level, e.g. after channel pruning; the decoder mirrors them, as its skips require). As in pix2pix the blocks are
    pre-activation (LeakyReLU 0.2 before each down conv, ReLU before each up conv), so skips
    carry normalised, not-yet-activated features; the outermost down conv has no norm, the
    innermost (1x1 for a 256-px input and ``num_downs=8``) has no norm either, and the
    outermost up conv ends in tanh. With ``dropout`` the three innermost decoder blocks apply
    dropout 0.5, the noise source of pix2pix (the paper's "CD512" decoder layers).

    Input (B, in_channels, H, W) of any size: padded to a multiple of ``2**num_downs`` and
    the output cropped back to (B, out_channels, H, W).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        dropout: bool = True,
        widths: list[int] | None = None,
    ):
        super().__init__()
        self.config = init_config(locals())
        if num_downs < 2:
            raise ValueError(f"num_downs must be >= 2, got {num_downs}")
        self.multiple = 2**num_downs  # inputs are padded to a multiple of this
        self.scale = 1  # output size / input size
        # inference in NHWC is faster on CPU for this net (infer/optimize.py: inference_channels_last)
        self.cpu_inference_channels_last = True
        width = list(widths) if widths else [ngf * min(2**j, 8) for j in range(num_downs)]  # encoder level j
        if len(width) != num_downs or min(width) < 1:
            raise ValueError(f"widths needs {num_downs} positive channel counts (one per level), got {widths}")

        downs = [ConvNormAct(in_channels, width[0], 4, stride=2, padding=1, norm="none", act="none")]
        for j in range(1, num_downs):
            innermost = j == num_downs - 1
            downs.append(ConvNormAct(
                width[j - 1], width[j], 4, stride=2, padding=1,
                norm="none" if innermost else norm, act="lrelu", preact=True,
            ))
        self.downs = nn.ModuleList(downs)

        # ups[u] is the u-th decoder block counted from the innermost; all but ups[0] take the
        # previous decoder output concatenated with the encoder skip of the same size.
        ups = []
        for u in range(num_downs):
            j = num_downs - 1 - u  # the encoder level whose size this block starts from
            c_in = width[j] if u == 0 else 2 * width[j]
            outermost = j == 0
            ups.append(ConvNormAct(
                c_in, out_channels if outermost else width[j - 1], 4, stride=2, padding=1,
                transposed=True, preact=True, act="relu",
                norm="none" if outermost else norm,
                dropout=0.5 if dropout and u < 3 and not outermost else 0.0,
            ))
        ups[-1].append(nn.Tanh())
        self.ups = nn.ModuleList(ups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        h = pad_to_multiple(x, self.multiple)  # (B, C_in, H', W')
        skips = []
        for down in self.downs:
            h = down(h)  # (B, width[j], H'/2**(j+1), W'/2**(j+1))
            skips.append(h)
        h = self.ups[0](skips.pop())
        for up in self.ups[1:]:
            h = up(torch.cat([h, skips.pop()], dim=1))  # concat with the same-size skip
        return crop_to(h, size)  # (B, C_out, H, W)
