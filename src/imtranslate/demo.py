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

from .config import load_config
from .data import list_images, prepare_output_dir, read_image
from .infer.predictor import Predictor
from .report import load_metrics_jsonl, write_report
from .train.loop import train
from . import vis


def _vgg_choice(vgg_weights, log) -> str:
    """The real ImageNet VGG-19 when the user has it; otherwise the demo says it uses random features."""
    from .errors import WeightsMissingError
    from .nets.vgg import resolve_vgg_weights

    if vgg_weights:
        return vgg_weights
    try:
        resolve_vgg_weights("imagenet")
        return "imagenet"
    except WeightsMissingError:
        log("demo: ImageNet VGG-19 weights are not in the torch cache, so the style loss uses a VGG-19 with "
            "random weights (random conv features still capture texture statistics). Give --vgg-weights PATH "
            "to use the pretrained network.")
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
