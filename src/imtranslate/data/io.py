"""Reading and writing images, and converting them to and from model tensors.

Everything that touches an image file goes through :func:`read_image` / :func:`write_image`,
so every format quirk (16-bit PNG, palettes, alpha, EXIF rotation) is handled in one place and
every failure becomes a :class:`~imtranslate.errors.DataError` that names the file.

Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay ``False`` (its default): with it set,
Pillow silently pads truncated files with grey and we could no longer report them.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

PathLike = Union[str, os.PathLike]

#: File extensions (lower case, with the dot) that :func:`list_images` picks up.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

READ_MODES = ("rgb", "grey", "label")

# Pillow modes whose pixels are wider than 8 bits; rgb/grey scale them down, label keeps them.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _open(path: Path) -> Image.Image:
    """Open ``path`` (header only), turning every failure into a DataError."""
    if not path.exists():
        raise DataError(path, "file not found", "check the path and the dataset folder")
    if path.is_dir():
        raise DataError(path, "is a folder, not an image file")
    try:
        empty = path.stat().st_size == 0
    except OSError as e:
        raise DataError(path, f"cannot open file ({e.strerror or e})", "check file permissions") from None
    if empty:
        raise DataError(path, "the file is empty (0 bytes)", "re-export or re-download it, or remove it")
    try:
        return Image.open(path)
    except PermissionError as e:
        raise DataError(path, f"cannot open file ({e.strerror})", "check file permissions") from None
    except UnidentifiedImageError:
        raise DataError(
            path,
            "not a readable image (unknown or unsupported format)",
            f"use one of {', '.join(sorted(IMAGE_EXTENSIONS))}, or remove the file",
        ) from None
    except Image.DecompressionBombError as e:
        raise DataError(path, f"image is too large to decode safely ({e})", "resize it first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # the format was recognised but its header ends early or is damaged
        # (a JPEG cut inside its header says "Truncated File Read")
        raise DataError(path, f"image file is truncated or corrupt ({e})",
                        "re-export or re-download the file, or remove it") from None


def _decode(img: Image.Image, path: Path) -> None:
    """Decode every pixel: Image.open only reads the header, load() is what catches truncated
    or corrupt files (with LOAD_TRUNCATED_IMAGES False)."""
    try:
        img.load()
    except Image.DecompressionBombError as e:
        raise DataError(path, f"image is too large to decode safely ({e})", "resize it first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(
            path,
            f"image data is truncated or corrupt ({e})",
            "re-export or re-download the file, or remove it",
        ) from None


def _exif_transpose(img: Image.Image, path: Path) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception as e:  # a broken EXIF block must not hide a perfectly good picture
        warnings.warn(f"{path}: ignoring unreadable EXIF orientation ({e})", stacklevel=3)
        return img


def _wide_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit (or int32 / float) single-channel array to uint8."""
    if mode == "F":
        a = arr.astype(np.float64)
        # Float images are either in [0, 1] or already in 0..255; pick by range.
        if a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    a = arr.astype(np.int64)
    # 16-bit data: 0..65535 -> 0..255 (x / 257 maps 65535 exactly onto 255).
    return np.clip((a * 255 + 32767) // 65535, 0, 255).astype(np.uint8)


def _composite_on_white(img: Image.Image) -> Image.Image:
    """RGBA / LA / transparent palette -> RGB on a white background."""
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in _WIDE_MODES:
        g = _wide_to_uint8(np.asarray(img), img.mode)
        return np.repeat(g[:, :, None], 3, axis=2)
    if _has_alpha(img):
        img = _composite_on_white(img)
    elif img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.asarray(img, dtype=np.uint8).copy()


def _to_grey(img: Image.Image) -> np.ndarray:
    if img.mode in _WIDE_MODES:
        return _wide_to_uint8(np.asarray(img), img.mode)
    if img.mode == "L" and not _has_alpha(img):
        return np.asarray(img, dtype=np.uint8).copy()
    if _has_alpha(img):
        img = _composite_on_white(img)
    return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def _to_label(img: Image.Image, path: Path) -> np.ndarray:
    if img.mode in ("L", "P", "1", "I;16", "I;16B", "I;16L", "I;16N", "I"):
        # For palette images the raw palette indices are the class ids (VOC-style label maps).
        return np.asarray(img).astype(np.int64)
    if img.mode == "F":
        a = np.asarray(img)
        if not np.all(a == np.round(a)):
            raise DataError(path, "label map holds non-integer values", "save label maps as 8/16-bit PNG")
        return a.astype(np.int64)
    if img.mode in ("LA", "PA"):
        return np.asarray(img.getchannel(0)).astype(np.int64)
    if img.mode in ("RGB", "RGBA"):
        a = np.asarray(img)[:, :, :3]
        # Grey label maps are sometimes saved as RGB with R == G == B; accept those.
        if np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 0], a[:, :, 2]):
            return a[:, :, 0].astype(np.int64)
        raise DataError(
            path,
            "label map is a colour image (R, G, B differ)",
            "label maps must be single-channel images whose pixel values are class ids; "
            "convert colour-coded maps to class ids first",
        )
    raise DataError(path, f"unsupported image mode {img.mode!r} for a label map", "save it as an 8/16-bit PNG")


