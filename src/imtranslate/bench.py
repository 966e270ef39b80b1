"""``imtranslate bench``: speed, memory and FLOPs of the reference architectures.

For every configuration it measures, at batch 1 by default:

* inference latency (the generator alone, ``torch.inference_mode``, eval mode);
* a full training step: the task's D phase + G phase with every loss of the method;
* peak memory: the process's peak RSS (each configuration runs in a fresh process, so the figure
  includes the ~0.6 GB that importing torch takes, as reference measurements do) and, on CUDA,
  ``torch.cuda.max_memory_allocated``;
* FLOPs of one inference and one training step (``torch.utils.flop_counter``), the achieved
  GFLOP/s, and that as a percentage of this machine's fp32 matmul peak measured in the same run.

Times are medians over ``--repeats`` runs after ``--warmup`` runs.

    imtranslate bench                         # every default configuration
    imtranslate bench --only pix2pix-256 --repeats 10 --json bench.json
    imtranslate bench --plain                 # also the unoptimised path, for the speed-up ratio
    imtranslate bench --variants imtranslate,compiled,bf16,bf16+compiled   # each lever its own row

Variants (:data:`VARIANTS`): ``imtranslate`` (the defaults: fp32, eager), ``plain`` (every default
lever off), ``compiled`` (``train.compile=inductor`` and a compiled inference generator),
``bf16`` (``train.amp=bf16``, inference under bf16 autocast; CPUs with native bf16 or CUDA),
``bf16+compiled``, ``system-malloc`` (the defaults but ``train.malloc=system``: glibc unmaps
freed memory, see ``imtranslate/allocator.py``), ``no-winograd`` (the defaults but the predictor
keeps PyTorch's kernels for wide 3x3 convs, see ``imtranslate/nets/winograd.py``). A compiled row also reports its compile time (first call minus the median)
and after how many steps / images it pays back against the eager row of the same run.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import torch

# name -> (task, height, width, overrides): one line per configuration, at least one per method (a
# new method adds its line). Architectures as the reference implementations ship them.
CONFIGS: dict[str, tuple[str, int, int, list[str]]] = {
    # pix2pix: U-Net-256 (ngf 64, batch norm, dropout) + 70x70 PatchGAN (ndf 64, 3 layers), L1 + vanilla GAN;
    # RGB in and out as in its facades setup (the D sees 6 channels)
    "pix2pix-256": ("pix2pix", 256, 256, ["data.dataset=aligned", "data.root=unused", "data.input_kind=rgb",
                                          "model.generator=unet", "model.num_downs=8", "model.ngf=64",
                                          "model.norm=batch", "model.dropout=true", "model.ndf=64",
                                          "model.n_layers_d=3", "model.norm_d=batch", "model.gan_mode=vanilla"]),
    # pix2pixHD global generator (ngf 64, 4 downsamplings, 9 residual blocks, instance norm) + 2-scale D
    # (3 layers, intermediate features), LSGAN + feature matching + VGG-19 loss; 35 classes + boundary input
    "pix2pixhd-256": ("pix2pixhd", 256, 256, []),
    "pix2pixhd-512x256": ("pix2pixhd", 256, 512, []),
    # the multi-resolution translator with its default widths
    "multires-256": ("multires", 256, 256, []),
    "multires-512": ("multires", 512, 512, []),
    # style swap's inverse net (VGG-19 relu3_1 features, exact swap) on 256² content and style
    "styleswap-256": ("styleswap", 256, 256, ["data.dataset=unpaired", "data.root=unused", "data.style_root=unused"]),
    # stylise + super-resolve, x4 super-resolution defaults: 64² LR in, 256² out
    "stylesr-256": ("stylesr", 256, 256, ["data.dataset=photos", "model.target=sr"]),
    # face enhancement at 512² faces with the built-in config's widths (no identity net: no weights here)
    "faceenhance-512": ("faceenhance", 512, 512, ["data.dataset=synthetic_faces", "model.identity=off"]),
    # the face parser (BiSeNet-like) at 512²
    "faceparse-512": ("faceparse", 512, 512, ["data.dataset=synthetic"]),
    # vid2vid: one 3-frame clip of 256² contour frames (the training step runs the whole clip)
    "vid2vid-256": ("vid2vid", 256, 256, ["model.n_frames=3", "data.synthetic.input=contour"]),
}
#: variant -> run_one options (see the module docstring)
VARIANTS: dict[str, dict] = {
    "plain": {"plain": True},
    "imtranslate": {},
    "compiled": {"compile": "inductor"},
    "bf16": {"amp": "bf16"},
    "bf16+compiled": {"amp": "bf16", "compile": "inductor"},
    "system-malloc": {"malloc": "system"},  # the defaults with glibc's own allocator settings
    "no-winograd": {"winograd": False},  # the defaults but PyTorch's kernels for wide 3x3 inference convs
}
PIX2PIXHD = ["model.ngf=64", "model.n_local_enhancers=0", "model.n_downsampling=4", "model.n_blocks=9",
             "model.norm=instance", "model.ndf=64", "model.n_layers_d=3", "model.num_d=2",
             "model.lambda_vgg=10", "model.features=false", "model.global_fraction=0",
             "data.dataset=labelmap", "data.root=unused", "data.n_classes=35", "data.use_instance=true"]
for _k in ("pix2pixhd-256", "pix2pixhd-512x256"):
    CONFIGS[_k][3].extend(PIX2PIXHD)


@dataclass
class Result:
    name: str
    device: str
    height: int
    width: int
    variant: str
    infer_s: float = 0.0
    train_s: float = 0.0
    infer_gflop: float = 0.0
    train_gflop: float = 0.0
    peak_rss_gb: float = 0.0
    cuda_max_alloc_gb: float = 0.0
    extra: dict = field(default_factory=dict)


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def matmul_peak_gflops(device: str = "cpu", n: int = 2048, repeats: int = 10, dtype=torch.float32) -> float:
    """Matmul throughput of this machine now (fp32 by default): the ceiling the percentages are relative to."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _fake_batch(task, h: int, w: int, batch: int, device) -> dict:
    """Random inputs shaped like the task's data (one-hot labels for label inputs)."""
    g = torch.Generator().manual_seed(0)
    c = task.in_channels
    d = task.cfg.data
    if d.dataset == "labelmap" or d.input_kind == "label":
        n = d.n_classes
        label = torch.randint(0, n, (batch, h, w), generator=g)
        A = torch.nn.functional.one_hot(label, n).permute(0, 3, 1, 2).float()
        if c > n:  # boundary channel
            A = torch.cat([A, (torch.rand(batch, c - n, h, w, generator=g) > 0.9).float()], 1)
    else:
        label = torch.zeros(batch, h, w, dtype=torch.long)
        A = torch.rand(batch, c, h, w, generator=g) * 2 - 1
    B = torch.rand(batch, task.out_channels, h, w, generator=g) * 2 - 1
    style = torch.rand(batch, 3, h, w, generator=g) * 2 - 1  # style swap's style pictures
    out = {"A": A, "B": B, "label": label, "inst": label, "style": style}
    k = getattr(task.m, "n_frames", 0) if task.name == "vid2vid" else 0
    if k:  # clips of K frames, a small known motion between them
        out["clip_A"] = torch.rand(batch, k, c, h, w, generator=g) * 2 - 1
        out["clip_B"] = torch.rand(batch, k, task.out_channels, h, w, generator=g) * 2 - 1
        out["flow"] = torch.full((batch, k, 2, h, w), 0.5)
        out["valid"] = torch.ones(batch, k, 1, h, w)
        out["cut"] = torch.zeros(batch, k, dtype=torch.bool)
        out["cut"][:, 0] = True
    return task.to_device(out)


