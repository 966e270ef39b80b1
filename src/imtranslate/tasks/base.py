"""What every task (one per method) provides to the training loop and to predictors.

A task is the only place where nets, losses and optimisers meet. The training loop knows
nothing about GANs: it calls :meth:`Task.train_step` once per step and reads back a dict of
scalars. Predictors know nothing about a method's internals: they rebuild the generator from
its registry name and kwargs and call :meth:`Task.translate` on an encoded input.

How a loss becomes an update is not the task's business either: :meth:`Task.backward_step`
hands it to ``self.stepper``. The default here is the textbook ``backward(); step()``; the
training loop attaches :class:`imtranslate.train.stepping.Stepper` (gradient all-reduce under
torchrun, fp16 loss scaling, Adam steps inside the backward pass), which gives the same updates.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import ClassVar

import torch
from torch import nn

from ..config import Config, autocast_dtype, use_channels_last
from .. import metrics
from ..data import build_dataset, check_dataset, input_channels
from ..nets import build_net


class Task:
    """Base class. Subclasses set ``name`` and ``Config`` and implement ``build`` and ``train_step``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    #: the key in ``self.nets`` of the net predictors rebuild
    generator_key: ClassVar[str] = "G"

    def __init__(self, cfg: Config, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.m = cfg.model
        self.device = torch.device(device)
        self.in_channels = input_channels(cfg.data)
        self.out_channels = cfg.data.output_channels
        self.nets: dict[str, nn.Module] = {}
        self.net_specs: dict[str, dict] = {}  # key -> {"name": registry name, "kwargs": {...}}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.base_lr: dict[str, float] = {}
        # bf16 on CUDA or on a CPU with native bf16; fp16 on CUDA only (see config.autocast_dtype)
        self.amp_dtype = autocast_dtype(cfg.train.amp, self.device)
        self.channels_last = use_channels_last(cfg.train, self.device)
        self.stepper = PlainStepper()  # the training loop attaches train.stepping.Stepper
        self._net_listeners: list = []  # called as f(key, net) when the task replaces a net
        self.prune_state: dict = {}  # model.prune_rounds: ratios, rounds done, table (train/pruning.py)
        self.build()
        if self.channels_last:
            # NHWC lets oneDNN (CPU) and cuDNN (GPU) pick their fastest convolution kernels
            for mod in [m for m in vars(self).values() if isinstance(m, nn.Module)] + list(self.nets.values()):
                mod.to(memory_format=torch.channels_last)
        if cfg.train.compile != "none":
            self.compile_nets(cfg.train.compile)

    # ---- construction -------------------------------------------------------------------
    def build(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def compile_nets(self, backend: str = "inductor") -> None:
        """``torch.compile`` every net of the task in place (``train.compile``): parameters, state
        dicts and checkpoints are unchanged; a deep copy (the EMA, a predictor's copy) is eager again.
        Frozen feature nets (VGG) held as attributes are compiled too."""
        mods = list(self.nets.values()) + [m for m in vars(self).values() if isinstance(m, nn.Module)]
        seen = set()
        for mod in mods:
            if id(mod) not in seen:
                seen.add(id(mod))
                mod.compile(backend=backend)

    def add_net(self, key: str, registry_name: str, **kwargs) -> nn.Module:
        net = build_net(registry_name, **kwargs).to(self.device)
        self.nets[key] = net
        self.net_specs[key] = {"name": registry_name, "kwargs": dict(net.config)}
        return net

    def add_optimizer(self, key: str, params, lr: float) -> torch.optim.Optimizer:
        t = self.cfg.train
        params = list(params)
        # fused: the whole Adam update in one pass over each tensor (CPU and CUDA kernels) instead
        # of five elementwise passes; it was a quarter of a pix2pix-256 CPU training step
        try:
            opt = torch.optim.Adam(params, lr=lr, betas=(t.beta1, t.beta2), fused=True)
        except (RuntimeError, TypeError):  # a device/dtype without the fused kernel
            opt = torch.optim.Adam(params, lr=lr, betas=(t.beta1, t.beta2), foreach=True)
        self.optimizers[key] = opt
        self.base_lr[key] = lr
        return opt

    def replace_net(self, key: str, net: nn.Module, registry_name: str | None = None) -> nn.Module:
        """Swap ``self.nets[key]`` for ``net`` (e.g. the same net with fewer channels per layer).

        ``net_specs`` records the new constructor kwargs (so a checkpoint rebuilds it alone);
        every optimiser that held the old net's parameters is rebuilt over the new ones (Adam
        moments kept where a parameter kept its shape, fresh where it changed), and listeners
        (the loop's EMA and stepper) follow. Parameters are matched by name.
        """
        old = self.nets[key]
        name = registry_name or self.net_specs[key]["name"]
        net = net.to(self.device)
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        if self.cfg.train.compile != "none":
            net.compile(backend=self.cfg.train.compile)
        old_names = {id(p): n for n, p in old.named_parameters()}
        new_params = dict(net.named_parameters())
        missing = sorted(set(old_names.values()) - set(new_params))
        if missing:
            raise ValueError(f"replace_net({key!r}): the new net lacks parameters {missing[:3]}")
        self.swap_parameters({i: new_params[n] for i, n in old_names.items()})
        self.nets[key] = net
        self.net_specs[key] = {"name": name, "kwargs": dict(net.config)}
        for listener in self._net_listeners:
            listener(key, net)
        return net

    def check_patch_size(self, D: nn.Module, size: int, what: str) -> None:
        """A discriminator must fit the crops it will see; say so at start-up, not mid-run."""
        need = int(getattr(D, "min_size", 0))
        if size and size < need:
            from ..errors import ConfigError

            raise ConfigError(f"{what} sees {size}x{size} images but needs at least {need}x{need}: raise "
                              f"data.crop_size or lower model.n_layers_d (or model.num_d)")

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Task-specific value checks; raise ConfigError."""

    # ---- data (paired by default; tasks of other shapes override these) --------------------
    @classmethod
    def check_data(cls, cfg: Config) -> dict:
        """Every dataset check, run before the first step; returns a summary for the log."""
        return check_dataset(cfg.data)

    @classmethod
    def build_dataset(cls, cfg: Config, split: str):
        """The dataset of ``split`` ("train" / "val"); items are dicts of tensors."""
        return build_dataset(cfg.data, split, seed=cfg.train.seed)

    def swap_parameters(self, pairs: dict[int, nn.Parameter]) -> None:
        """In every optimiser, put ``pairs[id(p)]`` in place of each parameter ``p`` it holds; Adam
        moments are kept where the shape is unchanged, cut like the parameter where a pruner cut it
        (the kept channels keep their moments), and start afresh otherwise."""
        from ..prune.channels import KEPT, apply_kept

        for okey, opt in list(self.optimizers.items()):
            if not any(id(p) in pairs for g in opt.param_groups for p in g["params"]):
                continue
            groups, state = [], {}
            for g in opt.param_groups:
                params = []
                for p in g["params"]:
                    q = pairs.get(id(p), p)
                    st = opt.state.get(p)
                    ops = getattr(q, KEPT, None)
                    if st and q.shape == p.shape:
                        state[q] = st
                    elif st and ops:
                        state[q] = {k: apply_kept(v, ops) if torch.is_tensor(v) and v.shape == p.shape else v
                                    for k, v in st.items()}
                    params.append(q)
                groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": params})
            new_opt = type(opt)(groups, **opt.defaults)
            for q, st in state.items():
                new_opt.state[q] = st
            self.optimizers[okey] = new_opt

    def validation_metrics(self, G: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Per-image held-out metrics, name -> (B,); the loop averages them. Default: L1 / PSNR / SSIM."""
        out = self.validation_translate(G, batch).float()
        target = batch["B"].float()
        return {"l1": metrics.l1(out, target), "psnr": metrics.psnr(out, target), "ssim": metrics.ssim(out, target)}

    # ---- training ------------------------------------------------------------------------
    def train_step(self, batch: dict, step: int) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def on_step_start(self, step: int) -> str | None:
        """Called before every step; staged tasks switch stage here and return a message."""
        return None

    def stage_at(self, step: int) -> str:
        return "joint"

    def set_lr(self, step: int) -> None:
        """Learning rate of every optimiser as a function of the step (no hidden scheduler state)."""
        f = lr_factor(self.cfg.train, step)
        for key, opt in self.optimizers.items():
            for g in opt.param_groups:
                g["lr"] = self.base_lr[key] * f

    def temporal_term(self, A: torch.Tensor, fake: torch.Tensor, generate, nearest: bool) -> torch.Tensor:
        """Unweighted temporal loss from a synthetic "next frame" (no video data needed).

        The input is moved by a random small affine warp with known flow (shift <= 3 px, rotation
        <= 1 degree, zoom <= 2 %); ``generate`` translates it, and its output is compared with
        ``fake`` (the output for ``A``) moved by the same flow, over pixels that stay inside the
        frame (:func:`~imtranslate.losses.temporal_loss`). ``nearest`` samples the input without
        mixing values (label one-hots stay one-hot). An output coarser than the input (staged
        schedules) is compared with the same motion at its own scale.
        """
        import torch.nn.functional as F

        from ..data.clips import random_affine_flow, warp_tensor
        from ..losses.temporal import temporal_loss

        n, _, h, w = A.shape
        flow, valid = random_affine_flow(n, h, w, device=A.device)
        fake_next = generate(warp_tensor(A, flow, mode="nearest" if nearest else "bilinear"))
        size = fake_next.shape[-2:]
        if tuple(size) != (h, w):
            flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=False) * (size[-1] / w)
            valid = F.interpolate(valid, size=size, mode="nearest")
        return temporal_loss(fake_next.float(), fake.float(), flow, valid)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward_step(self, loss: torch.Tensor, opt_key: str, inputs: list | None = None,
                      retain_graph: bool = False) -> None:
        """Gradients of ``loss`` for the parameters of optimiser ``opt_key`` (only ``inputs`` when
        given: several losses may share one graph), then its step, by ``self.stepper``.

        One call per optimiser per step; a task never reads ``.grad`` afterwards (the training
        loop's stepper may have applied and freed each gradient inside the backward pass)."""
        self.stepper.backward_step(loss, self.optimizers[opt_key], opt_key, inputs=inputs, retain_graph=retain_graph)

    def _learning(self, opt_key: str) -> list[torch.Tensor]:
        """The parameters of optimiser ``opt_key`` that learn at this stage."""
        return [p for g in self.optimizers[opt_key].param_groups for p in g["params"] if p.requires_grad]

    def to_device(self, batch: dict) -> dict:
        out = {}
        for k, v in batch.items():
            if torch.is_tensor(v):
                v = v.to(self.device, non_blocking=True)
                if self.channels_last and v.dim() == 4 and v.is_floating_point():
                    v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    # ---- inference -----------------------------------------------------------------------
    @property
    def generator(self) -> nn.Module:
        return self.nets[self.generator_key]

    @classmethod
    def size_multiple(cls, G: nn.Module, cfg: Config) -> int:
        """Inputs are padded to a multiple of this before :meth:`translate`."""
        return int(getattr(G, "multiple", 1))

    @classmethod
    def size_scale(cls, G: nn.Module, cfg: Config):
        """Output size / input size of :meth:`translate` (the generator's ``scale``; 1: same size)."""
        return getattr(G, "scale", 1)

    @classmethod
    def translate(cls, G: nn.Module, A: torch.Tensor, cfg: Config, extras: dict | None = None,
                  batch: dict | None = None, **options) -> torch.Tensor:
        """Full-size output for an encoded input ``A`` (B, C_in, H, W). Used by validation and predictors.

        ``extras`` are the task's :meth:`extra_tensors` as saved in the checkpoint; ``batch`` is the
        dataset item (with ``label`` / ``inst`` when present); ``options`` are per-call choices
        a predictor passes through (e.g. pix2pixHD's ``cluster``).
        """
        return G(A)

    @classmethod
    def eval_inputs(cls, batch: dict, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
        """``imtranslate eval``: (network input, target) of a held-out batch of whole pictures.
        Paired data: ``A`` and ``B``; tasks that make their inputs (e.g. stylesr's LR from a
        photo) override this."""
        return batch["A"], batch["B"]

    def validation_translate(self, G: nn.Module, batch: dict) -> torch.Tensor:
        return self.translate(G, batch["A"], self.cfg, self.extra_tensors(), batch=batch)

    # ---- generator run-time state (e.g. how many levels are active mid-schedule) -------------
    def generator_state(self) -> dict:
        """Small JSON state of the generator that its weights do not carry; saved in checkpoints.

        A net with such state provides ``run_state()`` / ``load_run_state(state)`` itself, so a
        generator rebuilt from a checkpoint alone (predictors, teachers) restores it too."""
        G = self.generator
        return G.run_state() if hasattr(G, "run_state") else {}

    @classmethod
    def restore_generator_state(cls, G: nn.Module, state: dict) -> None:
        """Put a generator rebuilt from a checkpoint into the state it was saved in."""
        if hasattr(G, "load_run_state"):
            G.load_run_state(state or {})

    # ---- task state (besides nets and optimisers), saved in checkpoints, restored on resume --
    def state_dict(self) -> dict:
        """What the task owns besides nets and optimisers (e.g. degradation strengths that adapt
        during training): JSON values and tensors. Restored exactly by ``--resume``. Subclasses
        extend ``super().state_dict()``."""
        return {"prune": copy.deepcopy(self.prune_state)} if self.prune_state else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s values (called on resume, after the nets are loaded)."""
        self.prune_state = copy.deepcopy(state.get("prune", {}))

    # ---- channel reduction while training (SPEC S5; train/pruning.py) ------------------------
    def prune_options(self) -> dict | None:
        """``{"rounds", "ratio", "quality", "importance"}`` when the model config asks to prune the
        generator between training rounds (``model.prune_rounds > 0``), else None."""
        rounds = int(getattr(self.m, "prune_rounds", 0) or 0)
        if rounds <= 0:
            return None
        return {"rounds": rounds, "ratio": float(self.m.prune_ratio), "quality": str(self.m.prune_quality),
                "importance": str(getattr(self.m, "prune_importance", "activation"))}

    # ---- extra state saved in checkpoints (e.g. stage, cluster centres) --------------------
    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors a predictor needs besides the generator weights."""
        return {}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def finish(self, train_loader) -> None:
        """Called once after the last step (e.g. pix2pixHD clusters its instance features)."""


class PlainStepper:
    """``zero_grad(); backward(); step()``: what a task does without the training loop's stepper."""

    def backward_step(self, loss, opt, opt_key, inputs=None, retain_graph=False) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=inputs, retain_graph=retain_graph)
        opt.step()


def lr_factor(t, step: int) -> float:
    """Multiplier of the base learning rate at ``step`` for ``train.lr_policy``."""
    if t.lr_policy == "constant":
        return 1.0
    if t.lr_policy == "step":
        return 0.5 ** (step // max(1, t.lr_step_every))
    start = int(t.lr_decay_start * t.steps)
    if step < start:
        return 1.0
    frac = (step - start) / max(1, t.steps - start)
    if t.lr_policy == "linear":
        return max(0.0, 1.0 - frac)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))  # cosine


def check_gan_options(m) -> None:
    """Checks shared by the adversarial tasks' configs."""
    from ..errors import ConfigError

    if m.lambda_temporal < 0:
        raise ConfigError(f"model.lambda_temporal must be >= 0, got {m.lambda_temporal}")


def set_requires_grad(nets, flag: bool) -> None:
    for net in nets if isinstance(nets, (list, tuple)) else [nets]:
        for p in net.parameters():
            p.requires_grad_(flag)
