"""Make a trained generator smaller and faster: quality-gated channel pruning in rounds with
distillation (:mod:`.rounds`, :mod:`.prune`), depthwise-separable conversion (:mod:`.separable`)
and 8-bit post-training quantisation for the CPU (:mod:`.quantize`).

``compress(ckpt, out)`` returns ``(path of the new checkpoint, per-round table)``. The new file is
an ordinary checkpoint (its generator's widths and separable layers in the net's config, see
:mod:`imtranslate.nets.surgery`): translate, eval, export, tiling and video work on it. With
``int8`` an int8 ONNX file is written next to it (``<out>.int8.onnx``) and checked against the
fp32 export. docs/COMPRESS.md explains the algorithm and the options.
"""
from __future__ import annotations

import copy
import itertools
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..checkpoint_file import load_generator, load_net_weights, read_meta
from ..config import merge, parse_overrides
from ..errors import ConfigError
from ..tasks import get_task, resolve
from ..train.checkpoint import save_checkpoint
from ..prune.channels import count_macs, count_params, latency_ms, prunable_layers, prune_channels
from ..prune.rounds import RoundsResult, _fine_tune, measure_quality, parse_quality, prune_in_rounds
from ..prune.separable import make_separable

__all__ = ["compress", "prune_in_rounds", "parse_quality", "prunable_layers", "prune_channels", "make_separable",
           "count_macs", "count_params", "latency_ms", "build_for_compression"]


def _collate(items):
    return torch.utils.data.default_collate(items)


def build_for_compression(ckpt, overrides=(), device="cpu", n_held_out: int = 4, seed: int = 0):
    """The pieces every compression step needs from a checkpoint: ``(task, teacher, inputs,
    batches, fwd)`` — the task built from the checkpoint's config (its nets loaded from it), the
    generator again as the frozen teacher, held-out network inputs, an endless iterator of
    training batches (the method's own data; ``data.root=...`` and other overrides apply) and
    ``fwd(G, A)`` = the task's full-size translation."""
    meta = read_meta(ckpt)
    if meta.get("task") == "styleswap":
        raise ConfigError(f"{ckpt}: a styleswap checkpoint holds an inverse network, which has no held-out pairs "
                          "to gate pruning on; compress a stylesr net (stylise + SR in one pass) instead")
    cfg = resolve(merge(meta["config"], parse_overrides(list(overrides))))
    cfg.train.device = str(device)
    task_cls = get_task(cfg.task)
    torch.manual_seed(seed)
    task = task_cls(cfg, device)
    for key, spec in meta["nets"].items():
        if key in task.nets:
            if spec != task.net_specs[key]:  # a net compressed before: rebuild it with its widths
                from ..nets import build_net

                task.replace_net(key, build_net(spec["name"], **spec["kwargs"]), spec["name"])
            load_net_weights(ckpt, task.nets[key], key, use_ema=key == task.generator_key)
    teacher = load_generator(ckpt, device=device).net.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if hasattr(task.generator, "load_run_state"):
        task.generator.load_run_state(meta.get("generator_state") or {})
    extras = {k: v.to(device) for k, v in task.extra_tensors().items()}

    def fwd(G, A):
        return task_cls.translate(G, A, cfg, extras)

    val = task_cls.build_dataset(cfg, "val")
    if len(val) == 0:
        raise ConfigError(f"{ckpt}: the checkpoint's config has no held-out data to check quality on; "
                          "give data.root=FOLDER (with val/ pictures)")
    inputs = []
    for i in range(min(n_held_out, len(val))):
        A, _ = task_cls.eval_inputs(_collate([val[i]]), cfg)
        inputs.append(A.to(device))
    train_ds = task_cls.build_dataset(cfg, "train")
    bs = max(1, min(cfg.train.batch_size, len(train_ds)))
    loader = DataLoader(train_ds, batch_size=bs, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))

    def batches():
        for batch in itertools.cycle(loader):
            yield task.to_device(batch)

    return task, teacher, inputs, batches(), fwd, meta


def _swap_net(task, key, net):
    """:meth:`Task.replace_net` for a net whose parameters changed names (separable convs): the
    optimisers over the old net get the new net's parameters, with fresh moments."""
    old_ids = {id(p) for p in task.nets[key].parameters()}
    for okey, opt in list(task.optimizers.items()):
        if not any(id(p) in old_ids for g in opt.param_groups for p in g["params"]):
            continue
        others = [p for g in opt.param_groups for p in g["params"] if id(p) not in old_ids]
        group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        task.optimizers[okey] = type(opt)([{**group, "params": others + list(net.parameters())}], **opt.defaults)
    task.nets[key] = net
    task.net_specs[key] = {"name": task.net_specs[key]["name"], "kwargs": dict(net.config)}
    for listener in task._net_listeners:
        listener(key, net)
    return net


