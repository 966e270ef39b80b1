"""A built-in style picture, generated from a seed: nothing to download, the same on every machine.

:func:`builtin_style` paints a few hundred oriented, overlapping brush strokes in a small
saturated palette over a smooth colour field, with dark stroke edges: bold colours, strong
directional texture and clear edges, the statistics a Gram-matrix style loss picks up.
"""
from __future__ import annotations

import cv2
import numpy as np

#: saturated palettes (RGB) the strokes are drawn from, one per ``seed % len``
_PALETTES = (
    ((32, 60, 140), (240, 190, 40), (200, 60, 40), (30, 120, 90), (245, 240, 220)),  # starry blues and yellows
    ((120, 30, 80), (250, 140, 60), (250, 220, 120), (40, 40, 60), (90, 170, 200)),  # sunset
)


def builtin_style(size: int = 256, seed: int = 0) -> np.ndarray:
    """A uint8 (size, size, 3) painting-like picture; a function of ``(size, seed)`` only."""
    if size < 16:
        raise ValueError(f"the built-in style needs size >= 16, got {size}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 4242])
    pal = np.array(_PALETTES[seed % len(_PALETTES)], dtype=np.float32)
    # a smooth field of palette colours as the ground
    cells = rng.integers(0, len(pal), (4, 4))
    ground = cv2.resize(pal[cells], (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.clip(ground, 0, 255).astype(np.uint8).copy()
    n = int(1.2 * (size / 8) ** 2)
    base_angle = rng.uniform(0, 180)
    for _ in range(n):
        cx, cy = (int(v) for v in rng.integers(0, size, 2))
        length = max(2, int(rng.uniform(0.04, 0.12) * size))
        width = max(1, int(rng.uniform(0.008, 0.025) * size))
        # strokes follow a swirling flow field, as brush work does
        angle = base_angle + 60 * np.sin(cx / size * 2 * np.pi) * np.cos(cy / size * 2 * np.pi) + rng.normal(0, 10)
        colour = pal[rng.integers(len(pal))] * rng.uniform(0.8, 1.1)
        colour = tuple(int(v) for v in np.clip(colour, 0, 255))
        edge = tuple(int(v * 0.35) for v in colour)
        cv2.ellipse(img, (cx, cy), (length, width), angle, 0, 360, edge, thickness=-1, lineType=cv2.LINE_AA)
        cv2.ellipse(img, (cx, cy), (max(1, length - 1), max(1, width - 1)), angle, 0, 360, colour, thickness=-1,
                    lineType=cv2.LINE_AA)
    return img
