"""The one training loop every task runs in.

It owns time, data order, logging, EMA, validation, checkpoints and resume; the task owns the
maths. Steps are counted in optimisation steps (one D phase + one G phase). The data order is a
function of (seed, epoch), and every random state is saved in the checkpoint, so a run stopped
and resumed gives, on the CPU, exactly the losses of an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..config import Config, config_to_yaml
from ..data import input_read_mode
from ..errors import ConfigError, CheckpointError
from ..tasks import get_task
from .. import vis
from . import distributed
from .checkpoint import read_meta, restore_training_state, save_checkpoint
from .ema import EMA


# --------------------------------------------------------------------------------------------
# Small pieces
# --------------------------------------------------------------------------------------------
class EpochSampler(Sampler):
    """A permutation per epoch drawn from (seed, epoch), startable mid-epoch for exact resume.

    ``rank``/``world`` shard each permutation for multi-process training.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch = 0
        self.start = 0  # index into this rank's share of the permutation

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = list(range(self.n))
        return perm[self.rank::self.world]

    def __iter__(self):
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return len(self.indices()) - self.start


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={spec} but no CUDA device is available; use train.device=cpu")
    return torch.device(spec)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def new_run_dir(cfg: Config) -> Path:
    """``<out_dir>/NNNN-<name>``, numbered after the highest existing run (NVlabs style)."""
    root = Path(cfg.train.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    nums = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"(\d+)-", p.name))]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.train.name or cfg.task)
    run = root / f"{(max(nums) + 1 if nums else 1):04d}-{name}"
    run.mkdir()
    return run


def n_label_classes(data_cfg) -> int:
    return data_cfg.synthetic.n_classes if data_cfg.dataset == "synthetic" else data_cfg.n_classes


def find_resume_checkpoint(resume) -> Path:
    """``--resume`` accepts a checkpoint file or a run folder (its checkpoints/last.safetensors)."""
    p = Path(resume)
    if p.is_dir():
        p = p / "checkpoints" / "last.safetensors"
    if not p.is_file():
        raise CheckpointError(f"{p}: nothing to resume from (give a checkpoint file or a run folder)")
    return p


class JsonlLog:
    """metrics.jsonl: one JSON object a line; the HTML report and tests read it."""

    def __init__(self, path: Path, truncate_after: int | None = None):
        self.path = path
        if truncate_after is not None and path.exists():
            # on resume, drop lines logged after the checkpoint: they will be logged again
            keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= truncate_after]
            path.write_text("".join(ln + "\n" for ln in keep))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def validate(task, G, loader, max_batches: int = 0) -> dict[str, float]:
    """L1 / PSNR / SSIM of ``G``'s outputs against held-out targets."""
    was_training = G.training
    G.eval()
    sums: dict[str, float] = {}
    n = 0
    with torch.random.fork_rng(devices=[]):  # validation must not shift the training RNG stream
        for i, batch in enumerate(loader):
            if max_batches and i >= max_batches:
                break
            batch = task.to_device(batch)
            with task.autocast():
                per_image = task.validation_metrics(G, batch)  # name -> (B,)
            for k, v in per_image.items():
                sums[k] = sums.get(k, 0.0) + float(v.float().sum())
            n += next(iter(per_image.values())).shape[0] if per_image else 0
    G.train(was_training)
    return {k: v / max(n, 1) for k, v in sums.items()}


