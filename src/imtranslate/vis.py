"""Turning model tensors into pictures a person can look at (grids, label colours)."""
from __future__ import annotations

import numpy as np
import torch


def label_palette(n: int) -> np.ndarray:
    """A fixed, well-spread colour per class (class 0 black), the same in every run."""
    rng = np.random.default_rng(12345)
    pal = rng.integers(40, 256, size=(max(n, 1), 3), dtype=np.int64).astype(np.uint8)
    pal[0] = 0
    return pal


def colorize_labels(label: np.ndarray, n_classes: int) -> np.ndarray:
    """int (H, W) -> uint8 (H, W, 3); values outside 0..n-1 are white."""
    pal = label_palette(n_classes)
    out = np.full(label.shape + (3,), 255, np.uint8)
    ok = (label >= 0) & (label < n_classes)
    out[ok] = pal[label[ok]]
    return out


def picture(t: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> uint8 (H, W, 3)."""
    t = t.detach().float().cpu().clamp(-1, 1)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    elif t.shape[0] > 3:
        t = t[:3]
    return ((t.permute(1, 2, 0).numpy() + 1.0) * 127.5 + 0.5).astype(np.uint8)


def input_picture(a: torch.Tensor, input_kind: str, n_classes: int = 0) -> np.ndarray:
    """The network input ``A`` (C, H, W) shown as a picture: label one-hots get class colours."""
    if input_kind == "label":
        onehot = a[:n_classes].detach().float().cpu()
        label = onehot.argmax(0).numpy()
        label[onehot.sum(0).numpy() == 0] = -1  # "don't care" pixels
        return colorize_labels(label, n_classes)
    return picture(a)


def grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Rows of uint8 pictures -> one uint8 (H, W, 3) picture with white gaps.

    Every cell is as large as the largest picture; smaller ones (e.g. the low-resolution input
    next to a x4 output) sit at its top-left corner.
    """
    h = max(img.shape[0] for r in rows for img in r)
    w = max(img.shape[1] for r in rows for img in r)
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            ih, iw = img.shape[:2]
            out[y:y + ih, x:x + iw] = img if img.ndim == 3 else img[:, :, None]
    return out
