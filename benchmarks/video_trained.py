"""Video with trained models against ground truth (SPEC S6): the trained rows of benchmarks/video.py.

Four contour -> photo translators, each trained for the same wall-clock budget
(``train.time_limit``) in this process:

* ``pix2pix per-frame``: pix2pix on the still synthetic scenes, every frame on its own;
* ``pix2pix + blend``: the same model through ``imtranslate video``'s post-hoc blend
  (DIS-medium on the input frames, T = 0.9);
* ``pix2pix temporal loss``: pix2pix trained with ``model.lambda_temporal=10`` (random known warps);
* ``vid2vid``: the sequential generator trained on animated synthetic clips (exact flow).

Held-out clips: animated synthetic scenes (``imtranslate.data.synthetic_video.make_clip``, split
"test": never seen in training) with a moving camera, and the same scenes with a still camera for
the flicker figure. Figures per method:

* WE exact: warping error of consecutive outputs with the clips' exact flow and occlusion masks;
* WE DIS: the same with DIS-medium flow and masks estimated from the ground-truth photo frames
  (the contour inputs are too sparse for DIS);
* PSNR / SSIM: every output frame against its ground-truth photo frame (mean over frames);
* flicker: temporal standard deviation of the output over the static pixels of still-camera clips
  (ground truth constant within 1 grey level over the clip), grey levels, no flow needed;
* ms/frame: inference per frame, blending included, on this machine.

Plus one clip of camera motion over a scikit-image photograph (``data.clips.synthesize_clip``)
through contour -> photo models trained on scikit-image photographs (``imtranslate data pairs
--kind contours`` of random crops; vid2vid on clips of them with DIS pseudo flow).
"""
from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from imtranslate import metrics
from imtranslate.data.clips import synthesize_clip
from imtranslate.data.io import to_tensor
from imtranslate.data.pairs import contour_drawing
from imtranslate.data.synthetic_video import make_clip
from imtranslate.infer.flow import build_flow, occlusion_mask
from imtranslate.infer.predictor import Predictor
from imtranslate.infer.video_translate import VideoTranslator, WarpingErrorMeter
from imtranslate.tasks import load_config
from imtranslate.train.loop import train

# the strip's columns; the tables also have "pix2pix + blend, flow-smooth 2" (the blend's flow on
# contour frames blurred by 2 px) and "vid2vid + blend" (the post-hoc blend on vid2vid's output)
METHODS = ("pix2pix per-frame", "pix2pix + blend", "pix2pix temporal loss", "vid2vid")
#: training steps with --steps: (pix2pix, vid2vid) or None for the wall-clock budget
STEPS: tuple[int, int] | None = None


def _train(overrides, budget: float, out: Path) -> Path:
    if STEPS is not None:  # fixed steps (development under load): no time limit
        n = STEPS[1] if "task=vid2vid" in overrides else STEPS[0]
        limit = [f"train.steps={n}"]
    else:
        limit = [f"train.time_limit={budget}", "train.steps=1000000"]
    cfg = load_config(None, overrides + [*limit, "train.progress=false",
                                         "train.tensorboard=false", "train.val_every=0", "train.image_every=0",
                                         "train.ckpt_every=1000000", f"train.out_dir={out}", "train.device=cpu",
                                         "train.log_every=1000000"])
    run = train(cfg, log=lambda m: None)
    return run / "checkpoints" / "last.safetensors"


def _pix2pix(size: int, extra=()):
    return ["task=pix2pix", "data.dataset=synthetic", "data.synthetic.input=contour", f"data.synthetic.size={size}",
            f"data.crop_size={size}", "data.synthetic.n_train=512", "data.synthetic.n_val=8", "train.batch_size=8",
            "train.ema_decay=0.99", "model.num_downs=4", "model.ngf=16", "model.ndf=16", *extra]


