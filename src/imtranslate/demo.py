"""``imtranslate demo``: the main job on the built-in default, no data or weights to fetch.

1. writes synthetic scenes (label map -> photo) to ``<out>/synthetic``;
2. trains the multi-resolution translator (SPEC S1) on the CPU for a few minutes, coarse-to-fine
   stages then joint, exactly as ``imtranslate train multires_synthetic`` would;
3. translates the held-out scenes with a predictor rebuilt from the final checkpoint;
4. writes ``<out>/report.html``: input / untrained / output / target side by side, loss curves,
   validation metrics, and prints the held-out PSNR of the untrained and the trained model.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from .tasks import load_config
from .data import list_images, prepare_output_dir, read_image
from .infer.predictor import Predictor
from .report import load_metrics_jsonl, write_report
from .train.loop import train
from . import vis


def _vgg_choice(vgg_weights, log) -> str:
    """The real ImageNet VGG-19 when the user has it; otherwise the demo says it uses random features."""
    from .weights import locate

    if vgg_weights:
        return vgg_weights
    if locate("vgg19") is not None:  # $IMTRANSLATE_WEIGHTS or the torch hub cache
        return "imagenet"
    log("demo: the ImageNet VGG-19 weights were not found ($IMTRANSLATE_WEIGHTS or the torch hub cache; "
        "`imtranslate weights` says where they are looked for), so the style loss uses a VGG-19 with random "
        "weights (random conv features still capture texture statistics). Give --vgg-weights PATH to use the "
        "pretrained network.")
    return "random"


def run_demo(out="demo_out", steps: int | None = None, vgg_weights: str | None = None, device: str = "auto",
             seed: int = 0, log=None) -> dict:
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    out = Path(out)
    prepare_output_dir(out)
    overrides = [f"train.out_dir={out}", f"train.seed={seed}", f"train.device={device}",
                 f"model.vgg_weights={_vgg_choice(vgg_weights, log)}",
                 f"data.synthetic.root={out / 'synthetic'}"]
    if steps:
        overrides.append(f"train.steps={steps}")
    cfg = load_config(Path(__file__).parent / "configs" / "multires_synthetic.yaml", overrides)
    t0 = time.perf_counter()
    run_dir = train(cfg, run_dir=out / "run", log=log)
    train_s = time.perf_counter() - t0

    # ---- translate the held-out scenes with a predictor rebuilt from the checkpoint alone
    ckpt = run_dir / "checkpoints" / "last.safetensors"
    pred = Predictor.from_checkpoint(ckpt, device=device)
    val_dir = Path(cfg.data.synthetic.root) / "val"
    a_dir = val_dir / ("label" if cfg.data.synthetic.input == "label" else "contour")
    inputs = list_images(a_dir)
    written = pred.translate_files(inputs, out / "translated", progress=False)

    # an untrained generator of the same architecture, for the side-by-side
    torch.manual_seed(seed)
    from .tasks import get_task

    untrained = Predictor(get_task(cfg.task)(cfg, "cpu").generator, cfg, device="cpu")
    n_cls = cfg.data.synthetic.n_classes
    rows = []
    for f, o in list(zip(inputs, written))[:8]:
        label = read_image(f, "label")
        rows.append({
            "name": f.stem,
            "input": vis.colorize_labels(label, n_cls) if cfg.data.synthetic.input == "label" else read_image(f, "rgb"),
            "untrained": untrained(label if cfg.data.synthetic.input == "label" else read_image(f, "grey")),
            "output": read_image(o, "rgb"),
            "target": read_image(val_dir / "photo" / f"{f.stem}.png", "rgb"),
        })

    curves, val_history = load_metrics_jsonl(run_dir / "metrics.jsonl")
    first, last = val_history[0], val_history[-1]
    summary = {
        "held-out PSNR, untrained (dB)": round(first["psnr"], 2),
        "held-out PSNR, trained (dB)": round(last["psnr"], 2),
        "held-out SSIM, untrained -> trained": f"{first['ssim']:.3f} -> {last['ssim']:.3f}",
        "held-out L1, untrained -> trained": f"{first['l1']:.4f} -> {last['l1']:.4f}",
        "training steps": cfg.train.steps,
        "training time (s)": round(train_s, 1),
        "model": f"multires, {cfg.model.n_levels} levels, ngf {cfg.model.ngf}",
        "style-loss VGG-19": cfg.model.vgg_weights,
    }
    report = out / "report.html"
    write_report(report, title="imtranslate demo: multi-resolution translator on synthetic scenes",
                 rows=rows, curves=curves, val_history=val_history, summary=summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"held-out PSNR: untrained {first['psnr']:.2f} dB -> trained {last['psnr']:.2f} dB "
          f"(SSIM {first['ssim']:.3f} -> {last['ssim']:.3f}) after {cfg.train.steps} steps in {train_s:.0f} s")
    print(f"report: {report}")
    return {"run_dir": run_dir, "report": report, "untrained": first, "trained": last}


#: training steps of ``imtranslate demo upscale`` (about 3 minutes on 2 CPU cores)
UPSCALE_DEMO_STEPS = 500


def run_upscale_demo(out="demo_upscale", steps: int | None = None, device: str = "auto", seed: int = 0,
                     log=None, overrides=()) -> dict:
    """``imtranslate demo upscale``: the light x4 stylesr net (SPEC S4) trained for a few CPU minutes.

    1. writes synthetic scenes to ``<out>/synthetic`` and trains ``stylesr_light_x4`` on their
       photographs (the LR inputs are made from the HR crops on the fly);
    2. rebuilds the generator from the final checkpoint alone and up-scales the held-out photos,
       whole, from LR inputs made the way training made them;
    3. writes ``<out>/report.html``: LR input, bicubic, ours and HR side by side with the PSNR of
       each picture, the loss curves and the held-out PSNR/SSIM of ours and of bicubic.

    ``overrides`` (``key=value``) change the built-in config (tests shrink it with them).
    """
    import numpy as np

    from . import metrics
    from .checkpoint_file import load_generator
    from .data import to_tensor, to_uint8
    from .data.degrade import degrade_batch, upscale_bicubic
    from .tasks.stylesr import degradation_of

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = [f"train.out_dir={out}", f"train.seed={seed}", f"train.device={device}",
                 f"data.synthetic.root={out / 'synthetic'}", f"train.steps={steps or UPSCALE_DEMO_STEPS}",
                 "train.val_every=100", "train.image_every=0", *overrides]
    cfg = load_config(Path(__file__).parent / "configs" / "stylesr_light_x4.yaml", overrides)
    t0 = time.perf_counter()
    run_dir = train(cfg, run_dir=out / "run", log=log)
    train_s = time.perf_counter() - t0

    G, _, _ = load_generator(run_dir / "checkpoints" / "last.safetensors")
    G.eval()
    s = cfg.model.scale
    degradation = degradation_of(cfg.model)
    rows, ours_db, bic_db = [], [], []
    photos = list_images(Path(cfg.data.synthetic.root) / "val" / "photo")
    for i, f in enumerate(photos[:8]):
        hr_img = read_image(f, "rgb")
        h, w = hr_img.shape[0] // s * s, hr_img.shape[1] // s * s  # whole photo, a multiple of the scale
        hr = to_tensor(np.ascontiguousarray(hr_img[:h, :w]))[None]  # (1, 3, h, w)
        lr = degrade_batch(hr, torch.tensor([seed * 1000 + i]), degradation)  # (1, 3, h / s, w / s)
        with torch.no_grad():
            ours = G(lr)
        bic = upscale_bicubic(lr, s)
        p_ours, p_bic = float(metrics.psnr(ours, hr)[0]), float(metrics.psnr(bic, hr)[0])
        ours_db.append(p_ours)
        bic_db.append(p_bic)
        rows.append({"name": f.stem, "input": to_uint8(lr[0]), "bicubic": to_uint8(bic[0]), "output": to_uint8(ours[0]),
                     "target": hr_img[:h, :w], "metrics": {"PSNR ours (dB)": round(p_ours, 2),
                                                           "PSNR bicubic (dB)": round(p_bic, 2)}})

    curves, val_history = load_metrics_jsonl(run_dir / "metrics.jsonl")
    last = val_history[-1]
    summary = {
        "held-out PSNR, ours vs bicubic (dB)": f"{last['psnr']:.2f} vs {last['bicubic_psnr']:.2f}",
        "held-out SSIM, ours vs bicubic": f"{last['ssim']:.3f} vs {last['bicubic_ssim']:.3f}",
        "whole pictures below, mean PSNR ours vs bicubic (dB)":
            f"{np.mean(ours_db):.2f} vs {np.mean(bic_db):.2f}" if rows else "-",
        "training steps": cfg.train.steps,
        "training time (s)": round(train_s, 1),
        "model": f"stylesr light x{s} (separable), widths {G.widths}, "
                 f"{sum(p.numel() for p in G.parameters()) / 1e3:.1f}k parameters",
    }
    report = out / "report.html"
    write_report(report, title=f"imtranslate demo upscale: the light x{s} net on synthetic scenes",
                 rows=rows, curves=curves, val_history=val_history, summary=summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"held-out PSNR: ours {last['psnr']:.2f} dB vs bicubic {last['bicubic_psnr']:.2f} dB after "
          f"{cfg.train.steps} steps in {train_s:.0f} s")
    print(f"report: {report}")
    return {"run_dir": run_dir, "report": report, "trained": last, "psnr_ours": ours_db, "psnr_bicubic": bic_db}
