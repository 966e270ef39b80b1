"""Streaming video input and output: video files (through PyAV / FFmpeg) and frame folders.

    >>> with open_video("clip.mp4") as video:              # or a folder of images
    ...     print(video.info.fps, video.info.size, video.info.has_audio)
    ...     with VideoWriter("out.mp4", fps=video.info.fps, audio_from="clip.mp4") as out:
    ...         for frame in video:                          # uint8 (H, W, 3) RGB, one at a time
    ...             out.write(frame)

Frames are decoded and encoded one at a time, so memory does not grow with the length of the
video. A video file keeps its frame rate and size; its first audio track is copied into the
output unchanged when the output container accepts that codec, and re-encoded otherwise (e.g.
AAC into WebM becomes Opus). Frame folders are read as their images in natural name order
(``2.png`` before ``10.png``) and written as numbered PNGs (``frame_000001.png`` ...); they
carry no frame rate (25 by default) and no audio.

Every failure a user can cause raises :class:`~imtranslate.errors.DataError` naming the file.
PyAV is an optional dependency (``pip install 'imtranslate[video]'``); frame folders work
without it.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import DataError, ImtranslateError
from .io import IMAGE_EXTENSIONS, list_images, prepare_output_dir, prepare_output_file, read_image, write_image

#: Containers :class:`VideoWriter` picks a codec for by itself. Any other extension FFmpeg knows
#: is accepted too, with FFmpeg's default codec for it.
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})

#: Frame rate given to frame folders, which have none of their own.
DEFAULT_FOLDER_FPS = 25

_FOLDER_PATTERN = "frame_{:06d}.png"
_FOLDER_FRAME = re.compile(r"frame_\d{6}\.png")


def _import_av():
    try:
        import av  # noqa: F401
    except ImportError:  # pragma: no cover - av is installed wherever the tests run
        raise ImtranslateError("reading and writing video files needs PyAV: pip install 'imtranslate[video]' "
                               "(or pip install av). Frame folders work without it.") from None
    return av


def _as_fraction(fps) -> Fraction:
    """A frame rate as an exact fraction (29.97 -> 30000/1001), so timestamps never drift."""
    f = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(100_000)
    if f <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    return f


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    """What is known about a video before decoding it."""

    path: str
    kind: str  # "file" | "folder"
    fps: Fraction  # frames per second (25 for frame folders unless given)
    width: int
    height: int
    n_frames: Optional[int]  # None when the container does not say (e.g. many mkv/webm files)
    has_audio: bool
    codec: Optional[str] = None  # video codec of a file; None for folders
    duration: Optional[float] = None  # seconds, when the container says

    @property
    def approx_frames(self) -> Optional[int]:
        """``n_frames``, or an estimate from the duration when the container gives no count."""
        if self.n_frames is not None:
            return self.n_frames
        return int(round(self.duration * float(self.fps))) if self.duration else None

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, the order FFmpeg and PIL use."""
        return (self.width, self.height)


