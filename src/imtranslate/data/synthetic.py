"""Built-in synthetic scenes: label map, instance map, contour drawing and "photo".

The scenes exist so that every method can be trained and tested end to end without
downloading anything, so they are built to have *learnable* structure:

* the background (class 0) is a sky above a ground with a tilted horizon, smooth gradients
  and low-frequency texture; its palette (day / dusk / overcast) is drawn per scene;
* 2-6 objects of classes ``1..n_classes-1``; each class has a fixed shape family, base colour
  and texture (stripes, checker, dots or smooth noise), so the photo is predictable from the
  label map up to per-object jitter;
* one light direction per scene shades every object with a gradient and casts soft drop
  shadows, which a translator must learn to place from geometry alone;
* the contour drawing is the instance boundaries plus the strong edges of the photo (horizon,
  texture), black lines on white like a sketch.

Everything is a pure function of the seed: :func:`generate_synthetic` gives scene ``i`` of a
split its own random stream, so changing ``n_train`` never changes the scenes already there
and validation scenes never repeat training scenes.
"""
from __future__ import annotations

import colorsys
import json
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .io import reuse_generated_dir

#: Bump when the generator changes, so cached datasets are regenerated.
SYNTHETIC_VERSION = 1

SHAPES = ("ellipse", "rectangle", "polygon", "ring")
TEXTURES = ("stripes", "checker", "dots", "noise")
FOLDERS = ("label", "instance", "contour", "photo")

# Background palettes: (sky top, sky at horizon, ground at horizon, ground bottom), RGB.
_PALETTES = (
    ((70, 130, 225), (175, 210, 245), (95, 150, 70), (45, 100, 40)),  # day
    ((55, 40, 105), (240, 150, 95), (120, 85, 55), (65, 45, 35)),  # dusk
    ((140, 145, 160), (205, 205, 210), (125, 115, 105), (85, 80, 75)),  # overcast
)


def class_shape(c: int) -> str:
    """Shape family of object class ``c`` (>= 1)."""
    return SHAPES[(c - 1) % len(SHAPES)]


