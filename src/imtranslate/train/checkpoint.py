"""Checkpoints: one safetensors file per snapshot, written atomically, loaded without pickle.

Layout of the tensors in the file::

    net/<key>/<param>        every net of the task (G, D, E, D0, ...)
    ema/<key>/<param>        the EMA generator (what predictors use by default)
    extra/<name>             task tensors a predictor needs (e.g. pix2pixHD cluster centres)
    opt/<key>/<idx>/<name>   optimiser state tensors (Adam moments, step)
    rng/torch, rng/cuda<N>, rng/numpy   random number generator states

and the JSON header (``metadata["imtranslate"]``) holds the resolved config, each net's registry
name and constructor kwargs, the step, optimiser hyper-parameters and other small state. With
the config and the kwargs a predictor rebuilds the generator from the file alone.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import to_dict
from ..errors import CheckpointError

FORMAT = "imtranslate-checkpoint/1"


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


def atomic_save(tensors: dict[str, torch.Tensor], metadata: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over ``path``.

    A crash (or Ctrl-C) at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"imtranslate": json.dumps(metadata)})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path, task, step: int, ema=None, extra_meta: dict | None = None) -> Path:
    """Everything needed to rebuild the generator and to resume training exactly."""
    tensors: dict[str, torch.Tensor] = {}
    for key, net in task.nets.items():
        tensors.update(_flat_state(f"net/{key}", net.state_dict()))
    if ema is not None:
        tensors.update(_flat_state(f"ema/{task.generator_key}", ema.module.state_dict()))
    tensors.update(_flat_state("extra", task.extra_tensors()))
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
        "scaler": task.scaler.state_dict() if task.scaler.is_enabled() else None,
        "rng": {"python": _py_state_to_json(random.getstate()), "numpy_pos": int(np_state[2]),
                "numpy_gauss": [int(np_state[3]), float(np_state[4])]},
    }
    meta.update(extra_meta or {})
    atomic_save(tensors, meta, Path(path))
    return Path(path)


def _py_state_to_json(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def read_meta(path) -> dict:
    """The JSON header of a checkpoint; clear errors for anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("imtranslate")
    except Exception as e:  # safetensors raises its own error types for truncated/garbage files
        with open(path, "rb") as fh:
            head = fh.read(4)
        if not head:
            raise CheckpointError(f"{path}: the file is empty (0 bytes); give a checkpoint written by "
                                  "imtranslate train (runs/NNNN-task/checkpoints/last.safetensors)") from None
        # torch.save writes a zip archive (PK..) or, in its legacy format, a bare pickle (0x80, protocol 2-5)
        if head == b"PK\x03\x04" or (head[0] == 0x80 and 2 <= head[1] <= 5):
            raise CheckpointError(
                f"{path}: a PyTorch pickle (torch.save), not an imtranslate checkpoint: those are the .safetensors "
                "files imtranslate train writes, with the config the net is rebuilt from. Pretrained weights in a "
                ".pth go to options such as --vgg-weights; to convert a state dict to safetensors: python -c "
                "\"import sys, torch; from safetensors.torch import save_file; save_file({k: v.contiguous() for k, v "
                "in torch.load(sys.argv[1], weights_only=True).items()}, sys.argv[2])\" IN.pth OUT.safetensors"
            ) from None
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if not raw:
        raise CheckpointError(f"{path}: a safetensors file, but not an imtranslate checkpoint (no metadata)")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
    return meta


def load_tensors(path, prefix: str = "", device="cpu") -> dict[str, torch.Tensor]:
    """Tensors whose names start with ``prefix`` (prefix stripped)."""
    out = {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        for name in f.keys():
            if name.startswith(prefix):
                out[name[len(prefix):]] = f.get_tensor(name)
    return out


def load_net_weights(path, net: torch.nn.Module, key: str, use_ema: bool = True) -> str:
    """Load the EMA weights of ``key`` when present (and asked for), else the raw ones. Returns which."""
    source = "ema" if use_ema else "net"
    sd = load_tensors(path, f"{source}/{key}/")
    if not sd:
        source = "net"
        sd = load_tensors(path, f"net/{key}/")
    if not sd:
        raise CheckpointError(f"{path}: holds no weights for net {key!r}")
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights of {key!r} do not fit the net rebuilt from its config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return source


def restore_training_state(path, task, ema=None) -> int:
    """Load nets, EMA, optimisers, scaler and RNG state into a freshly built task; returns the step."""
    meta = read_meta(path)
    tensors = load_tensors(path)
    for key, net in task.nets.items():
        sd = {k[len(f"net/{key}/"):]: v for k, v in tensors.items() if k.startswith(f"net/{key}/")}
        net.load_state_dict(sd)
    if ema is not None:
        pre = f"ema/{task.generator_key}/"
        sd = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
        if sd:
            ema.module.load_state_dict(sd)
    task.load_extra_tensors({k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")})
    for key, opt in task.optimizers.items():
        _optimizer_from_flat(key, opt, {k: v.to(task.device) for k, v in tensors.items()
                                        if k.startswith(f"opt/{key}/")}, meta["optimizers"][key])
    if meta.get("scaler") and task.scaler.is_enabled():
        task.scaler.load_state_dict(meta["scaler"])
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
