"""A train step of every task, and the staged schedules."""
import math

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import ALL_TASKS
from imtranslate.data import build_dataset, check_dataset
from imtranslate.tasks import get_task


def _task_and_batch(cfg):
    check_dataset(cfg.data)
    ds = build_dataset(cfg.data, "train", seed=0)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    torch.manual_seed(0)
    return get_task(cfg.task)(cfg, "cpu"), batch


@pytest.mark.parametrize("task_name", ALL_TASKS)
def test_train_step_updates_generator_and_discriminator(tiny, task_name):
    cfg = tiny(task_name)
    task, batch = _task_and_batch(cfg)
    task.on_step_start(0)
    before = {k: [p.detach().clone() for p in n.parameters()] for k, n in task.nets.items()}
    logs = task.train_step(task.to_device(batch), 0)
    assert logs and all(math.isfinite(v) for v in logs.values()), logs
    assert logs["loss_G"] > 0 and logs["loss_D"] > 0
    for key, net in task.nets.items():
        changed = any(not torch.equal(a, b) for a, b in zip(before[key], net.parameters()))
        trainable = any(p.requires_grad for p in net.parameters())
        assert changed == trainable, f"{task_name}: net {key} changed={changed} trainable={trainable}"


@pytest.mark.parametrize("task_name", ALL_TASKS)
def test_validation_output_is_full_size(tiny, task_name):
    cfg = tiny(task_name)
    task, batch = _task_and_batch(cfg)
    if task_name == "pix2pixhd":
        task.finish(DataLoader(build_dataset(cfg.data, "train"), batch_size=2))  # clusters for inference
    G = task.generator.eval()
    with torch.no_grad():
        out = task.validation_translate(G, task.to_device(batch))
    assert out.shape == batch["B"].shape and torch.isfinite(out).all()


def test_multires_stages_change_at_configured_steps(tiny):
    cfg = tiny("multires", steps=10, extra=["model.stage_steps=[2,3,1]"])
    task, batch = _task_and_batch(cfg)
    G = task.nets["G"]
    seen = []
    for step in range(10):
        task.on_step_start(step)
        seen.append((task.stage_at(step), G.active_levels))
    assert seen == [("level0", 1)] * 2 + [("level1", 2)] * 3 + [("level2", 3)] + [("joint", 3)] * 4
    # in stage level1 only level 1's modules learn; coarser levels are frozen
    task.on_step_start(2)
    level1 = {id(p) for p in G.level_parameters(1)}
    for p in G.parameters():
        assert p.requires_grad == (id(p) in level1)
    assert all(p.requires_grad for p in task.nets["D1"].parameters())
    assert not any(p.requires_grad for p in task.nets["D2"].parameters())
    logs = task.train_step(task.to_device(batch), 2)
    assert set(k for k in logs if k.startswith("l1_level")) == {"l1_level0", "l1_level1"}  # one loss per active level
    task.on_step_start(6)
    assert all(p.requires_grad for p in G.parameters())


def test_multires_stage_fraction_default(tiny):
    cfg = tiny("multires", steps=20, extra=["model.stage_steps=[]", "model.stage_fraction=0.1"])
    task = get_task("multires")(cfg, "cpu")
    assert [task.stage_at(s) for s in (0, 1, 2, 3, 4, 5, 6, 19)] == \
        ["level0", "level0", "level1", "level1", "level2", "level2", "joint", "joint"]


def test_pix2pixhd_global_then_local(tiny):
    cfg = tiny("pix2pixhd", steps=8, extra=["model.global_fraction=0.25", "model.fix_global_fraction=0.25"])
    task, batch = _task_and_batch(cfg)
    G = task.nets["G"]
    stages = []
    for step in range(8):
        task.on_step_start(step)
        stages.append((task.stage_at(step), G.active_enhancers))
    assert stages[:2] == [("global", 0)] * 2 and stages[2:4] == [("local", 1)] * 2 and stages[4] == ("joint", 1)
    task.on_step_start(0)
    logs = task.train_step(task.to_device(batch), 0)  # global stage trains at half resolution
    assert math.isfinite(logs["loss_G"])
    task.on_step_start(2)
    assert not any(p.requires_grad for p in G.global_net.parameters())
    assert all(p.requires_grad for p in G.enhancers.parameters())


def test_pix2pixhd_clusters_give_different_outputs(tiny):
    cfg = tiny("pix2pixhd", extra=["model.n_clusters=3"])
    task, batch = _task_and_batch(cfg)
    for step in range(2):
        task.on_step_start(step)
        task.train_step(task.to_device(batch), step)
    task.finish(DataLoader(build_dataset(cfg.data, "train"), batch_size=2))
    ex = task.extra_tensors()
    assert ex["clusters"].shape[1:] == (3, cfg.model.feat_channels)
    G = task.generator.eval()
    with torch.no_grad():
        a = type(task).translate(G, batch["A"], cfg, ex, cluster=0)
        b = type(task).translate(G, batch["A"], cfg, ex, cluster=1)
    assert a.shape == batch["B"].shape
    assert not torch.allclose(a, b)  # another cluster, another look
