"""Tests of imtranslate.data: file reading, transforms, pyramids, synthetic scenes, datasets,
pre-flight checks and pair making. Tiny images and fixed seeds keep the whole file fast."""
from __future__ import annotations

import dataclasses
import json
import time

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from imtranslate.config import DataConfig, SyntheticConfig
from imtranslate.data import (
    PairedTransform,
    build_dataset,
    build_pyramid,
    check_dataset,
    encode_input,
    generate_synthetic,
    input_channels,
    input_read_mode,
    list_images,
    make_pairs,
    make_scene,
    pyramid_multiple,
    read_image,
    to_tensor,
    to_uint8,
    write_image,
)
from imtranslate.data.datasets import holdout_split, instance_boundaries, synthetic_root
from imtranslate.data.io import probe_image
from imtranslate.data.synthetic import class_colour, scene_rng
from imtranslate.errors import ConfigError, DataError


def rand_rgb(h=32, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth_rgb(h=32, w=48, seed=0):
    """A smooth picture (lossy formats keep it close)."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (3, 4, 3)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return generate_synthetic(root, n_train=6, n_val=2, size=32, n_classes=5, seed=3)


def synth_cfg(root, **kw):
    s = SyntheticConfig(n_train=6, n_val=2, size=32, n_classes=5, seed=3, root=str(root))
    return DataConfig(dataset="synthetic", synthetic=s, crop_size=kw.pop("crop_size", 32), **kw)


# --------------------------------------------------------------------------------------------
# io
# --------------------------------------------------------------------------------------------
def test_read_png8_modes(tmp_path):
    img = rand_rgb()
    p = write_image(tmp_path / "a.png", img)
    assert np.array_equal(read_image(p, "rgb"), img)
    g = read_image(p, "grey")
    assert g.shape == (32, 48) and g.dtype == np.uint8
    grey_path = write_image(tmp_path / "g.png", img[:, :, 0])
    rgb = read_image(grey_path, "rgb")
    assert rgb.shape == (32, 48, 3) and np.array_equal(rgb[:, :, 1], img[:, :, 0])
    lab = read_image(grey_path, "label")
    assert lab.dtype == np.int64 and np.array_equal(lab, img[:, :, 0])
    with pytest.raises(ValueError):
        read_image(p, "bgr")


def test_read_png16(tmp_path):
    a = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    a[0, 0], a[0, 1] = 65535, 257 * 7
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I;16")
    lab = read_image(p, "label")
    assert lab.dtype == np.int64 and np.array_equal(lab, a.astype(np.int64))
    g = read_image(p, "grey")
    assert g.dtype == np.uint8 and g[0, 0] == 255 and g[0, 1] == 7
    assert np.abs(g.astype(int) - a.astype(int) // 257).max() <= 1
    rgb = read_image(p, "rgb")
    assert rgb.shape == (32, 32, 3) and np.array_equal(rgb[:, :, 0], g)
    # 16-bit colour PNG (written by OpenCV, BGR order)
    c16 = np.random.default_rng(0).integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), c16)
    rgb16 = read_image(tmp_path / "c16.png", "rgb")
    assert np.abs(rgb16.astype(int) - (c16[:, :, ::-1] >> 8)).max() <= 1


@pytest.mark.parametrize("ext,tol", [(".jpg", 12), (".tif", 0), (".tiff", 0), (".bmp", 0), (".webp", 12)])
def test_read_formats(tmp_path, ext, tol):
    img = smooth_rgb()
    p = tmp_path / f"x{ext}"
    Image.fromarray(img).save(p)
    out = read_image(p, "rgb")
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() <= tol


def test_read_tiff16(tmp_path):
    a = np.full((8, 8), 65535, np.uint16)
    Image.fromarray(a).save(tmp_path / "t16.tif")
    assert read_image(tmp_path / "t16.tif", "grey").max() == 255
    assert read_image(tmp_path / "t16.tif", "label").max() == 65535


def test_read_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (200, 10, 20, 255)  # opaque red half
    rgba[:, 4:] = (0, 0, 0, 0)  # transparent half
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    rgb = read_image(p, "rgb")
    assert (rgb[:, :4] == (200, 10, 20)).all()
    assert (rgb[:, 4:] == 255).all()
    assert (read_image(p, "grey")[:, 4:] == 255).all()


def test_read_palette(tmp_path):
    idx = np.array([[0, 1], [2, 1]], np.uint8).repeat(4, 0).repeat(4, 1)
    img = Image.fromarray(idx, "P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    p = tmp_path / "p.png"
    img.save(p)
    assert np.array_equal(read_image(p, "label"), idx.astype(np.int64))
    rgb = read_image(p, "rgb")
    assert tuple(rgb[0, 4]) == (255, 0, 0) and tuple(rgb[4, 0]) == (0, 255, 0)


def test_read_exif_rotation(tmp_path):
    img = smooth_rgb(20, 40)  # H=20, W=40
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    p = tmp_path / "rot.jpg"
    Image.fromarray(img).save(p, exif=exif.tobytes())
    assert read_image(p, "rgb").shape == (40, 20, 3)
    assert read_image(p, "grey").shape == (40, 20)
    assert probe_image(p) == (40, 20)


def test_label_mode_rejects_colour_maps(tmp_path):
    p = write_image(tmp_path / "c.png", rand_rgb(8, 8))
    with pytest.raises(DataError, match="c.png"):
        read_image(p, "label")
    # grey stored as RGB is accepted
    g = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8)[:, :, None], 3, 2)
    assert np.array_equal(read_image(write_image(tmp_path / "g.png", g), "label"), g[:, :, 0])


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file_raises(tmp_path, ext):
    p = tmp_path / f"broken{ext}"
    Image.fromarray(rand_rgb(64, 64)).save(p)
    truncate(p)
    with pytest.raises(DataError, match=f"broken{ext}") as e:
        read_image(p)
    assert "truncated" in str(e.value)
    with pytest.raises(DataError, match=f"broken{ext}"):
        probe_image(p)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="nothere.png.*not found"):
        read_image(tmp_path / "nothere.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match="text.png.*not a readable image"):
        read_image(tmp_path / "text.png")


def test_write_image_variants(tmp_path):
    img = rand_rgb(16, 16)
    t = to_tensor(img)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert np.array_equal(to_uint8(t), img)
    assert np.array_equal(to_uint8(t[None]), img)  # batch of one
    g = img[:, :, 0]
    assert to_tensor(g).shape == (1, 16, 16)
    assert np.array_equal(to_uint8(to_tensor(g)), g)
    # float tensor in [-1, 1] -> file, parent folders created
    p = write_image(tmp_path / "deep" / "er" / "t.png", t)
    assert np.array_equal(read_image(p), img)
    write_image(tmp_path / "g.png", to_tensor(g))
    assert np.array_equal(read_image(tmp_path / "g.png", "grey"), g)
    # uint16 stays 16-bit (instance maps), even when values are small
    inst = np.array([[0, 3], [7, 1000]], np.uint16)
    write_image(tmp_path / "i.png", inst)
    assert Image.open(tmp_path / "i.png").mode.startswith("I;16")
    assert np.array_equal(read_image(tmp_path / "i.png", "label"), inst)
    write_image(tmp_path / "small.png", np.array([[1, 2]], np.int64))
    assert Image.open(tmp_path / "small.png").mode == "L"
    with pytest.raises(DataError, match="x.gif"):
        write_image(tmp_path / "x.gif", img)


def test_list_images(tmp_path):
    for n in ["b.png", "a.JPG", "c.txt", ".hidden.png", "sub/d.webp"]:
        (tmp_path / n).parent.mkdir(exist_ok=True)
        (tmp_path / n).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.JPG", "b.png", "d.webp"]
    with pytest.raises(DataError, match="missing"):
        list_images(tmp_path / "missing")


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------
def test_paired_transform_identical_for_all_arrays():
    img = rand_rgb(40, 50)
    label = np.random.default_rng(1).integers(0, 5, (40, 50))
    tf = PairedTransform(load_size=45, crop_size=32, train=True, flip=True)
    flips = set()
    for s in range(12):
        out = tf({"A": img, "B": img.copy(), "label": label}, np.random.default_rng(s))
        assert out["A"].shape == (32, 32, 3) and out["label"].shape == (32, 32)
        assert np.array_equal(out["A"], out["B"])
        assert set(np.unique(out["label"])) <= set(range(5))
        assert out["label"].dtype == label.dtype
        p = tf.params(40, 50, np.random.default_rng(s))
        flips.add(p.flip)
        again = tf({"A": img, "B": img, "label": label}, np.random.default_rng(s))
        assert np.array_equal(again["A"], out["A"])  # reproducible from the seed
    assert flips == {True, False}


def test_paired_transform_label_follows_image():
    # The label equals the picture's value, so after the same crop/flip/resize they must agree.
    label = np.kron(np.random.default_rng(0).integers(0, 4, (5, 6)), np.ones((8, 8), int))
    pic = (label * 60).astype(np.uint8)
    tf = PairedTransform(load_size=0, crop_size=24, train=True)
    for s in range(5):
        out = tf({"A": pic, "label": label}, np.random.default_rng(s))
        assert np.array_equal(out["A"].astype(int), out["label"] * 60)
    # nearest resize of the label keeps values; image resize is smooth
    tf2 = PairedTransform(load_size=20, crop_size=0, train=False)
    out = tf2({"A": pic, "label": label})
    assert out["label"].shape == (20, 24) and set(np.unique(out["label"])) <= set(np.unique(label))


def test_paired_transform_val_centre_and_errors():
    img = np.arange(40 * 40, dtype=np.int64).reshape(40, 40)
    tf = PairedTransform(crop_size=20, train=False)
    out = tf({"label": img}, None)["label"]
    assert out[0, 0] == img[10, 10] and out.shape == (20, 20)
    whole = PairedTransform(crop_size=0, train=False)({"label": img})["label"]
    assert np.array_equal(whole, img)
    with pytest.raises(DataError, match="small.png.*smaller than data.crop_size=64"):
        tf2 = PairedTransform(crop_size=64, train=True)
        tf2({"A": rand_rgb(40, 40)}, np.random.default_rng(0), path="small.png")
    with pytest.raises(DataError, match="pair.png.*differ in size"):
        tf({"A": rand_rgb(40, 40), "B": rand_rgb(40, 42)}, path="pair.png")


# --------------------------------------------------------------------------------------------
# pyramid
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic", "lanczos", "area"])
def test_pyramid_shapes_and_order(method):
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    pyr = build_pyramid(x, 3, method)
    assert [tuple(p.shape) for p in pyr] == [(2, 3, 8, 12), (2, 3, 16, 24), (2, 3, 32, 48)]
    assert pyr[-1] is x
    assert all(p.dtype == x.dtype and p.device == x.device for p in pyr)
    # a constant image stays constant at every level
    c = torch.full((1, 1, 16, 16), 0.25)
    for p in build_pyramid(c, 3, method):
        assert torch.allclose(p, torch.full_like(p, 0.25), atol=1e-4)


def test_pyramid_values():
    x = torch.rand(1, 2, 16, 16)
    area = build_pyramid(x, 2, "area")[0]
    assert torch.allclose(area, torch.nn.functional.avg_pool2d(x, 2))
    assert torch.equal(build_pyramid(x, 3, "nearest")[0], x[..., ::4, ::4])
    assert build_pyramid(x, 1, "bicubic") == [x]
    assert pyramid_multiple(1) == 1 and pyramid_multiple(4) == 8
    # lanczos is antialiased: stripes finer than the coarse level's Nyquist limit are removed
    stripes = torch.sin(torch.arange(64) * 2 * np.pi / 3).expand(1, 1, 64, 64).contiguous()
    assert build_pyramid(stripes, 2, "lanczos")[0].abs().mean() < 0.1


def test_pyramid_labels_forced_nearest():
    lab = torch.randint(0, 5, (2, 1, 32, 32))
    for method in ["bilinear", "bicubic", "lanczos", "area"]:
        pyr = build_pyramid(lab, 3, method, is_label=True)
        assert [p.shape[-1] for p in pyr] == [8, 16, 32]
        for p in pyr:
            assert p.dtype == torch.int64 and set(p.unique().tolist()) <= set(range(5))
    onehot = torch.nn.functional.one_hot(lab[:, 0], 5).permute(0, 3, 1, 2).float()
    coarse = build_pyramid(onehot, 3, "bicubic", is_label=True)[0]
    assert set(coarse.unique().tolist()) <= {0.0, 1.0} and torch.all(coarse.sum(1) == 1)
    # (B, H, W) label tensors are accepted too
    assert build_pyramid(lab[:, 0], 2, "nearest", is_label=True)[0].shape == (2, 16, 16)


def test_pyramid_errors():
    with pytest.raises(ValueError, match="divisible by 4"):
        build_pyramid(torch.rand(1, 3, 30, 32), 3, "bilinear")
    with pytest.raises(ValueError, match="unknown pyramid method"):
        build_pyramid(torch.rand(1, 3, 32, 32), 2, "gauss")
    with pytest.raises(ValueError, match="floating-point"):
        build_pyramid(torch.zeros(1, 1, 8, 8, dtype=torch.long), 2, "bilinear")


# --------------------------------------------------------------------------------------------
# synthetic
# --------------------------------------------------------------------------------------------
def test_synthetic_determinism():
    a = make_scene(np.random.default_rng(5), 48, 6)
    b = make_scene(np.random.default_rng(5), 48, 6)
    c = make_scene(np.random.default_rng(6), 48, 6)
    for k in ("label", "instance", "contour", "photo"):
        assert np.array_equal(a[k], b[k])
    assert not np.array_equal(a["photo"], c["photo"])
    assert a["label"].dtype == np.uint8 and a["instance"].dtype == np.int32
    assert a["contour"].shape == (48, 48) and a["photo"].shape == (48, 48, 3)
    train0 = make_scene(scene_rng(0, "train", 0), 32)
    val0 = make_scene(scene_rng(0, "val", 0), 32)
    assert not np.array_equal(train0["photo"], val0["photo"])


def test_synthetic_structure():
    n_classes = 6
    means = {c: [] for c in range(1, n_classes)}
    for i in range(40):
        s = make_scene(np.random.default_rng(i), 64, n_classes)
        lab, inst, photo, contour = s["label"], s["instance"], s["photo"], s["contour"]
        assert lab.max() < n_classes and lab.max() >= 1
        assert np.array_equal(lab > 0, inst > 0)  # objects carry both a class and an id
        for k in np.unique(inst[inst > 0]):  # one class per instance
            assert len(np.unique(lab[inst == k])) == 1
        # every instance boundary is drawn in the contour image (black on white)
        b = np.zeros(inst.shape, bool)
        b[:, :-1] |= inst[:, :-1] != inst[:, 1:]
        b[:-1] |= inst[:-1] != inst[1:]
        assert (contour[b] == 0).all() and (contour == 255).mean() > 0.5
        assert set(np.unique(contour)) <= {0, 255}
        eroded = cv2.erode(lab, np.ones((3, 3), np.uint8))
        for c in range(1, n_classes):
            m = (lab == c) & (eroded == c)
            if m.sum() > 10:
                means[c].append(photo[m].mean(0))
    centres = {c: np.mean(v, 0) for c, v in means.items() if v}
    assert len(centres) == n_classes - 1
    # each class's mean photo colour is nearest to its own base colour: the label is predictive
    for c, m in centres.items():
        dists = {k: np.linalg.norm(m - class_colour(k)) for k in centres}
        assert min(dists, key=dists.get) == c


def test_synthetic_scenes_are_a_function_of_the_seed():
    # (a timed assertion stood here; speed is for benchmarks, a busy machine made it fail)
    a = make_scene(np.random.default_rng(7), 64)
    b = make_scene(np.random.default_rng(7), 64)
    c = make_scene(np.random.default_rng(8), 64)
    arrays = lambda s: [np.asarray(v) for v in (s.values() if isinstance(s, dict) else s)]  # noqa: E731
    assert all(np.array_equal(x, y) for x, y in zip(arrays(a), arrays(b)))
    assert any(not np.array_equal(x, y) for x, y in zip(arrays(a), arrays(c)))


def test_generate_synthetic_files_and_cache(tmp_path):
    root = generate_synthetic(tmp_path / "s", n_train=3, n_val=2, size=32, n_classes=4, seed=1)
    for split, n in (("train", 3), ("val", 2)):
        for folder in ("label", "instance", "contour", "photo"):
            assert [p.name for p in list_images(root / split / folder)] == [f"{i:05d}.png" for i in range(n)]
    assert Image.open(root / "train/instance/00000.png").mode.startswith("I;16")
    assert Image.open(root / "train/label/00000.png").mode == "L"
    assert Image.open(root / "train/contour/00000.png").mode == "L"
    assert Image.open(root / "train/photo/00000.png").mode == "RGB"
    meta = json.loads((root / "meta.json").read_text())
    assert meta["n_train"] == 3 and meta["seed"] == 1 and "complete" not in meta
    scene = make_scene(scene_rng(1, "val", 1), 32, 4)
    assert np.array_equal(read_image(root / "val/photo/00001.png"), scene["photo"])
    assert np.array_equal(read_image(root / "val/instance/00001.png", "label"), scene["instance"])
    mtime = (root / "train/photo/00000.png").stat().st_mtime_ns
    generate_synthetic(root, n_train=3, n_val=2, size=32, n_classes=4, seed=1)  # cached
    assert (root / "train/photo/00000.png").stat().st_mtime_ns == mtime
    generate_synthetic(root, n_train=2, n_val=1, size=32, n_classes=4, seed=2)  # new params
    assert len(list_images(root / "train/photo")) == 2
    assert json.loads((root / "meta.json").read_text())["seed"] == 2
    # never overwrite data that is not ours
    (tmp_path / "user/train").mkdir(parents=True)
    with pytest.raises(DataError, match="user"):
        generate_synthetic(tmp_path / "user", n_train=1, n_val=0, size=16)


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------
def item_shapes(item):
    return {k: (tuple(v.shape) if torch.is_tensor(v) else v) for k, v in item.items()}


def test_synthetic_label_dataset(synth_root):
    cfg = synth_cfg(synth_root, crop_size=24)
    assert input_channels(cfg) == 5 and input_read_mode(cfg) == "label"
    ds = build_dataset(cfg, "train", seed=0)
    assert len(ds) == 6 and ds.names[0] == "00000"
    item = ds[0]
    assert item_shapes(item) == {"A": (5, 24, 24), "B": (3, 24, 24), "label": (24, 24), "inst": (24, 24), "name": "00000"}
    assert item["label"].dtype == torch.int64 and item["inst"].dtype == torch.int64
    assert torch.all(item["A"].sum(0) == 1)
    assert torch.equal(item["A"].argmax(0), item["label"])
    assert item["B"].min() >= -1 and item["B"].max() <= 1
    val = build_dataset(cfg, "val")
    assert len(val) == 2
    cfg_inst = dataclasses.replace(cfg, use_instance=True)
    assert input_channels(cfg_inst) == 6
    it = build_dataset(cfg_inst, "val")[1]
    assert it["A"].shape == (6, 24, 24)
    assert torch.equal(it["A"][5].bool(), torch.from_numpy(instance_boundaries(it["inst"].numpy())))


def test_synthetic_contour_dataset(synth_root):
    cfg = synth_cfg(synth_root)
    cfg.synthetic.input = "contour"
    assert input_channels(cfg) == 1 and input_read_mode(cfg) == "grey"
    item = build_dataset(cfg, "train")[2]
    assert item_shapes(item) == {"A": (1, 32, 32), "B": (3, 32, 32), "name": "00002"}
    contour = read_image(synth_root / "train/contour/00002.png", "grey")
    # flips may apply; either way the input is exactly the contour drawing
    a = to_uint8(item["A"])
    assert np.array_equal(a, contour) or np.array_equal(a, contour[:, ::-1])


def test_synthetic_default_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("IMTRANSLATE_CACHE", str(tmp_path / "cache"))
    cfg = DataConfig(synthetic=SyntheticConfig(n_train=2, n_val=1, size=16, n_classes=3), crop_size=16)
    root = synthetic_root(cfg)
    assert str(root).startswith(str(tmp_path / "cache" / "synthetic"))
    assert len(build_dataset(cfg, "train")) == 2 and (root / "meta.json").is_file()


def make_folder_pairs(root, n=4, size=(32, 40), a_ext=".jpg", b_ext=".png"):
    for i in range(n):
        img = smooth_rgb(*size, seed=i)
        write_image(root / "A" / f"img{i}{a_ext}", 255 - img)
        write_image(root / "B" / f"img{i}{b_ext}", img)


def test_folder_pairs_dataset(tmp_path):
    make_folder_pairs(tmp_path / "train", n=4)
    make_folder_pairs(tmp_path / "val", n=2)
    cfg = DataConfig(dataset="folders", root=str(tmp_path), crop_size=24)
    ds = build_dataset(cfg, "train")
    assert len(ds) == 4 and ds.names == ["img0", "img1", "img2", "img3"]
    assert item_shapes(ds[1]) == {"A": (3, 24, 24), "B": (3, 24, 24), "name": "img1"}
    # A and B cropped identically: A is the negative of B (up to JPEG error)
    it = ds[1]
    assert (it["A"] + it["B"]).abs().mean() < 0.08
    assert len(build_dataset(cfg, "val")) == 2
    grey = dataclasses.replace(cfg, input_kind="grey", output_channels=1)
    it = build_dataset(grey, "val")[0]
    assert it["A"].shape == (1, 24, 24) and it["B"].shape == (1, 24, 24)
    assert input_channels(grey) == 1
    with pytest.raises(ConfigError, match="output_channels"):
        build_dataset(dataclasses.replace(cfg, output_channels=2), "train")


def test_dataset_epochs_and_workers(tmp_path):
    make_folder_pairs(tmp_path, n=4, size=(48, 48))
    cfg = DataConfig(dataset="folders", root=str(tmp_path), crop_size=16, val_fraction=0)
    ds = build_dataset(cfg, "train", seed=7)
    first = [ds[i]["B"] for i in range(4)]
    assert all(torch.equal(ds[i]["B"], first[i]) for i in reversed(range(4)))  # order-independent
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i]["B"], first[i]) for i in range(4))
    ds.set_epoch(0)
    loader0 = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)
    loader2 = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    b0, b2 = list(loader0), list(loader2)
    assert b0[0]["A"].shape == (2, 3, 16, 16) and b0[0]["name"] == ["img0", "img1"]
    assert all(torch.equal(x["B"], y["B"]) for x, y in zip(b0, b2))


def test_aligned_dataset(tmp_path):
    for i in range(3):
        a, b = smooth_rgb(32, 32, seed=i), smooth_rgb(32, 32, seed=10 + i)
        write_image(tmp_path / "train" / f"ab{i}.png", np.concatenate([a, b], 1))
    cfg = DataConfig(dataset="aligned", root=str(tmp_path), crop_size=0, flip=False)
    ds = build_dataset(cfg, "train")
    assert len(ds) + len(build_dataset(cfg, "val")) == 3
    it = ds[0]
    assert item_shapes(it)["A"] == (3, 32, 32)
    idx = int(it["name"][2:])
    assert np.array_equal(to_uint8(it["A"]), smooth_rgb(32, 32, seed=idx))
    assert np.array_equal(to_uint8(it["B"]), smooth_rgb(32, 32, seed=10 + idx))
    swapped = build_dataset(dataclasses.replace(cfg, direction="BtoA"), "train")[0]
    assert torch.equal(swapped["A"], it["B"]) and torch.equal(swapped["B"], it["A"])
    grey = build_dataset(dataclasses.replace(cfg, input_kind="grey"), "train")[0]
    assert grey["A"].shape == (1, 32, 32)
    write_image(tmp_path / "train" / "odd.png", rand_rgb(32, 63))
    ds = build_dataset(dataclasses.replace(cfg, val_fraction=0), "train")
    with pytest.raises(DataError, match="odd.png.*odd width"):
        ds[ds.names.index("odd")]


def make_labelmap(root, n=3, size=32, n_classes=4, inst=True, value_at_00=None):
    rng = np.random.default_rng(0)
    for i in range(n):
        lab = np.kron(rng.integers(0, n_classes, (4, 4)), np.ones((size // 4, size // 4), int)).astype(np.uint8)
        if value_at_00 is not None and i == 0:
            lab[:4, :4] = value_at_00
        write_image(root / "A" / f"s{i}.png", lab)
        write_image(root / "B" / f"s{i}.jpg", smooth_rgb(size, size, seed=i))
        if inst:
            ids = np.kron(np.arange(16).reshape(4, 4), np.ones((size // 4, size // 4), int)).astype(np.uint16)
            write_image(root / "I" / f"s{i}.png", ids)


def test_labelmap_dataset_dont_care_and_boundaries(tmp_path):
    make_labelmap(tmp_path, n=3, value_at_00=255)
    cfg = DataConfig(dataset="labelmap", root=str(tmp_path), n_classes=4, dont_care=255, inst_dir="I",
                     use_instance=True, crop_size=0, flip=False, val_fraction=0)
    assert input_channels(cfg) == 5
    ds = build_dataset(cfg, "train")
    it = ds[0]
    assert item_shapes(it) == {"A": (5, 32, 32), "B": (3, 32, 32), "label": (32, 32), "inst": (32, 32), "name": "s0"}
    onehot, edges = it["A"][:4], it["A"][4]
    assert torch.all(onehot[:, :4, :4] == 0)  # don't care -> all-zero vector
    assert torch.all(onehot[:, 4:, 4:].sum(0) == 1)
    assert it["label"][0, 0] == 255
    # instance blocks are 8x8: boundaries at columns/rows 7 and 8
    assert edges[0, 7] == 1 and edges[0, 8] == 1 and edges[0, 3] == 0 and edges[3, 3] == 0
    assert int(it["inst"].max()) == 15
    # encode_input is exactly what the dataset does (the predictor relies on it)
    raw = read_image(tmp_path / "A/s0.png", input_read_mode(cfg))
    inst = read_image(tmp_path / "I/s0.png", "label")
    assert torch.equal(encode_input(raw, cfg, inst=inst), it["A"])
    # without instance maps, inst is the label map and the boundary comes from it
    cfg2 = dataclasses.replace(cfg, inst_dir="", dont_care=-1)
    with pytest.raises(DataError, match="s0.png.*outside 0..3"):
        build_dataset(cfg2, "train")[0]


def test_encode_input_kinds():
    rgb = rand_rgb(8, 8)
    cfg = DataConfig(dataset="folders", root="x", input_kind="rgb")
    assert torch.equal(encode_input(rgb, cfg), to_tensor(rgb))
    assert encode_input(rgb[:, :, 0], cfg).shape == (3, 8, 8)
    grey = dataclasses.replace(cfg, input_kind="grey")
    assert encode_input(rgb, grey).shape == (1, 8, 8)
    lab = dataclasses.replace(cfg, input_kind="label", n_classes=3)
    out = encode_input(np.array([[0, 1], [2, 2]]), lab)
    assert out.shape == (3, 2, 2) and out[2, 1, 1] == 1


def test_splits(tmp_path):
    make_folder_pairs(tmp_path / "flat", n=10)
    cfg = DataConfig(dataset="folders", root=str(tmp_path / "flat"), val_fraction=0.2, crop_size=16)
    tr, va = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert len(tr) == 8 and len(va) == 2 and not set(tr.names) & set(va.names)
    assert build_dataset(cfg, "val").names == va.names  # deterministic
    assert len(build_dataset(dataclasses.replace(cfg, max_items=3), "train")) == 3
    tiny = dataclasses.replace(cfg, val_fraction=0.01)
    assert len(build_dataset(tiny, "val")) == 1  # at least one held out
    make_folder_pairs(tmp_path / "other", n=3)
    vr = dataclasses.replace(cfg, val_root=str(tmp_path / "other"))
    assert len(build_dataset(vr, "train")) == 10 and len(build_dataset(vr, "val")) == 3
    recs = build_dataset(cfg, "train").records
    assert holdout_split(recs[:1], 0.5) == (recs[:1], [])


# --------------------------------------------------------------------------------------------
# check_dataset
# --------------------------------------------------------------------------------------------
def test_check_dataset_ok(tmp_path, synth_root):
    make_folder_pairs(tmp_path, n=4)
    s = check_dataset(DataConfig(dataset="folders", root=str(tmp_path), crop_size=32))
    assert s["train"] + s["val"] == 4 and s["min_size"] == (32, 40) and s["input_channels"] == 3
    s = check_dataset(synth_cfg(synth_root))
    assert s["train"] == 6 and s["val"] == 2 and set(s["label_values"]) <= set(range(5))


def test_check_empty_and_missing_folder(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    cfg = DataConfig(dataset="folders", root=str(tmp_path))
    with pytest.raises(DataError, match="A.*no input images"):
        check_dataset(cfg)
    with pytest.raises(DataError, match="nowhere.*not found"):
        check_dataset(dataclasses.replace(cfg, root=str(tmp_path / "nowhere")))
    with pytest.raises(DataError, match="Targets.*not found"):
        write_image(tmp_path / "A/x.png", rand_rgb(8, 8))
        check_dataset(dataclasses.replace(cfg, b_dir="Targets"))


def test_check_unmatched(tmp_path):
    make_folder_pairs(tmp_path, n=3)
    write_image(tmp_path / "A/lonely.png", rand_rgb(32, 40))
    cfg = DataConfig(dataset="folders", root=str(tmp_path), crop_size=16)
    with pytest.raises(DataError, match="lonely.png.*no partner") as e:
        check_dataset(cfg)
    assert "1 input file" in str(e.value)
    (tmp_path / "A/lonely.png").unlink()
    write_image(tmp_path / "B/orphan.png", rand_rgb(32, 40))
    with pytest.raises(DataError, match="orphan.png.*no partner"):
        check_dataset(cfg)


def test_check_unreadable(tmp_path):
    make_folder_pairs(tmp_path, n=3)
    truncate(tmp_path / "B/img1.png", 0.3)
    with pytest.raises(DataError, match="img1.png.*truncated"):
        check_dataset(DataConfig(dataset="folders", root=str(tmp_path), crop_size=16))


def test_check_label_values(tmp_path):
    make_labelmap(tmp_path, n=3, inst=False, value_at_00=9)
    cfg = DataConfig(dataset="labelmap", root=str(tmp_path), n_classes=4, crop_size=16)
    with pytest.raises(DataError, match=r"s0.png.*\[9\].*n_classes=4"):
        check_dataset(cfg)
    assert check_dataset(dataclasses.replace(cfg, dont_care=9))["label_values"] == [0, 1, 2, 3, 9]


def test_check_size_mismatch(tmp_path):
    make_folder_pairs(tmp_path, n=3)
    write_image(tmp_path / "B/img2.png", rand_rgb(32, 41))
    with pytest.raises(DataError, match="img2.*40x32.*img2.png is 41x32"):
        check_dataset(DataConfig(dataset="folders", root=str(tmp_path), crop_size=16))


def test_check_odd_aligned_width(tmp_path):
    write_image(tmp_path / "ok.png", rand_rgb(16, 32))
    write_image(tmp_path / "wonky.png", rand_rgb(16, 33))
    with pytest.raises(DataError, match="wonky.png.*odd width"):
        check_dataset(DataConfig(dataset="aligned", root=str(tmp_path), crop_size=16))


def test_check_too_small_for_crop(tmp_path):
    make_folder_pairs(tmp_path, n=2)
    write_image(tmp_path / "A/tiny.png", rand_rgb(20, 20))
    write_image(tmp_path / "B/tiny.png", rand_rgb(20, 20))
    cfg = DataConfig(dataset="folders", root=str(tmp_path), crop_size=24)
    with pytest.raises(DataError, match="tiny.png.*smaller than data.crop_size=24"):
        check_dataset(cfg)
    assert check_dataset(dataclasses.replace(cfg, load_size=24))["train"] >= 1  # resizing first fixes it


# --------------------------------------------------------------------------------------------
# make_pairs
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data as skdata

    src = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        img = getattr(skdata, name)()
        small = cv2.resize(img, (img.shape[1] // 8, img.shape[0] // 8), interpolation=cv2.INTER_AREA)
        write_image(src / f"{name}.jpg", small)
    return src


@pytest.mark.parametrize("kind", ["contours", "grey", "downscale", "degrade"])
def test_make_pairs(photos, tmp_path, kind):
    n = make_pairs(photos, tmp_path / "out", kind, size=32, scale=4, seed=1, progress=False)
    assert n == 3
    a_files, b_files = list_images(tmp_path / "out/A"), list_images(tmp_path / "out/B")
    assert [p.stem for p in a_files] == [p.stem for p in b_files] == ["astronaut", "chelsea", "coffee"]
    for a_path, b_path in zip(a_files, b_files):
        b = read_image(b_path)
        assert min(b.shape[:2]) == 32
        a = read_image(a_path, "rgb")
        assert a.shape == b.shape
        if kind == "contours":
            g = read_image(a_path, "grey")
            assert set(np.unique(g)) == {0, 255} and (g == 255).mean() > 0.5
        elif kind == "grey":
            assert Image.open(a_path).mode == "L"
        else:
            assert 0 < np.abs(a.astype(int) - b).mean() < 60
    if kind == "degrade":
        meta = json.loads((tmp_path / "out/pairs.json").read_text())
        assert set(meta["degrade"]) == {"astronaut", "chelsea", "coffee"}
        make_pairs(photos, tmp_path / "again", kind, size=32, seed=1, progress=False)
        assert np.array_equal(read_image(tmp_path / "out/A/coffee.png"), read_image(tmp_path / "again/A/coffee.png"))
    # the result is a valid folders dataset
    s = check_dataset(DataConfig(dataset="folders", root=str(tmp_path / "out"), crop_size=32,
                                 input_kind="grey" if kind in ("contours", "grey") else "rgb"))
    assert s["train"] + s["val"] == 3


def test_make_pairs_bad_files(tmp_path, synth_root):
    src = tmp_path / "src"
    for i in range(2):
        write_image(src / f"p{i}.png", read_image(synth_root / f"train/photo/0000{i}.png"))
    (src / "junk.png").write_text("nope")
    with pytest.raises(DataError, match="junk.png"):
        make_pairs(src, tmp_path / "out", "grey", progress=False)
    with pytest.warns(UserWarning, match="junk.png"):
        assert make_pairs(src, tmp_path / "out2", "downscale", scale=2, skip_bad=True, progress=False) == 2
    with pytest.raises(DataError, match="empty"):
        (tmp_path / "empty").mkdir()
        make_pairs(tmp_path / "empty", tmp_path / "out3", "grey", progress=False)
    with pytest.raises(ValueError):
        make_pairs(src, tmp_path / "out4", "cartoon")