@torch.no_grad()
def sample_grid(task, G, batch: dict, cfg: Config, n: int = 4) -> np.ndarray:
    """Rows of input | output | target pictures for TensorBoard and reports."""
    was_training = G.training
    G.eval()
    batch = task.to_device({k: (v[:n] if torch.is_tensor(v) else v) for k, v in batch.items()})
    with torch.random.fork_rng(devices=[]):
        out = task.validation_translate(G, batch).float()
    G.train(was_training)
    kind, ncls = input_read_mode(cfg.data), n_label_classes(cfg.data)
    rows = [[vis.input_picture(batch["A"][i], kind, ncls), vis.picture(out[i])]
            + ([vis.picture(batch["B"][i])] if "B" in batch else []) for i in range(out.shape[0])]
    return vis.grid(rows)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def train(cfg: Config | None, *, resume=None, steps: int | None = None, dry_run: bool = False, run_dir=None,
          log=None) -> Path:
    """Train ``cfg.task`` on ``cfg.data`` for ``cfg.train.steps`` steps; returns the run folder.

    Args:
        cfg: the fully resolved configuration (see :func:`imtranslate.config.load_config`).
        resume: a checkpoint file or run folder to continue from; the config saved in it is used
            (``cfg`` may be None).
        steps: with ``resume``, a new total number of steps (to train longer than planned).
        dry_run: resolve and print the config, create nothing, train nothing.
        run_dir: write into this folder instead of a new numbered one.
        log: function receiving one-line messages (default: print to stderr).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    ckpt_path = None
    if resume is not None:
        ckpt_path = find_resume_checkpoint(resume)
        meta = read_meta(ckpt_path)
        from ..config import resolve

        cfg = resolve(meta["config"])
        if steps:
            cfg.train.steps = int(steps)
        run_dir = Path(run_dir) if run_dir else ckpt_path.parent.parent
    if cfg is None:
        raise ConfigError("train() needs a config, or resume= a checkpoint")
    t = cfg.train
    if dry_run:
        print(config_to_yaml(cfg), end="")
        return Path(run_dir) if run_dir else Path(t.out_dir)

    if t.threads:
        torch.set_num_threads(t.threads)
    seed_everything(t.seed)
    rank, world, dist_device = distributed.setup(t.device)
    main_proc = rank == 0
    device = dist_device or pick_device(t.device)
    if not main_proc:
        log = lambda msg: None  # noqa: E731 - one process speaks
    if t.batch_size % world:
        raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by the {world} processes")
    local_batch = t.batch_size // world
    if t.amp != "none" and device.type != "cuda":
        log(f"note: train.amp={t.amp} needs CUDA; training in fp32 on {device}")

    # nets (and pretrained weights such as VGG-19) first: a missing weight file fails here,
    # before any run folder or data is written
    task_cls = get_task(cfg.task)
    task = task_cls(cfg, device)
    task.world = world
    distributed.broadcast_parameters(task.nets.values())

    if main_proc and run_dir is None:
        run_dir = new_run_dir(cfg)
    run_dir = Path(distributed.broadcast_object(str(run_dir) if run_dir is not None else None))
    if cfg.data.dataset == "synthetic" and not cfg.data.synthetic.root:
        cfg.data.synthetic.root = str(run_dir / "synthetic")
    if main_proc:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
        # ---- data: every check before the first step, so a bad file fails now, not in hour three
        summary = task_cls.check_data(cfg)
    distributed.barrier()  # rank 0 has written any generated data before the others read it
    if not main_proc:
        summary = {}
    train_ds = task_cls.build_dataset(cfg, "train")
    val_ds = task_cls.build_dataset(cfg, "val")
    if len(train_ds) < t.batch_size:
        raise ConfigError(f"the training set has {len(train_ds)} samples, fewer than train.batch_size={t.batch_size}")
    sampler = EpochSampler(len(train_ds), t.seed, rank=rank, world=world)
    # the loader gets its own generator: by default it would draw worker seeds from the global
    # RNG at every epoch start, and a resumed run would then see a different random stream
    loader = DataLoader(train_ds, batch_size=local_batch, sampler=sampler, drop_last=True,
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(t.seed))
    val_loader = DataLoader(val_ds, batch_size=t.batch_size, shuffle=False, num_workers=cfg.data.num_workers)
    per_epoch = len(train_ds) // t.batch_size

    # ---- EMA, state
    ema = EMA(task.generator, t.ema_decay, t.ema_start) if t.ema_decay > 0 else None
    step = 0
    if ckpt_path is not None:
        step = restore_training_state(ckpt_path, task, ema)
        log(f"resumed from {ckpt_path} at step {step}")
    ckpt_dir = run_dir / "checkpoints"
    jlog = JsonlLog(run_dir / "metrics.jsonl", truncate_after=step if ckpt_path and main_proc else None)
    if main_proc and ckpt_path is None and jlog.path.exists():
        jlog.path.unlink()
    if not main_proc:
        jlog.write = lambda record: None
    writer = None
    if t.tensorboard and main_proc:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))
    n_params = {k: sum(p.numel() for p in n.parameters()) for k, n in task.nets.items()}
    log(f"run folder: {run_dir}")
    log(f"task {cfg.task} on {device}; data: {summary.get('train', len(train_ds))} training samples, "
        f"{len(val_ds)} held out; parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in n_params.items()))

    def checkpoint(s: int) -> None:
        if not main_proc:
            return
        p = save_checkpoint(ckpt_dir / f"step_{s:08d}.safetensors", task, s, ema)
        last = ckpt_dir / "last.safetensors"
        tmp = ckpt_dir / ".last.tmp"
        if tmp.exists():
            tmp.unlink()
        os.link(p, tmp)  # a second name for the same complete file, then an atomic rename
        os.replace(tmp, last)  # atomic: last always points at a complete file
        numbered = sorted(ckpt_dir.glob("step_*.safetensors"))
        for old in numbered[:-t.keep_ckpts] if t.keep_ckpts > 0 else []:
            old.unlink()

    def run_validation(s: int) -> dict:
        if not main_proc:
            return {}
        G_eval = ema.module if ema is not None else task.generator
        res = validate(task, G_eval, val_loader, t.val_batches)
        rec = {"step": s, "kind": "val", "stage": task.stage_at(max(0, s - 1)), **res}
        jlog.write(rec)
        if writer:
            for k, v in res.items():
                writer.add_scalar(f"val/{k}", v, s)
        log(f"step {s}: held-out " + "  ".join(f"{k} {v:.4g}" for k, v in res.items()))
        return res

    if step == 0:
        run_validation(0)  # the untrained model's figures, the baseline every run is judged against

    # ---- the loop
    from tqdm import tqdm

    bar = tqdm(total=t.steps, initial=step, disable=not (t.progress and main_proc), dynamic_ncols=True, file=sys.stderr,
               desc=cfg.task)
    epoch, offset = divmod(step, per_epoch)
    sampler.epoch, sampler.start = epoch, offset * local_batch  # each rank's share advances by its own batch
    if hasattr(train_ds, "set_epoch"):
        train_ds.set_epoch(epoch)
    it = iter(loader)
    t_last, n_last, last_batch = time.perf_counter(), step, None
    try:
        while step < t.steps:
            try:
                batch = next(it)
            except StopIteration:
                epoch += 1
                sampler.epoch, sampler.start = epoch, 0
                if hasattr(train_ds, "set_epoch"):
                    train_ds.set_epoch(epoch)
                it = iter(loader)
                continue
            msg = task.on_step_start(step)
            if msg:
                bar.write(f"step {step}: {msg}")
            task.set_lr(step)
            logs = task.train_step(task.to_device(batch), step)
            if ema is not None:
                ema.update(step)
            step += 1
            last_batch = batch
            if step % t.log_every == 0 or step == t.steps:
                logs = distributed.average_scalars(logs, device)  # every process takes part
                now = time.perf_counter()
                ips = (step - n_last) * t.batch_size / max(now - t_last, 1e-9)
                t_last, n_last = now, step
                jlog.write({"step": step, "kind": "train", "stage": task.stage_at(step - 1), "images_per_s": ips, **logs})
                if writer:
                    for k, v in logs.items():
                        writer.add_scalar(f"train/{k}", v, step)
                    writer.add_scalar("train/images_per_s", ips, step)
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(logs.items())[:4]} | {"img/s": f"{ips:.1f}"})
            bar.update(1)
            if writer and t.image_every and step % t.image_every == 0:  # writer: rank 0 only
                writer.add_image("samples/input_output_target",
                                 sample_grid(task, ema.module if ema else task.generator, batch, cfg), step,
                                 dataformats="HWC")
            if t.val_every and step % t.val_every == 0 and step != t.steps:
                run_validation(step)
            if step % t.ckpt_every == 0 and step != t.steps:
                checkpoint(step)
    except KeyboardInterrupt:
        bar.close()
        checkpoint(step)
        log(f"interrupted at step {step}; checkpoint written. Continue with: imtranslate train --resume {run_dir}")
        raise
    bar.close()
    task.finish(loader)
    run_validation(step)
    checkpoint(step)
    if writer:
        writer.close()
    log(f"done: {step} steps; checkpoint {ckpt_dir / 'last.safetensors'}")
    distributed.barrier()
    distributed.cleanup()
    return run_dir