def compress(ckpt, out, *, ratio: float = 0.25, rounds: int = 3, round_steps: int = 50, quality: str = "psnr:30",
             target_macs: float = 0, importance: str = "activation", separable: bool = False, separable_steps: int = 0,
             int8: bool = False, int8_min_psnr: float = 30.0, overrides=(), lambda_distill: float = 10.0,
             lambda_feat: float = 1.0, lr: float = 1e-4, device="cpu", latency_repeats: int = 5,
             ratio_by: str = "uniform", log=print) -> tuple[Path, list[dict]]:
    """Prune ``ckpt``'s generator in rounds (then optionally make it separable and write an int8
    ONNX file); write the result to ``out``. Returns ``(out, table)``; each table row has the
    round, MACs, params, latency (ms, median), quality against the teacher, per-layer checks and the
    layers held back."""
    q = parse_quality(quality)
    task, teacher, inputs, batches, fwd, meta = build_for_compression(ckpt, overrides, device)
    step0 = int(meta.get("step", 0))
    if rounds > 0:
        res = prune_in_rounds(task, teacher, inputs, batches, fwd, ratio=ratio, rounds=rounds, round_steps=round_steps,
                              quality=q, target_macs=target_macs, importance=importance,
                              lambda_distill=lambda_distill, lambda_feat=lambda_feat, lr=lr, step0=step0,
                              latency_repeats=latency_repeats, ratio_by=ratio_by, log=log)
    else:
        G = task.generator.eval()
        res = RoundsResult(G, [{"round": 0, "macs": count_macs(G, inputs[0], fwd), "params": count_params(G),
                                "latency_ms": latency_ms(lambda: fwd(G, inputs[0]), latency_repeats),
                                "quality": measure_quality(G, [fwd(teacher, a) for a in inputs], inputs, fwd, q),
                                "layers": {}, "held_back": []}])
    table = res.table
    G = task.generator
    if separable:
        G = copy.deepcopy(G)
        names = make_separable(G)
        G = _swap_net(task, task.generator_key, G)
        steps = separable_steps or round_steps
        _fine_tune(task, G, teacher, batches, steps, fwd, lambda_out=lambda_distill, lambda_feat=lambda_feat,
                   n_feat=4, lr=lr, step0=step0 + rounds * round_steps, log=log)
        G.eval()
        t_outs = [fwd(teacher, a) for a in inputs]
        row = {"round": "separable", "macs": count_macs(G, inputs[0], fwd), "params": count_params(G),
               "latency_ms": latency_ms(lambda: fwd(G, inputs[0]), latency_repeats),
               "quality": measure_quality(G, t_outs, inputs, fwd, q), "layers": {n: {"separable": True} for n in names},
               "held_back": []}
        table.append(row)
        log(f"separable: {len(names)} convs; {row['macs'] / 1e6:.1f} M MACs, {row['params'] / 1e3:.1f} k params, "
            f"{row['latency_ms']:.1f} ms, {q.metric} {row['quality']:.3f}")
    out = Path(out)
    save_checkpoint(out, task, step0, ema=None, extra_meta={"compress": {"source": str(Path(ckpt).name),
                                                                         "quality": str(q), "table": table}})
    if int8:
        table.append(_int8(out, inputs, batches, int8_min_psnr, latency_repeats, log))
    return out, table


def _int8(out: Path, inputs, batches, min_psnr, repeats, log) -> dict:
    """Export ``out`` to ONNX, quantise it calibrated on training inputs, check it, time both."""
    from ..infer.export import export_onnx
    from .quantize import ort_latencies_ms, quantize_onnx

    fp32 = out.with_suffix(".onnx")
    export_onnx(out, fp32, use_ema=False, log=log)
    calib = [next(batches)["A"].cpu().numpy() for _ in range(8)]
    calib = [a[i:i + 1] for a in calib for i in range(a.shape[0])][:16]
    check = [a.cpu().numpy() for a in inputs]
    res = quantize_onnx(fp32, out.with_suffix(".int8.onnx"), calib, check, min_psnr=min_psnr, log=log)
    t32, t8 = ort_latencies_ms([fp32, res["path"]], check[0], repeats)  # interleaved: the ratio holds under load
    log(f"int8: {res['path'].name}, onnxruntime {t8:.1f} ms vs fp32 {t32:.1f} ms ({t32 / t8:.2f}x)")
    return {"round": "int8", "onnx_fp32": str(fp32.name), "onnx_int8": str(res["path"].name),
            "latency_ms": t8, "latency_fp32_onnx_ms": t32, "psnr_vs_fp32": res["psnr_vs_fp32"],
            "tolerance_psnr": min_psnr, "settings": res["settings"]}


class _CallableModule(type(__import__("sys"))):
    """``imtranslate.compress(ckpt, out, ...)`` works whether or not this subpackage (which Python
    binds to the same name once imported) has been imported."""

    def __call__(self, *args, **kwargs):
        return compress(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
