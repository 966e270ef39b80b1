"""The one training loop every task runs in.

It owns time, data order, logging, EMA, validation, checkpoints and resume; the task owns the
maths. Steps are counted in optimisation steps (one D phase + one G phase). The data order is a
function of (seed, epoch), and every random state is saved in the checkpoint, so a run stopped
and resumed gives, on the CPU, exactly the losses of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..config import Config, config_to_yaml
from ..data import input_read_mode
from ..errors import CheckpointError, ConfigError, ImtranslateError, TrainingDiverged, TrainingInterrupted
from ..tasks import resolve_resume
from .. import vis
from . import distributed
from .checkpoint import init_from_checkpoint, read_meta, restore_training_state, save_checkpoint
from .ema import EMA
from .stepping import build_task

#: fp16 training: this many steps in a row skipped by the loss scaler (inf/NaN gradients) is
#: divergence; fewer is the scaler finding its scale, as it does early in every fp16 run
MAX_SKIPPED_STEPS = 25


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


def non_finite_weights(modules: dict) -> list[str]:
    """Names (``key.param``) of parameters and float buffers holding NaN or inf."""
    bad = []
    for key, m in modules.items():
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad.append(f"{key}.{name}")
    return bad


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (``kill``, ``docker stop``, Kubernetes, Slurm) ask the loop to
    stop after the step in progress: a checkpoint is written and the resume command printed.
    A second SIGINT interrupts at once. Only the main thread can take signals; elsewhere (a
    notebook's worker thread) the default handlers stay.
    """

    def __init__(self):
        self.signum = 0
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


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
def train(cfg: Config | None, *, resume=None, overrides=None, steps: int | None = None, dry_run: bool = False,
          run_dir=None, log=None) -> Path:
    """Train ``cfg.task`` on ``cfg.data`` for ``cfg.train.steps`` steps; returns the run folder.

    Args:
        cfg: the fully resolved configuration (see :func:`imtranslate.tasks.load_config`).
        resume: a checkpoint file or run folder to continue from; the config saved in it is used
            (``cfg`` may be None).
        overrides: with ``resume``, ``["train.steps=8000", ...]`` (or a nested dict): options that
            may change on resume (:data:`imtranslate.config.RESUMABLE`), typed-checked as on a new run.
        steps: with ``resume``, a new total number of steps (the same as ``train.steps=N``).
        dry_run: resolve and print the config, create nothing, train nothing.
        run_dir: write into this folder instead of a new numbered one.
        log: function receiving one-line messages (default: print to stderr).

    Raises:
        TrainingDiverged: a loss or weight became NaN/inf; the last good checkpoint is kept.
        TrainingInterrupted: SIGINT / SIGTERM; a checkpoint was written first.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    ckpt_path = None
    if resume is not None:
        ckpt_path = find_resume_checkpoint(resume)
        meta = read_meta(ckpt_path)
        extra = list(overrides) if isinstance(overrides, (list, tuple)) else [] if overrides is None else overrides
        if steps and isinstance(extra, list):
            extra = extra + [f"train.steps={int(steps)}"]
        cfg = resolve_resume(meta["config"], extra)
        if cfg.train.steps <= int(meta["step"]) and not dry_run:
            raise ConfigError(f"{ckpt_path} is at step {meta['step']} of train.steps={meta['config']['train']['steps']}; "
                              f"to train on, give a larger total, e.g. train.steps={int(meta['step']) * 2}")
        run_dir = Path(run_dir) if run_dir else ckpt_path.parent.parent
    elif overrides:
        raise ConfigError("overrides= is for resume=; for a new run put them into the config (load_config)")
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
    if t.amp == "fp16" and device.type != "cuda":
        log(f"note: train.amp=fp16 needs CUDA; training in fp32 on {device}")
    elif t.amp == "bf16" and device.type == "cpu":
        log("bf16 autocast on the CPU (native bf16 arithmetic)")
    if t.compile != "none":
        log(f"torch.compile ({t.compile}) on every net: the first steps compile (minutes on a small CPU)")

    # nets (and pretrained weights such as VGG-19) first: a missing weight file fails here,
    # before any run folder or data is written
    task = build_task(cfg, device, world)
    task_cls = type(task)
    distributed.broadcast_parameters(task.nets.values())

    created = main_proc and run_dir is None
    if created:
        run_dir = new_run_dir(cfg)
    run_dir = Path(distributed.broadcast_object(str(run_dir) if run_dir is not None else None))
    try:
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
            raise ConfigError(f"the training set has {len(train_ds)} samples, fewer than "
                              f"train.batch_size={t.batch_size}")
    except ImtranslateError:
        if created:  # a run that never started leaves no numbered folder behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
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

    def follow_net(key, net) -> None:  # the task rebuilt a net (e.g. pruned): the EMA follows, in place
        if ema is not None and key == task.generator_key:
            ema.follow(net)

    task._net_listeners.append(follow_net)
    distiller = None
    if t.distill_from:
        from ..tasks.base import lr_factor
        from .distill import Distiller

        if world > 1:
            raise ConfigError("train.distill_from runs in a single process (its update is not all-reduced)")
        distiller = Distiller(task, t.distill_from, t.lambda_distill, t.lambda_distill_feat)
        task._net_listeners.append(distiller.follow)
    pruner = None
    if task.prune_options():  # model.prune_rounds: channel reduction between training rounds (SPEC S5)
        from .pruning import RoundPruner

        pruner = RoundPruner(task, val_loader, t.steps, world)
    step = 0
    if ckpt_path is not None:
        step = restore_training_state(ckpt_path, task, ema)
        log(f"resumed from {ckpt_path} at step {step}")
    elif t.init_from:
        report = init_from_checkpoint(t.init_from, task, ema)
        log(f"weights from {t.init_from}: " + "; ".join(f"{k} {v}" for k, v in report.items()))
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

    def weights_to_check() -> dict:
        return {**task.nets, **({"ema": ema.module} if ema is not None else {})}

    def diverged(s: int, what: str) -> TrainingDiverged:
        last = ckpt_dir / "last.safetensors"
        kept = f"the last good checkpoint is kept: {last}" if last.exists() else "no checkpoint was written"
        return TrainingDiverged(f"training diverged at step {s}: {what}. Nothing was saved from this step; "
                                f"{kept}. Lower train.lr_g / train.lr_d (or loss weights) and start again, "
                                f"or resume from that checkpoint with a smaller learning rate")

    def checkpoint(s: int) -> None:
        if not main_proc:
            return
        bad = non_finite_weights(weights_to_check())
        if bad:  # never overwrite a good checkpoint with a broken one
            raise diverged(s, f"non-finite weights in {', '.join(bad[:3])}" + (" ..." if len(bad) > 3 else ""))
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

    def prune_round(s: int) -> None:
        row = pruner.run(s, bar.write)
        rec = {"step": s, "kind": "prune", "round": row["round"], "macs": row["macs"], "params": row["params"],
               "macs_before": row["macs_before"], "params_before": row["params_before"], "quality": row["quality"],
               "held_back": len(row["held_back"]), "cut": len(row["layers"]) - len(row["held_back"])}
        jlog.write(rec)
        if writer:
            for k in ("macs", "params", "quality"):
                writer.add_scalar(f"prune/{k}", row[k], s)
        bar.write(f"step {s}: pruning round {row['round']}: {rec['cut']} layers cut, {rec['held_back']} held back; "
                  f"MACs {row['macs_before'] / 1e6:.1f} M -> {row['macs'] / 1e6:.1f} M, parameters "
                  f"{row['params_before'] / 1e3:.1f} k -> {row['params'] / 1e3:.1f} k")
        run_validation(s)

    if step == 0:
        run_validation(0)  # the untrained model's figures, the baseline every run is judged against

    # ---- the loop
    from tqdm import tqdm

    bar = tqdm(total=t.steps, initial=step, disable=not (t.progress and main_proc), dynamic_ncols=True, file=sys.stderr,
               desc=cfg.task)
    epoch, offset = divmod(step, per_epoch)
    # each rank's sampler indexes its own share of the permutation, which advances by the local batch per step
    sampler.epoch, sampler.start = epoch, offset * local_batch
    if hasattr(train_ds, "set_epoch"):
        train_ds.set_epoch(epoch)
    it = iter(loader)
    t_last, n_last = time.perf_counter(), step
    stepper = task.stepper
    skipped_run = 0  # fp16: consecutive steps the loss scaler skipped
    t_start = time.perf_counter()  # train.time_limit counts from here (this process, this session)
    cpu_start = time.process_time()  # and train.cpu_time_limit
    with StopSignals() as stop:
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
                if pruner is not None and pruner.due(step):
                    prune_round(step)
                msg = task.on_step_start(step)
                if msg:
                    bar.write(f"step {step}: {msg}")
                task.set_lr(step)
                skipped_before = stepper.skipped_steps
                on_device = task.to_device(batch)
                logs = task.train_step(on_device, step)
                if distiller is not None:
                    logs.update(distiller.step(on_device, lr_factor(t, step)))
                if ema is not None:
                    ema.update(step)
                step += 1
                bad = [k for k, v in logs.items() if not math.isfinite(v)]
                why = ""
                if stepper.skipped_steps > skipped_before:  # fp16 overflow: the scaler skipped the step
                    skipped_run += 1
                    if skipped_run >= MAX_SKIPPED_STEPS:
                        why = (f"{skipped_run} steps in a row with inf/NaN gradients under fp16 "
                               f"({', '.join(f'{k}={logs[k]}' for k in bad) or 'finite losses'})")
                elif bad:
                    why = "non-finite loss " + ", ".join(f"{k}={logs[k]}" for k in bad)
                else:
                    skipped_run = 0
                # every process stops at the same step when any of them diverged or was signalled
                out_of_time = ((bool(t.time_limit) and time.perf_counter() - t_start >= t.time_limit)
                               or (bool(t.cpu_time_limit) and time.process_time() - cpu_start >= t.cpu_time_limit))
                any_bad, any_stop, any_late = distributed.any_flags([bool(why), bool(stop.signum), out_of_time],
                                                                    device)
                if any_bad:
                    raise diverged(step, why or "a non-finite loss in another process")
                if any_late and step < t.steps:
                    which = (f"train.time_limit={t.time_limit:g} s"
                             if t.time_limit and time.perf_counter() - t_start >= t.time_limit
                             else f"train.cpu_time_limit={t.cpu_time_limit:g} CPU s")
                    bar.write(f"{which} reached at step {step} of {t.steps}")
                    bar.update(1)
                    break
                if step % t.log_every == 0 or step == t.steps:
                    logs = distributed.average_scalars(logs, device)  # every process takes part
                    now = time.perf_counter()
                    ips = (step - n_last) * t.batch_size / max(now - t_last, 1e-9)
                    t_last, n_last = now, step
                    jlog.write({"step": step, "kind": "train", "stage": task.stage_at(step - 1), "images_per_s": ips,
                                **logs})
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
                if any_stop and step != t.steps:
                    signum = stop.signum or signal.SIGTERM
                    raise TrainingInterrupted(signal.Signals(signum).name, signum)
                if step % t.ckpt_every == 0 and step != t.steps:
                    checkpoint(step)
        except TrainingInterrupted as e:
            bar.close()
            checkpoint(step)
            log(f"{e} at step {step}: checkpoint written. Continue with: imtranslate train --resume {run_dir}")
            distributed.cleanup()
            raise
        except KeyboardInterrupt:  # a second Ctrl-C, mid-step: the step in progress is lost
            bar.close()
            log(f"interrupted during step {step + 1}; the last checkpoint is {ckpt_dir / 'last.safetensors'}. "
                f"Continue with: imtranslate train --resume {run_dir}")
            raise
        except TrainingDiverged:
            bar.close()
            distributed.cleanup()
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
