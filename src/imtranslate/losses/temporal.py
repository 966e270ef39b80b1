"""Temporal consistency loss: an output should match the previous output moved by the flow.

    loss = sum(mask * |out_t - warp(out_prev, flow)|) / (sum(mask) * C)

``flow (B, 2, H, W)`` is the flow from frame t back to the previous frame (the convention of
:mod:`imtranslate.data.clips`): ``warp(out_prev, flow)[y] = out_prev[y + flow[y]]``. ``mask``
(``(B, 1, H, W)``, 1 = use the pixel) leaves out pixels that are not shared by the two frames:
out of frame, occluded. Gradients flow into both outputs; detach ``out_prev`` to pull only the
new frame towards the old one. Unweighted, like every loss here.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..ops import warp_tensor


def temporal_loss(out_t: torch.Tensor, out_prev: torch.Tensor, flow: torch.Tensor,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Masked L1 between ``out_t`` and ``out_prev`` warped onto it by ``flow`` (see module doc)."""
    if out_t.shape != out_prev.shape:
        raise ValueError(f"temporal_loss: outputs differ in shape {tuple(out_t.shape)} vs {tuple(out_prev.shape)}")
    warped = warp_tensor(out_prev.float(), flow.float())
    diff = (out_t.float() - warped).abs()  # (B, C, H, W)
    if mask is None:
        return diff.mean()
    mask = mask.float()
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    # mean over the used pixels and channels; an all-zero mask gives 0, not NaN
    return (diff * mask).sum() / (mask.sum() * diff.shape[1]).clamp_min(1.0)


def flow_loss(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Masked L1 between a predicted and a reference flow ``(B, 2, H, W)``, in pixels (vid2vid's
    flow loss); ``mask (B, 1, H, W)`` keeps the pixels where the reference is known."""
    diff = (pred.float() - target.float()).abs()
    if mask is None:
        return diff.mean()
    mask = mask.float()
    return (diff * mask).sum() / (mask.sum() * 2).clamp_min(1.0)
