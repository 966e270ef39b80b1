"""Depthwise-separable conversion (SPEC S4): each k x k conv becomes a depthwise k x k conv and a
pointwise 1x1 conv (:class:`~imtranslate.nets.layers.SeparableConv2d`), initialised from the
original weights and then distilled from the teacher (:func:`imtranslate.prune.rounds` does the
fine-tuning).

Initialisation: for every input channel c the original filters ``W[:, c]`` (C_out x k*k) are
replaced by their best rank-1 approximation ``pw[:, c] * dw[c]`` (the first singular pair), which is
exactly what a depthwise-then-pointwise pair can express; the bias moves to the pointwise conv.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..nets.surgery import _set_module, can_be_separable, separable_like
from .channels import mark_compressed


def convertible(net: nn.Module, min_channels: int = 8) -> list[str]:
    """Names of the convs worth converting: plain k x k (k > 1) with at least ``min_channels`` in
    and out (on 3-channel input or output layers the saving is nil and the rank-1 error large)."""
    return [n for n, m in net.named_modules()
            if can_be_separable(m) and m.in_channels >= min_channels and m.out_channels >= min_channels]


@torch.no_grad()
def _init_from(sep, conv: nn.Conv2d) -> None:
    w = conv.weight.detach().float()  # (C_out, C_in, k, k)
    c_out, c_in, kh, kw = w.shape
    m = w.permute(1, 0, 2, 3).reshape(c_in, c_out, kh * kw)  # per input channel: C_out x k*k
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    sqrt_s = s[:, 0].clamp_min(0).sqrt()
    sep.dw.weight.copy_((vh[:, 0, :] * sqrt_s[:, None]).reshape(c_in, 1, kh, kw))
    sep.pw.weight.copy_((u[:, :, 0] * sqrt_s[:, None]).t().reshape(c_out, c_in, 1, 1))
    if conv.bias is not None:
        sep.pw.bias.copy_(conv.bias)


def make_separable(net: nn.Module, names: list[str] | None = None) -> list[str]:
    """Replace the convs ``names`` (default: :func:`convertible`) in place; returns the names.
    The net's config records them, so a checkpoint rebuilds the separable net alone."""
    names = convertible(net) if names is None else list(names)
    modules = dict(net.named_modules())
    for n in names:
        conv = modules[n]
        if not can_be_separable(conv):
            raise ValueError(f"{n}: a {type(conv).__name__} cannot be made separable")
        sep = separable_like(conv)
        _init_from(sep, conv)
        sep.train(conv.training)
        _set_module(net, n, sep)
    done = list((net.config.get("surgery") or {}).get("separable", []))
    mark_compressed(net, separable=done + names)
    return names
