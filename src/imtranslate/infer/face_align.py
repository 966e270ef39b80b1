"""Face alignment: a similarity transform from a face's 5 landmarks to a canonical template, the
aligned crop, and the inverse paste-back.

The template (:data:`TEMPLATE`) places the eyes, nose tip and mouth corners of an upright frontal
face in a unit square (the FFHQ / ArcFace layout, as fractions of the crop side), so the crop size
is free: ``TEMPLATE * size``. The transform is OpenCV's ``estimateAffinePartial2D`` (rotation,
uniform scale, translation: 4 degrees of freedom, least squares over the 5 points, no RANSAC —
five points do not need it), the same family GFPGAN and ArcFace use.

``paste_back`` warps the enhanced crop and its soft mask with the inverse transform and blends
``out = mask * face + (1 - mask) * picture``; everything outside the mask keeps the picture's pixels
bit for bit.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["TEMPLATE", "estimate_transform", "align", "invert", "warp_back", "paste_back"]

# left eye, right eye, nose tip, left mouth corner, right mouth corner (as seen), fractions of the side
TEMPLATE = np.array([[0.3153, 0.4592], [0.6838, 0.4592], [0.5000, 0.6402], [0.3466, 0.8240], [0.6534, 0.8240]],
                    np.float32)


def estimate_transform(landmarks: np.ndarray, size: int, *, template: np.ndarray = TEMPLATE) -> np.ndarray:
    """The 2x3 similarity matrix mapping picture pixels to crop pixels of a ``size`` crop."""
    src = np.asarray(landmarks, np.float32).reshape(5, 2)
    dst = np.asarray(template, np.float32) * size
    M, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if M is None:  # degenerate landmarks (all on one point): a plain scale about their centre
        c = src.mean(0)
        M = np.array([[1, 0, size / 2 - c[0]], [0, 1, size / 2 - c[1]]], np.float64)
    return M.astype(np.float64)


def invert(M: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix."""
    return cv2.invertAffineTransform(M)


def align(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(crop (size, size, C), M)``: the face warped to the template; outside the picture reflected."""
    M = estimate_transform(landmarks, size)
    crop = cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return crop, M


def warp_back(crop: np.ndarray, M: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The crop (float or uint8, HxW[xC]) carried back to picture coordinates of ``shape`` (H, W)."""
    h, w = shape
    return cv2.warpAffine(crop, invert(M), (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def paste_back(picture: np.ndarray, face: np.ndarray, mask: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``picture`` with ``face`` (the aligned crop, same size as ``mask``, in [0, 1]) blended in.

    ``picture`` and ``face`` are float32 (H, W, 3); returns a new float32 picture.
    """
    h, w = picture.shape[:2]
    # the warped crop's own edge would be mixed with black by bilinear sampling: shrink the mask there
    m = warp_back(mask.astype(np.float32), M, (h, w))[..., None]
    f = warp_back(face.astype(np.float32), M, (h, w))
    out = picture.copy()
    region = m[..., 0] > 0
    out[region] = m[region] * f[region] + (1 - m[region]) * picture[region]
    return out
