"""faceparse: a light BiSeNet-like face parser (nets/face_parse.py) trained per pixel.

One phase per step::

    logits = P(face)                       # (B, n_classes, H, W)
    loss   = CE(logits, labels)            # pixel cross-entropy (ignore_index: data.dont_care)

Data: the built-in synthetic faces (``data.dataset=synthetic``: :mod:`imtranslate.data.synthetic_faces`,
``data.synthetic.n_train/n_val`` faces rendered at ``data.crop_size``) or CelebAMask-HQ-style folders
(``data.dataset=folders``, ``data.root`` holding ``train/`` and ``val/`` (or only the root: a split),
each with ``image/`` pictures and ``label/`` 8/16-bit class-index PNGs matched by file stem, the layout
``imtranslate data synthetic-faces`` writes; the class names are ``model.class_names``, or a
``meta.json`` ``classes`` list next to the folders).

Held-out metric: mean IoU over the classes present in the prediction or the truth of each face
(``miou``) and pixel accuracy. ``translate`` (``imtranslate translate``) returns the parsing map as
a colour picture; the restore pipeline uses the net's logits (``infer/restore.py``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.io import list_images, read_image, to_tensor
from ..data.synthetic_faces import FACE_CLASSES, SyntheticFaces
from ..errors import ConfigError, DataError
from . import register_task
from .base import Task

# one colour per class for the parsing map as a picture (background black)
PALETTE = torch.tensor([[0, 0, 0], [204, 153, 128], [90, 60, 30], [30, 120, 230], [230, 180, 60], [220, 40, 60],
                        [170, 20, 60], [255, 100, 150], [120, 70, 20], [100, 200, 100], [180, 180, 255],
                        [255, 255, 0], [0, 255, 255], [255, 0, 255], [128, 128, 128], [255, 128, 0],
                        [0, 128, 255], [128, 0, 255], [0, 255, 128]], dtype=torch.float32) / 127.5 - 1


@dataclass
class FaceParseConfig:
    width: int = 32  # context-path base width (the net's widths are 1x..8x this)
    spatial_width: int = 0  # spatial-path width (0 = width)
    class_names: list[str] = field(default_factory=lambda: list(FACE_CLASSES))  # label value -> name
    image_dir: str = "image"  # folders: sub-folder of face pictures
    label_dir: str = "label"  # folders: sub-folder of class-index maps


def label_picture(labels: torch.Tensor) -> torch.Tensor:
    """(B, H, W) class indices -> (B, 3, H, W) colour picture in [-1, 1]."""
    return PALETTE.to(labels.device)[labels.clamp(min=0) % len(PALETTE)].permute(0, 3, 1, 2)


def mean_iou(pred: torch.Tensor, target: torch.Tensor, n_classes: int, ignore: int = -1) -> torch.Tensor:
    """Per-image mean IoU (B,) over the classes present in the prediction or the truth."""
    out = []
    for p, t in zip(pred, target):
        valid = t != ignore
        p, t = p[valid], t[valid]
        ious = []
        for c in range(n_classes):
            inter = ((p == c) & (t == c)).sum()
            union = ((p == c) | (t == c)).sum()
            if union > 0:
                ious.append(inter.float() / union.float())
        out.append(torch.stack(ious).mean() if ious else torch.tensor(1.0))
    return torch.stack(out)


class _SynthFaceItems(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int, seed: int, split: str, flip: bool):
        self.faces = SyntheticFaces(n, size=size, seed=seed, split=split, cache=True)
        self.flip, self.rng_seed = flip, seed

    def __len__(self):
        return len(self.faces)

    def __getitem__(self, i):
        f = self.faces[i]
        return _item(f.image, f.labels, f"{i:05d}", self.flip and (hash((self.rng_seed, i)) & 1) == 1)


class _FolderFaceItems(torch.utils.data.Dataset):
    def __init__(self, pairs: list[tuple[Path, Path]], size: int, flip: bool, seed: int):
        self.pairs, self.size, self.flip, self.seed = pairs, size, flip, seed
        self.epoch = 0

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        img_path, lab_path = self.pairs[i]
        img, lab = read_image(img_path, "rgb"), read_image(lab_path, "label")
        if img.shape[:2] != lab.shape[:2]:
            raise DataError(lab_path, f"label map is {lab.shape[1]}x{lab.shape[0]} but its picture "
                                      f"{img_path.name} is {img.shape[1]}x{img.shape[0]}")
        if self.size and img.shape[:2] != (self.size, self.size):
            import cv2

            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
            lab = cv2.resize(lab.astype(np.int32), (self.size, self.size), interpolation=cv2.INTER_NEAREST)
        rng = np.random.default_rng((self.seed, i))
        return _item(img, lab.astype(np.int64), img_path.stem, self.flip and rng.random() < 0.5)


def _item(image: np.ndarray, labels: np.ndarray, name: str, flip: bool) -> dict:
    if flip:  # the classes have no left/right, so a mirrored face is a valid face
        image, labels = image[:, ::-1], labels[:, ::-1]
    label = torch.from_numpy(np.ascontiguousarray(labels)).long()
    return {"A": to_tensor(np.ascontiguousarray(image)), "label": label,
            "B": label_picture(label[None])[0], "name": name}


def _folder_pairs(root: Path, m: FaceParseConfig) -> list[tuple[Path, Path]]:
    img_dir, lab_dir = root / m.image_dir, root / m.label_dir
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise DataError(root, f"needs {m.image_dir}/ and {m.label_dir}/ sub-folders (face pictures and class-index "
                              "label maps, matched by file stem)")
    labels = {p.stem: p for p in list_images(lab_dir)}
    pairs = [(p, labels[p.stem]) for p in list_images(img_dir) if p.stem in labels]
    if not pairs:
        raise DataError(img_dir, f"no picture has a label map of the same name in {lab_dir}")
    return pairs


@register_task
class FaceParseTask(Task):
    name = "faceparse"
    Config = FaceParseConfig

    @classmethod
    def check_config(cls, cfg) -> None:
        if len(cfg.model.class_names) < 2:
            raise ConfigError("model.class_names: a parser needs at least 2 classes (background first)")
        if cfg.data.dataset == "synthetic_faces":  # the face tasks' name for the same built-in faces
            cfg.data.dataset = "synthetic"
        if cfg.data.dataset not in ("synthetic", "folders"):
            raise ConfigError(f"faceparse trains on data.dataset=synthetic or synthetic_faces (the built-in faces) or folders "
                              f"(image/ + label/), not {cfg.data.dataset}")

    @classmethod
    def _split_root(cls, cfg, split: str) -> tuple[Path, bool]:
        root = Path(cfg.data.root)
        if (root / split).is_dir():
            return root / split, False
        if split == "val" and cfg.data.val_root:
            return Path(cfg.data.val_root), False
        return root, True  # one folder: a split by val_fraction

    @classmethod
    def _pairs(cls, cfg, split: str):
        root, shared = cls._split_root(cfg, split)
        pairs = _folder_pairs(root, cfg.model)
        if shared:
            n_val = max(1, int(round(len(pairs) * cfg.data.val_fraction)))
            pairs = pairs[-n_val:] if split == "val" else pairs[:-n_val] or pairs
        if split == "train" and cfg.data.max_items:
            pairs = pairs[:cfg.data.max_items]
        return pairs

    @classmethod
    def check_data(cls, cfg) -> dict:
        if cfg.data.dataset == "synthetic":
            s = cfg.data.synthetic
            return {"dataset": "synthetic faces", "train": s.n_train, "val": s.n_val, "size": cfg.data.crop_size}
        meta = Path(cfg.data.root) / "meta.json"
        if meta.is_file():
            classes = json.loads(meta.read_text()).get("classes")
            if classes and list(classes) != list(cfg.model.class_names):
                raise ConfigError(f"{meta}: its classes {classes} differ from model.class_names; set model.class_names")
        return {"dataset": "face folders", "train": len(cls._pairs(cfg, "train")), "val": len(cls._pairs(cfg, "val"))}

    @classmethod
    def build_dataset(cls, cfg, split: str):
        train = split == "train"
        if cfg.data.dataset == "synthetic":
            s = cfg.data.synthetic
            return _SynthFaceItems(s.n_train if train else s.n_val, cfg.data.crop_size or 64, s.seed, split,
                                   train and cfg.data.flip)
        return _FolderFaceItems(cls._pairs(cfg, split), cfg.data.crop_size, train and cfg.data.flip, cfg.train.seed)

    def build(self) -> None:
        m = self.m
        P = self.add_net("G", "face_parser", n_classes=len(m.class_names), in_channels=3, width=m.width,
                         spatial_width=m.spatial_width)
        self.add_optimizer("G", P.parameters(), self.cfg.train.lr_g)

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        P = self.nets["G"]
        with self.autocast():
            logits = P(batch["A"])  # (B, n_classes, H, W)
        loss = F.cross_entropy(logits.float(), batch["label"], ignore_index=self.cfg.data.dont_care)
        self.backward_step(loss, "G")
        return {"loss_G": loss.item()}

    @classmethod
    def translate(cls, G, A, cfg, extras=None, batch=None, **options):
        """The parsing map as a colour picture (B, 3, H, W) in [-1, 1]."""
        return label_picture(G(A).argmax(1))

    def validation_metrics(self, G, batch: dict) -> dict[str, torch.Tensor]:
        pred = G(batch["A"]).argmax(1)
        t = batch["label"]
        valid = (t != self.cfg.data.dont_care).flatten(1)
        acc = ((pred == t).flatten(1) & valid).sum(1).float() / valid.sum(1).clamp(min=1)
        return {"miou": mean_iou(pred, t, len(self.m.class_names), self.cfg.data.dont_care), "pixel_acc": acc}

    @classmethod
    def evaluate(cls, predictor, data_root, *, log=print, **_) -> dict:
        """``imtranslate eval CKPT DATA``: mean IoU and pixel accuracy on a folder of image/ + label/."""
        import copy

        cfg = copy.deepcopy(predictor.cfg)
        cfg.data.dataset, cfg.data.root, cfg.data.val_root, cfg.data.val_fraction = "folders", str(data_root), "", 1.0
        root, _ = cls._split_root(cfg, "val")
        ds = _FolderFaceItems(_folder_pairs(root, cfg.model), cfg.data.crop_size, False, 0)
        sums, n = {"miou": 0.0, "pixel_acc": 0.0}, 0
        task = cls.__new__(cls)  # validation_metrics needs only cfg and m
        task.cfg, task.m = cfg, cfg.model
        with torch.inference_mode():
            for i in range(len(ds)):
                it = ds[i]
                batch = {"A": it["A"][None].to(predictor.device), "label": it["label"][None].to(predictor.device)}
                for k, v in task.validation_metrics(predictor.G, batch).items():
                    sums[k] += float(v.sum())
                n += 1
        return {"count": n, "metrics": {k: v / max(n, 1) for k, v in sums.items()}, "skipped": {}}
