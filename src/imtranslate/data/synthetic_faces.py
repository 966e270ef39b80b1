"""The built-in synthetic face set: rendered faces with face-parsing labels and 5 landmarks.

Face enhancement, face parsing and face restoration are trained and tested on a CPU with
nothing downloaded, so the faces are drawn here from a seed. Each face varies in skin tone,
face shape (width, jaw taper, squareness), pose (yaw, roll, a little pitch), eyes (size,
openness, iris colour, gaze), brows, nose, mouth (width, fullness, open or closed), hair (style,
colour, hairline), glasses (none / round / rectangular), lighting (direction, strength, warmth)
and background (gradient + blobs).

Geometry is analytic: every region is a set in *face coordinates* ``(u, v)`` (the face ellipse
has ``|u| <= 1`` across and ``|v| <= 1`` down, ``v`` grows downwards), mapped to the image by
a roll rotation and the face's centre and half-axes; yaw moves the features towards one side
and narrows the far half. The label map evaluates those sets at the pixel centres; the image
evaluates the same sets on a 2x grid and averages it down (anti-aliasing), so labels and
pixels agree up to half a pixel at region borders. Landmarks are the same geometry's points.

Conventions:

* :data:`FACE_CLASSES`: index = label value. ``eyes`` is the visible eye (sclera + iris);
  ``glasses`` labels the frame only (the lenses are clear, so the eyes behind them stay
  ``eyes``); ``mouth`` is the dark opening between the lips when the mouth is open.
* landmarks: ``float32 (5, 2)`` of pixel ``(x, y)`` (pixel centres at integer coordinates):
  left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner, where
  *left* is the image's left (smaller x at roll 0), the order of the common 5-point
  alignment template.

Everything is a pure function of the seed: :func:`render_face` draws face ``seed`` from its
own random stream, and :func:`face_seed` gives face ``index`` of a split its own seed, so
validation faces never repeat training faces and adding faces never changes those there.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .io import reuse_generated_dir

#: Bump when the renderer changes, so cached face folders are regenerated.
SYNTHETIC_FACES_VERSION = 1

#: Face-parsing classes; the index is the label value.
FACE_CLASSES: tuple[str, ...] = (
    "background", "skin", "brows", "eyes", "nose", "upper_lip", "lower_lip", "mouth", "hair",
    "glasses", "ears", "neck",
)
CLASS_INDEX = {name: i for i, name in enumerate(FACE_CLASSES)}

#: Landmark order of :attr:`SyntheticFace.landmarks`.
LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")

# Skin tones from light to deep (RGB, 0..255); a face interpolates between two neighbours.
_SKIN = np.array([(246, 218, 196), (234, 192, 160), (214, 164, 124), (184, 132, 94),
                  (140, 94, 62), (98, 64, 44), (70, 46, 32)], dtype=np.float32)
_HAIR = np.array([(20, 16, 14), (58, 38, 24), (110, 72, 40), (196, 160, 100), (150, 60, 30),
                  (170, 170, 168), (235, 235, 230)], dtype=np.float32)
_IRIS = np.array([(70, 42, 22), (110, 70, 35), (60, 100, 150), (80, 120, 70), (110, 110, 115)],
                 dtype=np.float32)
_FRAMES = np.array([(20, 20, 20), (90, 60, 30), (160, 160, 170), (140, 30, 30)], dtype=np.float32)


@dataclass
class SyntheticFace:
    """One rendered face.

    ``image``: uint8 ``(H, W, 3)`` RGB; ``labels``: int64 ``(H, W)`` indices into
    :data:`FACE_CLASSES`; ``landmarks``: float32 ``(5, 2)`` pixel ``(x, y)`` in
    :data:`LANDMARK_NAMES` order; ``params``: the drawn parameters (JSON values).
    """

    image: np.ndarray
    labels: np.ndarray
    landmarks: np.ndarray
    params: dict


def face_seed(seed: int, split: str, index: int) -> int:
    """The seed of face ``index`` of ``split`` in a set built from ``seed`` (train / val disjoint)."""
    stream = {"train": 0, "val": 1, "test": 2}[split]
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream, int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def _draw_params(rng: np.random.Generator) -> dict:
    """Every random choice of one face (plain floats / ints, so they go into JSON)."""
    u = rng.uniform
    p = {
        "skin": float(u(0, len(_SKIN) - 1)),
        "cx": float(u(0.46, 0.54)), "cy": float(u(0.50, 0.56)),
        "a": float(u(0.27, 0.33)),  # half-width / image size
        "b_ratio": float(u(1.18, 1.40)),  # half-height / half-width
        "taper": float(u(0.05, 0.35)),  # jaw narrowing towards the chin
        "square": float(u(2.0, 3.0)),  # superellipse exponent (2 = ellipse)
        "yaw": float(u(-0.45, 0.45)),  # radians, about the vertical axis
        "roll": float(u(-0.25, 0.25)),  # radians, in the image plane
        "pitch": float(u(-0.06, 0.06)),  # vertical shift of the features (face units)
        "eye_y": float(u(-0.18, -0.08)), "eye_dx": float(u(0.34, 0.44)),
        "eye_w": float(u(0.15, 0.21)), "eye_open": float(u(0.35, 0.60)),
        "iris": int(rng.integers(len(_IRIS))), "gaze": float(u(-0.3, 0.3)),
        "brow_gap": float(u(0.12, 0.22)), "brow_thick": float(u(0.035, 0.07)),
        "brow_arch": float(u(0.0, 0.08)), "brow_tilt": float(u(-0.06, 0.08)),
        "nose_y": float(u(0.20, 0.30)), "nose_w": float(u(0.09, 0.15)),
        "mouth_y": float(u(0.50, 0.60)), "mouth_w": float(u(0.22, 0.34)),
        "lip_up": float(u(0.035, 0.065)), "lip_low": float(u(0.045, 0.085)),
        "mouth_open": float(u(0, 0.06)) if u() < 0.4 else 0.0,
        "smile": float(u(-0.02, 0.06)),
        "lip_tone": float(u(0.0, 1.0)),
        "hair_style": int(rng.integers(4)),  # 0 bald, 1 short, 2 long, 3 bun/high
        "hair": int(rng.integers(len(_HAIR))), "hairline": float(u(-0.72, -0.45)),
        "hair_part": float(u(-0.5, 0.5)),
        "glasses": int(rng.choice(3, p=[0.65, 0.2, 0.15])),  # 0 none, 1 round, 2 rectangular
        "frame": int(rng.integers(len(_FRAMES))), "frame_thick": float(u(0.025, 0.045)),
        "light_az": float(u(-1.0, 1.0)), "light_el": float(u(-0.5, 0.7)),
        "light_k": float(u(0.15, 0.45)), "warmth": float(u(-0.08, 0.08)),
        "ambient": float(u(0.75, 1.05)),
        "bg_hue": float(u(0, 1)), "bg_sat": float(u(0.1, 0.5)), "bg_val": float(u(0.35, 0.9)),
        "bg_angle": float(u(0, 2 * np.pi)),
        "bg_blobs": [[float(u(0, 1)), float(u(0, 1)), float(u(0.05, 0.3)), float(u(-40, 40))]
                     for _ in range(int(rng.integers(0, 4)))],
    }
    return p


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


class _Geometry:
    """Face coordinates of a grid of image points, and the maps between the two."""

    def __init__(self, p: dict, size: int):
        self.p = p
        self.size = size
        self.cx, self.cy = p["cx"] * size, p["cy"] * size
        self.a = p["a"] * size
        self.b = self.a * p["b_ratio"]
        self.cr, self.sr = np.cos(p["roll"]), np.sin(p["roll"])
        self.shift = 0.55 * np.sin(p["yaw"])  # how far the features move along u (face units)

    def to_face(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = x - self.cx, y - self.cy
        # undo the roll: rotate the image offset by -roll, then scale by the half-axes
        return (self.cr * dx + self.sr * dy) / self.a, (-self.sr * dx + self.cr * dy) / self.b

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        du, dv = u * self.a, v * self.b
        return self.cx + self.cr * du - self.sr * dv, self.cy + self.sr * du + self.cr * dv

    def feature_u(self, u0: float) -> float:
        """Where a feature at frontal position ``u0`` appears under yaw (far side compressed)."""
        yaw = self.p["yaw"]
        # a point on a cylinder of radius 1 at angle asin(u0), turned by yaw
        return float(np.sin(np.arcsin(np.clip(u0, -0.99, 0.99)) + yaw)) * 0.92 + 0.08 * self.shift

    def feature_scale(self, u0: float) -> float:
        """Horizontal foreshortening of a feature at frontal ``u0`` under yaw."""
        return float(np.clip(np.cos(np.arcsin(np.clip(u0, -0.99, 0.99)) + self.p["yaw"]) /
                             max(np.cos(np.arcsin(np.clip(u0, -0.99, 0.99))), 1e-3), 0.35, 1.2))


def _ellipse(u, v, cu, cv, ru, rv):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _face_masks(g: _Geometry, x: np.ndarray, y: np.ndarray) -> tuple[dict, dict]:
    """Region masks (bool, shape of ``x``) and helper fields on image points ``x, y``."""
    p = g.p
    u, v = g.to_face(x, y)
    masks: dict[str, np.ndarray] = {}
    # head outline: a superellipse narrowing towards the chin
    half_w = 1.0 - p["taper"] * np.clip(v, 0, None) ** 2
    e = p["square"]
    face = (np.abs(u) / np.maximum(half_w, 1e-3)) ** e + np.abs(v) ** e <= 1.0
    face &= (u / np.maximum(half_w, 1e-3)) ** 2 + v ** 2 <= 1.08  # round the superellipse's corners
    masks["face"] = face
    ear_u = 0.98 + 0.05 * np.abs(g.shift)
    ears = np.zeros_like(face)
    for side in (-1, 1):
        vis = 1.0 - 0.9 * max(0.0, side * p["yaw"]) / 0.45  # the ear we turn towards hides
        if vis > 0.25:
            ears |= _ellipse(u, v, side * ear_u - 0.4 * g.shift, -0.02, 0.11 * vis, 0.2)
    masks["ears"] = ears & ~face
    neck_w = 0.55 * (1.0 - 0.5 * p["taper"])
    masks["neck"] = (np.abs(u + 0.3 * g.shift) <= neck_w) & (v > 0.3) & (v < 2.5) & ~face

    # hair: a cap over the head down to the hairline; long hair also falls behind the shoulders
    style = p["hair_style"]
    head = _ellipse(u, v, 0.0, -0.08, 1.10, 1.05)
    fringe_edge = p["hairline"] + 0.12 * np.cos(np.pi * (u - p["hair_part"]))
    if style == 0:
        hair = np.zeros_like(face)
    else:
        hair = head & (v < fringe_edge) | (head & ~face & (v < -0.1))
        if style == 2:
            hair |= (np.abs(u) <= 1.25) & (v >= -0.3) & (v < 1.3) & ~face & (np.abs(u) > 0.55)
        if style == 3:
            hair |= _ellipse(u, v, 0.0, -1.15, 0.45, 0.3)
    masks["hair"] = hair
    fields = {"u": u, "v": v}

    # eyes, brows, nose, mouth: positions under yaw / pitch
    ey = p["eye_y"] + p["pitch"]
    eyes = np.zeros_like(face)
    brows = np.zeros_like(face)
    iris = np.zeros_like(face)
    pupil = np.zeros_like(face)
    frame = np.zeros_like(face)
    ring_all = np.zeros_like(face)
    for side in (-1, 1):
        cu = g.feature_u(side * p["eye_dx"])
        sc = g.feature_scale(side * p["eye_dx"])
        rw, rh = p["eye_w"] * sc, p["eye_w"] * p["eye_open"] * 0.62
        # an almond: two arcs, the upper one rounder
        du = (u - cu) / rw
        top = ey - rh * (1 - du ** 2) * 1.1
        bot = ey + rh * (1 - du ** 2) * 0.8
        eye = (np.abs(du) <= 1) & (v >= top) & (v <= bot)
        eyes |= eye
        ir = rh * 1.05
        ic = cu + p["gaze"] * rw * 0.4
        iris |= eye & (((u - ic) / (ir * sc * g.b / g.a)) ** 2 + ((v - ey) / ir) ** 2 <= 1)
        pupil |= eye & (((u - ic) / (0.45 * ir * sc * g.b / g.a)) ** 2 + ((v - ey) / (0.45 * ir)) ** 2 <= 1)
        # brow: a thick arc above the eye, tilted
        bu = (u - cu) / (rw * 1.25)
        bc = ey - p["brow_gap"] - p["brow_arch"] * (1 - bu ** 2) + side * p["brow_tilt"] * bu * 0.5
        brow = (np.abs(bu) <= 1) & (np.abs(v - bc) <= p["brow_thick"] * (1 - 0.5 * bu ** 2))
        brows |= brow
        if p["glasses"]:
            gr_u, gr_v = rw * 1.55, rw * 1.05 * g.a / g.b + 0.02
            t = p["frame_thick"]
            if p["glasses"] == 1:  # round
                r = np.sqrt(((u - cu) / gr_u) ** 2 + ((v - ey) / gr_v) ** 2)
                outer, inner = r <= 1.0, r <= 1.0 - t / min(gr_u, gr_v)
            else:  # rectangular with soft corners
                r = np.maximum(np.abs(u - cu) / gr_u, np.abs(v - ey) / (gr_v * 0.8))
                outer, inner = r <= 1.0, r <= 1.0 - t / min(gr_u, gr_v * 0.8)
            frame |= outer & ~inner
            ring_all |= outer
    if p["glasses"]:
        lu, ru = g.feature_u(-p["eye_dx"]), g.feature_u(p["eye_dx"])
        gl = g.feature_scale(-p["eye_dx"]) * p["eye_w"] * 1.55
        gr = g.feature_scale(p["eye_dx"]) * p["eye_w"] * 1.55
        bridge = (u > lu + gl * 0.9) & (u < ru - gr * 0.9) & (np.abs(v - (ey - 0.03)) <= p["frame_thick"] * 0.8)
        temples = ((u < lu - gl * 0.95) | (u > ru + gr * 0.95)) & (np.abs(v - (ey - 0.05)) <= p["frame_thick"] * 0.7)
        temples &= face | masks["ears"]
        frame |= bridge | temples
    masks["brows"] = brows & face
    masks["eyes"] = eyes & face
    fields["iris"], fields["pupil"], fields["lens"] = iris, pupil, ring_all & ~frame

    # nose: a bridge line from between the eyes and a rounded tip with nostrils
    nu = g.feature_u(0.0) + 0.18 * g.shift
    ny = p["nose_y"] + p["pitch"]
    nw = p["nose_w"]
    tip = _ellipse(u, v, nu, ny - 0.02, nw, 0.07)
    wings = _ellipse(u, v, nu, ny, nw * 1.35, 0.05)
    t = np.clip((v - (ey + 0.02)) / max(ny - ey - 0.02, 1e-3), 0, 1)
    bridge_u = g.feature_u(0.0) + (nu - g.feature_u(0.0)) * t
    bridge = (v > ey + 0.02) & (v < ny) & (np.abs(u - bridge_u) <= 0.035 + 0.05 * t)
    masks["nose"] = (tip | wings | bridge) & face
    fields["nostril"] = (_ellipse(u, v, nu - nw * 0.65, ny + 0.02, nw * 0.3, 0.022) |
                         _ellipse(u, v, nu + nw * 0.65, ny + 0.02, nw * 0.3, 0.022)) & face

    # mouth: lips around a centre line that curves up at the corners when smiling
    my = p["mouth_y"] + p["pitch"]
    mu = g.feature_u(0.0) + 0.1 * g.shift
    mw = p["mouth_w"] * (0.5 * (g.feature_scale(-0.3) + g.feature_scale(0.3)))
    du = (u - mu) / mw
    line = my - p["smile"] * du ** 2
    env = np.clip(1 - du ** 2, 0, None)
    inside = np.abs(du) <= 1
    gap = p["mouth_open"] * env
    masks["upper_lip"] = inside & (v <= line - gap * 0.5) & (v >= line - gap * 0.5 - p["lip_up"] * env * 1.6
                                                              - 0.01 * (np.abs(du) < 0.25)) & face
    masks["lower_lip"] = inside & (v >= line + gap * 0.5) & (v <= line + gap * 0.5 + p["lip_low"] * env * 1.4) & face
    masks["mouth"] = inside & (np.abs(v - line) < gap * 0.5) & face if p["mouth_open"] > 0 else np.zeros_like(face)
    masks["glasses"] = frame
    # the hair covers the face only above the hairline; features painted later win over it
    return masks, fields


#: Painting order (later wins): the label map takes the last region covering a pixel.
_ORDER = ("neck", "ears", "face", "hair", "nose", "brows", "eyes", "upper_lip", "lower_lip", "mouth",
          "glasses")


def _label_map(masks: dict, shape) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int64)
    for name in _ORDER:
        labels[masks[name]] = CLASS_INDEX["skin" if name == "face" else name]
    return labels


def _paint(p: dict, g: _Geometry, x: np.ndarray, y: np.ndarray, size: int,
           rng: np.random.Generator) -> np.ndarray:
    """The RGB picture (float 0..255) on the grid ``x, y``."""
    masks, f = _face_masks(g, x, y)
    u, v = f["u"], f["v"]
    H, W = x.shape
    # background: a linear gradient and soft blobs
    base = _hsv(p["bg_hue"], p["bg_sat"], p["bg_val"])
    other = _hsv(p["bg_hue"] + 0.08, p["bg_sat"] * 0.8, p["bg_val"] * 0.7)
    ca, sa = np.cos(p["bg_angle"]), np.sin(p["bg_angle"])
    t = np.clip(0.5 + ((x / size - 0.5) * ca + (y / size - 0.5) * sa), 0, 1)[..., None]
    img = base * (1 - t) + other * t
    for bx, by, br, dv in p["bg_blobs"]:
        d2 = ((x / size - bx) ** 2 + (y / size - by) ** 2) / br ** 2
        img = img + dv * np.exp(-d2)[..., None]

    # lighting: a Lambert term on a head-shaped normal field, warmth tints the light
    az, el = p["light_az"], p["light_el"]
    light = np.array([np.sin(az) * np.cos(el), -np.sin(el), np.cos(az) * np.cos(el)])
    uu = np.clip(u, -1, 1)
    vv = np.clip(v, -1.2, 1.2) / 1.2
    nz = np.sqrt(np.clip(1 - uu ** 2 * 0.8 - vv ** 2 * 0.6, 0.05, 1))
    lam = np.clip(uu * light[0] + vv * light[1] + nz * light[2], -1, 1)
    shade = (p["ambient"] + p["light_k"] * lam)[..., None]
    tint = np.array([1 + p["warmth"], 1.0, 1 - p["warmth"]], dtype=np.float32)

    i0 = int(np.floor(p["skin"]))
    i1 = min(i0 + 1, len(_SKIN) - 1)
    skin = _SKIN[i0] + (p["skin"] - i0) * (_SKIN[i1] - _SKIN[i0])
    hair_c = _HAIR[p["hair"]]
    cheek = np.exp(-(((np.abs(u) - 0.5) / 0.22) ** 2 + ((v - 0.25) / 0.18) ** 2))[..., None]
    skin_px = skin * (1 - 0.06 * cheek) + np.array([205, 90, 90], np.float32) * 0.06 * cheek

    def put(mask, colour):
        nonlocal img
        img = np.where(mask[..., None], colour, img)

    put(masks["neck"], skin * 0.82 * shade * tint)
    put(masks["ears"], skin * 0.9 * shade * tint)
    put(masks["face"], skin_px * shade * tint)
    # hair with strands: a stripe texture along the part
    strands = (0.85 + 0.15 * np.sin(45 * (u - p["hair_part"]) + 6 * v))[..., None]
    put(masks["hair"], hair_c * strands * (0.8 + 0.35 * (shade - 0.8)) * tint)
    nose_shade = (1.0 - 0.12 * np.clip(np.sign(u - g.feature_u(0.0)) * -light[0], -1, 1))[..., None]
    put(masks["nose"], skin_px * shade * tint * 0.93 * nose_shade)
    put(f["nostril"] & masks["nose"], skin * 0.45 * shade)
    put(masks["brows"], hair_c * 0.8 + skin * 0.2 * 0.5)
    sclera = np.array([238, 236, 230], np.float32) * np.clip(shade, 0.7, 1.1)
    put(masks["eyes"], sclera)
    put(masks["eyes"] & f["iris"], _IRIS[p["iris"]])
    put(masks["eyes"] & f["pupil"], np.array([12, 10, 10], np.float32))
    lip = np.array([180, 80, 80], np.float32) * (1 - p["lip_tone"]) + skin * 0.75 * p["lip_tone"]
    put(masks["upper_lip"], lip * 0.88 * shade)
    put(masks["lower_lip"], lip * shade)
    put(masks["mouth"], np.array([60, 22, 25], np.float32))
    if p["glasses"]:
        lens = f["lens"] & ~masks["glasses"]
        img = np.where(lens[..., None], img * 0.92 + 255 * 0.06, img)  # clear lenses, slight glare
        put(masks["glasses"], _FRAMES[p["frame"]])
    # a little sensor noise and grain, so the texture is not flat
    img = img + rng.normal(0.0, 2.0, size=(H, W, 1)).astype(np.float32)
    return img


def render_face(seed: int, size: int = 128) -> SyntheticFace:
    """Render face ``seed`` at ``size`` x ``size`` pixels (see the module docstring)."""
    if size < 16:
        raise ValueError(f"render_face needs size >= 16, got {size}")
    rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    p = _draw_params(rng)
    g = _Geometry(p, size)
    # labels at pixel centres (pixel i covers [i - 0.5, i + 0.5])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    masks, _ = _face_masks(g, xx, yy)
    labels = _label_map(masks, (size, size))
    # picture on a 2x grid of sub-pixel centres, averaged down
    s2 = 2 * size
    y2, x2 = np.mgrid[0:s2, 0:s2].astype(np.float64)
    x2, y2 = (x2 + 0.5) / 2 - 0.5, (y2 + 0.5) / 2 - 0.5
    img2 = _paint(p, g, x2, y2, size, np.random.default_rng(rng.integers(1 << 62)))
    img = img2.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    ey = p["eye_y"] + p["pitch"]
    pts = [g.to_image(g.feature_u(-p["eye_dx"]), ey), g.to_image(g.feature_u(p["eye_dx"]), ey),
           g.to_image(g.feature_u(0.0) + 0.18 * g.shift, p["nose_y"] + p["pitch"] - 0.02)]
    mu = g.feature_u(0.0) + 0.1 * g.shift
    mw = p["mouth_w"] * (0.5 * (g.feature_scale(-0.3) + g.feature_scale(0.3)))
    my = p["mouth_y"] + p["pitch"] - p["smile"]  # the line at the corners (du = +-1)
    pts += [g.to_image(mu - mw, my), g.to_image(mu + mw, my)]
    landmarks = np.asarray(pts, dtype=np.float32)
    return SyntheticFace(image=image, labels=labels, landmarks=landmarks, params=p)


class SyntheticFaces:
    """A map-style dataset of rendered faces: item ``i`` is :func:`render_face` of face ``i``'s seed.

    ``split`` is ``"train"``, ``"val"`` or ``"test"`` (disjoint faces). Items are
    :class:`SyntheticFace`; a task turns them into tensors (and degrades them) itself.
    Rendering is a few milliseconds per 64 px face, so nothing is cached by default;
    ``cache=True`` keeps rendered faces in memory.
    """

    def __init__(self, n: int, size: int = 128, seed: int = 0, split: str = "train", cache: bool = False):
        if n < 1:
            raise ValueError(f"SyntheticFaces needs n >= 1, got {n}")
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        self.n, self.size, self.seed, self.split = int(n), int(size), int(seed), split
        self._cache: dict[int, SyntheticFace] | None = {} if cache else None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> SyntheticFace:
        if not 0 <= i < self.n:
            raise IndexError(i)
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        face = render_face(face_seed(self.seed, self.split, i), self.size)
        if self._cache is not None:
            self._cache[i] = face
        return face


FACE_FOLDERS = ("image", "label")


def _complete(root: Path, meta: dict) -> bool:
    for split, n in (("train", meta["n_train"]), ("val", meta["n_val"])):
        if n and not all((root / split / d / f"{n - 1:05d}.png").is_file() for d in FACE_FOLDERS):
            return False
        if n and not (root / split / "landmarks.json").is_file():
            return False
    return True


def write_synthetic_faces(root, n_train: int = 512, n_val: int = 64, size: int = 128, seed: int = 0) -> Path:
    """Write the synthetic face set under ``root`` and return ``root``.

    Layout: ``root/{train,val}/image/00000.png`` (RGB, an aligned face crop as FFHQ-style
    folders hold), ``root/{train,val}/label/00000.png`` (8-bit :data:`FACE_CLASSES` indices),
    ``root/{train,val}/landmarks.json`` (``{"00000": [[x, y] x 5], ...}``, pixel coordinates,
    :data:`LANDMARK_NAMES` order) and ``root/meta.json``. The same parameters reuse the files
    (a cache); other parameters regenerate them; a folder holding data that imtranslate did
    not write is never overwritten.
    """
    root = Path(root)
    if n_train < 1 or n_val < 0:
        raise ValueError("write_synthetic_faces needs n_train >= 1 and n_val >= 0")
    if size < 16:
        raise ValueError(f"write_synthetic_faces needs size >= 16, got {size}")
    meta = {"generator": "imtranslate.synthetic_faces", "version": SYNTHETIC_FACES_VERSION,
            "n_train": int(n_train), "n_val": int(n_val), "size": int(size), "seed": int(seed),
            "classes": list(FACE_CLASSES), "landmarks": list(LANDMARK_NAMES)}
    meta_path = root / "meta.json"
    if reuse_generated_dir(root, meta, _complete, "synthetic face generator", "choose another folder"):
        return root
    for split, n in (("train", n_train), ("val", n_val)):
        for d in FACE_FOLDERS:
            (root / split / d).mkdir(parents=True, exist_ok=True)
        marks = {}
        for i in range(n):
            face = render_face(face_seed(seed, split, i), size)
            name = f"{i:05d}"
            Image.fromarray(face.image).save(root / split / "image" / f"{name}.png", compress_level=1)
            Image.fromarray(face.labels.astype(np.uint8)).save(root / split / "label" / f"{name}.png",
                                                               compress_level=1)
            marks[name] = [[round(float(a), 3), round(float(b), 3)] for a, b in face.landmarks]
        if n:
            (root / split / "landmarks.json").write_text(json.dumps(marks))
    tmp = meta_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)
    return root


def contact_sheet(n: int = 64, size: int = 96, seed: int = 0, cols: int = 8, split: str = "train",
                  labels: bool = False) -> np.ndarray:
    """A grid of ``n`` faces (uint8 RGB); ``labels=True`` shows each face beside its label map."""
    from .synthetic import class_colour  # the fixed palette the scenes' label maps use

    tiles = []
    for i in range(n):
        f = render_face(face_seed(seed, split, i), size)
        tile = f.image
        if labels:
            pal = np.stack([np.zeros(3, np.float32)] + [class_colour(c) for c in range(1, len(FACE_CLASSES))])
            tile = np.concatenate([tile, pal[f.labels].astype(np.uint8)], axis=1)
        tiles.append(tile)
    rows = (n + cols - 1) // cols
    h, w = tiles[0].shape[:2]
    sheet = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = t
    return sheet


__all__ = ["FACE_CLASSES", "LANDMARK_NAMES", "SyntheticFace", "SyntheticFaces", "contact_sheet", "face_seed",
           "render_face", "write_synthetic_faces"]
