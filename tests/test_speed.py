"""torch.compile, bf16 on the CPU and the bench rows of every method: how the maths runs, checked
against the eager fp32 path it replaces.

The compiled-step test uses the ``aot_eager`` backend: it runs the whole compile path (Dynamo
traces each net, AOTAutograd derives the joint forward/backward graph that inductor would turn
into kernels) but executes the traced ATen ops instead of generating C++. Inductor itself takes
35 s to compile even a two-layer net on this 2-core CPU, several minutes for a task's nets, which
is too slow for the suite; ``benchmarks/reference.py`` and ``imtranslate bench --variants compiled``
exercise it.
"""
import pytest
import torch
import torch._dynamo
from torch.utils.data import DataLoader

from conftest import tiny_overrides
from imtranslate import config as config_mod
from imtranslate.cli import main
from imtranslate.data import build_dataset, check_dataset
from imtranslate.errors import ConfigError
from imtranslate.train.stepping import build_task

BF16 = config_mod.cpu_bf16_supported()


def _steps(cfg, steps=2):
    check_dataset(cfg.data)
    batch = next(iter(DataLoader(build_dataset(cfg.data, "train", seed=0), batch_size=2)))
    torch.manual_seed(0)
    task = build_task(cfg, "cpu")
    batch = task.to_device(batch)
    logs = []
    for step in range(steps):
        task.on_step_start(step)
        torch.manual_seed(100 + step)
        logs.append(task.train_step(batch, step))
    return task, logs


def test_compiled_training_step_gives_the_eager_losses(tiny):
    """train.compile: the same losses and updated weights as the eager step (float tolerance), the
    nets' state dicts keep their keys (checkpoints unchanged), and the compile path really ran."""
    extra = ["model.dropout=false"]  # dropout draws differ between traced and eager RNG calls
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled, lc = _steps(tiny("pix2pix", extra=extra + ["train.compile=aot_eager"]))
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    eager, le = _steps(tiny("pix2pix", extra=extra))
    assert graphs >= 2, "no net was compiled"  # G and D at least
    assert all(n._compiled_call_impl is not None for n in compiled.nets.values())
    assert all(n._compiled_call_impl is None for n in eager.nets.values())
    for a, b in zip(lc, le):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
    for key in eager.nets:
        sc, se = compiled.nets[key].state_dict(), eager.nets[key].state_dict()
        assert sc.keys() == se.keys()
        for k in se:
            assert torch.allclose(sc[k].float(), se[k].float(), rtol=1e-3, atol=1e-5), f"{key}.{k}"
    torch._dynamo.reset()


def test_bf16_unsupported_cpu_says_so(tiny, monkeypatch):
    """train.amp=bf16 / --precision bf16 on a CPU without native bf16: one clear ConfigError."""
    monkeypatch.setattr(config_mod, "cpu_bf16_supported", lambda: False)
    with pytest.raises(ConfigError, match="no native bf16"):
        build_task(tiny("pix2pix", extra=["train.amp=bf16"]), "cpu")
    assert config_mod.autocast_dtype("fp16", "cpu") is None  # fp16 on a CPU: fp32, as before
    assert config_mod.autocast_dtype("none", "cpu") is None


@pytest.mark.skipif(not BF16, reason="this CPU has no native bf16")
@pytest.mark.may_skip("needs a CPU with avx512_bf16 / amx_bf16")
def test_bf16_training_on_cpu(tiny):
    """train.amp=bf16 on a CPU with bf16: the nets run in bf16 under the task's autocast, the
    losses are finite and near the fp32 ones."""
    task, lb = _steps(tiny("pix2pix", extra=["model.dropout=false", "train.amp=bf16"]))
    assert task.amp_dtype is torch.bfloat16
    with task.autocast():
        y = task.generator(torch.zeros(1, task.in_channels, 32, 32))
    assert y.dtype is torch.bfloat16
    _, lf = _steps(tiny("pix2pix", extra=["model.dropout=false"]))
    for a, b in zip(lb, lf):
        for k in a:
            assert torch.isfinite(torch.tensor(a[k])), k
            assert a[k] == pytest.approx(b[k], rel=0.1, abs=0.05), k


