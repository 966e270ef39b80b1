"""Face restoration of whole photographs (SPEC S5, inference): super-resolution, face detection,
enhancement, face parsing and fusion.

For one photograph ``x`` (uint8 RGB, any size) and an up-scaling factor ``s``::

    sr     = SR(x)                              # --sr CKPT (a stylesr target=sr net, tiled) or Lanczos
    faces  = detect(x)                          # MTCNN / YuNet on the input (cheaper), landmarks * s
    for each face (largest first, --min-face, --max-faces, --only-center-face):
        crop, M = align(sr, landmarks, n)       # similarity to the 5-point template, n = enhancer's crop
        enh    = enhance(crop)                  # faceenhance (or any crop->crop generator) checkpoint
        labels = parse(enh)                     # faceparse checkpoint, or the landmarks' face ellipse
        m      = feather(labels in regions)     # eroded, Gaussian-blurred, zero at the crop's edge
        enh   += colour offset                  # mean of (crop - enh) over the feather band
        sr     = sr + M^-1(m * (enh - crop))    # inverse warp of the *change* only

Pasting the change rather than the enhanced face means a pixel the enhancer leaves alone is the
SR picture's pixel exactly (no double resampling blur, an identity enhancer changes nothing), and
the feathered mask, which is zero at the crop's border, leaves no seam where the crop ends.
The colour offset is taken in the feather band, where face and surroundings meet, so a global
colour shift of the enhancer cannot show as a step at the border.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from ..data.io import read_image, write_image
from ..errors import DataError, ImtranslateError
from .face_align import align, invert

__all__ = ["Restorer", "RestoreResult", "FaceResult", "landmark_mask", "feather_mask", "DEFAULT_REGIONS",
           "upscale_lanczos", "colorize_labels"]

# the parsing classes that count as face by default: hair, hats, neck, clothes and background stay
DEFAULT_REGIONS = ("skin", "brows", "eyes", "nose", "upper_lip", "lower_lip", "mouth", "glasses")


@dataclass
class FaceResult:
    """One face of a restored photograph, everything in the output picture's pixels."""

    box: np.ndarray  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2)
    matrix: np.ndarray  # 2x3 picture -> crop
    crop: np.ndarray = field(repr=False)  # aligned crop of the SR picture, uint8
    enhanced: np.ndarray = field(repr=False)  # enhancer output, uint8, colour-matched
    labels: np.ndarray | None = field(repr=False)  # parsing map (int) or None (landmark mask)
    mask: np.ndarray = field(repr=False)  # soft mask in the crop, float32 [0, 1]


@dataclass
class RestoreResult:
    image: np.ndarray  # uint8 (s H, s W, 3)
    faces: list[FaceResult]
    found: int  # faces the detector returned
    note: str  # e.g. "no face found: SR picture only"
    timings: dict[str, float]  # seconds per stage: sr, detect, enhance, parse, fuse

    def line(self, name: str = "") -> str:
        msg = f"{name + ': ' if name else ''}{self.found} face(s) found, {len(self.faces)} enhanced"
        return msg + (f" ({self.note})" if self.note else "")


def upscale_lanczos(image: np.ndarray, factor: float) -> np.ndarray:
    """Lanczos-4 resize by ``factor`` (area averaging when shrinking)."""
    if factor == 1:
        return image.copy()
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LANCZOS4 if factor > 1 else cv2.INTER_AREA)


def feather_mask(hard: np.ndarray, *, feather: float = 0.06) -> np.ndarray:
    """A soft mask from a binary one (crop pixels): eroded by ``feather`` of the side, blurred by as
    much, and faded to 0 over the crop's outer 5 % so the pasted change has no edge."""
    n = hard.shape[0]
    r = max(1, int(round(feather * n)))
    m = cv2.erode(hard.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (r, r))).astype(np.float32)
    m = cv2.GaussianBlur(m, (0, 0), sigmaX=max(0.5, r / 1.5))
    ramp = np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / max(1.0, 0.05 * n), 0, 1).astype(np.float32)
    return m * ramp[:, None] * ramp[None, :]


