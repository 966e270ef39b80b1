"""A light face parser in the manner of BiSeNet (Yu et al., "BiSeNet: Bilateral Segmentation Network
for Real-time Semantic Segmentation", 2018): per-pixel class logits of a face crop.

Two paths, as in the paper, narrowed for CPU use:

* **spatial path**: three stride-2 conv-BN-ReLU layers keep detail at 1/8 of the input;
* **context path**: a deeper stride-2 stack down to 1/32 with a global-average context vector;
  an *attention refinement module* (ARM: the feature re-weighted by a sigmoid of its own pooled
  statistics) at 1/16 and 1/32, up-sampled and summed to 1/8;
* **feature fusion module** (FFM): both paths concatenated, a 1x1 conv, and a channel attention
  ``x + x * sigmoid(W2 relu(W1 pool(x)))``; a 1x1 head gives ``n_classes`` logits, up-sampled
  bilinearly to the input size.

Input (B, 3, H, W) in [-1, 1]; any H, W (padded to a multiple of 32 and cropped back).
Output (B, n_classes, H, W) logits. Widths are keyword arguments so a checkpoint rebuilds it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import pad_to_multiple
from .registry import init_config, register_net

__all__ = ["FaceParser"]


def _cbr(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _ARM(nn.Module):
    """Attention refinement: the feature scaled per channel by a sigmoid of its pooled statistics."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _cbr(cin, cout)
        self.att = nn.Sequential(nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.Sigmoid())

    def forward(self, x):
        x = self.conv(x)
        return x * self.att(F.adaptive_avg_pool2d(x, 1))


class _FFM(nn.Module):
    """Feature fusion: concat -> 1x1 conv -> x + x * channel attention."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _cbr(cin, cout, 1)
        self.att = nn.Sequential(nn.Conv2d(cout, max(cout // 4, 1), 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(max(cout // 4, 1), cout, 1), nn.Sigmoid())

    def forward(self, sp, cp):
        x = self.conv(torch.cat([sp, cp], 1))
        return x + x * self.att(F.adaptive_avg_pool2d(x, 1))


@register_net("face_parser")
class FaceParser(nn.Module):
    multiple = 32
    scale = 1

    def __init__(self, *, n_classes: int = 11, in_channels: int = 3, width: int = 32, spatial_width: int = 0,
                 fuse_width: int = 0):
        config = init_config(locals())
        super().__init__()
        self.config = config
        w = width
        sw = spatial_width or w
        fw = fuse_width or 2 * w
        self.n_classes = n_classes
        # spatial path: 1/8
        self.spatial = nn.Sequential(_cbr(in_channels, sw, 3, 2), _cbr(sw, sw, 3, 2), _cbr(sw, 2 * sw, 3, 2))
        # context path: 1/4, 1/8, 1/16, 1/32
        self.c8 = nn.Sequential(_cbr(in_channels, w, 3, 2), _cbr(w, w, 3, 2), _cbr(w, 2 * w, 3, 2))
        self.c16 = nn.Sequential(_cbr(2 * w, 4 * w, 3, 2), _cbr(4 * w, 4 * w))
        self.c32 = nn.Sequential(_cbr(4 * w, 8 * w, 3, 2), _cbr(8 * w, 8 * w))
        self.global_ctx = _cbr(8 * w, 2 * w, 1)
        self.arm16, self.arm32 = _ARM(4 * w, 2 * w), _ARM(8 * w, 2 * w)
        self.refine16, self.refine32 = _cbr(2 * w, 2 * w), _cbr(2 * w, 2 * w)
        self.ffm = _FFM(2 * sw + 2 * w, fw)
        self.head = nn.Sequential(_cbr(fw, fw), nn.Conv2d(fw, n_classes, 1))

    def forward(self, x):
        H, W = x.shape[-2:]
        x = pad_to_multiple(x, self.multiple)
        sp = self.spatial(x)  # (B, 2sw, H/8, W/8)
        f8 = self.c8(x)
        f16 = self.c16(f8)  # (B, 4w, H/16, W/16)
        f32 = self.c32(f16)  # (B, 8w, H/32, W/32)
        g = self.global_ctx(F.adaptive_avg_pool2d(f32, 1))  # (B, 2w, 1, 1)
        up32 = self.refine32(F.interpolate(self.arm32(f32) + g, size=f16.shape[-2:], mode="nearest"))
        up16 = self.refine16(F.interpolate(self.arm16(f16) + up32, size=sp.shape[-2:], mode="nearest"))
        logits = self.head(self.ffm(sp, up16))  # (B, n_classes, H/8, W/8)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :H, :W]
