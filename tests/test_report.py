"""Tests for imtranslate.report (HTML report writing, metrics.jsonl reading)."""
from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from imtranslate.errors import DataError
from imtranslate.report import load_metrics_jsonl, write_report


class _Collector(HTMLParser):
    """Records tags, checks that every non-void element is closed in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.imgs, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}>, open: {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Collector:
    c = _Collector()
    c.feed(page)
    c.close()
    return c


def _rows(n=3, size=64, untrained=True):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        row = {
            "name": f"scene_{i:03d}",
            "input": rng.integers(0, 256, (size, size), dtype=np.uint8),  # grey
            "output": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "target": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        }
        if untrained:
            row["untrained"] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        rows.append(row)
    return rows


def _curves():
    steps = np.arange(0, 500, 10)
    return {
        "loss_G": [(int(s), float(2.0 * np.exp(-s / 200) + 0.05 * np.sin(s))) for s in steps],
        "loss_D": [(int(s), float(0.7 + 0.05 * np.cos(s))) for s in steps],
        "loss_G_L1": [(0, 1.0), (10, float("nan")), (20, 0.8)],  # non-finite points are skipped
    }


VAL = [
    {"step": 100, "l1": 0.21, "psnr": 14.25, "ssim": 0.4012},
    {"step": 200, "l1": 0.12, "psnr": 19.87, "ssim": 0.6543},
    {"step": 300, "l1": 0.13, "psnr": 19.5, "ssim": 0.6401},
]


def test_write_report_full(tmp_path):
    out = write_report(
        tmp_path / "sub" / "report.html",
        title="multires <on> facades",
        rows=_rows(),
        curves=_curves(),
        val_history=VAL,
        summary={
            "held-out PSNR": {"untrained": 9.8123, "trained": 21.4367},
            "held-out SSIM": 0.7123,
            "steps": 5000,
            "task": "multires",
        },
    )
    assert out == tmp_path / "sub" / "report.html" and out.is_file()
    page = out.read_text(encoding="utf-8")
    parsed = _parse(page)
    assert page.startswith("<!DOCTYPE html>")
    assert parsed.errors == [] and parsed.stack == []
    # the title is escaped, summary numbers are shown as written
    assert "multires &lt;on&gt; facades" in page and "<on>" not in page
    for text in ("9.81", "21.44", "0.7123", "5000", "multires", "untrained", "trained"):
        assert text in page, text
    # 3 rows x 4 image columns + one losses plot + one validation plot
    example_imgs = [i for i in parsed.imgs if i.get("class") == "ex"]
    plot_imgs = [i for i in parsed.imgs if i.get("class") == "plot"]
    assert len(example_imgs) == 12
    assert len(plot_imgs) == 2
    assert page.count("<img") == 14
    # every image is an embedded PNG; 64-px examples are enlarged (nearest) to 192 px
    for img in parsed.imgs:
        assert img["src"].startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(example_imgs[0]["src"].split(",", 1)[1])))
    assert decoded.size == (192, 192)
    assert example_imgs[0]["width"] == "192"
    assert "image-rendering: pixelated" in page
    # no external assets
    assert not re.search(r'(src|href)="(?!data:)', page)
    # validation table: every step and value, best PSNR row highlighted
    assert "19.87" in page and "0.6543" in page and "14.25" in page
    best = re.search(r'<tr class="best">(.*?)</tr>', page).group(1)
    assert ">200<" in best
    for name in ("scene_000", "scene_002", "input", "target"):
        assert name in page


def test_write_report_upscales_nearest(tmp_path):
    tiny = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    rows = [{"name": "checker", "input": tiny, "output": tiny, "target": tiny}]
    page = write_report(tmp_path / "r.html", title="t", rows=rows, curves={}, val_history=[],
                        summary={}, image_width=8).read_text()
    src = _parse(page).imgs[0]["src"].split(",", 1)[1]
    a = np.asarray(Image.open(io.BytesIO(base64.b64decode(src))))
    assert a.shape == (8, 8)
    assert set(np.unique(a)) == {0, 255}  # no interpolated greys
    assert (a[:4, :4] == 0).all() and (a[:4, 4:] == 255).all()


def test_write_report_minimal_and_partial(tmp_path):
    page = write_report(tmp_path / "r.html", title="empty run", rows=[], curves={},
                        val_history=[], summary={}).read_text()
    parsed = _parse(page)
    assert parsed.errors == [] and "<img" not in page
    assert "No example images" in page and "No validation results" in page
    # "untrained" only on some rows: the column exists, missing cells are dashes
    rows = _rows(2, size=16, untrained=False)
    rows[0]["untrained"] = rows[0]["output"]
    rows[1]["metrics"] = {"psnr": 23.456}
    page = write_report(tmp_path / "r2.html", title="x", rows=rows, curves={},
                        val_history=[], summary={}).read_text()
    assert page.count("<img") == 7 and "untrained model" in page and "23.46" in page


def test_write_report_rejects_float_images(tmp_path):
    rows = [{"name": "a", "input": np.zeros((8, 8, 3), np.float32),
             "output": np.zeros((8, 8, 3), np.uint8), "target": np.zeros((8, 8, 3), np.uint8)}]
    with pytest.raises(ValueError, match="uint8"):
        write_report(tmp_path / "r.html", title="t", rows=rows, curves={}, val_history=[],
                     summary={})


def _write_jsonl(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_load_metrics_jsonl_round_trip(tmp_path):
    curves = {"loss_G": [(10, 0.9), (20, 0.7), (30, 0.65)], "loss_D": [(10, 0.5), (20, 0.4), (30, 0.45)]}
    records = []
    for i in range(3):
        step = curves["loss_G"][i][0]
        records.append({"step": step, "kind": "train", "loss_G": curves["loss_G"][i][1],
                        "loss_D": curves["loss_D"][i][1], "note": "text is ignored"})
        if step == 20:
            records.append({"step": 20, "kind": "val", **{k: v for k, v in VAL[0].items() if k != "step"}})
    records.append({"step": 30, "kind": "val", "l1": 0.1, "psnr": 20.0, "ssim": 0.7})
    records.append({"step": 30, "kind": "val", "lpips": 0.3})  # merged into the same entry
    records.append({"step": 30, "kind": "sample", "path": "x.png"})  # other kinds ignored
    path = tmp_path / "metrics.jsonl"
    _write_jsonl(path, records, tail='{"step": 40, "kind": "tr')  # truncated last line
    got_curves, got_val = load_metrics_jsonl(path)
    assert got_curves == curves
    assert got_val == [
        {"step": 20, "l1": 0.21, "psnr": 14.25, "ssim": 0.4012},
        {"step": 30, "l1": 0.1, "psnr": 20.0, "ssim": 0.7, "lpips": 0.3},
    ]
    # and the loaded data renders
    page = write_report(tmp_path / "r.html", title="t", rows=[], curves=got_curves,
                        val_history=got_val, summary={}).read_text()
    assert page.count('class="plot"') == 2 and "LPIPS" in page


def test_load_metrics_jsonl_resumed_run(tmp_path):
    records = [{"step": s, "kind": "train", "loss": float(s)} for s in (10, 20, 30, 40)]
    records += [{"step": 20, "kind": "val", "psnr": 1.0}, {"step": 40, "kind": "val", "psnr": 2.0}]
    # resumed from the step-20 checkpoint: steps 30.. are logged again
    records += [{"step": 30, "kind": "train", "loss": -30.0}, {"step": 40, "kind": "val", "psnr": 3.0}]
    path = tmp_path / "m.jsonl"
    _write_jsonl(path, records)
    curves, val = load_metrics_jsonl(path)
    assert curves == {"loss": [(10, 10.0), (20, 20.0), (30, -30.0)]}
    assert val == [{"step": 20, "psnr": 1.0}, {"step": 40, "psnr": 3.0}]


def test_load_metrics_jsonl_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_metrics_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "loss": 1}\n{oops\n{"step": 2, "loss": 1}\n')
    with pytest.raises(DataError, match="line 2"):
        load_metrics_jsonl(bad)
    bad.write_text('{"loss": 1}\n')
    with pytest.raises(DataError, match="step"):
        load_metrics_jsonl(bad)
