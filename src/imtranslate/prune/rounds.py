"""Quality-gated channel pruning in rounds (SPEC S5): cut -> check each layer -> fine-tune -> check.

One round, for every prunable layer ``L`` (a Torch-Pruning group, :mod:`.prune`) with ratio r_L > 0:

1. **Cut and check alone.** ``floor(r_L * width)`` channels of ``L`` (the least important) are
   cut from a copy of the current net and the copy's output is compared with the teacher's on the
   held-out inputs with the quality index (``psnr:30`` = PSNR >= 30 dB against the teacher,
   ``ssim:0.9``, ``l1:0.05`` = L1 <= 0.05). A layer whose cut breaks the index is restored (not
   cut this round) and its ratio halved for the next round.
2. **Cut together, fine-tune.** Every passing cut is applied to the net, which is then trained
   for ``round_steps`` steps with the task's own losses (:meth:`Task.train_step`) plus output and
   feature distillation from the teacher (:class:`~imtranslate.losses.distill.DistillLoss`).
3. **Check the whole.** If the fine-tuned net still meets the index the round is kept; otherwise
   the net goes back to its state before the round and the ratios of the layers cut in it are
   halved.

It stops after ``rounds`` rounds, when the MACs reach ``target_macs``, or when no layer can be cut
(every ratio would cut less than one channel). The task is any :class:`imtranslate.tasks.Task`
(duck-typed: ``generator_key``, ``nets``, ``replace_net``, ``train_step``, ``optimizers``), so a
task that prunes between its own training rounds calls :func:`prune_in_rounds` too.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .. import metrics
from ..errors import ConfigError
from ..losses.distill import DistillLoss, FeatureTaps, feature_layers, layer_channels
from .channels import (count_macs, count_params, latency_ms, mark_compressed, prunable_layers, prune_channels,
                       sum_over_forward)

QUALITY_METRICS = {"psnr": True, "ssim": True, "l1": False}  # name -> higher is better
#: how each layer's starting ratio is chosen: the same for all, or scaled by the layer's share of
#: the MACs / of the activation pixels (what norms, pads and activations process) — docs/COMPRESS.md
RATIO_BY = ("uniform", "macs", "pixels")
MAX_RATIO = 0.75


def _conv_pixels(net, example, fwd) -> int:
    """Output elements of every conv for one forward pass (what the norms, pads and activations
    after them process)."""
    return sum_over_forward(net, example, fwd, (nn.Conv2d, nn.ConvTranspose2d), lambda mod, a, out: out.numel())


def layer_costs(net, example, fwd, layers, by: str) -> dict[str, float]:
    """Per prunable layer, what its channels cost: the MACs (``by="macs"``) or conv output pixels
    (``"pixels"``) that cutting one of its channels saves (measured on a copy: its own convs and
    every consumer of its channels), times its width."""
    count = count_macs if by == "macs" else _conv_pixels
    base = count(net, example, fwd)
    cost = {}
    for l in layers:
        trial = copy.deepcopy(net)
        prune_channels(trial, example, fwd, {l.name: 1}, "l2")
        cost[l.name] = float(base - count(trial, example, fwd)) * l.channels
    return cost


def starting_ratios(net, example, fwd, layers, ratio: float, by: str) -> dict[str, float]:
    """``ratio`` for every layer (``"uniform"``), or ``ratio`` scaled by the layer's cost over the
    mean layer cost (:func:`layer_costs`), capped at :data:`MAX_RATIO`: the costly layers are cut
    harder, the cheap ones (which cost quality and save little time) less or not at all."""
    if by not in RATIO_BY:
        raise ConfigError(f"--ratio-by {by!r}: choose one of {', '.join(RATIO_BY)}")
    if by == "uniform" or not layers:
        return {l.name: ratio for l in layers}
    cost = layer_costs(net, example, fwd, layers, by)
    mean = sum(cost.values()) / len(cost) or 1.0
    return {n: min(MAX_RATIO, ratio * c / mean) for n, c in cost.items()}


@dataclass(frozen=True)
class Quality:
    metric: str
    threshold: float

    def passes(self, value: float) -> bool:
        return value >= self.threshold if QUALITY_METRICS[self.metric] else value <= self.threshold

    def __str__(self):
        return f"{self.metric}:{self.threshold:g}"


def parse_quality(text: str) -> Quality:
    """``"psnr:30"`` -> Quality("psnr", 30.0); a clear error for anything else."""
    name, _, value = str(text).partition(":")
    name = name.strip().lower()
    if name not in QUALITY_METRICS or not value:
        raise ConfigError(f"quality index {text!r}: give METRIC:THRESHOLD with METRIC one of "
                          f"{', '.join(QUALITY_METRICS)} (e.g. psnr:30, ssim:0.9, l1:0.05)")
    try:
        return Quality(name, float(value))
    except ValueError:
        raise ConfigError(f"quality index {text!r}: {value!r} is not a number") from None


def measure_quality(net, teacher_outputs, inputs, fwd, quality: Quality) -> float:
    """Mean of the index's metric of ``net``'s outputs against the teacher's, over held-out inputs."""
    was = net.training
    net.eval()
    vals = []
    with torch.no_grad():
        for A, ref in zip(inputs, teacher_outputs):
            out = fwd(net, A).float()
            vals.append(getattr(metrics, quality.metric)(out, ref.float()).mean())
    net.train(was)
    return float(torch.stack(vals).mean())


