"""``imtranslate demo faces``: face restoration (SPEC S5) on the built-in synthetic faces, in a few CPU minutes.

1. trains the face parser (task ``faceparse``) on the synthetic faces; the face enhancer (task
   ``faceenhance``) too when that task is installed, otherwise the enhancer is the identity and
   the report says so;
2. restores degraded composite photos (synthetic faces and the astronaut's face pasted on
   scikit-image photographs, blurred, down-scaled, noisy, JPEG) and the astronaut photograph;
3. writes ``<out>/report.html``: input, the faces found with their landmarks, parsing maps and
   masks, enhanced crops, the final picture, and before (Lanczos) / after with PSNR against the
   clean picture.

Needs the MTCNN weights (``imtranslate weights install mtcnn``) or a YuNet model.
"""
from __future__ import annotations

import html
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

__all__ = ["run_faces_demo", "composite_photo"]


def composite_photo(n_faces: int, size=(640, 360), seed: int = 0):
    """``(clean, degraded at half size)``: faces pasted onto a scikit-image photograph, then degraded."""
    from skimage import data as skd

    from .data.synthetic_faces import render_face

    w, h = size
    rng = np.random.default_rng(seed)
    clean = cv2.resize(skd.coffee() if seed % 2 else skd.chelsea(), (w, h), interpolation=cv2.INTER_CUBIC)
    astro = skd.astronaut()[30:210, 140:310]
    for i in range(n_faces):
        side = int(min(h * 0.8, w / n_faces * 0.9))
        face = astro if i == 0 else render_face(seed * 100 + i, 128).image
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        x = int((i + 0.5) * w / n_faces - side / 2)
        y = int(rng.integers(0, max(1, h - side)))
        clean[y:y + side, x:x + side] = face
    return clean, degrade(clean, seed)


