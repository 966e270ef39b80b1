"""Make a paired dataset out of a folder of ordinary photographs.

``make_pairs(src, dst, kind)`` writes ``dst/A/<stem>.png`` (the input) and ``dst/B/<stem>.png``
(the target: the photograph itself, optionally resized), ready for ``data.dataset=folders``:

* ``contours``  — an edge drawing (black lines on white) -> photo;
* ``grey``      — greyscale -> colour (colourisation);
* ``downscale`` — bicubic downscale by ``scale`` and back up to the same size -> photo
  (super-resolution posed as same-size translation);
* ``degrade``   — the degradation pipeline of :mod:`imtranslate.data.degradations` (default:
  Gaussian blur, downscale, noise, JPEG; any other with ``degradations="type:coef,..."``)
  with seeded strengths -> photo (restoration, face enhancement's fixed evaluation pairs).

PNG is always written so the inputs carry no extra compression artefacts.
"""
from __future__ import annotations

import json
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..errors import DataError
from .degradations import DEFAULT_FACE_PIPELINE, apply_pipeline, parse_pipeline
from .io import list_images, prepare_output_dir, read_image, write_image
from .transforms import resized_shape

PAIR_KINDS = ("contours", "grey", "downscale", "degrade")


def _resize_short(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (0 = keep), with Pillow's antialiased Lanczos."""
    h, w = img.shape[:2]
    nh, nw = resized_shape(h, w, size)
    if (nh, nw) == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.LANCZOS))


def contour_drawing(img: np.ndarray) -> np.ndarray:
    """RGB ``uint8`` photo -> ``uint8`` grey edge drawing, black lines on white.

    A bilateral filter first flattens texture and noise while keeping object edges, then
    Canny with thresholds set from the image's median brightness finds the lines (so dark and
    bright photos give similar line densities).
    """
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    d = max(3, min(9, min(grey.shape) // 32 * 2 + 1))  # small kernel for small images
    smooth = cv2.bilateralFilter(grey, d, 40, 40)
    med = float(np.median(smooth))
    lo, hi = int(max(10, 0.66 * med)), int(min(255, max(40, 1.33 * med)))
    edges = cv2.Canny(smooth, lo, hi, L2gradient=True)
    return np.where(edges > 0, 0, 255).astype(np.uint8)


def downscale_upscale(img: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic (antialiased) downscale by ``scale``, then bicubic back to the original size."""
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, round(w / scale)), max(1, round(h / scale))), Image.Resampling.BICUBIC)
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))


def degrade(img: np.ndarray, seed: int, steps=None) -> tuple[np.ndarray, dict]:
    """RGB ``uint8`` photo -> its degraded copy by the pipeline ``steps`` (default
    :data:`~imtranslate.data.degradations.DEFAULT_FACE_PIPELINE`: blur, downscale, noise,
    JPEG, scaled back to the photo's size), each strength drawn from ``seed``.

    The one implementation of :mod:`imtranslate.data.degradations`; returns the image and each
    step's physical parameter (sigma, factor, noise std in 0..255, JPEG quality, ...).
    """
    x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    y, strengths = apply_pipeline(x, torch.tensor([seed]), steps or DEFAULT_FACE_PIPELINE, return_strengths=True)
    out = ((y[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return out, strengths[0]


def make_pairs(
    src_folder,
    dst_folder,
    kind: str,
    *,
    size: int = 0,
    scale: int = 4,
    seed: int = 0,
    degradations: str = "",
    recursive: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
) -> int:
    """Turn a folder of photographs into input/target pairs; returns how many were written.

    Args:
        src_folder: folder of photographs (any format :func:`read_image` reads).
        dst_folder: receives ``A/`` (inputs) and ``B/`` (targets), matched by file stem, and
            ``pairs.json`` recording how they were made.
        kind: ``contours``, ``grey``, ``downscale`` or ``degrade`` (see module docstring).
        size: resize each photo so the shorter side is ``size`` first (0 = keep).
        scale: downscale factor for ``downscale``.
        seed: seed of the ``degrade`` strengths (each file's strengths depend only on the seed
            and its name, not on the order or number of files).
        degradations: ``degrade``'s pipeline, ``"type:coefficient[:kernel],..."`` in order
            (see :mod:`imtranslate.data.degradations`); "" = the default face pipeline.
        recursive: also read sub-folders (output names join the sub-folders with ``__``).
        skip_bad: warn and skip unreadable files instead of raising DataError.
        progress: show a tqdm progress bar.
    """
    if kind not in PAIR_KINDS:
        raise ValueError(f"unknown pair kind {kind!r}; choose one of {', '.join(PAIR_KINDS)}")
    if scale < 2 and kind == "downscale":
        raise ValueError(f"downscale needs scale >= 2, got {scale}")
    steps = parse_pipeline(degradations) if degradations else DEFAULT_FACE_PIPELINE
    src, dst = Path(src_folder), Path(dst_folder)
    files = list_images(src, recursive=recursive)
    if not files:
        raise DataError(src, "no images found", "point it at a folder of photographs (.png, .jpg, ...)")
    prepare_output_dir(dst)
    written, skipped, params = 0, [], {}
    for path in tqdm(files, desc=f"make_pairs {kind}", disable=not progress, leave=False):
        name = "__".join(path.relative_to(src).with_suffix("").parts)
        try:
            photo = read_image(path, "rgb")
        except DataError as e:
            if not skip_bad:
                raise
            warnings.warn(f"skipping {e}", stacklevel=2)
            skipped.append(path.name)
            continue
        photo = _resize_short(photo, size)
        if kind == "contours":
            a = contour_drawing(photo)
        elif kind == "grey":
            a = np.asarray(Image.fromarray(photo).convert("L"))
        elif kind == "downscale":
            a = downscale_upscale(photo, scale)
        else:
            # Per-file stream keyed by the name: adding files never changes the others.
            a, params[name] = degrade(photo, (seed & 0x7FFFFFFF) << 32 | zlib.crc32(name.encode()), steps)
        write_image(dst / "A" / f"{name}.png", a)
        write_image(dst / "B" / f"{name}.png", photo)
        written += 1
    meta = {"kind": kind, "source": str(src), "size": size, "scale": scale, "seed": seed,
            "pairs": written, "skipped": skipped}
    if params:
        meta["degrade"] = params
        meta["degradations"] = [[s.type, s.coefficient, s.kernel] for s in steps]
    (dst / "pairs.json").write_text(json.dumps(meta, indent=2))
    return written
