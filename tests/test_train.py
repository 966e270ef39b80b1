"""The training loop: checkpoints, predictors rebuilt from them, exact resume, EMA, learning-rate
policies, the random stream, Ctrl-C, and the README's Python quick start.

The tests that every task must pass run over ``TASKS`` (every registered task, through
``conftest.tiny_overrides``), so a new task joins them by being registered.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import PAIRED_TASKS, TASKS, tiny_overrides
from imtranslate.tasks import load_config
from imtranslate.errors import CheckpointError
from imtranslate.infer import Predictor
from imtranslate.train.checkpoint import load_tensors, read_meta
from imtranslate.train.ema import EMA
from imtranslate.train.loop import train


def _losses(run_dir):
    """step -> every scalar logged at that step (the timing left out)."""
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k != "images_per_s"} for r in rows if r["kind"] == "train"}


def _assert_same_checkpoints(a, b):
    """Every tensor (nets, EMA, optimiser moments, extras, RNG states) bit-identical, and the same header."""
    ta, tb = load_tensors(a), load_tensors(b)
    assert sorted(ta) == sorted(tb)
    assert any(k.startswith("ema/") for k in ta) and any(k.startswith("opt/") for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs between {a} and {b}"
    assert read_meta(a) == read_meta(b)


@pytest.mark.parametrize("task_name", TASKS)
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
        assert set(got[step]) == set(ref[step])
        for k in ref[step]:
            assert got[step][k] == ref[step][k], f"step {step} {k}: {got[step][k]} != {ref[step][k]}"
    # not only the losses: the state a predictor reads (EMA) and the next run resumes from
    _assert_same_checkpoints(full / "checkpoints" / "last.safetensors", resumed / "checkpoints" / "last.safetensors")


def test_ema_update_is_the_formula():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    ema = EMA(net, decay=0.9, start=2)
    for step, scale in ((0, 1.0), (1, 2.0), (2, 3.0), (3, 0.5)):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * scale)
            net[1].running_mean.add_(1.0)
        before = [p.clone() for p in ema.module.parameters()]
        ema.update(step)
        for e, b, p in zip(ema.module.parameters(), before, net.parameters()):
            expect = p if step < 2 else 0.9 * b + 0.1 * p  # before ``start`` the average is a copy
            assert torch.allclose(e, expect, rtol=0, atol=1e-6), step
        assert torch.equal(ema.module[1].running_mean, net[1].running_mean)  # buffers are copied
    assert not torch.equal(next(ema.module.parameters()), next(net.parameters()))
    assert not any(p.requires_grad for p in ema.module.parameters())


def _predictor_net(ckpt, task_name, use_ema=True):
    """The generator inside what a user loads from the checkpoint alone (a Predictor, for styleswap a Stylizer)."""
    if task_name == "styleswap":
        from imtranslate.infer.stylize import Stylizer

        st = Stylizer.from_checkpoint(ckpt, device="cpu", use_ema=use_ema)
        return st.inverse, st.source.split()[0]
    pred = Predictor.from_checkpoint(ckpt, device="cpu", optimize=False, use_ema=use_ema)
    return pred.G, pred.source


@pytest.mark.parametrize("task_name", TASKS)
def test_predictor_from_checkpoint_alone_matches_training_generator(tmp_path, task_name, monkeypatch):
    """The predictor rebuilt from the checkpoint alone holds the EMA weights; they are the EMA of the
    weights the run went through (not the raw ones); and it translates as the task itself would."""
    from imtranslate.tasks import get_task

    seen = []  # the generator's parameters at construction and at every update
    init, update = EMA.__init__, EMA.update

    def spy_init(self, net, decay=0.999, start=0):
        init(self, net, decay, start)
        seen.append((None, [p.detach().clone() for p in net.parameters()]))

    def spy_update(self, step):
        seen.append((step, [p.detach().clone() for p in self.net.parameters()]))
        update(self, step)

    monkeypatch.setattr(EMA, "__init__", spy_init)
    monkeypatch.setattr(EMA, "update", spy_update)
    cfg = load_config(None, tiny_overrides(task_name, tmp_path, steps=2) + ["train.ema_decay=0.8"])
    run = train(cfg, log=lambda m: None)
    ckpt = run / "checkpoints" / "last.safetensors"
    meta = read_meta(ckpt)
    assert meta["step"] == 2 and meta["task"] == task_name and meta["has_ema"]
    assert [s for s, _ in seen] == [None, 0, 1]

    G, source = _predictor_net(ckpt, task_name)
    assert source == "ema"
    key = meta["generator"]
    ema_sd, raw_sd = load_tensors(ckpt, f"ema/{key}/"), load_tensors(ckpt, f"net/{key}/")
    for k, v in G.state_dict().items():
        assert torch.equal(v, ema_sd[k]), k
    # the EMA computed here from the recorded weights: e = w0, then e = d * e + (1 - d) * w_t
    expect = [p.double() for p in seen[0][1]]
    for _, weights in seen[1:]:
        expect = [0.8 * e + 0.2 * w.double() for e, w in zip(expect, weights)]
    names = [n for n, _ in G.named_parameters()]
    for name, e in zip(names, expect):
        assert torch.allclose(ema_sd[name].double(), e, rtol=0, atol=1e-6), name
    # ... which is not the raw weights (those are what use_ema=False gives)
    assert any(not torch.allclose(ema_sd[n], raw_sd[n], rtol=0, atol=1e-6) for n in names)
    G_raw, source = _predictor_net(ckpt, task_name, use_ema=False)
    assert source == "net"
    for k, v in G_raw.state_dict().items():
        assert torch.equal(v, raw_sd[k]), k
    if task_name not in PAIRED_TASKS:
        return  # styleswap: the Stylizer against the task is tests/test_style_swap.py's round trip

    pred = Predictor.from_checkpoint(ckpt, device="cpu", optimize=False)
    # the same EMA weights put into a generator built by the task itself
    saved_cfg = pred.cfg
    task = get_task(task_name)(saved_cfg, "cpu")
    G = task.generator
    G.load_state_dict(load_tensors(ckpt, f"ema/{task.generator_key}/"))
    type(task).restore_generator_state(G, meta["generator_state"])
    G.eval()
    ds = get_task(task_name).build_dataset(saved_cfg, "val")
    A = task.to_device({"A": torch.stack([ds[i]["A"] for i in range(2)])})["A"]  # the task's memory format
    with torch.no_grad():
        expect = type(task).translate(G, A, saved_cfg, load_tensors(ckpt, "extra/"))
    got = pred(A)
    assert torch.equal(got, expect)
    # the inference rewrites (batch-norm folding) compute the same function
    fast = Predictor.from_checkpoint(ckpt, device="cpu")(A)
    assert torch.allclose(fast, expect, atol=1e-5)
    # and the raw (non-EMA) weights are available too, and translate differently
    raw = Predictor.from_checkpoint(ckpt, device="cpu", use_ema=False, optimize=False)
    assert raw.source == "net"
    assert not torch.equal(raw(A), got)


@pytest.mark.parametrize("task_name", TASKS)
def test_checkpoint_round_trip_restores_every_net_and_output(tmp_path, task_name):
    """A task saved and restored into a fresh one: the same weights, moments, and generator outputs."""
    from torch.utils.data import DataLoader

    from imtranslate.tasks import get_task
    from imtranslate.train.checkpoint import restore_training_state, save_checkpoint

    cfg = load_config(None, tiny_overrides(task_name, tmp_path, steps=2))
    task_cls = get_task(task_name)
    task_cls.check_data(cfg)
    loader = DataLoader(task_cls.build_dataset(cfg, "train"), batch_size=2)
    batch = next(iter(loader))
    torch.manual_seed(0)
    task = task_cls(cfg, "cpu")
    ema = EMA(task.generator, 0.5)
    for step in range(2):
        task.on_step_start(step)
        task.train_step(task.to_device(batch), step)
        ema.update(step)
    task.finish(loader)
    ckpt = save_checkpoint(tmp_path / "ck.safetensors", task, 2, ema)

    torch.manual_seed(123)  # another initialisation: everything must come from the file
    again = task_cls(cfg, "cpu")
    ema2 = EMA(again.generator, 0.5)
    assert restore_training_state(ckpt, again, ema2) == 2
    again.on_step_start(2)
    task.on_step_start(2)
    for key, net in task.nets.items():
        for (name, a), b in zip(net.state_dict().items(), again.nets[key].state_dict().values()):
            assert torch.equal(a, b), f"{key}.{name}"
    for a, b in zip(ema.module.state_dict().values(), ema2.module.state_dict().values()):
        assert torch.equal(a, b)
    for key, opt in task.optimizers.items():
        other = again.optimizers[key]
        params = [p for g in opt.param_groups for p in g["params"]]
        params2 = [p for g in other.param_groups for p in g["params"]]
        assert sum(p in opt.state for p in params) > 0
        for i, (p, q) in enumerate(zip(params, params2)):
            assert (p in opt.state) == (q in other.state), (key, i)
            for name, v in opt.state.get(p, {}).items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(other.state[q][name])), (key, i, name)
    for a, b in ((task.generator, again.generator), (ema.module, ema2.module)):
        a.eval(), b.eval()
        with torch.no_grad():
            out_a = task.validation_translate(a, task.to_device(batch))
            out_b = again.validation_translate(b, again.to_device(batch))
        assert torch.equal(out_a, out_b)


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


# --------------------------------------------------------------------------------------------
# learning-rate policies, the random stream
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy, expect", [
    # steps=100, decay from step 60 (lr_decay_start=0.6), step policy halves every 10 steps
    ("constant", {0: 1.0, 59: 1.0, 60: 1.0, 70: 1.0, 99: 1.0}),
    ("linear", {0: 1.0, 59: 1.0, 60: 1.0, 70: 0.75, 80: 0.5, 99: 0.025, 100: 0.0}),
    ("cosine", {0: 1.0, 60: 1.0, 70: 0.8535533905932737, 80: 0.5, 90: 0.14644660940672627, 100: 0.0}),
    ("step", {0: 1.0, 9: 1.0, 10: 0.5, 19: 0.5, 20: 0.25, 35: 0.125}),
])
def test_learning_rate_policies(tiny, policy, expect):
    from imtranslate.tasks import get_task

    cfg = tiny("pix2pix", steps=100, extra=[f"train.lr_policy={policy}", "train.lr_decay_start=0.6",
                                            "train.lr_step_every=10", "train.lr_g=0.004", "train.lr_d=0.001"])
    task = get_task("pix2pix")(cfg, "cpu")
    for step, factor in expect.items():
        task.set_lr(step)
        for key, base in (("G", 0.004), ("D", 0.001)):
            for g in task.optimizers[key].param_groups:
                assert g["lr"] == pytest.approx(base * factor, rel=1e-12, abs=1e-15), (policy, step, key)


def test_validation_and_sample_grids_do_not_shift_the_random_stream(tmp_path):
    """pix2pix draws dropout masks from the global RNG; validating (whose loader draws a seed from it)
    and writing image grids every step must leave the training losses and weights unchanged."""
    plain = train(load_config(None, tiny_overrides("pix2pix", tmp_path / "a", steps=4)), log=lambda m: None)
    busy_cfg = load_config(None, tiny_overrides("pix2pix", tmp_path / "b", steps=4)
                           + ["train.val_every=1", "train.image_every=1", "train.tensorboard=true"])
    busy = train(busy_cfg, log=lambda m: None)
    rows = [json.loads(l) for l in (busy / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "val"] == [0, 1, 2, 3, 4]
    assert list((busy / "tb").iterdir())  # the grids were written
    assert _losses(plain) == {s: {**r} for s, r in _losses(busy).items()}
    a = load_tensors(plain / "checkpoints" / "last.safetensors", "net/")
    b = load_tensors(busy / "checkpoints" / "last.safetensors", "net/")
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# Ctrl-C, the Python quick start
# --------------------------------------------------------------------------------------------
def test_ctrl_c_writes_a_checkpoint_and_says_how_to_resume(tmp_path, capsys):
    from imtranslate.cli import main

    over = tiny_overrides("pix2pix", tmp_path, steps=100_000) + ["train.ckpt_every=100000"]
    # a shell's background job inherits SIGINT ignored, and Python then keeps ignoring it: restore the default
    proc = subprocess.Popen([sys.executable, "-m", "imtranslate", "train", *over], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        metrics = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((tmp_path / "runs").glob("*/metrics.jsonl")) if (tmp_path / "runs").exists() else []
            if found and sum('"kind": "train"' in l for l in found[0].read_text().splitlines()) >= 2:
                metrics = found[0]
                break
            time.sleep(0.2)
        assert metrics is not None, "training did not log two steps within 120 s"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    run = metrics.parent
    ckpt = run / "checkpoints" / "last.safetensors"
    step = read_meta(ckpt)["step"]
    assert step >= 2
    assert re.search(rf"at step {step}[:;] checkpoint written", err), err[-2000:]
    assert f"imtranslate train --resume {run}" in err and "Traceback" not in err
    assert not list(run.glob("**/*.tmp"))
    capsys.readouterr()
    assert main(["train", "--resume", str(run), f"train.steps={step + 1}"]) == 0
    assert f"at step {step}" in capsys.readouterr().err
    assert read_meta(ckpt)["step"] == step + 1


def test_readme_python_quick_start(tmp_path, monkeypatch):
    """The README's Python block, run as written (500 steps cut to 2 and tiny nets by extra overrides)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"### Python\s+```python\n(.*?)```", readme, re.S).group(1)
    assert "imtranslate.train(" in block and "imtranslate.load(" in block
    monkeypatch.chdir(tmp_path)
    # the inputs the block names: a label map and a folder of them
    (tmp_path / "in").mkdir()
    label = np.random.default_rng(0).integers(0, 6, (24, 40)).astype(np.uint8)
    Image.fromarray(label).save(tmp_path / "label.png")
    Image.fromarray(label[:, :32]).save(tmp_path / "in" / "a.png")
    tiny = ["train.steps=2", "model.ngf=4", "model.ndf=4", "model.max_channels=16", "model.n_res_blocks=1",
            "model.vgg_weights=random", "model.stage_steps=[1,1,1]", "model.style_layers=[relu1_1]",
            "data.synthetic.n_train=8",
            "data.synthetic.n_val=2", "data.synthetic.size=32", "data.crop_size=32", "train.batch_size=2",
            "train.val_every=0", "train.image_every=0", "train.tensorboard=false", "train.progress=false",
            "train.device=cpu"]
    code = block.replace('["train.steps=500"]', repr(tiny))
    assert code != block, "the README's quick start no longer passes [\"train.steps=500\"]"
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    out = scope["out"]
    assert isinstance(out, Image.Image) and out.size == (40, 24) and out.mode == "RGB"  # PIL -> PIL, same size
    assert np.asarray(out).std() > 0
    assert Image.open(tmp_path / "out" / "a.png").size == (32, 24)
    assert (scope["run"] / "checkpoints" / "last.safetensors").is_file()
