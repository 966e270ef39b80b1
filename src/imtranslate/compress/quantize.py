"""8-bit post-training static quantisation for the CPU, with onnxruntime's quantiser.

The fp32 ONNX file (``imtranslate export``) is quantised to QDQ int8 (weights per channel,
activations per tensor, both signed 8-bit), calibrated on inputs from the training data
(min/max of the activations over the calibration set). The result is checked against the fp32
file on held-out inputs: its PSNR against the fp32 output must reach ``min_psnr`` (default 30 dB;
8-bit outputs in [-1, 1] cannot match to the fp32 export's 1e-3), or :class:`ExportError` says by
how much it missed.

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


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else float(10 * np.log10(4.0 / mse))  # values in [-1, 1]: peak-to-peak 2


def quantize_onnx(fp32_path, out_path, calibration: list[np.ndarray], check: list[np.ndarray] | None = None,
                  *, min_psnr: float = DEFAULT_MIN_PSNR, log=print) -> dict:
    """Quantise ``fp32_path`` to ``out_path`` calibrated on ``calibration`` (encoded inputs,
    (B, C, H, W) float32 arrays); check it on ``check`` (default: the calibration inputs).
    Returns ``{"path", "psnr_vs_fp32", "max_abs_diff", "tolerance_psnr"}``."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

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
        quantize_static(str(src), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
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
    return {"path": out_path, "psnr_vs_fp32": psnr, "max_abs_diff": max(diffs), "tolerance_psnr": min_psnr}


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
