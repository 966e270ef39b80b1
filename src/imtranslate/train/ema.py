"""Exponential moving average of a net's weights, the usual way to get a smoother generator."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema = decay * ema + (1 - decay) * weights`` after every step; buffers are copied.

    Before ``start`` the average simply tracks the weights, so early noise is not averaged in.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999, start: int = 0):
        self.decay = decay
        self.start = start
        self.follow(net)

    def follow(self, net: nn.Module) -> None:
        """Average ``net`` from now on (the net was rebuilt, e.g. pruned). Where a pruner cut a
        parameter, the average is cut the same way and goes on; other changed shapes start from
        the net's current weights."""
        from ..prune.channels import KEPT, apply_kept

        old = dict(self.module.named_parameters()) if hasattr(self, "module") else {}
        live = dict(net.named_parameters())
        self.net = net
        self.module = copy.deepcopy(net).eval()
        with torch.no_grad():
            for name, p in self.module.named_parameters():
                p.requires_grad_(False)
                src, ops = old.get(name), getattr(live[name], KEPT, None)
                if src is not None and ops:
                    src = apply_kept(src, ops)
                if src is not None and src.shape == p.shape:
                    p.copy_(src)

    @torch.no_grad()
    def update(self, step: int) -> None:
        ema_p = [p for p in self.module.parameters()]
        net_p = [p.detach() for p in self.net.parameters()]
        if step < self.start:
            torch._foreach_copy_(ema_p, net_p)
        else:
            # one fused call over all tensors instead of a Python loop of small kernels
            torch._foreach_lerp_(ema_p, net_p, 1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), self.net.buffers()):
            b_ema.copy_(b)