def _median_time(fn, warmup: int, repeats: int, device, first: list | None = None) -> float:
    """Median of ``repeats`` timed calls after ``warmup`` calls; the first call's time (a compile)
    is appended to ``first``."""
    for i in range(warmup):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        if i == 0 and first is not None:
            first.append(time.perf_counter() - t)
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _flops(fn) -> float:
    import torch._dynamo
    from torch.utils.flop_counter import FlopCounterMode

    # compiled nets run eagerly while counting: the same maths, counted op by op
    with torch._dynamo.config.patch(disable=True), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def run_one(name: str, device: str = "cpu", batch: int = 1, warmup: int = 2, repeats: int = 5,
            plain: bool = False, vgg_weights: str = "random", scale: float = 1.0, compile: str = "none",
            amp: str = "none", variant: str = "", malloc: str = "reuse", winograd: bool = True) -> Result:
    """Measure one configuration in this process. ``plain`` turns every speed lever off;
    ``compile`` (a torch.compile backend or "none") compiles the nets for training and the inference
    generator; ``amp="bf16"`` trains under bf16 autocast and infers under it; ``scale`` shrinks
    the image size (smoke tests); ``winograd=False`` keeps PyTorch's kernels for the predictor's
    wide 3x3 convs (``nets/winograd.py``)."""
    if compile != "none":
        warmup = max(warmup, 1)  # the first call compiles: never a timed one
    from .tasks import load_config
    from .train.stepping import build_task

    task_name, h, w, overrides = CONFIGS[name]
    h, w = max(32, int(h * scale)), max(32, int(w * scale))
    over = [f"task={task_name}", f"train.batch_size={batch}", f"train.device={device}",
            f"data.crop_size={min(h, w)}", f"train.compile={compile}", f"train.amp={amp}",
            f"train.malloc={malloc}"] + list(overrides)
    if task_name != "pix2pix":
        over.append(f"model.vgg_weights={vgg_weights}")  # timing does not depend on weight values
    if plain:
        from .nets import layers

        layers.GEMM_CONV_ON_SMALL_MAPS = False
        over += ["train.channels_last=false", "train.step_in_backward=false", "train.malloc=system"]
    cfg = load_config(None, over)
    torch.manual_seed(0)
    task = build_task(cfg, device)  # with the training loop's stepper, as train() runs it
    task.on_step_start(0)
    batch_d = _fake_batch(task, h, w, batch, device)
    G = task.generator
    G_eval = A_eval = None

    def infer():
        with torch.inference_mode(), task.autocast():  # the predictor's precision = training's here
            task.validation_translate(G_eval, {**batch_d, "A": A_eval})

    step = [0]

    def train_step():
        task.train_step(batch_d, step[0])
        step[0] += 1

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    res = Result(name=name, device=device, height=h, width=w, variant=variant or ("plain" if plain else "imtranslate"))
    first: list[float] = []
    # timing first: the peak RSS read right after is the training peak (import included), not
    # the FLOP counter's bookkeeping
    res.train_s = _median_time(train_step, warmup, repeats, device, first)
    res.peak_rss_gb = peak_rss_gb()
    res.train_gflop = _flops(train_step)
    # the inference copy is made after the training peak was read: a training run holds no such copy
    import copy

    G_eval = copy.deepcopy(G).eval()  # what a predictor runs: eval mode, inference rewrites
    A_eval = batch_d["A"]
    if not plain:  # what a predictor does
        from .infer import optimize

        was, optimize.WINOGRAD = optimize.WINOGRAD, winograd
        try:
            if optimize.optimize_for_inference(G_eval, cfg.train, device):
                A_eval = A_eval.contiguous(memory_format=torch.channels_last)
        finally:
            optimize.WINOGRAD = was  # the flags are read when the rewrite runs; later predictors as before
    if compile != "none":  # what Predictor(compile=...) does (the deep copy above is eager)
        G_eval.compile(backend=compile)
    res.infer_s = _median_time(infer, warmup, repeats, device, first)
    res.infer_gflop = _flops(infer)
    if device.startswith("cuda"):
        res.cuda_max_alloc_gb = torch.cuda.max_memory_allocated() / 1024**3
    res.extra = {"G_params_M": sum(p.numel() for p in G.parameters()) / 1e6, "threads": torch.get_num_threads(),
                 "compile": compile, "amp": amp}
    if len(first) == 2:  # the first call's extra time over a timed one: the compile (and first-call) cost
        res.extra["train_first_s"], res.extra["infer_first_s"] = first
        res.extra["train_compile_s"] = max(0.0, first[0] - res.train_s)
        res.extra["infer_compile_s"] = max(0.0, first[1] - res.infer_s)
    return res


