"""Quality benchmark: does the multi-resolution translator (SPEC S1) translate better than
pix2pix and pix2pixHD on the same data and budget?

Every method trains for the same number of steps, batch size and learning rates, with
generator widths chosen so the parameter counts are comparable (printed), then the EMA
generator is evaluated on held-out pairs (L1 / PSNR / SSIM, and LPIPS when its weights are
found; whole images at their own size through the same predictor `imtranslate eval` uses).

With ``--equal-time SECONDS`` every method trains for the same budget instead: two short
calibration runs of the loop after a warm-up one (their difference cancels start-up and the
final checkpoint)
give its seconds per step with the method's own stage mix, ``train.steps`` is set to fill the
budget (so stages and learning-rate decay fit it), and ``train.time_limit`` (``--clock
wall``) or ``train.cpu_time_limit`` (``--clock cpu``: process CPU seconds, steadier when other
jobs share the machine) holds it as a hard bound. The table gives the steps each reached.

Datasets:
  synthetic-label    built-in scenes, label map -> photo
  synthetic-contour  built-in scenes, contour drawing -> photo
  skimage-contour    contour -> photo pairs made (imtranslate data pairs --kind contours) from
                     the colour photographs scikit-image ships, 128 px, random 64 px crops

    python benchmarks/quality.py --steps 1500            # full table (CPU: ~30-40 min)
    python benchmarks/quality.py --steps 50 --quick      # smoke run
    python benchmarks/quality.py --equal-time 240        # 4 minutes per method and dataset (~40 min)
    python benchmarks/quality.py --equal-time 20 --clock cpu --quick   # smoke run of equal time
    python benchmarks/quality.py --steps 400 --methods pix2pix --amp none,bf16   # what bf16 costs

``--amp none,bf16`` trains every method under each precision in turn (``train.amp``; bf16 needs
CUDA or a CPU with native bf16) and evaluates it at the same precision (``--precision``), so the
PSNR difference between the rows is bf16's held-out quality cost.

Prints a table and writes it as JSON (--json).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from imtranslate.tasks import load_config  # noqa: E402
from imtranslate.evaluate import evaluate  # noqa: E402
from imtranslate.tasks import get_task  # noqa: E402
from imtranslate.train.loop import train  # noqa: E402

# generator widths giving comparable parameter counts (see the "G params" column)
METHODS = {
    "multires": ["model.n_levels=3", "model.ngf=16", "model.max_channels=128", "model.n_res_blocks=2",
                 "model.ndf=16", "model.stage_fraction=0.1"],
    "pix2pix": ["model.num_downs=6", "model.ngf=15", "model.ndf=16", "model.gan_mode=lsgan"],
    "pix2pixhd": ["model.ngf=8", "model.n_downsampling=3", "model.n_blocks=5", "model.n_blocks_local=2",
                  "model.ndf=16", "model.num_d=2", "model.n_layers_d=2", "model.global_fraction=0.3"],
}


def skimage_pairs(root: Path) -> Path:
    """contour -> photo pairs from scikit-image's colour sample photographs (train/ and val/)."""
    from skimage import data as skd
    from PIL import Image

    from imtranslate.data import make_pairs

    if (root / "train" / "A").is_dir():
        return root
    names = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
             "retina", "colorwheel", "cat", "logo"]
    photos = []
    for n in names:
        f = getattr(skd, n, None)
        if f is None:
            continue
        img = np.asarray(f())
        if img.ndim == 3 and img.shape[2] >= 3:
            photos.append((n, img[..., :3].astype(np.uint8)))
    # tiles of 128 px from each photo, resized to 256 on the short side first
    src = {"train": root / "src_train", "val": root / "src_val"}
    for d in src.values():
        d.mkdir(parents=True, exist_ok=True)
    for k, (n, img) in enumerate(photos):
        im = Image.fromarray(img)
        s = 256 / min(im.size)
        im = im.resize((max(128, round(im.size[0] * s)), max(128, round(im.size[1] * s))), Image.BICUBIC)
        a = np.asarray(im)
        tiles = [(y, x) for y in range(0, a.shape[0] - 127, 128) for x in range(0, a.shape[1] - 127, 128)]
        for j, (y, x) in enumerate(tiles):
            split = "val" if j == len(tiles) - 1 else "train"  # one held-out tile per photograph
            Image.fromarray(a[y:y + 128, x:x + 128]).save(src[split] / f"{n}_{j:02d}.png")
    for split in ("train", "val"):
        make_pairs(src[split], root / split, "contours")
    return root


def datasets(work: Path, n_train: int):
    syn = ["data.dataset=synthetic", f"data.synthetic.root={work / 'synthetic'}", f"data.synthetic.n_train={n_train}",
           "data.synthetic.n_val=32", "data.synthetic.size=64", "data.crop_size=64"]
    return {
        "synthetic-label": (syn + ["data.synthetic.input=label"], work / "synthetic" / "val"),
        "synthetic-contour": (syn + ["data.synthetic.input=contour"], work / "synthetic" / "val"),
        "skimage-contour": (["data.dataset=folders", f"data.root={skimage_pairs(work / 'skimage')}",
                             "data.input_kind=grey", "data.crop_size=64"], work / "skimage" / "val"),
    }


