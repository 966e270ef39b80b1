"""A train step of every task, and the staged schedules.

The first tests run over every registered task (``conftest.TASKS``) and assert what any task must
satisfy; a new task joins them by being registered and given a tiny config in conftest.py.
"""
import math

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import GAN_TASKS, PAIRED_TASKS, TASKS, TINY_MODEL
from imtranslate.tasks import get_task, task_names


def _task_and_batch(cfg):
    task_cls = get_task(cfg.task)
    task_cls.check_data(cfg)
    ds = task_cls.build_dataset(cfg, "train")
    batch = next(iter(DataLoader(ds, batch_size=2)))
    torch.manual_seed(0)
    return task_cls(cfg, "cpu"), batch


def test_every_registered_task_has_a_tiny_config(tmp_path):
    from conftest import tiny_overrides

    assert set(TASKS) == set(task_names()) and set(TASKS) <= set(TINY_MODEL)
    with pytest.raises(LookupError, match="no tiny config.*TINY_MODEL"):
        tiny_overrides("a_task_without_one", tmp_path)


@pytest.mark.parametrize("task_name", TASKS)
def test_train_step_updates_generator_and_discriminator(tiny, task_name):
    cfg = tiny(task_name)
    task, batch = _task_and_batch(cfg)
    task.on_step_start(0)
    before = {k: [p.detach().clone() for p in n.parameters()] for k, n in task.nets.items()}
    logs = task.train_step(task.to_device(batch), 0)
    assert logs and all(isinstance(v, float) and math.isfinite(v) for v in logs.values()), logs
    if task_name in GAN_TASKS:
        assert logs["loss_G"] > 0 and logs["loss_D"] > 0
    assert task.generator_key in task.nets
    for key, net in task.nets.items():
        changed = any(not torch.equal(a, b) for a, b in zip(before[key], net.parameters()))
        trainable = any(p.requires_grad for p in net.parameters())
        assert changed == trainable, f"{task_name}: net {key} changed={changed} trainable={trainable}"
    assert any(p.requires_grad for p in task.generator.parameters())  # the generator learns at step 0


@pytest.mark.parametrize("task_name", TASKS)
def test_validation_output_is_full_size(tiny, task_name):
    cfg = tiny(task_name)
    task, batch = _task_and_batch(cfg)
    task.finish(DataLoader(get_task(task_name).build_dataset(cfg, "train"), batch_size=2))  # e.g. pix2pixHD's clusters
    G = task.generator.eval()
    batch = task.to_device(batch)  # what the task trains on (e.g. stylesr makes its LR input here)
    with torch.no_grad():
        out = task.validation_translate(G, batch)
        metrics = task.validation_metrics(G, batch)
    n, _, h, w = batch["A"].shape
    scale = type(task).size_scale(G, cfg)  # output / input of the whole task (styleswap: picture to picture)
    assert out.shape == (n, cfg.data.output_channels, h * scale, w * scale) and torch.isfinite(out).all()
    if "B" in batch:
        assert out.shape == batch["B"].shape
    assert metrics and all(v.shape == (n,) and torch.isfinite(v).all() for v in metrics.values())


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
    task.finish(DataLoader(get_task("pix2pixhd").build_dataset(cfg, "train"), batch_size=2))
    ex = task.extra_tensors()
    assert ex["clusters"].shape[1:] == (3, cfg.model.feat_channels)
    G = task.generator.eval()
    with torch.no_grad():
        a = type(task).translate(G, batch["A"], cfg, ex, cluster=0)
        b = type(task).translate(G, batch["A"], cfg, ex, cluster=1)
    assert a.shape == batch["B"].shape
    assert not torch.allclose(a, b)  # another cluster, another look