class VideoReader:
    """Iterate over the frames of a video file or frame folder as ``uint8 (H, W, 3)`` RGB arrays.

    Frames are decoded lazily, one at a time; each ``for`` loop starts again from the first
    frame. Build it with :func:`open_video`.
    """

    def __init__(self, path, *, fps=None):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(self.path, "no such video file or frame folder")
        self._files: list[Path] = []
        if self.path.is_dir():
            self.info = self._probe_folder(fps)
        else:
            self.info = self._probe_file(fps)

    # ---- probing ---------------------------------------------------------------------------
    def _probe_folder(self, fps) -> VideoInfo:
        self._files = sorted(list_images(self.path), key=_natural_key)
        if not self._files:
            raise DataError(self.path, "folder holds no images", f"a frame folder holds {', '.join(sorted(IMAGE_EXTENSIONS))} files")
        h, w = read_image(self._files[0], "rgb").shape[:2]
        rate = _as_fraction(fps or DEFAULT_FOLDER_FPS)
        return VideoInfo(str(self.path), "folder", rate, w, h, len(self._files), has_audio=False,
                         duration=float(len(self._files) / rate))

    def _open_container(self):
        av = _import_av()
        try:
            container = av.open(str(self.path), mode="r")
        except (av.error.FFmpegError, ValueError, OSError) as e:
            raise DataError(self.path, f"not a readable video ({e.__class__.__name__}: {e})",
                            f"use a video file FFmpeg can read ({', '.join(sorted(VIDEO_EXTENSIONS))}, ...) "
                            "or a folder of frame images") from None
        if not container.streams.video:
            container.close()
            raise DataError(self.path, "holds no video stream", "is it an audio-only file?")
        return container

    def _probe_file(self, fps) -> VideoInfo:
        container = self._open_container()
        try:
            stream = container.streams.video[0]
            ctx = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if fps is not None:
                rate = fps
            elif not rate:
                warnings.warn(f"{self.path}: the file gives no frame rate; assuming {DEFAULT_FOLDER_FPS}", stacklevel=3)
                rate = DEFAULT_FOLDER_FPS
            if not ctx.width or not ctx.height:
                raise DataError(self.path, "video stream has no frame size", "the file may be truncated")
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000  # AV_TIME_BASE
            return VideoInfo(str(self.path), "file", _as_fraction(rate), int(ctx.width), int(ctx.height),
                             int(stream.frames) or None, has_audio=bool(container.streams.audio), codec=ctx.name,
                             duration=duration)
        finally:
            container.close()

    # ---- frames ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray]:
        if self.info.kind == "folder":
            yield from self._iter_folder()
        else:
            yield from self._iter_file()

    def _iter_folder(self) -> Iterator[np.ndarray]:
        first = self._files[0]
        for f in self._files:
            frame = read_image(f, "rgb")
            if frame.shape[:2] != (self.info.height, self.info.width):
                raise DataError(f, f"frame is {frame.shape[1]}x{frame.shape[0]} but {first.name} is "
                                   f"{self.info.width}x{self.info.height}", "every frame of a video must have one size")
            yield frame

    def _iter_file(self) -> Iterator[np.ndarray]:
        av = _import_av()
        container = self._open_container()
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame-parallel decoding: several times faster for H.264
            i = 0
            decoded = container.decode(stream)
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except (av.error.FFmpegError, ValueError) as e:
                    raise DataError(self.path, f"video data is corrupt after frame {i} ({e})",
                                    "re-export the video or cut it before that point") from None
                # rgb24 from any pixel format (yuv420p, 10-bit, ...) through swscale
                yield frame.to_ndarray(format="rgb24")
                i += 1
            if i == 0:
                raise DataError(self.path, "video stream holds no decodable frames", "the file may be truncated")
        finally:
            container.close()

    def __len__(self) -> int:
        if self.info.n_frames is None:
            raise TypeError(f"{self.path}: the container does not say how many frames it holds")
        return self.info.n_frames

    # a context manager for symmetry with VideoWriter; decoders are closed after every loop
    def close(self) -> None:
        pass

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _natural_key(path: Path):
    """Sort ``2.png`` before ``10.png``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def open_video(path, *, fps=None) -> VideoReader:
    """Open a video file (mp4, mov, mkv, webm, avi, ... anything FFmpeg reads) or a frame folder.

    Args:
        path: a video file, or a folder whose images (sorted by name) are the frames.
        fps: frame rate of a frame folder (default 25). For a file it overrides the rate the file
            states (frames are unchanged; only the playback speed of a written copy changes).

    Returns a :class:`VideoReader`: ``.info`` is a :class:`VideoInfo` (fps, width, height,
    n_frames when known, has_audio); iterating it yields ``uint8 (H, W, 3)`` RGB frames lazily.

    Raises:
        DataError: missing path, unreadable or corrupt file, no video stream, empty folder.
    """
    return VideoReader(path, fps=fps)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def is_frame_folder_path(path) -> bool:
    """Whether ``path`` names a frame folder (an existing folder, or a name without extension)."""
    p = Path(path)
    return p.is_dir() or p.suffix == ""


# (codec, pixel format, codec options) by container and quality mode; see VideoWriter
_X264 = {"default": ("libx264", "yuv420p", {"crf": "18", "preset": "medium"}),
         "yuv444": ("libx264", "yuv444p", {"crf": "18", "preset": "medium"}),
         # libx264rgb at qp 0 keeps the RGB values bit-exact (no YUV conversion at all)
         "lossless": ("libx264rgb", "rgb24", {"qp": "0", "preset": "medium"})}
_VP9 = {"default": ("libvpx-vp9", "yuv420p", {"crf": "31", "b": "0", "row-mt": "1"}),
        "yuv444": ("libvpx-vp9", "yuv444p", {"crf": "31", "b": "0", "row-mt": "1"}),
        "lossless": ("libvpx-vp9", "gbrp", {"lossless": "1", "row-mt": "1"})}
_CODECS = {".mp4": _X264, ".m4v": _X264, ".mov": _X264, ".mkv": _X264, ".avi": _X264, ".webm": _VP9}
# if libx264 is missing from an FFmpeg build: FFV1 is lossless and in every build (mkv / avi)
_FALLBACK_LOSSLESS = ("ffv1", "bgr0", {})


class VideoWriter:
    """Write ``uint8 (H, W, 3)`` RGB frames to a video file or a frame folder, one at a time.

    Args:
        path: ``out.mp4`` / ``.mov`` / ``.mkv`` / ``.webm`` / ``.avi`` (or any container FFmpeg
            writes), or a folder (an existing folder or a name without extension), which gets
            numbered PNGs ``frame_000001.png`` ... (earlier ``frame_NNNNNN.png`` files there are
            removed first; other files are left alone).
        fps: frames per second (a float or an exact ``Fraction`` such as 30000/1001).
        size: ``(width, height)``; ``None`` takes it from the first frame. Every frame must
            have this size.
        lossless: bit-exact RGB (H.264 RGB at qp 0, or VP9 lossless for WebM). Large files that
            not every player opens; meant for measuring.
        yuv444: full-resolution colour (4:4:4) instead of the usual 4:2:0, which halves the colour
            resolution. Odd frame sizes use 4:4:4 automatically (4:2:0 needs even sizes).
        codec, pix_fmt, options: override the codec (FFmpeg encoder name), pixel format and
            encoder options chosen from the container (default H.264 crf 18, VP9 crf 31 in WebM).
        audio_from: a video file whose first audio track is added to the output (copied
            unchanged when the container accepts its codec, otherwise re-encoded). Ignored when
            the source has no audio; dropped, with a note in :attr:`audio`, for frame folders.

    Use it as a context manager, or call :meth:`close` to finish the file.
    :attr:`audio` says what happened to the audio: ``"none"``, ``"copied (aac)"``,
    ``"re-encoded (aac -> opus)"`` or ``"dropped (...)"``.
    """

    def __init__(self, path, fps=DEFAULT_FOLDER_FPS, size=None, *, lossless: bool = False, yuv444: bool = False,
                 codec: Optional[str] = None, pix_fmt: Optional[str] = None, options: Optional[dict] = None,
                 audio_from=None):
        self.path = Path(path)
        self.fps = _as_fraction(fps)
        self.size = tuple(size) if size is not None else None
        self.lossless, self.yuv444 = lossless, yuv444
        self._codec, self._pix_fmt, self._options = codec, pix_fmt, options
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.is_folder = is_frame_folder_path(self.path)
        self.frames_written = 0
        self.audio = "none"
        self.notes: list[str] = []  # choices made for the user (e.g. 4:4:4 for odd sizes)
        self._container = None
        self._stream = None
        self._audio = None  # _AudioCopier when audio goes into the file
        self._closed = False
        if self.is_folder:
            prepare_output_dir(self.path)
            # frames of an earlier, longer run would read as part of this video: remove them
            for old in self.path.glob("frame_*.png"):
                if _FOLDER_FRAME.fullmatch(old.name):
                    old.unlink()
            if self.audio_from is not None and _source_has_audio(self.audio_from):
                self.audio = "dropped (a frame folder holds no audio)"
        else:
            if self.path.suffix.lower() in IMAGE_EXTENSIONS:
                raise DataError(self.path, "is an image file name", "give a video file (e.g. out.mp4) or a folder for frames")
            prepare_output_file(self.path)

    # ---- set-up on the first frame (the size is known then) -----------------------------------
    def _choose_codec(self, av, container) -> tuple[str, str, dict]:
        mode = "lossless" if self.lossless else "yuv444" if self.yuv444 else "default"
        table = _CODECS.get(self.path.suffix.lower())
        if table is not None:
            codec, pix_fmt, options = table[mode]
        else:
            codec, pix_fmt, options = container.default_video_codec, None, {}
            if self.lossless:
                raise DataError(self.path, f"lossless output is not set up for {self.path.suffix} files",
                                "write .mkv, .mp4, .mov or .webm, or give codec= and options=")
        if codec not in av.codecs_available:
            if self.lossless:
                codec, pix_fmt, options = _FALLBACK_LOSSLESS
                if codec not in container.supported_codecs:
                    raise DataError(self.path, "this FFmpeg build has no lossless encoder for this container",
                                    "write a .mkv file")
            else:
                codec, pix_fmt, options = container.default_video_codec, None, {}
            self.notes.append(f"encoder {table[mode][0] if table else '?'} missing from FFmpeg; using {codec}")
        codec = self._codec or codec
        pix_fmt = self._pix_fmt or pix_fmt
        options = dict(self._options if self._options is not None else options)
        return codec, pix_fmt, options

    def _open(self, width: int, height: int) -> None:
        av = _import_av()
        try:
            container = av.open(str(self.path), mode="w")
        except (av.error.FFmpegError, ValueError, OSError) as e:
            raise DataError(self.path, f"cannot write a video here ({e})",
                            f"use one of {', '.join(sorted(VIDEO_EXTENSIONS))} or a folder for frames") from None
        try:
            codec, pix_fmt, options = self._choose_codec(av, container)
            try:
                stream = container.add_stream(codec, rate=self.fps)
            except (av.error.FFmpegError, ValueError) as e:
                raise DataError(self.path, f"cannot encode {codec} into {self.path.suffix} ({e})") from None
            stream.width, stream.height = width, height
            if pix_fmt is None:
                pix_fmt = stream.pix_fmt or "yuv420p"
            if pix_fmt in ("yuv420p", "nv12") and (width % 2 or height % 2):
                pix_fmt = "yuv444p"  # 4:2:0 needs even sizes; 4:4:4 keeps every pixel instead of cropping
                self.notes.append(f"odd frame size {width}x{height}: encoded as 4:4:4")
            stream.pix_fmt = pix_fmt
            stream.options = {k: str(v) for k, v in options.items()}
            self._container, self._stream = container, stream
            if self.audio_from is not None:
                self._audio = _AudioCopier.attach(self.audio_from, container, self.path)
                if self._audio is not None:
                    self.audio = self._audio.describe()
        except BaseException:
            container.close()
            raise

    # ---- writing -----------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """Append one frame: ``uint8 (H, W, 3)`` RGB (grey ``(H, W)`` is repeated to RGB)."""
        if self._closed:
            raise ValueError(f"{self.path}: VideoWriter is closed")
        arr = np.asarray(frame)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"VideoWriter.write expects uint8 (H, W, 3) RGB frames, got {arr.dtype} {arr.shape}")
        h, w = arr.shape[:2]
        if self.size is None:
            self.size = (w, h)
        elif (w, h) != tuple(self.size):
            raise DataError(self.path, f"frame {self.frames_written} is {w}x{h} but the video is "
                                       f"{self.size[0]}x{self.size[1]}", "every frame of a video must have one size")
        if self.is_folder:
            write_image(self.path / _FOLDER_PATTERN.format(self.frames_written + 1), arr)
        else:
            if self._container is None:
                self._open(w, h)
            av = _import_av()
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            vf.pts = self.frames_written  # in units of 1/fps: exact constant frame rate
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
            if self._audio is not None:
                # interleave: audio up to the end of this frame, so neither stream is buffered long
                self._audio.copy_until(float((self.frames_written + 1) / self.fps))
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, copy the rest of the audio and finish the file. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():  # flush delayed frames (B-frames, lookahead)
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.copy_until(float("inf"))  # the whole track, as long as the source's
        finally:
            if self._audio is not None:
                self._audio.close()
            self._container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _source_has_audio(path: Path) -> bool:
    if path.is_dir() or not path.exists():
        return False
    av = _import_av()
    try:
        with av.open(str(path)) as c:
            return bool(c.streams.audio)
    except (av.error.FFmpegError, ValueError, OSError):
        return False


class _AudioCopier:
    """Moves the first audio track of a source file into an output container, interleaved.

    Copies packets unchanged when the output container accepts the codec; otherwise decodes
    and re-encodes to the container's default audio codec (WebM: Opus).
    """

    def __init__(self, source: Path, src_container, src_stream, out_stream, transcode: bool):
        self.source = source
        self.src = src_container
        self.src_stream = src_stream
        self.out_stream = out_stream
        self.transcode = transcode
        self._packets = src_container.demux(src_stream)
        self._pending = None  # a packet read ahead, past the current time
        self._done = False

    @classmethod
    def attach(cls, source: Path, container, out_path: Path) -> Optional["_AudioCopier"]:
        av = _import_av()
        if source.is_dir() or not source.exists():
            return None
        try:
            src = av.open(str(source))
        except (av.error.FFmpegError, ValueError, OSError) as e:
            raise DataError(source, f"cannot read its audio ({e})") from None
        if not src.streams.audio:
            src.close()
            return None
        a = src.streams.audio[0]
        name = a.codec_context.name
        try:
            if name in container.supported_codecs:
                out = container.add_stream_from_template(a)
                return cls(source, src, a, out, transcode=False)
            target = container.default_audio_codec
            if target in ("none", None) or target not in av.codecs_available:
                raise DataError(out_path, f"this container cannot hold {name} audio and has no audio encoder")
            if target == "opus" and "libopus" in av.codecs_available:
                target = "libopus"  # FFmpeg's native opus encoder is experimental
            # Opus only runs at 48 kHz; other encoders keep the source rate
            rate = 48000 if "opus" in target else (a.rate or 48000)
            out = container.add_stream(target, rate=rate)
            channels = a.layout.nb_channels if a.layout is not None else 2
            # unnamed layouts ("1 channels") are rejected by encoders: use the standard name
            out.layout = {1: "mono", 2: "stereo"}.get(channels, a.layout.name if "channels" not in a.layout.name else "stereo")
            return cls(source, src, a, out, transcode=True)
        except BaseException:
            src.close()
            raise

    def describe(self) -> str:
        src = self.src_stream.codec_context.name
        if self.transcode:
            return f"re-encoded ({src} -> {self.out_stream.codec_context.name})"
        return f"copied ({src})"

    def _time(self, packet) -> float:
        pts = packet.pts if packet.pts is not None else packet.dts
        return float(pts * packet.time_base) if pts is not None else 0.0

    def copy_until(self, t: float) -> None:
        """Mux source audio whose start time is before ``t`` seconds."""
        if self._done:
            return
        container = self.out_stream.container
        while True:
            pkt = self._pending
            self._pending = None
            if pkt is None:
                try:
                    pkt = next(self._packets)
                except StopIteration:
                    pkt = None
            if pkt is None or (pkt.size == 0 and pkt.dts is None):  # end of stream (flush packet)
                self._finish(container)
                return
            if self._time(pkt) >= t:
                self._pending = pkt
                return
            if self.transcode:
                for frame in pkt.decode():
                    frame.pts = None  # let the encoder count samples at its own rate
                    for out in self.out_stream.encode(frame):
                        container.mux(out)
            elif pkt.dts is not None or pkt.pts is not None:  # a packet without time cannot be placed
                pkt.stream = self.out_stream
                container.mux(pkt)

    def _finish(self, container) -> None:
        if self.transcode:
            for out in self.out_stream.encode():
                container.mux(out)
        self._done = True

    def close(self) -> None:
        self.src.close()
