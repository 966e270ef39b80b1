"""The checkpoint file: one safetensors file per snapshot, written atomically, read without pickle.

Layout of the tensors in the file::

    net/<key>/<param>        every net of the task (G, D, E, D0, ...)
    ema/<key>/<param>        the EMA generator (what predictors use by default)
    extra/<name>             task tensors a predictor needs (e.g. pix2pixHD cluster centres)
    state/<name>             task state tensors (:meth:`Task.state_dict`), for exact resume
    opt/<key>/<idx>/<name>   optimiser state tensors (Adam moments, step)
    rng/torch, rng/cuda<N>, rng/numpy   random number generator states

and the JSON header (``metadata["imtranslate"]``) holds the resolved config, each net's registry
name and constructor kwargs (per-layer widths included, so a pruned net rebuilds alone), the
step, the generator's run-time state, optimiser hyper-parameters and other small state.

This module reads and writes the file and rebuilds a generator from it (:func:`load_generator`);
it sits below the tasks, so a task can load a teacher net with it, and knows nothing of training.
Writing a whole training state is :mod:`imtranslate.train.checkpoint`.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CheckpointError
from .nets import build_net

FORMAT = "imtranslate-checkpoint/1"


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
                ".pth go to options such as --vgg-weights (imtranslate weights convert IN.pth OUT.safetensors turns a "
                "state dict into safetensors without running its pickle)"
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
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: the {source} weights of {key!r} hold NaN/inf values ({', '.join(bad[:3])}); "
                              "this checkpoint comes from a diverged run: use an earlier one")
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights of {key!r} do not fit the net rebuilt from its config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return source


class LoadedGenerator(NamedTuple):
    net: torch.nn.Module  # rebuilt from its saved kwargs, weights loaded, run-time state restored
    meta: dict  # the checkpoint's JSON header (config, nets, step, ...)
    source: str  # "ema" or "net": which weights were loaded


def load_generator(path, *, use_ema: bool = True, device="cpu", key: str | None = None) -> LoadedGenerator:
    """The generator of a checkpoint, rebuilt from the file alone (predictors, the stylizer, and
    tasks that distil from a teacher all load it here). ``key`` picks another net than the
    checkpoint's generator."""
    meta = read_meta(path)
    key = key or meta["generator"]
    if key not in meta["nets"]:
        raise CheckpointError(f"{path}: holds no net {key!r} (nets: {', '.join(meta['nets'])})")
    spec = meta["nets"][key]
    try:
        net = build_net(spec["name"], **spec["kwargs"])
    except ValueError as e:
        raise CheckpointError(f"{path}: cannot rebuild net {key!r}: {e}") from None
    source = load_net_weights(path, net, key, use_ema=use_ema)
    if key == meta["generator"] and hasattr(net, "load_run_state"):
        net.load_run_state(meta.get("generator_state") or {})
    return LoadedGenerator(net.to(device), meta, source)
