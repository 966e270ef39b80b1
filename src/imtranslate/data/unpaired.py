"""Unpaired data for style transfer: a folder of content pictures and a folder of style pictures.

``data.dataset=unpaired``: ``data.root`` holds the content pictures (photographs), and
``data.style_root`` the style pictures (paintings, textures). Nothing is matched by name: each
item is one content picture with a style picture drawn at random. Items are::

    {"A": float (3, S, S) in [-1, 1]      the content crop (the network's input picture)
     "style": float (3, S, S) in [-1, 1]  the style crop
     "name": str, "style_name": str}      file stems

with ``S = data.crop_size``. Pictures are first scaled so their shorter side is
``data.load_size`` (0 = keep), and scaled up further when that side is still shorter than the
crop. The crop positions, flips and the style drawn are a function of ``(seed, epoch, index)``,
as for the paired datasets: reproducible with any number of DataLoader workers. Held-out items
use centre crops and a fixed style per item.

Splits: ``root/train`` + ``root/val`` when present (or ``data.val_root``), otherwise
``data.val_fraction`` of the content pictures is held out; the style folder may have
``train/`` + ``val/`` too, otherwise both splits draw from all of it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from .datasets import PairRecord, holdout_split
from .io import IMAGE_EXTENSIONS, list_images, probe_image, read_image, to_tensor
from .transforms import resize_image, resized_shape


def _pictures(folder: Path, what: str, option: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(folder, f"{what} folder not found", f"check {option}")
    files = list_images(folder)
    if not files:
        raise DataError(folder, f"no {what} pictures found",
                        f"put {', '.join(sorted(IMAGE_EXTENSIONS))} files there, or check {option}")
    return files


def scan_unpaired(data_cfg) -> dict:
    """``{"train": [...], "val": [...], "styles_train": [...], "styles_val": [...], "val_source": str}``.

    Raises ConfigError when the options are missing and DataError for missing or empty folders.
    """
    if data_cfg.dataset != "unpaired":
        raise ConfigError(f"style transfer trains on data.dataset=unpaired (content folder data.root, style "
                          f"folder data.style_root), not data.dataset={data_cfg.dataset}")
    if not data_cfg.root or not data_cfg.style_root:
        raise ConfigError("data.dataset=unpaired needs data.root (content pictures) and data.style_root "
                          "(style pictures)")
    root, style_root = Path(data_cfg.root), Path(data_cfg.style_root)
    if not root.is_dir():
        raise DataError(root, "content folder not found", "check data.root")
    train_dir = root / "train" if (root / "train").is_dir() else root
    content = _pictures(train_dir, "content", "data.root")
    val_dir = Path(data_cfg.val_root) if data_cfg.val_root else (root / "val" if (root / "val").is_dir() else None)
    if val_dir is not None:
        val, source = _pictures(val_dir, "held-out content", "data.val_root"), "folder"
    else:
        recs = [PairRecord(p.stem, p) for p in content]
        tr, va = holdout_split(recs, data_cfg.val_fraction)
        content, val = [r.a for r in tr], [r.a for r in va]
        source = "split" if val else "none"
    if not style_root.is_dir():
        raise DataError(style_root, "style folder not found", "check data.style_root")
    if (style_root / "train").is_dir():
        styles = _pictures(style_root / "train", "style", "data.style_root")
        styles_val = _pictures(style_root / "val", "style", "data.style_root") if (style_root / "val").is_dir() \
            else styles
    else:
        styles = styles_val = _pictures(style_root, "style", "data.style_root")
    return {"train": content, "val": val, "styles_train": styles, "styles_val": styles_val, "val_source": source}


def check_unpaired(data_cfg) -> dict:
    """Decode every content and style picture before training; DataError names the first bad one.

    Returns a summary ``{"dataset", "train", "val", "styles", "val_source", "min_size"}``.
    """
    if data_cfg.crop_size <= 0:
        raise ConfigError("style transfer batches equal crops: set data.crop_size (e.g. 256)")
    found = scan_unpaired(data_cfg)
    smallest = None
    for path in dict.fromkeys(found["train"] + found["val"] + found["styles_train"] + found["styles_val"]):
        h, w = probe_image(path)  # decodes every pixel: truncated files fail here
        smallest = (h, w) if smallest is None or h * w < smallest[0] * smallest[1] else smallest
    n_train = len(found["train"]) if data_cfg.max_items <= 0 else min(len(found["train"]), data_cfg.max_items)
    return {"dataset": "unpaired", "train": n_train, "val": len(found["val"]),
            "styles": len(set(found["styles_train"]) | set(found["styles_val"])), "val_source": found["val_source"],
            "min_size": smallest}


def _prepare(img: np.ndarray, load_size: int, crop: int) -> np.ndarray:
    """Scale so the shorter side is ``load_size`` and at least ``crop`` (0 = keep)."""
    h, w = img.shape[:2]
    size = resized_shape(h, w, load_size)
    if min(size) < crop:
        size = resized_shape(h, w, crop)
    return resize_image(img, size)


def _crop(img: np.ndarray, crop: int, rng: np.random.Generator | None, flip: bool) -> np.ndarray:
    h, w = img.shape[:2]
    if rng is None:  # held out: centre crop, no flip
        top, left = (h - crop) // 2, (w - crop) // 2
    else:
        top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    out = img[top:top + crop, left:left + crop]
    if flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class UnpairedStyleDataset(Dataset):
    """Content pictures, each with a style picture drawn at random (see the module doc).

    Args:
        content: content picture files (one item each).
        styles: style picture files to draw from.
        load_size, crop_size, flip: as in :class:`~imtranslate.config.DataConfig`.
        train: random crops/flips/styles (True) or centre crops and a fixed style per item.
        seed: base seed of the per-item random streams.
    """

    def __init__(self, content, styles, *, load_size: int = 0, crop_size: int = 256, flip: bool = True,
                 train: bool = True, seed: int = 0):
        if crop_size <= 0:
            raise ConfigError("style transfer batches equal crops: set data.crop_size (e.g. 256)")
        if not styles:
            raise ConfigError("UnpairedStyleDataset needs at least one style picture")
        self.content = [Path(p) for p in content]
        self.styles = [Path(p) for p in styles]
        self.load_size, self.crop_size, self.flip, self.train = int(load_size), int(crop_size), flip, train
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.content)

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops, flips and styles of ``epoch``."""
        self.epoch = int(epoch)

    def item_rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, int(index)])

    def _load(self, path: Path, rng) -> torch.Tensor:
        img = _prepare(read_image(path, "rgb"), self.load_size, self.crop_size)
        flip = bool(rng is not None and self.flip and rng.random() < 0.5)
        return to_tensor(_crop(img, self.crop_size, rng, flip))

    def __getitem__(self, index: int) -> dict:
        rng = self.item_rng(index) if self.train else None
        s = int(rng.integers(len(self.styles))) if rng is not None else index % len(self.styles)
        return {"A": self._load(self.content[index], rng), "style": self._load(self.styles[s], rng),
                "name": self.content[index].stem, "style_name": self.styles[s].stem}

    def __repr__(self) -> str:
        return (f"UnpairedStyleDataset({len(self)} content, {len(self.styles)} styles, crop {self.crop_size}, "
                f"train={self.train})")


def build_unpaired(data_cfg, split: str = "train", seed: int = 0) -> UnpairedStyleDataset:
    """The ``"train"`` or ``"val"`` unpaired dataset of ``data_cfg`` (``max_items`` caps training items)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    found = scan_unpaired(data_cfg)
    content = found[split]
    if split == "train" and data_cfg.max_items > 0:
        content = content[: data_cfg.max_items]
    return UnpairedStyleDataset(content, found["styles_" + split], load_size=data_cfg.load_size,
                                crop_size=data_cfg.crop_size, flip=data_cfg.flip, train=split == "train", seed=seed)
