"""Training clips of K frames for video tasks (vid2vid): synthetic with exact flow, or users' clips.

Every item keeps the paired contract (``A``, ``B``, ``name``: the clip's *last* frame, so image
grids, ``imtranslate eval`` and the generic validation see a frame pair) and adds the clip:

| key | type | meaning |
|---|---|---|
| ``clip_A`` | float ``(K, C_in, H, W)`` | encoded input frames |
| ``clip_B`` | float ``(K, 3, H, W)`` in [-1, 1] | target frames |
| ``flow`` | float ``(K, 2, H, W)`` | flow frame t -> t-1 in pixels (zeros at t = 0 and at cuts) |
| ``valid`` | float ``(K, 1, H, W)`` | 1 where frame t's pixel is seen in frame t-1 |
| ``cut`` | bool ``(K,)`` | True where a new shot starts (always at t = 0) |
| ``clip_label`` | int64 ``(K, H, W)`` | label-map inputs: the class ids (foreground masks) |

:class:`SyntheticClips` animates the built-in scenes (:mod:`.synthetic_video`) with exact flow;
:class:`FolderClips` reads users' clips (frame folders or video files; ``<root>/<a_dir>/<name>``
matched by name with ``<root>/<b_dir>/<name>``), with flow from OpenCV DIS on the *target*
frames (pseudo ground truth) and a forward-backward consistency mask.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import encode_input, input_read_mode
from .io import to_tensor
from .synthetic_video import make_clip

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")


def _stack_item(frames_a, frames_b, flows, valid, cuts, data_cfg, name: str, labels=None) -> dict:
    A = torch.stack([encode_input(a, data_cfg, name=name) for a in frames_a])  # (K, C, H, W)
    B = torch.stack([to_tensor(b) for b in frames_b])  # (K, 3, H, W)
    item = {"A": A[-1], "B": B[-1], "name": name, "clip_A": A, "clip_B": B,
            "flow": torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).float(),  # (K, 2, H, W)
            "valid": torch.from_numpy(np.stack(valid)[:, None].astype(np.float32)),  # (K, 1, H, W)
            "cut": torch.tensor([t == 0 or t in cuts for t in range(len(frames_a))])}
    if labels is not None:
        item["clip_label"] = torch.from_numpy(np.stack(labels).astype(np.int64))
    return item


class SyntheticClips(Dataset):
    """``n`` clips of ``n_frames`` frames of the animated synthetic scenes (generated on access,
    a pure function of ``(seed, split, index)``; no files). ``input``: ``label`` | ``contour``."""

    def __init__(self, data_cfg, split: str, n_frames: int, *, motion: float = 1.0, light: float = 0.05,
                 cut_prob: float = 0.0):
        s = data_cfg.synthetic
        self.cfg, self.split, self.k = data_cfg, split, int(n_frames)
        self.n = s.n_train if split == "train" else s.n_val
        self.motion, self.light, self.cut_prob = motion, light, cut_prob
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if i not in self._cache:
            s = self.cfg.synthetic
            # some training clips cut mid-way, so the generator learns to drop its past on a cut
            cut_rng = np.random.default_rng([s.seed, 99, i])
            cuts = [int(cut_rng.integers(1, self.k))] if self.k > 1 and cut_rng.random() < self.cut_prob else []
            c = make_clip(s.seed, self.k, s.size, s.n_classes, motion=self.motion, light=self.light, cuts=cuts,
                          split=self.split, index=i)
            inputs = c.label if s.input == "label" else c.contour
            self._cache[i] = _stack_item(inputs, c.photo, c.flows_bw, c.valid, set(c.cuts), self.cfg,
                                         f"clip_{i:05d}", labels=c.label if s.input == "label" else None)
        return self._cache[i]


def _dis_pseudo_flow(prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flow cur -> prev by OpenCV DIS (fast preset) on grey frames, and its forward-backward
    consistency mask (``|f + b|^2 <= 0.01 (|f|^2 + |b|^2) + 2``, as :func:`imtranslate.infer.flow.occlusion_mask`)."""
    g0, g1 = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) if x.ndim == 3 else x for x in (prev, cur))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    bw = dis.calc(g1, g0, None)
    fw = dis.calc(g0, g1, None)
    h, w = bw.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sx, sy = xx + bw[..., 0], yy + bw[..., 1]
    f = cv2.remap(fw, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = ((f + bw) ** 2).sum(-1)
    ok = err <= 0.01 * ((f ** 2).sum(-1) + (bw ** 2).sum(-1)) + 2.0
    ok &= (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    return bw.astype(np.float32), ok


def _find_clips(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(folder, "no such folder", "video datasets hold <root>/A/<clip> and <root>/B/<clip>")
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES:
            out[p.stem if p.is_file() else p.name] = p
    return out


class FolderClips(Dataset):
    """Users' clips: ``<root>/<a_dir>/<name>`` (a frame folder or a video file) matched by name with
    ``<root>/<b_dir>/<name>``; every window of ``n_frames`` consecutive frames (stride ``n_frames``)
    is one item. Frames are decoded once and kept in memory (short clips); the flow for the flow
    loss is DIS on the target frames (pseudo ground truth) with its consistency mask."""

    def __init__(self, data_cfg, root, n_frames: int):
        from .video_io import open_video

        self.cfg, self.k = data_cfg, int(n_frames)
        root = Path(root)
        a, b = _find_clips(root / data_cfg.a_dir), _find_clips(root / data_cfg.b_dir)
        missing = sorted(set(a) - set(b))
        if missing:
            raise DataError(root / data_cfg.a_dir / missing[0], f"has no target clip of the same name in {data_cfg.b_dir}/")
        if not a:
            raise DataError(root / data_cfg.a_dir, "holds no clips (frame folders or video files)")
        mode = input_read_mode(data_cfg)
        if mode == "label":
            raise DataError(root, "video clip datasets take picture inputs (rgb / grey), not label maps")
        self.items = []
        for name in sorted(a):
            with open_video(a[name]) as ra, open_video(b[name]) as rb:
                fa, fb = list(ra), list(rb)
            if len(fa) != len(fb) or fa[0].shape[:2] != fb[0].shape[:2]:
                raise DataError(a[name], f"has {len(fa)} frames of {fa[0].shape[:2]}, its target "
                                f"{len(fb)} of {fb[0].shape[:2]}: input and target clips must match")
            if len(fa) < self.k:
                raise DataError(a[name], f"has {len(fa)} frames, fewer than the {self.k} of a training clip")
            for s in range(0, len(fa) - self.k + 1, self.k):
                self.items.append((f"{name}_{s:05d}", fa[s:s + self.k], fb[s:s + self.k]))
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        if i not in self._cache:
            name, fa, fb = self.items[i]
            h, w = fb[0].shape[:2]
            flows, valid = [np.zeros((h, w, 2), np.float32)], [np.zeros((h, w), bool)]
            for t in range(1, len(fb)):
                f, v = _dis_pseudo_flow(fb[t - 1], fb[t])
                flows.append(f)
                valid.append(v)
            self._cache[i] = _stack_item(fa, fb, flows, valid, set(), self.cfg, name)
        return self._cache[i]
