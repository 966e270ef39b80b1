"""Paired datasets (folders / aligned AB / label maps / synthetic), splits and pre-flight checks.

Every dataset returns the item dict described in ``docs/ARCHITECTURE.md``::

    {"A": float (C_in, H, W), "B": float (C_out, H, W) in [-1, 1],
     "label": int64 (H, W), "inst": int64 (H, W),     # label-map inputs only
     "name": str}

The input is encoded by :func:`encode_input`, which the predictor calls too, so inference
sees exactly what training saw. Random crops and flips are drawn from a generator seeded by
``(seed, epoch, index)``: an item is the same whichever DataLoader worker loads it, and a run
is reproducible with any ``num_workers``. Call ``dataset.set_epoch(e)`` before each epoch.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..config import DATASET_KINDS
from ..errors import ConfigError, DataError
from .io import IMAGE_EXTENSIONS, list_images, probe_image, read_image, to_tensor
from .synthetic import SYNTHETIC_VERSION, generate_synthetic
from .transforms import PairedTransform, resized_shape

#: the kinds of ``data.dataset`` that give (input, target) pairs; "unpaired" is read by data/unpaired.py
PAIRED_DATASETS = tuple(k for k in DATASET_KINDS if k != "unpaired")
_FIRST = 5  # how many offending names an error message lists


# --------------------------------------------------------------------------------------------
# Input encoding (shared with the predictor)
# --------------------------------------------------------------------------------------------
def input_kind(data_cfg) -> str:
    """What the network input is: ``rgb``, ``grey`` or ``label`` (resolving dataset defaults)."""
    if data_cfg.dataset == "synthetic":
        return "label" if data_cfg.synthetic.input == "label" else "grey"
    if data_cfg.dataset == "labelmap":
        return "label"
    return data_cfg.input_kind


def input_read_mode(data_cfg) -> str:
    """The ``read_image`` mode for input files: ``"rgb"``, ``"grey"`` or ``"label"``."""
    return input_kind(data_cfg)


def target_read_mode(data_cfg) -> str:
    """The ``read_image`` mode for target files, from ``data.output_channels`` (3 or 1)."""
    if data_cfg.output_channels == 3:
        return "rgb"
    if data_cfg.output_channels == 1:
        return "grey"
    raise ConfigError(f"data.output_channels must be 3 (RGB) or 1 (grey), got {data_cfg.output_channels}")


def label_params(data_cfg) -> tuple[int, int, bool]:
    """``(n_classes, dont_care, use_instance)`` of a label-map input."""
    n = data_cfg.synthetic.n_classes if data_cfg.dataset == "synthetic" else data_cfg.n_classes
    return int(n), int(data_cfg.dont_care), bool(data_cfg.use_instance)


def input_channels(data_cfg) -> int:
    """Channels of the encoded input ``A``: rgb 3, grey 1, label n_classes (+1 with instances)."""
    kind = input_kind(data_cfg)
    if kind == "rgb":
        return 3
    if kind == "grey":
        return 1
    n, _, use_inst = label_params(data_cfg)
    return n + int(use_inst)


def instance_boundaries(inst: np.ndarray) -> np.ndarray:
    """Boolean map, True where a pixel's id differs from any of its 4 neighbours (pix2pixHD).

    Both pixels on either side of a boundary are marked, so touching objects of the same
    class stay separable.
    """
    inst = np.asarray(inst)
    e = np.zeros(inst.shape, dtype=bool)
    dx = inst[:, 1:] != inst[:, :-1]
    e[:, 1:] |= dx
    e[:, :-1] |= dx
    dy = inst[1:, :] != inst[:-1, :]
    e[1:, :] |= dy
    e[:-1, :] |= dy
    return e


def one_hot(label: np.ndarray, n_classes: int, dont_care: int = -1, name="<label map>") -> torch.Tensor:
    """int ``(H, W)`` class ids -> float ``(n_classes, H, W)``; ``dont_care`` pixels all-zero."""
    label = np.asarray(label)
    if label.dtype.kind not in "iub":
        raise DataError(name, f"label map has non-integer dtype {label.dtype}", "label maps must hold class ids")
    label = label.astype(np.int64)
    valid = label != dont_care
    bad = valid & ((label < 0) | (label >= n_classes))
    if bad.any():
        vals = np.unique(label[bad])
        raise DataError(
            name,
            f"label values {vals[:_FIRST].tolist()} are outside 0..{n_classes - 1} (data.n_classes={n_classes})",
            f"raise data.n_classes to at least {int(vals.max()) + 1}, or set data.dont_care to the value "
            "that means 'unlabelled'",
        )
    idx = torch.from_numpy(np.where(valid, label, 0))
    out = torch.zeros((n_classes,) + label.shape, dtype=torch.float32)
    out.scatter_(0, idx[None], 1.0)
    out *= torch.from_numpy(valid)[None]
    return out


def encode_input(array, data_cfg, inst=None, name="<input>") -> torch.Tensor:
    """Turn a raw input array (as returned by ``read_image(path, input_read_mode(cfg))``) into
    the network input ``A``, float ``(C, H, W)``.

    * rgb: ``uint8 (H, W, 3)`` (grey or RGBA arrays are converted) -> 3 channels in [-1, 1];
    * grey: ``uint8 (H, W)`` (RGB arrays are converted) -> 1 channel in [-1, 1];
    * label: integer ``(H, W)`` -> one-hot over ``n_classes`` ("don't care" all-zero), plus the
      instance boundary map of ``inst`` (or of the label map when ``inst`` is None) as one
      more channel when ``data.use_instance`` is set.
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if isinstance(inst, torch.Tensor):
        inst = inst.detach().cpu().numpy()
    arr = np.asarray(array)
    kind = input_kind(data_cfg)
    if kind == "label":
        n, dont_care, use_inst = label_params(data_cfg)
        if arr.ndim != 2:
            raise DataError(name, f"label map must be a single-channel (H, W) array, got shape {arr.shape}")
        out = one_hot(arr, n, dont_care, name)
        if use_inst:
            edges = instance_boundaries(arr if inst is None else inst)
            out = torch.cat([out, torch.from_numpy(edges.astype(np.float32))[None]], 0)
        return out
    if arr.dtype != np.uint8:
        raise DataError(name, f"expected an 8-bit picture, got dtype {arr.dtype}", "read it with read_image")
    if kind == "rgb":
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.shape[2] == 4:
            arr = np.asarray(Image.fromarray(arr, "RGBA").convert("RGB"))
        elif arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        return to_tensor(arr)
    if arr.ndim == 3:
        # Pillow's RGB->L weights, the same conversion read_image(mode="grey") applies.
        arr = np.asarray(Image.fromarray(np.ascontiguousarray(arr[:, :, :3]), "RGB").convert("L"))
    return to_tensor(arr)


