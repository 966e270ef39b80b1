"""Video benchmark (SPEC S6): does temporal blending remove flicker without losing the picture,
and what does it cost per frame?

The clip: a 512x256 window moving over scikit-image's astronaut photograph (resized to
1024x1024) by a known smooth affine motion (2.6 px/frame right, 1.2 px/frame down, 0.2
degree/frame rotation, 0.3 %/frame zoom), 30 frames, with a textured disc (the cat photograph,
radius 51 px) moving across it the other way (3 px/frame left, 1 px/frame down), so there are
real occlusions and disocclusions. The exact flow and valid masks come from
``imtranslate.data.clips.synthesize_clip`` plus the disc's own motion.

The stand-in translator (deterministic, no weights): a sepia-like colour matrix, gamma 0.9 and
a Gaussian blur (sigma 1). The *flicker-free reference* is that transform of every frame. The
*per-frame output* is the same transform plus per-frame flicker: a random gain per colour
channel (normal, sd 8 %), a random brightness offset (sd 4 levels) and pixel noise (sd 3
levels), seeded — what a translator that treats every frame on its own looks like.

Figures (all in [0, 1] units for warping error; PSNR in dB):

* WE true flow: warping error of consecutive outputs with the clip's exact flow and masks.
* WE DIS-medium: the same measured as `imtranslate video --report` users would, with flow
  estimated from the input frames (``imtranslate.infer.video_translate.warping_error``).
* PSNR ref: against the flicker-free reference (higher = closer to what a flicker-free
  translator would give); PSNR per-frame: against the per-frame output (fidelity).
* mask: the occlusion-mask settings; "Ruder" is beta = 0.5 (Ruder et al.'s constant) instead of
  imtranslate's default 2.0, to show why the default differs.
* added ms/frame: scene-cut check + flow both ways + occlusion mask + warp + blend, median over
  repeats, per frame size (the translator's own cost is not included).

The **stand-in rows** above use no trained model. The **trained rows** (benchmarks/video_trained.py)
train pix2pix, pix2pix with the temporal loss and vid2vid for the same wall-clock budget and measure
them, with post-hoc blending, on held-out animated synthetic clips against ground truth, plus one
clip of camera motion over a scikit-image photograph.

    python benchmarks/video.py                       # everything (~10 CPU minutes)
    python benchmarks/video.py --report docs/video   # also the strip GIF/MP4 and the per-frame plot
    python benchmarks/video.py --quick               # fewer configurations, repeats and training seconds
    python benchmarks/video.py --no-trained          # the stand-in rows only (~2-3 CPU minutes)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from imtranslate.data.clips import synthesize_clip  # noqa: E402
from imtranslate.infer.flow import is_scene_cut  # noqa: E402
from imtranslate.infer.video_translate import VideoTranslator, WarpingErrorMeter, video_psnr, warping_error  # noqa: E402

SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


def stand_in_translator(frame: np.ndarray) -> np.ndarray:
    """Deterministic 'translation': sepia colour matrix, gamma 0.9, Gaussian blur sigma 1."""
    x = frame.astype(np.float32) / 255.0
    x = np.clip(x @ SEPIA.T, 0, 1) ** 0.9
    x = cv2.GaussianBlur(x, (0, 0), 1.0)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


class FlickeringTranslator:
    """The stand-in translator plus seeded per-frame flicker (gain, offset, noise)."""

    def __init__(self, seed: int = 0, gain_sd: float = 0.08, offset_sd: float = 4.0, noise_sd: float = 3.0):
        self.rng = np.random.default_rng(seed)
        self.gain_sd, self.offset_sd, self.noise_sd = gain_sd, offset_sd, noise_sd

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        y = stand_in_translator(frame).astype(np.float32)
        y = y * self.rng.normal(1.0, self.gain_sd, 3).astype(np.float32) + self.rng.normal(0, self.offset_sd)
        y += self.rng.normal(0, self.noise_sd, y.shape).astype(np.float32)
        return np.clip(y + 0.5, 0, 255).astype(np.uint8)


def make_clip(size_hw, n_frames, with_object: bool = True):
    """The benchmark clip (see the module docstring), with exact flows and valid masks."""
    from skimage import data as skd

    h, w = size_hw
    side = int(max(h, w) * 2)
    image = cv2.resize(skd.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
    # the documented motion: shift (2.6, 1.2) px, 0.2 degree, 0.3 % zoom per frame
    rng = _Fixed([2.6 / 3.0, 1.2 / 3.0, 0.2 / 0.5, 0.003 / 0.005])
    clip = synthesize_clip(image, n_frames, rng, size=(h, w), max_shift=3.0, max_rotate=0.5, max_scale=0.005)
    if with_object:
        add_moving_object(clip, skd.chelsea(), radius=h / 5, velocity=(-3.0 * w / 512, 1.0 * h / 256))
    return clip


def add_moving_object(clip, texture: np.ndarray, radius: float, velocity) -> None:
    """Paste a textured disc moving at its own ``velocity`` (px/frame) over the clip, and fix the
    flows and masks: inside the disc the flow is the disc's motion; background pixels that the
    disc covered in the previous frame (disocclusions) become invalid."""
    h, w = clip.frames[0].shape[:2]
    n = len(clip.frames)
    u = np.asarray(velocity, np.float32)
    c0 = np.array([w * 0.62, h * 0.4], np.float32) - u * (n - 1) / 2  # crosses the frame's middle
    r = int(np.ceil(radius))
    tex = cv2.resize(texture, (4 * r, 4 * r), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for t in range(n):
        c = c0 + u * t
        inside = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= radius ** 2
        # texture pinned to the disc: frame pixel y shows tex(y - c + centre of tex)
        mx, my = xx - c[0] + 2 * r, yy - c[1] + 2 * r
        obj = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        clip.frames[t] = np.where(inside[..., None], obj, clip.frames[t])
        if t == 0:
            continue
        bw = clip.flows_bw[t].copy()
        bw[inside] = -u
        sx, sy = xx + bw[..., 0], yy + bw[..., 1]
        prev_c = c0 + u * (t - 1)
        was_covered = (sx - prev_c[0]) ** 2 + (sy - prev_c[1]) ** 2 <= radius ** 2
        clip.valid[t] = np.where(inside, True, clip.valid[t] & ~was_covered)
        clip.flows_bw[t] = bw
        clip.flows_fw[t] = None  # not needed here


class _Fixed:
    """Stands in for numpy's Generator in synthesize_clip: returns fixed fractions of the limits."""

    def __init__(self, fractions):
        self.fractions = list(fractions)

    def uniform(self, lo, hi, size=None):
        n = 1 if size is None else int(np.prod(size))
        vals = [self.fractions.pop(0) * hi for _ in range(n)]
        return vals[0] if size is None else np.array(vals).reshape(size)


