"""Video: streaming I/O (files, frame folders, audio), flow on clips with known motion, warps,
occlusion masks, scene cuts, temporal blending, the temporal loss, and the `video` command."""
from __future__ import annotations

import math
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from conftest import TASKS, tiny_overrides  # noqa: E402
from imtranslate.cli import main  # noqa: E402
from imtranslate.data.clips import random_affine_flow, synthesize_clip, warp_tensor  # noqa: E402
from imtranslate.data.video_io import VideoWriter, open_video  # noqa: E402
from imtranslate.errors import ConfigError, DataError, WeightsMissingError  # noqa: E402
from imtranslate.infer.flow import build_flow, is_scene_cut, occlusion_mask, scene_cut_score, warp  # noqa: E402
from imtranslate.infer.video_translate import VideoTranslator, WarpingErrorMeter, video_psnr, warping_error  # noqa: E402
from imtranslate.losses import temporal_loss  # noqa: E402
from imtranslate.tasks import get_task  # noqa: E402


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def texture(h, w, seed=0) -> np.ndarray:
    """A smooth multi-scale colour texture: every pixel has gradient, so flow is well posed."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for cell, amp in ((16, 1.0), (8, 0.6), (4, 0.3)):
        noise = rng.random((h // cell + 2, w // cell + 2, 3)).astype(np.float32)
        img += amp * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    img -= img.min()
    return (255 * img / img.max()).astype(np.uint8)


def shift_clip(n=6, h=48, w=64, dx=2.0, dy=1.0, seed=0):
    """Frames of a window moving over a texture by (dx, dy) pixels per frame, and the exact
    backward flow (frame t -> t-1), (dx, dy) everywhere: the content moves by (-dx, -dy)."""
    img = texture(h + 40, w + 40, seed)
    frames = []
    for t in range(n):
        M = np.float32([[1, 0, -(10 + dx * t)], [0, 1, -(10 + dy * t)]])  # frame(y) = img(y + offset_t)
        frames.append(cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_LINEAR))
    bw = np.zeros((h, w, 2), np.float32)
    bw[..., 0], bw[..., 1] = dx, dy
    return frames, bw


def transform(frame):
    """A deterministic stand-in for a translator: channel swap, contrast change, slight blur."""
    g = cv2.GaussianBlur(frame, (0, 0), 0.8).astype(np.float32)
    return np.clip(g[..., ::-1] * 0.8 + 30, 0, 255).astype(np.uint8)


class Flicker:
    """``transform`` plus a random colour gain and noise on every call: per-frame flicker."""

    def __init__(self, seed=0, gain=0.08, noise=2.0):
        self.rng = np.random.default_rng(seed)
        self.gain, self.noise = gain, noise

    def __call__(self, frame):
        g = transform(frame).astype(np.float32) * self.rng.normal(1, self.gain, 3).astype(np.float32)
        g += self.rng.normal(0, self.noise, g.shape).astype(np.float32)
        return np.clip(g + 0.5, 0, 255).astype(np.uint8)


def write_clip(path, frames, fps=Fraction(30000, 1001), audio_seconds=0.0, **options):
    with VideoWriter(path, fps=fps, **options) as w:
        for f in frames:
            w.write(f)
    if audio_seconds:  # add a sine track by writing the file again with PyAV directly
        _with_audio(path, frames, fps, audio_seconds)
    return path


def _with_audio(path, frames, fps, seconds, rate=44100):
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        a = c.add_stream("aac", rate=rate)
        a.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(int(rate * seconds)) / rate
        af = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                        format="fltp", layout="mono")
        af.sample_rate, af.pts = rate, 0
        for p in a.encode(af):
            c.mux(p)
        for p in a.encode():
            c.mux(p)


def audio_seconds(path) -> float:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return 0.0
        return sum(f.samples / f.sample_rate for f in c.decode(audio=0))


# --------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------
def test_video_file_round_trip(tmp_path):
    frames, _ = shift_clip(n=12, h=48, w=64)
    path = write_clip(tmp_path / "clip.mp4", frames)
    video = open_video(path)
    assert video.info.kind == "file" and video.info.size == (64, 48)
    assert video.info.fps == Fraction(30000, 1001)
    assert video.info.n_frames == 12 and not video.info.has_audio
    back = list(video)
    assert len(back) == 12 and back[0].shape == (48, 64, 3) and back[0].dtype == np.uint8
    # lossy H.264 (crf 18, 4:2:0) on a tiny, detailed texture: close, not exact
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(frames, back)]) < 8
    assert list(video)[3].shape == (48, 64, 3)  # iterating again starts over


@pytest.mark.parametrize("name", ["lossless.mkv", "lossless.mp4", "lossless.webm"])
def test_lossless_output_is_bit_exact(tmp_path, name):
    frames, _ = shift_clip(n=4, h=33, w=47)  # odd sizes too
    back = list(open_video(write_clip(tmp_path / name, frames, fps=25, lossless=True)))
    assert len(back) == 4 and all(np.array_equal(a, b) for a, b in zip(frames, back))


def test_yuv444_and_odd_size(tmp_path):
    frames, _ = shift_clip(n=3, h=31, w=45)
    w = VideoWriter(tmp_path / "odd.mp4", fps=24)
    for f in frames:
        w.write(f)
    w.close()
    assert any("4:4:4" in n for n in w.notes)  # 4:2:0 needs even sizes
    assert open_video(tmp_path / "odd.mp4").info.size == (45, 31)
    write_clip(tmp_path / "c444.mp4", frames, yuv444=True)
    assert len(list(open_video(tmp_path / "c444.mp4"))) == 3


def test_frame_folder_round_trip(tmp_path):
    frames, _ = shift_clip(n=5)
    out = tmp_path / "frames"
    write_clip(out, frames)
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files][:2] == ["frame_000001.png", "frame_000002.png"] and len(files) == 5
    video = open_video(out, fps=12)
    assert video.info.kind == "folder" and video.info.fps == 12 and video.info.n_frames == 5
    assert all(np.array_equal(a, b) for a, b in zip(frames, video))
    assert open_video(out).info.fps == 25  # folders have no rate of their own
    write_clip(out, frames[:2])  # a shorter run into the same folder replaces the old frames
    assert len(list(open_video(out))) == 2
    # frames named 1.png, 2.png, ..., 10.png come in numeric order
    numbered = tmp_path / "numbered"
    numbered.mkdir()
    for i in range(11):
        cv2.imwrite(str(numbered / f"{i + 1}.png"), np.full((8, 8, 3), i * 20, np.uint8))
    assert [int(f[0, 0, 0]) // 20 for f in open_video(numbered)] == list(range(11))


def test_audio_track_preserved(tmp_path):
    frames, _ = shift_clip(n=15)
    src = write_clip(tmp_path / "with_audio.mp4", frames, fps=15, audio_seconds=1.0)
    info = open_video(src).info
    assert info.has_audio
    for name, expect in (("copy.mkv", "copied (aac)"), ("re.webm", "re-encoded")):
        with VideoWriter(tmp_path / name, fps=info.fps, audio_from=src) as w:
            for f in open_video(src):
                w.write(f)
        assert w.audio.startswith(expect), w.audio
        assert open_video(tmp_path / name).info.has_audio
        assert abs(audio_seconds(tmp_path / name) - 1.0) < 0.1
    with VideoWriter(tmp_path / "folder", fps=15, audio_from=src) as w:
        w.write(frames[0])
    assert w.audio.startswith("dropped")


def test_unreadable_video_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    with pytest.raises(DataError, match="broken.mp4"):
        open_video(bad)
    with pytest.raises(DataError, match="missing.mp4"):
        open_video(tmp_path / "missing.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        open_video(empty)
    with pytest.raises(DataError, match="image file name"):
        VideoWriter(tmp_path / "out.png", fps=25)


# --------------------------------------------------------------------------------------------
# flow, warp, masks, scene cuts
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["dis-fast", "dis-medium", "farneback"])
def test_flow_recovers_known_translation(method):
    frames, bw_true = shift_clip(n=2, h=96, w=128, dx=2.5, dy=-1.5)
    est = build_flow(method)
    fw, bw = est.estimate_both(frames[0], frames[1])
    inner = (slice(8, -8), slice(8, -8))  # inside the frame, away from pixels that enter or leave
    assert np.abs(bw - bw_true)[inner].mean() < 0.5
    assert np.abs(fw + bw_true)[inner].mean() < 0.5


def test_warp_with_true_flow_reproduces_next_frame():
    clip = synthesize_clip(texture(120, 160), n_frames=4, rng=np.random.default_rng(3), size=(72, 96),
                           max_shift=3, max_rotate=2, max_scale=0.02)
    for t in range(1, 4):
        warped = warp(clip.frames[t - 1], clip.flows_bw[t])
        err = np.abs(warped.astype(np.float32) - clip.frames[t])[clip.valid[t]]
        assert clip.valid[t].mean() > 0.85
        assert err.mean() < 2.0, t  # bilinear resampling only


def test_occlusion_mask_flags_out_of_frame():
    h, w, dx = 40, 60, 5.0
    bw = np.zeros((h, w, 2), np.float32)
    bw[..., 0] = dx  # current pixel x came from x + 5 in the previous frame ...
    fw = -bw
    occ = occlusion_mask(fw, bw, dilate=0)
    assert occ[:, w - 5:].all()  # ... so the last 5 columns came from outside it
    assert not occ[:, : w - 6].any()
    # an inconsistent flow (forward does not undo backward) is flagged too
    fw_bad = fw.copy()
    fw_bad[10:20, 10:20] += 4
    occ = occlusion_mask(fw_bad, bw, dilate=0)
    assert occ[12:18, 7:13].all() and not occ[30:, :20].any()
    # brightness check: identical flow, but the content changed in a patch
    prev = np.full((h, w, 3), 100, np.uint8)
    cur = prev.copy()
    cur[5:15, 5:15] = 200
    occ = occlusion_mask(np.zeros_like(bw), np.zeros_like(bw), prev, cur, dilate=0)
    assert occ[5:15, 5:15].all() and occ.sum() == 100


def test_scene_cut_detection():
    frames, _ = shift_clip(n=3, seed=0)
    other, _ = shift_clip(n=1, seed=7)
    other = (255 - other[0]) // 2  # a different shot: other texture, other colours
    assert scene_cut_score(frames[0], frames[1]) < 0.2
    assert not is_scene_cut(frames[0], frames[1])
    assert is_scene_cut(frames[1], other)
    assert not is_scene_cut(frames[1], other, threshold=1.0)


def test_unknown_flow_and_missing_raft_weights(tmp_path):
    with pytest.raises(ConfigError, match="dis-fast"):
        build_flow("flownet2")
    with pytest.raises(WeightsMissingError, match="never downloads"):
        build_flow("raft")
    with pytest.raises(WeightsMissingError, match="nope.pth"):
        build_flow("raft", weights=tmp_path / "nope.pth")


def test_raft_from_a_local_file(tmp_path):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None, progress=False).state_dict(), path)
    est = build_flow("raft", weights=path, device="cpu")
    est.iterations = 1  # random weights: only the plumbing is tested here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: extra threads only add contention
    try:
        frames, _ = shift_clip(n=2, h=36, w=44)
        fw, bw = est.estimate_both(frames[0], frames[1])
    finally:
        torch.set_num_threads(threads)
    assert est.name == "raft-small" and fw.shape == (36, 44, 2) and fw.dtype == np.float32
    assert np.isfinite(fw).all() and np.isfinite(bw).all()


# --------------------------------------------------------------------------------------------
# temporal blending
# --------------------------------------------------------------------------------------------
def _gt_warping_error(outputs, bw):
    h, w = outputs[0].shape[:2]
    xx, yy = np.meshgrid(np.arange(w), np.arange(h))
    valid = (xx + bw[..., 0] >= 0) & (yy + bw[..., 1] >= 0) & (xx + bw[..., 0] <= w - 1) & (yy + bw[..., 1] <= h - 1)
    meter = WarpingErrorMeter()
    for a, b in zip(outputs, outputs[1:]):
        meter.update(a, b, bw, valid)
    return meter.value


def test_blending_lowers_warping_error_and_keeps_fidelity():
    frames, bw = shift_clip(n=16, h=64, w=96, dx=1.5, dy=0.5)
    reference = [transform(f) for f in frames]
    per_frame = list(VideoTranslator(Flicker(), temporal=0.0).translate_frames(frames))
    blended = list(VideoTranslator(Flicker(), temporal=0.8).translate_frames(frames))
    assert all(np.array_equal(a, Flicker()(frames[0])) for a in (per_frame[0], blended[0]))  # same draws
    e_frame, e_blend = _gt_warping_error(per_frame, bw), _gt_warping_error(blended, bw)
    assert e_blend < 0.25 * e_frame, (e_frame, e_blend)
    assert video_psnr(blended, reference) > video_psnr(per_frame, reference) + 2
    # the metric with estimated flow agrees
    assert warping_error(blended, frames) < 0.5 * warping_error(per_frame, frames)


def test_scene_cut_resets_the_blend():
    a, _ = shift_clip(n=4, seed=0)
    b, _ = shift_clip(n=3, seed=5)
    b = [(255 - f) // 2 + 40 for f in b]  # another shot
    vt = VideoTranslator(Flicker(), temporal=0.8)
    results = list(vt.iter_results(a + b))
    assert [r.cut for r in results] == [True, False, False, False, True, False, False]
    cut = results[4]
    assert np.array_equal(cut.output, cut.per_frame)  # exactly the per-frame output
    assert not np.array_equal(results[5].output, results[5].per_frame)  # blending resumed
    # without detection the new shot would be blended with the old one where the mask allows
    vt_never = VideoTranslator(Flicker(), temporal=0.8, scene_cut_threshold=1.0)
    assert not list(vt_never.iter_results(a + b))[4].cut


def test_translator_rejects_bad_settings():
    with pytest.raises(ConfigError, match="temporal"):
        VideoTranslator(Flicker(), temporal=1.0)
    with pytest.raises(Exception, match="callable"):
        VideoTranslator("not a model")


# --------------------------------------------------------------------------------------------
# temporal loss and training
# --------------------------------------------------------------------------------------------
def test_temporal_loss_is_zero_for_an_exact_warp_and_has_gradients():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 24, 32) * 2 - 1
    flow, valid = random_affine_flow(2, 24, 32, max_shift=2.0, max_rotate=3.0, max_scale=0.05)
    moved = warp_tensor(x, flow)
    assert temporal_loss(moved, x, flow, valid).item() < 1e-6
    other = (moved + 0.1).requires_grad_(True)
    loss = temporal_loss(other, x, flow, valid)
    loss.backward()
    assert loss.item() == pytest.approx(0.1, abs=1e-4) and other.grad.abs().sum() > 0
    # valid excludes the pixels brought in from outside the frame
    assert valid.min().item() == 0 and valid.mean().item() > 0.5


def test_warps_follow_a_known_flow():
    """out[y, x] = x[y + dy, x + dx] for a constant flow (dx, dy) = (2, 1): checked against plain
    slicing, for the torch warp (training) and the OpenCV one (video), and for the temporal loss."""
    torch.manual_seed(0)
    h, w, dx, dy = 12, 16, 2, 1
    x = torch.rand(2, 3, h, w)
    flow = torch.zeros(2, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy  # channel 0 is x, channel 1 is y
    out = warp_tensor(x, flow)
    assert torch.allclose(out[..., : h - dy, : w - dx], x[..., dy:, dx:], atol=1e-6)
    img = (x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    bw = np.zeros((h, w, 2), np.float32)
    bw[..., 0], bw[..., 1] = dx, dy
    assert np.array_equal(warp(img, bw)[: h - dy, : w - dx], img[dy:, dx:])
    # the temporal loss: an output that is the previous one moved by the flow costs nothing ...
    prev = torch.rand(2, 3, h, w)
    cur = torch.zeros_like(prev)
    cur[..., : h - dy, : w - dx] = prev[..., dy:, dx:]
    valid = torch.zeros(2, 1, h, w)
    valid[..., : h - dy, : w - dx] = 1
    assert temporal_loss(cur, prev, flow, valid).item() < 1e-6
    # ... and the same flow with x and y swapped, or its sign flipped, does cost
    assert temporal_loss(cur, prev, flow.flip(1), valid).item() > 0.1
    assert temporal_loss(cur, prev, -flow, valid).item() > 0.1
    # the training warps: without rotation or zoom a uniform shift, valid exactly where it stays inside
    g = torch.Generator().manual_seed(0)
    flow, valid = random_affine_flow(4, h, w, max_shift=3.0, max_rotate=0.0, max_scale=0.0, generator=g)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    for i in range(4):
        fx, fy = flow[i, 0, 0, 0], flow[i, 1, 0, 0]
        assert torch.allclose(flow[i, 0], fx.expand(h, w), atol=1e-5) and torch.allclose(flow[i, 1], fy.expand(h, w), atol=1e-5)
        inside = (xs + fx >= 0) & (xs + fx <= w - 1) & (ys + fy >= 0) & (ys + fy <= h - 1)
        assert torch.equal(valid[i, 0].bool(), inside)
    assert (flow[:, 0, 0, 0] - flow[:, 1, 0, 0]).abs().max() > 0.1  # x and y drawn apart


#: every registered task with a temporal loss option
TEMPORAL_TASKS = [t for t in TASKS if hasattr(get_task(t).Config(), "lambda_temporal")]


@pytest.mark.parametrize("task_name", TEMPORAL_TASKS)
def test_temporal_term_moves_the_generator(tiny, task_name):
    """The same step from the same weights and random stream, with and without the temporal term:
    the term is in the total loss (loss_G grows by lambda * G_temporal) and changes G's update."""
    from torch.utils.data import DataLoader

    from imtranslate.data import build_dataset, check_dataset
    from imtranslate.tasks import get_task

    runs = {}
    for lam in (0.0, 10.0):
        cfg = tiny(task_name, extra=[f"model.lambda_temporal={lam}"])
        check_dataset(cfg.data)
        batch = next(iter(DataLoader(build_dataset(cfg.data, "train", seed=0), batch_size=2)))
        torch.manual_seed(0)
        task = get_task(task_name)(cfg, "cpu")
        task.on_step_start(0)
        torch.manual_seed(1)
        logs = task.train_step(task.to_device(batch), 0)
        runs[lam] = logs, [p.detach().clone() for p in task.generator.parameters()]
    (plain, g_plain), (temporal, g_temporal) = runs[0.0], runs[10.0]
    assert "G_temporal" not in plain and temporal["G_temporal"] > 0
    assert temporal["loss_D"] == pytest.approx(plain["loss_D"], rel=1e-5)
    assert temporal["loss_G"] - plain["loss_G"] == pytest.approx(10.0 * temporal["G_temporal"], rel=1e-3, abs=1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(g_plain, g_temporal)), "the temporal term did not change G"


