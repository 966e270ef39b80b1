"""ONNX export of a checkpoint's generator, checked against onnxruntime on the spot.

    imtranslate export runs/0001-multires/checkpoints/last.safetensors --onnx model.onnx

The graph takes the *encoded* input ``A`` (B, C_in, H, W) exactly as
:meth:`Predictor.encode <imtranslate.infer.Predictor.encode>` makes it (pictures in [-1, 1],
label maps one-hot) and returns the output (B, C_out, scale H, scale W) in [-1, 1] (``scale``:
the generator's output size / input size, 1 for same-size translators). Batch, height and
width are dynamic: inside the graph the input is reflect-padded at the bottom/right to the
model's size multiple and the output cropped back to ``scale`` times the input, with the
predictor's own helpers (``imtranslate.ops.pad_to_multiple`` / ``crop_to``), so any H, W >= the
multiple works (reflection needs the pad to be smaller than the side).

* Multi-resolution models get their input pyramid built *inside* the graph, so the ONNX model
  takes one image. Torch's antialiased resize (``F.interpolate(..., antialias=True)``) has no
  ONNX export, so each level is made by the same filter written as a separable strided
  convolution whose taps are the resampling kernel (triangle for bilinear, Keys cubic a=-0.5
  for bicubic, Lanczos-3 as Pillow computes it), renormalised at the borders by the same
  convolution of ones: this reproduces ``data.pyramid.downscale`` to ~1e-7 for every
  ``pyramid_method`` (area: average pooling; label inputs and ``nearest``: strided sampling).
* pix2pixHD with instance features: the features of every class are the centre of K-means
  cluster ``cluster`` (fixed at export), looked up from the argmax of the one-hot input.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. It traces dynamic
sizes through the pad and crop arithmetic (generators' own crops compute their sizes in Python,
which a trace would freeze; ``crop_to`` records nothing for a crop that cuts nothing, which is
what every generator-internal crop is on an input already padded to the multiple); the
torch.export-based exporter needs the extra ``onnxscript`` package and is only tried when the
TorchScript one fails.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ImtranslateError
from ..ops import crop_to, pad_to_multiple, scale_size
from .optimize import transposed_form
from .tiling import probe_input

#: largest accepted |onnxruntime - torch| on the check inputs
TOLERANCE = 1e-3


class ExportError(ImtranslateError):
    """The model could not be exported, or the exported file does not compute what torch does."""


# --------------------------------------------------------------------------------------------
# Resampling kernels (pyramid levels as convolutions)
# --------------------------------------------------------------------------------------------
def _filter(method: str):
    """``(support, kernel)`` of a resampling filter in units of output pixels."""
    if method == "bilinear":
        return 1.0, lambda x: max(0.0, 1.0 - abs(x))
    if method == "bicubic":
        a = -0.5  # torch's antialiased bicubic (and Pillow's) use a = -0.5

        def cubic(x):
            x = abs(x)
            if x < 1:
                return ((a + 2) * x - (a + 3)) * x * x + 1
            if x < 2:
                return (((x - 5) * x + 8) * x - 4) * a
            return 0.0

        return 2.0, cubic
    if method == "lanczos":
        def sinc(x):
            return 1.0 if x == 0 else math.sin(math.pi * x) / (math.pi * x)

        return 3.0, lambda x: sinc(x) * sinc(x / 3) if abs(x) < 3 else 0.0
    raise ValueError(f"no resampling kernel for {method!r}")


def resample_taps(factor: int, method: str) -> tuple[torch.Tensor, int]:
    """Taps and padding of a ``factor``-times antialiased downscale (``factor`` even).

    Output pixel i is centred on input position ``factor * (i + 0.5)``; the kernel is widened by
    ``factor`` (antialiasing), so it spans ``2 * support * factor`` input pixels.
    """
    support, kernel = _filter(method)
    n = int(round(2 * support * factor))
    taps = torch.tensor([kernel((t - support * factor + 0.5) / factor) for t in range(n)], dtype=torch.float64)
    return taps.float(), int(round(support * factor - factor / 2))


def conv_downscale(x: torch.Tensor, factor: int, method: str) -> torch.Tensor:
    """``data.pyramid.downscale`` as ONNX-exportable ops (H, W multiples of ``factor``)."""
    if factor == 1:
        return x
    if method == "nearest":
        return x[..., ::factor, ::factor]
    if method == "area":
        return F.avg_pool2d(x, factor)
    taps, pad = resample_taps(factor, method)
    c = x.shape[1]
    kw = taps.to(x.device).view(1, 1, 1, -1)
    kh = taps.to(x.device).view(1, 1, -1, 1)
    # zero padding + dividing by the same convolution of ones = the border renormalisation of
    # torch's and Pillow's resamplers (taps outside the image are dropped, the rest rescaled)
    y = F.conv2d(x, kw.expand(c, 1, 1, -1), stride=(1, factor), padding=(0, pad), groups=c)
    y = y / F.conv2d(torch.ones_like(x[:1, :1, :1, :]), kw, stride=(1, factor), padding=(0, pad))
    norm_h = F.conv2d(torch.ones_like(x[:1, :1, :, :1]), kh, stride=(factor, 1), padding=(pad, 0))
    return F.conv2d(y, kh.expand(c, 1, -1, 1), stride=(factor, 1), padding=(pad, 0), groups=c) / norm_h


# --------------------------------------------------------------------------------------------
# The exported module
# --------------------------------------------------------------------------------------------
class ExportModule(nn.Module):
    """Encoded input (B, C_in, H, W) -> output (B, C_out, scale H, scale W): pad, (pyramid,) generator, crop."""

    def __init__(self, predictor, cluster: int = 0):
        super().__init__()
        # the predictor's net with its transposed convs as they trained: onnxruntime runs those
        # faster than the predictor's conv + pixel-shuffle heads (infer/optimize.py)
        self.G = transposed_form(predictor.G)
        self.cfg = predictor.cfg
        self.task_cls = predictor.task_cls
        self.extras = predictor.extras
        self.multiple = int(predictor.multiple)
        self.scale = predictor.scale
        self.cluster = cluster
        self.is_label = predictor.read_mode == "label"
        self.multires = self.cfg.task == "multires"

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The multi-resolution input pyramid, coarsest first (as ``data.build_pyramid``)."""
        m = self.cfg.model
        method = "nearest" if self.is_label else m.pyramid_method
        return [conv_downscale(x, 2**k, method) for k in range(m.n_levels - 1, -1, -1)]

    def forward(self, A: torch.Tensor) -> torch.Tensor:
        # pad amounts and crop sizes from the traced sizes, so they follow the input's size in the graph
        x = pad_to_multiple(A, self.multiple)
        if self.multires:
            out = self.G(self.pyramid(x), return_all=True)[-1]
            if out.shape[-2:] != x.shape[-2:]:  # saved mid-schedule: as MultiResTask.translate
                out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        else:
            out = self.task_cls.translate(self.G, x, self.cfg, self.extras, cluster=self.cluster)
        return crop_to(out, A.shape[-2:], self.scale)