def landmark_mask(landmarks_crop: np.ndarray, size: int) -> np.ndarray:
    """A binary face ellipse in crop pixels from the 5 landmarks (already in crop coordinates).

    Fitted to the face's proportions: the eye line and the eye-to-mouth distance ``d`` set its
    axes (brows ~0.75 d above the eyes, chin ~1.55 d below them, cheeks one eye distance out).
    """
    p = np.asarray(landmarks_crop, np.float32)
    eyes, mouth = p[:2].mean(0), p[3:5].mean(0)
    down = mouth - eyes
    d = float(np.linalg.norm(down)) or 1.0
    de = float(np.linalg.norm(p[1] - p[0])) or d
    centre = eyes + down / d * 0.4 * d
    angle = np.degrees(np.arctan2(p[1, 1] - p[0, 1], p[1, 0] - p[0, 0]))
    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(m, (int(round(centre[0])), int(round(centre[1]))), (int(round(1.0 * de)), int(round(1.15 * d))),
                float(angle), 0, 360, 1, -1)
    return m


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """A parsing map as an RGB picture (the faceparse task's colour per class)."""
    from ..tasks.faceparse import PALETTE

    palette = ((PALETTE + 1) * 127.5).round().to(torch.uint8).numpy()
    return palette[np.asarray(labels) % len(palette)]


def _to_rgb(image) -> np.ndarray:
    """uint8 (H, W, 3) from an array (grey, RGB, RGBA composited on white), a PIL image or a path."""
    if isinstance(image, (str, Path)):
        return read_image(image, "rgb")
    if not isinstance(image, np.ndarray):
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise ImtranslateError(f"cannot restore an object of type {type(image).__name__}; "
                                   "give a PIL image, a numpy array or a path")
        image = np.asarray(image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image.convert("RGB"))
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a * 255 if a.dtype.kind == "f" and a.max() <= 1 else a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ImtranslateError(f"cannot restore an array of shape {a.shape}; give (H, W), (H, W, 3) or (H, W, 4)")
    if a.shape[2] in (2, 4):  # alpha: composite on white, as read_image does for files
        alpha = a[..., -1:].astype(np.float32) / 255
        a = (a[..., :-1].astype(np.float32) * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, 2)
    return np.ascontiguousarray(a)


class _PredictorCrop:
    """A generator checkpoint as ``uint8 crop -> uint8 crop`` of the same size."""

    def __init__(self, predictor):
        self.p = predictor
        crop = getattr(predictor.cfg.data, "crop_size", 0) or 0
        self.size = int(crop) if crop else 0

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        out = self.p(crop)
        if out.ndim == 2:
            out = np.repeat(out[..., None], 3, 2)
        if out.shape[:2] != crop.shape[:2]:
            out = cv2.resize(out, crop.shape[1::-1], interpolation=cv2.INTER_AREA)
        return out


