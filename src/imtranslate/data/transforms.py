"""Geometric transforms applied identically to every array of a training pair.

A translation pair is only useful if input and target stay pixel-aligned, so the random
parameters (crop position, flip) are drawn once per item and applied to the input, the target,
the label map and the instance map alike. Label and instance maps are always resized with
nearest-neighbour so they never acquire in-between class ids.

For a generator whose output is ``scale`` times its input (a x4 super-resolver), the target
``B`` is ``scale`` times the input's size: the parameters are drawn at the input's size and
applied to ``B`` scaled (:meth:`TransformParams.scaled`), so ``B`` is cropped at ``scale``
times the position and size of ``A``'s crop and covers the same part of the scene.
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

    def scaled(self, s: int) -> "TransformParams":
        """The same draw for an array ``s`` times larger: every size and position times ``s``."""
        if s == 1:
            return self
        return TransformParams(size=(s * self.size[0], s * self.size[1]), top=s * self.top, left=s * self.left,
                               crop=(s * self.crop[0], s * self.crop[1]), flip=self.flip)


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
        scale: the arrays named in ``scaled_keys`` are this many times larger than the others
            (a whole number >= 1; the generator's output size / input size). ``load_size`` and
            ``crop_size`` are in the input's pixels; scaled arrays are resized and cropped at
            ``scale`` times them, at the same place.
        scaled_keys: the arrays at the output's resolution (the target ``B``).
    """

    def __init__(self, load_size: int = 0, crop_size: int = 0, *, train: bool = True, flip: bool = True,
                 scale: int = 1, scaled_keys: Iterable[str] = ("B",)):
        self.load_size = int(load_size)
        self.crop_size = int(crop_size)
        self.train = bool(train)
        self.flip = bool(flip)
        if int(scale) != scale or scale < 1:
            raise ValueError(f"PairedTransform: scale must be a whole number >= 1, got {scale!r}")
        self.scale = int(scale)
        self.scaled_keys = frozenset(scaled_keys)

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
            arrays: name -> ``(H, W)`` or ``(H, W, C)`` array; all must share H and W, except
                those in ``scaled_keys``, which must be ``scale`` times that.
            rng: numpy Generator the random parameters are drawn from (reproducibility).
            nearest: keys resized with nearest-neighbour (integer maps).
            path: file name used in error messages.
        """
        nearest = set(nearest)
        present = {k: v for k, v in arrays.items() if v is not None}
        if not present:
            return dict(arrays)
        s = self.scale
        shapes = {k: v.shape[:2] for k, v in present.items()}
        base = [k for k in shapes if k not in self.scaled_keys] or list(shapes)
        h, w = shapes[base[0]]
        if s > 1 and base[0] in self.scaled_keys:  # only scaled arrays: the input size they imply
            h, w = h // s, w // s
        want = {k: (s * h, s * w) if k in self.scaled_keys else (h, w) for k in shapes}
        if any(shapes[k] != want[k] for k in shapes):
            desc = ", ".join(f"{k} {v[1]}x{v[0]}" for k, v in shapes.items())
            if s == 1:
                raise DataError(path or "<pair>", f"the images of a pair differ in size ({desc})",
                                "input, target and label/instance maps must have the same width and height")
            raise DataError(path or "<pair>", f"the images of a pair do not fit a x{s} model ({desc})",
                            f"{', '.join(sorted(self.scaled_keys))} must be {s} times the input's width and height")
        p = self.params(h, w, rng, path)
        ps = p.scaled(s)
        return {k: (None if v is None else self.apply(v, ps if k in self.scaled_keys else p, k in nearest))
                for k, v in arrays.items()}

    def __repr__(self) -> str:
        extra = f", scale={self.scale}" if self.scale != 1 else ""
        return (f"PairedTransform(load_size={self.load_size}, crop_size={self.crop_size}, "
                f"train={self.train}, flip={self.flip}{extra})")