def read_image(path: PathLike, mode: str = "rgb") -> np.ndarray:
    """Read an image file as a numpy array.

    Args:
        path: the image file (PNG 8/16-bit, JPEG, TIFF, WebP, BMP, ...).
        mode: ``"rgb"`` -> ``uint8 (H, W, 3)``; ``"grey"`` -> ``uint8 (H, W)``;
            ``"label"`` -> ``int64 (H, W)`` with the raw stored values (palette indices for
            palette images, full 16-bit values for 16-bit PNG).

    16-bit pictures are scaled to 8 bits for rgb/grey, EXIF orientation is applied, and
    transparent pixels are composited on white.

    Raises:
        DataError: missing, unreadable, truncated or unsupported file (the message names it).
    """
    if mode not in READ_MODES:
        raise ValueError(f"read_image mode must be one of {READ_MODES}, got {mode!r}")
    path = Path(path)
    with _open(path) as raw:  # `with` closes the file even for multi-frame formats (TIFF)
        _decode(raw, path)
        img = _exif_transpose(raw, path)
        try:
            if mode == "rgb":
                return _to_rgb(img)
            if mode == "grey":
                return _to_grey(img)
            return _to_label(img, path)
        except DataError:
            raise
        except (OSError, ValueError) as e:
            raise DataError(path, f"cannot convert image mode {img.mode!r} to {mode} ({e})") from None


def probe_image(path: PathLike, decode: bool = True) -> tuple[int, int]:
    """``(height, width)`` of an image file after EXIF orientation.

    With ``decode=True`` every pixel is decoded (but not converted), which is what detects
    truncated or corrupt files; ``decode=False`` reads only the header. Raises DataError.
    """
    path = Path(path)
    with _open(path) as img:
        if decode:
            _decode(img, path)
        w, h = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)
        except Exception:  # unreadable EXIF: read_image ignores it too
            orientation = 1
    # EXIF orientations 5..8 rotate by 90 degrees, swapping the axes.
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def write_image(path: PathLike, image) -> Path:
    """Write an image, creating parent folders; the format follows the file extension.

    Accepts ``uint8`` arrays ``(H, W)`` / ``(H, W, 1)`` / ``(H, W, 3)`` / ``(H, W, 4)``,
    ``uint16`` ``(H, W)`` arrays (written as 16-bit PNG/TIFF, e.g. instance maps), other
    integer ``(H, W)`` arrays (8-bit, or 16-bit when a value exceeds 255), ``bool`` masks, and float tensors/arrays in [-1, 1]
    shaped ``(C, H, W)`` or ``(1, C, H, W)`` with C = 1 or 3 (see :func:`to_uint8`).
    Returns the path written.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise DataError(path, f"unknown image extension {path.suffix!r}", f"use one of {', '.join(sorted(IMAGE_EXTENSIONS))}")
    if isinstance(image, torch.Tensor):
        if image.is_floating_point():
            arr = to_uint8(image)
        else:
            arr = image.detach().cpu().numpy()
    else:
        arr = np.asarray(image)
        if arr.dtype.kind == "f":
            # Float arrays follow the model convention (channels first, [-1, 1]).
            arr = to_uint8(torch.from_numpy(np.ascontiguousarray(arr)))
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"write_image: cannot write an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "iu":
            raise ValueError(f"write_image: unsupported dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError("write_image: integer values must be in 0..65535")
        # uint16 keeps its bit depth (instance maps); other integers use 16 bits only if needed.
        if arr.ndim == 2 and (arr.dtype == np.uint16 or (arr.size and arr.max() > 255)):
            if ext not in (".png", ".tif", ".tiff"):
                raise DataError(path, "16-bit values can only be stored in PNG or TIFF files")
            arr = arr.astype(np.uint16)
        else:
            arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 4 and ext in (".jpg", ".jpeg", ".bmp"):
        arr = np.asarray(_composite_on_white(Image.fromarray(arr, "RGBA")))
    img = Image.fromarray(np.ascontiguousarray(arr))
    kwargs = {"quality": 95} if ext in (".jpg", ".jpeg", ".webp") else {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, **kwargs)
    except OSError as e:
        raise DataError(path, f"cannot write image ({e})", "check the folder exists and is writable") from None
    return path


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------
def reuse_generated_dir(root: Path, meta: dict, complete, what: str, other_hint: str) -> bool:
    """A folder of generated data (``train/`` + ``val/`` and ``meta.json``): True when it already
    holds exactly ``meta``'s data, complete (``complete(root, meta)``); otherwise its old splits
    are removed (only when its ``meta.json`` says the same generator wrote them) and the folder is
    made ready, marked incomplete until the caller finishes. A folder with foreign ``train/`` /
    ``val/`` data, or another generator's ``meta.json``, is never touched: DataError."""
    meta_path = root / "meta.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("generator") != meta["generator"]:
            raise DataError(root, f"meta.json was not written by imtranslate's {what}", other_hint)
        if old == meta and complete(root, meta):
            return True
        for split in ("train", "val"):  # ours (meta.json says so), safe to replace
            shutil.rmtree(root / split, ignore_errors=True)
    elif any((root / s).exists() for s in ("train", "val")):
        raise DataError(root, "folder already holds train/ or val/ data not generated by imtranslate",
                        f"{other_hint} or empty the folder")
    prepare_output_dir(root)
    # mark the folder as ours before writing, so an interrupted run is cleaned up next time
    meta_path.write_text(json.dumps({**meta, "complete": False}, indent=2))
    return False


