"""Structural channel pruning of any generator, with Torch-Pruning's dependency graph.

A *layer* here is one Torch-Pruning group: a conv whose output channels are cut, together with
everything that must follow (the next convs' input channels, norm layers, the other side of a
residual sum or of a concatenation). Convs tied by a residual sum form one layer with one ratio.
Layers whose cut would change the net's output (the output head, a conv feeding a pixel
shuffle or a global residual with the input picture) are found by trying a one-channel cut on
a copy and are never cut; :func:`prunable_layers` lists what can be cut.

Importance criterion (``importance=``):

* ``"l2"`` — the L2 norm of each channel's weights, summed over the whole group
  (its filter, the norm's scale and the next layers' input slices): cheap and data-free.
* ``"activation"`` (default) — the mean absolute value of each channel's conv output on calibration
  inputs (before a norm layer, which would erase it).
* ``"bn"`` — the batch-norm scale |gamma| (nets with ``norm=batch`` only).

docs/COMPRESS.md has the measurement that picked the default.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..nets import build_net
from ..nets.surgery import record_surgery

IMPORTANCES = ("l2", "activation", "bn")
#: measured (docs/COMPRESS.md): a one-shot 1/4 cut of the trained pix2pix U-Net keeps 17.64 dB
#: against the unpruned net by activation, 16.44 dB by l2 or bn
DEFAULT_IMPORTANCE = "activation"


def _tp():
    import torch_pruning as tp  # imported here: it prints a deprecation warning at import time

    return tp


@dataclass
class Layer:
    """One prunable group: ``name`` its root conv, ``channels`` its current output width."""

    name: str
    channels: int
    coupled: tuple[str, ...]  # every conv whose output channels this group cuts


#: attribute of a parameter made by a cut: ``[(dim, kept indices), ...]`` relative to the parameter
#: it was cut from, so optimiser moments and EMA averages can be cut the same way
#: (:func:`apply_kept`; ``Task.swap_parameters``, ``EMA.follow``) instead of starting afresh
KEPT = "_imtranslate_kept"


class _Recording:
    """While Torch-Pruning cuts (``with recording:``), every parameter it makes records which
    indices of the original it kept; one object chains the cuts of several ``with`` blocks."""

    def __init__(self):
        self.made: dict[int, tuple] = {}  # id -> (param, ops): the params stay alive, so ids stay unique

    def __enter__(self):
        base = _tp().pruner.function.BasePruningFunc
        self._base, self._orig = base, base._prune_parameter_and_grad
        made, orig = self.made, self._orig

        def cut(pruner, weight, keep_idxs, pruning_dim):
            new = orig(pruner, weight, keep_idxs, pruning_dim)
            ops = list(made[id(weight)][1]) if id(weight) in made else []
            ops.append((int(pruning_dim), [int(i) for i in keep_idxs]))
            made[id(new)] = (new, ops)
            setattr(new, KEPT, ops)
            return new

        base._prune_parameter_and_grad = cut
        return self

    def __exit__(self, *exc):
        self._base._prune_parameter_and_grad = self._orig


def apply_kept(t: torch.Tensor, ops) -> torch.Tensor:
    """Cut tensor ``t`` (shaped like the parameter before the cut) as the parameter was cut."""
    for dim, idxs in ops:
        t = t.index_select(dim, torch.as_tensor(idxs, dtype=torch.long, device=t.device))
    return t


def _dead_convs(net: nn.Module, dg) -> list[str]:
    """Convs the traced output does not depend on (e.g. the coarse output heads of a multi-scale
    net, used only by its training losses)."""
    return [n for m, n in _convs(net).items() if m not in dg.module2node]


class _Tracing:
    """Nets' tracing switches on while Torch-Pruning traces (see nets/face_enhancer.py)."""

    def __enter__(self):
        from ..nets import face_enhancer

        self._old, face_enhancer.TRACING_FOR_PRUNING = face_enhancer.TRACING_FOR_PRUNING, True

    def __exit__(self, *exc):
        from ..nets import face_enhancer

        face_enhancer.TRACING_FOR_PRUNING = self._old


