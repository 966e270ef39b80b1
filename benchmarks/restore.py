"""Face restoration benchmark (SPEC S5 inference): our pipeline vs the GFPGAN-style chain, on this CPU.

    python benchmarks/restore.py                      # full run (about 6-8 min on 2 idle threads)
    python benchmarks/restore.py --quick              # seconds: small pictures, one tile, for a smoke test
    python benchmarks/restore.py --sr SR.ckpt --enhancer FACE.ckpt --pruned FACE_PRUNED.ckpt --parser PARSE.ckpt

Inputs: two 1280x720 photographs composited from scikit-image photographs and the built-in synthetic
faces plus the astronaut's face (one face; five faces), degraded (blur, x2 down, noise, JPEG) and
restored at --upscale 2. Printed:

* per stage (SR, detection, enhancement, parsing, fusion): seconds, total, peak RSS growth;
  for each pipeline given (Lanczos SR + identity enhancer when no checkpoint is given);
* the GFPGAN-style chain on the same input, from re-implementations of its architectures with random
  weights (costs only): RetinaFace-R50 detector (at 640x480, as the reference), GFPGAN v1.3 clean
  (StyleGAN2 decoder, channel multiplier 2) at 512x512 per face, BiSeNet-R18 parser at 512x512 per face,
  Real-ESRGAN x2plus RRDB (23 blocks) on the background; the RRDB is timed on a few 400x400 tiles (``--rrdb-tiles``)
  and extrapolated to the whole background by tile count, as a whole 720p run takes minutes;
* quality against the clean photograph: PSNR/SSIM of the whole picture and of the face boxes, vs
  Lanczos; the seam figure: mean |gradient| on the paste border (mask 0.05..0.95) divided by the mean
  |gradient| of the picture's own face region (<= 1: the border is no sharper than the picture).
"""
from __future__ import annotations

import argparse
import math
import resource
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ---- inputs ------------------------------------------------------------------------------------------
def make_photo(n_faces: int, size=(1280, 720), seed: int = 0):
    """(clean uint8 HxWx3 at the output size, degraded input at half size, face boxes in output pixels)."""
    from skimage import data as skd

    from imtranslate.data.synthetic_faces import render_face

    w, h = size
    rng = np.random.default_rng(seed)
    clean = cv2.resize(skd.chelsea() if n_faces == 1 else skd.coffee(), (w, h), interpolation=cv2.INTER_CUBIC)
    astro = skd.astronaut()[30:210, 140:310]
    boxes = []
    for i in range(n_faces):
        side = int(rng.integers(h // 5, h // 3)) if n_faces > 1 else h // 2
        face = astro if i == 0 else render_face(seed * 100 + i, 128).image
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        x = int((i + 0.5) * w / n_faces - side / 2) if n_faces > 1 else (w - side) // 2
        y = int(rng.integers(0, h - side))
        clean[y:y + side, x:x + side] = face
        boxes.append((x, y, x + side, y + side))
    small = cv2.resize(clean, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 0.8)
    small = np.clip(small + rng.normal(0, 4, small.shape), 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 60])
    degraded = cv2.cvtColor(cv2.imdecode(enc, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return clean, degraded, boxes


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 100.0 if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def ssim(a, b):
    from skimage.metrics import structural_similarity

    return structural_similarity(a, b, channel_axis=2, data_range=255)


def seam_ratio(out: np.ndarray, faces) -> float:
    """Mean |gradient| on the paste border over the mean |gradient| inside the faces (output picture)."""
    from imtranslate.infer.face_align import warp_back

    g = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grad = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    border, inside = [], []
    for f in faces:
        m = warp_back(f.mask, f.matrix, g.shape)
        m = m / max(float(m.max()), 1e-6)  # a parser's soft mask may never reach 1: its own peak is "inside"
        border.append(grad[(m > 0.05) & (m < 0.95)])
        inside.append(grad[m >= 0.95])
    b, i = np.concatenate(border), np.concatenate(inside)
    return float(b.mean() / max(i.mean(), 1e-6)) if len(b) and len(i) else float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the GFPGAN-style chain, re-implemented from the papers (random weights: cost only) ---------------
class RRDB(nn.Module):
    """Residual-in-residual dense block (ESRGAN): three 5-conv dense blocks, growth 32, residual 0.2."""

    def __init__(self, nf=64, gc=32):
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleList(nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, 1, 1)
                                                  for i in range(5)) for _ in range(3))

    def forward(self, x):
        out = x
        for convs in self.blocks:
            feats = [out]
            for i, c in enumerate(convs):
                y = c(torch.cat(feats, 1))
                if i < 4:
                    feats.append(F.leaky_relu(y, 0.2))
            out = out + 0.2 * y
        return x + 0.2 * out


class RRDBNetX2(nn.Module):
    """Real-ESRGAN x2plus: pixel-unshuffle by 2 (12 channels), 23 RRDBs at 64, two nearest x2 + convs."""

    def __init__(self, nf=64, nb=23):
        super().__init__()
        self.first = nn.Conv2d(12, nf, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(nf) for _ in range(nb)])
        self.body_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.up1, self.up2 = nn.Conv2d(nf, nf, 3, 1, 1), nn.Conv2d(nf, nf, 3, 1, 1)
        self.hr, self.last = nn.Conv2d(nf, nf, 3, 1, 1), nn.Conv2d(nf, 3, 3, 1, 1)

    def forward(self, x):
        f = self.first(F.pixel_unshuffle(x, 2))
        f = f + self.body_conv(self.body(f))
        f = F.leaky_relu(self.up1(F.interpolate(f, scale_factor=2.0, mode="nearest")), 0.2)
        f = F.leaky_relu(self.up2(F.interpolate(f, scale_factor=2.0, mode="nearest")), 0.2)
        return self.last(F.leaky_relu(self.hr(f), 0.2))


