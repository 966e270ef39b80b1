"""Style swap benchmark (SPEC S3): time and peak extra memory of encoder, swap and decoder.

    .venv/bin/python benchmarks/style_swap.py                 # the table below, ~2-4 CPU minutes
    .venv/bin/python benchmarks/style_swap.py --no-big --no-conv --repeats 1   # quicker

Content 512x512 with style 256, 512 and 1024 pixels square, exact and fast swap, on the CPU, then
the fast swap's agreement with the exact one, then content 1024 + style 1024 (exact) to show the
memory stays bounded.

* The VGG-19 encoder has **random weights** (``vgg_weights="random"``, stated explicitly): no
  pretrained file is downloaded here. Time and memory do not depend on the weight values, only on
  the shapes. The agreement figures do depend on the features, so they are measured on real
  photographs (scikit-image's samples) but through the random encoder; with ImageNet weights
  they will differ.
* The decoder is the default 9-layer inverse net (random weights unless ``--inverse CKPT``).
* Time is wall-clock, best of ``--repeats`` runs after a warm-up; "CPU s" is the process's CPU
  time (both threads): on a machine shared with other jobs the wall time grows, the CPU time
  much less.
* Peak extra memory = the process's resident-memory high-water mark during a stage (Linux
  ``VmHWM``, reset before the stage through ``/proc/self/clear_refs``; a 1 ms sampling thread
  where that is not available) minus the resident memory before the whole pipeline. glibc is
  told to give large blocks back (``MALLOC_MMAP_THRESHOLD_``) so freed memory is not counted as
  still in use.
* Reference figures on this kind of machine (from the issue): a PyTorch port of the original
  style swap takes 35 s and +3.5 GB at content 512 / style 512; AdaIN takes 5.6 s.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # must be set before the process starts: re-exec once
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from imtranslate.nets.inverse import InverseNet, build_encoder  # noqa: E402
from imtranslate.nets.style_swap import DEFAULT_CHUNK, style_swap, style_swap_fast  # noqa: E402

PORT_SECONDS, PORT_EXTRA_GB, ADAIN_SECONDS = 35.0, 3.5, 5.6


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------
def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


class PeakRSS:
    """Highest resident memory while the block runs (VmHWM, or a sampling thread)."""

    def __enter__(self):
        gc.collect()
        self.use_hwm = _reset_hwm() and _hwm() is not None
        self.peak = rss()
        if not self.use_hwm:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.use_hwm:
            self.peak = max(self.peak, _hwm())
        else:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, rss())


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def photo(name: str, size: int) -> torch.Tensor:
    """A scikit-image sample photograph, resized to size x size, as (1, 3, S, S) in [-1, 1]."""
    import cv2
    import skimage.data

    img = getattr(skimage.data, name)()
    img = cv2.resize(img[..., :3], (size, size), interpolation=cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1


def run_pipeline(encoder, decoder, content, style, swap, repeats: int) -> dict:
    """Time (best of ``repeats``) and peak extra memory of each stage."""
    stages = {}
    base = None
    for r in range(repeats + 1):  # run 0 warms up (oneDNN primitives, page faults) and is not timed
        gc.collect()
        if base is None:
            base = rss()
        record = r > 0
        with torch.inference_mode():
            out = {}
            for name, fn in (("encoder", lambda: (encoder(content)["relu3_1"], encoder(style)["relu3_1"])),
                             ("swap", lambda: swap(*out["encoder"])),
                             ("decoder", lambda: decoder(out["swap"]))):
                with PeakRSS() as mem:
                    t0, c0 = time.perf_counter(), time.process_time()
                    out[name] = fn()
                    dt, dc = time.perf_counter() - t0, time.process_time() - c0
                if record:
                    s = stages.setdefault(name, {"seconds": float("inf"), "cpu_seconds": float("inf"), "extra_mb": 0.0})
                    s["seconds"] = min(s["seconds"], dt)
                    s["cpu_seconds"] = min(s["cpu_seconds"], dc)
                    s["extra_mb"] = max(s["extra_mb"], (mem.peak - base) / 2**20)
            result = out
    stages["total"] = {"seconds": sum(s["seconds"] for s in stages.values()),
                       "cpu_seconds": sum(s["cpu_seconds"] for s in stages.values()),
                       "extra_mb": max(s["extra_mb"] for s in stages.values())}
    return {"stages": stages, "features": result["encoder"], "swapped": result["swap"], "picture": result["decoder"]}


SAMPLE_CONTENT = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "camera", "coins", "cat", "page",
                  "moon")
SAMPLE_STYLES = ("hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "grass", "gravel", "brick")


def write_sample_folders(root: str) -> None:
    """``root/content`` and ``root/style`` from scikit-image's bundled pictures (nothing downloaded)."""
    from pathlib import Path

    import skimage.data
    from PIL import Image

    for sub, names in (("content", SAMPLE_CONTENT), ("style", SAMPLE_STYLES)):
        folder = Path(root) / sub
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            img = getattr(skimage.data, name)()
            img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disparity)
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            Image.fromarray(img[..., :3].astype(np.uint8)).save(folder / f"{name}.png")
    print(f"wrote {len(SAMPLE_CONTENT)} content and {len(SAMPLE_STYLES)} style pictures under {root}")


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    mse = float((a.float() - b.float()).pow(2).mean())
    return 10 * np.log10(peak**2 / max(mse, 1e-12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--content", type=int, default=512, help="content side in pixels (default 512)")
    ap.add_argument("--styles", default="256,512,1024", help="style sides in pixels")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per configuration (best is kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="swap chunk (patches per band)")
    ap.add_argument("--inverse", default=None, help="a styleswap checkpoint: decode with its inverse net")
    ap.add_argument("--no-ema", action="store_true", help="with --inverse: the raw weights, not the EMA")
    ap.add_argument("--no-conv", action="store_true", help="skip the conv2d (textbook) swap at style 512")
    ap.add_argument("--no-big", action="store_true", help="skip content 1024 + style 1024")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--sample-folders", metavar="DIR", default=None,
                    help="only write DIR/content and DIR/style from scikit-image's samples (training data "
                         "for the example inverse net), then stop")
    args = ap.parse_args()
    if args.sample_folders:
        write_sample_folders(args.sample_folders)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder = build_encoder("relu3_1", "random")  # random weights: explicit, see the module doc
    if args.inverse:
        from imtranslate.infer.stylize import Stylizer

        decoder = Stylizer.from_checkpoint(args.inverse, vgg_weights="random", device="cpu",
                                           use_ema=not args.no_ema).inverse
    else:
        decoder = InverseNet().eval()
    load = os.getloadavg()[0]
    print(f"# style swap benchmark — torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {load:.2f} at start; VGG-19 random weights; "
          f"decoder {'from ' + args.inverse if args.inverse else 'default 9-layer inverse net, random weights'}")
    content = photo("astronaut", args.content)
    styles = [int(s) for s in args.styles.split(",")]
    rows, agreement = [], []
    exact = lambda c, s: style_swap(c, s, 3, 1, chunk=args.chunk)  # noqa: E731
    fast = lambda c, s: style_swap_fast(c, s, 3, 1, chunk=args.chunk)  # noqa: E731
    conv = lambda c, s: style_swap(c, s, 3, 1, chunk=args.chunk, method="conv")  # noqa: E731
    for size in styles:
        style = photo("hubble_deep_field", size)
        modes = [("exact", exact), ("fast", fast)]
        if size == 512 and not args.no_conv:
            modes.append(("exact, conv2d (textbook)", conv))
        for mode, fn in modes:
            reps = 1 if "conv" in mode else args.repeats  # the slow textbook swap: one timed run is plenty
            res = run_pipeline(encoder, decoder, content, style, fn, reps)
            rows.append((args.content, size, mode, res["stages"]))
        # agreement of the fast swap with the exact one, on two styles
        for style_name in ("hubble_deep_field", "immunohistochemistry"):
            st = photo(style_name, size)
            with torch.inference_mode():
                c_feat, s_feat = encoder(content)["relu3_1"], encoder(st)["relu3_1"]
                ex, i_ex = style_swap(c_feat, s_feat, return_index=True)
                fa, i_fa = style_swap_fast(c_feat, s_feat, return_index=True)
                p_ex, p_fa = decoder(ex), decoder(fa)
            agreement.append({"style": f"{style_name} {size}", "same_patch": float((i_ex == i_fa).float().mean()),
                              "psnr_features": psnr(fa, ex, float(ex.abs().max())),
                              "psnr_picture": psnr(p_fa, p_ex, 2.0)})
    if not args.no_big:
        big_c, big_s = photo("astronaut", 1024), photo("hubble_deep_field", 1024)
        res = run_pipeline(encoder, decoder, big_c, big_s, exact, 1)
        rows.append((1024, 1024, "exact", res["stages"]))

    print("\n| content | style | swap | encoder s | swap s | decoder s | total s (CPU s) | peak extra MB "
          "(enc / swap / dec) | vs port (35 s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c, s, mode, st in rows:
        speed = f"{PORT_SECONDS / st['total']['seconds']:.1f}x" if (c, s) == (512, 512) else ""
        print(f"| {c}² | {s}² | {mode} | {st['encoder']['seconds']:.2f} | {st['swap']['seconds']:.2f} | "
              f"{st['decoder']['seconds']:.2f} | **{st['total']['seconds']:.2f}** ({st['total']['cpu_seconds']:.1f}) | "
              f"{st['encoder']['extra_mb']:.0f} / {st['swap']['extra_mb']:.0f} / {st['decoder']['extra_mb']:.0f} | "
              f"{speed} |")
    print(f"\nReference (issue): PyTorch port of the original 35 s, +{PORT_EXTRA_GB} GB at 512²/512²; "
          f"AdaIN {ADAIN_SECONDS} s.")
    print("\n| fast vs exact, content astronaut 512² | same patch | PSNR swapped features (dB) | "
          "PSNR decoded picture (dB) |")
    print("|---|---|---|---|")
    for a in agreement:
        print(f"| {a['style']}² | {100 * a['same_patch']:.1f} % | {a['psnr_features']:.1f} | {a['psnr_picture']:.1f} |")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f} (other processes on the machine slow every figure)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": [{"content": c, "style": s, "mode": m, **{k: v for k, v in st.items()}}
                                for c, s, m, st in rows], "agreement": agreement, "load": load}, f, indent=1)


if __name__ == "__main__":
    main()