def _graph(net: nn.Module, example, fwd):
    with _Tracing():
        return _graph_traced(net, example, fwd)


def _graph_traced(net: nn.Module, example, fwd):
    """Torch-Pruning's dependency graph of ``fwd(net, example)``. Convs off the output's path are
    traced too, as extra outputs, so cutting the layers that feed them cuts their inputs as well
    (measured: without this a multires net's decoder cut left its coarse heads one channel too wide)."""
    tp = _tp()
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=example, forward_fn=fwd, verbose=False)
    dead = _dead_convs(net, dg)
    if not dead:
        return dg

    def fwd_all(m, x):
        got = []
        mods = dict(m.named_modules())
        hooks = [mods[n].register_forward_hook(lambda mod, a, out: got.append(out)) for n in dead]
        try:
            out = fwd(m, x)
        finally:
            for h in hooks:
                h.remove()
        return [out, *got]

    dg = tp.DependencyGraph().build_dependency(net, example_inputs=example, forward_fn=fwd_all, verbose=False)
    dg.dead_convs = dead
    return dg


def _convs(net: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}


def _groups(net: nn.Module, dg) -> list[tuple[str, nn.Module, tuple[str, ...]]]:
    """(root name, root module, coupled conv names) for every group rooted at a conv."""
    tp = _tp()
    names = _convs(net)
    out = []
    for group in dg.get_all_groups(root_module_types=[nn.Conv2d, nn.ConvTranspose2d]):
        root = group[0].dep.target.module
        if root not in names or getattr(root, "groups", 1) != 1:
            continue
        coupled = tuple(sorted({names[d.target.module] for d, _ in group
                                if d.target.module in names and d.handler in (tp.prune_conv_out_channels,)}))
        out.append((names[root], root, coupled or (names[root],)))
    return out


def _touches_output(group, outputs) -> bool:
    return any(d.target in outputs or d.source in outputs for d, _ in group)


def _probe(net, example, fwd, ref, cuts) -> bool:
    """Does cutting ``cuts`` on a copy keep the output shape (and run at all)?"""
    trial = copy.deepcopy(net)
    try:
        prune_channels(trial, example, fwd, cuts)
        with torch.no_grad():
            return fwd(trial, example).shape == ref.shape
    except Exception:  # noqa: BLE001 - a cut the graph cannot carry through
        return False


def prunable_layers(net: nn.Module, example, fwd) -> list[Layer]:
    """Every group whose cut keeps the net's output shape.

    Groups that reach a node of the traced graph without consumers (the output, and the heads of
    branches traced as extra outputs) are left out. Then one copy with one channel cut from every
    remaining group must run with the same output shape; if it does not (an operation the graph
    does not model), each group is tried on its own copy and the failing ones are left out.
    """
    tp = _tp()
    with torch.no_grad():
        ref = fwd(net, example)
    dg = _graph(net, example, fwd)
    outputs = {node for node in dg.module2node.values() if not node.outputs}
    dead = set(getattr(dg, "dead_convs", []))
    layers = []
    for name, root, coupled in _groups(net, dg):
        if root.out_channels < 2 or dead & set(coupled):  # an output head of a branch
            continue
        group = dg.get_pruning_group(root, tp.prune_conv_out_channels, idxs=[0])
        if _touches_output(group, outputs):
            continue
        layers.append(Layer(name, int(root.out_channels), coupled))
    if layers and not _probe(net, example, fwd, ref, {l.name: 1 for l in layers}):
        layers = [l for l in layers if _probe(net, example, fwd, ref, {l.name: 1})]
    return layers


def _activation_scores(net: nn.Module, example, fwd, names) -> dict[str, torch.Tensor]:
    modules = dict(net.named_modules())
    sums: dict[str, torch.Tensor] = {}

    def hook(name):
        def f(mod, args, out):
            v = out.detach().abs().float().mean(dim=(0, 2, 3))
            sums[name] = sums.get(name, 0) + v
        return f

    hooks = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for x in (example if isinstance(example, (list, tuple)) else [example]):  # one input or a list of them
                fwd(net, x)
    finally:
        for h in hooks:
            h.remove()
    return sums