class ModConv(nn.Module):
    """StyleGAN2 modulated convolution (weight demodulation), grouped over the batch."""

    def __init__(self, cin, cout, k, style_dim, up=False, demod=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k) / math.sqrt(cin * k * k))
        self.affine = nn.Linear(style_dim, cin)
        self.up, self.demod, self.k = up, demod, k

    def forward(self, x, s):
        b, c, h, w = x.shape
        wgt = self.weight * self.affine(s)[:, None, :, None, None]
        if self.demod:
            wgt = wgt * torch.rsqrt(wgt.pow(2).sum([2, 3, 4], keepdim=True) + 1e-8)
        if self.up:  # GFPGAN clean: bilinear x2 then conv
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            h, w = h * 2, w * 2
        out = F.conv2d(x.reshape(1, b * c, h, w), wgt.reshape(-1, c, self.k, self.k), padding=self.k // 2, groups=b)
        return out.reshape(b, -1, h, w)


class GFPGANv13(nn.Module):
    """GFPGAN v1.3 (clean) at 512: U-Net encoder of residual blocks 512->4, a linear to 16 style codes,
    a StyleGAN2 decoder (channel multiplier 2) whose features are modulated by SFT (scale, shift) from
    the encoder's decoder path at every resolution, ToRGB skips."""

    def __init__(self, size=512, style=512, mult=2, width=1.0):
        super().__init__()
        ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * mult, 128: 128 * mult, 256: 64 * mult, 512: 32 * mult}
        ch = {k: max(8, int(v * width)) for k, v in ch.items()}
        style = max(8, int(style * width))
        e = {k: v // 2 for k, v in ch.items()}  # the U-Net encoder is narrowed by 0.5 (unet_narrow)
        self.log = int(math.log2(size))
        self.ch = ch
        self.first = nn.Conv2d(3, e[size], 1)
        self.down = nn.ModuleList(self._res(e[2 ** i], e[2 ** (i - 1)], "down") for i in range(self.log, 2, -1))
        self.final_conv = nn.Conv2d(e[4], e[4], 3, 1, 1)
        self.final_linear = nn.Linear(e[4] * 16, style * (self.log * 2 - 2))
        self.up = nn.ModuleList(self._res(e[2 ** i], e[2 ** (i + 1)], "up") for i in range(2, self.log))
        # SFT (scale, shift) for the second half of the decoder's channels (sft_half), from encoder features
        self.cond_scale = nn.ModuleList(self._sft(e[2 ** i]) for i in range(3, self.log + 1))
        self.cond_shift = nn.ModuleList(self._sft(e[2 ** i]) for i in range(3, self.log + 1))
        self.const = nn.Parameter(torch.randn(1, ch[4], 4, 4))
        self.conv1 = ModConv(ch[4], ch[4], 3, style)
        self.rgb1 = ModConv(ch[4], 3, 1, style, demod=False)
        self.convs, self.rgbs = nn.ModuleList(), nn.ModuleList()
        for i in range(3, self.log + 1):
            cin, cout = ch[2 ** (i - 1)], ch[2 ** i]
            self.convs.append(ModConv(cin, cout, 3, style, up=True))
            self.convs.append(ModConv(cout, cout, 3, style))
            self.rgbs.append(ModConv(cout, 3, 1, style, demod=False))
        self.style = style

    @staticmethod
    def _res(cin, cout, mode):
        return nn.ModuleDict({"c1": nn.Conv2d(cin, cin, 3, 1, 1), "c2": nn.Conv2d(cin, cout, 3, 1, 1),
                              "skip": nn.Conv2d(cin, cout, 1, bias=False), "mode": nn.Identity()}) if mode else None

    @staticmethod
    def _sft(c):
        return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, c, 3, 1, 1))

    @staticmethod
    def _run_res(m, x, scale):
        y = F.leaky_relu(m["c1"](x), 0.2)
        y = F.interpolate(y, scale_factor=scale, mode="bilinear", align_corners=False)
        y = F.leaky_relu(m["c2"](y), 0.2)
        return y + m["skip"](F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False))

    def forward(self, x):
        f = F.leaky_relu(self.first(x), 0.2)
        skips = []
        for m in self.down:
            f = self._run_res(m, f, 0.5)
            skips.insert(0, f)
        f = F.leaky_relu(self.final_conv(f), 0.2)
        styles = self.final_linear(f.flatten(1)).view(x.shape[0], -1, self.style)
        conds = []
        for i, m in enumerate(self.up):
            f = f + skips[i]
            f = self._run_res(m, f, 2.0)
            conds.append((self.cond_scale[i](f), self.cond_shift[i](f)))
        out = self.const.expand(x.shape[0], -1, -1, -1)
        out = F.leaky_relu(self.conv1(out, styles[:, 0]), 0.2)
        skip = self.rgb1(out, styles[:, 1])
        k = 1
        for j, rgb in enumerate(self.rgbs):
            out = F.leaky_relu(self.convs[2 * j](out, styles[:, k]), 0.2)
            scale, shift = conds[j]
            half = out.shape[1] - scale.shape[1]  # SFT on the second half of the channels (sft_half)
            out = torch.cat([out[:, :half], out[:, half:] * scale + shift], 1)
            out = F.leaky_relu(self.convs[2 * j + 1](out, styles[:, k + 1]), 0.2)
            skip = rgb(out, styles[:, k + 2]) + F.interpolate(skip, scale_factor=2.0, mode="bilinear",
                                                              align_corners=False)
            k += 2
        return skip


