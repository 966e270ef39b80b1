"""vid2vid: animated synthetic clips with exact flow, the sequential generator, streaming
inference, scene cuts, and the CLI path data synthetic-video -> train -> video."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import tiny_overrides

from imtranslate.data.synthetic_video import make_clip
from imtranslate.infer.flow import warp
from imtranslate.ops import warp_tensor
from imtranslate.tasks import load_config
from imtranslate.tasks.vid2vid import generate_clip
from imtranslate.train.stepping import build_task


def test_clip_flow_warps_previous_frame_onto_current_where_visible():
    clip = make_clip(3, n_frames=5, size=48, light=0.0)
    for t in range(1, 5):
        prev, cur = clip.photo[t - 1].astype(np.float32), clip.photo[t].astype(np.float32)
        v = clip.valid[t]
        assert 0.5 < v.mean() < 1.0  # objects move: some pixels are occluded or newly visible
        warped_err = np.abs(warp(prev, clip.flows_bw[t]) - cur).mean(-1)[v].mean()
        still_err = np.abs(prev - cur).mean(-1)[v].mean()
        assert warped_err < 2.0, warped_err  # grey levels: bilinear resampling of the textures only
        assert warped_err < 0.5 * still_err  # and the motion is real
    again = make_clip(3, n_frames=5, size=48, light=0.0)  # deterministic from the seed
    assert all(np.array_equal(a, b) for a, b in zip(clip.photo, again.photo))
    assert not np.array_equal(clip.photo[1], make_clip(4, n_frames=5, size=48, light=0.0).photo[1])


def test_clip_cut_starts_a_new_scene_with_no_valid_flow():
    clip = make_clip(0, n_frames=6, size=32, cuts=[3])
    assert clip.cuts == [3] and not clip.valid[3].any() and not clip.flows_bw[3].any()
    assert np.abs(clip.photo[3].astype(float) - clip.photo[2]).mean() > 10  # another scene
    assert clip.valid[4].mean() > 0.5


def _task(tmp_path, **extra):
    cfg = load_config(None, tiny_overrides("vid2vid", tmp_path, **extra))
    task = build_task(cfg, "cpu")
    ds = type(task).build_dataset(cfg, "train")
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    return cfg, task, batch


def test_shapes_and_a_train_step_on_a_tiny_clip(tmp_path):
    cfg, task, batch = _task(tmp_path)
    b, k, c, h, w = batch["clip_A"].shape
    assert (b, k, c) == (2, 3, 1) and batch["flow"].shape == (2, 3, 2, h, w) and batch["valid"].shape == (2, 3, 1, h, w)
    steps = generate_clip(task.nets["G"], batch["clip_A"], cfg, batch["cut"])
    r = steps[1]
    assert r["out"].shape == (2, 3, h, w) and r["flow"].shape == (2, 2, h, w) and r["mask"].shape == (2, 1, h, w)
    assert (steps[0]["mask"] == 0).all()  # the first frame has no past
    logs = task.train_step(batch, 0)
    assert all(np.isfinite(v) for v in logs.values()) and logs["G_flow"] > 0 and logs["G_warp"] > 0


def test_output_is_the_mask_weighted_sum(tmp_path):
    cfg, task, batch = _task(tmp_path)
    G = task.nets["G"].eval()
    cur, prev = batch["clip_A"][:, 1], batch["clip_A"][:, 0]
    prev_out = torch.rand(2, 3, *cur.shape[-2:]) * 2 - 1
    with torch.no_grad():
        G.flow_head.weight.normal_(0, 0.1)
        G.flow_head.bias[2] = 50.0  # mask logit: mask = 1
        r = G.step(cur, prev, prev_out)
        assert torch.allclose(r["mask"], torch.ones_like(r["mask"]))
        assert torch.allclose(r["out"], warp_tensor(prev_out, r["flow"]), atol=1e-6)  # exactly the warped past
        assert r["flow"].abs().max() > 0
        G.flow_head.bias[2] = -50.0  # mask = 0: the hallucinated frame
        r = G.step(cur, prev, prev_out)
        assert torch.allclose(r["out"], r["hallucinated"], atol=1e-6)
        G.flow_head.bias[2] = 0.0
        r = G.step(cur, prev, prev_out)
        m = r["mask"]
        assert torch.allclose(r["out"], m * r["warped"] + (1 - m) * r["hallucinated"], atol=1e-6)


def test_streaming_equals_clip_inference_and_cuts_reset(tmp_path):
    from imtranslate.infer.vid2vid import Vid2VidStream

    cfg, task, batch = _task(tmp_path)
    G = task.nets["G"].eval()
    with torch.no_grad():
        G.flow_head.weight.normal_(0, 0.1)  # a net whose flow and mask are not trivial
    A = torch.cat([batch["clip_A"][:1], batch["clip_A"][1:]], 1)  # one 6-frame clip: two scenes back to back
    cut = torch.zeros(1, 6, dtype=torch.bool)
    cut[0, 3] = True
    with torch.no_grad():
        clip_out = [r["out"] for r in generate_clip(G, A, cfg, cut)]
        alone = [r["out"] for r in generate_clip(G, A[:, 3:], cfg)]  # the second scene on its own
    stream = Vid2VidStream(G, cfg)
    for t in range(6):
        r = stream.step(A[0, t], cut=bool(cut[0, t]))
        assert torch.allclose(r["out"], clip_out[t], atol=1e-5), t
    for t in range(3):  # after the cut nothing of the first scene remains
        assert torch.allclose(clip_out[3 + t], alone[t], atol=1e-5), t
    with torch.no_grad():
        smeared = [r["out"] for r in generate_clip(G, A, cfg)]  # without the cut the past leaks in
    assert not torch.allclose(smeared[3], alone[0], atol=1e-4)


def test_video_translator_resets_on_a_scene_cut(tmp_path):
    """Frames after a cut come out exactly as if the second shot were translated alone."""
    from imtranslate.infer.predictor import Predictor
    from imtranslate.infer.vid2vid import Vid2VidTranslator

    cfg, task, _ = _task(tmp_path)
    G = task.nets["G"].eval()
    with torch.no_grad():
        G.flow_head.weight.normal_(0, 0.1)
    p = Predictor(G, cfg, optimize=False)
    clip = make_clip(0, n_frames=6, size=32, cuts=[3], split="val")  # photo frames: the histogram sees the cut
    vt = Vid2VidTranslator(p)
    results = list(vt.iter_results(clip.photo))
    assert [r.cut for r in results] == [True, False, False, True, False, False]
    vt.reset()
    alone = list(vt.translate_frames(clip.photo[3:]))
    for r, a in zip(results[3:], alone):
        assert np.array_equal(r.output, a)
    assert not np.array_equal(results[1].output, results[1].per_frame)  # the past is used within a shot


def test_foreground_classes_are_hallucinated_by_their_own_head(tmp_path):
    cfg, task, batch = _task(tmp_path, **{"data.synthetic.input": "label", "model.fg_bg": "true",
                                          "model.fg_classes": "[1,2,3]"})
    assert task.nets["G"].fg_head is not None
    logs = task.train_step(batch, 0)
    assert np.isfinite(logs["loss_G"])
    from imtranslate.errors import ConfigError

    with pytest.raises(ConfigError, match="fg_classes"):
        load_config(None, tiny_overrides("vid2vid", tmp_path, **{"data.synthetic.input": "label", "model.fg_bg": "true"}))


def test_users_clips_dataset_uses_dis_flow(tmp_path):
    from imtranslate.data.synthetic_video import generate_synthetic_video
    from imtranslate.data.video_clips import FolderClips

    root = generate_synthetic_video(tmp_path / "clips", n_train=2, n_val=0, n_frames=6, size=32, videos=False)
    cfg = load_config(None, tiny_overrides("vid2vid", tmp_path, **{"data.dataset": "folders",
                                                                   "data.root": str(root / "train"),
                                                                   "data.a_dir": "contour", "data.b_dir": "photo",
                                                                   "data.input_kind": "grey"}))
    ds = FolderClips(cfg.data, root / "train", 3)
    assert len(ds) == 4  # two 6-frame clips, two 3-frame windows each
    item = ds[0]
    assert item["clip_A"].shape == (3, 1, 32, 32) and item["flow"].shape == (3, 2, 32, 32)
    assert item["valid"][1].mean() > 0.3 and item["flow"][1].abs().max() > 0.5  # DIS found the motion
    from imtranslate.errors import DataError

    (root / "train" / "contour" / "clip_00009").mkdir()  # an input clip without its target
    with pytest.raises(DataError, match="clip_00009.*no target clip"):
        FolderClips(cfg.data, root / "train", 3)


def test_cli_synthetic_video_train_video(tmp_path):
    py = [sys.executable, "-m", "imtranslate.cli"]
    data = tmp_path / "vdata"
    out = subprocess.run(py + ["data", "synthetic-video", str(data), "--n-train", "2", "--n-val", "1", "--frames", "6",
                               "--size", "32", "--cut-every", "3"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    clip = data / "val" / "video" / "clip_00000_contour.mp4"
    assert clip.is_file() and (data / "train" / "photo" / "clip_00001" / "00005.png").is_file()
    gt = np.load(data / "train" / "flow" / "clip_00000.npz")
    assert gt["flow_bw"].shape == (6, 32, 32, 2) and list(gt["cuts"]) == [3]
    overrides = [o for o in tiny_overrides("vid2vid", tmp_path, steps=2) if not o.startswith("task=")]
    out = subprocess.run(py + ["train", "vid2vid_synthetic", *overrides], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    ckpt = next((tmp_path / "runs").glob("*-vid2vid/checkpoints/last.safetensors"))
    video = tmp_path / "out.mp4"
    out = subprocess.run(py + ["video", str(ckpt), str(clip), "-o", str(video), "--report", "--quiet",
                               "--device", "cpu"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert video.is_file() and "learned flow and mask" in out.stdout and "warping error" in out.stdout, out.stdout
