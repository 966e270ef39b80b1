"""Streaming video translation with a vid2vid checkpoint: its own learned flow and mask.

    >>> from imtranslate.infer.video_translate import VideoTranslator
    >>> vt = VideoTranslator.from_checkpoint("runs/0003-vid2vid/checkpoints/last.safetensors")  # a Vid2VidTranslator
    >>> vt.translate_video("in.mp4", "out.mp4", report=True)

Frame by frame, one generator step each (``nets/vid2vid.py``): the net sees the current and the
previous input frame and its own previous output, and outputs
``mask * warp(prev_out, flow) + (1 - mask) * hallucinated``. No post-hoc blending: the
``temporal`` option of :class:`~.video_translate.VideoTranslator` does not apply. On a scene cut
(:func:`~.flow.is_scene_cut` of the input frames, as for image models) the recurrence restarts:
the frame is generated with no past, so one shot never smears into the next. Only the previous
frame and output are kept: memory does not grow with the length of the video.

``--report`` measures the warping error with DIS flow of the input frames (the same meter as for
image models); its "per-frame" row is the net's hallucinated frame (what it would output with
mask 0).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..data import to_uint8
from ..tasks.vid2vid import foreground
from .flow import is_scene_cut
from .video_translate import FrameResult, VideoTranslator

__all__ = ["Vid2VidStream", "Vid2VidTranslator"]


class Vid2VidStream:
    """The recurrence on encoded tensors: ``step(A_t, cut)`` -> the step dict of frame t.

    ``A_t`` (C_in, H, W) or (1, C_in, H, W); ``cut=True`` (or the first frame, or a new size)
    starts a new shot. Gives exactly what :func:`imtranslate.tasks.vid2vid.generate_clip` gives
    for the same frames and cuts.
    """

    def __init__(self, G, cfg):
        self.G, self.cfg = G, cfg
        self.reset()

    def reset(self) -> None:
        self.prev_in: Optional[torch.Tensor] = None
        self.prev_out: Optional[torch.Tensor] = None

    @torch.inference_mode()
    def step(self, A: torch.Tensor, cut: bool = False) -> dict[str, torch.Tensor]:
        A = A if A.dim() == 4 else A.unsqueeze(0)
        new_shot = cut or self.prev_in is None or self.prev_in.shape != A.shape
        first = torch.full((A.shape[0],), bool(new_shot), device=A.device)
        prev_in = torch.zeros_like(A) if new_shot else self.prev_in
        prev_out = A.new_zeros(A.shape[0], self.G.out_channels, *A.shape[-2:]) if new_shot else self.prev_out
        r = self.G.step(A, prev_in, prev_out, foreground(A, self.cfg), first)
        self.prev_in, self.prev_out = A, r["out"]
        return r


class Vid2VidTranslator(VideoTranslator):
    """:class:`VideoTranslator` for vid2vid checkpoints: the net's own flow and mask per frame.

    ``predictor``: a :class:`~.predictor.Predictor` of a vid2vid checkpoint (it encodes frames as
    in training); ``flow`` only serves ``--report`` (the DIS warping error of the result);
    ``temporal`` is accepted and ignored (the net blends by itself).
    """

    def __init__(self, predictor, *, flow="dis-medium", temporal: float = 0.0, scene_cut_threshold: float = 0.5,
                 **options):
        super().__init__(predictor, flow=flow, temporal=0.0, scene_cut_threshold=scene_cut_threshold, **options)
        self.stream = Vid2VidStream(predictor.G, predictor.cfg)
        self.learned = True

    def reset(self) -> None:
        super().reset()
        if hasattr(self, "stream"):
            self.stream.reset()

    def _flush(self, buf, need_flow):
        p = self.predictor
        for frame in buf:
            idx = self._index
            self._index += 1
            cut = self._prev_in is None or self._prev_in.shape != frame.shape or \
                is_scene_cut(self._prev_in, frame, self.scene_cut_threshold)
            A = p.encode(frame).to(p.device)
            r = self.stream.step(A, cut=cut)
            out8 = self._as_rgb(to_uint8(r["out"][0].float()), "the model")
            hall8 = self._as_rgb(to_uint8(r["hallucinated"][0].float()), "the model")
            bw = valid = None
            if need_flow and not cut:
                bw, valid = self.flow_and_mask(self._prev_in, frame, out8.shape[:2])
            self._prev_in, self._prev_out = frame, out8.astype(np.float32)
            yield FrameResult(idx, out8, hall8, cut, bw, valid)

    def step(self, frame: np.ndarray) -> np.ndarray:
        return next(self._flush([self._check_frame(frame)], False)).output