def payback(row: dict, eager: dict) -> dict:
    """Compile time of a compiled row and after how many training steps / inferences it pays back
    against the eager row of the same run (the first-call cost of the eager row subtracted)."""
    out = {}
    for kind in ("train", "infer"):
        extra = row["extra"].get(f"{kind}_compile_s", 0.0) - eager["extra"].get(f"{kind}_compile_s", 0.0)
        gain = eager[f"{kind}_s"] - row[f"{kind}_s"]
        out[f"{kind}_compile_s"] = max(0.0, extra)
        out[f"{kind}_payback_steps"] = (max(0.0, extra) / gain) if gain > 0 else float("inf")
    return out


def main_child(argv) -> None:
    """Entry of the per-configuration subprocess: measure, print one JSON line."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variant", default="imtranslate", choices=list(VARIANTS))
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    opts = dict(VARIANTS[a.variant])
    if "compile" in opts:
        opts["compile"] = a.compile_backend
    r = run_one(a.name, a.device, a.batch, a.warmup, a.repeats, scale=a.scale, variant=a.variant, **opts)
    print("RESULT " + json.dumps(r.__dict__), flush=True)


def check_variants(variants, device: str) -> list[str]:
    """The variant names, checked (unknown names; bf16 where this machine has none)."""
    from .errors import ImtranslateError

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ImtranslateError(f"unknown bench variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if any(VARIANTS[v].get("amp") == "bf16" for v in variants):
        from .config import autocast_dtype

        autocast_dtype("bf16", device, what="bench variant bf16")  # ConfigError with the reason
    return list(variants)


def measure_child(name: str, variant: str, device: str, batch: int, warmup: int, repeats: int, threads: int,
                  scale: float = 1.0, compile_backend: str = "inductor", log=print) -> dict | None:
    """One configuration and variant in a fresh process; the result dict, or None (logged) on failure."""
    cmd = [sys.executable, "-m", "imtranslate.bench", name, "--device", device, "--batch", str(batch),
           "--warmup", str(warmup), "--repeats", str(repeats), "--threads", str(threads),
           "--scale", str(scale), "--variant", variant, "--compile-backend", compile_backend]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        log(f"{name} ({variant}) failed:\n{proc.stderr[-2000:]}")
        return None
    return json.loads(line[0][len("RESULT "):])


def add_shares(r: dict, peaks: dict) -> dict:
    """Achieved GFLOP/s and their share of the matmul peak of the row's precision (bf16 rows: bf16's)."""
    peak = peaks["bf16" if r["extra"].get("amp") == "bf16" else "fp32"]
    r["infer_gflops_per_s"] = r["infer_gflop"] / r["infer_s"]
    r["train_gflops_per_s"] = r["train_gflop"] / r["train_s"]
    r["infer_pct_peak"] = 100 * r["infer_gflops_per_s"] / peak
    r["train_pct_peak"] = 100 * r["train_gflops_per_s"] / peak
    r["matmul_peak_gflops"] = peak
    return r


def run_bench(names=None, device="auto", batch=1, warmup=2, repeats=5, plain=False, threads=0,
              json_path=None, log=print, scale: float = 1.0, variants=None,
              compile_backend: str = "inductor") -> list[dict]:
    """Every configuration and variant in its own process (clean peak-memory figures), the
    variants of one configuration interleaved; prints a table."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    names = names or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        from .errors import ImtranslateError

        raise ImtranslateError(f"unknown bench configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    variants = check_variants(variants or (["plain", "imtranslate"] if plain else ["imtranslate"]), device)
    if plain and "plain" not in variants:
        variants = ["plain"] + variants
    if threads:
        torch.set_num_threads(threads)
    peaks = {"fp32": matmul_peak_gflops(device)}
    has_bf16 = any(VARIANTS[v].get("amp") == "bf16" for v in variants)
    peaks["bf16"] = matmul_peak_gflops(device, dtype=torch.bfloat16) if has_bf16 else peaks["fp32"]
    log(f"{device}: matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s" + (f", bf16 {peaks['bf16']:.0f}" if has_bf16 else "")
        + f" ({torch.get_num_threads()} threads)")
    rows = []
    for name in names:
        eager = None
        for variant in variants:
            r = measure_child(name, variant, device, batch, warmup, repeats, threads or torch.get_num_threads(),
                              scale, compile_backend, log)
            if r is None:
                continue
            add_shares(r, peaks)
            if variant == "imtranslate":
                eager = r
            elif VARIANTS[variant].get("compile") and eager is not None:
                r.update(payback(r, eager))
            rows.append(r)
            log(format_row(r))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"device": device, "matmul_peak_gflops": peaks["fp32"], "matmul_peaks_gflops": peaks,
                       "results": rows}, f, indent=2)
    return rows


HEADER = ("| config | variant | infer s | infer GFLOP | infer % peak | train step s | train GFLOP | "
          "train % peak | peak RSS GB | CUDA max GB | compile s (train / infer), pays back after |")


def format_row(r: dict) -> str:
    comp = ""
    if "train_compile_s" in r and "train_payback_steps" in r:
        comp = (f"{r['train_compile_s']:.0f} / {r['infer_compile_s']:.0f}, "
                f"{_steps(r['train_payback_steps'])} steps / {_steps(r['infer_payback_steps'])} images")
    return (f"| {r['name']} | {r['variant']} | {r['infer_s']:.3f} | {r['infer_gflop']:.1f} | "
            f"{r['infer_pct_peak']:.0f}% | {r['train_s']:.3f} | {r['train_gflop']:.1f} | {r['train_pct_peak']:.0f}% | "
            f"{r['peak_rss_gb']:.2f} | {r['cuda_max_alloc_gb']:.2f} | {comp} |")


def _steps(n: float) -> str:
    return "never" if n == float("inf") else f"{n:.0f}"


if __name__ == "__main__":
    main_child(sys.argv[1:])