def class_texture(c: int) -> str:
    """Texture of object class ``c`` (>= 1); offset so classes sharing a shape differ in texture."""
    return TEXTURES[((c - 1) + (c - 1) // len(SHAPES)) % len(TEXTURES)]


def class_colour(c: int) -> np.ndarray:
    """Base RGB colour (float, 0..255) of object class ``c``; fixed, independent of any seed."""
    # Golden-ratio hue steps keep any number of classes well separated in hue.
    hue = ((c - 1) * 0.618034 + 0.05) % 1.0
    sat = 0.6 + 0.3 * ((c * 0.37) % 1.0)
    val = 0.6 + 0.3 * ((c * 0.71) % 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32) * 255.0


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return np.clip(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC) / 2.0, -1.5, 1.5)


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    pal = np.asarray(_PALETTES[rng.integers(len(_PALETTES))], dtype=np.float32)
    pal = pal + rng.normal(0.0, 10.0, size=(4, 3)).astype(np.float32)
    horizon = size * rng.uniform(0.35, 0.65) + rng.uniform(-0.15, 0.15) * (xx - size / 2)
    sky_t = np.clip(yy / np.maximum(horizon, 1.0), 0.0, 1.0)[..., None]
    ground_t = np.clip((yy - horizon) / np.maximum(size - horizon, 1.0), 0.0, 1.0)[..., None]
    sky = pal[0] * (1 - sky_t) + pal[1] * sky_t
    ground = pal[2] * (1 - ground_t) + pal[3] * ground_t
    sky = sky * (1 + 0.05 * _smooth_noise(rng, size, 3))[..., None]
    ground_tex = 0.12 * _smooth_noise(rng, size, 4) + 0.06 * _smooth_noise(rng, size, max(4, size // 8))
    ground = ground * (1 + ground_tex)[..., None]
    return np.where((yy < horizon)[..., None], sky, ground)


def _object_mask(rng: np.random.Generator, shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    angle = float(rng.uniform(0, 180))
    centre = (int(round(cx)), int(round(cy)))
    if shape == "ellipse":
        axes = (max(1, int(round(r))), max(1, int(round(r * rng.uniform(0.55, 1.0)))))
        cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1)
    elif shape == "rectangle":
        w, h = 2 * r * rng.uniform(0.7, 1.0), 2 * r * rng.uniform(0.4, 0.8)
        box = cv2.boxPoints(((cx, cy), (w, h), angle))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    elif shape == "polygon":
        k = int(rng.integers(3, 6))  # triangles to pentagons
        base = np.linspace(0, 2 * np.pi, k, endpoint=False) + rng.uniform(0, 2 * np.pi)
        ang = base + rng.uniform(-0.3, 0.3, k) * (np.pi / k)
        rad = r * rng.uniform(0.8, 1.15, k)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    else:  # ring
        outer = max(2, int(round(r)))
        inner = max(1, int(round(r * rng.uniform(0.4, 0.6))))
        cv2.circle(mask, centre, outer, 1, -1)
        cv2.circle(mask, centre, inner, 0, -1)
    return mask.astype(bool)


def _texture(rng: np.random.Generator, kind: str, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Texture field in [-1, 1] over the whole scene (only the object's pixels are used)."""
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    period = max(3.0, size * rng.uniform(0.08, 0.12))
    if kind == "stripes":
        return np.sin(2 * np.pi * u / period)
    if kind == "checker":
        return np.tanh(4 * np.sin(np.pi * u / period) * np.sin(np.pi * v / period))
    if kind == "dots":
        d = np.cos(2 * np.pi * u / period) * np.cos(2 * np.pi * v / period)
        return np.where(d > 0.55, -1.0, 0.35)  # dark dots on a lighter base
    return _smooth_noise(rng, size, max(3, size // 10))


def _boundaries(inst: np.ndarray) -> np.ndarray:
    """1-pixel lines where the instance id changes (to the right or below)."""
    b = np.zeros(inst.shape, bool)
    b[:, :-1] |= inst[:, :-1] != inst[:, 1:]
    b[:-1, :] |= inst[:-1, :] != inst[1:, :]
    return b


def make_scene(rng: np.random.Generator, size: int, n_classes: int = 6) -> dict:
    """Draw one synthetic scene.

    Args:
        rng: the random stream (the scene is a pure function of its state).
        size: side of the square scene, pixels (>= 8).
        n_classes: classes including the background 0; objects use ``1..n_classes-1``.

    Returns:
        dict with ``label`` (uint8 H×W class ids), ``instance`` (int32 H×W, 0 = background,
        objects 1..k), ``contour`` (uint8 H×W, black lines on white) and ``photo``
        (uint8 H×W×3 RGB).
    """
    if size < 8:
        raise ValueError(f"synthetic scenes need size >= 8, got {size}")
    if not 2 <= n_classes <= 256:
        raise ValueError(f"synthetic scenes need 2 <= n_classes <= 256, got {n_classes}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    photo = _background(rng, size, yy, xx)
    label = np.zeros((size, size), np.uint8)
    inst = np.zeros((size, size), np.int32)

    # One light per scene, from somewhere above; shadows fall away from it.
    phi = rng.uniform(-np.pi * 0.85, -np.pi * 0.15)  # image y points down, so sin < 0 = above
    lx, ly = np.cos(phi), np.sin(phi)

    n_obj = int(rng.integers(2, 7))
    objs = []
    for _ in range(n_obj):
        c = int(rng.integers(1, n_classes))
        r = size * rng.uniform(0.09, 0.2)
        cx, cy = size * rng.uniform(0.15, 0.85), size * rng.uniform(0.2, 0.85)
        objs.append((cy, c, r, cx))
    objs.sort(key=lambda o: o[0])  # lower objects are nearer and drawn on top

    next_id = 1
    for cy, c, r, cx in objs:
        mask = _object_mask(rng, class_shape(c), size, cx, cy, r)
        tex = _texture(rng, class_texture(c), size, yy, xx)
        colour = class_colour(c) + rng.normal(0.0, 8.0, 3).astype(np.float32)
        if mask.sum() < 4:
            continue
        # Soft drop shadow: the mask shifted away from the light, blurred, darkening below.
        off = 0.35 * r
        m = np.float32([[1, 0, -lx * off], [0, 1, -ly * off]])
        shadow = cv2.warpAffine(mask.astype(np.float32), m, (size, size))
        shadow = cv2.GaussianBlur(shadow, (0, 0), max(0.8, 0.2 * r))
        photo *= (1.0 - 0.45 * shadow)[..., None]
        # Shading: brighter on the side facing the light.
        facing = np.clip(((xx - cx) * lx + (yy - cy) * ly) / r, -1.0, 1.0)
        shade = (1.0 + 0.28 * facing) * (1.0 + 0.2 * tex)
        obj = colour[None, None, :] * shade[..., None]
        photo[mask] = obj[mask]
        label[mask] = c
        inst[mask] = next_id
        next_id += 1

    # A touch of blur anti-aliases the hard drawn edges, as a camera would.
    photo = cv2.GaussianBlur(photo, (0, 0), 0.5)
    photo = np.clip(photo, 0, 255).round().astype(np.uint8)

    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    edges = _boundaries(inst) | (cv2.Canny(grey, 60, 140) > 0)
    contour = np.where(edges, 0, 255).astype(np.uint8)
    return {"label": label, "instance": inst, "contour": contour, "photo": photo}


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of scene ``index`` of ``split`` (train / val get disjoint streams)."""
    stream = {"train": 0, "val": 1}[split]
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, stream, int(index)])


def _save_png(path: Path, arr: np.ndarray) -> None:
    # compress_level=1: these files are small and regenerated often; speed beats size here.
    Image.fromarray(arr).save(path, compress_level=1)


def _complete(root: Path, meta: dict) -> bool:
    for split, n in (("train", meta["n_train"]), ("val", meta["n_val"])):
        for folder in FOLDERS:
            d = root / split / folder
            if n and not (d / f"{n - 1:05d}.png").is_file():
                return False
    return True


def generate_synthetic(
    root,
    n_train: int = 256,
    n_val: int = 32,
    size: int = 64,
    n_classes: int = 6,
    seed: int = 0,
) -> Path:
    """Write a synthetic dataset under ``root`` and return ``root``.

    Layout: ``root/{train,val}/{label,instance,contour,photo}/00000.png`` (label: 8-bit class
    ids, instance: 16-bit ids, contour: grey, photo: RGB) and ``root/meta.json`` holding the
    parameters. When ``meta.json`` already records the same parameters the files are reused
    (a cache); other parameters regenerate the dataset. A folder holding data that
    imtranslate did not generate is never overwritten.
    """
    root = Path(root)
    if n_train < 1 or n_val < 0:
        raise ValueError("generate_synthetic needs n_train >= 1 and n_val >= 0")
    meta = {
        "generator": "imtranslate.synthetic",
        "version": SYNTHETIC_VERSION,
        "n_train": int(n_train),
        "n_val": int(n_val),
        "size": int(size),
        "n_classes": int(n_classes),
        "seed": int(seed),
    }
    meta_path = root / "meta.json"
    if reuse_generated_dir(root, meta, _complete, "synthetic generator", "choose another data.synthetic.root"):
        return root
    for split, n in (("train", n_train), ("val", n_val)):
        for folder in FOLDERS:
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            scene = make_scene(scene_rng(seed, split, i), size, n_classes)
            name = f"{i:05d}.png"
            _save_png(root / split / "label" / name, scene["label"])
            _save_png(root / split / "instance" / name, scene["instance"].astype(np.uint16))
            _save_png(root / split / "contour" / name, scene["contour"])
            _save_png(root / split / "photo" / name, scene["photo"])
    tmp = meta_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)  # atomic: meta.json only says "complete" once every file exists
    return root