def true_warping_error(outputs, clip) -> float:
    meter = WarpingErrorMeter()
    for t in range(1, len(outputs)):
        meter.update(outputs[t - 1], outputs[t], clip.flows_bw[t], clip.valid[t])
    return meter.value


def quality_table(clip, configs, seed):
    """Rows of figures for the reference, the per-frame output and each (flow, T, mask) config."""
    reference = [stand_in_translator(f) for f in clip.frames]
    flicker = FlickeringTranslator(seed)
    per_frame = [flicker(f) for f in clip.frames]
    rows = [{"method": "reference (no flicker)", "we_true": true_warping_error(reference, clip),
             "we_dis": warping_error(reference, clip.frames), "psnr_ref": float("inf"),
             "psnr_pf": video_psnr(reference, per_frame)},
            {"method": "per-frame", "we_true": true_warping_error(per_frame, clip),
             "we_dis": warping_error(per_frame, clip.frames), "psnr_ref": video_psnr(per_frame, reference),
             "psnr_pf": float("inf")}]
    for flow, T, mask in configs:
        occlusion = {"beta": 0.5} if mask == "Ruder" else {}
        # a fresh translator with the same seed: the blend sees exactly the per-frame output above
        vt = VideoTranslator(FlickeringTranslator(seed), flow=flow, temporal=T, occlusion=occlusion)
        outs = list(vt.translate_frames(clip.frames))
        rows.append({"method": f"blend {flow} T={T:g}" + (" mask=Ruder" if mask == "Ruder" else ""),
                     "we_true": true_warping_error(outs, clip), "we_dis": warping_error(outs, clip.frames),
                     "psnr_ref": video_psnr(outs, reference), "psnr_pf": video_psnr(outs, per_frame)})
    base = rows[1]["we_true"]
    for r in rows:
        r["ratio"] = base / r["we_true"] if r["we_true"] > 0 else float("inf")
    return rows


