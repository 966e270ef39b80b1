"""Nothing lost, nothing silent: diverging runs stop and keep the good checkpoint, SIGTERM
checkpoints like Ctrl-C, resume overrides are checked, floats parse as people write them."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from imtranslate.checkpoint_file import load_tensors, read_meta
from imtranslate.cli import main as cli
from imtranslate.errors import CheckpointError, ConfigError, TrainingDiverged
from imtranslate.tasks import load_config
from imtranslate.train.loop import train

QUIET = dict(log=lambda m: None)
ROOT = Path(__file__).resolve().parents[1]


def _finite(path) -> bool:
    return all(bool(torch.isfinite(v).all()) for k, v in load_tensors(path).items()
               if v.is_floating_point() and k.startswith(("net/", "ema/")))


# ---- divergence ----------------------------------------------------------------------------------
def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    over = tiny_overrides("pix2pix", tmp_path, steps=2) + ["train.ckpt_every=1", "train.keep_ckpts=1"]
    run = train(load_config(None, over), **QUIET)
    last = run / "checkpoints" / "last.safetensors"
    good = last.read_bytes()
    # the same run continued with an absurd learning rate: its losses turn NaN/inf within steps
    rc = cli(["train", "--resume", str(run), "train.steps=40", "train.lr_g=1e30", "train.lr_d=1e30"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "training diverged at step" in err and "non-finite" in err and "last good checkpoint is kept" in err
    assert _finite(last)  # never overwritten by a broken one
    step = read_meta(last)["step"]
    assert step < 40
    for p in (run / "checkpoints").glob("step_*.safetensors"):  # the rotation kept only good ones
        assert _finite(p)
    if step == 2:
        assert last.read_bytes() == good


def test_the_python_api_raises_training_diverged(tmp_path):
    over = tiny_overrides("pix2pix", tmp_path, steps=30) + ["train.lr_g=1e30", "train.lr_d=1e30", "train.ckpt_every=100"]
    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+: non-finite loss"):
        train(load_config(None, over), **QUIET)


def test_a_predictor_refuses_non_finite_weights(tmp_path):
    from imtranslate.infer import Predictor
    from imtranslate.train.checkpoint import save_checkpoint
    from imtranslate.train.stepping import build_task

    task = build_task(load_config(None, tiny_overrides("pix2pix", tmp_path)), "cpu")
    with torch.no_grad():
        next(task.generator.parameters()).fill_(float("nan"))
    ckpt = save_checkpoint(tmp_path / "nan.safetensors", task, 1)
    with pytest.raises(CheckpointError, match="NaN/inf"):
        Predictor.from_checkpoint(ckpt, device="cpu")


# ---- signals -----------------------------------------------------------------------------------
def _wait_for(predicate, proc, timeout=120.0):
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None or time.time() - t0 > timeout:
            return False
        time.sleep(0.2)
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_write_a_checkpoint_and_say_how_to_resume(tmp_path, sig):
    over = [o for o in tiny_overrides("pix2pix", tmp_path, steps=100000) if not o.startswith("train.ckpt_every")]
    over += ["train.ckpt_every=100000"]  # only the signal can write a checkpoint here
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "imtranslate", "train", *over], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = list((tmp_path / "runs").glob("*/metrics.jsonl")) if (tmp_path / "runs").exists() else []

    def training():
        found = list((tmp_path / "runs").glob("*/metrics.jsonl")) if (tmp_path / "runs").exists() else []
        return bool(found) and '"kind": "train"' in found[0].read_text()

    try:
        assert _wait_for(training, proc), proc.communicate(timeout=30)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    assert f"{signal.Signals(sig).name} at step" in err and "checkpoint written" in err
    assert "imtranslate train --resume" in err and "Traceback" not in err
    run = next((tmp_path / "runs").iterdir())
    meta = read_meta(run / "checkpoints" / "last.safetensors")
    assert meta["step"] >= 1
    # and the run goes on from there
    done = train(None, resume=run, overrides=[f"train.steps={meta['step'] + 1}"], **QUIET)
    assert read_meta(done / "checkpoints" / "last.safetensors")["step"] == meta["step"] + 1
    del metrics


# ---- resume overrides -----------------------------------------------------------------------------
@pytest.fixture
def stopped_run(tmp_path):
    return train(load_config(None, tiny_overrides("pix2pix", tmp_path, steps=2)), **QUIET)


@pytest.mark.parametrize("override, message", [
    ("train.steps=-1", "train.steps must be at least 1"),
    ("train.steps=abc", "train.steps: expected an integer, got 'abc'"),
    ("train.steps=2", "is at step 2"),
    ("model.ngf=8", "model.ngf cannot change on --resume"),
    ("train.batch_size=4", "train.batch_size cannot change on --resume"),
    ("train.stpes=9", "cannot change on --resume"),
])
def test_resume_overrides_are_checked_and_never_break_the_checkpoint(stopped_run, capsys, override, message):
    last = stopped_run / "checkpoints" / "last.safetensors"
    before = last.read_bytes()
    assert cli(["train", "--resume", str(stopped_run), override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert last.read_bytes() == before
    # still resumable afterwards
    train(None, resume=stopped_run, overrides=["train.steps=3", "train.lr_g=1e-4"], **QUIET)
    meta = read_meta(last)
    assert meta["step"] == 3 and meta["config"]["train"]["lr_g"] == 1e-4


# ---- float syntax, run folders ----------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [("2e-4", 2e-4), ("1e30", 1e30), ("1.5E-3", 1.5e-3), ("3", 3.0)])
def test_floats_are_read_as_people_write_them(tmp_path, text, value):
    cfg = load_config(None, tiny_overrides("pix2pix", tmp_path) + [f"train.lr_g={text}"])
    assert cfg.train.lr_g == value and type(cfg.train.lr_g) is float
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(f"task: pix2pix\ntrain:\n  lr_d: {text}\n")
    assert load_config(yaml_file).train.lr_d == value
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(None, tiny_overrides("pix2pix", tmp_path) + ["train.lr_g=fast"])


def test_a_failed_data_check_leaves_no_run_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "A").mkdir(parents=True)
    (empty / "B").mkdir()
    rc = cli(["train", "pix2pix_synthetic", "data.dataset=folders", f"data.root={empty}",
              f"train.out_dir={tmp_path / 'runs'}", "train.progress=false", "train.tensorboard=false"])
    assert rc == 2 and "error:" in capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == []


# ---- fp16: steps the loss scaler skips are not divergence -------------------------------------------
from imtranslate.tasks import TASKS, register_task  # noqa: E402
from imtranslate.tasks.pix2pix import Pix2PixTask  # noqa: E402


class OverflowingPix2Pix(Pix2PixTask):
    """pix2pix whose first ``overflows`` steps behave as fp16 overflow does under a GradScaler:
    an inf loss, and the scaler skips the step (counted by the loop's stepper)."""

    name = "pix2pix_overflowing"
    overflows = 3

    def train_step(self, batch, step):
        logs = super().train_step(batch, step)
        if step < self.overflows:
            self.stepper.skipped_steps += 1
            logs["loss_G"] = float("inf")
        return logs


@pytest.fixture
def overflowing():
    register_task(OverflowingPix2Pix)
    yield OverflowingPix2Pix
    TASKS.pop(OverflowingPix2Pix.name)


def test_scaler_skipped_steps_are_not_divergence_but_a_long_run_of_them_is(tmp_path, overflowing):
    over = tiny_overrides("pix2pix", tmp_path, steps=6) + [f"task={overflowing.name}"]
    run = train(load_config(None, over), **QUIET)  # 3 skipped steps, then finite: trains to the end
    assert read_meta(run / "checkpoints" / "last.safetensors")["step"] == 6
    overflowing.overflows = 1000
    with pytest.raises(TrainingDiverged, match="25 steps in a row with inf/NaN gradients under fp16"):
        train(load_config(None, tiny_overrides("pix2pix", tmp_path, steps=40) + [f"task={overflowing.name}"]), **QUIET)
    overflowing.overflows = 3


# ---- a wall-clock budget ---------------------------------------------------------------------------
def test_a_time_limit_ends_the_run_like_its_last_step(tmp_path):
    over = tiny_overrides("pix2pix", tmp_path, steps=500) + ["train.time_limit=0.000001", "train.ckpt_every=1000"]
    run = train(load_config(None, over), **QUIET)
    last = run / "checkpoints" / "last.safetensors"
    meta = read_meta(last)
    assert meta["step"] == 1  # stopped at the first step past the budget, not at 500
    assert _finite(last)
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("kind") == "val" and r["step"] == 1 for r in recs)  # validated as a finished run
