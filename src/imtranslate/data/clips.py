"""Short video clips made from single images by known motion, with their exact optical flow.

Temporal training and the video tests need consecutive frames *and* the true flow between
them; no video dataset is required for that. A clip is a window moving over one image by a
smooth affine motion (shift, rotation, zoom that grow linearly with time), so the flow between
any two frames is known in closed form.

Flow convention (as in :mod:`imtranslate.infer.flow`): ``flows_bw[t]`` is the flow from frame
``t`` back to frame ``t - 1``: frame ``t`` at pixel ``y`` shows what frame ``t - 1`` shows at
``y + flows_bw[t][y]``. Warping frame ``t - 1`` with it (``out[y] = prev[y + flow[y]]``)
reproduces frame ``t`` wherever ``valid[t]`` is True.

Numpy (for clips on disk and tests): :func:`synthesize_clip`. Torch (for a train step, on the
batch's device, differentiable): :func:`random_affine_flow`, and :func:`imtranslate.ops.warp_tensor`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
import torch

from ..ops import base_grid, warp_tensor

__all__ = ["Clip", "synthesize_clip", "random_affine_flow", "warp_tensor", "affine_flow"]


@dataclass
class Clip:
    """Frames made by known motion, and the exact flow between consecutive frames.

    ``flows_bw[0]`` / ``flows_fw[0]`` / ``valid[0]`` belong to the first frame, which has no
    predecessor: zero flow, all False.
    """

    frames: list  # uint8 (h, w, 3) or (h, w): the moving window over the image
    flows_bw: list  # float32 (h, w, 2): frame t -> frame t-1
    flows_fw: list  # float32 (h, w, 2): frame t-1 -> frame t (in frame t-1's pixels)
    valid: list  # bool (h, w): pixels of frame t seen in frame t-1 and drawn from inside the image
    targets: Optional[list] = None  # the target image moved identically (paired data)
    matrices: list = field(default_factory=list)  # 3x3: frame t pixel (x, y, 1) -> image pixel


def _view_matrices(n_frames: int, rng: np.random.Generator, image_hw, out_hw, max_shift: float,
                   max_rotate: float, max_scale: float) -> list[np.ndarray]:
    """One smooth motion per clip: constant velocities of shift, rotation and zoom."""
    H, W = image_hw
    h, w = out_hw
    v = rng.uniform(-max_shift, max_shift, 2)  # pixels per frame
    omega = math.radians(rng.uniform(-max_rotate, max_rotate))  # radians per frame
    zoom = rng.uniform(-max_scale, max_scale)  # relative scale change per frame
    c_out = np.array([(w - 1) / 2, (h - 1) / 2])
    c_img = np.array([(W - 1) / 2, (H - 1) / 2])
    # start offset so the window drifts across the middle of the image rather than away from it
    start = -v * (n_frames - 1) / 2
    mats = []
    for t in range(n_frames):
        a, s = omega * t, (1 + zoom) ** t
        R = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        M = np.eye(3)
        M[:2, :2] = R
        M[:2, 2] = c_img + start + v * t - R @ c_out  # image point = R (y - c_out) + c_img + offset
        mats.append(M)
    return mats


def affine_flow(M_from: np.ndarray, M_to: np.ndarray, h: int, w: int) -> np.ndarray:
    """Exact flow from the view ``M_from`` to the view ``M_to`` (3x3, view pixel -> image pixel):
    pixel ``y`` of the first view shows image point ``M_from y``, which the second view shows at
    ``M_to^-1 M_from y``."""
    T = np.linalg.inv(M_to) @ M_from
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    X = T[0, 0] * xx + T[0, 1] * yy + T[0, 2]
    Y = T[1, 0] * xx + T[1, 1] * yy + T[1, 2]
    return np.stack([X - xx, Y - yy], axis=-1).astype(np.float32)


def _inside(M: np.ndarray, h: int, w: int, H: int, W: int) -> np.ndarray:
    """Pixels of a ``(h, w)`` view whose image point lies inside the ``(H, W)`` image."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    X = M[0, 0] * xx + M[0, 1] * yy + M[0, 2]
    Y = M[1, 0] * xx + M[1, 1] * yy + M[1, 2]
    return (X >= 0) & (X <= W - 1) & (Y >= 0) & (Y <= H - 1)


