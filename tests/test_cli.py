"""The command line end to end: train -> translate -> eval, and errors that name the file."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_overrides
from imtranslate.cli import main
from imtranslate.data.io import to_uint8
from imtranslate.infer import Predictor
from imtranslate.metrics import ssim


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _train(tmp_path, task="multires", steps=2, extra=()):
    assert main(["train", *tiny_overrides(task, tmp_path, steps), *extra]) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    return runs[-1]


def test_train_translate_eval(tmp_path, capsys, monkeypatch):
    run = _train(tmp_path)
    ckpt = run / "checkpoints" / "last.safetensors"
    val = tmp_path / "synthetic" / "val"
    labels = sorted((val / "label").glob("*.png"))
    # an odd-sized input must come back at its own size, not resized
    odd = tmp_path / "odd"
    odd.mkdir()
    arr = np.array(Image.open(labels[0]))[:27, :21]
    Image.fromarray(arr).save(odd / "odd.png")
    out = tmp_path / "out"
    assert main(["translate", str(ckpt), str(val / "label"), str(odd / "*.png"), "-o", str(out), "--quiet"]) == 0
    written = sorted(out.glob("*.png"))
    assert len(written) == len(labels) + 1
    assert Image.open(out / "odd.png").size == (21, 27)
    assert Image.open(written[0]).size == Image.open(labels[0]).size
    capsys.readouterr()
    assert main(["eval", str(ckpt), str(val), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "psnr" in text and "ssim" in text and "l1" in text
    assert f"{len(labels)} image pair(s)" in text
    assert "fid" in text and "skipped" in text  # no Inception weights here: said, not silently dropped
    # the numbers themselves, computed here from the predictor's outputs and the target photos
    printed = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\s+(l1|psnr|ssim)\s+(-?[\d.]+)$", text, re.M)}
    pred = Predictor.from_checkpoint(ckpt, device="cpu")
    l1s, psnrs, ssims = [], [], []
    for f in labels:
        y = ((pred.translate_tensor(pred.encode(f)[None])[0].permute(1, 2, 0).double() + 1) / 2).numpy()
        target = np.asarray(Image.open(val / "photo" / f.name).convert("RGB"), np.float64) / 255
        l1s.append(np.abs(y - target).mean())
        psnrs.append(10 * np.log10(1 / ((y - target) ** 2).mean()))
        ssims.append(float(ssim(torch.from_numpy(y).permute(2, 0, 1)[None] * 2 - 1,
                                torch.from_numpy(target).permute(2, 0, 1)[None] * 2 - 1)))
    assert printed["l1"] == pytest.approx(np.mean(l1s), abs=2e-4)
    assert printed["psnr"] == pytest.approx(np.mean(psnrs), abs=2e-4)
    assert printed["ssim"] == pytest.approx(np.mean(ssims), abs=2e-4)
    # --no-ema: the raw weights' numbers, and their pictures
    assert main(["eval", str(ckpt), str(val), "--quiet", "--no-ema"]) == 0
    raw_text = capsys.readouterr().out
    assert re.search(r"l1\s+([\d.]+)", raw_text).group(1) != re.search(r"l1\s+([\d.]+)", text).group(1)
    assert main(["translate", str(ckpt), str(val / "label"), "-o", str(tmp_path / "raw"), "--quiet", "--no-ema"]) == 0
    assert "net weights" in capsys.readouterr().out
    raw = Predictor.from_checkpoint(ckpt, device="cpu", use_ema=False)
    first = labels[0]
    assert np.array_equal(_pixels(tmp_path / "raw" / first.name), np.asarray(raw(first)))
    assert np.array_equal(_pixels(out / first.name), np.asarray(pred(first)))
    assert not np.array_equal(_pixels(tmp_path / "raw" / first.name), _pixels(out / first.name))
    # --suffix: the format follows the extension, the picture stays the same
    assert main(["translate", str(ckpt), str(first), "-o", str(tmp_path / "jpg"), "--quiet", "--suffix", ".jpg"]) == 0
    jpg = tmp_path / "jpg" / (first.stem + ".jpg")
    assert Image.open(jpg).format == "JPEG" and not (tmp_path / "jpg" / first.name).exists()
    assert np.abs(_pixels(jpg).astype(int) - _pixels(out / first.name)).mean() < 12
    # --norm-stats: a 64x64 input of an instance-norm net, in 32 px tiles under a budget that holds a
    # 32x32 pass but not a 64x64 one (a stated memory model, so the choice is the same on any machine):
    # exact streams the whole image's statistics, fast takes them from a half-size copy
    from imtranslate.infer import predictor as predictor_module
    from imtranslate.infer.tiling import SAFETY, MemoryModel

    monkeypatch.setattr(predictor_module.Predictor, "memory_model",
                        lambda self, **o: MemoryModel(0.0, 2**30 / (SAFETY * 2048), 3, "stated by the test"))
    monkeypatch.setattr(predictor_module, "memory_in_use", lambda device: 0)
    big = tmp_path / "big"
    big.mkdir()
    Image.fromarray(np.tile(np.array(Image.open(first)), (2, 2))).save(big / "big.png")
    tiles = ["--tile", "32", "--tile-overlap", "8", "--max-memory", "1"]
    for how, stats in (("exact", "stream"), ("fast", "shrunk")):
        assert main(["translate", str(ckpt), str(big), "-o", str(tmp_path / how), "--quiet", *tiles,
                     "--norm-stats", how]) == 0
        api = to_uint8(pred.translate_tensor(pred.encode(big / "big.png")[None], tile=32, overlap=8, max_memory=1,
                                             norm_stats=how)[0])
        assert pred.last_tiling.stats == stats
        assert np.array_equal(_pixels(tmp_path / how / "big.png"), api), how
    assert not np.array_equal(_pixels(tmp_path / "exact" / "big.png"), _pixels(tmp_path / "fast" / "big.png"))


def test_train_other_tasks_and_translate(tmp_path):
    for task in ("pix2pix", "pix2pixhd"):
        run = _train(tmp_path / task, task=task)
        out = tmp_path / task / "out"
        extra = ["--cluster", "1"] if task == "pix2pixhd" else []
        inst = ["--inst-dir", str(tmp_path / task / "synthetic" / "val" / "instance")] if task == "pix2pixhd" else []
        assert main(["translate", str(run / "checkpoints" / "last.safetensors"),
                     str(tmp_path / task / "synthetic" / "val" / "label"), "-o", str(out), "--quiet",
                     *extra, *inst]) == 0
        assert len(list(out.glob("*.png"))) == 4
        if task != "pix2pixhd":
            continue
        ckpt = run / "checkpoints" / "last.safetensors"
        labels = tmp_path / task / "synthetic" / "val" / "label"
        inst_dir = tmp_path / task / "synthetic" / "val" / "instance"
        first = sorted(labels.glob("*.png"))[0]
        pred = Predictor.from_checkpoint(ckpt, device="cpu")
        # --cluster K and --inst-dir: exactly the API's picture with that cluster and those instances
        assert np.array_equal(_pixels(out / first.name), np.asarray(pred(first, inst=inst_dir / first.name, cluster=1)))
        other = tmp_path / task / "out0"
        assert main(["translate", str(ckpt), str(first), "-o", str(other), "--quiet", "--cluster", "0",
                     "--inst-dir", str(inst_dir)]) == 0
        assert np.array_equal(_pixels(other / first.name), np.asarray(pred(first, inst=inst_dir / first.name, cluster=0)))
        assert not np.array_equal(_pixels(other / first.name), _pixels(out / first.name))  # another cluster, another look
        # instance maps that split every object down the middle: other boundaries, another picture
        split = tmp_path / task / "split"
        split.mkdir()
        inst = np.array(Image.open(inst_dir / first.name)).astype(np.int64)
        inst = inst * 2 + (np.arange(inst.shape[1]) >= inst.shape[1] // 2)[None, :]
        Image.fromarray(inst.astype(np.uint16)).save(split / first.name)
        with_split = tmp_path / task / "with_split"
        assert main(["translate", str(ckpt), str(first), "-o", str(with_split), "--quiet", "--cluster", "1",
                     "--inst-dir", str(split)]) == 0
        assert np.array_equal(_pixels(with_split / first.name), np.asarray(pred(first, inst=split / first.name, cluster=1)))
        assert not np.array_equal(_pixels(with_split / first.name), _pixels(out / first.name))


def test_resume_from_cli(tmp_path, capsys):
    run = _train(tmp_path, steps=2)
    assert main(["train", "--resume", str(run), "train.steps=3"]) == 0
    assert "resumed from" in capsys.readouterr().err


def _folders(tmp_path, n=3, size=32):
    root = tmp_path / "pairs"
    for sub in ("A", "B"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        for sub in ("A", "B"):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / sub / f"{i:02d}.png")
    return root


def _train_folders(tmp_path, root, extra=()):
    return main(["train", "task=pix2pix", "data.dataset=folders", f"data.root={root}", "data.crop_size=32",
                 "train.steps=1", "train.batch_size=1", "train.progress=false", "train.tensorboard=false",
                 f"train.out_dir={tmp_path / 'runs'}", "model.num_downs=5", "model.ngf=4", "model.ndf=4", *extra])


def test_folder_dataset_trains(tmp_path):
    assert _train_folders(tmp_path, _folders(tmp_path)) == 0


@pytest.mark.parametrize("breakage, words", [
    ("missing_b", "02"),
    ("truncated", "01.png"),
    ("empty", "A"),
    ("size", "00.png"),
])
def test_bad_data_fails_before_training_naming_the_file(tmp_path, capsys, breakage, words):
    root = _folders(tmp_path)
    if breakage == "missing_b":
        (root / "B" / "02.png").unlink()
    elif breakage == "truncated":
        data = (root / "A" / "01.png").read_bytes()
        (root / "A" / "01.png").write_bytes(data[: len(data) // 2])
    elif breakage == "empty":
        for p in (root / "A").iterdir():
            p.unlink()
    elif breakage == "size":
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "B" / "00.png")
    assert _train_folders(tmp_path, root) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and words in err and "Traceback" not in err
    assert not list((tmp_path / "runs").glob("*/checkpoints/*"))


def test_label_values_out_of_range(tmp_path, capsys):
    root = tmp_path / "labels"
    (root / "A").mkdir(parents=True)
    (root / "B").mkdir()
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(root / "A" / "x.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "B" / "x.png")
    code = main(["train", "task=pix2pix", "data.dataset=labelmap", f"data.root={root}", "data.n_classes=4",
                 "data.input_kind=label", "train.steps=1", f"train.out_dir={tmp_path / 'runs'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "x.png" in err and "n_classes" in err


def test_bad_option_and_checkpoint_messages(tmp_path, capsys):
    assert main(["train", "train.stepz=3"]) == 2
    assert "did you mean train.steps" in capsys.readouterr().err
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_text("hello")
    assert main(["translate", str(bogus), str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert "bogus.safetensors" in capsys.readouterr().err


def test_dry_run_and_tasks(tmp_path, capsys):
    assert main(["train", "multires_synthetic", "train.steps=5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "steps: 5" in out and "task: multires" in out
    assert main(["tasks"]) == 0
    listed = capsys.readouterr().out
    assert all(t in listed for t in ("multires", "pix2pix", "pix2pixhd"))


def test_data_tools(tmp_path, capsys):
    assert main(["data", "synthetic", str(tmp_path / "syn"), "--n-train", "4", "--n-val", "2", "--size", "32"]) == 0
    assert len(list((tmp_path / "syn" / "train" / "photo").glob("*.png"))) == 4
    assert main(["data", "pairs", str(tmp_path / "syn" / "train" / "photo"), str(tmp_path / "p"),
                 "--kind", "contours"]) == 0
    assert len(list((tmp_path / "p" / "A").iterdir())) == 4 == len(list((tmp_path / "p" / "B").iterdir()))
    assert main(["data", "check", "task=pix2pix", "data.dataset=folders", f"data.root={tmp_path / 'p'}",
                 "data.input_kind=grey", "data.crop_size=32"]) == 0
    assert "dataset OK" in capsys.readouterr().out


def test_demo_writes_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "held-out PSNR: untrained" in out
    html = (tmp_path / "demo" / "report.html").read_text()
    assert html.count("<img") >= 8


def test_stylize_flags_change_the_picture_as_the_api_does(tmp_path, capsys):
    """--fast, --optimize and --preserve-color each give the Stylizer's picture with that option,
    and not the default one."""
    from imtranslate.infer.stylize import Stylizer

    assert main(["train", *tiny_overrides("styleswap", tmp_path, steps=1)]) == 0
    ckpt = next((tmp_path / "runs").iterdir()) / "checkpoints" / "last.safetensors"
    content = tmp_path / "styledata" / "content" / "val" / "p1.png"
    style = tmp_path / "styledata" / "style" / "p0.png"
    st = Stylizer.from_checkpoint(ckpt, device="cpu")
    pic = _pixels(content)
    runs = {"plain": ([], {}), "fast": (["--fast"], {"fast": True}),
            "optimize": (["--optimize", "--steps", "2"], {"optimize": True, "steps": 2}),
            "color": (["--preserve-color"], {"preserve_color": True})}
    got = {}
    for name, (flags, options) in runs.items():
        out = tmp_path / f"out_{name}"
        assert main(["stylize", str(content), "--style", str(style), "--inverse", str(ckpt), "-o", str(out),
                     "--quiet", *flags]) == 0
        got[name] = _pixels(out / "p1.png")
        assert got[name].shape == pic.shape
        assert np.array_equal(got[name], np.asarray(st(pic, style, **options))), name
    for name in ("fast", "optimize", "color"):
        assert not np.array_equal(got[name], got["plain"]), f"--{name} did not change the picture"