def degrade(clean: np.ndarray, seed: int = 0) -> np.ndarray:
    """Half size, blurred, noisy, JPEG 60."""
    rng = np.random.default_rng(seed)
    h, w = clean.shape[:2]
    small = cv2.GaussianBlur(cv2.resize(clean, (w // 2, h // 2), interpolation=cv2.INTER_AREA), (0, 0), 0.8)
    small = np.clip(small + rng.normal(0, 4, small.shape), 0, 255).astype(np.uint8)
    _, enc = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 60])
    return cv2.cvtColor(cv2.imdecode(enc, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 100.0 if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def _img(a: np.ndarray, width: int = 0) -> str:
    from .report import _png_b64

    if width and a.shape[1] > width:
        a = cv2.resize(a, (width, round(a.shape[0] * width / a.shape[1])), interpolation=cv2.INTER_AREA)
    return f'<img src="data:image/png;base64,{_png_b64(np.ascontiguousarray(a))}">'


def _marked(image: np.ndarray, faces) -> np.ndarray:
    out = image.copy()
    for f in faces:
        x1, y1, x2, y2 = (int(v) for v in f.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 230, 118), 2)
        for x, y in f.landmarks:
            cv2.circle(out, (int(x), int(y)), 3, (255, 23, 68), -1)
    return out


def run_faces_demo(out="demo_faces", steps: int | None = None, device: str = "auto", seed: int = 0, log=None,
                   parser_overrides=(), photo_size=(640, 360), enhancer_overrides=()) -> dict:
    from .infer.restore import Restorer, colorize_labels, upscale_lanczos
    from .tasks import TASKS, load_config, task_names
    from .train.loop import train

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        import skimage  # noqa: F401  (its sample photographs are the backgrounds and the astronaut)
    except ImportError:
        from .errors import ImtranslateError

        raise ImtranslateError("imtranslate demo faces uses scikit-image's sample photographs: "
                               "pip install 'imtranslate[bench]' (or scikit-image)") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task_names()  # registers every task
    t0 = time.perf_counter()
    cfg = load_config(None, ["task=faceparse", "data.dataset=synthetic", "data.synthetic.n_train=256",
                             "data.synthetic.n_val=16", "data.crop_size=64", f"train.steps={steps or 400}",
                             "train.batch_size=8", "train.lr_g=0.003", "train.beta1=0.9", "train.lr_policy=constant",
                             "train.val_every=100", "train.image_every=0", "train.tensorboard=false",
                             "train.time_limit=180", f"train.seed={seed}", f"train.device={device}",
                             f"train.out_dir={out}", *parser_overrides])
    parser_run = train(cfg, run_dir=out / "parser", log=log)
    parser_s = time.perf_counter() - t0
    parser_ckpt = parser_run / "checkpoints" / "last.safetensors"
    enhancer, note = "none", "identity (task faceenhance is not installed in this imtranslate)"
    if "faceenhance" in TASKS:
        try:
            ecfg = load_config(Path(__file__).parent / "configs" / "faceenhance_synthetic.yaml",
                               [f"train.out_dir={out}", f"train.device={device}", "train.time_limit=240",
                                "train.image_every=0", "train.tensorboard=false", *enhancer_overrides])
            enhancer = str(train(ecfg, run_dir=out / "enhancer", log=log) / "checkpoints" / "last.safetensors")
            note = f"faceenhance, trained here ({enhancer})"
        except Exception as e:  # a missing identity net or config: the demo still shows the rest
            note = f"identity (training the enhancer failed: {str(e).splitlines()[0]})"

    from skimage import data as skd

    photos = [("composite, 1 face", *composite_photo(1, photo_size, seed)),
              ("composite, 3 faces", *composite_photo(3, photo_size, seed + 1))]
    astro = skd.astronaut()
    photos.append(("astronaut (real photograph, landmark mask)", astro, degrade(astro, seed)))
    sections, figures = [], {}
    for name, clean, degraded in photos:
        real = name.startswith("astronaut")
        r = Restorer.from_options(enhancer=enhancer, parser="landmarks" if real else str(parser_ckpt), upscale=2,
                                  device=device)
        res = r(degraded)
        lz = upscale_lanczos(degraded, 2)
        p_ours, p_lz = _psnr(res.image, clean), _psnr(lz, clean)
        figures[name] = {"faces": len(res.faces), "psnr": round(p_ours, 2), "lanczos_psnr": round(p_lz, 2)}
        faces_html = "".join(
            f"<td>{_img(f.crop)}<br>{_img(f.enhanced)}<br>"
            f"{_img(colorize_labels(f.labels)) if f.labels is not None else ''}"
            f"{_img((np.repeat(f.mask[..., None], 3, 2) * 255).astype(np.uint8))}</td>" for f in res.faces)
        sections.append(
            f"<h2>{html.escape(name)}</h2><p>{html.escape(res.line())}; PSNR against the clean picture: "
            f"{p_ours:.2f} dB restored, {p_lz:.2f} dB Lanczos; {sum(res.timings.values()):.2f} s</p>"
            f"<table><tr><th>input</th><th>faces found</th></tr><tr><td>{_img(degraded, 420)}</td>"
            f"<td>{_img(_marked(degraded, [_scaled(f, 0.5) for f in res.faces]), 420)}</td></tr></table>"
            f"<p>per face: aligned crop / enhanced / parsing map / paste mask</p><table><tr>{faces_html}</tr></table>"
            f"<table><tr><th>before (Lanczos x2)</th><th>after</th></tr><tr><td>{_img(lz, 560)}</td>"
            f"<td>{_img(res.image, 560)}</td></tr></table>")
    report = out / "report.html"
    report.write_text(
        "<!doctype html><meta charset='utf-8'><title>imtranslate demo faces</title>"
        "<style>body{font:14px system-ui;margin:20px} td{vertical-align:top;padding:4px} img{max-width:100%}</style>"
        f"<h1>imtranslate demo faces</h1><p>parser: faceparse trained {parser_s:.0f} s on the synthetic faces "
        f"({parser_ckpt}); enhancer: {html.escape(note)}. The real photograph uses the landmark mask, as "
        "docs/RESTORE.md advises for a parser trained on synthetic faces only.</p>" + "".join(sections))
    log(f"wrote {report}")
    return {"report": report, "photos": figures, "parser": parser_ckpt, "enhancer": enhancer}


def _scaled(face, s: float):
    from types import SimpleNamespace

    return SimpleNamespace(box=face.box * s, landmarks=face.landmarks * s)