class RetinaFaceR50(nn.Module):
    """RetinaFace (Deng et al. 2019) with a ResNet-50: FPN on C3-C5 (256), SSH context modules, and
    class / box / 5-landmark heads for 2 anchors per position."""

    def __init__(self):
        super().__init__()
        import torchvision
        from torchvision.ops import FeaturePyramidNetwork

        r = torchvision.models.resnet50(weights=None)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.l2, self.l3, self.l4 = r.layer2, r.layer3, r.layer4
        self.fpn = FeaturePyramidNetwork([512, 1024, 2048], 256)
        self.ssh = nn.ModuleList(nn.ModuleDict({"a": nn.Conv2d(256, 128, 3, 1, 1), "b1": nn.Conv2d(256, 64, 3, 1, 1),
                                                "b2": nn.Conv2d(64, 64, 3, 1, 1), "c2": nn.Conv2d(64, 64, 3, 1, 1),
                                                "c3": nn.Conv2d(64, 64, 3, 1, 1)}) for _ in range(3))
        self.heads = nn.ModuleList(nn.Conv2d(256, 2 * (2 + 4 + 10), 1) for _ in range(3))

    def forward(self, x):
        c3 = self.l2(self.stem(x))
        c4 = self.l3(c3)
        c5 = self.l4(c4)
        feats = self.fpn({"0": c3, "1": c4, "2": c5})
        outs = []
        for f, s, h in zip(feats.values(), self.ssh, self.heads):
            b = F.relu(s["b1"](f))
            b2 = s["b2"](b)
            c = s["c3"](F.relu(s["c2"](b)))
            outs.append(h(F.relu(torch.cat([s["a"](f), b2, c], 1))))
        return outs