# --------------------------------------------------------------------------------------------
# Pair records and datasets
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairRecord:
    """The files of one item: ``a`` (input, or the side-by-side file), ``b``, ``inst``."""

    name: str
    a: Path
    b: Optional[Path] = None
    inst: Optional[Path] = None


def _by_stem(folder: Path, what: str) -> dict[str, Path]:
    files = list_images(folder)
    if not files:
        raise DataError(
            folder,
            f"no {what} images found",
            f"put {', '.join(sorted(IMAGE_EXTENSIONS))} files there, or check data.root / the sub-folder option",
        )
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise DataError(p, f"two files share the name {p.stem!r} ({out[p.stem].name} and {p.name})",
                            "pairs are matched by file name without extension; rename or remove one")
        out[p.stem] = p
    return out


def _unmatched_error(files: dict[str, Path], stems: list[str], what: str, other_dir: Path) -> DataError:
    first = files[stems[0]]
    listed = ", ".join(files[s].name for s in stems[:_FIRST]) + (", ..." if len(stems) > _FIRST else "")
    return DataError(
        first,
        f"{len(stems)} {what} file(s) have no partner in {other_dir}: {listed}",
        "inputs and targets are matched by file name without extension; add the missing files or remove these",
    )


def scan_folder_pairs(folder, a_dir: str, b_dir: str, inst_dir: str = "") -> list[PairRecord]:
    """Match ``folder/a_dir`` and ``folder/b_dir`` (and ``folder/inst_dir``) by file stem.

    Raises DataError for a missing or empty folder, duplicate stems, or files without partner.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "dataset folder not found", "check data.root")
    a = _by_stem(folder / a_dir, "input")
    b = _by_stem(folder / b_dir, "target")
    only_a = sorted(set(a) - set(b))
    if only_a:
        raise _unmatched_error(a, only_a, "input", folder / b_dir)
    only_b = sorted(set(b) - set(a))
    if only_b:
        raise _unmatched_error(b, only_b, "target", folder / a_dir)
    inst = {}
    if inst_dir:
        inst = _by_stem(folder / inst_dir, "instance map")
        missing = sorted(set(a) - set(inst))
        if missing:
            raise _unmatched_error(a, missing, "input", folder / inst_dir)
    return [PairRecord(s, a[s], b[s], inst.get(s)) for s in sorted(a)]


def scan_aligned(folder) -> list[PairRecord]:
    """Side-by-side AB files directly in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "dataset folder not found", "check data.root")
    files = _by_stem(folder, "side-by-side AB")
    return [PairRecord(s, p) for s, p in sorted(files.items())]


