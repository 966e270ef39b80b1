"""The command line end to end: train -> translate -> eval, and errors that name the file."""
import numpy as np
import pytest
from PIL import Image

from conftest import tiny_overrides
from imtranslate.cli import main


def _train(tmp_path, task="multires", steps=2, extra=()):
    assert main(["train", *tiny_overrides(task, tmp_path, steps), *extra]) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    return runs[-1]


def test_train_translate_eval(tmp_path, capsys):
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