# --------------------------------------------------------------------------------------------
# Export and check
# --------------------------------------------------------------------------------------------
def _need_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ExportError(f"ONNX export needs onnx and onnxruntime ({e.name} is missing): "
                          "pip install 'imtranslate[export]'") from None


def check_sizes(multiple: int) -> list[tuple[int, int, int]]:
    """Two (batch, H, W) check shapes: non-square, neither side a multiple, the second batched."""
    base = max(64, multiple)
    return [(1, base + 3, base + multiple // 2 + 21), (2, 2 * base - 5, base + 1)]


def _export(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> str:
    names = dict(input_names=["A"], output_names=["out"])
    axes = {"A": {0: "batch", 2: "height", 3: "width"}, "out": {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice and tracer notes about shape arithmetic;
        # whether the graph really follows the input size is checked at two sizes below
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                              dynamic_axes=axes, do_constant_folding=True, **names)
            return "torchscript"
        except Exception as first:  # noqa: BLE001 - any exporter failure: try the other exporter
            try:
                import onnxscript  # noqa: F401
            except ImportError:
                raise ExportError(f"{path}: the TorchScript ONNX exporter failed ({first}); the torch.export-based "
                                  "one needs onnxscript (pip install onnxscript)") from None
            b, h, w = torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width")
            try:
                torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=max(opset, 18),
                                  dynamic_shapes={"A": {0: b, 2: h, 3: w}}, **names)
                return "dynamo"
            except Exception as second:  # noqa: BLE001
                raise ExportError(f"{path}: ONNX export failed with both exporters: {first}; {second}") from None


def export_onnx(checkpoint, out_path, *, opset: int = 17, cluster: int = 0, use_ema: bool = True,
                tolerance: float = TOLERANCE, log=print) -> dict:
    """Export the generator of ``checkpoint`` to ``out_path`` (.onnx) and check it
    (:func:`export_predictor` on the checkpoint's CPU predictor)."""
    _need_onnx()
    from .predictor import Predictor

    pred = Predictor.from_checkpoint(checkpoint, device="cpu", use_ema=use_ema, batch_size=1)
    return export_predictor(pred, out_path, opset=opset, cluster=cluster, tolerance=tolerance, log=log)


@torch.inference_mode(False)
@torch.no_grad()
def export_predictor(pred, out_path, *, opset: int = 17, cluster: int = 0, tolerance: float = TOLERANCE,
                     log=print) -> dict:
    """Export a (CPU) predictor's generator to ``out_path`` (.onnx) and check it.

    The check runs onnxruntime (CPU) and the predictor (``translate_tensor``, untiled) on
    synthetic inputs of two shapes (:func:`check_sizes`), and raises :class:`ExportError` when an
    output is not ``scale`` times its input's size or the two differ by more than ``tolerance``
    anywhere. Returns ``{"exporter", "checks": [(shape, max_abs_diff), ...], "path"}``.
    """
    _need_onnx()
    from ..data import input_channels

    module = ExportModule(pred, cluster=cluster).eval()
    out_path = Path(out_path)
    if out_path.parent and not out_path.parent.exists():
        out_path.parent.mkdir(parents=True)
    c_in, label = input_channels(pred.cfg.data), pred.read_mode == "label"
    sizes = check_sizes(pred.multiple)
    example = probe_input(c_in, sizes[0][1], sizes[0][2], label, seed=0)
    # written under a temporary name and renamed once checked: a file at out_path is a good one
    tmp = out_path.with_name(out_path.name + ".unchecked")
    try:
        exporter = _export(module, example, tmp, opset)
        checks = _check(tmp, out_path, pred, sizes, c_in, label, cluster, tolerance, log)
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"exporter": exporter, "checks": checks, "path": out_path}


def _check(tmp: Path, out_path: Path, pred, sizes, c_in: int, label: bool, cluster: int, tolerance: float,
           log) -> list:
    """Max |onnxruntime - torch| at every check size; ExportError above ``tolerance``."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - report any loader failure against the file
        raise ExportError(f"{out_path}: the exported file does not load in onnxruntime: {e}") from None
    checks = []
    for i, (b, h, w) in enumerate(sizes):
        A = torch.cat([probe_input(c_in, h, w, label, seed=10 * i + k) for k in range(b)])
        want = pred.translate_tensor(A, tile=0, cluster=cluster).numpy()
        got = session.run(None, {"A": A.numpy()})[0]
        size = (scale_size(h, pred.scale), scale_size(w, pred.scale))
        if got.shape != want.shape or want.shape[-2:] != size:
            raise ExportError(f"{out_path}: onnxruntime returned shape {got.shape} for input {tuple(A.shape)}, "
                              f"torch {want.shape}; expected {size[0]}x{size[1]} (scale {pred.scale})")
        diff = float(np.abs(got - want).max())
        checks.append(((b, c_in, h, w), diff))
        log(f"onnxruntime vs torch on a {b}x{c_in}x{h}x{w} input: max abs difference {diff:.2e}")
        if not diff <= tolerance:
            raise ExportError(f"{out_path}: onnxruntime output differs from torch by {diff:.2e} (more than "
                              f"{tolerance:g}) on a {b}x{c_in}x{h}x{w} input; nothing written")
    return checks