@dataclass
class RoundsResult:
    net: nn.Module
    table: list[dict] = field(default_factory=list)  # one row per round (and one for the start)
    ratios: dict[str, float] = field(default_factory=dict)


def _ms(row) -> str:
    return "" if row["latency_ms"] is None else f"{row['latency_ms']:.1f} ms, "


def _g_optimizer_key(task, G) -> str | None:
    ids = {id(p) for p in G.parameters()}
    for key, opt in task.optimizers.items():
        if any(id(p) in ids for g in opt.param_groups for p in g["params"]):
            return key
    return None


def _fine_tune(task, G, teacher, batches, steps, fwd, *, lambda_out, lambda_feat, n_feat, lr, step0, log):
    """``steps`` of the task's own step plus one distillation step each (its own Adam over G and
    the adapters), G in training mode; returns the last logs."""
    names = [n for n in feature_layers(teacher, n_feat) if n in dict(G.named_modules())] if lambda_feat > 0 else []
    distill = DistillLoss(layer_channels(G, names), layer_channels(teacher, names)).to(next(G.parameters()).device)
    opt = torch.optim.Adam(list(G.parameters()) + list(distill.parameters()), lr=lr, betas=(0.5, 0.999))
    logs = {}
    G.train()
    with FeatureTaps(G, names) as s_taps, FeatureTaps(teacher, names) as t_taps:
        for i in range(steps):
            batch = next(batches)
            for okey, o in task.optimizers.items():
                for g in o.param_groups:
                    g["lr"] = lr
            logs = dict(task.train_step(batch, step0 + i) or {})
            A = batch["A"]
            with torch.no_grad():
                t_out = fwd(teacher, A)
                t_feats = t_taps.take() if names else []
            s_out = fwd(G, A)
            s_feats = s_taps.take() if names else []
            terms = distill.terms(s_out, t_out, s_feats, t_feats)
            loss = lambda_out * terms["out"] + (lambda_feat * terms["feat"] if "feat" in terms else 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            logs["distill"] = float(loss.detach())
    G.eval()
    return logs


def prune_in_rounds(task, teacher: nn.Module, inputs: list, batches, fwd, *, ratio: float = 0.25, rounds: int = 3,
                    round_steps: int = 50, quality: str | Quality = "psnr:30", target_macs: float = 0,
                    importance: str = "activation", lambda_distill: float = 10.0, lambda_feat: float = 1.0,
                    feature_layers_n: int = 4, lr: float = 1e-4, latency_repeats: int = 5, step0: int = 0,
                    ratios: dict[str, float] | None = None, ratio_by: str = "uniform", check_whole: bool = True,
                    log=print) -> RoundsResult:
    """Prune ``task``'s generator in rounds against ``teacher`` (see the module doc).

    ``inputs``: held-out network inputs (list of tensors); ``batches``: an iterator of training
    batches already on the device (``task.to_device``); ``fwd(G, A)``: the full-size output of
    ``G`` for input ``A`` (the task's ``translate``). ``ratios`` (layer -> ratio) continues an
    earlier call; ``ratio_by`` sets the starting ratios (:func:`starting_ratios`).
    ``check_whole=False`` keeps the passing cuts even if the fine-tuned whole breaks the index
    (training goes on after the call and is the fine-tune: ``model.prune_rounds``,
    :mod:`imtranslate.train.pruning`). Returns the net (also put into the task), the per-round
    table and the ratios.
    """
    q = parse_quality(quality) if isinstance(quality, str) else quality
    if not 0 < ratio < 1:
        raise ConfigError(f"--ratio {ratio}: the share of each layer's channels cut per round must be in (0, 1)")
    key = task.generator_key
    G = task.nets[key]
    G.eval()
    teacher.eval()
    example = inputs[0]
    with torch.no_grad():
        t_outs = [fwd(teacher, A) for A in inputs]
    layers = {l.name: l for l in prunable_layers(G, example, fwd)}
    start = starting_ratios(G, example, fwd, list(layers.values()), ratio, ratio_by)
    ratios = {n: float(ratios.get(n, start[n])) if ratios else start[n] for n in layers}
    batches = itertools.cycle(batches) if isinstance(batches, list) else batches

    def row(r, net, qv, per_layer, held):
        return {"round": r, "macs": count_macs(net, example, fwd), "params": count_params(net),
                "latency_ms": latency_ms(lambda: fwd(net, example), latency_repeats) if latency_repeats > 0 else None,
                "quality": qv,
                "layers": per_layer, "held_back": held}

    table = [row(0, G, measure_quality(G, t_outs, inputs, fwd, q), {}, [])]
    log(f"start: {table[0]['macs'] / 1e6:.1f} M MACs, {table[0]['params'] / 1e3:.1f} k params, "
        f"{_ms(table[0])}{q.metric} {table[0]['quality']:.3f}; {len(layers)} prunable layers")
    for r in range(1, rounds + 1):
        if target_macs and table[-1]["macs"] <= target_macs:
            log(f"target of {target_macs / 1e6:.1f} M MACs reached")
            break
        widths = {n: dict(G.named_modules())[n].out_channels for n in layers}
        cuts = {n: math.floor(ratios[n] * widths[n]) for n in layers}
        cuts = {n: c for n, c in cuts.items() if 0 < c < widths[n]}
        if not cuts:
            log("no layer can be cut further")
            break
        per_layer, passing, held = {}, {}, []
        for n, c in cuts.items():  # 1. each cut alone, against the index
            trial = copy.deepcopy(G)
            prune_channels(trial, example, fwd, {n: c}, importance)
            qv = measure_quality(trial, t_outs, inputs, fwd, q)
            ok = q.passes(qv)
            per_layer[n] = {"width": widths[n], "cut": c, "quality": qv, "passed": ok}
            if ok:
                passing[n] = c
            else:
                held.append(n)
                ratios[n] /= 2
        if not passing:
            table.append(row(r, G, table[-1]["quality"], per_layer, held))
            log(f"round {r}: every cut broke {q}; ratios halved")
            continue
        before = copy.deepcopy(G)
        cand = copy.deepcopy(G)  # 2. the passing cuts together, fine-tuned with distillation
        prune_channels(cand, example, fwd, passing, importance)
        mark_compressed(cand)
        G = task.replace_net(key, cand)
        if round_steps > 0:
            _fine_tune(task, G, teacher, batches, round_steps, fwd, lambda_out=lambda_distill, lambda_feat=lambda_feat,
                       n_feat=feature_layers_n, lr=lr, step0=step0 + (r - 1) * round_steps, log=log)
        qv = measure_quality(G, t_outs, inputs, fwd, q)
        if check_whole and not q.passes(qv):  # 3. the whole breaks the index: back to before the round
            log(f"round {r}: after fine-tuning {q.metric} {qv:.3f} breaks {q}; round undone, ratios of its layers halved")
            for n in passing:
                ratios[n] /= 2
                per_layer[n]["passed"] = False
            held = sorted(set(held) | set(passing))
            G = task.replace_net(key, before)
            table.append(row(r, G, table[-1]["quality"], per_layer, held))
            continue
        table.append(row(r, G, qv, per_layer, held))
        t = table[-1]
        log(f"round {r}: cut {len(passing)} layers, held back {len(held)}; {t['macs'] / 1e6:.1f} M MACs, "
            f"{t['params'] / 1e3:.1f} k params, {_ms(t)}{q.metric} {qv:.3f}")
    return RoundsResult(G, table, ratios)
