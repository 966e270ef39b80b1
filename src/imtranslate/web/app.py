"""The web page (``imtranslate serve``): style transfer with live per-channel sliders, and translation.

A small FastAPI app. The style swap runs once per upload on the server; the page receives the
content picture and the *initial stylised picture* (lossless PNG, both at the content's size)
and does SPEC S3's blend ``R3 = a R1 + (1 - a) R2`` (and G with b, B with c) itself, on a canvas,
so moving a slider never goes back to the server: the result changes as fast as the browser
repaints. The same page translates pictures with a paired-translation checkpoint.

Endpoints::

    GET  /                 the page (static/index.html + static/app.js)
    GET  /api/info         what this server can do, and its upload limits
    POST /api/stylize      multipart: content, style [, patch, stride, fast, steps]
                           -> {"content": PNG data URL, "stylized": PNG data URL, "width", "height", "seconds"}
    POST /api/translate    multipart: image -> {"input": ..., "output": ..., "width", "height", "seconds"}
    POST /api/restore      multipart: image -> {"before": Lanczos-upscaled input, "after": restored picture,
                           "faces": [{"box", "landmarks", "score"}], "found", "note", "width", "height", "seconds"}

Errors come back as ``{"error": "..."}`` with status 400 (bad picture or option), 404 (no model
for that), 413 (upload or picture too large) or 415 (not an accepted picture type); the page
shows the message.
"""
# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time, and
# they name classes imported inside create_app
import base64
import errno
import io
import re
import socket
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, ImtranslateError

STATIC = Path(__file__).parent / "static"
#: Pillow format names accepted, and the file suffix read_image gets for each
ACCEPTED = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


class UploadError(ImtranslateError):
    """An upload the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def png_data_url(img: np.ndarray) -> str:
    """uint8 (H, W[, 3]) -> ``data:image/png;base64,...`` (lossless: the page blends exact values)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Limits:
    """Upload limits: bytes per file, pixels per picture."""

    def __init__(self, max_mb: float = 10.0, max_pixels: int = 4_000_000):
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.max_pixels = int(max_pixels)

    def as_dict(self) -> dict:
        return {"max_mb": self.max_bytes / 1024 / 1024, "max_pixels": self.max_pixels,
                "types": sorted(ACCEPTED)}


def decode_upload(data: bytes, filename: str, mode: str, limits: Limits, size: int | None = None) -> np.ndarray:
    """Check an uploaded file against the limits and read it as ``read_image`` would.

    ``data`` may be cut at the limit (+1 byte); ``size`` is then the whole upload's size, for the message.
    Raises UploadError (413 too large, 415 not an accepted type) or DataError naming ``filename``.
    """
    from PIL import Image, UnidentifiedImageError

    from ..data import read_image

    if len(data) > limits.max_bytes:
        raise UploadError(413, f"{filename}: {(size or len(data)) / 1024 / 1024:.1f} MB is more than the "
                               f"{limits.max_bytes / 1024 / 1024:.3g} MB upload limit")
    if not data:
        raise UploadError(400, f"{filename}: the file is empty")
    too_many = (f"is more than the limit of {limits.max_pixels:,}; shrink it first")
    try:
        with warnings.catch_warnings():  # Pillow warns above 89M pixels; the limit below answers that
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # the header only: format and size, nothing decoded yet
                fmt, (w, h) = img.format, img.size
    except Image.DecompressionBombError as e:
        # a real picture header claiming more pixels than Pillow opens at all (a "decompression
        # bomb"): too large, not "not a picture"
        found = re.search(r"\((\d+) pixels\)", str(e))
        count = f"{int(found.group(1)):,} pixels" if found else "its pixel count"
        raise UploadError(413, f"{filename}: {count} {too_many}") from None
    except (UnidentifiedImageError, OSError):
        raise UploadError(415, f"{filename}: not a picture this server reads (accepted: "
                               f"{', '.join(sorted(ACCEPTED))})") from None
    if fmt not in ACCEPTED:
        raise UploadError(415, f"{filename}: {fmt} pictures are not accepted (accepted: {', '.join(sorted(ACCEPTED))})")
    if w * h > limits.max_pixels:
        raise UploadError(413, f"{filename}: {w}x{h} = {w * h:,} pixels {too_many}")
    # through a file, so every format quirk (EXIF rotation, 16 bits, alpha) is handled in one place
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{ACCEPTED[fmt]}"
        path.write_bytes(data)
        try:
            return read_image(path, mode)
        except DataError as e:
            raise DataError(filename, e.problem, e.hint) from None