def _vid2vid(size: int, extra=()):
    return ["task=vid2vid", "data.dataset=synthetic", "data.synthetic.input=contour", f"data.synthetic.size={size}",
            "data.synthetic.n_train=128", "data.synthetic.n_val=4", "train.batch_size=4", "train.ema_decay=0.99",
            "model.n_frames=4", "model.ngf=16", "model.n_blocks=3", "model.flow_ngf=8", "model.flow_downsampling=2",
            "model.flow_blocks=2", "model.ndf=16", "model.ndf_video=16", "model.n_layers_d=2", "model.num_d=1",
            "model.num_d_video=1", "model.lambda_l1=10", "model.lambda_vgg=0", *extra]


class _Stepper:
    """A stateful frame -> frame callable around a (vid2vid) translator, for blending its output."""

    def __init__(self, vt):
        self.vt = vt

    def __call__(self, frame):
        return self.vt.step(frame)


def translators(ckpts: dict) -> dict:
    """Method -> a fresh VideoTranslator (per clip: they carry state)."""
    p = {k: Predictor.from_checkpoint(v, device="cpu") for k, v in ckpts.items()}
    v2v = lambda: VideoTranslator.from_checkpoint(ckpts["vid2vid"], device="cpu")  # noqa: E731
    return {
        "pix2pix per-frame": lambda: VideoTranslator(p["pix2pix"], temporal=0.0),
        "pix2pix + blend": lambda: VideoTranslator(p["pix2pix"], flow="dis-medium", temporal=0.9),
        "pix2pix + blend, flow-smooth 2": lambda: VideoTranslator(p["pix2pix"], flow="dis-medium", temporal=0.9,
                                                                  flow_smooth=2.0),
        "pix2pix temporal loss": lambda: VideoTranslator(p["temporal"], temporal=0.0),
        "vid2vid": v2v,
        "vid2vid + blend": lambda: VideoTranslator(_Stepper(v2v()), flow="dis-medium", temporal=0.9),
    }


def _frame_metrics(outs, gts) -> tuple[float, float]:
    o = torch.stack([to_tensor(x) for x in outs])
    g = torch.stack([to_tensor(x) for x in gts])
    return float(metrics.psnr(o, g).mean()), float(metrics.ssim(o, g).mean())


def evaluate(make_vt: dict, clips: list, still: list, dis_masks: list) -> tuple[list, dict]:
    """Rows of figures and, per method, the exact warping error per frame of the first clip."""
    rows, per_frame = [], {}
    for name, make in make_vt.items():
        we, we_dis, ps, ss, ms = WarpingErrorMeter(), WarpingErrorMeter(), [], [], []
        outs0 = None
        for ci, (inputs, gts, flows, valid) in enumerate(clips):
            vt = make()
            t0 = time.perf_counter()
            outs = list(vt.translate_frames(inputs))
            ms.append(1000 * (time.perf_counter() - t0) / len(inputs))
            curve = [we.update(outs[t - 1], outs[t], flows[t], valid[t]) for t in range(1, len(outs))]
            for t in range(1, len(outs)):
                we_dis.update(outs[t - 1], outs[t], *dis_masks[ci][t])
            p, s = _frame_metrics(outs, gts)
            ps.append(p)
            ss.append(s)
            if ci == 0:
                per_frame[name], outs0 = curve, outs
        flick = []
        for inputs, gts in still:
            outs = np.stack(list(make().translate_frames(inputs))).astype(np.float32)  # (T, H, W, 3)
            g = np.stack(gts).astype(np.float32)
            static = g.std(0).max(-1) < 1.0
            if static.any():
                flick.append(float(outs.std(0).mean(-1)[static].mean()))
        rows.append({"method": name, "we_exact": we.value, "we_dis": we_dis.value, "psnr": statistics.mean(ps),
                     "ssim": statistics.mean(ss), "flicker": statistics.mean(flick) if flick else float("nan"),
                     "ms": statistics.median(ms), "strip": outs0})
    return rows, per_frame


