"""Total variation."""
from __future__ import annotations

import torch


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of ``x`` (B, C, H, W): mean |vertical| + mean |horizontal| step."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
