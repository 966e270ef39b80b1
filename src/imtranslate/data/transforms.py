"""Geometric transforms applied identically to every array of a training pair.

A translation pair is only useful if input and target stay pixel-aligned, so the random
parameters (crop position, flip) are drawn once per item and applied to the input, the target,
the label map and the instance map alike. Label and instance maps are always resized with
nearest-neighbour so they never acquire in-between class ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import cv2
import numpy as np

from ..errors import DataError

#: Keys of a sample dict that hold integer maps and are therefore resized with nearest.
NEAREST_KEYS = ("label", "inst")


@dataclass(frozen=True)
class TransformParams:
    """The random draws for one item: resized size, crop box and flip."""

    size: tuple[int, int]  # (H, W) after the load_size resize
    top: int
    left: int
    crop: tuple[int, int]  # (H, W) of the crop
    flip: bool


def resized_shape(h: int, w: int, load_size: int) -> tuple[int, int]:
    """``(H, W)`` after scaling so that the shorter side equals ``load_size`` (0 = keep)."""
    if load_size <= 0:
        return h, w
    if h <= w:
        return load_size, max(1, round(w * load_size / h))
    return max(1, round(h * load_size / w)), load_size


def resize_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of any dtype (cv2 has no int64), sampling pixel centres."""
    h, w = arr.shape[:2]
    nh, nw = size
    if (nh, nw) == (h, w):
        return arr
    rows = np.minimum(((np.arange(nh) + 0.5) * h / nh).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(nw) + 0.5) * w / nw).astype(np.int64), w - 1)
    return arr[rows[:, None], cols[None, :]]


def resize_image(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Smooth resize of a picture: area averaging when shrinking, bicubic when enlarging."""
    h, w = arr.shape[:2]
    nh, nw = size
    if (nh, nw) == (h, w):
        return arr
    # INTER_AREA avoids aliasing when shrinking; INTER_CUBIC is sharper when enlarging.
    interp = cv2.INTER_AREA if nh * nw < h * w else cv2.INTER_CUBIC
    out = cv2.resize(arr, (nw, nh), interpolation=interp)
    if arr.ndim == 3 and out.ndim == 2:  # cv2 drops a trailing channel of size 1
        out = out[:, :, None]
    return out


class PairedTransform:
    """Resize / crop / flip every array of a sample with the same random parameters.

    Args:
        load_size: resize so that the shorter side has this length first (0 = keep).
        crop_size: square crop side; random position in training, centred otherwise
            (0 = keep the whole image).
        train: random crop and flip when True; centre crop and no flip when False.
        flip: allow random horizontal flips (training only).
    """

    def __init__(self, load_size: int = 0, crop_size: int = 0, *, train: bool = True, flip: bool = True):
        self.load_size = int(load_size)
        self.crop_size = int(crop_size)
        self.train = bool(train)
        self.flip = bool(flip)

    def params(self, h: int, w: int, rng: Optional[np.random.Generator], path="") -> TransformParams:
        """Draw the parameters for an item of size ``(h, w)``.

        The same number of random values is drawn whatever the options, so an item's stream
        does not depend on e.g. the image size.
        """
        rh, rw = resized_shape(h, w, self.load_size)
        if self.crop_size > 0:
            if rh < self.crop_size or rw < self.crop_size:
                after = f" (after resizing the shorter side to data.load_size={self.load_size})" if self.load_size else ""
                raise DataError(
                    path or "<image>",
                    f"image is {rw}x{rh}{after}, smaller than data.crop_size={self.crop_size}",
                    "lower data.crop_size, raise data.load_size, or remove the file",
                )
            ch = cw = self.crop_size
        else:
            ch, cw = rh, rw
        if self.train:
            if rng is None:
                rng = np.random.default_rng()
            u = rng.random(3)
            top = min(int(u[0] * (rh - ch + 1)), rh - ch)
            left = min(int(u[1] * (rw - cw + 1)), rw - cw)
            flip = self.flip and u[2] < 0.5
        else:
            top, left, flip = (rh - ch) // 2, (rw - cw) // 2, False
        return TransformParams(size=(rh, rw), top=top, left=left, crop=(ch, cw), flip=flip)

    @staticmethod
    def apply(arr: np.ndarray, p: TransformParams, nearest: bool) -> np.ndarray:
        """Apply drawn parameters to one array (``nearest`` for label / instance maps)."""
        arr = resize_nearest(arr, p.size) if nearest else resize_image(arr, p.size)
        arr = arr[p.top : p.top + p.crop[0], p.left : p.left + p.crop[1]]
        if p.flip:
            arr = arr[:, ::-1]
        # Copies make the result contiguous (torch.from_numpy rejects negative strides).
        return np.ascontiguousarray(arr)

    def __call__(
        self,
        arrays: Mapping[str, Optional[np.ndarray]],
        rng: Optional[np.random.Generator] = None,
        *,
        nearest: Iterable[str] = NEAREST_KEYS,
        path="",
    ) -> dict:
        """Transform every array in ``arrays`` (None values pass through).

        Args:
            arrays: name -> ``(H, W)`` or ``(H, W, C)`` array; all must share H and W.
            rng: numpy Generator the random parameters are drawn from (reproducibility).
            nearest: keys resized with nearest-neighbour (integer maps).
            path: file name used in error messages.
        """
        nearest = set(nearest)
        present = {k: v for k, v in arrays.items() if v is not None}
        if not present:
            return dict(arrays)
        shapes = {k: v.shape[:2] for k, v in present.items()}
        h, w = next(iter(shapes.values()))
        if any(s != (h, w) for s in shapes.values()):
            desc = ", ".join(f"{k} {s[1]}x{s[0]}" for k, s in shapes.items())
            raise DataError(path or "<pair>", f"the images of a pair differ in size ({desc})",
                            "input, target and label/instance maps must have the same width and height")
        p = self.params(h, w, rng, path)
        return {k: (None if v is None else self.apply(v, p, k in nearest)) for k, v in arrays.items()}

    def __repr__(self) -> str:
        return (f"PairedTransform(load_size={self.load_size}, crop_size={self.crop_size}, "
                f"train={self.train}, flip={self.flip})")
