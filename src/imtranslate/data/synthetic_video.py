"""Synthetic video clips with ground truth: the built-in scenes animated, with exact optical flow.

A clip is the synthetic scene of :mod:`imtranslate.data.synthetic` built as *layers*: a background
canvas twice the frame size (sky, ground, horizon) and one sprite per object (its shape, texture
and shading drawn in its own canvas). Each frame composes them through known affine maps:

* the camera pans and zooms over the background (constant velocities, drawn per clip);
* every object moves and rotates in the world at its own constant velocity, nearer objects
  (lower in the first frame) drawn on top, so objects occlude and disocclude each other;
* the light changes slowly (a global gain following a slow sine);
* optionally the clip cuts to a new scene at given frames (``cuts``).

Because every pixel of frame ``t`` belongs to one layer whose map from frame pixels to layer
pixels ``A_t`` is known, the flow is exact: ``flow_bw[t][y] = A_{t-1}^-1 A_t y - y`` (frame ``t``
back to frame ``t - 1``, the convention of :mod:`imtranslate.data.clips` and
:mod:`imtranslate.infer.flow`), and ``valid[t]`` (not occluded) holds where that point lies in the
frame and frame ``t - 1`` shows the same layer there. Frames after a cut have no valid pixels.

Everything is a pure function of ``(seed, split, index)``: :func:`make_clip`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .synthetic import _background, _boundaries, _object_mask, _texture, class_colour, class_shape, class_texture

__all__ = ["SceneClip", "make_clip", "clip_rng", "generate_synthetic_video", "CLIP_FOLDERS"]

SYNTHETIC_VIDEO_VERSION = 1
CLIP_FOLDERS = ("label", "contour", "photo")


@dataclass
class SceneClip:
    """Frames of one animated scene and their ground truth (lists of length ``n_frames``)."""

    label: list  # uint8 (h, w) class ids
    instance: list  # int32 (h, w) 0 = background, objects 1..k (a new scene renumbers)
    contour: list  # uint8 (h, w) black lines on white
    photo: list  # uint8 (h, w, 3)
    flows_bw: list  # float32 (h, w, 2): frame t -> frame t-1 (zeros on frame 0 and on cuts)
    valid: list  # bool (h, w): pixel seen in frame t-1 (all False on frame 0 and on cuts)
    cuts: list = field(default_factory=list)  # frame indices where a new scene starts (0 excluded)


def clip_rng(seed: int, split: str, index: int, scene: int = 0) -> np.random.Generator:
    """Random stream of clip ``index`` of ``split`` (scene ``scene`` after that many cuts)."""
    stream = {"train": 10, "val": 11, "test": 12}[split]  # disjoint from the still scenes' streams
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, stream, int(index), int(scene)])


def _mat(a: float, s: float, tx: float, ty: float) -> np.ndarray:
    """3x3: rotate by ``a`` (radians), scale by ``s``, then translate."""
    c, n = math.cos(a) * s, math.sin(a) * s
    return np.array([[c, -n, tx], [n, c, ty], [0.0, 0.0, 1.0]])


class _Scene:
    """One scene as layers with their motion: background canvas + object sprites."""

    def __init__(self, rng: np.random.Generator, size: int, n_classes: int, motion: float, camera: bool = True):
        self.size = S = size
        big = 2 * S  # the camera looks at a window of the background canvas
        yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
        self.bg = _background(rng, big, yy, xx).astype(np.float32)  # (2S, 2S, 3)
        phi = rng.uniform(-np.pi * 0.85, -np.pi * 0.15)
        lx, ly = math.cos(phi), math.sin(phi)
        # camera: frame pixel -> canvas pixel; starts centred, pans and zooms at constant rates
        self.pan = rng.uniform(-1.5, 1.5, 2) * motion * camera  # px / frame
        self.zoom = rng.uniform(-0.01, 0.01) * motion * camera  # relative / frame
        self.cam0 = np.array([S / 2.0, S / 2.0])
        self.sprites = []  # nearest last: (photo, label, mask, centre, p0, velocity, angle0, omega)
        n_obj = int(rng.integers(2, 6))
        objs = []
        for _ in range(n_obj):
            c = int(rng.integers(1, n_classes))
            r = S * rng.uniform(0.1, 0.2)
            cx, cy = S * rng.uniform(0.15, 0.85), S * rng.uniform(0.25, 0.85)
            objs.append((cy, c, r, cx))
        objs.sort(key=lambda o: o[0])  # lower objects are nearer and drawn on top
        for cy, c, r, cx in objs:
            n = int(math.ceil(2.4 * r)) + 2  # sprite canvas side
            syy, sxx = np.mgrid[0:n, 0:n].astype(np.float32)
            mask = _object_mask(rng, class_shape(c), n, n / 2, n / 2, r)
            if mask.sum() < 4:
                continue
            tex = _texture(rng, class_texture(c), n, syy, sxx)
            colour = class_colour(c) + rng.normal(0.0, 8.0, 3).astype(np.float32)
            facing = np.clip(((sxx - n / 2) * lx + (syy - n / 2) * ly) / r, -1.0, 1.0)
            photo = colour[None, None, :] * ((1.0 + 0.28 * facing) * (1.0 + 0.2 * tex))[..., None]
            vel = rng.uniform(-2.0, 2.0, 2) * motion
            omega = math.radians(rng.uniform(-3.0, 3.0)) * motion
            # world position: the canvas pixel under frame pixel (cx, cy) in frame 0
            p0 = np.array([cx, cy]) + self.cam0
            self.sprites.append((photo.astype(np.float32), c, mask, n / 2.0, p0, vel, rng.uniform(0, 2 * np.pi), omega))
        self.gain_phase = rng.uniform(0, 2 * np.pi)

    def camera(self, t: int) -> np.ndarray:
        """Frame pixel -> canvas pixel at frame ``t``, zooming about the frame centre."""
        S = self.size
        s = (1 + self.zoom) ** t
        c = (S - 1) / 2.0
        centre = self.cam0 + self.pan * t + c
        return _mat(0.0, s, centre[0] - s * c, centre[1] - s * c)

    def layer_maps(self, t: int) -> list[np.ndarray]:
        """Frame pixel -> layer pixel for the background (0) and every sprite (1..)."""
        C = self.camera(t)
        maps = [C]
        for _, _, _, ctr, p0, vel, a0, om in self.sprites:
            p = p0 + vel * t
            # sprite pixel -> canvas: rotate about the sprite centre, put the centre at p
            O = _mat(a0 + om * t, 1.0, 0, 0)
            O[:2, 2] = p - O[:2, :2] @ np.array([ctr, ctr])
            maps.append(np.linalg.inv(O) @ C)
        return maps

    def render(self, t: int, light: float):
        S = self.size
        maps = self.layer_maps(t)
        inv = cv2.WARP_INVERSE_MAP

        def pull(img, M, interp, border=cv2.BORDER_CONSTANT):
            return cv2.warpAffine(img, M[:2], (S, S), flags=interp | inv, borderMode=border)

        photo = pull(self.bg, maps[0], cv2.INTER_LINEAR, cv2.BORDER_REFLECT_101)
        label = np.zeros((S, S), np.uint8)
        layer = np.zeros((S, S), np.int32)  # which layer each pixel shows (0 = background)
        for k, (sp, c, mask, *_rest) in enumerate(self.sprites, start=1):
            m = pull(mask.astype(np.uint8), maps[k], cv2.INTER_NEAREST).astype(bool)
            if not m.any():
                continue
            col = pull(sp, maps[k], cv2.INTER_LINEAR, cv2.BORDER_REPLICATE)
            photo[m] = col[m]
            label[m] = c
            layer[m] = k
        gain = 1.0 + light * math.sin(self.gain_phase + 0.15 * t)  # slow light change
        photo = np.clip(photo * gain, 0, 255).round().astype(np.uint8)
        grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
        edges = _boundaries(layer) | (cv2.Canny(grey, 60, 140) > 0)
        contour = np.where(edges, 0, 255).astype(np.uint8)
        return label, layer, contour, photo, maps

    def flow(self, t: int, layer_t: np.ndarray, layer_prev: np.ndarray, maps_t, maps_prev):
        """Exact flow frame t -> t-1 and the pixels of frame t visible in frame t-1."""
        S = self.size
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)
        pts = np.stack([xx, yy, np.ones_like(xx)], -1)  # (S, S, 3)
        flow = np.zeros((S, S, 2), np.float32)
        for k in range(len(maps_t)):
            sel = layer_t == k
            if not sel.any():
                continue
            T = np.linalg.inv(maps_prev[k]) @ maps_t[k]  # frame t pixel -> frame t-1 pixel
            q = pts[sel] @ T.T
            flow[sel] = (q[:, :2] - pts[sel][:, :2]).astype(np.float32)
        sx, sy = xx + flow[..., 0], yy + flow[..., 1]
        inside = (sx >= 0) & (sx <= S - 1) & (sy >= 0) & (sy <= S - 1)
        ix = np.clip(np.round(sx), 0, S - 1).astype(int)
        iy = np.clip(np.round(sy), 0, S - 1).astype(int)
        valid = inside & (layer_prev[iy, ix] == layer_t)
        # the bilinear samples of a boundary pixel mix two layers: not an exact correspondence
        edge = cv2.dilate(_boundaries(layer_t).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        return flow, valid & ~edge


def make_clip(rng_or_seed, n_frames: int = 8, size: int = 64, n_classes: int = 6, *, motion: float = 1.0,
              light: float = 0.05, cuts=(), split: str = "train", index: int = 0, camera: bool = True) -> SceneClip:
    """An animated synthetic scene of ``n_frames`` frames with exact flow and occlusion masks.

    Args:
        rng_or_seed: an int seed (the clip is then :func:`clip_rng` ``(seed, split, index)``) or a
            numpy generator.
        size: side of the square frames (>= 16).
        n_classes: classes including the background 0.
        motion: scales every velocity (0 = a still scene; 1 = pans up to 1.5 px, objects up to
            2 px and 3 degrees per frame).
        light: amplitude of the slow global light change (0.05 = +-5 %).
        cuts: frame indices at which the clip cuts to a new scene.
        camera: False keeps the camera still (only the objects move): the background is then
            static, for flicker figures that need no flow.
    """
    if size < 16:
        raise ValueError(f"synthetic video needs size >= 16, got {size}")
    if n_frames < 1:
        raise ValueError(f"make_clip: n_frames must be >= 1, got {n_frames}")
    cuts = sorted(int(c) for c in cuts if 0 < int(c) < n_frames)
    if isinstance(rng_or_seed, np.random.Generator):
        rngs = iter(lambda: rng_or_seed, None)
    else:
        rngs = (clip_rng(rng_or_seed, split, index, k) for k in range(10**6))
    out = SceneClip([], [], [], [], [], [], cuts)
    scene, t0, prev = None, 0, None
    for t in range(n_frames):
        if scene is None or t in cuts:
            scene, t0, prev = _Scene(next(rngs), size, n_classes, motion, camera), t, None
        label, layer, contour, photo, maps = scene.render(t - t0, light)
        if prev is None:
            flow, valid = np.zeros((size, size, 2), np.float32), np.zeros((size, size), bool)
        else:
            flow, valid = scene.flow(t - t0, layer, prev[0], maps, prev[1])
        prev = (layer, maps)
        for key, v in (("label", label), ("instance", layer), ("contour", contour), ("photo", photo),
                       ("flows_bw", flow), ("valid", valid)):
            getattr(out, key).append(v)
    return out


def generate_synthetic_video(root, n_train: int = 16, n_val: int = 4, n_frames: int = 16, size: int = 64,
                             n_classes: int = 6, seed: int = 0, *, motion: float = 1.0, light: float = 0.05,
                             cut_every: int = 0, videos: bool = True) -> Path:
    """Write synthetic clips under ``root``: ``{split}/{label,contour,photo}/clip_00000/00000.png``,
    the ground truth ``{split}/flow/clip_00000.npz`` (``flow_bw (T, H, W, 2)``, ``valid (T, H, W)``,
    ``cuts``), and with ``videos`` also ``{split}/video/clip_00000_{contour,photo}.mp4`` (lossless).
    ``cut_every`` > 0 cuts to a new scene every that many frames. Returns ``root``."""
    from PIL import Image

    from .io import prepare_output_dir

    root = Path(root)
    prepare_output_dir(root)
    meta = {"generator": "imtranslate.synthetic_video", "version": SYNTHETIC_VIDEO_VERSION, "n_train": n_train,
            "n_val": n_val, "n_frames": n_frames, "size": size, "n_classes": n_classes, "seed": seed,
            "motion": motion, "light": light, "cut_every": cut_every}
    cuts = list(range(cut_every, n_frames, cut_every)) if cut_every > 0 else []
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            clip = make_clip(seed, n_frames, size, n_classes, motion=motion, light=light, cuts=cuts,
                             split=split, index=i)
            name = f"clip_{i:05d}"
            for folder in CLIP_FOLDERS:
                d = root / split / folder / name
                d.mkdir(parents=True, exist_ok=True)
                for t, frame in enumerate(getattr(clip, folder)):
                    Image.fromarray(frame).save(d / f"{t:05d}.png", compress_level=1)
            (root / split / "flow").mkdir(parents=True, exist_ok=True)
            np.savez_compressed(root / split / "flow" / f"{name}.npz", flow_bw=np.stack(clip.flows_bw),
                                valid=np.stack(clip.valid), cuts=np.asarray(clip.cuts, np.int64))
            if videos:
                from .video_io import VideoWriter

                (root / split / "video").mkdir(parents=True, exist_ok=True)
                for folder in ("contour", "photo"):
                    with VideoWriter(root / split / "video" / f"{name}_{folder}.mp4", fps=10, lossless=True) as w:
                        for frame in getattr(clip, folder):
                            w.write(frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, 2))
    (root / "meta.json").write_text(json.dumps(meta, indent=2))
    return root