class PairDataset(Dataset):
    """Base class: records -> read -> identical crop/flip -> encoded item dict.

    Args:
        records: the items (see :class:`PairRecord`).
        data_cfg: the :class:`~imtranslate.config.DataConfig`.
        train: random crop and flip (True) or centre crop, no flip (False).
        seed: base seed of the per-item random streams.
    """

    def __init__(self, records: Sequence[PairRecord], data_cfg, *, train: bool = True, seed: int = 0):
        self.records = list(records)
        self.cfg = data_cfg
        self.train = train
        self.seed = int(seed)
        self.epoch = 0
        self.kind = input_kind(data_cfg)
        self.target_mode = target_read_mode(data_cfg)
        self.transform = PairedTransform(data_cfg.load_size, data_cfg.crop_size, train=train, flip=data_cfg.flip)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def names(self) -> list[str]:
        """Item names (file stems), in index order."""
        return [r.name for r in self.records]

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops/flips of ``epoch`` (call before creating the epoch's iterator)."""
        self.epoch = int(epoch)

    def item_rng(self, index: int) -> np.random.Generator:
        """The random stream of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, int(index)])

    def load(self, rec: PairRecord) -> dict:
        """Raw arrays ``{"A", "B", "inst"}`` of one record (subclasses)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        raw = self.load(rec)
        is_label = self.kind == "label"
        nearest = ("A", "inst") if is_label else ("inst",)
        t = self.transform(raw, self.item_rng(index), nearest=nearest, path=rec.a)
        item = {
            "A": encode_input(t["A"], self.cfg, inst=t.get("inst"), name=rec.a),
            "B": to_tensor(t["B"]),
        }
        if is_label:
            label = torch.from_numpy(t["A"].astype(np.int64))
            item["label"] = label
            item["inst"] = torch.from_numpy(t["inst"].astype(np.int64)) if t.get("inst") is not None else label.clone()
        item["name"] = rec.name
        return item

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items, train={self.train}, {self.transform})"


class FolderPairs(PairDataset):
    """``root/<a_dir>/x.*`` paired with ``root/<b_dir>/x.*`` by file stem (``data.dataset=folders``).

    The input is encoded according to ``data.input_kind`` (rgb, grey or label); with label
    inputs an instance map from ``<inst_dir>`` is loaded when the record has one.
    """

    def load(self, rec: PairRecord) -> dict:
        a = read_image(rec.a, self.kind)
        b = read_image(rec.b, self.target_mode)
        inst = read_image(rec.inst, "label") if (rec.inst is not None and self.kind == "label") else None
        return {"A": a, "B": b, "inst": inst}


class LabelMapPairs(FolderPairs):
    """Integer label maps -> photos (``data.dataset=labelmap``), optional instance maps.

    ``A`` is the one-hot label map (``n_classes`` channels, "don't care" all-zero) plus the
    instance boundary channel when ``data.use_instance`` is set; items carry ``label`` and
    ``inst`` (the instance map when there is one, else the label map).
    """

    def __init__(self, records, data_cfg, *, train: bool = True, seed: int = 0):
        super().__init__(records, data_cfg, train=train, seed=seed)
        if self.kind != "label":
            raise ConfigError("LabelMapPairs needs label inputs (data.dataset=labelmap or data.input_kind=label)")