def _dis_masks(gts):
    flow = build_flow("dis-medium")
    out = [None]
    for t in range(1, len(gts)):
        fw, bw = flow.estimate_both(gts[t - 1], gts[t])
        out.append((bw, ~occlusion_mask(fw, bw, gts[t - 1], gts[t])))
    return out


def synthetic_clips(n: int, n_frames: int, size: int, seed: int = 0):
    moving, still = [], []
    for i in range(n):
        c = make_clip(seed, n_frames, size, split="test", index=i)
        moving.append((c.contour, c.photo, c.flows_bw, c.valid))
        s = make_clip(seed, n_frames, size, split="test", index=i, camera=False, light=0.0)
        still.append((s.contour, s.photo))
    return moving, still


def skimage_photos() -> list[np.ndarray]:
    from skimage import data as skd

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "motorcycle_left"]
    out = []
    for n in names:
        try:
            img = getattr(skd, n)()
        except Exception:  # noqa: BLE001 - some images are not shipped with every scikit-image build
            continue
        if img.ndim == 3 and img.shape[2] == 3:
            out.append(np.ascontiguousarray(img[..., :3]))
    return out


def skimage_setup(work: Path, size: int, n_frames: int, seed: int = 0):
    """Training pairs (pix2pix), training clips (vid2vid) from the scikit-image photographs but the
    astronaut, and one held-out clip of camera motion over the astronaut."""
    from PIL import Image

    photos = skimage_photos()
    held, train_photos = photos[0], photos[1:]
    rng = np.random.default_rng(seed)
    small = [np.asarray(Image.fromarray(p).resize((p.shape[1] // 2, p.shape[0] // 2), Image.BICUBIC))
             for p in train_photos]
    pairs = work / "sk_pairs"
    for d in ("train/A", "train/B", "val/A", "val/B"):
        (pairs / d).mkdir(parents=True, exist_ok=True)
    clips = work / "sk_clips"
    for i in range(64):
        p = small[i % len(small)]
        c = synthesize_clip(p, 4, rng, size=(size, size), max_shift=2.0)
        split = "train" if i >= 4 else "val"
        Image.fromarray(c.frames[0]).save(pairs / split / "B" / f"{i:03d}.png")
        Image.fromarray(contour_drawing(c.frames[0])).save(pairs / split / "A" / f"{i:03d}.png")
        for kind, frames in (("A", [contour_drawing(f) for f in c.frames]), ("B", c.frames)):
            d = clips / split / kind / f"c{i:03d}"
            d.mkdir(parents=True, exist_ok=True)
            for t, f in enumerate(frames):
                Image.fromarray(f).save(d / f"{t:02d}.png")
    held_small = np.asarray(Image.fromarray(held).resize((held.shape[1] // 2, held.shape[0] // 2), Image.BICUBIC))
    c = synthesize_clip(held_small, n_frames, np.random.default_rng(seed + 1), size=(size, size), max_shift=2.0)
    clip = ([contour_drawing(f) for f in c.frames], c.frames, c.flows_bw, c.valid)
    return pairs, clips, clip


def run(budget: float, n_clips: int, n_frames: int, size: int, report_dir: Path | None, quick: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="imtranslate-videobench-"))
    try:
        t0 = time.perf_counter()
        ckpts = {"pix2pix": _train(_pix2pix(size), budget, work / "runs"),
                 "temporal": _train(_pix2pix(size, ["model.lambda_temporal=10"]), budget, work / "runs"),
                 "vid2vid": _train(_vid2vid(size), budget, work / "runs")}
        train_s = time.perf_counter() - t0
        moving, still = synthetic_clips(n_clips, n_frames, size)
        dis = [_dis_masks(c[1]) for c in moving]
        rows, curves = evaluate(translators(ckpts), moving, still, dis)

        sk_budget = budget / 2
        pairs, clips, sk_clip = skimage_setup(work, size, n_frames)
        sk_common = ["data.input_kind=grey", "data.flip=false"]
        sk = {"pix2pix": _train(["task=pix2pix", "data.dataset=folders", f"data.root={pairs}", f"data.crop_size={size}",
                                 "train.batch_size=8", "train.ema_decay=0.99", "model.num_downs=4", "model.ngf=16",
                                 "model.ndf=16", *sk_common], sk_budget, work / "runs"),
              "vid2vid": _train([o for o in _vid2vid(size) if not o.startswith("data.")]
                                + ["data.dataset=folders", f"data.root={clips}", f"data.crop_size={size}", *sk_common], sk_budget, work / "runs")}
        sk["temporal"] = _train(["task=pix2pix", "data.dataset=folders", f"data.root={pairs}", f"data.crop_size={size}",
                                 "train.batch_size=8", "train.ema_decay=0.99", "model.num_downs=4", "model.ngf=16",
                                 "model.ndf=16", "model.lambda_temporal=10", *sk_common], sk_budget, work / "runs")
        sk_rows, _ = evaluate(translators(sk), [sk_clip], [], [_dis_masks(sk_clip[1])])
        result = {"rows": rows, "curves": curves, "sk_rows": sk_rows, "train_s": train_s, "budget": budget}
        if report_dir is not None:
            write_report(report_dir, moving[0], rows, curves)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_report(folder: Path, clip, rows, curves) -> None:
    """A side-by-side strip (input | per-frame | blended | temporal loss | vid2vid | ground truth)
    as GIF and MP4, and the exact warping error per frame as a PNG plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from imtranslate.data.video_io import VideoWriter

    folder.mkdir(parents=True, exist_ok=True)
    inputs, gts = clip[0], clip[1]
    by = {r["method"]: r["strip"] for r in rows}
    frames = []
    for t in range(len(inputs)):
        tiles = [np.repeat(inputs[t][..., None], 3, 2)] + [by[m][t] for m in METHODS] + [gts[t]]
        strip = np.concatenate(tiles, 1)
        frames.append(np.asarray(Image.fromarray(strip).resize((strip.shape[1] * 3, strip.shape[0] * 3), Image.NEAREST)))
    Image.fromarray(frames[0]).save(folder / "video_strip.gif", save_all=True,
                                    append_images=[Image.fromarray(f) for f in frames[1:]], duration=150, loop=0)
    with VideoWriter(folder / "video_strip.mp4", fps=8) as w:
        for f in frames:
            w.write(f)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for m in METHODS:
        ax.plot(range(1, len(curves[m]) + 1), curves[m], marker="o", ms=3, label=m)
    ax.set_xlabel("frame")
    ax.set_ylabel("warping error (exact flow)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "video_warping_error.png", dpi=120)
    plt.close(fig)


def print_tables(res: dict) -> None:
    how = (f"{STEPS[0]} steps for the pix2pix models, {STEPS[1]} for vid2vid" if STEPS is not None
           else f"each {res['budget']:.0f} s of training")
    print(f"\ntrained models ({how}, {res['train_s']:.0f} s in all for the synthetic "
          "models), held-out animated synthetic clips, contour -> photo\n")
    print("| output | WE exact flow | WE DIS | WE lower by | PSNR vs GT (dB) | SSIM vs GT | flicker (static, levels) | ms/frame |")
    print("|---|---|---|---|---|---|---|---|")
    for rows in (res["rows"],):
        base = rows[0]["we_exact"]
        for r in rows:
            print(f"| {r['method']} | {r['we_exact']:.5f} | {r['we_dis']:.5f} | {base / r['we_exact']:.1f}x | "
                  f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['flicker']:.2f} | {r['ms']:.1f} |")
    print("\ncamera motion over a scikit-image photograph (astronaut; models trained on the other scikit-image "
          "photographs)\n")
    print("| output | WE exact flow | WE DIS | PSNR vs GT (dB) | SSIM vs GT | ms/frame |")
    print("|---|---|---|---|---|---|")
    for r in res["sk_rows"]:
        print(f"| {r['method']} | {r['we_exact']:.5f} | {r['we_dis']:.5f} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['ms']:.1f} |")