def cost_table(flows, sizes, repeats, n_pairs=6):
    rows = []
    for (h, w) in sizes:
        clip = make_clip((h, w), n_pairs + 1)
        pf = [stand_in_translator(f) for f in clip.frames]
        for flow in flows:
            vt = VideoTranslator(stand_in_translator, flow=flow, temporal=0.8)
            parts = {"cut": [], "flow+mask": [], "blend": [], "total": []}
            for rep in range(repeats):
                i = rep % n_pairs
                prev, cur = clip.frames[i], clip.frames[i + 1]
                prev_out = pf[i].astype(np.float32)
                t0 = time.perf_counter()
                is_scene_cut(prev, cur, vt.scene_cut_threshold)
                t1 = time.perf_counter()
                bw, valid = vt.flow_and_mask(prev, cur)
                t2 = time.perf_counter()
                out = vt.blend(prev_out, pf[i + 1], bw, valid)
                np.clip(out + 0.5, 0, 255).astype(np.uint8)
                t3 = time.perf_counter()
                if rep == 0:
                    continue  # warm-up (first DIS call allocates its pyramids)
                parts["cut"].append(t1 - t0)
                parts["flow+mask"].append(t2 - t1)
                parts["blend"].append(t3 - t2)
                parts["total"].append(t3 - t0)
            rows.append({"size": f"{w}x{h}", "flow": flow,
                         **{k: 1000 * statistics.median(v) for k, v in parts.items()}})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=21, help="timed repeats per configuration (median)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--no-trained", action="store_true", help="skip the rows with trained models")
    ap.add_argument("--only-trained", action="store_true", help="only the rows with trained models")
    ap.add_argument("--budget", type=float, default=75.0, help="training seconds per synthetic model (scikit-image "
                    "models get half)")
    ap.add_argument("--clips", type=int, default=16, help="held-out synthetic clips (4 gave PSNR differences of "
                    "+-0.3 dB from which clips were drawn)")
    ap.add_argument("--steps", default=None, metavar="P2P,V2V", help="train for fixed steps (pix2pix models, vid2vid) "
                    "instead of the wall-clock --budget: for comparisons on a loaded machine")
    ap.add_argument("--report", default=None, metavar="DIR", help="write the strip GIF/MP4 and the warping-error plot here")
    args = ap.parse_args(argv)
    if args.only_trained:
        return trained(args)

    flows = ["dis-ultrafast", "dis-fast", "dis-medium", "farneback"]
    temporals = [0.5, 0.8, 0.9, 0.95]
    repeats = args.repeats
    if args.quick:
        flows, temporals, repeats = ["dis-fast", "dis-medium"], [0.8, 0.9], 7
    configs = [(f, T, "default") for f in flows for T in temporals]
    configs += [("dis-fast", 0.8, "Ruder"), ("dis-medium", 0.9, "Ruder")]
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPU(s), OpenCV threads {cv2.getNumThreads()}, "
          f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)")

    clip = make_clip((256, 512), args.frames)
    t0 = time.perf_counter()
    rows = quality_table(clip, configs, args.seed)
    print(f"\nquality on a {args.frames}-frame 512x256 clip with known motion and per-frame flicker "
          f"({time.perf_counter() - t0:.0f} s)\n")
    print("| output | WE true flow | WE DIS-medium | WE lower by | PSNR ref (dB) | PSNR per-frame (dB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['we_true']:.5f} | {r['we_dis']:.5f} | {r['ratio']:.1f}x | "
              f"{r['psnr_ref']:.2f} | {r['psnr_pf']:.2f} |")

    costs = cost_table(flows, [(256, 512), (512, 1024)], repeats)
    print(f"\nadded cost per frame, ms (median of {repeats - 1} repeats; scene-cut check, flow both ways + "
          "occlusion mask, warp + blend)\n")
    print("| size | flow | scene cut | flow + mask | warp + blend | total |")
    print("|---|---|---|---|---|---|")
    for r in costs:
        print(f"| {r['size']} | {r['flow']} | {r['cut']:.1f} | {r['flow+mask']:.1f} | {r['blend']:.1f} | "
              f"{r['total']:.1f} |")
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"quality": rows, "cost_ms": costs, "load": load}, indent=2))
    if not args.no_trained:
        trained(args)


def trained(args) -> None:
    """The rows with trained models (benchmarks/video_trained.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import video_trained

    budget, clips, frames, size = args.budget, args.clips, 12, 48
    if args.quick:
        budget, clips, frames, size = 6.0, 1, 5, 32
    if args.steps:
        video_trained.STEPS = tuple(int(x) for x in args.steps.split(","))[:2]
        if args.quick:
            video_trained.STEPS = tuple(min(n, 20) for n in video_trained.STEPS)
    t0 = time.perf_counter()
    res = video_trained.run(budget, clips, frames, size, Path(args.report) if args.report else None, args.quick)
    video_trained.print_tables(res)
    load = os.getloadavg()
    print(f"\ntrained rows: {time.perf_counter() - t0:.0f} s; load average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    if args.report:
        print(f"strip: {args.report}/video_strip.gif (.mp4); plot: {args.report}/video_warping_error.png")


if __name__ == "__main__":
    main()
