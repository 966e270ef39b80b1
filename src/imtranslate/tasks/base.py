"""What every task (one per method) provides to the training loop and to predictors.

A task is the only place where nets, losses and optimisers meet. The training loop knows
nothing about GANs: it calls :meth:`Task.train_step` once per step and reads back a dict of
scalars. Predictors know nothing about a method's internals: they rebuild the generator from
its registry name and kwargs and call :meth:`Task.translate` on an encoded input.
"""
from __future__ import annotations

import contextlib
import math
from typing import ClassVar

import torch
from torch import nn

from ..config import Config, use_channels_last
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
        amp = cfg.train.amp if self.device.type == "cuda" else "none"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        # fp16 needs loss scaling; bf16 has fp32's exponent range and does not
        self.scaler = torch.amp.GradScaler("cuda", enabled=(amp == "fp16"))
        self.channels_last = use_channels_last(cfg.train, self.device)
        self.world = 1  # processes; set by the training loop under torchrun
        self._stepping: torch.optim.Optimizer | None = None  # optimiser stepping inside backward()
        self._hooked: set[str] = set()  # optimisers whose parameters can step inside backward()
        self.build()
        if self.channels_last:
            # NHWC lets oneDNN (CPU) and cuDNN (GPU) pick their fastest convolution kernels
            for mod in [m for m in vars(self).values() if isinstance(m, nn.Module)] + list(self.nets.values()):
                mod.to(memory_format=torch.channels_last)

    # ---- construction -------------------------------------------------------------------
    def build(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

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
        # a parameter frozen now has no hook; if a later stage unfroze it, it would be stepped
        # with a partial gradient by its neighbours' hooks: such optimisers step as usual
        if t.step_in_backward and all(p.requires_grad for p in params):
            for p in params:
                p.register_post_accumulate_grad_hook(self._make_step_hook(opt))
            self._hooked.add(key)
        return opt

    def _make_step_hook(self, opt: torch.optim.Optimizer):
        def hook(p: torch.Tensor) -> None:
            # Called once per backward pass when p's gradient is complete (every use of p summed),
            # i.e. after every node that saved p has run, so p may change in place. The other
            # parameters' gradients are None here (zeroed before backward, freed after their own
            # step), so a whole step of the optimiser updates p alone (~45 us of bookkeeping per
            # call: ~2 ms per pix2pix-256 step).
            if self._stepping is opt:
                opt.step()
                p.grad = None
        return hook

    def _step_in_backward(self) -> bool:
        # a gradient all-reduce, or fp16 loss scaling (unscale + inf check over all gradients),
        # needs every gradient at once
        return self.world == 1 and not self.scaler.is_enabled()

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
        given: several losses may share one graph), then its step — inside the backward pass when
        ``train.step_in_backward`` allows."""
        opt = self.optimizers[opt_key]
        opt.zero_grad(set_to_none=True)
        if opt_key in self._hooked and self._step_in_backward():
            self._stepping = opt
            try:
                loss.backward(inputs=inputs, retain_graph=retain_graph)
            finally:
                self._stepping = None
            return
        self.scaler.scale(loss).backward(inputs=inputs, retain_graph=retain_graph)
        if self.world > 1:  # torchrun: mean gradient over processes, as DistributedDataParallel does
            from ..train.distributed import average_gradients

            average_gradients([p for g in opt.param_groups for p in g["params"]], self.world)
        self.scaler.step(opt)
        self.scaler.update()

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

    def validation_translate(self, G: nn.Module, batch: dict) -> torch.Tensor:
        return self.translate(G, batch["A"], self.cfg, self.extra_tensors(), batch=batch)

    # ---- generator run-time state (e.g. how many levels are active mid-schedule) -------------
    def generator_state(self) -> dict:
        """Small JSON state of the generator that its weights do not carry; saved in checkpoints."""
        return {}

    @classmethod
    def restore_generator_state(cls, G: nn.Module, state: dict) -> None:
        """Put a generator rebuilt from a checkpoint into the state it was saved in."""

    # ---- extra state saved in checkpoints (e.g. stage, cluster centres) --------------------
    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors a predictor needs besides the generator weights."""
        return {}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def finish(self, train_loader) -> None:
        """Called once after the last step (e.g. pix2pixHD clusters its instance features)."""


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

    if m.gan_mode not in ("vanilla", "lsgan", "hinge"):
        raise ConfigError(f"model.gan_mode: {m.gan_mode!r} is not vanilla, lsgan or hinge")
    if m.lambda_temporal < 0:
        raise ConfigError(f"model.lambda_temporal must be >= 0, got {m.lambda_temporal}")


def set_requires_grad(nets, flag: bool) -> None:
    for net in nets if isinstance(nets, (list, tuple)) else [nets]:
        for p in net.parameters():
            p.requires_grad_(flag)
