"""8-bit post-training static quantisation for the CPU, with onnxruntime's quantiser.

The fp32 ONNX file (``imtranslate export``) is quantised calibrated on inputs from the training
data (min/max of the activations over the calibration set) and checked against the fp32 file on
held-out inputs: its PSNR against the fp32 output must reach ``min_psnr`` (default 30 dB; 8-bit
outputs in [-1, 1] cannot match to the fp32 export's 1e-3), or :class:`ExportError` says by how
much it missed.

Defaults, chosen by measurement (docs/COMPRESS.md, onnxruntime 1.32 on an AVX-512 VNNI CPU, the
benchmark's pix2pix U-Net and multires net, fp32 and int8 sessions timed interleaved in one
process, and onnxruntime's profiler for which kernels run):

* **unsigned 8-bit activations, signed 8-bit weights (U8S8)**. With signed activations (S8S8)
  onnxruntime fused only 1 of the U-Net's 8 convs into an int8 ``QLinearConv``; the other 7 ran
  as QuantizeLinear -> DequantizeLinear -> fp32 Conv, so int8 was 0.71x the fp32 speed. U8S8
  fuses all of them (0.97x on the U-Net, 1.31x on multires with every op quantised).
* **only ``Conv`` quantised** (``op_types``): ConvTranspose has no int8 kernel in onnxruntime's
  CPU provider (it stays fp32 between a DequantizeLinear and a QuantizeLinear), nor do instance
  norm, reflection Pad, Resize and Tanh; quantising them only adds Q/DQ pairs. Conv only: 1.25x
  (QDQ) / 1.43x (QOperator) on multires.
* **QOperator format** (QLinearConv written into the file) rather than QDQ: 1.43x vs 1.25x on
  multires, equal on the U-Net; the file needs no graph fusion at load time.
* **weights per output channel**: per-tensor weights were no faster and lost 1.5 dB.
* **percentile calibration** (99.999 % of |activation|, onnxruntime's histogram calibrator)
  rather than min/max: the multires int8 output 25.6 dB from its fp32 output instead of 21.9 dB
  (entropy: 21.9 dB); no effect on speed (same graph).

What limits it on the U-Net: its 8 ConvTranspose layers are 65 % of the fp32 onnxruntime time
(profiled) and stay fp32, so int8 cannot reach 1.5x there (at most ~1/0.65).

Why onnxruntime and not PyTorch's x86 backend: docs/COMPRESS.md (the result runs where the ONNX
file runs, with one file and no PyTorch; PyTorch's eager int8 modules would need quantised
stubs in every net and do not cover transposed convolutions with groups or reflection padding).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from ..infer.export import ExportError

DEFAULT_MIN_PSNR = 30.0
#: the measured defaults (module doc): format, activation type, weight type, per-channel weights, ops
DEFAULT_FORMAT = "qoperator"
DEFAULT_ACTIVATIONS = "uint8"
DEFAULT_WEIGHTS = "int8"
DEFAULT_OP_TYPES = ("Conv",)
DEFAULT_CALIBRATION = "percentile"
CALIBRATIONS = ("minmax", "percentile", "entropy")
FORMATS = ("qoperator", "qdq")
TYPES = ("uint8", "int8")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else float(10 * np.log10(4.0 / mse))  # values in [-1, 1]: peak-to-peak 2


def quantize_onnx(fp32_path, out_path, calibration: list[np.ndarray], check: list[np.ndarray] | None = None,
                  *, min_psnr: float = DEFAULT_MIN_PSNR, fmt: str = DEFAULT_FORMAT,
                  activations: str = DEFAULT_ACTIVATIONS, weights: str = DEFAULT_WEIGHTS, per_channel: bool = True,
                  op_types=DEFAULT_OP_TYPES, calibration_method: str = DEFAULT_CALIBRATION, log=print) -> dict:
    """Quantise ``fp32_path`` to ``out_path`` calibrated on ``calibration`` (encoded inputs,
    (B, C, H, W) float32 arrays); check it on ``check`` (default: the calibration inputs).
    ``fmt`` ``"qoperator"`` / ``"qdq"``, ``activations`` / ``weights`` ``"uint8"`` / ``"int8"``,
    ``op_types`` the ONNX op types to quantise (``None``: every op the quantiser knows),
    ``calibration_method`` ``"minmax"`` / ``"percentile"`` / ``"entropy"``.
    Returns ``{"path", "psnr_vs_fp32", "max_abs_diff", "tolerance_psnr", "settings"}``."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if fmt not in FORMATS or activations not in TYPES or weights not in TYPES or calibration_method not in CALIBRATIONS:
        raise ExportError(f"{out_path}: int8 settings fmt={fmt!r}, activations={activations!r}, weights={weights!r}, "
                          f"calibration_method={calibration_method!r}: choose fmt from {FORMATS}, types from {TYPES} "
                          f"and the calibration from {CALIBRATIONS}")
    if not calibration:
        raise ExportError(f"{out_path}: int8 calibration needs at least one input")
    fp32_path, out_path = Path(fp32_path), Path(out_path)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"A": a.astype(np.float32)} for a in calibration])

        def get_next(self):
            return next(self.it, None)

    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    try:
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            src = pre
        except Exception:  # noqa: BLE001 - the optional pre-processing (graph optimisation) failed: quantise as is
            src = fp32_path
        qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        quantize_static(str(src), str(out_path), Reader(),
                        quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
                        activation_type=qtype[activations], weight_type=qtype[weights], per_channel=per_channel,
                        op_types_to_quantize=list(op_types) if op_types else None,
                        calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                                          "entropy": CalibrationMethod.Entropy}[calibration_method])
    finally:
        pre.unlink(missing_ok=True)
    s32 = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    s8 = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    psnrs, diffs = [], []
    for a in (check or calibration):
        want = s32.run(None, {"A": a.astype(np.float32)})[0]
        got = s8.run(None, {"A": a.astype(np.float32)})[0]
        psnrs.append(_psnr(got, want))
        diffs.append(float(np.abs(got - want).max()))
    psnr = float(np.mean(psnrs))
    log(f"int8 vs fp32 (onnxruntime): PSNR {psnr:.2f} dB, max abs difference {max(diffs):.3f}")
    if psnr < min_psnr:
        out_path.unlink(missing_ok=True)
        raise ExportError(f"{out_path}: the int8 model's output is {psnr:.1f} dB PSNR from the fp32 model's, "
                          f"below the tolerance of {min_psnr:g} dB; calibrate on more inputs or skip --int8")
    settings = {"format": fmt, "activations": activations, "weights": weights, "per_channel": per_channel,
                "op_types": list(op_types) if op_types else "all", "calibration": calibration_method}
    return {"path": out_path, "psnr_vs_fp32": psnr, "max_abs_diff": max(diffs), "tolerance_psnr": min_psnr,
            "settings": settings}


def ort_latencies_ms(paths, a: np.ndarray, repeats: int = 5, threads: int = 0) -> list[float]:
    """Median onnxruntime CPU latency of each file on ``a`` (ms), the files run in turn
    (A, B, A, B, ...) so that a loaded machine slows them alike and their ratio holds."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sessions = [ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in paths]
    for s in sessions:
        s.run(None, {"A": a})
    times = [[] for _ in sessions]
    for _ in range(max(1, repeats)):
        for s, t in zip(sessions, times):
            t0 = time.perf_counter()
            s.run(None, {"A": a})
            t.append((time.perf_counter() - t0) * 1000)
    return [statistics.median(t) for t in times]


def ort_latency_ms(path, a: np.ndarray, repeats: int = 5, threads: int = 0) -> float:
    """Median onnxruntime CPU latency of one run on ``a``, in milliseconds."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    s.run(None, {"A": a})
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        s.run(None, {"A": a})
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