@pytest.mark.parametrize("task_name", ["pix2pix", "multires", "pix2pixhd"])
def test_train_step_with_temporal_loss(tiny, task_name):
    from torch.utils.data import DataLoader

    from imtranslate.data import build_dataset, check_dataset
    from imtranslate.tasks import get_task

    cfg = tiny(task_name, extra=["model.lambda_temporal=10"])
    check_dataset(cfg.data)
    batch = next(iter(DataLoader(build_dataset(cfg.data, "train", seed=0), batch_size=2)))
    task = get_task(task_name)(cfg, "cpu")
    task.on_step_start(0)  # staged tasks: the first (coarsest) stage, output coarser than the input
    logs = task.train_step(task.to_device(batch), 0)
    assert "G_temporal" in logs and math.isfinite(logs["G_temporal"]) and logs["G_temporal"] >= 0
    plain = get_task(task_name)(tiny(task_name), "cpu").train_step(task.to_device(batch), 0)
    assert "G_temporal" not in plain
    with pytest.raises(ConfigError, match="lambda_temporal"):
        get_task(task_name).check_config(tiny(task_name, extra=["model.lambda_temporal=-1"]))


# --------------------------------------------------------------------------------------------
# the command line, end to end
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def contour_ckpt(tmp_path_factory):
    """A tiny pix2pix trained in seconds on synthetic contour drawings (grey picture inputs)."""
    tmp = tmp_path_factory.mktemp("pix2pix_contour")
    assert main(["train", *tiny_overrides("pix2pix", tmp, steps=2, **{"data.synthetic.input": "contour"})]) == 0
    return next((tmp / "runs").iterdir()) / "checkpoints" / "last.safetensors"


