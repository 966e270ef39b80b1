"""Flicker-free video translation with any image model, and the warping-error metric.

    >>> from imtranslate.infer.video_translate import VideoTranslator
    >>> vt = VideoTranslator.from_checkpoint("runs/0001-pix2pix/checkpoints/last.safetensors")
    >>> result = vt.translate_video("in.mp4", "out.mp4", report=True)
    >>> print(format_report(result))

Each frame is translated on its own by the predictor, then made consistent with the previous
output (Ruder et al. 2016-style, at inference time, with no retraining):

1. optical flow between the consecutive **input** frames, both ways (:mod:`.flow`, DIS by default);
2. the previous **output** warped onto the current frame with the backward flow;
3. an occlusion mask from the input frames: forward-backward inconsistency, brightness change,
   and pixels that came from outside the previous frame;
4. the blend, with ``T = temporal`` and ``M = 1`` where the warp is valid, ``0`` where occluded::

       out_t = T * M * warp(out_{t-1}) + (1 - T * M) * translate(frame_t)

   ``out_{t-1}`` is the previous *blended* output, so along a motion path the output is an
   exponential moving average of the per-frame translations (weight ``1 - T`` for the newest):
   flicker shrinks, while newly visible pixels come straight from the per-frame translation.
5. on a scene cut (:func:`~.flow.is_scene_cut` between the input frames) the blend resets:
   the output is exactly the per-frame translation.

The **predictor** is any object with ``__call__(uint8 (H, W, 3) RGB) -> uint8 image`` — a
:class:`~imtranslate.infer.Predictor` from a checkpoint (paired translation), a stylisation
model, or a plain function. Checkpoint predictors are batched (``batch_size`` frames per
forward pass); blending stays sequential. Memory does not grow with the video's length.

The warping error (:func:`warping_error`, :class:`WarpingErrorMeter`) is the metric: the mean
over consecutive pairs of ``mean |out_t - warp(out_{t-1}, flow(in_t -> in_{t-1}))|`` over the
pixels the occlusion mask of the **input** frames keeps, in [0, 1] units (1 = full range).
Lower is more consistent — but a frozen or blurred video scores low too, so it is always
reported with the PSNR of the output against the per-frame translation (:func:`video_psnr`),
which says how much of the per-frame picture the blend kept.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import cv2
import numpy as np

from ..errors import ConfigError, DataError, ImtranslateError
from ..metrics import psnr_from_mse
from .flow import build_flow, flow_guide, is_drawing, is_scene_cut, occlusion_mask, warp

__all__ = ["VideoTranslator", "FrameResult", "WarpingErrorMeter", "warping_error", "video_psnr", "format_report"]


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
class WarpingErrorMeter:
    """Running warping error: feed it consecutive output pairs with the flow and mask of their inputs.

    ``update(prev_out, cur_out, flow_bw, valid)`` adds one pair: the mean absolute difference
    between ``cur_out`` and ``prev_out`` warped by ``flow_bw`` (flow cur -> prev), over the pixels
    where ``valid`` is True and over channels, in [0, 1] units. :attr:`value` is the mean over
    pairs (NaN before any). Pairs with no valid pixel (or across a scene cut: don't feed them)
    do not count.
    """

    def __init__(self):
        self.total = 0.0
        self.pairs = 0

    def update(self, prev_out: np.ndarray, cur_out: np.ndarray, flow_bw: np.ndarray, valid: np.ndarray) -> float:
        if not valid.any():
            return float("nan")
        warped = warp(np.asarray(prev_out, np.float32), flow_bw)
        diff = np.abs(np.asarray(cur_out, np.float32) - warped)
        if diff.ndim == 3:
            diff = diff.mean(axis=2)
        e = float(diff[valid].mean()) / 255.0
        self.total += e
        self.pairs += 1
        return e

    @property
    def value(self) -> float:
        return self.total / self.pairs if self.pairs else float("nan")


class _PSNRMeter:
    """PSNR of a whole clip: :func:`~imtranslate.metrics.psnr_from_mse` of the MSE over every pixel
    of every frame ([0, 1] units), so frames identical to the reference do not make the mean
    infinite; identical clips give 100 dB, as identical images do in ``imtranslate eval``."""

    def __init__(self):
        self.sse = 0.0
        self.count = 0

    def update(self, a: np.ndarray, b: np.ndarray) -> None:
        d = (np.asarray(a, np.float32) - np.asarray(b, np.float32)) / 255.0
        self.sse += float(np.square(d).sum())
        self.count += d.size

    @property
    def value(self) -> float:
        if not self.count:
            return float("nan")
        mse = self.sse / self.count
        return psnr_from_mse(mse)


def _frames(x) -> Iterable[np.ndarray]:
    if isinstance(x, (str, Path)):
        from ..data.video_io import open_video

        return open_video(x)
    return x


def video_psnr(frames_a, frames_b) -> float:
    """PSNR (dB) between two clips of equal length (paths or iterables of uint8 frames), from the
    mean squared error over all their pixels in [0, 1] units (:func:`~imtranslate.metrics.psnr_from_mse`:
    100 dB when identical, never ``inf``)."""
    meter = _PSNRMeter()
    n = 0
    for a, b in zip(_frames(frames_a), _frames(frames_b), strict=True):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"video_psnr: frame {n} shapes differ: {np.shape(a)} vs {np.shape(b)}")
        meter.update(a, b)
        n += 1
    return meter.value


def warping_error(frames_out, frames_in, *, flow="dis-medium", scene_cut_threshold: float = 0.5,
                  raft_weights=None, device: str = "auto", **mask_options) -> float:
    """Temporal warping error of an output clip, with flow and occlusion masks from its input.

    For every consecutive pair: the flow between the **input** frames both ways (``flow``: a method
    name or estimator; DIS-medium by default, more accurate than the translator's default, so
    the metric does not simply reuse the flow that made the output), the occlusion mask
    (:func:`~.flow.occlusion_mask`; ``mask_options`` are passed to it), then
    ``mean |out_t - warp(out_{t-1})|`` over valid pixels in [0, 1] units. Pairs across a scene
    cut are skipped. Returns the mean over pairs (NaN for fewer than two frames).

    ``frames_out`` / ``frames_in`` are paths (video files, frame folders) or iterables of
    ``uint8`` frames; output frames may be larger than the input ones (flow is rescaled).
    """
    estimator = build_flow(flow, weights=raft_weights, device=device)
    meter = WarpingErrorMeter()
    prev_in = prev_out = None
    for i, (cur_out, cur_in) in enumerate(zip(_frames(frames_out), _frames(frames_in), strict=True)):
        cur_out = np.asarray(cur_out)
        if prev_in is not None and not is_scene_cut(prev_in, cur_in, scene_cut_threshold):
            fw, bw = estimator.estimate_both(prev_in, cur_in)
            occ = occlusion_mask(fw, bw, prev_in, cur_in, **mask_options)
            bw, occ = _fit_flow(bw, occ, cur_out.shape[:2])
            meter.update(prev_out, cur_out, bw, ~occ)
        prev_in, prev_out = cur_in, cur_out
    return meter.value


def _fit_flow(flow: np.ndarray, occ: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rescale a flow field (and its mask) computed on input frames to the output's size, for
    models whose output is larger (or smaller) than their input."""
    h, w = flow.shape[:2]
    H, W = shape
    if (h, w) == (H, W):
        return flow, occ
    f = cv2.resize(flow, (W, H), interpolation=cv2.INTER_LINEAR)
    f[..., 0] *= W / w  # displacements scale with the picture
    f[..., 1] *= H / h
    o = cv2.resize(occ.view(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)
    return f, o


# --------------------------------------------------------------------------------------------
# The translator
# --------------------------------------------------------------------------------------------
@dataclass
class FrameResult:
    """One translated frame and how it was made."""

    index: int
    output: np.ndarray  # uint8 (H', W', 3): what is written
    per_frame: np.ndarray  # uint8 (H', W', 3): the predictor's own output for this frame
    cut: bool  # True on the first frame and after a scene cut (output == per_frame)
    flow_bw: Optional[np.ndarray] = None  # float32 (H', W', 2) flow to the previous frame (None on cuts)
    valid: Optional[np.ndarray] = None  # bool (H', W'): where the warped previous output was usable


class VideoTranslator:
    """Translate videos frame by frame with temporal consistency (see the module docstring).

    Args:
        predictor: ``__call__(uint8 (H, W, 3) RGB) -> uint8 image`` — e.g. ``imtranslate.load(ckpt)``.
        flow: flow method name (``dis-ultrafast`` | ``dis-fast`` | ``dis-medium`` | ``farneback`` |
            ``raft``) or an object with ``estimate(a, b)``; see :mod:`imtranslate.infer.flow`.
        temporal: blend strength ``T`` in [0, 1). 0 = plain per-frame translation; the default 0.9 keeps
            90 % of the warped past where it is valid. Higher is steadier but trails more on
            changes the mask misses (e.g. lighting), and repeated warping softens fine texture.
        scene_cut_threshold: reset the blend when :func:`~.flow.scene_cut_score` of consecutive
            input frames exceeds this (0..1; 1 never resets).
        occlusion: keyword options of :func:`~.flow.occlusion_mask` (``alpha``, ``beta``,
            ``brightness``, ``motion_boundaries``, ``dilate``).
        raft_weights: local weights file for ``flow="raft"``.
        device: where RAFT runs (the predictor keeps its own device).
        batch_size: frames per predictor call for checkpoint predictors (default: the
            predictor's ``batch_size``, else 1).
        flow_smooth: what the flow (and the occlusion mask) is computed on. ``0`` (default): the
            frames as they are; a number ``sigma > 0``: the grey frames blurred by a Gaussian of
            ``sigma`` px (:func:`~.flow.flow_guide`); ``"auto"``: 2 px for line drawings
            (:func:`~.flow.is_drawing`, both frames), the frames as they are otherwise. Not the
            default: it helped a weak contour -> photo pix2pix (docs/VIDEO.md) but cost PSNR with
            a sharper translator, and made DIS's flow on 32 px drawings less accurate.
    """

    #: blur (px) that ``flow_smooth="auto"`` applies to line drawings before flow estimation
    DRAWING_SMOOTH = 2.0

    def __init__(self, predictor, *, flow="dis-medium", temporal: float = 0.9, scene_cut_threshold: float = 0.5,
                 occlusion: Optional[dict] = None, raft_weights=None, device: str = "auto",
                 batch_size: Optional[int] = None, flow_smooth=0.0):
        if not callable(predictor):
            raise ImtranslateError(f"the predictor must be callable (uint8 RGB array -> uint8 image), "
                                   f"got {type(predictor).__name__}")
        if getattr(predictor, "read_mode", None) == "label":
            raise ImtranslateError(
                f"{getattr(predictor, 'checkpoint', 'this model')}: the model translates label maps "
                "(its data.input_kind is label), so it cannot translate a video: video frames are pictures. "
                "Use a model trained on RGB or grey picture inputs (e.g. contour drawings or photos).")
        if not 0.0 <= temporal < 1.0:
            raise ConfigError(f"temporal blend strength must be in [0, 1), got {temporal} "
                              "(0 = per-frame, 0.8 = strong smoothing; 1 would freeze the first frame)")
        if not 0.0 <= scene_cut_threshold:
            raise ConfigError(f"scene-cut threshold must be >= 0, got {scene_cut_threshold}")
        self.flow_smooth = self._check_smooth(flow_smooth)
        self.predictor = predictor
        self.temporal = float(temporal)
        self.scene_cut_threshold = float(scene_cut_threshold)
        self.occlusion = dict(occlusion or {})
        self.flow = build_flow(flow, weights=raft_weights, device=device)
        self.batch_size = int(batch_size or getattr(predictor, "batch_size", 1) or 1)
        self.reset()

    @classmethod
    def from_checkpoint(cls, checkpoint, *, device: str = "auto", use_ema: bool = True, batch_size: int = 4,
                        **options) -> "VideoTranslator":
        """A translator around ``imtranslate.load(checkpoint)``; ``options`` as in the constructor."""
        from .predictor import Predictor

        p = Predictor.from_checkpoint(checkpoint, device=device, use_ema=use_ema, batch_size=batch_size)
        p.checkpoint = str(checkpoint)  # named in errors
        if p.cfg.task == "vid2vid" and cls is VideoTranslator:  # a sequential net: its own flow and mask
            from .vid2vid import Vid2VidTranslator

            return Vid2VidTranslator(p, device=device, **options)
        return cls(p, device=device, **options)

    def reset(self) -> None:
        """Forget the previous frame (the next frame starts a new shot)."""
        self._prev_in: Optional[np.ndarray] = None
        self._prev_out: Optional[np.ndarray] = None  # float32, not rounded: no drift from re-quantising
        self._index = 0

    # ---- per-frame translation ------------------------------------------------------------------
    @staticmethod
    def _as_rgb(out, what: str) -> np.ndarray:
        arr = np.asarray(out)
        if arr.dtype != np.uint8:
            raise ImtranslateError(f"{what} returned {arr.dtype} pixels; video translation needs uint8 images")
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)  # grey models: written as RGB video
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ImtranslateError(f"{what} returned an array of shape {arr.shape}; expected (H, W) or (H, W, 3)")
        return arr

    def translate_batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Per-frame outputs (``uint8 (H', W', 3)``) of a list of frames, no blending."""
        p = self.predictor
        if hasattr(p, "translate_tensor") and hasattr(p, "encode") and len(frames) > 1 \
                and all(f.shape == frames[0].shape for f in frames):
            import torch

            from ..data import to_uint8

            A = torch.stack([p.encode(f) for f in frames])
            outs = p.translate_tensor(A)
            return [self._as_rgb(to_uint8(o), "the model") for o in outs]
        return [self._as_rgb(p(f), "the predictor") for f in frames]

    # ---- the temporal blend ------------------------------------------------------------------
    @staticmethod
    def _check_smooth(value):
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            sigma = float(value)
        except (TypeError, ValueError):
            sigma = float("nan")
        if not sigma >= 0 or math.isinf(sigma):
            raise ConfigError(f"flow smoothing must be 'auto' or a blur in px >= 0, got {value!r}")
        return sigma

    def flow_frames(self, prev_in: np.ndarray, cur_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pair the flow and occlusion mask are computed on (see ``flow_smooth``)."""
        sigma = self.flow_smooth
        if sigma == "auto":
            sigma = self.DRAWING_SMOOTH if is_drawing(prev_in) and is_drawing(cur_in) else 0.0
        if sigma <= 0:
            return prev_in, cur_in
        return flow_guide(prev_in, sigma), flow_guide(cur_in, sigma)

    def flow_and_mask(self, prev_in: np.ndarray, cur_in: np.ndarray, out_shape=None):
        """Backward flow (cur -> prev) and the valid mask for the current frame, at ``out_shape``."""
        prev_in, cur_in = self.flow_frames(prev_in, cur_in)
        fw, bw = self.flow.estimate_both(prev_in, cur_in)
        occ = occlusion_mask(fw, bw, prev_in, cur_in, **self.occlusion)
        bw, occ = _fit_flow(bw, occ, out_shape or cur_in.shape[:2])
        return bw, ~occ

    def blend(self, prev_out: np.ndarray, per_frame: np.ndarray, flow_bw: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``T * M * warp(prev_out) + (1 - T * M) * per_frame`` as float32 (see the module docstring)."""
        warped = warp(np.asarray(prev_out, np.float32), flow_bw)
        weight = (valid.astype(np.float32) * self.temporal)[:, :, None]  # (H, W, 1)
        cur = per_frame.astype(np.float32)
        return cur + weight * (warped - cur)

    def _advance(self, frame: np.ndarray, per_frame: np.ndarray, need_flow: bool) -> FrameResult:
        frame = self._check_frame(frame)
        idx = self._index
        self._index += 1
        cut = self._prev_in is None or self._prev_in.shape != frame.shape or \
            is_scene_cut(self._prev_in, frame, self.scene_cut_threshold)
        bw = valid = None
        if cut:
            out = per_frame.astype(np.float32)
        else:
            if self.temporal > 0 or need_flow:
                bw, valid = self.flow_and_mask(self._prev_in, frame, per_frame.shape[:2])
            if self.temporal > 0 and self._prev_out.shape == per_frame.shape:
                out = self.blend(self._prev_out, per_frame, bw, valid)
            else:
                out = per_frame.astype(np.float32)
        self._prev_in, self._prev_out = frame, out
        out8 = per_frame if cut else np.clip(out + 0.5, 0, 255).astype(np.uint8)
        return FrameResult(idx, out8, per_frame, cut, bw, valid)

    @staticmethod
    def _check_frame(frame) -> np.ndarray:
        arr = np.asarray(frame)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
            raise ImtranslateError(f"video frames must be uint8 (H, W, 3) RGB or (H, W) grey, got {arr.dtype} {arr.shape}")
        return arr

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Translate the next frame of a stream; returns the blended ``uint8`` output."""
        return self._advance(frame, self.translate_batch([self._check_frame(frame)])[0], need_flow=False).output

    def iter_results(self, frames: Iterable[np.ndarray], *, need_flow: bool = False) -> Iterator[FrameResult]:
        """Translate a stream of frames, yielding a :class:`FrameResult` per frame, in order.

        Reads ``batch_size`` frames ahead for batched prediction; nothing else is kept.
        ``need_flow`` computes flow and masks even when ``temporal == 0`` (for the report).
        """
        buf: list[np.ndarray] = []
        for frame in frames:
            buf.append(self._check_frame(frame))
            if len(buf) >= self.batch_size:
                yield from self._flush(buf, need_flow)
                buf = []
        if buf:
            yield from self._flush(buf, need_flow)

    def _flush(self, buf, need_flow):
        for frame, pred in zip(buf, self.translate_batch(buf)):
            yield self._advance(frame, pred, need_flow)

    def translate_frames(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Translate a stream of ``uint8`` frames; yields ``uint8 (H', W', 3)`` outputs lazily."""
        for r in self.iter_results(frames):
            yield r.output

    # ---- files ---------------------------------------------------------------------------------
    def translate_video(self, input, output, *, report: bool = False, progress: bool = True,
                        lossless: bool = False, yuv444: bool = False, fps=None, audio: bool = True) -> dict:
        """Translate a video file or frame folder into a video file or frame folder, streaming.

        Args:
            input: a video file (mp4, mov, mkv, webm, ...) or a folder of frames.
            output: a video file (its extension picks the container) or a folder (numbered PNGs).
            report: also measure the warping error of the per-frame and of the blended output, and
                the PSNR of the blended output against the per-frame one (see :func:`format_report`).
            progress: a progress bar with frames per second (tqdm, on stderr).
            lossless, yuv444: output quality modes (see :class:`~imtranslate.data.video_io.VideoWriter`).
            fps: frame rate for a frame-folder input (default 25); files keep their own.
            audio: copy the input's audio track into the output file (when there is one).

        Returns a dict: ``frames``, ``seconds``, ``frames_per_second``, ``scene_cuts``, ``fps``,
        ``size`` (output width, height), ``audio``, ``output``, and with ``report``:
        ``warping_error_per_frame``, ``warping_error``, ``psnr_vs_per_frame``, ``valid_fraction``.
        """
        from tqdm import tqdm

        from ..data.video_io import VideoWriter, is_frame_folder_path, open_video

        src = Path(input)
        dst = Path(output)
        if src.exists() and dst.exists() and src.resolve() == dst.resolve():
            raise DataError(dst, "is the input too; give another output path")
        reader = open_video(src, fps=fps if src.is_dir() else None)
        info = reader.info
        self.reset()
        audio_from = src if (audio and info.has_audio and not is_frame_folder_path(dst)) else None
        writer = VideoWriter(dst, fps=info.fps, lossless=lossless, yuv444=yuv444, audio_from=audio_from)
        if audio and info.has_audio and is_frame_folder_path(dst):
            writer.audio = "dropped (a frame folder holds no audio)"
        we_frame, we_out, psnr = WarpingErrorMeter(), WarpingErrorMeter(), _PSNRMeter()
        valid_sum, valid_n = 0.0, 0
        n = cuts = 0
        prev = None
        bar = tqdm(total=info.approx_frames, disable=not progress, desc="video", unit="frame", dynamic_ncols=True)
        t0 = time.perf_counter()
        try:
            with writer:
                for r in self.iter_results(reader, need_flow=report):
                    writer.write(r.output)
                    n += 1
                    cuts += int(r.cut and r.index > 0)
                    if report:
                        psnr.update(r.output, r.per_frame)
                        if not r.cut and prev is not None:
                            we_frame.update(prev.per_frame, r.per_frame, r.flow_bw, r.valid)
                            we_out.update(prev.output, r.output, r.flow_bw, r.valid)
                            valid_sum += float(r.valid.mean())
                            valid_n += 1
                        prev = r
                    bar.update(1)
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        result = {"input": str(src), "output": str(dst), "frames": n, "seconds": seconds,
                  "frames_per_second": n / seconds if seconds > 0 else float("nan"), "scene_cuts": cuts,
                  "fps": float(info.fps), "size": writer.size, "audio": writer.audio, "flow": self.flow.name,
                  "temporal": self.temporal, "notes": list(writer.notes), "learned": getattr(self, "learned", False)}
        if report:
            result.update({"warping_error_per_frame": we_frame.value, "warping_error": we_out.value,
                           "psnr_vs_per_frame": psnr.value,
                           "valid_fraction": valid_sum / valid_n if valid_n else float("nan")})
        return result


def format_report(result: dict) -> str:
    """Human-readable lines for the dict :meth:`VideoTranslator.translate_video` returns."""
    size = result.get("size") or ("?", "?")
    lines = [f"wrote {result['frames']} frame(s) {size[0]}x{size[1]} at {result['fps']:.3g} fps to {result['output']} "
             f"({result['frames_per_second']:.1f} frames/s; flow {result['flow']}, "
             + ("vid2vid's learned flow and mask; " if result.get("learned") else f"temporal {result['temporal']:g}; ")
             + f"{result['scene_cuts']} scene cut(s); audio: {result['audio']})"]
    lines += [f"note: {n}" for n in result.get("notes", [])]
    if "warping_error" in result:
        pf, out = result["warping_error_per_frame"], result["warping_error"]
        ratio = pf / out if out and not math.isnan(out) and out > 0 else float("nan")
        lines += [
            "temporal consistency (lower is steadier; [0, 1] units, occluded pixels excluded):",
            f"  warping error, per-frame output   {pf:.5f}",
            f"  warping error, blended output     {out:.5f}   ({ratio:.1f}x lower)",
            "fidelity (higher keeps more of each frame's own translation; a frozen or blurred video would lose here):",
            f"  PSNR blended vs per-frame output  {result['psnr_vs_per_frame']:.2f} dB",
            f"  pixels blended from the past      {100 * result['valid_fraction']:.1f} % (mean valid-mask fraction)",
        ]
    return "\n".join(lines)
