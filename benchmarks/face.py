"""Face enhancement figures (SPEC S5): speed and size at 512^2 against GFPGAN v1.3's architecture,
held-out quality, and dynamic vs fixed degradation coefficients. A script, not a test.

    python benchmarks/face.py            # the full run (about 8 CPU minutes on a quiet machine)
    python benchmarks/face.py --quick    # a smoke run (minutes): 8 training steps, 64^2 timing

Tables printed:

1. **Speed at 512^2** (one face, batch 1, float32, torch.no_grad, median of repeats): ours (the
   ``faceenhance_synthetic`` architecture), ours pruned (the same run with ``model.prune_rounds=1``:
   channel reduction in rounds inside training, the code ``imtranslate compress`` drives; or,
   with ``--compress-after``, ``imtranslate compress`` on the finished run), and GFPGAN v1.3's architecture re-built here from
   the paper's description with random weights: a U-Net of residual blocks (512 -> 4 px, widths
   from the StyleGAN2 table with channel multiplier 2) whose bottleneck goes through a linear layer
   to 16 style vectors of 512, and whose up path gives SFT scale / shift maps per resolution to a
   StyleGAN2 decoder (modulated convs, two per resolution 8..512, toRGB skips). Latency, MACs
   (``torch.utils.flop_counter``, FLOPs / 2), parameters and peak resident memory (each model
   measured in a fresh process).
2. **Quality**: held-out synthetic faces (PSNR / SSIM of the degraded input and of ours) and the
   scikit-image astronaut's face crop, degraded the same way.
3. **Dynamic vs fixed coefficients**: the coefficients over training of a dynamic run and the
   held-out figures of both runs (the same steps, seeds and held-out degradation).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from imtranslate.nets.face_enhancer import ModulatedConv  # noqa: E402


# --------------------------------------------------------------------------------------------
# GFPGAN v1.3's architecture, from the paper's description (random weights)
# --------------------------------------------------------------------------------------------
def _channels(cm: int = 2) -> dict[int, int]:
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm}


class _ResBlock(nn.Module):
    def __init__(self, cin, cout, mode):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(cin, cin, 3, padding=1), nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)
        self.mode = mode

    def forward(self, x):
        f = 0.5 if self.mode == "down" else 2.0
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.interpolate(h, scale_factor=f, mode="bilinear", align_corners=False)
        h = F.leaky_relu(self.conv2(h), 0.2)
        return h + self.skip(F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False))


class GFPGANArch(nn.Module):
    """U-Net + linear to W+ + SFT conditions + StyleGAN2 decoder, 512 px, channel multiplier 2."""

    def __init__(self, size: int = 512, style: int = 512, cm: int = 2, unet_narrow: float = 0.5):
        super().__init__()
        ch = _channels(cm)  # the StyleGAN2 decoder's widths
        u = {k: int(v * unet_narrow) for k, v in ch.items()}  # the U-Net's (GFPGAN halves them)
        self.log = int(math.log2(size))
        self.n_latent = self.log * 2 - 2
        self.first = nn.Conv2d(3, u[size], 1)
        self.down = nn.ModuleList(_ResBlock(u[2 ** i], u[2 ** (i - 1)], "down") for i in range(self.log, 2, -1))
        self.final_conv = nn.Conv2d(u[4], u[4], 3, padding=1)
        self.final_linear = nn.Linear(u[4] * 16, style * self.n_latent)  # one style vector per decoder layer (W+)
        self.up = nn.ModuleList(_ResBlock(u[2 ** i], u[2 ** (i + 1)], "up") for i in range(2, self.log))
        # SFT conditions for half the decoder channels at each resolution 8..size
        self.cond_scale = nn.ModuleList(nn.Sequential(nn.Conv2d(u[2 ** i], u[2 ** i], 3, padding=1), nn.LeakyReLU(0.2),
                                                      nn.Conv2d(u[2 ** i], ch[2 ** i] // 2, 3, padding=1))
                                        for i in range(3, self.log + 1))
        self.cond_shift = nn.ModuleList(nn.Sequential(nn.Conv2d(u[2 ** i], u[2 ** i], 3, padding=1), nn.LeakyReLU(0.2),
                                                      nn.Conv2d(u[2 ** i], ch[2 ** i] // 2, 3, padding=1))
                                        for i in range(3, self.log + 1))
        self.style_mlp = nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(style, style), nn.LeakyReLU(0.2))])  # unused (latent input)
        self.const = nn.Parameter(torch.randn(1, ch[4], 4, 4))
        self.conv1 = ModulatedConv(ch[4], ch[4], style)
        self.rgb1 = ModulatedConv(ch[4], 3, style, k=1, demodulate=False)
        self.convs = nn.ModuleList()
        self.rgbs = nn.ModuleList()
        cin = ch[4]
        for i in range(3, self.log + 1):
            c = ch[2 ** i]
            self.convs.append(nn.ModuleList([ModulatedConv(cin, c, style), ModulatedConv(c, c, style)]))
            self.rgbs.append(ModulatedConv(c, 3, style, k=1, demodulate=False))
            cin = c

    def forward(self, x):
        feat = F.leaky_relu(self.first(x), 0.2)
        skips = []
        for blk in self.down:
            skips.insert(0, feat)
            feat = blk(feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)
        w = self.final_linear(feat.flatten(1)).view(x.shape[0], self.n_latent, -1)
        conds = []
        for i, blk in enumerate(self.up):
            feat = blk(feat) + skips[i]
            conds.append((self.cond_scale[i](feat), self.cond_shift[i](feat)))  # at 8, 16, ..., size
        h = self.conv1(self.const.expand(x.shape[0], -1, -1, -1), w[:, 0])
        rgb = self.rgb1(h, w[:, 1])
        for j, ((c1, c2), to_rgb) in enumerate(zip(self.convs, self.rgbs)):
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = F.leaky_relu(c1(h, w[:, 2 * j + 1]), 0.2)
            scale, shift = conds[j]
            half = h.shape[1] // 2  # SFT on half the channels, as GFPGAN's CS-SFT
            h = torch.cat([h[:, :half], h[:, half:] * scale + shift], 1)
            h = F.leaky_relu(c2(h, w[:, 2 * j + 2]), 0.2)
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + to_rgb(h, w[:, 2 * j + 2])
        return rgb


# --------------------------------------------------------------------------------------------
# Measurement of one model, in its own process (peak memory)
# --------------------------------------------------------------------------------------------
def _build(name: str, ckpt: str | None, size: int):
    if name == "gfpgan_v1.3_arch":
        return GFPGANArch(size=size).eval()
    from imtranslate.checkpoint_file import load_generator

    return load_generator(ckpt).net.eval()


def measure_one(name: str, ckpt: str | None, size: int, repeats: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    net = _build(name, ckpt, size).requires_grad_(False)  # FlopCounterMode tracks modules by grad hooks
    x = torch.rand(1, 3, size, size) * 2 - 1
    params = sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            net(x)
        macs = fc.get_total_flops() / 2
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times.sort()
    return {"model": name, "latency_s": times[len(times) // 2], "gmacs": macs / 1e9, "mparams": params / 1e6,
            "peak_rss_mb": peak_mb}


def measure(name, ckpt, size, repeats) -> dict:
    cmd = [sys.executable, __file__, "--measure-one", name, "--size", str(size), "--repeats", str(repeats)]
    if ckpt:
        cmd += ["--ckpt", str(ckpt)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Training runs and quality
# --------------------------------------------------------------------------------------------
def train_run(work: Path, name: str, steps: int, dynamic: bool, n_train: int, extra=()) -> Path:
    from imtranslate.tasks import load_config
    from imtranslate.train.loop import train

    cfg = load_config(str(ROOT / "src/imtranslate/configs/faceenhance_synthetic.yaml"), [
        f"train.steps={steps}", f"model.dynamic={'true' if dynamic else 'false'}",
        f"model.adapt_every={max(1, steps // 12)}", f"data.synthetic.n_train={n_train}",
        f"data.synthetic.root={work / 'faces'}", f"data.synthetic.n_val={8 if n_train < 64 else 32}", "train.tensorboard=false", "train.progress=false",
        "train.image_every=0", f"train.val_every={steps}", f"train.ckpt_every={steps}", "train.device=cpu",
        f"train.out_dir={work / 'runs'}", *extra])
    return train(cfg, run_dir=work / name, log=lambda m: None)


def held_out(ckpt: Path) -> dict:
    """PSNR / SSIM of degraded input and of ours on the held-out synthetic faces and the astronaut."""
    import numpy as np
    from skimage import data as skdata

    from imtranslate import metrics
    from imtranslate.checkpoint_file import load_generator, read_meta
    from imtranslate.data.degradations import apply_pipeline
    from imtranslate.data.synthetic_faces import face_seed, render_face
    from imtranslate.tasks import resolve
    from imtranslate.tasks.faceenhance import pipeline_of

    meta = read_meta(ckpt)
    cfg = resolve(meta["config"])
    G = load_generator(ckpt).net.eval()
    size = cfg.data.synthetic.size
    faces = torch.stack([torch.from_numpy(render_face(face_seed(7, "test", i), size).image).permute(2, 0, 1)
                         for i in range(16)]).float() / 127.5 - 1
    astro = skdata.astronaut()[20:220, 160:360]  # the face, about centred
    astro = torch.from_numpy(np.ascontiguousarray(astro)).permute(2, 0, 1)[None].float() / 127.5 - 1
    astro = F.interpolate(astro, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    res = {}
    for key, good in (("synthetic", faces), ("astronaut", astro)):
        x = apply_pipeline(good, torch.arange(good.shape[0]) + 1000, pipeline_of(cfg.model), spread=cfg.model.spread)
        with torch.no_grad():
            y = G(x)
        res[key] = {"input_psnr": float(metrics.psnr(x, good).mean()), "psnr": float(metrics.psnr(y, good).mean()),
                    "input_ssim": float(metrics.ssim(x, good).mean()), "ssim": float(metrics.ssim(y, good).mean())}
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 training steps, 64^2 timing")
    ap.add_argument("--steps", type=int, default=0, help="training steps per run (0: 1200, quick 40)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prune-rounds", type=int, default=1, help="model.prune_rounds of the pruned run (1: within 0.5 dB, docs/FACE.md)")
    ap.add_argument("--prune-ratio", type=float, default=0.25)
    ap.add_argument("--prune-quality", default="psnr:30")
    ap.add_argument("--compress-after", action="store_true",
                    help="prune the finished dynamic run with imtranslate compress instead of inside training")
    ap.add_argument("--measure-one", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure_one:
        print(json.dumps(measure_one(args.measure_one, args.ckpt, args.size, args.repeats)))
        return
    steps = args.steps or (8 if args.quick else 1200)
    size = 64 if args.quick else args.size
    n_train = 16 if args.quick else 512
    work = Path(tempfile.mkdtemp(prefix="imtranslate_face_bench_"))
    t0 = time.time()
    dyn = train_run(work, "dynamic", steps, True, n_train)
    fixed = train_run(work, "fixed", steps, False, n_train)
    ckpt = dyn / "checkpoints" / "last.safetensors"
    # the pruned model: the dynamic run again with channel reduction in rounds inside training
    # (model.prune_rounds, SPEC S5): pruned after rounds 1..R of R + 1, the same steps in all
    pruned = train_run(work, "pruned", steps, True, n_train,
                       [f"model.prune_rounds={args.prune_rounds}", f"model.prune_ratio={args.prune_ratio}",
                        f"model.prune_quality={args.prune_quality}"])
    small = pruned / "checkpoints" / "last.safetensors"
    if args.compress_after:  # the other way: imtranslate compress on the finished dynamic run
        from imtranslate.compress import compress

        small, _ = compress(ckpt, work / "compressed.safetensors", ratio=args.prune_ratio,
                            rounds=1 if args.quick else args.prune_rounds, round_steps=2 if args.quick else 50,
                            quality=args.prune_quality, latency_repeats=1, log=lambda m: None)
    print(f"\n## Speed at {size}x{size} (batch 1, float32, CPU, median of {args.repeats})\n")
    print("| model | latency (s) | GMACs | params (M) | peak RSS (MB) |\n|---|---|---|---|---|")
    rows = [measure("ours", ckpt, size, args.repeats), measure("ours_pruned", small, size, args.repeats),
            measure("gfpgan_v1.3_arch", None, size, args.repeats)]
    for r in rows:
        print(f"| {r['model']} | {r['latency_s']:.3f} | {r['gmacs']:.2f} | {r['mparams']:.3f} | {r['peak_rss_mb']:.0f} |")
    g = rows[2]["latency_s"]
    print(f"\nspeed-up vs GFPGAN's architecture: ours {g / rows[0]['latency_s']:.1f}x, pruned {g / rows[1]['latency_s']:.1f}x")
    print("\n## Held-out quality (PSNR dB / SSIM; input = the degraded face)\n")
    print("| run | set | input PSNR | PSNR | input SSIM | SSIM |\n|---|---|---|---|---|---|")
    for name, c in (("dynamic", ckpt), ("fixed", fixed / "checkpoints" / "last.safetensors"), ("pruned", small)):
        for key, v in held_out(c).items():
            print(f"| {name} | {key} | {v['input_psnr']:.2f} | {v['psnr']:.2f} | {v['input_ssim']:.3f} | {v['ssim']:.3f} |")
    from imtranslate.train.checkpoint import read_meta

    hist = read_meta(ckpt)["task_state"]["history"]
    types = read_meta(ckpt)["config"]["model"]["degradations"]
    print("\n## Dynamic coefficients over training\n")
    print("| step | aug. factor | " + " | ".join(types) + " |\n|" + "---|" * (2 + len(types)))
    for h in hist:
        print(f"| {int(h[0])} | {h[1]:.2f} | " + " | ".join(f"{c:.2f}" for c in h[2:]) + " |")
    print(f"\n(total {time.time() - t0:.0f} s; runs under {work})")


if __name__ == "__main__":
    main()
