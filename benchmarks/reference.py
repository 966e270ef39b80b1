"""Speed against the reference implementations, measured side by side in one run.

Ratios against pix2pix / pix2pixHD mean something only when both sides run on the same machine
in the same minutes (the machine is shared; its matmul peak moves by ±10 % within a day). This
script runs, alternately and each in a fresh process (so peak RSS is clean), the reference
repositories' own model code and training step and imtranslate's (``imtranslate.bench``), at
the same shapes: batch 1, fp32, random weights (speed depends on shapes, not values).

    # the reference code is not part of imtranslate: fetch it yourself, e.g.
    #   git clone <pytorch-CycleGAN-and-pix2pix> /tmp/p2p     (pix2pix, junyanz; any fork with its history)
    #   git clone <NVIDIA/pix2pixHD> /tmp/p2phd
    python benchmarks/reference.py --pix2pix-repo /tmp/p2p --pix2pixhd-repo /tmp/p2phd --rounds 2 --repeats 7

What the reference side runs:

* pix2pix: ``models.create_model`` of the repository with its training options for
  ``--model pix2pix --netG unet_256 --norm batch --gan_mode vanilla`` (ngf 64, ndf 64, dropout),
  ``set_input`` + ``optimize_parameters()`` per step; inference ``netG`` in eval mode under
  ``torch.no_grad`` (as its ``test.py`` does).
* pix2pixHD: ``models.create_model`` with ``--label_nc 35 --netG global --ngf 64 --num_D 2`` and
  VGG loss, the step of its ``train.py`` (forward returning the losses, G backward + step, D
  backward + step); inference ``model.inference``. Its code calls ``.cuda()`` throughout; on a
  CPU those calls are made no-ops here, and its VGG-19 is built without downloading ImageNet
  weights (``pretrained=False``), nothing else is changed.

imtranslate's side is ``imtranslate.bench`` at the same configurations (``pix2pix-256``,
``pix2pixhd-256``), one row per lever (``--variants``, default all four):

* ``imtranslate``    the defaults a user gets: fp32, eager;
* ``compiled``       ``train.compile=inductor`` for the step, a compiled generator for inference
  (the compile time and after how many steps it pays back are printed);
* ``bf16``           ``train.amp=bf16`` / inference under bf16 autocast (CPUs with native bf16);
* ``bf16+compiled``  both.

Each row's share of the matmul peak is relative to the peak of its precision (fp32 or bf16),
both measured at the start of the run. The reference, then every variant of ours, in turn, for
``--rounds`` rounds; medians over rounds.

    python benchmarks/reference.py --pix2pix-repo /tmp/p2p --quick    # checks that it runs (~5 min)

``--reference-reuse`` adds a row of the reference code run with glibc keeping freed memory
(``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, the setting ``train.malloc=reuse`` makes
inside imtranslate): how much of a ratio is the allocator, and how much the rest.

``--quick``: 1 round, 1 warm-up, 2 timed steps, and the compiled rows with the ``aot_eager``
backend (the compile path without inductor's minutes of C++ generation), so its figures mean
nothing; it only shows the script works.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

OURS = {"pix2pix": "pix2pix-256", "pix2pixhd": "pix2pixhd-256"}


# --------------------------------------------------------------------------------------------
# Children: one measurement in a fresh process, one JSON line out
# --------------------------------------------------------------------------------------------
def _median(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _cpu_only_cuda_calls() -> None:
    """The reference code moves everything with ``.cuda()``; on a CPU those become no-ops."""
    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.FloatTensor = torch.FloatTensor
    torch.cuda.ByteTensor = torch.ByteTensor
    import torchvision.models as tvm

    vgg19 = tvm.vgg19
    tvm.vgg19 = lambda pretrained=False, **k: vgg19(weights=None)  # no download: random weights


def child_reference(method: str, repo: str, size: int, warmup: int, repeats: int) -> dict:
    import torch

    sys.path.insert(0, repo)
    ckpt_dir = tempfile.mkdtemp(prefix="refbench-")
    torch.manual_seed(0)
    if method == "pix2pix":
        sys.argv = ["train.py", "--dataroot", ckpt_dir, "--name", "bench", "--model", "pix2pix", "--netG", "unet_256",
                    "--norm", "batch", "--gan_mode", "vanilla", "--direction", "AtoB", "--checkpoints_dir", ckpt_dir]
        from options.train_options import TrainOptions
        from models import create_model

        opt = TrainOptions().parse()
        opt.device = torch.device("cpu")
        model = create_model(opt)
        data = {"A": torch.rand(1, 3, size, size) * 2 - 1, "B": torch.rand(1, 3, size, size) * 2 - 1,
                "A_paths": ["a"], "B_paths": ["b"]}

        def step():
            model.set_input(data)
            model.optimize_parameters()

        train_s = _median(step, warmup, repeats)
        rss = _peak_rss_gb()
        G = model.netG.eval()

        def infer():
            with torch.no_grad():
                G(data["A"])
    else:
        _cpu_only_cuda_calls()
        sys.argv = ["train.py", "--name", "bench", "--label_nc", "35", "--netG", "global", "--ngf", "64",
                    "--num_D", "2", "--n_layers_D", "3", "--checkpoints_dir", ckpt_dir, "--gpu_ids", "-1",
                    "--loadSize", str(size), "--fineSize", str(size), "--no_html"]
        from options.train_options import TrainOptions
        from models.models import create_model

        opt = TrainOptions().parse(save=False)
        model = create_model(opt)
        label = torch.randint(0, 35, (1, 1, size, size)).float()
        inst = torch.randint(0, 8, (1, 1, size, size)).float()
        image = torch.rand(1, 3, size, size) * 2 - 1
        module = model.module if hasattr(model, "module") else model

        def step():  # the step of pix2pixHD's train.py
            losses, _ = model(label, inst, image, torch.zeros(1), infer=False)
            losses = [torch.mean(x) if not isinstance(x, int) else x for x in losses]
            d = dict(zip(module.loss_names, losses))
            loss_D = (d["D_fake"] + d["D_real"]) * 0.5
            loss_G = d["G_GAN"] + d.get("G_GAN_Feat", 0) + d.get("G_VGG", 0)
            module.optimizer_G.zero_grad()
            loss_G.backward()
            module.optimizer_G.step()
            module.optimizer_D.zero_grad()
            loss_D.backward()
            module.optimizer_D.step()

        train_s = _median(step, warmup, repeats)
        rss = _peak_rss_gb()
        G = module.netG.eval()
        input_label, _, _, _ = module.encode_input(label, inst, infer=True)

        def infer():
            with torch.no_grad():
                G(input_label)
    infer_s = _median(infer, warmup, repeats)
    return {"side": "reference", "method": method, "train_s": train_s, "infer_s": infer_s, "peak_rss_gb": rss,
            "threads": torch.get_num_threads()}


def child_ours(method: str, variant: str, size: int, warmup: int, repeats: int, backend: str) -> dict:
    from imtranslate.bench import VARIANTS, run_one

    opts = dict(VARIANTS[variant])
    if "compile" in opts:
        opts["compile"] = backend
    r = run_one(OURS[method], "cpu", 1, warmup, repeats, scale=size / 256, variant=variant, **opts)
    return {"side": variant, "method": method, "train_s": r.train_s, "infer_s": r.infer_s,
            "peak_rss_gb": r.peak_rss_gb, "train_gflop": r.train_gflop, "infer_gflop": r.infer_gflop,
            "threads": r.extra["threads"], "extra": r.extra}


# --------------------------------------------------------------------------------------------
# Parent: alternate the sides, print the table
# --------------------------------------------------------------------------------------------
#: glibc's environment form of what ``train.malloc=reuse`` sets with mallopt (imtranslate/allocator.py)
REUSE_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def _run_child(args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    if args[0] == "reference-reuse":
        env.update(REUSE_ENV)
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pix2pix-repo", help="checkout of pytorch-CycleGAN-and-pix2pix")
    ap.add_argument("--pix2pixhd-repo", help="checkout of NVIDIA/pix2pixHD")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2, help="reference, ours alternated this many times")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="imtranslate,compiled,bf16,bf16+compiled",
                    help="imtranslate's rows (imtranslate.bench.VARIANTS), each run after the reference")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--reference-reuse", action="store_true",
                    help="also run the reference code with glibc keeping freed memory (the allocator setting "
                         "imtranslate makes by default, given to glibc through its environment variables)")
    ap.add_argument("--quick", action="store_true",
                    help="check that it runs: 1 round, 1 warm-up, 2 steps, aot_eager for the compiled rows")
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.warmup, a.repeats, a.compile_backend = 1, 1, 2, "aot_eager"
    if a.child:
        import torch

        torch.set_num_threads(a.threads)
        side, method = a.child[0], a.child[1]
        if side.startswith("reference"):
            r = child_reference(method, a.child[2], a.size, a.warmup, a.repeats)
            r["side"] = side
        else:
            r = child_ours(method, side, a.size, a.warmup, a.repeats, a.compile_backend)
        print("RESULT " + json.dumps(r), flush=True)
        return
    from imtranslate.bench import check_variants, matmul_peak_gflops, payback
    import torch

    torch.set_num_threads(a.threads)
    methods = [(m, repo) for m, repo in (("pix2pix", a.pix2pix_repo), ("pix2pixhd", a.pix2pixhd_repo)) if repo]
    if not methods:
        raise SystemExit("give --pix2pix-repo and/or --pix2pixhd-repo (checkouts of the reference code)")
    variants = check_variants(a.variants.split(","), "cpu")
    t_start = time.perf_counter()
    peaks = {"fp32": matmul_peak_gflops(), "bf16": matmul_peak_gflops(dtype=torch.bfloat16)}
    print(f"matmul peak now: fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s; {a.threads} threads, "
          f"{a.size}x{a.size}, batch 1; compile backend {a.compile_backend}")
    rows = []
    common = ["--size", str(a.size), "--warmup", str(a.warmup), "--repeats", str(a.repeats), "--threads", str(a.threads),
              "--compile-backend", a.compile_backend]
    sides = ["reference"] + (["reference-reuse"] if a.reference_reuse else []) + variants
    for method, repo in methods:
        for rnd in range(a.rounds):
            for side in sides:
                args = [side, method] + ([repo] if side.startswith("reference") else [])
                r = _run_child(args + common, a.threads)
                r["round"] = rnd
                rows.append(r)
                print(f"  {method:9s} {side:13s} round {rnd}: train {r['train_s']:.3f} s  infer {r['infer_s']:.3f} s  "
                      f"peak RSS {r['peak_rss_gb']:.2f} GB", flush=True)
    print("\n| method | code | infer s | ratio | % peak | train step s | ratio | % peak | peak RSS GB (ours / ref) "
          "| compile s train / infer, pays back after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, _ in methods:
        med = {}
        for side in sides:
            mine = [r for r in rows if r["method"] == method and r["side"] == side]
            med[side] = {k: statistics.median(r[k] for r in mine) for k in ("infer_s", "train_s", "peak_rss_gb")}
            if not side.startswith("reference"):
                med[side]["extra"] = {k: statistics.median(r["extra"].get(k, 0.0) for r in mine)
                                      for k in ("train_compile_s", "infer_compile_s")}
                med[side]["gflop"] = (mine[0]["infer_gflop"], mine[0]["train_gflop"])
        ref = med["reference"]
        for side in sides:
            m = med[side]
            if side == "reference":
                print(f"| {method} | reference | {m['infer_s']:.3f} | 1.00x | | {m['train_s']:.3f} | 1.00x | | "
                      f"{m['peak_rss_gb']:.2f} | |")
                continue
            if side == "reference-reuse":
                print(f"| {method} | reference, glibc keeping freed memory | {m['infer_s']:.3f} | "
                      f"{ref['infer_s'] / m['infer_s']:.2f}x | | {m['train_s']:.3f} | {ref['train_s'] / m['train_s']:.2f}x | | "
                      f"{m['peak_rss_gb']:.2f} | |")
                continue
            peak = peaks["bf16" if "bf16" in side else "fp32"]
            gi, gt = m["gflop"]
            comp = ""
            if "compiled" in side and "imtranslate" in med:
                base = "imtranslate" if side == "compiled" else ("bf16" if "bf16" in med else "imtranslate")
                pb = payback(m, med[base])
                comp = (f"{pb['train_compile_s']:.0f} / {pb['infer_compile_s']:.0f}, {_n(pb['train_payback_steps'])}"
                        f" steps / {_n(pb['infer_payback_steps'])} images (vs {base})")
            label = "fp32 eager (default)" if side == "imtranslate" else side
            print(f"| {method} | imtranslate {label} | {m['infer_s']:.3f} | {ref['infer_s'] / m['infer_s']:.2f}x | "
                  f"{100 * gi / m['infer_s'] / peak:.0f}% {'bf16' if 'bf16' in side else 'fp32'} | {m['train_s']:.3f} | "
                  f"{ref['train_s'] / m['train_s']:.2f}x | {100 * gt / m['train_s'] / peak:.0f}% | "
                  f"{m['peak_rss_gb']:.2f} ({m['peak_rss_gb'] / ref['peak_rss_gb']:.2f}x) | {comp} |")
    print(f"\n(ratio: reference time / ours, same run; % peak: of the matmul peak of the row's precision; "
          f"whole run {time.perf_counter() - t_start:.0f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"matmul_peaks_gflops": peaks, "rows": rows, "args": vars(a)}, f, indent=2)


def _n(x: float) -> str:
    return "never" if x == float("inf") else f"{x:.0f}"


if __name__ == "__main__":
    main()