def channel_scores(net: nn.Module, group, root_name: str, importance: str, acts=None) -> torch.Tensor:
    """Per-output-channel importance of a group (higher = keep)."""
    tp = _tp()
    if importance == "activation":
        return acts[root_name]
    if importance == "bn":
        imp = tp.importance.BNScaleImportance()
        scores = imp(group)
        if scores is not None:
            return scores
    if importance not in IMPORTANCES:
        raise ValueError(f"unknown importance {importance!r}; choose one of {IMPORTANCES}")
    return tp.importance.MagnitudeImportance(p=2, group_reduction="sum", normalizer=None)(group)


def prune_channels(net: nn.Module, example, fwd, cuts: dict[str, int], importance: str = "l2",
                   calibration=None) -> dict[str, int]:
    """Remove ``cuts[name]`` output channels (the least important) of each named group, in place.

    Returns the widths after the cut. The graph is rebuilt once per call; groups are cut one after
    the other on it, as Torch-Pruning's own pruners do.
    """
    tp = _tp()
    dg = _graph(net, example, fwd)
    modules = dict(net.named_modules())
    acts = _activation_scores(net, calibration if calibration is not None else example, fwd,
                              [n for n in cuts]) if importance == "activation" else None
    widths = {}
    recording = _Recording()  # one record over every group cut here: a conv cut by two groups chains
    for name, n_cut in cuts.items():
        root = modules[name]
        n_cut = min(int(n_cut), root.out_channels - 1)
        if n_cut <= 0:
            widths[name] = root.out_channels
            continue
        group = dg.get_pruning_group(root, tp.prune_conv_out_channels, idxs=list(range(root.out_channels)))
        scores = channel_scores(net, group, name, importance, acts)
        drop = torch.argsort(scores.float())[:n_cut].tolist()
        group = dg.get_pruning_group(root, tp.prune_conv_out_channels, idxs=sorted(drop))
        if not dg.check_pruning_group(group):
            widths[name] = root.out_channels
            continue
        with recording:
            group.prune()
        widths[name] = root.out_channels
    return widths


def mark_compressed(net: nn.Module, separable=None) -> nn.Module:
    """Write the net's ``surgery`` into its config, so ``build_net(name, **net.config)`` (and so a
    checkpoint) rebuilds it with these widths."""
    base = {k: v for k, v in net.config.items() if k != "surgery"}
    old = net.config.get("surgery") or {}
    separable = list(old.get("separable", [])) if separable is None else list(separable)
    default = build_net(net.net_name, **({"surgery": {"separable": separable}} if separable else {}), **base)
    surgery = record_surgery(net, default, separable)
    net.config = {**base, **({"surgery": surgery} if surgery else {})}
    return net


# ---- size and speed --------------------------------------------------------------------------------
def sum_over_forward(net: nn.Module, example, fwd, types, per_call) -> int:
    """Sum of ``per_call(module, args, output)`` over every call of a module of ``types`` during
    one forward pass of ``example`` (no gradients)."""
    total = [0]
    hooks = [m.register_forward_hook(lambda mod, args, out: total.__setitem__(0, total[0] + per_call(mod, args, out)))
             for m in net.modules() if isinstance(m, types)]
    try:
        with torch.no_grad():
            fwd(net, example)
    finally:
        for h in hooks:
            h.remove()
    return int(total[0])


def _macs(mod, args, out) -> int:
    if isinstance(mod, nn.Conv2d):
        return out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
    if isinstance(mod, nn.ConvTranspose2d):
        return args[0].numel() * (mod.out_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
    return out.numel() * mod.in_features  # nn.Linear


def count_macs(net: nn.Module, example, fwd) -> int:
    """Multiply-adds of the convolutions and linear layers for one forward pass of ``example``."""
    return sum_over_forward(net, example, fwd, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear), _macs)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def latency_ms(run, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``run()`` in milliseconds over ``repeats`` calls (after ``warmup``)."""
    with torch.no_grad():
        for _ in range(warmup):
            run()
        times = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
