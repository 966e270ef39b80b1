"""Pure tensor operations every layer may use: nothing here knows configs, nets or files.

``warp_tensor`` pulls a batch along a dense flow (data clips, the temporal loss and video
translation all use it, with one convention: ``out[y] = x[y + flow[y]]``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def base_grid(h: int, w: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return xx, yy  # (h, w) each


def warp_tensor(x: torch.Tensor, flow: torch.Tensor, *, mode: str = "bilinear",
                padding_mode: str = "border") -> torch.Tensor:
    """Pull ``x (B, C, H, W)`` along ``flow (B, 2, H, W)`` (pixels): ``out[y] = x[y + flow[y]]``.

    Differentiable in both ``x`` and ``flow`` (``mode="bilinear"``); ``mode="nearest"`` keeps
    one-hot label inputs one-hot. Same convention as :func:`imtranslate.infer.flow.warp`.
    """
    b, _, h, w = x.shape
    if flow.shape[0] != b or flow.shape[1] != 2 or flow.shape[-2:] != (h, w):
        raise ValueError(f"warp_tensor: flow {tuple(flow.shape)} does not fit x {tuple(x.shape)}")
    xx, yy = base_grid(h, w, x.device, flow.dtype)
    # grid_sample wants (x, y) in [-1, 1]; align_corners=True maps -1/1 to the corner pixel centres
    gx = (xx + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (yy + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)  # (B, H, W, 2)
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode=padding_mode, align_corners=True)