class AlignedPairs(PairDataset):
    """pix2pix-style files holding A (left half) and B (right half) side by side
    (``data.dataset=aligned``); ``data.direction=BtoA`` swaps the halves."""

    def __init__(self, records, data_cfg, *, train: bool = True, seed: int = 0):
        super().__init__(records, data_cfg, train=train, seed=seed)
        if self.kind == "label":
            raise ConfigError("data.dataset=aligned holds two pictures side by side; label inputs are not "
                              "supported there (use data.dataset=labelmap)")

    def load(self, rec: PairRecord) -> dict:
        ab = read_image(rec.a, "rgb")
        w = ab.shape[1]
        if w % 2:
            raise DataError(rec.a, f"side-by-side file has an odd width ({w} px) and cannot be split in two halves",
                            "aligned files must be exactly two equally wide images; crop one column")
        left, right = ab[:, : w // 2], ab[:, w // 2 :]
        a, b = (right, left) if self.cfg.direction == "BtoA" else (left, right)
        if self.kind == "grey":
            a = np.asarray(Image.fromarray(np.ascontiguousarray(a)).convert("L"))
        if self.target_mode == "grey":
            b = np.asarray(Image.fromarray(np.ascontiguousarray(b)).convert("L"))
        return {"A": np.ascontiguousarray(a), "B": np.ascontiguousarray(b), "inst": None}


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------
def _cache_home() -> Path:
    base = os.environ.get("IMTRANSLATE_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imtranslate"


def synthetic_root(data_cfg) -> Path:
    """Folder of the synthetic dataset: ``data.synthetic.root``, or a cache folder keyed by the
    generator parameters (``~/.cache/imtranslate/synthetic/<hash>``) when that is empty."""
    s = data_cfg.synthetic
    if s.root:
        return Path(s.root)
    key = json.dumps([SYNTHETIC_VERSION, s.n_train, s.n_val, s.size, s.n_classes, s.seed])
    return _cache_home() / "synthetic" / hashlib.sha256(key.encode()).hexdigest()[:16]


def prepare_synthetic(data_cfg) -> Path:
    """Generate (or reuse) the synthetic dataset of ``data_cfg`` and return its folder."""
    s = data_cfg.synthetic
    return generate_synthetic(synthetic_root(data_cfg), s.n_train, s.n_val, s.size, s.n_classes, s.seed)


def synthetic_faces_root(data_cfg) -> Path:
    """Folder of the synthetic faces (``data.dataset=synthetic_faces``): ``data.synthetic.root``,
    or a cache folder keyed by the parameters (``~/.cache/imtranslate/synthetic_faces/<hash>``)."""
    from .synthetic_faces import SYNTHETIC_FACES_VERSION

    s = data_cfg.synthetic
    if s.root:
        return Path(s.root)
    key = json.dumps([SYNTHETIC_FACES_VERSION, s.n_train, s.n_val, s.size, s.seed])
    return _cache_home() / "synthetic_faces" / hashlib.sha256(key.encode()).hexdigest()[:16]


def holdout_split(records: Sequence[PairRecord], fraction: float) -> tuple[list, list]:
    """Deterministic train/val split of ``records`` (seeded by the list of names).

    At least one item is held out when there are two or more and ``fraction > 0``; the
    training part always keeps at least one. Both parts keep the sorted order.
    """
    n = len(records)
    if n < 2 or fraction <= 0:
        return list(records), []
    n_val = min(n - 1, max(1, round(n * fraction)))
    # Seeded by the file names, so the split is stable across runs and machines.
    digest = hashlib.sha256("\n".join(r.name for r in records).encode()).digest()
    perm = np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(n)
    held = set(perm[:n_val].tolist())
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def scan_photos(folder) -> list[PairRecord]:
    """The photographs directly in ``folder``, each its own input and target (``data.dataset=photos``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "photo folder not found", "check data.root")
    return [PairRecord(s, p, p) for s, p in sorted(_by_stem(folder, "photo").items())]


def _scan(data_cfg, folder: Path) -> list[PairRecord]:
    if data_cfg.dataset in ("photos", "synthetic_faces"):
        return scan_photos(folder)
    if data_cfg.dataset == "aligned":
        return scan_aligned(folder)
    if data_cfg.dataset == "synthetic":
        if data_cfg.synthetic.input == "label":
            return scan_folder_pairs(folder, "label", "photo", "instance")
        return scan_folder_pairs(folder, "contour", "photo")
    inst_dir = data_cfg.inst_dir if input_kind(data_cfg) == "label" else ""
    return scan_folder_pairs(folder, data_cfg.a_dir, data_cfg.b_dir, inst_dir)


def split_records(data_cfg) -> dict:
    """Scan the data and return ``{"train": [...], "val": [...], "val_source": str, "folders": [...]}``.

    ``val_source`` is ``"folder"`` (a val folder / ``data.val_root``), ``"split"`` (held out of
    the training files by ``data.val_fraction``) or ``"none"``. ``max_items`` is not applied.
    """
    if data_cfg.dataset not in PAIRED_DATASETS:
        raise ConfigError(f"data.dataset={data_cfg.dataset} gives no (input, target) pairs; this task needs one "
                          f"of {', '.join(PAIRED_DATASETS)}")
    if data_cfg.dataset == "photos" and not data_cfg.root:  # the synthetic scenes' photographs
        root = prepare_synthetic(data_cfg)
        train = scan_photos(root / "train" / "photo")
        val = scan_photos(root / "val" / "photo") if data_cfg.synthetic.n_val > 0 else []
        return {"train": train, "val": val, "val_source": "folder" if val else "none",
                "folders": [root / "train" / "photo", root / "val" / "photo"]}
    if data_cfg.dataset == "synthetic_faces":  # rendered face crops, each its own input and target
        from .synthetic_faces import write_synthetic_faces

        s = data_cfg.synthetic
        root = write_synthetic_faces(synthetic_faces_root(data_cfg), s.n_train, s.n_val, s.size, s.seed)
        train = scan_photos(root / "train" / "image")
        val = scan_photos(root / "val" / "image") if s.n_val > 0 else []
        return {"train": train, "val": val, "val_source": "folder" if val else "none",
                "folders": [root / "train" / "image", root / "val" / "image"]}
    if data_cfg.dataset == "synthetic":
        root = prepare_synthetic(data_cfg)
        train = _scan(data_cfg, root / "train")
        val = _scan(data_cfg, root / "val") if data_cfg.synthetic.n_val > 0 else []
        return {"train": train, "val": val, "val_source": "folder" if val else "none",
                "folders": [root / "train", root / "val"]}
    if not data_cfg.root:
        raise ConfigError(f"data.root is required for data.dataset={data_cfg.dataset}")
    root = Path(data_cfg.root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found", "check data.root")
    train_dir = root / "train" if (root / "train").is_dir() else root
    if data_cfg.val_root:
        val_dir: Optional[Path] = Path(data_cfg.val_root)
        if not val_dir.is_dir():
            raise DataError(val_dir, "validation folder not found", "check data.val_root")
    else:
        val_dir = root / "val" if (root / "val").is_dir() else None
    records = _scan(data_cfg, train_dir)
    if val_dir is not None:
        return {"train": records, "val": _scan(data_cfg, val_dir), "val_source": "folder",
                "folders": [train_dir, val_dir]}
    train, val = holdout_split(records, data_cfg.val_fraction)
    return {"train": train, "val": val, "val_source": "split" if val else "none", "folders": [train_dir]}


def dataset_class(data_cfg) -> type:
    """The dataset class used for ``data_cfg``."""
    if data_cfg.dataset == "aligned":
        return AlignedPairs
    return LabelMapPairs if input_kind(data_cfg) == "label" else FolderPairs


def build_dataset(data_cfg, split: str = "train", seed: int = 0) -> PairDataset:
    """Build the ``"train"`` or ``"val"`` dataset described by ``data_cfg``.

    Training items get random crops/flips; validation items a centre crop and no flip.
    ``data.max_items`` caps the training items (the first ones in name order). The validation
    dataset may be empty (a single pair, ``val_fraction=0`` or ``synthetic.n_val=0``).
    For ``dataset=synthetic`` the scenes are generated first (cached; see
    :func:`synthetic_root`).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    target_read_mode(data_cfg)  # fail on a bad output_channels before scanning files
    recs = split_records(data_cfg)[split]
    if split == "train" and data_cfg.max_items > 0:
        recs = recs[: data_cfg.max_items]
    return dataset_class(data_cfg)(recs, data_cfg, train=(split == "train"), seed=seed)


# --------------------------------------------------------------------------------------------
# Pre-flight checks
# --------------------------------------------------------------------------------------------
def _check_record(rec: PairRecord, data_cfg, kind: str, n_classes: int, dont_care: int, seen: set) -> tuple[int, int]:
    """Decode every file of ``rec`` and check it; returns the (H, W) of the pair."""
    if data_cfg.dataset == "aligned":
        h, w = probe_image(rec.a)
        if w % 2:
            raise DataError(rec.a, f"side-by-side file has an odd width ({w} px) and cannot be split in two halves",
                            "aligned files must be exactly two equally wide images; crop one column")
        w //= 2
    else:
        if kind == "label":
            label = read_image(rec.a, "label")
            h, w = label.shape
            vals = np.unique(label)
            bad = vals[(vals != dont_care) & ((vals < 0) | (vals >= n_classes))]
            if bad.size:
                raise DataError(
                    rec.a,
                    f"label values {bad[:_FIRST].tolist()} are outside 0..{n_classes - 1} "
                    f"(n_classes={n_classes})",
                    f"raise data.n_classes to at least {int(bad.max()) + 1}, or set data.dont_care to the "
                    "value that means 'unlabelled'",
                )
            seen.update(vals.tolist())
        else:
            h, w = probe_image(rec.a)
        for other, what in ((rec.b, "target"), (rec.inst, "instance map")):
            if other is None or other == rec.a:  # photos: the input is its own target
                continue
            oh, ow = probe_image(other)
            if (oh, ow) != (h, w):
                raise DataError(
                    rec.a,
                    f"input is {w}x{h} but its {what} {other} is {ow}x{oh}",
                    "the files of a pair must have the same width and height; resize one of them",
                )
    if data_cfg.crop_size > 0:
        rh, rw = resized_shape(h, w, data_cfg.load_size)
        if min(rh, rw) < data_cfg.crop_size:
            after = f" after resizing to data.load_size={data_cfg.load_size}" if data_cfg.load_size else ""
            raise DataError(
                rec.a,
                f"image is {rw}x{rh}{after}, smaller than data.crop_size={data_cfg.crop_size}",
                "lower data.crop_size, raise data.load_size, or remove the file",
            )
    return h, w


def check_dataset(data_cfg) -> dict:
    """Check the whole dataset before training; raise DataError naming the first bad file.

    Checks: missing or empty folders, inputs without targets (and the reverse), unreadable or
    truncated files (every file is fully decoded), label values >= n_classes (other than
    ``dont_care``), pairs whose files differ in size, aligned files of odd width, and images
    smaller than ``crop_size`` (after ``load_size``).

    Returns a summary: ``{"dataset", "train", "val", "val_source", "input_channels",
    "min_size": (H, W), "max_size": (H, W), "label_values": [...] (label inputs)}``.
    """
    target_read_mode(data_cfg)
    kind = input_kind(data_cfg)
    if kind == "label":
        n_classes, dont_care, _ = label_params(data_cfg)
        if n_classes < 2:
            raise ConfigError("label-map data needs data.n_classes >= 2")
    else:
        n_classes, dont_care = 0, -1
    if data_cfg.dataset == "aligned" and kind == "label":
        raise ConfigError("data.dataset=aligned does not support label inputs (use data.dataset=labelmap)")
    recs = split_records(data_cfg)
    seen: set = set()
    min_hw, max_hw = [None, None], [0, 0]
    for rec in recs["train"] + recs["val"]:
        h, w = _check_record(rec, data_cfg, kind, n_classes, dont_care, seen)
        min_hw = [h if min_hw[0] is None else min(min_hw[0], h), w if min_hw[1] is None else min(min_hw[1], w)]
        max_hw = [max(max_hw[0], h), max(max_hw[1], w)]
    n_train = len(recs["train"])
    if data_cfg.max_items > 0:
        n_train = min(n_train, data_cfg.max_items)
    summary = {
        "dataset": data_cfg.dataset,
        "train": n_train,
        "val": len(recs["val"]),
        "val_source": recs["val_source"],
        "input_channels": input_channels(data_cfg),
        "min_size": tuple(min_hw),
        "max_size": tuple(max_hw),
    }
    if kind == "label":
        summary["label_values"] = sorted(int(v) for v in seen)
    return summary