class BiSeNetR18(nn.Module):
    """face-parsing BiSeNet: ResNet-18 context path with ARMs at 1/16, 1/32, a global context, FFM, 19 classes
    (its spatial detail comes from the ResNet's 1/8 feature, as face-parsing.PyTorch does)."""

    def __init__(self, n_classes=19):
        super().__init__()
        import torchvision

        r = torchvision.models.resnet18(weights=None)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2)
        self.l3, self.l4 = r.layer3, r.layer4
        cbr = lambda i, o, k=3: nn.Sequential(nn.Conv2d(i, o, k, 1, k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU())  # noqa: E731
        self.arm16, self.arm32, self.gap = cbr(256, 128), cbr(512, 128), cbr(512, 128, 1)
        self.att16, self.att32 = nn.Conv2d(128, 128, 1), nn.Conv2d(128, 128, 1)
        self.head16, self.head32 = cbr(128, 128), cbr(128, 128)
        self.ffm = cbr(256, 256, 1)
        self.ffm_att = nn.Sequential(nn.Conv2d(256, 64, 1), nn.ReLU(), nn.Conv2d(64, 256, 1), nn.Sigmoid())
        self.out = nn.Sequential(cbr(256, 256), nn.Conv2d(256, n_classes, 1))

    def forward(self, x):
        f8 = self.stem(x)
        f16 = self.l3(f8)
        f32 = self.l4(f16)
        a32 = self.arm32(f32)
        a32 = a32 * torch.sigmoid(self.att32(F.adaptive_avg_pool2d(a32, 1))) + self.gap(F.adaptive_avg_pool2d(f32, 1))
        up32 = self.head32(F.interpolate(a32, size=f16.shape[-2:], mode="nearest"))
        a16 = self.arm16(f16)
        a16 = a16 * torch.sigmoid(self.att16(F.adaptive_avg_pool2d(a16, 1))) + up32
        up16 = self.head16(F.interpolate(a16, size=f8.shape[-2:], mode="nearest"))
        f = self.ffm(torch.cat([f8, up16], 1))
        f = f + f * self.ffm_att(F.adaptive_avg_pool2d(f, 1))
        return F.interpolate(self.out(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


def timed(fn, *args, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        with torch.inference_mode():
            fn(*args)
        best = min(best, time.perf_counter() - t)
    return best


def params_m(net):
    return sum(p.numel() for p in net.parameters()) / 1e6


def gfpgan_chain(shape_in, n_faces: int, quick: bool, rrdb_tiles: int) -> dict:
    """Seconds per stage of the GFPGAN-style chain for an input of ``shape_in`` (H, W) at x2 output."""
    torch.manual_seed(0)
    h, w = shape_in
    res = {}
    face = 64 if quick else 512
    det_size = (64, 64) if quick else (480, 640)
    ret = RetinaFaceR50().eval()
    res["detect"] = timed(ret, torch.randn(1, 3, *det_size))
    gfp = GFPGANv13(size=face, width=1 / 16 if quick else 1.0).eval()
    res["gfpgan_params_m"] = params_m(gfp)
    res["enhance"] = timed(gfp, torch.randn(1, 3, face, face)) * n_faces
    bis = BiSeNetR18().eval()
    res["parse"] = timed(bis, torch.randn(1, 3, face, face)) * n_faces
    rr = RRDBNetX2(nb=2 if quick else 23).eval()
    tile = 32 if quick else 400
    per_tile = sum(timed(rr, torch.randn(1, 3, tile, tile)) for _ in range(rrdb_tiles)) / rrdb_tiles
    n_tiles = math.ceil(h / tile) * math.ceil(w / tile)
    res["sr"] = per_tile * n_tiles
    res["sr_note"] = f"{per_tile:.2f} s per {tile}^2 tile x {n_tiles} tiles (extrapolated from {rrdb_tiles})"
    res["total"] = res["detect"] + res["enhance"] + res["parse"] + res["sr"]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small pictures and nets: a smoke test in seconds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sr", default="none", help="stylesr target=sr checkpoint (the light SR net); none = Lanczos")
    ap.add_argument("--enhancer", default="none", help="faceenhance checkpoint (none = identity)")
    ap.add_argument("--pruned", default=None, help="the pruned faceenhance checkpoint, run as a second pipeline")
    ap.add_argument("--parser", default="landmarks", help="faceparse checkpoint, or landmarks")
    ap.add_argument("--rrdb-tiles", type=int, default=2, help="RRDB tiles timed for the extrapolation")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from imtranslate.infer.restore import Restorer, upscale_lanczos

    size = (320, 180) if args.quick else (1280, 720)
    photos = {f"{n} face{'s' if n > 1 else ''}": make_photo(n, size, seed=n) for n in (1, 5)}
    pipelines = {"ours": args.enhancer}
    if args.pruned:
        pipelines["ours, pruned enhancer"] = args.pruned
    print(f"threads {args.threads}; output {size[0]}x{size[1]}, --upscale 2; sr {args.sr}; parser {args.parser}")
    print("| photo | pipeline | faces | SR s | detect s | enhance s | parse s | fuse s | total s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    quality = []
    for pname, (clean, degraded, boxes) in photos.items():
        for label, enh in pipelines.items():
            r = Restorer.from_options(sr=args.sr, enhancer=enh, parser=args.parser, upscale=2, device="cpu")
            r(degraded)  # warm-up (first-call allocations, lazy imports)
            t0 = time.perf_counter()
            res = r(degraded)
            total = time.perf_counter() - t0
            t = res.timings
            print(f"| {pname} | {label} | {len(res.faces)} | {t['sr']:.2f} | {t['detect']:.2f} | {t['enhance']:.2f} | "
                  f"{t['parse']:.2f} | {t['fuse']:.3f} | {total:.2f} | {peak_rss_mb():.0f} |")
            lz = upscale_lanczos(degraded, 2)
            face_px = lambda img: np.concatenate([img[y1:y2, x1:x2].reshape(-1, 3) for x1, y1, x2, y2 in boxes])  # noqa: E731
            quality.append((pname, label, psnr(res.image, clean), ssim(res.image, clean), psnr(lz, clean),
                            ssim(lz, clean), psnr(face_px(res.image), face_px(clean)), psnr(face_px(lz), face_px(clean)),
                            seam_ratio(res.image, res.faces) if res.faces else float("nan"), total))
    print("\n| photo | pipeline | PSNR | SSIM | Lanczos PSNR | Lanczos SSIM | face PSNR | Lanczos face PSNR | seam ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for q in quality:
        print(f"| {q[0]} | {q[1]} | {q[2]:.2f} | {q[3]:.4f} | {q[4]:.2f} | {q[5]:.4f} | {q[6]:.2f} | {q[7]:.2f} | {q[8]:.2f} |")
    print("\nGFPGAN-style chain (re-implemented, random weights), same input, x2 output:")
    print("| photo | RetinaFace-R50 s | GFPGAN v1.3 s | BiSeNet s | Real-ESRGAN x2plus s | total s | ours s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for (pname, (clean, degraded, _)), n in zip(photos.items(), (1, 5)):
        g = gfpgan_chain(degraded.shape[:2], n, args.quick, args.rrdb_tiles)
        ours = next(q[9] for q in quality if q[0] == pname and q[1] == "ours")
        print(f"| {pname} | {g['detect']:.2f} | {g['enhance']:.2f} | {g['parse']:.2f} | {g['sr']:.1f} | "
              f"{g['total']:.1f} | {ours:.2f} | {g['total'] / ours:.1f}x |")
        print(f"  (Real-ESRGAN: {g['sr_note']}; GFPGAN v1.3 re-implementation {g['gfpgan_params_m']:.1f} M params)")


if __name__ == "__main__":
    main()
