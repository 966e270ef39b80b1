"""Nets changed after construction (pruned channels, separable convolutions) rebuilt from their
config alone.

A compressed net keeps its constructor kwargs and adds one more, ``surgery``::

    {"separable": ["levels.0.skip.0", ...],             # convs replaced by depthwise + pointwise
     "shapes": {"ups.1.0": [c_in, c_out, groups], ...},  # every layer whose widths differ
     "params": {"levels.0.noise_strength": [1, 24, 1, 1]}}  # parameters a net holds itself

:func:`apply_surgery` builds nothing itself: :func:`imtranslate.nets.build_net` builds the default
net, then this replaces the listed convs by :class:`~imtranslate.nets.layers.SeparableConv2d` and
gives every listed layer its saved widths (fresh, uninitialised tensors: the checkpoint's weights
are loaded next). :func:`record_surgery` writes the entry by comparing a changed net with the
default one. Which channels were kept is the pruner's business (``imtranslate.compress``); a
rebuilt net only needs the shapes, so this works for every net without touching its constructor.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import Conv2d, SeparableConv2d

_NORMS = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)


def _shape(m: nn.Module) -> list[int] | None:
    """[c_in, c_out, groups] of a layer whose widths can change; None for other modules."""
    if isinstance(m, nn.ConvTranspose2d):
        return [m.in_channels, m.out_channels, m.groups]
    if isinstance(m, nn.Conv2d):
        return [m.in_channels, m.out_channels, m.groups]
    if isinstance(m, nn.Linear):
        return [m.in_features, m.out_features, 1]
    if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
        return [m.num_features, m.num_features, 1]
    if isinstance(m, nn.GroupNorm):
        return [m.num_channels, m.num_channels, m.num_groups]
    if isinstance(m, nn.PReLU):
        return [m.num_parameters, m.num_parameters, 1]
    return None


def _fresh(param: nn.Parameter | None, shape) -> nn.Parameter | None:
    if param is None:
        return None
    return nn.Parameter(torch.empty(shape, dtype=param.dtype, device=param.device), param.requires_grad)


def _resize(m: nn.Module, c_in: int, c_out: int, groups: int) -> None:
    """Give layer ``m`` these widths in place (tensors uninitialised; weights are loaded next)."""
    if isinstance(m, nn.Conv2d):  # nn.ConvTranspose2d is not a subclass of nn.Conv2d
        m.in_channels, m.out_channels, m.groups = c_in, c_out, groups
        m.weight = _fresh(m.weight, (c_out, c_in // groups, *m.kernel_size))
        m.bias = _fresh(m.bias, (c_out,))
    elif isinstance(m, nn.ConvTranspose2d):
        m.in_channels, m.out_channels, m.groups = c_in, c_out, groups
        m.weight = _fresh(m.weight, (c_in, c_out // groups, *m.kernel_size))
        m.bias = _fresh(m.bias, (c_out,))
    elif isinstance(m, nn.Linear):
        m.in_features, m.out_features = c_in, c_out
        m.weight = _fresh(m.weight, (c_out, c_in))
        m.bias = _fresh(m.bias, (c_out,))
    elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
        m.num_features = c_out
        m.weight, m.bias = _fresh(m.weight, (c_out,)), _fresh(m.bias, (c_out,))
        for name in ("running_mean", "running_var"):
            if getattr(m, name, None) is not None:
                setattr(m, name, torch.zeros(c_out, device=getattr(m, name).device))
    elif isinstance(m, nn.GroupNorm):
        m.num_channels, m.num_groups = c_out, groups
        m.weight, m.bias = _fresh(m.weight, (c_out,)), _fresh(m.bias, (c_out,))
    elif isinstance(m, nn.PReLU):
        m.num_parameters = c_out
        m.weight = _fresh(m.weight, (c_out,))
    else:
        raise ValueError(f"cannot change the widths of a {type(m).__name__}")


def _set_module(net: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, new)


def separable_like(conv: nn.Conv2d) -> SeparableConv2d:
    """A depthwise k x k + pointwise 1x1 pair with ``conv``'s shape, stride, padding and bias."""
    sep = SeparableConv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0],
                          conv.padding[0], padding_mode=conv.padding_mode, bias=conv.bias is not None)
    return sep.to(device=conv.weight.device, dtype=conv.weight.dtype)


def can_be_separable(m: nn.Module) -> bool:
    """A plain square conv with k > 1, one group, no dilation (what :class:`SeparableConv2d` replaces)."""
    return (isinstance(m, nn.Conv2d) and not isinstance(m, SeparableConv2d) and m.groups == 1
            and m.kernel_size[0] == m.kernel_size[1] > 1 and m.dilation == (1, 1)
            and m.stride[0] == m.stride[1] and m.padding[0] == m.padding[1] and not isinstance(m.padding, str))


def apply_surgery(net: nn.Module, surgery: dict) -> nn.Module:
    """Turn a freshly built default net into the compressed one described by ``surgery``."""
    unknown = set(surgery) - {"separable", "shapes", "params"}
    if unknown:
        raise ValueError(f"surgery: unknown entries {sorted(unknown)} (known: separable, shapes, params)")
    modules = dict(net.named_modules())
    for name in surgery.get("separable", []):
        if name not in modules or not can_be_separable(modules[name]):
            raise ValueError(f"surgery: {name!r} is not a conv of this net that can be made separable")
        _set_module(net, name, separable_like(modules[name]))
    modules = dict(net.named_modules())
    for name, (c_in, c_out, groups) in surgery.get("shapes", {}).items():
        if name not in modules:
            raise ValueError(f"surgery: the net has no layer {name!r}")
        _resize(modules[name], int(c_in), int(c_out), int(groups))
    for name, shape in surgery.get("params", {}).items():
        owner, _, attr = name.rpartition(".")
        mod = modules.get(owner) if owner else net
        if mod is None or not isinstance(mod._parameters.get(attr), nn.Parameter):
            raise ValueError(f"surgery: the net has no parameter {name!r}")
        setattr(mod, attr, _fresh(mod._parameters[attr], tuple(int(v) for v in shape)))
    return net


def _own_params(net: nn.Module) -> dict[str, torch.Size]:
    """Parameters held by modules :func:`_shape` does not describe (a net's own per-channel scales)."""
    out = {}
    for mname, m in net.named_modules():
        if _shape(m) is None:
            for pname, p in m.named_parameters(recurse=False):
                out[f"{mname}.{pname}" if mname else pname] = p.shape
    return out


def record_surgery(net: nn.Module, default: nn.Module, separable: list[str] = ()) -> dict:
    """The ``surgery`` entry that rebuilds ``net`` from ``default`` (the net its kwargs build)."""
    ref = {n: _shape(m) for n, m in default.named_modules()}
    shapes = {}
    for name, m in net.named_modules():
        s = _shape(m)
        if s is not None and ref.get(name) != s:
            shapes[name] = s
    ref_params = _own_params(default)
    params = {n: list(s) for n, s in _own_params(net).items() if n in ref_params and ref_params[n] != s}
    out: dict = {}
    if separable:
        out["separable"] = list(separable)
    if shapes:
        out["shapes"] = shapes
    if params:
        out["params"] = params
    return out


__all__ = ["apply_surgery", "record_surgery", "separable_like", "can_be_separable", "Conv2d"]