def prepare_output_dir(path: PathLike) -> Path:
    """Create the output folder ``path`` (and its parents) and check that files can be written in it.

    Every command that writes into a folder calls this before its work, so a wrong ``-o`` (an
    existing file, a file where a parent folder should be, a place where nothing can be created
    such as ``/proc``, a read-only folder) is one DataError naming the path, not an OSError
    traceback halfway through. Returns the folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(path, "exists and is not a folder", "give a folder for the outputs, or a new name to create")
    for parent in path.parents:  # nearest first: a file standing where a folder must go
        if parent.exists():
            if not parent.is_dir():
                raise DataError(path, f"cannot be created: {parent} is a file, not a folder")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        # the only sure test of writability (read-only mounts, ACLs, root, virtual file systems)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise DataError(path, f"cannot write output files here ({e.strerror or e})",
                        "choose a folder you can write to") from None
    return path


def prepare_output_file(path: PathLike) -> Path:
    """Check that the output file ``path`` can be written (creating its folder); DataError otherwise.

    An existing file is left untouched (it will be replaced); a new one is created and removed
    again, so nothing is left behind when the command fails later. Returns the path.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a folder", "give a file name for the output")
    prepare_output_dir(path.parent)
    try:
        if path.exists():
            if not os.access(path, os.W_OK):
                raise PermissionError(13, "Permission denied")
        else:
            with open(path, "xb"):
                pass
            path.unlink()
    except OSError as e:
        raise DataError(path, f"cannot write this file ({e.strerror or e})", "choose another output path") from None
    return path


def list_images(folder: PathLike, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by extension, hidden files skipped), sorted by path.

    Raises DataError when the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "folder not found", "check data.root and the sub-folder names")
    it = folder.rglob("*") if recursive else folder.iterdir()
    files = [
        p
        for p in it
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------
def to_tensor(img: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W)`` or ``(H, W, C)`` -> float32 ``(C, H, W)`` in [-1, 1]."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"to_tensor expects a uint8 image, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"to_tensor expects (H, W) or (H, W, C), got shape {arr.shape}")
    # One writable float copy (arrays from Pillow are read-only, which torch warns about).
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))
    return t.div_(127.5).sub_(1.0)


def to_uint8(tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor`: float ``(C, H, W)`` in [-1, 1] -> ``uint8`` image.

    Three channels give ``(H, W, 3)``; one channel gives ``(H, W)`` (what Pillow and
    :func:`write_image` expect for grey pictures). A leading batch dimension of size 1 is
    dropped; values outside [-1, 1] are clipped.
    """
    t = tensor if isinstance(tensor, torch.Tensor) else torch.as_tensor(np.asarray(tensor))
    t = t.detach()
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"to_uint8 converts one image; got a batch of {t.shape[0]}")
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(f"to_uint8 expects (C, H, W) with C in 1, 3; got shape {tuple(t.shape)}")
    t = t.float().cpu().clamp(-1.0, 1.0).add(1.0).mul(127.5).round()
    arr = t.to(torch.uint8).numpy().transpose(1, 2, 0)
    return np.ascontiguousarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
