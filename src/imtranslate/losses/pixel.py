"""Pixel losses."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference."""
    return F.l1_loss(pred, target)


def pyramid_l1(preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over pyramid levels of the L1 between each output and the target of its size."""
    if len(preds) != len(targets) or not preds:
        raise ValueError(f"pyramid_l1 needs as many targets as outputs (>0), got {len(preds)} and {len(targets)}")
    return torch.stack([l1_loss(p, t) for p, t in zip(preds, targets)]).mean()
