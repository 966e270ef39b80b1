"""Many processes: the same training and batch inference under ``torchrun``.

    torchrun --nproc_per_node 4 -m imtranslate train my.yaml             # one machine, 4 GPUs / processes
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 \\
             --nproc_per_node 8 -m imtranslate train my.yaml             # on each of 2 machines

Backend: NCCL on CUDA, gloo on CPU. ``train.batch_size`` is the *total* batch; each process takes
``batch_size / world`` samples of every step's batch (the sampler deals one permutation out by
rank), so a run on N processes follows the same data as one process with the same total batch.

Gradients are averaged across processes after each backward pass, exactly as
``DistributedDataParallel`` does, but with one flat all-reduce per optimiser step instead of the
DDP wrapper: GAN tasks run the discriminator in two phases with different frozen parts, and the
staged schedules (multires levels, pix2pixHD global stage) change which parameters learn
mid-run, both of which the DDP wrapper's fixed reducer does not support without
``find_unused_parameters`` overhead. Rank 0 alone writes checkpoints, logs and images.
"""
from __future__ import annotations

import atexit
import importlib
import os

import torch
import torch.distributed as dist

from ..errors import ConfigError


def env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup(device_spec: str) -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; returns (rank, world, device)."""
    rank, world, local = env()
    cuda = torch.cuda.is_available() and device_spec in ("auto", "cuda") or device_spec.startswith("cuda")
    if world == 1:
        return 0, 1, None
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={device_spec} but CUDA is not available")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        # torch.optim imports torch._dynamo on first use. Imported *after* init_process_group,
        # torch._dynamo keeps references to the default group that destroy_process_group cannot
        # drop, so the group outlived cleanup() and gloo's threads ran on into interpreter
        # teardown, where they now and then aborted a finished process (SIGABRT, "terminate
        # called without an active exception"): import it first.
        importlib.import_module("torch._dynamo")

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # a run that stops on an error or Ctrl-C skips the loop's cleanup(): end the group while
        # the interpreter is still whole, not in its teardown
        atexit.register(cleanup)
    return rank, world, device


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_parameters(modules) -> None:
    """Every process starts from rank 0's weights and buffers."""
    if not is_initialized():
        return
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params, world: int) -> None:
    """All-reduce (mean) the gradients of ``params`` in one flat buffer."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or world == 1:
        return
    flat = torch._utils._flatten_dense_tensors([g.contiguous() for g in grads])
    dist.all_reduce(flat)
    flat /= world
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def average_scalars(values: dict[str, float], device) -> dict[str, float]:
    """Mean of logged scalars over processes, so logs describe the whole batch."""
    if not is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def cleanup() -> None:
    """Leave the process group; its threads (gloo) end here, before the interpreter's teardown."""
    if is_initialized():
        dist.destroy_process_group()


def any_flags(flags: list[bool], device) -> list[bool]:
    """For each flag: is it set in any process? (One small all-reduce; a plain copy alone.)"""
    if not is_initialized():
        return [bool(f) for f in flags]
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]