def synthesize_clip(image: np.ndarray, n_frames: int = 8, rng: Optional[np.random.Generator] = None, *,
                    max_shift: float = 3.0, max_rotate: float = 1.0, max_scale: float = 0.01,
                    size: Optional[tuple[int, int]] = None, target: Optional[np.ndarray] = None,
                    interpolation: str = "linear", target_interpolation: Optional[str] = None) -> Clip:
    """A clip of ``n_frames`` views of ``image`` moving smoothly by a random known affine motion.

    Args:
        image: ``uint8 (H, W, 3)`` or ``(H, W)`` (or an integer label map with
            ``interpolation="nearest"``).
        rng: numpy generator (``np.random.default_rng(seed)``); a fresh seed-0 one if None.
        max_shift: largest shift per frame, pixels (drawn uniformly per axis).
        max_rotate: largest rotation per frame, degrees.
        max_scale: largest relative zoom per frame (0.01 = 1 %).
        size: ``(height, width)`` of the frames, a window centred on the image; default the
            image size (pixels moved in from outside the image are then reflected border, and
            ``valid`` excludes them). A window smaller than the image keeps every frame full of
            real content.
        target: a second image of the same size (paired data) moved by exactly the same views.
        interpolation / target_interpolation: ``linear`` | ``cubic`` | ``nearest``.

    Returns:
        :class:`Clip` with the frames, the exact backward/forward flows between consecutive
        frames and the masks of pixels that are truly shared by consecutive frames.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    if n_frames < 1:
        raise ValueError(f"synthesize_clip: n_frames must be >= 1, got {n_frames}")
    H, W = image.shape[:2]
    h, w = size if size is not None else (H, W)
    if target is not None and target.shape[:2] != (H, W):
        raise ValueError(f"synthesize_clip: target is {target.shape[:2]} but image is {(H, W)}")
    flags = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
    mats = _view_matrices(n_frames, rng, (H, W), (h, w), max_shift, max_rotate, max_scale)

    def render(img, M, interp):
        src = img if img.dtype in (np.uint8, np.float32) else img.astype(np.float32)
        out = cv2.warpAffine(np.ascontiguousarray(src), M[:2].astype(np.float64), (w, h),
                             flags=flags[interp] | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)
        return out.astype(img.dtype) if out.dtype != img.dtype else out

    frames = [render(image, M, interpolation) for M in mats]
    targets = None
    if target is not None:
        targets = [render(target, M, target_interpolation or interpolation) for M in mats]
    zero = np.zeros((h, w, 2), np.float32)
    flows_bw, flows_fw, valid = [zero], [zero], [np.zeros((h, w), bool)]
    for t in range(1, n_frames):
        bw = affine_flow(mats[t], mats[t - 1], h, w)
        fw = affine_flow(mats[t - 1], mats[t], h, w)
        xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        sx, sy = xx + bw[..., 0], yy + bw[..., 1]
        seen_before = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
        valid.append(seen_before & _inside(mats[t], h, w, H, W))
        flows_bw.append(bw)
        flows_fw.append(fw)
    return Clip(frames, flows_bw, flows_fw, valid, targets, mats)


# --------------------------------------------------------------------------------------------
# Torch: random known warps of a batch, for temporal training
# --------------------------------------------------------------------------------------------
def random_affine_flow(n: int, h: int, w: int, *, max_shift: float = 3.0, max_rotate: float = 1.0,
                       max_scale: float = 0.02, device=None,
                       generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random small affine motions about the image centre, as flows with their validity masks.

    Returns ``flow (n, 2, h, w)`` and ``valid (n, 1, h, w)`` (float 0/1): a "next frame" made by
    ``warp_tensor(x, flow)`` shows at ``y`` what ``x`` shows at ``y + flow[y]``, and ``valid`` is 1
    where that point lies inside ``x`` (not border padding). Draws from ``generator`` (a CPU
    ``torch.Generator``; default torch's global one, which the training loop seeds and checkpoints).
    """
    def u(limit):  # uniform in [-limit, limit], drawn on the CPU so any device gives the same motion
        return ((torch.rand(n, generator=generator) * 2 - 1) * limit).to(device)

    shift_x, shift_y = u(max_shift), u(max_shift)
    angle = u(math.radians(max_rotate))
    scale = 1 + u(max_scale)
    xx, yy = base_grid(h, w, device)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    dx, dy = xx - cx, yy - cy  # (h, w)
    cos = (torch.cos(angle) * scale).view(n, 1, 1)
    sin = (torch.sin(angle) * scale).view(n, 1, 1)
    src_x = cos * dx - sin * dy + cx + shift_x.view(n, 1, 1)  # (n, h, w)
    src_y = sin * dx + cos * dy + cy + shift_y.view(n, 1, 1)
    flow = torch.stack([src_x - xx, src_y - yy], dim=1)  # (n, 2, h, w)
    valid = ((src_x >= 0) & (src_x <= w - 1) & (src_y >= 0) & (src_y <= h - 1)).unsqueeze(1).float()
    return flow, valid
