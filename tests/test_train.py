"""The training loop: checkpoints, predictors rebuilt from them, exact resume."""
import json
import shutil

import pytest
import torch

from conftest import ALL_TASKS
from imtranslate.tasks import load_config
from imtranslate.errors import CheckpointError
from imtranslate.infer import Predictor
from imtranslate.train.checkpoint import read_meta
from imtranslate.train.loop import train
from conftest import tiny_overrides


def _losses(run_dir):
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["kind"] == "train"}


@pytest.mark.parametrize("task_name", ALL_TASKS)
def test_resume_gives_identical_losses(tmp_path, task_name):
    extra = ["train.lr_policy=linear", "train.lr_decay_start=0.0"]
    cfg = load_config(None, tiny_overrides(task_name, tmp_path, steps=6) + extra + ["train.ckpt_every=3"])
    full = train(cfg, run_dir=tmp_path / "full", log=lambda m: None)
    ref = _losses(full)
    assert sorted(ref) == [1, 2, 3, 4, 5, 6]

    # a run that stopped after step 3: its folder holds only the step-3 checkpoint
    part = tmp_path / "part" / "checkpoints"
    part.mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "step_00000003.safetensors", part / "last.safetensors")
    shutil.copy(full / "config.yaml", tmp_path / "part" / "config.yaml")
    resumed = train(None, resume=tmp_path / "part", log=lambda m: None)
    got = _losses(resumed)
    assert sorted(got) == [4, 5, 6]
    for step in (4, 5, 6):
        for k in ("loss_G", "loss_D"):
            assert got[step][k] == ref[step][k], f"step {step} {k}: {got[step][k]} != {ref[step][k]}"


@pytest.mark.parametrize("task_name", ALL_TASKS)
def test_predictor_from_checkpoint_alone_matches_training_generator(tmp_path, task_name):
    from imtranslate.data import build_dataset
    from imtranslate.tasks import get_task
    from imtranslate.train.checkpoint import load_tensors

    cfg = load_config(None, tiny_overrides(task_name, tmp_path, steps=2))
    run = train(cfg, log=lambda m: None)
    ckpt = run / "checkpoints" / "last.safetensors"
    meta = read_meta(ckpt)
    assert meta["step"] == 2 and meta["task"] == task_name

    pred = Predictor.from_checkpoint(ckpt, device="cpu", optimize=False)
    assert pred.source == "ema"
    # the same EMA weights put into a generator built by the task itself
    saved_cfg = pred.cfg
    task = get_task(task_name)(saved_cfg, "cpu")
    G = task.generator
    G.load_state_dict(load_tensors(ckpt, f"ema/{task.generator_key}/"))
    type(task).restore_generator_state(G, meta["generator_state"])
    G.eval()
    ds = build_dataset(saved_cfg.data, "val")
    A = task.to_device({"A": torch.stack([ds[i]["A"] for i in range(2)])})["A"]  # the task's memory format
    with torch.no_grad():
        expect = type(task).translate(G, A, saved_cfg, load_tensors(ckpt, "extra/"))
    got = pred(A)
    assert torch.equal(got, expect)
    # the inference rewrites (batch-norm folding) compute the same function
    fast = Predictor.from_checkpoint(ckpt, device="cpu")(A)
    assert torch.allclose(fast, expect, atol=1e-5)
    # and the raw (non-EMA) weights are available too
    assert Predictor.from_checkpoint(ckpt, device="cpu", use_ema=False).source == "net"


def test_checkpoint_is_written_atomically_and_pruned(tmp_path):
    cfg = load_config(None, tiny_overrides("pix2pix", tmp_path, steps=8) + ["train.ckpt_every=2", "train.keep_ckpts=2"])
    run = train(cfg, log=lambda m: None)
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert files == ["last.safetensors", "step_00000006.safetensors", "step_00000008.safetensors"]
    assert not list(run.glob("**/*.tmp"))


def test_bad_checkpoints_are_explained(tmp_path):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.safetensors"):
        Predictor.from_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        Predictor.from_checkpoint(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not an imtranslate checkpoint"):
        Predictor.from_checkpoint(other)


def test_dry_run_creates_nothing(tmp_path, capsys):
    cfg = load_config(None, tiny_overrides("multires", tmp_path))
    train(cfg, dry_run=True)
    out = capsys.readouterr().out
    assert "task: multires" in out and "n_levels: 3" in out
    assert not (tmp_path / "runs").exists()


def test_run_folders_are_numbered_and_hold_the_config(tmp_path):
    cfg = load_config(None, tiny_overrides("pix2pix", tmp_path, steps=1))
    a = train(cfg, log=lambda m: None)
    b = train(cfg, log=lambda m: None)
    assert a.name == "0001-pix2pix" and b.name == "0002-pix2pix"
    saved = load_config(b / "config.yaml")
    assert saved.train.steps == 1 and saved.task == "pix2pix"
