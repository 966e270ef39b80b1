"""Stylise + super-resolve benchmark (SPEC S4): one net against the two-program cascade, 256 -> 1024.

    .venv/bin/python benchmarks/stylesr.py                 # speed table: 256^2 in, 1024^2 out, fp32, batch 1
    .venv/bin/python benchmarks/stylesr.py --quality 15    # + train target=sr x4 for 15 CPU minutes, held-out PSNR/SSIM
    .venv/bin/python benchmarks/stylesr.py --quick         # tiny sizes, 2 repeats: checks that the script runs

Speed: every model runs in a fresh process (so its peak memory is its own), on the CPU, fp32,
batch 1, under ``torch.inference_mode``, one warm-up then the **median of** ``--repeats`` (>= 5)
forward passes. Rows:

* **cascade** — what a user chains today, re-implemented here from the papers' descriptions with
  random weights (speed depends on shapes only): Johnson et al. 2016's feed-forward style net at
  256^2 (9x9 conv 32, 3x3 stride-2 convs 64 and 128, five 128-channel residual blocks, two
  stride-1/2 up-sampling convs 64 and 32, 9x9 conv to RGB, instance norm), then Real-ESRGAN's
  compact SR net SRVGGNetCompact (3x3 conv to 64 features, 32 body convs of 64 channels each with
  PReLU, a conv to 3 * 4^2 channels, pixel shuffle x4, plus the nearest-up-sampled input) to 1024^2.
  Its two stages are listed too.
* **stylesr full / light** — ours, with the kwargs of the built-in configs ``stylesr_sr_x4`` /
  ``stylesr_style_x4`` (same net) and ``stylesr_light_x4``.
* **ONNX fp32 / int8** — the light net exported to ONNX and run by onnxruntime, as exported and
  after static post-training quantisation to int8 (``imtranslate.compress.quantize``: QDQ,
  per-channel weights, calibrated on six photographs of scikit-image, area-downscaled to the input
  size; its PSNR against the fp32 ONNX output on two more is printed). Post-training only: no
  8-bit fine-tuning (quantisation-aware training) is done.

Figures: latency (median s), peak extra memory (the process's resident high-water mark during
the passes, Linux ``VmHWM`` reset through ``/proc/self/clear_refs``, minus the resident memory
before them), GFLOPs of one pass (``torch.utils.flop_counter``, a multiply-add = 2 FLOPs) and
parameters. Timings on a machine shared with other jobs are not comparable; run it alone.

Quality (``--quality MINUTES``): trains ``stylesr_sr_x4`` (``--light``: ``stylesr_light_x4``),
target=sr x4, L1 only (the PSNR-optimal loss; no VGG weights needed) for about that many minutes
of wall time on scikit-image's sample photographs, then up-scales held-out photographs whole
(astronaut, coffee and camera are never trained on) and prints PSNR/SSIM of ours and bicubic on
the same HR pictures.

Teacher (``--teacher-quality SWAP_STEPS SR_STEPS``): trains style swap's inverse net on the same
photographs with the built-in generated style picture, then ``target=teacher`` x4 on its outputs
(L1), for fixed step counts; on held-out photographs it prints PSNR/SSIM of one stylesr pass on
the LR photo against the teacher's output on the HR photo, next to what the LR photo alone gives
(the teacher at LR, bicubic x4), and each output's Gram distance to the style picture.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------------------------
# The cascade, from the papers' descriptions (random weights)
# --------------------------------------------------------------------------------------------
class _ConvIN(nn.Sequential):
    def __init__(self, cin, cout, k, stride=1, relu=True, up=False):
        layers = [nn.Upsample(scale_factor=2, mode="nearest")] if up else []
        layers += [nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k, stride), nn.InstanceNorm2d(cout, affine=True)]
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class _JohnsonRes(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(_ConvIN(c, c, 3), _ConvIN(c, c, 3, relu=False))

    def forward(self, x):
        return x + self.body(x)


class JohnsonStyleNet(nn.Module):
    """Johnson, Alahi & Fei-Fei 2016 (with Ulyanov et al.'s instance norm): 256^2 -> 256^2."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            _ConvIN(3, 32, 9), _ConvIN(32, 64, 3, 2), _ConvIN(64, 128, 3, 2),
            *[_JohnsonRes(128) for _ in range(5)],
            # the paper's two fractionally-strided (stride 1/2) convs, as up-sample + 3x3 conv
            _ConvIN(128, 64, 3, up=True), _ConvIN(64, 32, 3, up=True),
            nn.ReflectionPad2d(4), nn.Conv2d(32, 3, 9), nn.Tanh())

    def forward(self, x):
        return self.net(x)


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact SR net (Wang et al. 2021): 64 features, 32 body convs, PReLU, x4 shuffle."""

    def __init__(self, feats=64, n_conv=32, scale=4):
        super().__init__()
        layers = [nn.Conv2d(3, feats, 3, padding=1), nn.PReLU(feats)]
        for _ in range(n_conv):
            layers += [nn.Conv2d(feats, feats, 3, padding=1), nn.PReLU(feats)]
        layers += [nn.Conv2d(feats, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        self.body = nn.Sequential(*layers)
        self.scale = scale

    def forward(self, x):
        return self.body(x) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


class Cascade(nn.Module):
    def __init__(self):
        super().__init__()
        self.style, self.sr = JohnsonStyleNet(), SRVGGNetCompact()

    def forward(self, x):
        return self.sr(self.style(x))


# --------------------------------------------------------------------------------------------
# Our nets, with the built-in configs' kwargs
# --------------------------------------------------------------------------------------------
def _ours(config: str) -> nn.Module:
    from imtranslate.tasks import get_task, load_config

    cfg = load_config(Path(__import__("imtranslate").__file__).parent / "configs" / f"{config}.yaml",
                      ["model.vgg_weights=random", "model.lambda_gan=0"])
    return get_task("stylesr")(cfg, "cpu").generator


MODELS = {
    "cascade (Johnson + SRVGGNetCompact)": (Cascade, 1),
    "  Johnson style net": (JohnsonStyleNet, 4),  # runs at the output size / 4 and keeps it
    "  SRVGGNetCompact x4": (SRVGGNetCompact, 1),
    "stylesr full (stylesr_sr_x4)": (lambda: _ours("stylesr_sr_x4"), 1),
    "stylesr light (stylesr_light_x4)": (lambda: _ours("stylesr_light_x4"), 1),
    # the light net exported to ONNX and run by onnxruntime: fp32, and int8 after static
    # post-training quantisation (imtranslate.compress.quantize, calibrated on photographs)
    "stylesr light, ONNX fp32 (onnxruntime)": (lambda: _ours("stylesr_light_x4"), 1),
    "stylesr light, ONNX int8 (onnxruntime)": (lambda: _ours("stylesr_light_x4"), 1),
}
ONNX_ROWS = {"stylesr light, ONNX fp32 (onnxruntime)": "fp32", "stylesr light, ONNX int8 (onnxruntime)": "int8"}


def _calibration(size: int, n: int = 8) -> list[np.ndarray]:
    """``n`` photograph crops (scikit-image's samples, area-downscaled) of ``size``^2 in [-1, 1]."""
    from PIL import Image
    from skimage import data as skd

    out = []
    for name in ("chelsea", "rocket", "coffee", "astronaut", "immunohistochemistry", "brick", "grass", "coins"):
        img = np.asarray(getattr(skd, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = np.asarray(Image.fromarray(img[..., :3].astype(np.uint8)).resize((size, size), Image.BOX))
        out.append((img.astype(np.float32) / 127.5 - 1).transpose(2, 0, 1)[None].copy())
    return out[:n]


def measure_onnx(name: str, size: int, repeats: int, threads: int) -> dict:
    """The light net through onnxruntime, fp32 or int8 (static, QDQ, calibrated on photographs)."""
    import onnxruntime as ort
    from imtranslate.compress.quantize import quantize_onnx
    from imtranslate.infer.export import _export

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = MODELS[name][0]().eval()
    x = torch.rand(1, 3, size, size) * 2 - 1
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net(x)
    work = Path(tempfile.mkdtemp(prefix="stylesr_onnx_"))
    path = work / "light.onnx"
    _export(net, x, path, 17)
    extra = {}
    if ONNX_ROWS[name] == "int8":
        calib = _calibration(size)
        res = quantize_onnx(path, work / "light.int8.onnx", calib[:6], calib[6:], min_psnr=0.0,
                            log=lambda m: print(m, file=sys.stderr))
        path, extra = res["path"], {"psnr_vs_fp32": res["psnr_vs_fp32"]}
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    a = x.numpy()
    sess.run(None, {"A": a})  # warm-up
    times, base, peak = _time_passes(lambda: sess.run(None, {"A": a}), repeats)
    return {"name": name, "in": size, "out": size * 4, "median_s": statistics.median(times),
            "peak_extra_mb": (peak - base) / 2**20, "gflops": fc.get_total_flops() / 1e9,
            "params_m": sum(p.numel() for p in net.parameters()) / 1e6, "threads": threads or torch.get_num_threads(),
            **extra}


# --------------------------------------------------------------------------------------------
# One model in its own process
# --------------------------------------------------------------------------------------------
def _time_passes(run, repeats: int) -> tuple[list[float], int, int]:
    """``repeats`` timed calls of ``run`` (after the caller's warm-up): seconds each, and the
    resident size before them and the high-water mark during them (VmHWM reset first)."""
    from imtranslate.infer.tiling import peak_rss_bytes, reset_peak_rss, rss_bytes

    base = rss_bytes()
    reset_peak_rss()  # VmHWM back to the current RSS
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times, base, max(peak_rss_bytes(), rss_bytes())


def measure_one(name: str, size: int, repeats: int, threads: int) -> dict:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    build, shrink = MODELS[name]
    net = build().eval()
    side = size if shrink == 1 else size * 4 // shrink  # the style net alone sees the input size
    x = torch.rand(1, 3, side, side) * 2 - 1
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            y = net(x)
        flops = fc.get_total_flops()
        del y
        net(x)  # warm-up
        times, base, peak = _time_passes(lambda: net(x), repeats)
    return {"name": name, "in": side, "out": side * (1 if shrink == 4 else 4), "median_s": statistics.median(times),
            "peak_extra_mb": (peak - base) / 2**20, "gflops": flops / 1e9,
            "params_m": sum(p.numel() for p in net.parameters()) / 1e6, "threads": torch.get_num_threads()}


def speed_table(size: int, repeats: int, threads: int) -> list[dict]:
    rows = []
    for name in MODELS:
        cmd = [sys.executable, __file__, "--one", name, "--size", str(size), "--repeats", str(repeats),
               "--threads", str(threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    cascade = rows[0]["median_s"]
    print(f"\n{size}^2 -> {size * 4}^2, fp32, batch 1, {rows[0]['threads']} threads, median of {repeats}\n")
    print("| model | latency s (median) | vs cascade | peak extra MB | GFLOPs | parameters (M) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} ({r['in']}->{r['out']}) | {r['median_s']:.3f} | {cascade / r['median_s']:.2f}x | "
              f"{r['peak_extra_mb']:.0f} | {r['gflops']:.3g} | {r['params_m']:.3f} |")
    int8 = [r for r in rows if "psnr_vs_fp32" in r]
    fp32 = [r for r in rows if r["name"] == "stylesr light, ONNX fp32 (onnxruntime)"]
    if int8 and fp32:
        print(f"\nint8 vs fp32 ONNX (same onnxruntime): {fp32[0]['median_s'] / int8[0]['median_s']:.2f}x faster, output "
              f"{int8[0]['psnr_vs_fp32']:.1f} dB PSNR from the fp32 output (post-training quantisation, random weights)")
    return rows


# --------------------------------------------------------------------------------------------
# Quality: target=sr x4 on scikit-image photographs
# --------------------------------------------------------------------------------------------
HELD_OUT = ("astronaut", "coffee", "camera")
TRAIN = ("chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel",
         "coins", "moon", "page", "text", "clock", "colorwheel", "cell")


def skimage_photos(root: Path) -> Path:
    """scikit-image's bundled sample photographs as ``train/`` and ``val/`` folders (grey ones as RGB)."""
    from PIL import Image
    from skimage import data as skd

    for split, names in (("train", TRAIN), ("val", HELD_OUT)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for n in names:
            try:
                img = np.asarray(getattr(skd, n)())
            except Exception as e:  # a sample that needs a download (pooch) is skipped, never fetched
                print(f"skipping skimage.data.{n}: {type(e).__name__}", file=sys.stderr)
                continue
            img = img.astype(np.uint8) if img.dtype != bool else img.astype(np.uint8) * 255
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            Image.fromarray(img[..., :3]).save(root / split / f"{n}.png")
    return root


def quality(minutes: float, light: bool, quick: bool, threads: int) -> dict:
    from imtranslate import metrics
    from imtranslate.checkpoint_file import load_generator, read_meta
    from imtranslate.data import list_images, read_image, to_tensor
    from imtranslate.data.degrade import degrade_batch, upscale_bicubic
    from imtranslate.tasks import load_config
    from imtranslate.tasks.stylesr import degradation_of
    from imtranslate.train.loop import train

    if threads:
        torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="stylesr_quality_"))
    root = skimage_photos(work / "photos")
    config = "stylesr_light_x4" if light else "stylesr_sr_x4"
    base = Path(__import__("imtranslate").__file__).parent / "configs" / f"{config}.yaml"
    over = [f"data.root={root}", "data.crop_size=96", "model.lambda_perceptual=0", "model.lambda_gan=0",
            "train.progress=false", "train.tensorboard=false", "train.image_every=0", "train.val_every=0",
            "train.lr_policy=cosine", "train.lr_decay_start=0.5", f"train.out_dir={work / 'runs'}"]
    if quick:
        over += ["model.ngf=4", "model.head_width=4", "data.crop_size=32", "train.batch_size=2"]
    # steps that fill the time: the loop's own step rate (data loading included) from a short run
    # of it, then train.time_limit as the hard bound, so the budget holds even if the rate drifts
    cfg = load_config(base, over + ["train.steps=25", "train.log_every=5", "train.ckpt_every=25",
                                    f"train.out_dir={work / 'calibrate'}"])
    cal = train(cfg, log=lambda m: None)
    recs = [json.loads(ln) for ln in (cal / "metrics.jsonl").read_text().splitlines()]
    ips = [r["images_per_s"] for r in recs if r.get("kind") == "train" and r["step"] > 5]
    step_s = cfg.train.batch_size / float(np.median(ips))
    budget = minutes * 60
    steps = max(2, int(budget / step_s))
    print(f"quality: {config}, {step_s:.2f} s/step in the loop -> {steps} steps for {minutes} min", file=sys.stderr)
    cfg = load_config(base, over + [f"train.steps={steps}", f"train.ckpt_every={steps}",
                                    f"train.time_limit={budget}"])
    t0 = time.perf_counter()
    run = train(cfg, log=lambda m: print(m, file=sys.stderr))
    train_min = (time.perf_counter() - t0) / 60
    steps = read_meta(run / "checkpoints" / "last.safetensors")["step"]
    G = load_generator(run / "checkpoints" / "last.safetensors").net.eval()
    s, deg = cfg.model.scale, degradation_of(cfg.model)
    res = {"ours_psnr": [], "bicubic_psnr": [], "ours_ssim": [], "bicubic_ssim": []}
    for i, f in enumerate(list_images(root / "val")):
        img = read_image(f, "rgb")
        h, w = img.shape[0] // s * s, img.shape[1] // s * s
        if quick:
            h, w = min(h, 64), min(w, 64)
        hr = to_tensor(np.ascontiguousarray(img[:h, :w]))[None]
        lr = degrade_batch(hr, torch.tensor([i]), deg)
        with torch.inference_mode():
            ours = G(lr)
        bic = upscale_bicubic(lr, s)
        res["ours_psnr"].append(float(metrics.psnr(ours, hr)[0]))
        res["bicubic_psnr"].append(float(metrics.psnr(bic, hr)[0]))
        res["ours_ssim"].append(float(metrics.ssim(ours, hr)[0]))
        res["bicubic_ssim"].append(float(metrics.ssim(bic, hr)[0]))
    means = {k: float(np.mean(v)) for k, v in res.items()}
    print(f"\ntarget=sr x{s}, {config}, L1, {steps} steps in {train_min:.1f} min, held-out {', '.join(HELD_OUT)} "
          f"(whole pictures)\n")
    print("| | PSNR dB | SSIM |\n|---|---|---|")
    print(f"| bicubic | {means['bicubic_psnr']:.2f} | {means['bicubic_ssim']:.4f} |")
    print(f"| ours | {means['ours_psnr']:.2f} | {means['ours_ssim']:.4f} |")
    print(f"| gain | {means['ours_psnr'] - means['bicubic_psnr']:+.2f} | "
          f"{means['ours_ssim'] - means['bicubic_ssim']:+.4f} |")
    return means


def teacher_quality(swap_steps: int, sr_steps: int, quick: bool, threads: int) -> dict:
    """target=teacher: how closely one x4 pass reproduces the style-swap pipeline run on the HR photo.

    Fixed step counts (not a time budget), so the figures do not depend on the machine's load."""
    from imtranslate.checkpoint_file import load_generator
    from imtranslate import metrics
    from imtranslate.data import list_images, read_image, to_tensor, write_image
    from imtranslate.data.degrade import degrade_batch, upscale_bicubic
    from imtranslate.data.styles import builtin_style
    from imtranslate.tasks import load_config
    from imtranslate.tasks.stylesr import TeacherTargets, degradation_of
    from imtranslate.train.loop import train
    from imtranslate.train.stepping import build_task

    if threads:
        torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="stylesr_teacher_"))
    root = skimage_photos(work / "photos")
    style_dir = work / "style"
    style_dir.mkdir()
    write_image(style_dir / "builtin.png", builtin_style(256))
    quiet = ["train.progress=false", "train.tensorboard=false", "train.image_every=0", "train.val_every=0",
             f"train.out_dir={work / 'runs'}", "model.vgg_weights=random"]
    small = ["model.ngf=4"] if quick else []
    # 1. the teacher: style swap's inverse net (random-weight VGG encoder: nothing pretrained here)
    t0 = time.perf_counter()
    swap_cfg = load_config(None, ["task=styleswap", "data.dataset=unpaired", f"data.root={root / 'train'}",
                                  f"data.style_root={style_dir}", "data.load_size=128", "data.crop_size=64",
                                  "model.lambda_pixel=1.0", f"train.steps={swap_steps}", "train.batch_size=4",
                                  "train.lr_g=0.001", "train.beta1=0.9", f"train.ckpt_every={swap_steps}",
                                  # no EMA: over a few hundred steps an EMA of decay 0.999 is still ~3/4 the
                                  # initial weights, and its inverse net paints one flat colour
                                  "train.ema_decay=0", *quiet, *small])
    swap_run = train(swap_cfg, log=lambda m: print(m, file=sys.stderr))
    swap_min = (time.perf_counter() - t0) / 60
    teacher_ckpt = swap_run / "checkpoints" / "last.safetensors"
    # 2. the student: one x4 net trained on the teacher's outputs of the HR photos (L1 only)
    crop = 32 if quick else 96
    base = Path(__import__("imtranslate").__file__).parent / "configs" / "stylesr_sr_x4.yaml"
    over = [f"data.root={root}", f"data.crop_size={crop}", "model.target=teacher", f"model.teacher={teacher_ckpt}",
            f"model.style_image={style_dir / 'builtin.png'}", f"model.teacher_cache={work / 'cache'}",
            "model.lambda_perceptual=0", "model.lambda_gan=0", "train.lr_policy=cosine",
            "train.lr_decay_start=0.5", f"train.steps={sr_steps}", f"train.ckpt_every={sr_steps}", *quiet]
    if quick:
        over += ["model.ngf=4", "model.head_width=4", "train.batch_size=2"]
    cfg = load_config(base, over)
    t0 = time.perf_counter()
    run = train(cfg, log=lambda m: print(m, file=sys.stderr))
    sr_min = (time.perf_counter() - t0) / 60
    G = load_generator(run / "checkpoints" / "last.safetensors").net.eval()
    task = build_task(cfg, "cpu")  # its style_error: relative Gram error vs the style picture
    teacher = TeacherTargets(cfg)
    s, deg = cfg.model.scale, degradation_of(cfg.model)
    rows = {k: {"psnr": [], "ssim": [], "style": [], "s": []} for k in ("teacher", "ours", "lr_teacher")}
    for i, f in enumerate(list_images(root / "val")):
        img = read_image(f, "rgb")
        side = 64 if quick else 512
        h, w = min(img.shape[0], side) // s * s, min(img.shape[1], side) // s * s
        hr_img = np.ascontiguousarray(img[:h, :w])
        hr = to_tensor(hr_img)[None]
        lr = degrade_batch(hr, torch.tensor([i]), deg)
        t1 = time.perf_counter()
        target = to_tensor(teacher.stylise(hr_img))[None]  # the teacher on the HR photo
        rows["teacher"]["s"].append(time.perf_counter() - t1)
        t1 = time.perf_counter()
        with torch.inference_mode():
            ours = G(lr)
        rows["ours"]["s"].append(time.perf_counter() - t1)
        lr_img = ((lr[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        t1 = time.perf_counter()  # what the small photo alone gives: the teacher at LR, then bicubic x4
        small_out = upscale_bicubic(to_tensor(teacher.stylise(lr_img))[None], s)
        rows["lr_teacher"]["s"].append(time.perf_counter() - t1)
        with torch.inference_mode():
            for k, y in (("teacher", target), ("ours", ours), ("lr_teacher", small_out)):
                rows[k]["psnr"].append(float(metrics.psnr(y, target)[0]))
                rows[k]["ssim"].append(float(metrics.ssim(y, target)[0]))
                rows[k]["style"].append(float(task.style_error(task.vgg(y.float()))[0]))
    means = {k: {m: float(np.mean(v)) for m, v in r.items()} for k, r in rows.items()}
    print(f"\ntarget=teacher x{s}: teacher = style swap (inverse net, {swap_steps} steps, {swap_min:.1f} min; "
          f"random-weight VGG-19 encoder), student = stylesr_sr_x4, L1, {sr_steps} steps in {sr_min:.1f} min; "
          f"held-out {', '.join(HELD_OUT)}, up to {512 if not quick else 64} px HR\n")
    print("| output | PSNR vs teacher(HR) dB | SSIM | Gram distance to the style | s per picture |")
    print("|---|---|---|---|---|")
    names = {"teacher": "teacher on the HR photo (the target)", "ours": "stylesr: one pass on the LR photo",
             "lr_teacher": "teacher on the LR photo, then bicubic x4"}
    for k in ("teacher", "ours", "lr_teacher"):
        r = means[k]
        psnr = "—" if k == "teacher" else f"{r['psnr']:.2f}"
        ssim = "—" if k == "teacher" else f"{r['ssim']:.4f}"
        print(f"| {names[k]} | {psnr} | {ssim} | {r['style']:.4f} | {r['s']:.3f} |")
    return means


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="input side (output is 4x)")
    ap.add_argument("--repeats", type=int, default=7, help="timed passes per model (median; >= 5)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--quality", type=float, default=0.0, metavar="MINUTES",
                    help="also train target=sr x4 this long on scikit-image photographs and report PSNR/SSIM")
    ap.add_argument("--teacher-quality", type=int, nargs=2, default=None, metavar=("SWAP_STEPS", "SR_STEPS"),
                    help="also train a style-swap teacher and a target=teacher x4 student for these many steps; "
                         "PSNR vs the teacher's HR output and Gram distance to the style")
    ap.add_argument("--light", action="store_true", help="quality: train the light net instead of the full one")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed table")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats: check that the script runs")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        measure = measure_onnx if args.one in ONNX_ROWS else measure_one
        print(json.dumps(measure(args.one, args.size, args.repeats, args.threads)))
        return
    if args.quick:
        args.size, args.repeats = 32, 2
    if not args.no_speed:
        speed_table(args.size, args.repeats, args.threads)
    if args.quality > 0:
        quality(args.quality, args.light, args.quick, args.threads)
    if args.teacher_quality:
        teacher_quality(*args.teacher_quality, args.quick, args.threads)


if __name__ == "__main__":
    main()
