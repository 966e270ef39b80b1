"""Training state in a checkpoint: everything a run needs to continue exactly where it stopped.

The file format (layout, atomic write, reading, rebuilding a generator) is
:mod:`imtranslate.checkpoint_file`; this module fills it from a task and the loop's state
(nets, EMA, optimisers, loss scaler, task state, RNG) and restores that state bit for bit.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..checkpoint_file import FORMAT, atomic_save, load_tensors, read_meta  # noqa: F401 - FORMAT re-exported
from ..config import to_dict
from ..errors import CheckpointError


def _flat_state(prefix: str, sd: dict) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v.detach().to("cpu").contiguous() for k, v in sd.items()}


def _optimizer_to_flat(key: str, opt: torch.optim.Optimizer):
    sd = opt.state_dict()
    tensors, small = {}, {}
    for idx, state in sd["state"].items():
        for name, v in state.items():
            if torch.is_tensor(v):
                tensors[f"opt/{key}/{idx}/{name}"] = v.detach().to("cpu").contiguous()
            else:
                small.setdefault(str(idx), {})[name] = v
    return tensors, {"param_groups": sd["param_groups"], "small": small}


def _optimizer_from_flat(key: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    pre = f"opt/{key}/"
    for name, v in tensors.items():
        if name.startswith(pre):
            idx, field = name[len(pre):].split("/", 1)
            state.setdefault(int(idx), {})[field] = v
    for idx, small in meta.get("small", {}).items():
        state.setdefault(int(idx), {}).update(small)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    # moments were saved contiguous; give them back their parameter's memory format (e.g.
    # channels-last), as a fresh optimiser would, so resumed kernels take the same paths
    for p, st in opt.state.items():
        for name, v in st.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.dim() == 4:
                st[name] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def save_checkpoint(path, task, step: int, ema=None, extra_meta: dict | None = None) -> Path:
    """Everything needed to rebuild the generator and to resume training exactly."""
    tensors: dict[str, torch.Tensor] = {}
    for key, net in task.nets.items():
        tensors.update(_flat_state(f"net/{key}", net.state_dict()))
    if ema is not None:
        tensors.update(_flat_state(f"ema/{task.generator_key}", ema.module.state_dict()))
    tensors.update(_flat_state("extra", task.extra_tensors()))
    task_state = task.state_dict()
    tensors.update(_flat_state("state", {k: v for k, v in task_state.items() if torch.is_tensor(v)}))
    opt_meta = {}
    for key, opt in task.optimizers.items():
        t, meta = _optimizer_to_flat(key, opt)
        tensors.update(t)
        opt_meta[key] = meta
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda{i}"] = s
    np_state = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    meta = {
        "format": FORMAT,
        "task": task.cfg.task,
        "step": int(step),
        "config": to_dict(task.cfg),
        "nets": task.net_specs,
        "generator": task.generator_key,
        "generator_state": task.generator_state(),
        "has_ema": ema is not None,
        "optimizers": opt_meta,
        "scaler": task.stepper.state_dict() if hasattr(task.stepper, "state_dict") else None,
        "task_state": {k: v for k, v in task_state.items() if not torch.is_tensor(v)},
        "rng": {"python": _py_state_to_json(random.getstate()), "numpy_pos": int(np_state[2]),
                "numpy_gauss": [int(np_state[3]), float(np_state[4])]},
    }
    meta.update(extra_meta or {})
    atomic_save(tensors, meta, Path(path))
    return Path(path)


def _py_state_to_json(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _section(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _rebuild_changed_nets(meta: dict, task) -> None:
    """Nets the run rebuilt with other widths (e.g. pruned between rounds) are rebuilt alike,
    from the kwargs saved for them, before their weights are loaded."""
    from ..nets import build_net

    for key, spec in meta["nets"].items():
        if key in task.nets and spec != task.net_specs[key]:
            task.replace_net(key, build_net(spec["name"], **spec["kwargs"]), spec["name"])


def restore_training_state(path, task, ema=None) -> int:
    """Load nets, EMA, generator run-time state, optimisers, loss scaler, task state and RNG
    state into a freshly built task; returns the step."""
    meta = read_meta(path)
    tensors = load_tensors(path)
    _rebuild_changed_nets(meta, task)
    for key, net in task.nets.items():
        net.load_state_dict(_section(tensors, f"net/{key}/"))
    gen_state = meta.get("generator_state") or {}
    if hasattr(task.generator, "load_run_state"):
        task.generator.load_run_state(gen_state)
    if ema is not None:
        sd = _section(tensors, f"ema/{task.generator_key}/")
        if sd:
            ema.module.load_state_dict(sd)
        if hasattr(ema.module, "load_run_state"):
            ema.module.load_run_state(gen_state)
    task.load_extra_tensors(_section(tensors, "extra/"))
    task.load_state_dict({**meta.get("task_state", {}), **_section(tensors, "state/")})
    for key, opt in task.optimizers.items():
        _optimizer_from_flat(key, opt, {k: v.to(task.device) for k, v in tensors.items()
                                        if k.startswith(f"opt/{key}/")}, meta["optimizers"][key])
    if hasattr(task.stepper, "load_state_dict"):
        task.stepper.load_state_dict(meta.get("scaler"))
    torch.set_rng_state(tensors["rng/torch"])
    if torch.cuda.is_available():
        states = [tensors[f"rng/cuda{i}"] for i in range(torch.cuda.device_count()) if f"rng/cuda{i}" in tensors]
        if states:
            torch.cuda.set_rng_state_all(states)
    r = meta["rng"]
    v, internal, gauss = r["python"]
    random.setstate((v, tuple(internal), gauss))
    np.random.set_state(("MT19937", tensors["rng/numpy"].numpy().astype(np.uint32), r["numpy_pos"],
                         r["numpy_gauss"][0], r["numpy_gauss"][1]))
    return int(meta["step"])


def init_from_checkpoint(path, task, ema=None) -> dict[str, str]:
    """Start a new run from a checkpoint's weights: every net of ``task`` also in the file takes
    the tensors whose names and shapes fit (the generator from its EMA weights when saved, so
    a run starts from the weights predictors used); optimisers, step and RNG stay fresh.

    Returns ``{net key: "loaded N of M tensors"}`` for the log. A generator that takes no tensor
    at all is an error: the checkpoint is of another model.
    """
    meta = read_meta(path)
    tensors = load_tensors(path)
    report = {}
    for key, net in task.nets.items():
        sd = net.state_dict()
        src = _section(tensors, f"ema/{key}/") or _section(tensors, f"net/{key}/")
        fit = {k: v for k, v in src.items() if k in sd and torch.is_tensor(sd[k]) and v.shape == sd[k].shape}
        if key == task.generator_key and not fit:
            raise CheckpointError(f"{path}: none of its weights fit this run's generator {key!r} "
                                  f"(a {meta.get('task')} checkpoint with nets {', '.join(meta['nets'])}); "
                                  "give a checkpoint of the same model, or leave train.init_from empty")
        net.load_state_dict(fit, strict=False)
        report[key] = f"loaded {len(fit)} of {len(sd)} tensors"
    if ema is not None:
        ema.module.load_state_dict(task.generator.state_dict())
    return report
