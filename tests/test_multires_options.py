"""The multi-resolution translator's cheaper-step options (docs/BENCHMARKS.md §1) and the CPU-time budget."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import tiny_config, tiny_overrides
from imtranslate.checkpoint_file import read_meta
from imtranslate.errors import ConfigError
from imtranslate.tasks import load_config
from imtranslate.train.loop import train
from imtranslate.train.stepping import build_task

# losses of five steps (stages level0, level1, level2, joint, joint) of the tiny multires config
# as the step computed them before these options existed (same seeds and inputs as _run below)
BEFORE = [
    {"G_gan": 1.283878, "G_l1": 0.449006, "G_style": 220.272247, "loss_D": 0.824327, "loss_G": 2248.906982},
    {"G_gan": 1.332736, "G_l1": 0.437533, "G_style": 96.323029, "loss_D": 0.773076, "loss_G": 1008.316345},
    {"G_gan": 1.331888, "G_l1": 0.493535, "G_style": 62.758617, "loss_D": 0.788296, "loss_G": 678.271606},
    {"G_gan": 1.24966, "G_l1": 0.490368, "G_style": 58.16135, "loss_D": 0.726463, "loss_G": 631.900024},
    {"G_gan": 1.218376, "G_l1": 0.477286, "G_style": 43.26712, "loss_D": 0.672561, "loss_G": 481.618164},
]


def _task(tmp_path, extra=()):
    cfg = tiny_config("multires", tmp_path, steps=6, extra=["model.stage_steps=[1,1,1]", *extra])
    torch.manual_seed(0)
    return build_task(cfg, "cpu")


def _batch(task):
    g = torch.Generator().manual_seed(1)
    A = torch.rand(2, task.in_channels, 32, 32, generator=g) * 2 - 1
    B = torch.rand(2, task.out_channels, 32, 32, generator=g) * 2 - 1
    return {"A": A, "B": B}


def _run(task, steps=5):
    batch, logs = _batch(task), []
    for step in range(steps):
        task.on_step_start(step)
        logs.append(task.train_step(batch, step))
    return logs


#: the original step, reachable by config (the defaults are the cheaper step of docs/BENCHMARKS.md §1.2);
#: the tiny config's style_layers are [relu1_1, relu2_1]
ORIGINAL = ["model.style_layers_coarse=[]", "model.style_every=1"]


def test_the_original_step_is_reachable_by_config(tmp_path):
    for got, want in zip(_run(_task(tmp_path, ORIGINAL)), BEFORE):
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=2e-4), k


def test_options_at_their_off_values_are_the_original_step(tmp_path):
    off = ["model.discriminator=per_level", "model.style_layers_coarse=[relu1_1,relu2_1]", "model.style_every=1",
           "model.coarse_every=1", "model.n_enc_blocks_coarse=1"]  # tiny: n_enc_blocks=1, style to relu2_1
    a, b = _run(_task(tmp_path / "a", ORIGINAL)), _run(_task(tmp_path / "b", off))
    assert a == b


def test_default_step_is_the_cheaper_one(tmp_path):
    m = load_config(None, ["task=multires"]).model
    assert (m.style_layers, m.style_layers_coarse, m.style_every) == (
        ["relu1_1", "relu2_1", "relu3_1"], ["relu1_1", "relu2_1"], 2)
    logs = _run(_task(tmp_path))  # style every 2nd step: none on odd steps
    assert [rec["G_style"] > 0 for rec in logs] == [True, False, True, False, True]
    for k, v in BEFORE[0].items():  # step 0 (style on, one level) is the original step's
        assert logs[0][k] == pytest.approx(v, rel=2e-4), k


def test_coarse_style_layers_stay_within_the_style_layers(tmp_path):
    # the default coarse list [relu1_1, relu2_1] must not make a VGG deeper than style_layers
    task = _task(tmp_path, ["model.style_layers=[relu1_1]"])
    assert task.vgg_loss_coarse.style_layers == ("relu1_1",)
    assert task.vgg_loss_coarse is task.vgg_loss


@pytest.mark.parametrize("extra", [
    ["model.discriminator=shared"],
    ["model.style_layers_coarse=[relu1_1]"],
    ["model.style_every=2"],
    ["model.coarse_every=2"],
    ["model.n_enc_blocks_coarse=0"],
    ["model.discriminator=shared", "model.style_layers_coarse=[relu1_1]", "model.coarse_every=3",
     "model.style_every=2", "model.n_enc_blocks_coarse=0"],
], ids=lambda e: ",".join(x.split(".")[1] for x in e))
def test_each_option_trains(tmp_path, extra):
    task = _task(tmp_path, extra)
    G0 = {k: v.clone() for k, v in task.nets["G"].state_dict().items()}
    logs = _run(task)
    assert all(math.isfinite(v) for rec in logs for v in rec.values())
    assert any(not torch.equal(G0[k], v) for k, v in task.nets["G"].state_dict().items())  # it learned
    m = task.m
    for step, rec in enumerate(logs):
        active = min(step, 3) + 1 if step < 3 else 3
        levels = sorted(int(k[len("l1_level"):]) for k in rec if k.startswith("l1_level"))
        want = list(range(active)) if step % m.coarse_every == 0 else [active - 1]
        assert levels == want, (step, levels)
        if step % m.style_every:
            assert rec["G_style"] == 0.0  # no VGG pass this step
        else:
            assert rec["G_style"] > 0.0


def test_shared_d_judges_each_level_at_its_own_scale(tmp_path):
    task = _task(tmp_path, ["model.discriminator=shared"])
    assert "D" in task.nets and not any(k.startswith("D0") for k in task.nets)
    D = task.nets["D"]
    seen = []
    D.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    batch = _batch(task)
    task.set_stage(3)  # joint: every level active
    G = task.nets["G"]
    torch.manual_seed(5)
    task.train_step(batch, 10)
    # D phase: real and fake per level, then G phase: fake per level; coarsest (8 px) first
    sizes = [t.shape[-1] for t in seen]
    assert sizes == [8, 8, 16, 16, 32, 32, 8, 16, 32]
    A_pyr, B_pyr = task.pyramids(batch)
    for i in range(3):  # the real pair of level i is that level's own input and target, not a pooled copy
        assert torch.equal(seen[2 * i], torch.cat([A_pyr[i], B_pyr[i]], 1))
    assert G.active_levels == 3
    # one set of weights for every level, fitted to the coarsest (8 px needs a 1-layer PatchGAN)
    assert len(D.layers) - 2 == 1
    assert task.level_discriminators(3) == [D, D, D]


def test_coarse_style_layers_cut_the_coarse_vgg_shorter(tmp_path):
    task = _task(tmp_path, ["model.style_layers_coarse=[relu1_1]"])
    fine, coarse = task.vgg_loss.extractor.features, task.vgg_loss_coarse.extractor.features
    assert len(coarse) < len(fine)
    assert task.vgg_loss_coarse.style_layers == ("relu1_1",)


def test_lighter_coarse_encoders(tmp_path):
    full, light = _task(tmp_path / "a").nets["G"], _task(tmp_path / "b", ["model.n_enc_blocks_coarse=0"]).nets["G"]
    n = lambda net, i: sum(p.numel() for p in net.levels[i].encoder.parameters())  # noqa: E731
    assert n(light, 2) == n(full, 2)  # the finest level keeps its blocks
    assert n(light, 0) < n(full, 0) and n(light, 1) < n(full, 1)


def test_bad_option_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="coarse_every"):
        tiny_config("multires", tmp_path, extra=["model.coarse_every=0"])
    with pytest.raises(ConfigError, match="cpu_time_limit"):
        tiny_config("multires", tmp_path, extra=["train.cpu_time_limit=-1"])


def test_a_cpu_time_limit_ends_the_run_like_its_last_step(tmp_path):
    over = tiny_overrides("pix2pix", tmp_path, steps=500) + ["train.cpu_time_limit=0.000001", "train.ckpt_every=1000"]
    cfg = load_config(None, over)
    assert cfg.train.time_limit == 0  # a separate option: the wall-clock budget keeps its meaning
    run = train(cfg, log=lambda m: None)
    assert read_meta(run / "checkpoints" / "last.safetensors")["step"] == 1  # not 500
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("kind") == "val" and r["step"] == 1 for r in recs)


def test_torchvision_vgg19_converts_for_an_offline_machine(tmp_path):
    """What docs/BENCHMARKS.md §1 tells a user: torchvision's vgg19-dcbb9e9d.pth (a state dict with
    features.* and classifier.*) -> `imtranslate weights convert` -> model.vgg_weights=PATH."""
    from torchvision.models.vgg import cfgs, make_layers

    from imtranslate.cli import main as cli
    from imtranslate.nets.vgg import VGG19Features

    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}  # VGG-19's features
    state["classifier.0.weight"] = torch.zeros(4, 8)  # (the real classifier is 4096 x 25088: not read)
    torch.save(state, tmp_path / "vgg19-dcbb9e9d.pth")
    out = tmp_path / "weights" / "vgg19.safetensors"
    assert cli(["weights", "convert", str(tmp_path / "vgg19-dcbb9e9d.pth"), str(out)]) == 0
    vgg = VGG19Features(layers=("relu1_1", "relu2_1"), weights=out)
    assert torch.equal(vgg.features[0].weight, state["features.0.weight"])
    assert torch.equal(vgg.features[5].weight, state["features.5.weight"])  # conv2_1
    task = _task(tmp_path, [f"model.vgg_weights={out}"])
    assert torch.equal(task.vgg_loss.extractor.features[0].weight, state["features.0.weight"])
