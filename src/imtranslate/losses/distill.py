"""Knowledge distillation: a student generator learns to give its teacher's outputs and inner
features (GAN Compression, Li et al. 2020: output + intermediate-feature distillation).

* :func:`output_distill` — L1 between the student's and the teacher's outputs.
* :func:`feature_distill` — mean over tapped layers of the MSE between the student's features,
  mapped by a 1x1 adapter where the widths differ, and the teacher's (resized bilinearly when
  the maps differ in size, e.g. a student with fewer levels).
* :class:`DistillLoss` — both, with the adapters as trainable parameters (give them to the
  student's optimiser). Returns **unweighted** terms; a task weights them from its config.
* :class:`FeatureTaps` — forward hooks that collect the outputs of named modules of a net, so any
  net in the project can be distilled without changing its ``forward``.

The teacher is any checkpoint of the same task, rebuilt with
:func:`imtranslate.checkpoint_file.load_generator` by the caller (this layer knows no files).
Identical student and teacher give exactly zero (the adapters start as identities).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def output_distill(student_out: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
    """L1 between the student's output and the (detached) teacher's."""
    return (student_out.float() - teacher_out.detach().float()).abs().mean()


def _adapter(c_s: int, c_t: int) -> nn.Module:
    """1x1 conv from ``c_s`` to ``c_t`` channels, starting as the identity on the shared channels
    (a pruned student keeps the teacher's channel order, so channel i maps to channel i)."""
    if c_s == c_t:
        return nn.Identity()
    conv = nn.Conv2d(c_s, c_t, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for i in range(min(c_s, c_t)):
            conv.weight[i, i, 0, 0] = 1.0
    return conv


def feature_distill(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                    adapters: Sequence[nn.Module] | None = None) -> torch.Tensor:
    """Mean over layers of ``MSE(adapter(s), t)``; ``t`` detached, ``s`` resized to ``t``'s map."""
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"feature_distill: {len(student_feats)} student features, {len(teacher_feats)} teacher's")
    if not student_feats:
        raise ValueError("feature_distill: no features to compare")
    terms = []
    for i, (s, t) in enumerate(zip(student_feats, teacher_feats)):
        s = s.float()
        if adapters is not None:
            s = adapters[i](s)
        if s.shape[1] != t.shape[1]:
            raise ValueError(f"feature_distill: layer {i} has {s.shape[1]} student channels and {t.shape[1]} "
                             "teacher channels; give an adapter (DistillLoss builds them)")
        if s.shape[-2:] != t.shape[-2:]:
            s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
        terms.append(F.mse_loss(s, t.detach().float()))
    return torch.stack(terms).mean()


class DistillLoss(nn.Module):
    """Output + intermediate-feature distillation with 1x1 adapters where the widths differ.

    ``student_channels[i]`` / ``teacher_channels[i]``: the channels of the i-th tapped feature.
    ``forward`` returns ``output term + feature term`` (each unweighted; :meth:`terms` gives them
    apart). With no channels given it is output distillation only.
    """

    def __init__(self, student_channels: Sequence[int] = (), teacher_channels: Sequence[int] = ()):
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError("DistillLoss: student_channels and teacher_channels differ in length")
        self.adapters = nn.ModuleList(_adapter(int(s), int(t)) for s, t in zip(student_channels, teacher_channels))

    def terms(self, student_out, teacher_out, student_feats=(), teacher_feats=()) -> dict[str, torch.Tensor]:
        out = {"out": output_distill(student_out, teacher_out)}
        if len(self.adapters):
            out["feat"] = feature_distill(student_feats, teacher_feats, self.adapters)
        return out

    def forward(self, student_out, teacher_out, student_feats=(), teacher_feats=()) -> torch.Tensor:
        return sum(self.terms(student_out, teacher_out, student_feats, teacher_feats).values())


class FeatureTaps:
    """Collect the outputs of the modules ``names`` of ``net`` on every forward pass.

    ``taps = FeatureTaps(net, names); net(x); feats = taps.take()`` (in ``names`` order; the list
    is emptied). ``taps.remove()`` takes the hooks off. Usable as a context manager.
    """

    def __init__(self, net: nn.Module, names: Sequence[str]):
        modules = dict(net.named_modules())
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise ValueError(f"FeatureTaps: the net has no modules {unknown[:3]}")
        self.names = list(names)
        self._out: dict[str, torch.Tensor] = {}
        self._hooks = [modules[n].register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name):
        def hook(module, args, output):
            self._out[name] = output[0] if isinstance(output, (list, tuple)) else output
        return hook

    def take(self) -> list[torch.Tensor]:
        missing = [n for n in self.names if n not in self._out]
        if missing:
            raise RuntimeError(f"FeatureTaps: modules {missing[:3]} did not run in the last forward pass")
        feats = [self._out[n] for n in self.names]
        self._out = {}
        return feats

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def feature_layers(net: nn.Module, n: int = 4) -> list[str]:
    """Names of ``n`` convolutions spread evenly through ``net`` (its inner features), skipping the
    last one (the output layer, which :func:`output_distill` already covers)."""
    convs = [name for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][:-1]
    if n <= 0 or not convs:
        return []
    if len(convs) <= n:
        return convs
    step = len(convs) / n
    return [convs[int((i + 0.5) * step)] for i in range(n)]


def layer_channels(net: nn.Module, names: Sequence[str]) -> list[int]:
    """Output channels of the named conv layers (what :class:`DistillLoss` needs); a module made
    of convs (e.g. a separable pair) gives its last conv's."""
    modules = dict(net.named_modules())
    out = []
    for n in names:
        m = modules[n]
        if not hasattr(m, "out_channels"):
            convs = [c for c in m.modules() if isinstance(c, (nn.Conv2d, nn.ConvTranspose2d))]
            if not convs:
                raise ValueError(f"layer_channels: {n!r} holds no convolution")
            m = convs[-1]
        out.append(int(m.out_channels))
    return out