def test_cli_video_end_to_end(tmp_path, contour_ckpt, capsys):
    frames, _ = shift_clip(n=10, h=48, w=64)
    clip = write_clip(tmp_path / "clip.mp4", frames, fps=24, audio_seconds=0.4)
    out = tmp_path / "out.mp4"
    assert main(["video", str(contour_ckpt), str(clip), "-o", str(out), "--report", "--quiet",
                 "--flow", "dis-fast", "--temporal", "0.8"]) == 0
    text = capsys.readouterr().out
    assert "warping error, per-frame output" in text and "warping error, blended output" in text
    assert "PSNR blended vs per-frame output" in text and "10 frame(s) 64x48" in text
    info = open_video(out).info
    assert info.size == (64, 48) and info.fps == 24 and info.has_audio
    assert len(list(open_video(out))) == 10
    # frame folders out, the Python API the same way
    vt = VideoTranslator.from_checkpoint(contour_ckpt, device="cpu", temporal=0.5)
    res = vt.translate_video(clip, tmp_path / "frames", progress=False, report=True)
    assert res["frames"] == 10 and len(list((tmp_path / "frames").glob("*.png"))) == 10
    assert res["audio"].startswith("dropped") and math.isfinite(res["warping_error"])


def test_cli_video_bad_input(tmp_path, contour_ckpt, capsys):
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    assert main(["video", str(contour_ckpt), str(bad), "-o", str(tmp_path / "o.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not_a_video.mp4" in err and "Traceback" not in err


def test_cli_video_refuses_label_map_models(tmp_path, capsys):
    assert main(["train", *tiny_overrides("pix2pix", tmp_path, steps=1)]) == 0  # label-map inputs
    ckpt = next((tmp_path / "runs").iterdir()) / "checkpoints" / "last.safetensors"
    frames, _ = shift_clip(n=2)
    clip = write_clip(tmp_path / "c.mp4", frames)
    assert main(["video", str(ckpt), str(clip), "-o", str(tmp_path / "o.mp4"), "--quiet"]) == 2
    assert "label maps" in capsys.readouterr().err


def test_cuts_between_drawings_are_detected_though_their_colours_stay():
    """Contour frames keep one histogram (white paper, black lines) across a cut: the edge test finds it."""
    from imtranslate.data.synthetic_video import make_clip

    for seed in range(3):
        frames = [np.asarray(f) for f in make_clip(seed, n_frames=8, size=64, cuts=(4,)).contour]
        cuts = [t for t in range(1, 8) if is_scene_cut(frames[t - 1], frames[t])]
        assert cuts == [4], (seed, [round(scene_cut_score(frames[t - 1], frames[t]), 3) for t in range(1, 8)])


def test_flow_smooth_computes_the_flow_on_blurred_frames():
    from imtranslate.data.synthetic_video import make_clip
    from imtranslate.infer.flow import flow_guide, is_drawing

    c = make_clip(0, 3, 32, split="test")
    assert is_drawing(c.contour[0]) and not is_drawing(c.photo[0])
    g = flow_guide(c.contour[0], 2.0)
    assert g.dtype == np.uint8 and g.shape == (32, 32) and 0 < g.std() < np.asarray(c.contour[0], np.float32).std()
    vt = VideoTranslator(lambda f: f, flow="dis-fast", flow_smooth=2.0)
    a, b = vt.flow_frames(c.contour[0], c.contour[1])
    assert np.array_equal(a, g) and np.array_equal(b, flow_guide(c.contour[1], 2.0))
    bw, valid = vt.flow_and_mask(c.contour[0], c.contour[1])  # the flow of the blurred pair
    fw_ref, bw_ref = build_flow("dis-fast").estimate_both(a, b)
    assert np.allclose(bw, bw_ref) and np.array_equal(valid, ~occlusion_mask(fw_ref, bw_ref, a, b))
    # auto: drawings blurred by 2 px, photos untouched (so their output is exactly as with 0)
    auto = VideoTranslator(lambda f: f, flow="dis-fast", flow_smooth="auto")
    assert np.array_equal(auto.flow_frames(c.contour[0], c.contour[1])[0], g)
    assert auto.flow_frames(c.photo[0], c.photo[1])[0] is c.photo[0]
    outs = [list(VideoTranslator(Flicker(), flow="dis-fast", flow_smooth=s).translate_frames(c.photo))
            for s in ("auto", 0)]
    assert all(np.array_equal(x, y) for x, y in zip(*outs))
    for bad in (-1, "blur", float("nan")):
        with pytest.raises(ConfigError, match="flow smoothing"):
            VideoTranslator(Flicker(), flow_smooth=bad)


def test_cli_video_flow_smooth(tmp_path, contour_ckpt, capsys):
    frames, _ = shift_clip(n=4, h=32, w=32)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f[..., ::-1])
    assert main(["video", str(contour_ckpt), str(folder), "-o", str(tmp_path / "out"), "--quiet",
                 "--flow", "dis-fast", "--flow-smooth", "auto"]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
    assert main(["video", str(contour_ckpt), str(folder), "-o", str(tmp_path / "o2"), "--quiet",
                 "--flow-smooth", "lots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "flow smoothing" in err and "Traceback" not in err
