"""ONNX export: every task's checkpoint exports with dynamic sizes and matches onnxruntime."""
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from conftest import tiny_overrides  # noqa: E402
from imtranslate.cli import main  # noqa: E402
from imtranslate.data.pyramid import downscale  # noqa: E402
from imtranslate.infer.export import conv_downscale, export_onnx  # noqa: E402
from imtranslate.infer.tiling import probe_input  # noqa: E402
from imtranslate.infer.predictor import Predictor  # noqa: E402

#: largest |onnxruntime - predictor| allowed, about 4x the largest seen (float32 rounding of two
#: kernel libraries, measured on the 3x150x97 input below): 8.9e-8 pix2pix, 3.5e-6 pix2pixHD,
#: 4.1e-6 multires; the library's own check allows 1e-3
PARITY = {"pix2pix": 5e-7, "pix2pixhd": 1.5e-5, "multires": 1.5e-5}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One tiny trained checkpoint per task (the multires one mid-schedule: 2 of 3 levels)."""
    out = {}
    for task in ("pix2pix", "pix2pixhd", "multires"):
        root = tmp_path_factory.mktemp(task)
        assert main(["train", *tiny_overrides(task, root, steps=2)]) == 0
        out[task] = next((root / "runs").glob("*/checkpoints/last.safetensors"))
    return out


@pytest.mark.parametrize("task", ["pix2pix", "pix2pixhd", "multires"])
def test_export_matches_onnxruntime_at_two_sizes(task, checkpoints, tmp_path):
    import onnxruntime as ort

    path = tmp_path / f"{task}.onnx"
    res = export_onnx(checkpoints[task], path, cluster=1 if task == "pix2pixhd" else 0, log=lambda m: None)
    shapes = [s for s, _ in res["checks"]]
    assert len(shapes) == 2 and shapes[0] != shapes[1]
    assert any(h != w for _, _, h, w in shapes)  # non-square
    assert all(d <= 1e-3 for _, d in res["checks"]), res["checks"]
    assert all(d <= PARITY[task] for _, d in res["checks"]), res["checks"]
    # dynamic: a third size and batch run too, and keep their size
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    c = shapes[0][1]
    A = torch.cat([probe_input(c, 150, 97, True, seed=k) for k in range(3)]).numpy()
    out = s.run(None, {"A": A})[0]
    assert out.shape == (3, 3, 150, 97) and np.isfinite(out).all()
    # parity with the predictor, checked here rather than trusted to the library's own 1e-3 check
    pred = Predictor.from_checkpoint(checkpoints[task], device="cpu", batch_size=1)
    want = pred.translate_tensor(torch.from_numpy(A), tile=0, cluster=1 if task == "pix2pixhd" else 0).numpy()
    err = float(np.abs(out - want).max())
    assert err <= PARITY[task], err


def test_export_cli_prints_difference_and_fails_above_tolerance(checkpoints, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    assert main(["export", str(checkpoints["multires"]), "--onnx", str(path)]) == 0
    text = capsys.readouterr().out
    assert "max abs difference" in text and path.exists()
    bad = tmp_path / "bad.onnx"
    assert main(["export", str(checkpoints["pix2pix"]), "--onnx", str(bad), "--tolerance", "1e-12"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bad.onnx" in err and "Traceback" not in err
    assert not bad.exists() and not list(tmp_path.glob("bad.onnx*"))  # nothing unchecked left behind


@pytest.mark.parametrize("method", ["nearest", "area", "bilinear", "bicubic", "lanczos"])
def test_pyramid_convolutions_equal_the_training_pyramid(method):
    x = torch.randn(2, 3, 64, 48)
    for f in (2, 4, 8):
        assert (conv_downscale(x, f, method) - downscale(x, f, method)).abs().max() < 1e-5
