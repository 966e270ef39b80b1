"""The built-in synthetic faces: deterministic, and labels / landmarks line up with the pixels."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from imtranslate.data.synthetic_faces import (CLASS_INDEX, FACE_CLASSES, LANDMARK_NAMES, SyntheticFaces, face_seed,
                                              render_face, write_synthetic_faces)


def test_deterministic_and_typed():
    a, b = render_face(7, 64), render_face(7, 64)
    assert a.image.dtype == np.uint8 and a.image.shape == (64, 64, 3)
    assert a.labels.dtype == np.int64 and a.labels.shape == (64, 64)
    assert a.landmarks.dtype == np.float32 and a.landmarks.shape == (5, 2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(render_face(8, 64).image, a.image)
    assert face_seed(0, "train", 3) != face_seed(0, "val", 3)
    assert FACE_CLASSES[0] == "background" and FACE_CLASSES[1] == "skin"
    assert len(LANDMARK_NAMES) == 5
    assert a.labels.min() >= 0 and a.labels.max() < len(FACE_CLASSES)


def _edge_score(image: np.ndarray, labels: np.ndarray) -> float:
    """Mean image gradient on the label map's region borders, relative to the mean everywhere."""
    img = image.astype(np.float32)
    mag = np.sqrt((cv2.Sobel(img, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(img, cv2.CV_32F, 0, 1) ** 2).sum(-1))
    border = np.zeros(labels.shape, bool)
    dx, dy = labels[:, 1:] != labels[:, :-1], labels[1:, :] != labels[:-1, :]
    border[:, 1:] |= dx  # both pixels of each differing pair, so the test is symmetric
    border[:, :-1] |= dx
    border[1:, :] |= dy
    border[:-1, :] |= dy
    return float(mag[border].mean() / mag.mean())


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_labels_line_up_with_pixels(seed):
    face = render_face(seed, 96)
    aligned = _edge_score(face.image, face.labels)
    # the picture's edges lie on the label borders ...
    assert aligned > 2.5, aligned
    # ... and the same labels moved by two pixels, any direction, miss them
    for shift in ((2, 0), (-2, 0), (0, 2), (0, -2)):
        moved = _edge_score(face.image, np.roll(face.labels, shift, axis=(0, 1)))
        assert moved < aligned / 1.15, (shift, aligned, moved)
    for name in ("skin", "eyes", "nose", "upper_lip", "lower_lip"):
        assert (face.labels == CLASS_INDEX[name]).any(), name


@pytest.mark.parametrize("seed", range(12))
def test_landmarks_on_their_regions(seed):
    face = render_face(seed, 128)
    lab = face.labels

    def near(pt, names, r):
        x, y = int(round(pt[0])), int(round(pt[1]))
        win = lab[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1]
        return any((win == CLASS_INDEX[n]).any() for n in names)

    le, re_, nose, ml, mr = face.landmarks
    assert lab[int(round(le[1])), int(round(le[0]))] == CLASS_INDEX["eyes"]
    assert lab[int(round(re_[1])), int(round(re_[0]))] == CLASS_INDEX["eyes"]
    assert near(nose, ["nose"], 1)
    assert near(ml, ["upper_lip", "lower_lip", "mouth"], 2) and near(mr, ["upper_lip", "lower_lip", "mouth"], 2)
    # the eye centres are dark (iris / pupil), the order is image-left first
    assert face.image[int(round(le[1])), int(round(le[0]))].mean() < 150
    assert le[0] < re_[0] and ml[0] < mr[0]
    assert min(le[1], re_[1]) < nose[1] < min(ml[1], mr[1]) + 2


def test_dataset_and_writer(tmp_path):
    ds = SyntheticFaces(3, size=32, seed=5, split="val")
    assert len(ds) == 3 and np.array_equal(ds[1].image, render_face(face_seed(5, "val", 1), 32).image)
    root = write_synthetic_faces(tmp_path / "faces", n_train=2, n_val=1, size=32, seed=5)
    from imtranslate.data import read_image

    img = read_image(root / "val" / "image" / "00000.png", "rgb")
    lab = read_image(root / "val" / "label" / "00000.png", "label")
    assert np.array_equal(img, ds[0].image) and np.array_equal(lab, ds[0].labels)
    marks = json.loads((root / "val" / "landmarks.json").read_text())
    assert np.allclose(marks["00000"], ds[0].landmarks, atol=1e-3)
    write_synthetic_faces(root, n_train=2, n_val=1, size=32, seed=5)  # cached: no error, same files
    (tmp_path / "other" / "train").mkdir(parents=True)
    from imtranslate.errors import DataError

    with pytest.raises(DataError):
        write_synthetic_faces(tmp_path / "other", n_train=1, n_val=0, size=32)


def test_cli_writes_faces(tmp_path):
    from imtranslate.cli import main

    main(["data", "synthetic-faces", str(tmp_path / "f"), "--n-train", "2", "--n-val", "1", "--size", "32"])
    assert (tmp_path / "f" / "train" / "image" / "00001.png").is_file()
    assert (tmp_path / "f" / "val" / "landmarks.json").is_file()
