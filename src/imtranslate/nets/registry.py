"""Nets by name, so a checkpoint can rebuild a net from ``(name, net.config)`` alone."""
from __future__ import annotations

import inspect

import torch.nn as nn

NETS: dict[str, type[nn.Module]] = {}


def register_net(name: str):
    """Class decorator: make the net buildable as ``build_net(name, **kwargs)``."""

    def decorate(cls):
        if name in NETS:
            raise ValueError(f"a net called {name!r} is already registered ({NETS[name].__name__})")
        NETS[name] = cls
        cls.net_name = name
        return cls

    return decorate


def build_net(name: str, **kwargs) -> nn.Module:
    """Build the net registered as ``name`` with constructor keyword arguments ``kwargs``.

    ``surgery`` (not a constructor argument) rebuilds a compressed net: the default net is built,
    then pruned widths / separable convs are applied (:mod:`imtranslate.nets.surgery`)."""
    surgery = kwargs.pop("surgery", None)
    if name not in NETS:
        raise ValueError(f"unknown net {name!r}; known nets: {', '.join(sorted(NETS))}")
    cls = NETS[name]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        accepted = ", ".join(inspect.signature(cls).parameters)
        raise ValueError(f"net {name!r}: {e}; it accepts: {accepted}") from None
    net = cls(**kwargs)
    if surgery:
        from .surgery import apply_surgery

        apply_surgery(net, surgery)
        net.config = {**net.config, "surgery": surgery}
    return net


def init_config(local_vars: dict) -> dict:
    """A net's constructor arguments, from ``locals()`` taken first thing in its ``__init__``.

    Every net stores this as ``self.config`` (plain JSON types), so that
    ``build_net(net.net_name, **net.config)`` rebuilds an identical net.
    """
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in local_vars.items()
        if k not in ("self", "__class__")
    }
