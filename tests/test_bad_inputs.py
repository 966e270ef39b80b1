"""Every row of docs/RELIABILITY.md that can be exercised: the real command line given a bad
input or a fault, and what the user must see (exit status, one ``error:`` line naming the file
and the problem, no traceback).

Most rows run ``imtranslate.cli.main([...])`` in this process (fast); a few run
``python -m imtranslate`` in a real process (the entry point itself, Ctrl-C, kill -9). The web
rows post to the real app through FastAPI's TestClient. To add a row: add the fault to the
table in docs/RELIABILITY.md, then a ``Row`` below (or a test of its own when it needs a real
process), with the row's name as its id.
"""
from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_overrides
from imtranslate.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


# ------------------------------------------------------------------------------------------------
# the bad files, made once: tiny checkpoints written straight from untrained tasks (no training)
# ------------------------------------------------------------------------------------------------
def _checkpoint(tmp: Path, name: str, overrides: list[str]) -> Path:
    from imtranslate.tasks import load_config
    from imtranslate.tasks import get_task
    from imtranslate.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = load_config(None, overrides)
    return save_checkpoint(tmp / f"{name}.safetensors", get_task(cfg.task)(cfg, "cpu"), 0)


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    """Namespace of paths: checkpoints, good and bad pictures, folders, an existing plain file."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    ns = type("Files", (), {})()
    ns.tmp = tmp
    ns.label_ckpt = _checkpoint(tmp, "labels", tiny_overrides("multires", tmp))  # label-map inputs
    ns.contour_ckpt = _checkpoint(tmp, "contours", tiny_overrides("pix2pix", tmp, **{"data.synthetic.input": "contour"}))
    ns.style_ckpt = _checkpoint(tmp, "styleswap", [
        "task=styleswap", "data.dataset=unpaired", f"data.root={tmp}", f"data.style_root={tmp}",
        "model.vgg_weights=random", "model.encoder_layer=relu2_1", "model.ngf=4", "model.depth=3",
        "train.device=cpu"])
    rng = np.random.default_rng(0)
    pic = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    d = tmp / "pics"
    d.mkdir()
    Image.fromarray(pic).save(d / "photo.png")
    Image.fromarray(pic).save(d / "photo.jpg", quality=90)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "label.png")
    Image.fromarray(np.full((32, 32), 200, np.uint8)).save(d / "label_200.png")  # class 200 of 6
    Image.fromarray(pic).save(d / "colour_label.png")
    (d / "zero.png").write_bytes(b"")
    jpg = (d / "photo.jpg").read_bytes()
    (d / "cut_header.jpg").write_bytes(jpg[:300])  # cut inside the JPEG header
    png = (d / "photo.png").read_bytes()
    (d / "cut_data.png").write_bytes(png[: len(png) // 2])
    (d / "notes.png").write_text("not a picture at all")
    ns.pics = d
    (tmp / "empty_dir").mkdir()
    ns.frames = tmp / "frames"  # a 3-frame video as a frame folder
    ns.frames.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(pic, i, axis=1)).save(ns.frames / f"{i:03d}.png")
    (tmp / "not_a_video.mp4").write_bytes(b"\x00garbage" * 100)
    ns.file = tmp / "existing.txt"
    ns.file.write_text("a file where a folder should be")
    torch.save({"w": torch.zeros(2)}, tmp / "weights.pth")
    (tmp / "zero.safetensors").write_bytes(b"")
    (tmp / "garbage.safetensors").write_bytes(b"not a checkpoint at all")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp / "plain.safetensors"))
    data = tmp / "pairs"  # a paired dataset for `data check`, broken per row
    for side in "AB":
        (data / side).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(pic).save(data / side / f"{i:02d}.png")
    (data / "B" / "02.png").unlink()
    ns.pairs = data
    return ns


# ------------------------------------------------------------------------------------------------
# rows run in this process: argv -> exit 2, one `error:` line naming `name` and saying `words`
# ------------------------------------------------------------------------------------------------
@dataclass
class Row:
    id: str
    argv: Callable  # (files) -> list of arguments
    name: Callable  # (files) -> what the message must name (a path or an option)
    words: tuple  # what it must say, each one in the message (case-insensitive)


def _tr(ckpt, *inputs, out=None):
    return lambda f: ["translate", str(getattr(f, ckpt)), *[str(i(f)) for i in inputs],
                      "-o", str(out(f) if out else f.tmp / "out"), "--quiet"]


P = lambda name: (lambda f: f.pics / name)  # noqa: E731 - a picture of the fixture

ROWS = [
    # -- input pictures
    Row("input file missing", _tr("label_ckpt", lambda f: f.pics / "gone.png"), P("gone.png"), ("no such file",)),
    Row("zero-byte picture", _tr("contour_ckpt", P("zero.png")), P("zero.png"), ("empty", "0 bytes")),
    Row("jpeg cut in its header", _tr("contour_ckpt", P("cut_header.jpg")), P("cut_header.jpg"),
        ("truncated or corrupt",)),
    Row("picture cut in its data", _tr("contour_ckpt", P("cut_data.png")), P("cut_data.png"),
        ("truncated or corrupt",)),
    Row("not a picture", _tr("contour_ckpt", P("notes.png")), P("notes.png"), ("not a readable image",)),
    Row("folder without pictures", _tr("contour_ckpt", lambda f: f.tmp / "empty_dir"), lambda f: f.tmp / "empty_dir",
        ("holds no images",)),
    Row("two inputs with one name", _tr("contour_ckpt", P("photo.png"), P("photo.jpg")), P("photo.jpg"),
        ("same name",)),
    Row("label map out of range", _tr("label_ckpt", P("label_200.png")), P("label_200.png"),
        ("outside 0..5", "n_classes")),
    Row("colour picture as label map", _tr("label_ckpt", P("colour_label.png")), P("colour_label.png"),
        ("colour image",)),
    # -- checkpoints
    Row("checkpoint missing", lambda f: ["translate", str(f.tmp / "no.safetensors"), str(f.pics), "-o", str(f.tmp)],
        lambda f: f.tmp / "no.safetensors", ("not found",)),
    Row("checkpoint garbage", lambda f: ["translate", str(f.tmp / "garbage.safetensors"), str(f.pics), "-o",
                                         str(f.tmp)], lambda f: f.tmp / "garbage.safetensors", ("not a readable",)),
    Row("checkpoint zero bytes", lambda f: ["translate", str(f.tmp / "zero.safetensors"), str(f.pics), "-o",
                                            str(f.tmp)], lambda f: f.tmp / "zero.safetensors", ("empty", "0 bytes")),
    Row("checkpoint is a .pth pickle", lambda f: ["translate", str(f.tmp / "weights.pth"), str(f.pics), "-o",
                                                  str(f.tmp)], lambda f: f.tmp / "weights.pth",
        ("pytorch pickle", "imtranslate weights convert", "without running its pickle")),
    Row("safetensors without imtranslate metadata",
        lambda f: ["translate", str(f.tmp / "plain.safetensors"), str(f.pics), "-o", str(f.tmp)],
        lambda f: f.tmp / "plain.safetensors", ("not an imtranslate checkpoint",)),
    Row("styleswap checkpoint given to translate", _tr("style_ckpt", P("photo.png")), lambda f: "stylize",
        ("inverse network",)),
    Row("translation checkpoint given to stylize",
        lambda f: ["stylize", str(f.pics / "photo.png"), "--style", str(f.pics / "photo.png"), "--inverse",
                   str(f.contour_ckpt), "-o", str(f.tmp / "out"), "--quiet"],
        lambda f: f.contour_ckpt, ("not a styleswap",)),
    # -- output paths
    Row("translate -o an existing file", _tr("contour_ckpt", P("photo.png"), out=lambda f: f.file),
        lambda f: f.file, ("not a folder",)),
    Row("translate -o where nothing can be made", _tr("contour_ckpt", P("photo.png"), out=lambda f: "/proc/x"),
        lambda f: "/proc/x", ("cannot write",)),
    Row("translate -o below a file", _tr("contour_ckpt", P("photo.png"), out=lambda f: f.file / "sub"),
        lambda f: f.file / "sub", ("is a file, not a folder",)),
    Row("stylize -o an existing file",
        lambda f: ["stylize", str(f.pics / "photo.png"), "--style", str(f.pics / "photo.png"), "--inverse",
                   str(f.style_ckpt), "-o", str(f.file), "--quiet"], lambda f: f.file, ("not a folder",)),
    Row("video -o where nothing can be made",
        lambda f: ["video", str(f.contour_ckpt), str(f.frames), "-o", "/proc/x", "--quiet"], lambda f: "/proc/x",
        ("cannot write",)),
    Row("video -o a picture name",
        lambda f: ["video", str(f.contour_ckpt), str(f.frames), "-o", str(f.tmp / "o.png"), "--quiet"],
        lambda f: f.tmp / "o.png", ("image file name",)),
    Row("export --onnx a folder", lambda f: ["export", str(f.contour_ckpt), "--onnx", str(f.tmp)], lambda f: f.tmp,
        ("is a folder",)),
    Row("export --onnx where nothing can be made",
        lambda f: ["export", str(f.contour_ckpt), "--onnx", "/proc/x.onnx"], lambda f: "/proc", ("cannot write",)),
    Row("data pairs DST an existing file",
        lambda f: ["data", "pairs", str(f.pics), str(f.file), "--kind", "grey"], lambda f: f.file, ("not a folder",)),
    Row("data synthetic DST where nothing can be made",
        lambda f: ["data", "synthetic", "/proc/x", "--n-train", "2", "--n-val", "1", "--size", "32"],
        lambda f: "/proc/x", ("cannot write",)),
    Row("bench --json where nothing can be made", lambda f: ["bench", "--json", "/proc/x.json"], lambda f: "/proc",
        ("cannot write",)),
    # -- configs and data checks
    Row("unknown option", lambda f: ["train", "train.stepz=3", "--dry-run"], lambda f: "train.stepz",
        ("did you mean train.steps",)),
    Row("option of the wrong type", lambda f: ["train", "train.batch_size=many", "--dry-run"],
        lambda f: "train.batch_size", ("expected an integer",)),
    Row("unknown config name", lambda f: ["train", "no_such_config", "--dry-run"], lambda f: "no_such_config",
        ("not a built-in config",)),
    Row("data check: input without target",
        lambda f: ["data", "check", "task=pix2pix", "data.dataset=folders", f"data.root={f.pairs}",
                   "data.crop_size=32"], lambda f: "02", ("B",)),
    # -- video input
    Row("not a video", lambda f: ["video", str(f.contour_ckpt), str(f.tmp / "not_a_video.mp4"), "-o",
                                  str(f.tmp / "o.mp4"), "--quiet"], lambda f: f.tmp / "not_a_video.mp4", ()),
    Row("label-map model given a video",
        lambda f: ["video", str(f.label_ckpt), str(f.frames), "-o", str(f.tmp / "o.mp4"), "--quiet"],
        lambda f: f.label_ckpt, ("label maps",)),
    # -- web server start-up
    Row("serve --port out of range", lambda f: ["serve", "--translate", str(f.contour_ckpt), "--port", "99999"],
        lambda f: "--port 99999", ("0 to 65535",)),
    Row("serve --translate a styleswap checkpoint",
        lambda f: ["serve", "--translate", str(f.style_ckpt), "--port", "0"], lambda f: f.style_ckpt,
        ("styleswap", "--inverse")),
    Row("serve with nothing to serve", lambda f: ["serve", "--port", "0"], lambda f: "--inverse",
        ("nothing to serve",)),
]


def check_one_error_line(code: int, err: str, name, words) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, (code, err)
    line = lines[0]
    assert str(name) in line, line
    for w in words:
        assert w.lower() in line.lower(), (w, line)
    return line


@pytest.fixture
def no_server(monkeypatch):
    """A serve row that (wrongly) got as far as serving fails instead of blocking the test run."""
    uvicorn = pytest.importorskip("uvicorn")

    def started(*args, **kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", started)
    monkeypatch.setattr(uvicorn.Server, "run", started)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_gives_one_line(row, f, capsys, no_server):
    code = main(row.argv(f))
    out, err = capsys.readouterr()
    check_one_error_line(code, err, row.name(f), row.words)
    assert "http://" not in out  # no page address for a server that never started


def test_serve_on_a_busy_port_fails_before_printing_the_address(f, capsys, no_server):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["serve", "--translate", str(f.contour_ckpt), "--port", str(port)])
    out, err = capsys.readouterr()
    check_one_error_line(code, err, f"port {port}", ("already in use",))
    assert "http://" not in out


# ------------------------------------------------------------------------------------------------
# the real entry point, in a real process
# ------------------------------------------------------------------------------------------------
def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "imtranslate", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_entry_point_output_path_error_is_one_line(f):
    p = _cli("translate", f.contour_ckpt, f.pics / "photo.png", "-o", f.file, "--quiet")
    out, err = p.communicate(timeout=120)
    check_one_error_line(p.returncode, err, f.file, ("not a folder",))


def _wait_for_checkpoint(proc, ckpt: Path, newer_than: float = 0.0, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (ckpt.exists() and ckpt.stat().st_mtime > newer_than):
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) before writing a checkpoint: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within the time limit")
        time.sleep(0.1)


def test_ctrl_c_then_kill_9_then_resume(tmp_path):
    """Ctrl-C: a checkpoint at the step reached, the resume command, exit 130. kill -9: the
    last complete checkpoint stays readable and the run resumes from it (bit-identical resume
    is tests/test_train.py::test_resume_gives_identical_losses)."""
    from imtranslate.train.checkpoint import read_meta

    over = tiny_overrides("multires", tmp_path, steps=100000) + ["train.ckpt_every=2", "train.log_every=1000"]
    run_dir = tmp_path / "runs" / "0001-multires"
    last = run_dir / "checkpoints" / "last.safetensors"

    p = _cli("train", *over)
    _wait_for_checkpoint(p, last)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "SIGINT at step" in err and f"--resume {run_dir}" in err
    stopped = int(err.split("SIGINT at step ")[1].split(":")[0])
    assert read_meta(last)["step"] == stopped  # the checkpoint is of the step the message names

    p = _cli("train", "--resume", run_dir, "train.steps=100000")
    _wait_for_checkpoint(p, last, newer_than=last.stat().st_mtime)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    step = read_meta(last)["step"]  # complete and readable: the atomic rename never shows a half file
    assert step > stopped

    p = _cli("train", "--resume", run_dir, f"train.steps={step + 1}")
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err[-2000:]
    assert f"resumed from {last} at step {step}" in err
    assert read_meta(last)["step"] == step + 1


# ------------------------------------------------------------------------------------------------
# web uploads: the real app through TestClient
# ------------------------------------------------------------------------------------------------
def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (a "decompression bomb" needs no pixel data to be refused)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(f):
    pytest.importorskip("fastapi")
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from fastapi.testclient import TestClient
    from imtranslate.infer.predictor import Predictor
    from imtranslate.web.app import Limits, create_app

    return TestClient(create_app(None, Predictor.from_checkpoint(f.contour_ckpt, device="cpu"),
                                 limits=Limits(max_mb=0.05, max_pixels=5000)))


def _multipart(name: str, data: bytes, boundary: str = "imtranslate-test") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


UPLOADS = [  # id, file name, bytes, status, words in the error
    ("upload over the byte limit", "big.png", b"\x89PNG" + os.urandom(60_000), 413, ("big.png", "MB")),
    ("upload with too many pixels", "wide.png", _png(np.zeros((50, 120, 3), np.uint8)), 413, ("wide.png", "pixels")),
    ("decompression bomb", "bomb.png", _png_header_only(20000, 20000), 413,
     ("bomb.png", "400,000,000 pixels", "limit")),
    ("upload not a picture", "notes.txt", b"hello, not a picture", 415, ("notes.txt",)),
    ("upload of a refused type", "anim.gif", b"GIF89a" + b"\x00" * 40, 415, ("anim.gif",)),
    ("upload cut short", "cut.png", _png(np.full((30, 30, 3), 99, np.uint8))[:60], 400, ("cut.png", "truncated")),
    ("upload empty", "void.png", b"", 400, ("void.png", "empty")),
]


@pytest.mark.parametrize("name, data, status, words", [u[1:] for u in UPLOADS], ids=[u[0] for u in UPLOADS])
def test_bad_upload_is_refused_with_its_reason(client, name, data, status, words):
    res = client.post("/api/translate", files={"image": (name, data)})
    assert res.status_code == status, res.text
    for w in words:
        assert w in res.json()["error"], (w, res.json())


def test_chunked_upload_over_the_limit_names_its_size(client):
    # no content-length header: the middleware cannot refuse it early; the size comes from the parser
    body = _multipart("chunked.png", b"\x89PNG" + b"\x00" * 300_000)
    res = client.post("/api/translate", content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                      headers={"content-type": "multipart/form-data; boundary=imtranslate-test"})
    assert res.status_code == 413, res.text
    assert "chunked.png: 0.3 MB is more than the 0.05 MB upload limit" in res.json()["error"]
