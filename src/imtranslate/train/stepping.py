"""How the training loop turns a task's loss into an update: the same maths as
``backward(); step()``, run the way this machine does it fastest.

* **Gradient all-reduce** under torchrun: the mean gradient over processes, as
  DistributedDataParallel computes it, before each optimiser step.
* **fp16 loss scaling** (``train.amp=fp16`` on CUDA): a ``GradScaler`` scales the loss, unscales
  the gradients, skips the step when they overflowed and adapts the scale.
* **Step inside backward** (``train.step_in_backward``, single process without loss scaling):
  each parameter's Adam update runs as soon as its gradient is complete, and the gradient is
  freed, so the step never holds every gradient at once (pix2pix-256: -0.22 GB).

A task calls ``self.backward_step(loss, opt_key)``; the loop attaches a :class:`Stepper` with
:func:`attach`. Tasks built outside the loop keep the plain ``PlainStepper`` of tasks/base.py.
"""
from __future__ import annotations

import torch

from . import distributed


class Stepper:
    """Gradients and optimiser steps for one task; see the module docstring."""

    def __init__(self, task, world: int = 1):
        self.task = task
        self.world = world
        amp = task.cfg.train.amp if task.device.type == "cuda" else "none"
        # fp16 needs loss scaling; bf16 has fp32's exponent range and does not
        self.scaler = torch.amp.GradScaler("cuda", enabled=(amp == "fp16"))
        self.in_backward = task.cfg.train.step_in_backward and world == 1 and not self.scaler.is_enabled()
        self.hooked: set[str] = set()  # optimisers whose parameters step inside backward()
        self._stepping: torch.optim.Optimizer | None = None  # the optimiser stepping inside backward()
        self._handles: dict[str, list] = {}
        self.skipped_steps = 0  # fp16: steps the scaler skipped (overflow), not divergence

    # ---- hooks --------------------------------------------------------------------------------
    def hook_all(self) -> None:
        for key in list(self.task.optimizers):
            self.hook(key)

    def hook(self, key: str) -> None:
        """Let optimiser ``key`` step inside backward(): a hook on every one of its parameters.

        Parameters frozen now (a staged schedule) get their hook too, so a later stage that
        unfreezes them steps them; a frozen parameter accumulates no gradient and its hook
        does not fire."""
        for h in self._handles.pop(key, []):
            h.remove()
        self.hooked.discard(key)
        if not self.in_backward:
            return
        opt = self.task.optimizers[key]
        handles = []
        for p in (p for g in opt.param_groups for p in g["params"]):
            frozen = not p.requires_grad
            p.requires_grad_(True)  # torch registers hooks only on tensors that require grad
            handles.append(p.register_post_accumulate_grad_hook(self._make_hook(key)))
            p.requires_grad_(not frozen)
        self._handles[key] = handles
        self.hooked.add(key)

    def _make_hook(self, key: str):
        def hook(p: torch.Tensor) -> None:
            # Called once per backward pass when p's gradient is complete (every use of p summed),
            # i.e. after every node that saved p has run, so p may change in place. The other
            # parameters' gradients are None here (zeroed before backward, freed after their own
            # step), so a whole step of the optimiser updates p alone (~45 us of bookkeeping per
            # call: ~2 ms per pix2pix-256 step).
            opt = self.task.optimizers[key]
            if self._stepping is opt:
                opt.step()
                p.grad = None
        return hook

    def net_replaced(self, key: str, net) -> None:
        """The task rebuilt a net (and the optimisers over it): hook the new parameters."""
        self.hook_all()

    # ---- the step -----------------------------------------------------------------------------
    def backward_step(self, loss, opt, opt_key, inputs=None, retain_graph=False) -> None:
        opt.zero_grad(set_to_none=True)
        if opt_key in self.hooked:
            self._stepping = opt
            try:
                loss.backward(inputs=inputs, retain_graph=retain_graph)
            finally:
                self._stepping = None
            return
        self.scaler.scale(loss).backward(inputs=inputs, retain_graph=retain_graph)
        if self.world > 1:  # torchrun: mean gradient over processes, as DistributedDataParallel does
            distributed.average_gradients([p for g in opt.param_groups for p in g["params"]], self.world)
        if self.scaler.is_enabled():
            scale = self.scaler.get_scale()
            self.scaler.step(opt)
            self.scaler.update()
            if self.scaler.get_scale() < scale:  # inf/NaN gradients: the step was skipped
                self.skipped_steps += 1
        else:
            opt.step()

    # ---- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler.is_enabled() else None

    def load_state_dict(self, state: dict | None) -> None:
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)


def attach(task, world: int = 1) -> Stepper:
    """Give ``task`` the loop's stepper (all-reduce, loss scaling, step-in-backward)."""
    stepper = Stepper(task, world)
    task.stepper = stepper
    stepper.hook_all()
    task._net_listeners.append(stepper.net_replaced)
    return stepper


def build_task(cfg, device="cpu", world: int = 1):
    """The task of ``cfg`` built on ``device`` with the loop's stepper attached (what ``train`` runs)."""
    from ..allocator import reuse_freed_memory
    from ..tasks import get_task

    if cfg.train.malloc == "reuse":
        reuse_freed_memory()
    task = get_task(cfg.task)(cfg, device)
    attach(task, world)
    return task