def add_variants(specs: list[str]) -> None:
    """``NAME=BASE:KEY=VALUE;KEY=VALUE`` -> a method NAME: BASE's task and widths plus the overrides."""
    for spec in specs:
        name, _, rest = spec.partition("=")
        base, _, over = rest.partition(":")
        if not name or base not in METHODS:
            raise SystemExit(f"--variant {spec!r}: expected NAME=BASE:KEY=VALUE;... with BASE one of {', '.join(METHODS)}")
        METHODS[name] = METHODS[base] + [o for o in over.split(";") if o]
        TASK_OF[name] = TASK_OF.get(base, base)


TASK_OF: dict[str, str] = {}  # a variant's task (its base method)


def param_count(cfg) -> int:
    task = get_task(cfg.task)(cfg, "cpu")
    return sum(p.numel() for p in task.generator.parameters())


def seconds_per_step(cfg_of, clock: str, short: int, long: int, work: Path) -> float:
    """The loop's seconds per step (``clock``: cpu = process CPU, wall = wall clock) for the config
    ``cfg_of(steps, out_dir)``, from two runs of ``short`` and ``long`` steps after a warm-up run:
    their difference leaves out what does not grow with the steps (building, data, the final
    validation and checkpoint)."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    took = []
    for k, n in enumerate((short, short, long)):  # the first run only warms up (one-time costs)
        cfg = cfg_of(n, work / f"calibrate{k}")
        t0 = now()
        train(cfg, log=lambda m: None)
        took.append(now() - t0)
    per_step = (took[2] - took[1]) / (long - short)
    if per_step <= 0:  # other load swamped the difference: the long run's mean (an over-estimate) instead
        print(f"  calibration: {long} steps took no longer than {short}; using {took[2] / long:.3f} s/step",
              file=sys.stderr)
        per_step = took[2] / long
    return per_step


def vgg_used(spec: str) -> str:
    """What the table says about the VGG-19: random, or the file the search found."""
    from imtranslate.nets.vgg import resolve_vgg_weights

    got = resolve_vgg_weights(spec)
    return "random" if got == "random" else f"pretrained ({Path(got).name})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--work", default="bench_out/quality")
    ap.add_argument("--vgg-weights", default="random",
                    help="VGG-19 for the style / perceptual losses: random (default; no download here), "
                         "imagenet (the torch hub cache / $IMTRANSLATE_WEIGHTS) or a .safetensors / .pth path")
    ap.add_argument("--lpips-weights", default=None, help="LPIPS weights file (default: the usual search; "
                    "the LPIPS column is left out when none is found)")
    ap.add_argument("--equal-time", type=float, default=0.0, metavar="SECONDS",
                    help="train every method for this budget instead of --steps (see --clock)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="the --equal-time budget in wall-clock seconds (train.time_limit; a quiet machine) or "
                         "process CPU seconds (train.cpu_time_limit; steadier under other load)")
    ap.add_argument("--threads", type=int, default=0,
                    help="train.threads (0 = PyTorch's default); with --clock cpu on a loaded machine use 1: idle "
                         "threads of a parallel op spin and count as CPU time")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--datasets", default="synthetic-label,synthetic-contour,skimage-contour")
    ap.add_argument("--json", default="bench_out/quality.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=BASE:KEY=VALUE;...",
                    help="an extra method to compare, e.g. 'fast=multires:model.style_every=2' (then list it in "
                         "--methods)")
    ap.add_argument("--quick", action="store_true", help="smaller data for a smoke run")
    ap.add_argument("--amp", default="none",
                    help="comma-separated precisions, each a row: none (fp32) | bf16 (train.amp and inference)")
    args = ap.parse_args()
    amps = args.amp.split(",")
    bad = [a for a in amps if a not in ("none", "bf16")]
    if bad:
        raise SystemExit(f"--amp takes none and/or bf16, got {bad}")
    add_variants(args.variant)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    n_train = 32 if args.quick else args.n_train
    vgg_desc = vgg_used(args.vgg_weights)

    def common(steps: int, out_dir: Path) -> list[str]:
        return [f"train.steps={steps}", f"train.batch_size={args.batch_size}", "train.lr_g=0.0005",
                "train.lr_d=0.0002", "train.lr_policy=linear", "train.lr_decay_start=0.6", "train.ema_decay=0.99",
                "train.val_every=0", "train.image_every=0", "train.tensorboard=false", "train.progress=false",
                f"train.ckpt_every={steps}", f"train.seed={args.seed}", "train.device=cpu",
                f"train.out_dir={out_dir}"] + ([f"train.threads={args.threads}"] if args.threads else [])

    budget = args.equal_time
    limit = [f"train.{'cpu_time_limit' if args.clock == 'cpu' else 'time_limit'}={budget}"] if budget else []
    unit = "CPU s" if args.clock == "cpu" and budget else "s"
    print(f"VGG-19 of the style / perceptual losses: {vgg_desc}; "
          + (f"budget {budget:g} {unit} per run" if budget else f"{args.steps} steps per run"), flush=True)
    results = []
    for ds_name, (ds_over, val_dir) in datasets(work, n_train).items():
        if ds_name not in args.datasets.split(","):
            continue
        for method in args.methods.split(","):
            for amp in amps:
                vgg = [f"model.vgg_weights={args.vgg_weights}"] if TASK_OF.get(method, method) != "pix2pix" else []
                extra = METHODS[method] + vgg
                task_name = TASK_OF.get(method, method)

                def cfg_of(steps, out_dir, tail=()):
                    return load_config(None, [f"task={task_name}", f"train.name={method}-{ds_name}-{amp}",
                                              f"train.amp={amp}"] + ds_over + common(steps, out_dir) + extra
                                       + list(tail))

                steps = args.steps
                if budget:
                    short, long = (4, 8) if args.quick else (10, 30)
                    step_s = seconds_per_step(cfg_of, args.clock, short, long, work / "calibrate" / f"{method}-{ds_name}-{amp}")
                    steps = max(long, int(budget / step_s))
                    print(f"  {ds_name} {method}: {step_s:.3f} {unit}/step -> train.steps={steps}", flush=True)
                cfg = cfg_of(steps, work / "runs", limit)
                n_params = param_count(cfg)
                t0, c0 = time.perf_counter(), time.process_time()
                run = train(cfg, log=lambda m: None)
                secs, cpu_s = time.perf_counter() - t0, time.process_time() - c0
                from imtranslate.checkpoint_file import read_meta

                reached = int(read_meta(run / "checkpoints" / "last.safetensors")["step"])
                res = evaluate(run / "checkpoints" / "last.safetensors", val_dir, device="cpu", progress=False,
                               lpips_weights=args.lpips_weights,
                               precision="bf16" if amp == "bf16" else "fp32")
                m = res["metrics"]
                row = {"dataset": ds_name, "method": method, "amp": amp, "G_params_M": round(n_params / 1e6, 3),
                       "steps": reached, "planned_steps": steps, "train_s": round(secs, 1), "train_cpu_s": round(cpu_s, 1),
                       "n_val": res["count"], "l1": round(m["l1"], 4), "psnr": round(m["psnr"], 2),
                       "ssim": round(m["ssim"], 4), "vgg": vgg_desc}
                if "lpips" in m:
                    row["lpips"] = round(m["lpips"], 4)
                results.append(row)
                print(f"{ds_name:<18} {method:<10} {amp:<5} G {row['G_params_M']:.3f}M  {reached:5d} steps  {secs:6.0f}s "
                      f"({cpu_s:.0f} CPU s)  L1 {row['l1']:.4f}  PSNR {row['psnr']:.2f}  SSIM {row['ssim']:.4f}"
                      + (f"  LPIPS {row['lpips']:.4f}" if "lpips" in row else ""), flush=True)
    print()
    with_lpips = any("lpips" in r for r in results)
    print(f"VGG-19: {vgg_desc}. " + (f"Equal {'CPU' if args.clock == 'cpu' else 'wall-clock'} time: {budget:g} "
                                     f"{unit} per run." if budget else f"Equal steps: {args.steps}."))
    print()
    print("| dataset | method | precision | G params | steps | train s | CPU s | held-out L1 ↓ | PSNR dB ↑ | SSIM ↑ |"
          + (" LPIPS ↓ |" if with_lpips else ""))
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|" if with_lpips else ""))
    for r in results:
        prec = "bf16" if r["amp"] == "bf16" else "fp32"
        print(f"| {r['dataset']} | {r['method']} | {prec} | {r['G_params_M']:.2f}M | {r['steps']} | {r['train_s']:.0f} | "
              f"{r['train_cpu_s']:.0f} | {r['l1']:.4f} | {r['psnr']:.2f} | {r['ssim']:.4f} |"
              + (f" {r['lpips']:.4f} |" if "lpips" in r else (" – |" if with_lpips else "")))
    if len(amps) > 1:  # the cost of each precision against fp32, same data and method
        for r in results:
            if r["amp"] != "none":
                base = next((b for b in results if b["amp"] == "none" and b["dataset"] == r["dataset"]
                             and b["method"] == r["method"]), None)
                if base:
                    print(f"{r['dataset']} {r['method']}: {r['amp']} - fp32 held-out PSNR "
                          f"{r['psnr'] - base['psnr']:+.2f} dB, SSIM {r['ssim'] - base['ssim']:+.4f}, "
                          f"train time x{r['train_s'] / max(base['train_s'], 1e-9):.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