class _ParserNet:
    """A ``faceparse`` checkpoint as ``uint8 crop -> int labels`` plus its class names."""

    def __init__(self, path, device="cpu"):
        from ..checkpoint_file import load_generator

        G, meta, _ = load_generator(path, device=device)
        self.net = G.eval()
        self.device = device
        classes = meta["config"].get("model", {}).get("class_names") or []
        self.classes = tuple(classes) or tuple(str(i) for i in range(G.n_classes))
        self.size = int(meta["config"].get("data", {}).get("crop_size") or 0)

    @torch.inference_mode()
    def __call__(self, crop: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(self.device)
        return self.net(x).argmax(1)[0].cpu().numpy()


class Restorer:
    """The restoration pipeline. Build with :meth:`from_options` (files) or pass callables.

    ``sr``: a :class:`~imtranslate.infer.predictor.Predictor` (its ``scale`` is the net's factor) or None
    (Lanczos). ``detector``: ``image -> list[Face]``. ``enhancer``: ``uint8 crop -> uint8 crop`` or None
    (identity). ``parser``: ``uint8 crop -> labels`` with a ``classes`` attribute, or ``"landmarks"``.
    """

    def __init__(self, *, detector: Callable, sr=None, enhancer: Callable | None = None, parser="landmarks",
                 upscale: int = 2, face_size: int = 0, regions=DEFAULT_REGIONS, min_face: int = 0,
                 max_faces: int = 0, only_center_face: bool = False, feather: float = 0.06,
                 color_match: bool = True, tile: int | None = None):
        if upscale not in (1, 2, 4):
            raise ImtranslateError(f"--upscale must be 1, 2 or 4, not {upscale}")
        self.detector, self.sr, self.enhancer, self.parser = detector, sr, enhancer, parser
        self.upscale, self.tile = upscale, tile
        self.face_size = int(face_size or getattr(enhancer, "size", 0) or 256)
        self.regions = tuple(regions)
        if parser != "landmarks":
            classes = getattr(parser, "classes", ())
            unknown = [r for r in self.regions if r not in classes]
            wanted = [r for r in self.regions if r in classes]
            if not wanted:
                raise ImtranslateError(f"--regions {','.join(self.regions)}: none is a class of the parser "
                                       f"({', '.join(classes)})")
            self.region_ids = np.array([classes.index(r) for r in wanted])
            self.unknown_regions = unknown
        self.min_face, self.max_faces, self.only_center_face = min_face, max_faces, only_center_face
        self.feather, self.color_match = feather, color_match

    @classmethod
    def from_options(cls, *, sr: str | None = "none", enhancer: str | None = "none", parser: str = "landmarks",
                     detector: str = "auto", mtcnn_weights=None, yunet_model=None, device: str = "auto",
                     min_face: int = 0, **kwargs) -> "Restorer":
        """Files in, pipeline out: ``sr``/``enhancer``/``parser`` are checkpoint paths or ``none`` /
        ``landmarks``; ``detector`` ``auto|mtcnn|yunet`` (see :func:`~imtranslate.nets.face_detect.build_detector`)."""
        from ..nets.face_detect import build_detector
        from .predictor import Predictor

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        det = build_detector(detector, mtcnn_weights=mtcnn_weights, yunet_model=yunet_model,
                             min_face=max(20, min_face))  # smaller faces than asked need not be searched
        sr_p = None if sr in (None, "", "none") else Predictor.from_checkpoint(sr, device=device)
        enh = None if enhancer in (None, "", "none") else _PredictorCrop(Predictor.from_checkpoint(enhancer, device=device))
        par = "landmarks" if parser in (None, "", "landmarks") else _ParserNet(parser, device)
        return cls(detector=det, sr=sr_p, enhancer=enh, parser=par, min_face=min_face, **kwargs)

    # ---- stages -------------------------------------------------------------------------------
    def super_resolve(self, image: np.ndarray) -> np.ndarray:
        s = self.upscale
        if self.sr is None:
            return upscale_lanczos(image, s)
        out = self.sr(image, tile=self.tile)  # uint8 (net scale x)
        if out.ndim == 2:
            out = np.repeat(out[..., None], 3, 2)
        want = (image.shape[1] * s, image.shape[0] * s)
        if out.shape[1::-1] != want:  # e.g. a x4 net for --upscale 2
            out = cv2.resize(out, want, interpolation=cv2.INTER_AREA if out.shape[1] > want[0] else cv2.INTER_LANCZOS4)
        return out

    def select(self, faces: list, shape) -> list:
        """Largest first; those under ``min_face`` (input pixels) dropped; the central one alone with
        ``only_center_face``; at most ``max_faces``."""
        faces = sorted((f for f in faces if f.size >= self.min_face), key=lambda f: -f.size)
        if self.only_center_face and faces:
            h, w = shape[:2]
            c = np.array([w / 2, h / 2])
            faces = [min(faces, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - c))]
        return faces[:self.max_faces] if self.max_faces else faces

    # ---- the whole pipeline -----------------------------------------------------------------
    def __call__(self, image) -> RestoreResult:
        rgb = _to_rgb(image)
        t = {"sr": 0.0, "detect": 0.0, "enhance": 0.0, "parse": 0.0, "fuse": 0.0}
        t0 = time.perf_counter()
        sr = self.super_resolve(rgb)
        t["sr"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = self.detector(rgb)
        t["detect"] = time.perf_counter() - t0
        chosen = self.select(found, rgb.shape)
        out = sr.astype(np.float32)
        results = []
        n, s = self.face_size, self.upscale
        for face in chosen:
            t0 = time.perf_counter()
            lm = face.landmarks * s
            crop, M = align(sr, lm, n)
            enh = crop if self.enhancer is None else self.enhancer(crop)
            t["enhance"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if self.parser == "landmarks":
                lm_crop = np.c_[lm, np.ones(5)] @ M.T
                hard, labels = landmark_mask(lm_crop, n), None
            else:
                labels = self.parser(enh)
                hard = np.isin(labels, self.region_ids).astype(np.uint8)
            mask = feather_mask(hard, feather=self.feather)
            t["parse"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            delta = enh.astype(np.float32) - crop.astype(np.float32)
            if self.color_match and self.enhancer is not None:
                band = 4 * mask * (1 - mask)  # where face and surroundings meet
                if band.sum() > 1:
                    delta -= (delta * band[..., None]).sum((0, 1)) / band.sum()
            out = _paste_change(out, delta * mask[..., None], M)
            t["fuse"] += time.perf_counter() - t0
            enh_shown = np.clip(crop.astype(np.float32) + delta, 0, 255).round().astype(np.uint8)
            results.append(FaceResult(face.box * s, face.score, lm, M, crop, enh_shown, labels, mask))
        note = ""
        if not found:
            note = "no face found: SR picture only"
        elif len(chosen) < len(found):
            note = f"{len(found) - len(chosen)} left out by --min-face / --max-faces / --only-center-face"
        img = np.clip(out, 0, 255).round().astype(np.uint8)
        return RestoreResult(img, results, len(found), note, t)

    def restore_files(self, inputs, out_dir, *, suffix: str = ".png", save_faces: bool = False,
                      save_masks: bool = False, log=print) -> list[Path]:
        """Restore files / folders / globs into ``out_dir`` (same stems); one line per photo."""
        from .predictor import expand_inputs

        files = expand_inputs(inputs)
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise DataError(out_dir, "exists and is not a folder", "give a folder for -o")
        written = []
        for f in files:
            res = self(read_image(f, "rgb"))
            dst = write_image(out_dir / f"{f.stem}{suffix}", res.image)
            written.append(dst)
            for i, fr in enumerate(res.faces):
                if save_faces:
                    write_image(out_dir / "faces" / f"{f.stem}_{i:02d}_crop.png", fr.crop)
                    write_image(out_dir / "faces" / f"{f.stem}_{i:02d}_enhanced.png", fr.enhanced)
                if save_masks:
                    write_image(out_dir / "masks" / f"{f.stem}_{i:02d}_mask.png",
                                (fr.mask * 255).round().astype(np.uint8))
                    if fr.labels is not None:
                        write_image(out_dir / "masks" / f"{f.stem}_{i:02d}_parsing.png", colorize_labels(fr.labels))
            log(f"{res.line(f.name)} -> {dst}")
        return written


def _paste_change(picture: np.ndarray, change: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``picture + M^-1(change)``, warping only the picture region the crop covers."""
    h, w = picture.shape[:2]
    n = change.shape[0]
    Minv = invert(M)
    corners = np.array([[0, 0, 1], [n, 0, 1], [0, n, 1], [n, n, 1]], np.float64) @ Minv.T
    x1, y1 = np.floor(corners.min(0)).astype(int) - 1
    x2, y2 = np.ceil(corners.max(0)).astype(int) + 1
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if x2 <= x1 or y2 <= y1:
        return picture
    Mroi = Minv.copy()
    Mroi[:, 2] -= (x1, y1)  # picture pixels relative to the region's corner
    warped = cv2.warpAffine(change, Mroi, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    picture[y1:y2, x1:x2] += warped
    return picture