@pytest.mark.skipif(not BF16, reason="this CPU has no native bf16")
@pytest.mark.may_skip("needs a CPU with avx512_bf16 / amx_bf16")
def test_predictor_precision_and_compile(tiny, monkeypatch):
    """Predictor(precision="bf16") is within bf16 rounding of fp32; a compiled predictor gives the
    eager output; an unsupported CPU gets the ConfigError naming --precision."""
    from imtranslate.infer.predictor import Predictor

    cfg = tiny("pix2pix")
    torch.manual_seed(0)
    task = build_task(cfg, "cpu")
    A = torch.rand(2, task.in_channels, 40, 36) * 2 - 1
    ref = Predictor(task.generator, cfg).translate_tensor(A, tile=0)
    bf = Predictor(task.generator, cfg, precision="bf16").translate_tensor(A, tile=0)
    assert bf.dtype is torch.float32 and bf.shape == ref.shape
    assert 0 < (bf - ref).abs().max() < 0.1  # bf16 did run (not bit-equal) and stays close
    torch._dynamo.reset()
    comp = Predictor(task.generator, cfg, compile="aot_eager").translate_tensor(A, tile=0)
    assert torch.allclose(comp, ref, atol=1e-5)
    torch._dynamo.reset()
    monkeypatch.setattr(config_mod, "cpu_bf16_supported", lambda: False)
    with pytest.raises(ConfigError, match="--precision=bf16"):
        Predictor(task.generator, cfg, precision="bf16")


@pytest.mark.skipif(not BF16, reason="this CPU has no native bf16")
@pytest.mark.may_skip("needs a CPU with avx512_bf16 / amx_bf16")
def test_cli_bf16_train_translate_eval(tmp_path, capsys):
    """From the command line: train with train.amp=bf16, translate and eval with --precision bf16."""
    assert main(["train", *tiny_overrides("pix2pix", tmp_path, 2), "train.amp=bf16"]) == 0
    run = sorted((tmp_path / "runs").iterdir())[-1]
    ckpt = str(run / "checkpoints" / "last.safetensors")
    val = tmp_path / "synthetic" / "val"
    out = tmp_path / "out"
    assert main(["translate", ckpt, str(val / "label"), "-o", str(out), "--quiet", "--precision", "bf16"]) == 0
    assert len(list(out.glob("*.png"))) == 4
    assert main(["eval", ckpt, str(val), "--quiet", "--precision", "bf16"]) == 0
    assert "psnr" in capsys.readouterr().out


def test_bench_has_a_row_per_method_and_reports_compile_payback():
    """Every registered method has a bench configuration; the new rows run (shrunk), and a
    compiled row reports its compile time and pay-back against the eager row."""
    from imtranslate.bench import CONFIGS, payback, run_one
    from imtranslate.tasks import task_names

    assert set(task_names()) <= {task for task, *_ in CONFIGS.values()}, "a method without a bench row"
    for name in ("styleswap-256", "stylesr-256"):
        r = run_one(name, warmup=1, repeats=1, scale=0.125)
        assert r.train_s > 0 and r.infer_s > 0 and r.train_gflop > r.infer_gflop > 0, name
        assert r.extra["train_first_s"] >= r.extra["train_compile_s"] >= 0  # the first call, timed apart
    eager = {"train_s": 1.0, "infer_s": 0.2, "extra": {"train_compile_s": 0.5, "infer_compile_s": 0.0}}
    comp = {"train_s": 0.8, "infer_s": 0.25, "extra": {"train_compile_s": 60.5, "infer_compile_s": 10.0}}
    p = payback(comp, eager)
    assert p["train_compile_s"] == pytest.approx(60.0) and p["train_payback_steps"] == pytest.approx(300.0)
    assert p["infer_payback_steps"] == float("inf")  # slower once compiled: never pays back


def test_bench_variants_are_checked(monkeypatch):
    from imtranslate.bench import check_variants
    from imtranslate.errors import ImtranslateError

    with pytest.raises(ImtranslateError, match="unknown bench variant"):
        check_variants(["fast"], "cpu")
    monkeypatch.setattr(config_mod, "cpu_bf16_supported", lambda: False)
    with pytest.raises(ConfigError, match="no native bf16"):
        check_variants(["imtranslate", "bf16"], "cpu")
    assert check_variants(["imtranslate", "compiled"], "cpu") == ["imtranslate", "compiled"]
