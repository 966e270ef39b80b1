"""Make a paired dataset out of a folder of ordinary photographs.

``make_pairs(src, dst, kind)`` writes ``dst/A/<stem>.png`` (the input) and ``dst/B/<stem>.png``
(the target: the photograph itself, optionally resized), ready for ``data.dataset=folders``:

* ``contours``  — an edge drawing (black lines on white) -> photo;
* ``grey``      — greyscale -> colour (colourisation);
* ``downscale`` — bicubic downscale by ``scale`` and back up to the same size -> photo
  (super-resolution posed as same-size translation);
* ``degrade``   — blur + noise + JPEG artefacts with seeded random strengths -> photo
  (restoration).

PNG is always written so the inputs carry no extra compression artefacts.
"""
from __future__ import annotations

import io as _io
import json
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import DataError
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


def degrade(img: np.ndarray, rng: np.random.Generator, blur=(0.3, 2.0), noise=(2.0, 12.0), quality=(20, 70)) -> tuple[np.ndarray, dict]:
    """Gaussian blur, Gaussian noise and JPEG compression with strengths drawn from ``rng``.

    Returns the degraded image and the strengths used (sigma, noise std in 0..255, quality).
    """
    sigma = float(rng.uniform(*blur))
    std = float(rng.uniform(*noise))
    q = int(rng.integers(quality[0], quality[1] + 1))
    out = cv2.GaussianBlur(img.astype(np.float32), (0, 0), sigma)
    out = out + rng.normal(0.0, std, out.shape).astype(np.float32)
    out = np.clip(out, 0, 255).round().astype(np.uint8)
    buf = _io.BytesIO()
    Image.fromarray(out).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    with Image.open(buf) as jpeg:
        out = np.asarray(jpeg.convert("RGB"))
    return out, {"blur_sigma": sigma, "noise_std": std, "jpeg_quality": q}


def make_pairs(
    src_folder,
    dst_folder,
    kind: str,
    *,
    size: int = 0,
    scale: int = 4,
    seed: int = 0,
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
        recursive: also read sub-folders (output names join the sub-folders with ``__``).
        skip_bad: warn and skip unreadable files instead of raising DataError.
        progress: show a tqdm progress bar.
    """
    if kind not in PAIR_KINDS:
        raise ValueError(f"unknown pair kind {kind!r}; choose one of {', '.join(PAIR_KINDS)}")
    if scale < 2 and kind == "downscale":
        raise ValueError(f"downscale needs scale >= 2, got {scale}")
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
            rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode())])
            a, params[name] = degrade(photo, rng)
        write_image(dst / "A" / f"{name}.png", a)
        write_image(dst / "B" / f"{name}.png", photo)
        written += 1
    meta = {"kind": kind, "source": str(src), "size": size, "scale": scale, "seed": seed,
            "pairs": written, "skipped": skipped}
    if params:
        meta["degrade"] = params
    (dst / "pairs.json").write_text(json.dumps(meta, indent=2))
    return written
