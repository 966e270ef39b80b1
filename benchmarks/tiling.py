"""Tiled inference benchmark: memory of a 4096x4096 translation, and tiled vs untiled outputs.

1. **4096 x 4096 under 3 GB.** A pix2pix-size U-Net generator (ngf 64, 8 downsamplings,
   54 M parameters, *random weights*: memory and time do not depend on training) translates a
   4096 x 4096 RGB picture through ``Predictor.translate_tensor(A, max_memory=3)`` in a fresh
   process; the process's peak resident memory (VmHWM: Python, torch, weights, input and output
   included) and the wall time are printed, with the tiles it chose.
2. **Tiled vs untiled** on scikit-image's 512 x 512 astronaut photograph for the default-size
   generators of every method (pix2pix U-Net, pix2pixHD, multi-resolution; random weights,
   seeded): mean and max absolute difference (in 8-bit grey levels), the seam figures of
   ``tiling.compare_outputs`` (largest line mean inside the cross-fade bands vs elsewhere, and
   the extra jump at tile lines), for each way of finding instance-norm statistics.

    python benchmarks/tiling.py                 # both parts (CPU: a few minutes)
    python benchmarks/tiling.py --skip-4096     # part 2 only
    python benchmarks/tiling.py --large-model stylesr --models unet   # 1024 px in, 4096 px out, x4

Timings are wall-clock on whatever else the machine runs at the same time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from imtranslate.tasks import load_config  # noqa: E402
from imtranslate.infer.predictor import Predictor  # noqa: E402
from imtranslate.infer.tiling import TilePlan, compare_outputs, probe_input, tile_translate  # noqa: E402
from imtranslate.tasks import get_task  # noqa: E402

# no data is read; the crop only sizes the discriminators the task builds alongside
RGB = ["data.dataset=folders", "data.root=unused", "data.input_kind=rgb", "data.crop_size=256"]
MODELS = {  # the defaults of each task, with the pix2pix U-Net at its paper size
    "unet": ["task=pix2pix", "model.ngf=64", "model.num_downs=8"],
    "pix2pixhd": ["task=pix2pixhd", "model.vgg_weights=random"],
    "multires": ["task=multires", "model.vgg_weights=random"],
    # the stylise + super-resolve net (x4): a 1024 x 1024 input becomes a 4096 x 4096 output
    "stylesr": ["task=stylesr", "data.dataset=photos", "model.vgg_weights=random", "model.lambda_perceptual=0"],
}
LARGE_NAMES = {"unet": "pix2pix U-Net (ngf 64, 8 downs, random weights)",
               "stylesr": "stylesr full x4 (its defaults, random weights)"}


def predictor(name: str) -> Predictor:
    torch.manual_seed(0)
    cfg = load_config(None, MODELS[name] + (RGB if name != "stylesr" else ["data.crop_size=256"]))
    G = get_task(cfg.task)(cfg, "cpu").generator
    calibrate_batchnorm(G)
    return Predictor(G, cfg, device="cpu")


@torch.no_grad()
def calibrate_batchnorm(G: torch.nn.Module) -> None:
    """Set batch-norm running statistics from a few photo crops.

    Freshly initialised running statistics (mean 0, variance 1) leave a random U-Net's deep
    activations tiny, so its output would hardly depend on anything beyond its outer layers and
    tiling would look artificially perfect; calibrated statistics make every depth matter, as
    in a trained net.
    """
    bns = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batches
    G.train()
    A = photo(512)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        ys, xs = torch.randint(0, 257, (4,), generator=g), torch.randint(0, 257, (4,), generator=g)
        G(torch.cat([A[..., y:y + 256, x:x + 256] for y, x in zip(ys, xs)]))
    G.eval()


def photo(size: int) -> torch.Tensor:
    """The astronaut photograph (scikit-image) as a (1, 3, size, size) input in [-1, 1]."""
    try:
        from skimage import data

        img = data.astronaut()  # 512 x 512 x 3 uint8
    except ImportError:  # no scikit-image: a synthetic picture of the same size
        return probe_input(3, size, size, False)
    reps = -(-size // img.shape[0])
    img = np.ascontiguousarray(np.tile(img, (reps, reps, 1))[:size, :size])
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    return x.div_(127.5).sub_(1)


def vm_hwm() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def big_child(size: int, budget: float, model: str = "unet") -> None:
    """Part 1, in its own process so its peak memory is the translation's alone. ``size`` is the
    output side; a net of scale s reads an input of side size / s."""
    t0 = time.perf_counter()
    p = predictor(model)
    size = size // int(p.scale)  # the input side
    A = photo(size)
    t1 = time.perf_counter()
    choice = p.plan_tiling(A.shape, max_memory=budget)
    t2 = time.perf_counter()
    out = p.translate_tensor(A, max_memory=budget)
    t3 = time.perf_counter()
    plan = TilePlan.make(size, size, p.last_tiling.tile, p.last_tiling.overlap, p.multiple)
    mem = p.memory_model()
    print(json.dumps({
        "size": size, "budget_gb": budget, "peak_rss_gb": vm_hwm() / 2**30,
        "multiple": p.multiple, "tile": p.last_tiling.tile, "overlap": p.last_tiling.overlap, "effective_overlap": plan.xs[0][1] - plan.xs[1][0]
        if len(plan.xs) > 1 else 0, "tiles": plan.n_tiles, "reason": p.last_tiling.reason,
        "notes": p.last_tiling.notes, "overlap_needed": p.tile_overlap()[0],
        "setup_s": t1 - t0, "plan_s": t2 - t1, "translate_s": t3 - t2,
        "per_pixel_bytes": mem.per_pixel, "untiled_estimate_gb": mem.bytes_for(1, size, size) / 2**30,
        "out_shape": list(out.shape), "out_finite": bool(torch.isfinite(out).all()), "choice_tile": choice.tile,
    }))


def part1(size: int, budget: float, model: str = "unet") -> dict:
    cmd = [sys.executable, __file__, "--child", str(size), "--budget", str(budget), "--large-model", model]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"the {size} px run failed:\n{res.stderr}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"## {r['size']} x {r['size']} RGB input -> {r['out_shape'][-1]} x {r['out_shape'][-2]} output, "
          f"{LARGE_NAMES[model]}, --max-memory {budget:g}")
    print(f"  untiled would need ~{r['untiled_estimate_gb']:.1f} GB ({r['per_pixel_bytes']:.0f} B/pixel measured)")
    print(f"  chose {r['tile']} px tiles, {r['overlap']} px overlap asked ({r['effective_overlap']} px after aligning "
          f"to the model's {r.get('multiple', 256)} px multiple), {r['tiles']} tiles")
    for n in r["notes"]:
        print(f"  note: {n}")
    print(f"  peak RSS of the whole process: {r['peak_rss_gb']:.2f} GB")
    print(f"  time: {r['translate_s']:.1f} s translate (incl. {r['plan_s']:.1f} s of memory/overlap probes), "
          f"{r['setup_s']:.1f} s model + input")
    return r


def compare(p: Predictor, A: torch.Tensor, tile: int, overlap: int, modes: list[str]) -> list[dict]:
    """Tiled (each statistics mode) vs untiled figures of one model on one input."""
    t = time.perf_counter()
    ref = p.translate_tensor(A, tile=0)
    t_ref = time.perf_counter() - t
    size = A.shape[-1]
    plan = TilePlan.make(size, size, tile, overlap, p.multiple)
    rows = []
    for mode in modes:
        t = time.perf_counter()
        out = tile_translate(p._tile_fn({}), A, tile, overlap, p.multiple, model=p.G,
                             stats="whole" if mode == "-" else mode, stats_scale=2)
        dt = time.perf_counter() - t
        c = compare_outputs(out, ref, plan)
        rows.append({"size": size, "stats": mode, "tile": tile, "overlap": overlap,
                     "effective_overlap": plan.xs[0][1] - plan.xs[1][0] if len(plan.xs) > 1 else 0,
                     "tiles": plan.n_tiles, "untiled_s": t_ref, "tiled_s": dt, **{k: v * 255 for k, v in c.items()}})
    return rows


def part2(size: int, tile: int, names: list[str], modes_large: bool) -> list[dict]:
    """Tiled vs untiled at ``size`` with ``tile`` px tiles, then with tiles big enough for the
    overlap each model needs (on the photo tiled up to a size that holds 2 x 2 such tiles)."""
    rows = []
    print(f"\n## tiled vs untiled, astronaut photo (random weights, seeded; figures in grey levels, 1/255)")
    print(f"{'model':<10} {'size':>5} {'stats':<7} {'tile':>5} {'overlap':>11} {'tiles':>5} {'mean':>7} {'max':>7} "
          f"{'band':>7} {'other':>7} {'step':>6} {'time':>7} {'untiled':>8}")
    for name in names:
        p = predictor(name)
        needed, note = p.tile_overlap()
        norms = any(isinstance(m, torch.nn.InstanceNorm2d) for m in p.G.modules())
        runs = [(size, tile, min(needed, tile // 2), ["whole", "stream", "shrunk"] if norms else ["-"])]
        big_tile = -(-2 * needed // p.multiple) * p.multiple
        if big_tile > tile:
            big = -(-(2 * big_tile - needed) // 8) * 8
            runs.append((big, big_tile, needed, (["whole", "stream"] if modes_large else ["whole"]) if norms else ["-"]))
        for n, t, ov, modes in runs:
            for r in compare(p, photo(n), t, ov, modes):
                r.update(model=name, overlap_needed=needed)
                rows.append(r)
                ovs = f"{ov} ({r['effective_overlap']})"
                print(f"{name:<10} {n:>5} {r['stats']:<7} {t:>5} {ovs:>11} "
                      f"{r['tiles']:>5} {r['mean']:>7.3f} {r['max']:>7.2f} {r['band_line_max']:>7.3f} "
                      f"{r['other_line_max']:>7.3f} {r['seam_step']:>6.3f} {r['tiled_s']:>6.1f}s {r['untiled_s']:>7.1f}s")
        print(f"{'':<10} overlap this model needs (measured): {needed} px" + (f"; {note}" if note else ""))
    print("overlap: asked (after aligning tile origins to the model's multiple); mean / max: |tiled - untiled|; "
          "band / other: largest mean difference along one row or column inside a cross-fade band / elsewhere; "
          "step: extra jump between neighbouring pixels at tile lines; stats: instance-norm statistics from an "
          "untiled pass (whole), streamed exactly over the tiles (stream), a half-size copy (shrunk); "
          "- : no instance norm")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=4096, help="side of the large input (default 4096)")
    ap.add_argument("--budget", type=float, default=3.0, help="--max-memory of the large run, GB (default 3)")
    ap.add_argument("--compare-size", type=int, default=512)
    ap.add_argument("--tile", type=int, default=256, help="tile side of the comparison (default 256)")
    ap.add_argument("--models", default="unet,pix2pixhd,multires")
    ap.add_argument("--large-model", default="unet", choices=sorted(LARGE_NAMES),
                    help="the net of the large run (stylesr: a 1024 px input, 4096 px output)")
    ap.add_argument("--skip-4096", action="store_true", help="only the tiled-vs-untiled comparison")
    ap.add_argument("--stream-large", action="store_true",
                    help="also stream the statistics on the large comparison images (slow)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.child:
        big_child(args.child, args.budget, args.large_model)
        return
    res = {}
    if not args.skip_4096:
        res["large"] = part1(args.size, args.budget, args.large_model)
    res["compare"] = part2(args.compare_size, args.tile, args.models.split(","), args.stream_large)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