def create_app(stylizer=None, translator=None, *, limits: Limits | None = None, optimize_only: bool = False,
               default_steps: int = 50, restorer=None):
    """The FastAPI app. ``stylizer``: an :class:`~imtranslate.infer.stylize.Stylizer` (or None);
    ``translator``: a :class:`~imtranslate.infer.predictor.Predictor` (or None).

    ``optimize_only``: the stylizer has no inverse net, so stylising inverts by optimisation.
    ``restorer``: an :class:`~imtranslate.infer.restore.Restorer` for the Restore tab (or None).
    """
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.responses import FileResponse, JSONResponse

    limits = limits or Limits()
    app = FastAPI(title="imtranslate", docs_url=None, redoc_url=None)
    lock = threading.Lock()  # one model run at a time: they each use every CPU core already

    @app.middleware("http")
    async def refuse_huge_bodies(request: Request, call_next):
        # before the multipart parser spools anything: two files plus form fields at most
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > 2 * limits.max_bytes + 64 * 1024:
            return JSONResponse({"error": f"upload of {int(length) / 1024 / 1024:.1f} MB is more than the "
                                          f"{limits.max_bytes / 1024 / 1024:.3g} MB limit per picture"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(ImtranslateError)
    async def user_error(request: Request, exc: ImtranslateError):
        return JSONResponse({"error": str(exc)}, status_code=getattr(exc, "status", 400))

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str):
        path = STATIC / name
        if name not in ("app.js", "style.css") or not path.is_file():
            return JSONResponse({"error": "not found"}, status_code=404)
        return FileResponse(path, media_type="text/javascript" if name.endswith(".js") else "text/css")

    @app.get("/api/info")
    def info():
        out = {"stylize": stylizer is not None, "translate": translator is not None, "optimize_only": optimize_only,
               "restore": restorer is not None, "limits": limits.as_dict()}
        if stylizer is not None:
            out.update(patch=stylizer.patch, stride=stylizer.stride, layer=stylizer.layer, steps=default_steps)
        if translator is not None:
            out["translate_input"] = translator.read_mode
        return out

    def read(upload: UploadFile, mode: str) -> np.ndarray:
        name = upload.filename or "upload"
        data = upload.file.read(limits.max_bytes + 1)  # never more than the limit (+1 to notice)
        # upload.size: what the multipart parser received, also for chunked bodies (no content-length)
        return decode_upload(data, name, mode, limits, size=upload.size)

    @app.post("/api/stylize")
    def stylize(content: UploadFile = File(...), style: UploadFile = File(...), patch: int | None = Form(None),
                stride: int | None = Form(None), fast: bool = Form(False), steps: int | None = Form(None)):
        if stylizer is None:
            raise UploadError(404, "this server has no style transfer model: start it with --inverse CKPT")
        patch = stylizer.patch if patch is None else patch
        stride = stylizer.stride if stride is None else stride
        if not (1 <= patch <= 9 and 1 <= stride <= patch):
            raise ConfigError(f"patch must be 1..9 and stride 1..patch (got patch={patch}, stride={stride})")
        steps = default_steps if steps is None else steps
        if optimize_only and not 1 <= steps <= 1000:
            raise ConfigError(f"steps must be 1..1000, got {steps}")
        c, s = read(content, "rgb"), read(style, "rgb")
        t0 = time.perf_counter()
        with lock:
            raw = stylizer.stylize(c, s, patch=patch, stride=stride, fast=fast, optimize=optimize_only, steps=steps)
        return {"content": png_data_url(c), "stylized": png_data_url(raw), "width": c.shape[1],
                "height": c.shape[0], "seconds": round(time.perf_counter() - t0, 3)}

    @app.post("/api/translate")
    def translate(image: UploadFile = File(...)):
        if translator is None:
            raise UploadError(404, "this server has no translation model: start it with --translate CKPT")
        x = read(image, translator.read_mode)
        t0 = time.perf_counter()
        with lock:
            out = translator(x)
        shown = x
        if translator.read_mode == "label":  # show class ids in colour, not as near-black grey
            from ..train.loop import n_label_classes
            from ..vis import colorize_labels

            shown = colorize_labels(x, n_label_classes(translator.cfg.data))
        return {"input": png_data_url(shown), "output": png_data_url(out), "width": out.shape[1],
                "height": out.shape[0], "seconds": round(time.perf_counter() - t0, 3)}

    @app.post("/api/restore")
    def restore(image: UploadFile = File(...)):
        if restorer is None:
            raise UploadError(404, "this server has no face restoration: start it with --restore")
        from ..infer.restore import upscale_lanczos

        x = read(image, "rgb")
        t0 = time.perf_counter()
        with lock:
            res = restorer(x)
        faces = [{"box": [round(float(v), 1) for v in f.box], "score": round(f.score, 4),
                  "landmarks": [[round(float(a), 1), round(float(b), 1)] for a, b in f.landmarks]} for f in res.faces]
        return {"before": png_data_url(upscale_lanczos(x, restorer.upscale)), "after": png_data_url(res.image),
                "faces": faces, "found": res.found, "note": res.note, "width": res.image.shape[1],
                "height": res.image.shape[0], "seconds": round(time.perf_counter() - t0, 3)}

    return app


def bind_port(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a ConfigError that says why not (bad number, busy, no such address).

    ``serve`` binds before loading any model and before printing the page's address, so a busy
    port fails at once and no address is shown that would not answer.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: a port is a number from 0 to 65535 (e.g. 7860)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ConfigError(f"--host {host}: not an address of this machine ({e.strerror or e})") from None
    family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a just-stopped server's port
    try:
        sock.bind(infos[0][4])
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use (another server?): stop it, or choose "
                              "another with --port") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def serve(inverse=None, translate=None, vgg_weights=None, host: str = "127.0.0.1", port: int = 7860,
          device: str = "auto", max_mb: float = 10.0, max_pixels: int = 4_000_000, optimize_only: bool = False,
          restore: dict | None = None) -> None:
    """Load the models and serve the page until Ctrl-C (``imtranslate serve``). ``restore``: the options
    of :meth:`~imtranslate.infer.restore.Restorer.from_options` for the Restore tab (None: no tab)."""
    try:
        import uvicorn
    except ImportError:
        raise ImtranslateError("the web page needs FastAPI and uvicorn: pip install 'imtranslate[web]'") from None
    from ..infer.stylize import Stylizer

    if not (inverse or translate or optimize_only or restore is not None):
        raise ConfigError("nothing to serve: give --inverse CKPT (style transfer) and/or --translate CKPT "
                          "(translation), --restore (faces), or --optimize-only")
    sock = bind_port(host, port)
    try:
        stylizer = translator = None
        if inverse:
            stylizer = Stylizer.from_checkpoint(inverse, vgg_weights=vgg_weights, device=device)
        elif optimize_only:
            stylizer = Stylizer(None, vgg_weights=vgg_weights or "imagenet", device=device)
        if translate:
            from ..infer.predictor import Predictor

            translator = Predictor.from_checkpoint(translate, device=device)
            if translator.cfg.task == "styleswap":  # it would load, then fail on every request
                raise ConfigError(f"{translate}: a styleswap checkpoint (an inverse network for style transfer), "
                                  f"not a translator: serve it with --inverse {translate}")
        restorer = None
        if restore is not None:
            from ..infer.restore import Restorer

            restorer = Restorer.from_options(device=device, **restore)
        app = create_app(stylizer, translator, limits=Limits(max_mb, max_pixels),
                         optimize_only=optimize_only and not inverse, restorer=restorer)
        bound = sock.getsockname()[1]  # the real port when --port 0 asked for any free one
        print(f"imtranslate page on http://{host}:{bound}/  (Ctrl-C to stop)", flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
