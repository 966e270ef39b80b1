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
``pix2pixhd-256``), the defaults a user gets.
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


def child_ours(method: str, size: int, warmup: int, repeats: int) -> dict:
    from imtranslate.bench import run_one

    r = run_one(OURS[method], "cpu", 1, warmup, repeats, scale=size / 256)
    return {"side": "imtranslate", "method": method, "train_s": r.train_s, "infer_s": r.infer_s,
            "peak_rss_gb": r.peak_rss_gb, "train_gflop": r.train_gflop, "infer_gflop": r.infer_gflop,
            "threads": r.extra["threads"]}


# --------------------------------------------------------------------------------------------
# Parent: alternate the sides, print the table
# --------------------------------------------------------------------------------------------
def _run_child(args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
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
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        import torch

        torch.set_num_threads(a.threads)
        side, method = a.child[0], a.child[1]
        if side == "reference":
            r = child_reference(method, a.child[2], a.size, a.warmup, a.repeats)
        else:
            r = child_ours(method, a.size, a.warmup, a.repeats)
        print("RESULT " + json.dumps(r), flush=True)
        return
    from imtranslate.bench import matmul_peak_gflops
    import torch

    torch.set_num_threads(a.threads)
    methods = [(m, repo) for m, repo in (("pix2pix", a.pix2pix_repo), ("pix2pixhd", a.pix2pixhd_repo)) if repo]
    if not methods:
        raise SystemExit("give --pix2pix-repo and/or --pix2pixhd-repo (checkouts of the reference code)")
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak now: {peak:.0f} GFLOP/s, {a.threads} threads, {a.size}x{a.size}, batch 1")
    rows = []
    common = ["--size", str(a.size), "--warmup", str(a.warmup), "--repeats", str(a.repeats), "--threads", str(a.threads)]
    for method, repo in methods:
        for rnd in range(a.rounds):
            for side in ("reference", "imtranslate"):
                args = [side, method] + ([repo] if side == "reference" else [])
                r = _run_child(args + common, a.threads)
                r["round"] = rnd
                rows.append(r)
                print(f"  {method:9s} {side:11s} round {rnd}: train {r['train_s']:.3f} s  infer {r['infer_s']:.3f} s  "
                      f"peak RSS {r['peak_rss_gb']:.2f} GB", flush=True)
    print("\n| figure | reference | imtranslate | ratio (reference / ours) | share of matmul peak (ours) |")
    print("|---|---|---|---|---|")
    for method, _ in methods:
        ref = [r for r in rows if r["method"] == method and r["side"] == "reference"]
        ours = [r for r in rows if r["method"] == method and r["side"] == "imtranslate"]
        for key, what in (("infer_s", "inference s"), ("train_s", "training step s"), ("peak_rss_gb", "training peak RSS GB")):
            rv = statistics.median(r[key] for r in ref)
            ov = statistics.median(r[key] for r in ours)
            share = ""
            if key != "peak_rss_gb":
                gflop = ours[0]["infer_gflop" if key == "infer_s" else "train_gflop"]
                share = f"{100 * gflop / ov / peak:.0f} %"
            ratio = f"{rv / ov:.2f}x" if key != "peak_rss_gb" else f"{ov / rv:.2f}x (ours / reference)"
            print(f"| {method} {what} | {rv:.3f} | {ov:.3f} | {ratio} | {share} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"matmul_peak_gflops": peak, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
