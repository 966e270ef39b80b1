"""Output scale: a generator whose output is ``scale`` times its input goes through the predictor,
the tiling engine, ONNX export, video translation and the paired transforms at that scale.

The nets in this file are test-only (a stride-2 conv then a pixel shuffle); they are registered
for this module only, so the registry tests still see exactly the package's nets.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import tiny_overrides
from imtranslate.tasks import load_config
from imtranslate.data import input_channels
from imtranslate.data.transforms import PairedTransform
from imtranslate.errors import DataError
from imtranslate.infer.predictor import Predictor
from imtranslate.infer.tiling import TilePlan, compare_outputs, probe_input, tile_translate
from imtranslate.nets import NETS, build_net, register_net
from imtranslate.nets.registry import init_config
from imtranslate.ops import as_ratio, crop_to, pad_to_multiple, scale_size

LEVEL = 1 / 255  # one 8-bit grey level in [0, 1] units


class TinySR(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, scale H, scale W): pads to a multiple of 2, a stride-2 conv,
    two convs, a pixel shuffle by ``2 * scale``, tanh, and the crop back to ``scale`` x the input."""

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, scale: int = 2, width: int = 8):
        super().__init__()
        self.config = init_config(locals())
        self.multiple = 2
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, out_channels * (2 * scale) ** 2, 3, padding=1),
            nn.PixelShuffle(2 * scale), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return crop_to(self.body(pad_to_multiple(x, self.multiple)), x.shape[-2:], self.scale)


@pytest.fixture(scope="module", autouse=True)
def tiny_sr():
    register_net("tiny_sr")(TinySR)
    yield
    NETS.pop("tiny_sr")


def sr_predictor(tmp_path, scale: int, extra=()) -> Predictor:
    torch.manual_seed(0)
    cfg = load_config(None, tiny_overrides("pix2pix", tmp_path, 2) + list(extra))
    G = build_net("tiny_sr", in_channels=input_channels(cfg.data), out_channels=cfg.data.output_channels,
                  scale=scale)
    with torch.no_grad():  # larger weights than the default init: outputs that vary, tile borders that show
        for m in G.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(3)
    return Predictor(G, cfg, device="cpu")


def scene(p: Predictor, h: int, w: int, seed: int = 3) -> torch.Tensor:
    return probe_input(input_channels(p.cfg.data), h, w, p.read_mode == "label", seed=seed)


# ---- the helpers ---------------------------------------------------------------------------------
def test_ratio_and_crop_back_at_a_scale():
    assert as_ratio(4) == (4, 1) and as_ratio(Fraction(1, 4)) == (1, 4) and as_ratio(0.25) == (1, 4)
    assert scale_size(37, 4) == 148 and scale_size(37, Fraction(1, 4)) == 10  # rounded up
    with pytest.raises(ValueError, match="positive"):
        as_ratio(0)
    x = torch.arange(2 * 3 * 7 * 9, dtype=torch.float32).view(2, 3, 7, 9)
    padded = pad_to_multiple(x, 4)
    assert padded.shape[-2:] == (8, 12) and torch.equal(padded[..., :7, :9], x)
    assert torch.equal(padded[..., 7, :9], x[..., 5, :])  # reflected, not zero
    assert crop_to(padded, (7, 9)).shape[-2:] == (7, 9)
    big = torch.zeros(1, 1, 32, 48)
    assert crop_to(big, (7, 9), 4).shape[-2:] == (28, 36)
    assert crop_to(big, (8, 12), 4) is big  # nothing cut: the tensor itself (no slice in a trace)


def test_every_generator_declares_its_scale():
    from test_nets import TINY

    for name in ("unet", "resnet", "pix2pixhd", "pix2pixhd_encoder", "multires"):
        assert build_net(name, **TINY[name]).scale == 1, name
    net = build_net("style_inverse", in_channels=8, n_up=2, ngf=4, depth=3)
    assert net.scale == 4 and net.multiple == 1
    assert net(torch.randn(1, 8, 5, 7)).shape[-2:] == (20, 28)


# ---- the predictor -------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [2, 4])
def test_predictor_output_is_scale_times_the_input_at_odd_sizes(scale, tmp_path):
    p = sr_predictor(tmp_path, scale)
    assert p.scale == scale and p.multiple == 2
    for h, w in ((37, 45), (31, 64), (5, 3)):
        A = scene(p, h, w)
        out = p.translate_tensor(A, tile=0)
        assert out.shape == (1, 3, scale * h, scale * w), (h, w)
        # the crop keeps the part of the padded output that belongs to the input, unmoved
        ref = p.G.body(pad_to_multiple(A, 2))[..., : scale * h, : scale * w]
        assert torch.equal(out, ref)
    # PIL in -> PIL out, scale x the size
    from PIL import Image

    label = (np.arange(23 * 17).reshape(23, 17) % 4).astype(np.uint8)
    img = p(Image.fromarray(label))
    assert img.size == (17 * scale, 23 * scale)


def test_tiled_matches_untiled_at_scale_4(tmp_path):
    p = sr_predictor(tmp_path, 4)
    A = scene(p, 59, 71)
    ref = p.translate_tensor(A, tile=0)
    out = p.translate_tensor(A, tile=32, overlap=16)
    assert out.shape == ref.shape == (1, 3, 236, 284)
    plan = TilePlan.make(59, 71, 32, 16, p.multiple)
    assert plan.n_tiles >= 9
    out_plan = plan.scaled(4)
    assert out_plan.xs == [(4 * a, 4 * b) for a, b in plan.xs]
    c = compare_outputs(out, ref, out_plan)
    assert c["mean"] <= 0.05 * LEVEL and c["max"] <= 2 * LEVEL, c
    assert c["seam_step"] <= 0.05 * LEVEL, c
    # the seams are real without the cross-fade: tiles that overlap but are simply cut in the middle
    hard = tile_translate(p._tile_fn({}), A, 32, 0, p.multiple, scale=4)  # no overlap: every border shows
    assert compare_outputs(hard, ref, out_plan)["max"] > 20 * LEVEL


def test_tiling_engine_serves_a_shrinking_net():
    # a 4x average pool is a net of scale 1/4: tiles must start and end on multiples of 4
    x = torch.randn(1, 2, 64, 52)

    def pool(t):
        return torch.nn.functional.avg_pool2d(t, 4)

    out = tile_translate(pool, x, 24, 8, 4, scale=Fraction(1, 4))
    assert out.shape == (1, 2, 16, 13)
    assert torch.allclose(out, pool(x), atol=1e-6)


def test_memory_model_counts_the_larger_output(tmp_path):
    from imtranslate.infer.tiling import MemoryModel, choose_tiling

    same = MemoryModel(fixed=0, per_pixel=1000, out_channels=3)
    x4 = MemoryModel(fixed=0, per_pixel=1000, out_channels=3, scale=4.0)
    assert x4.output_bytes(1, 100, 100) == 16 * same.output_bytes(1, 100, 100)
    shape, budget = (1, 3, 2048, 2048), 1.5 * 2**30  # the x4 output takes half the budget
    t_same = choose_tiling(same, shape, 32, budget, 0, overlap=64).tile
    t_x4 = choose_tiling(x4, shape, 32, budget, 0, overlap=64).tile
    assert 0 < t_x4 < 0.8 * t_same < 2048
    p = sr_predictor(tmp_path, 4)
    assert p.memory_model().scale == 4.0


# ---- ONNX ------------------------------------------------------------------------------------------
def test_onnx_export_of_a_x2_net_keeps_shape_and_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from imtranslate.infer.export import export_predictor

    p = sr_predictor(tmp_path, 2)
    res = export_predictor(p, tmp_path / "sr.onnx", log=lambda m: None)
    for (b, c, h, w), _ in res["checks"]:
        assert h % 2 or w % 2  # the checks cross the pad and the crop
    s = ort.InferenceSession(str(res["path"]), providers=["CPUExecutionProvider"])
    for h, w in ((51, 37), (64, 90)):
        A = torch.cat([scene(p, h, w, seed=k) for k in range(2)])
        got = s.run(None, {"A": A.numpy()})[0]
        want = p.translate_tensor(A, tile=0).numpy()
        assert got.shape == want.shape == (2, 3, 2 * h, 2 * w)
        assert np.abs(got - want).max() <= 2e-6  # measured 6.9e-7


# ---- video -----------------------------------------------------------------------------------------
def test_video_frames_come_out_at_the_scale_and_still_blend(tmp_path):
    from imtranslate.infer.video_translate import VideoTranslator

    p = sr_predictor(tmp_path, 2, ["data.synthetic.input=contour"])  # picture (grey) inputs
    rng = np.random.default_rng(0)
    base = (rng.random((40, 52, 3)) * 255).astype(np.uint8)
    frames = [np.roll(base, k, axis=1) for k in range(3)]  # a slow pan: no scene cut
    per_frame = [np.asarray(p(f)) for f in frames]
    vt = VideoTranslator(p, flow="dis-fast", temporal=0.5)
    results = list(vt.iter_results(frames, need_flow=True))
    for r, pf in zip(results, per_frame):
        assert r.output.shape == (80, 104, 3)
        assert np.array_equal(r.per_frame, pf)  # the per-frame output is the predictor's own
    assert results[1].flow_bw.shape == (80, 104, 2) and not results[1].cut
    # frames after the first are blended with the warped past, so they differ from the per-frame output
    assert np.abs(results[2].output.astype(int) - results[2].per_frame.astype(int)).mean() > 0.5


# ---- paired transforms -------------------------------------------------------------------------------
def _coords(h, w):
    """An array whose every pixel says where it is: (H, W, 2) int32 (row, column)."""
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([yy, xx], -1).astype(np.int32)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_paired_transform_crops_the_target_at_scale_times_the_same_place(scale):
    h, w = 29, 37
    A = _coords(h, w)
    B = np.repeat(np.repeat(A, scale, axis=0), scale, axis=1)  # B[sy, sx] = A[y, x] (nearest upscale)
    label = (A[..., 0] * 100 + A[..., 1]).astype(np.int64)
    t = PairedTransform(0, 16, train=True, flip=True, scale=scale)
    rng = np.random.default_rng(0)
    tops, flips = set(), set()
    for _ in range(12):
        out = t({"A": A, "B": B, "label": label}, rng, nearest=("label", "B"))
        a, b = out["A"], out["B"]
        assert a.shape == (16, 16, 2) and b.shape == (16 * scale, 16 * scale, 2)
        assert np.array_equal(b, np.repeat(np.repeat(a, scale, axis=0), scale, axis=1))  # same place, same flip
        assert np.array_equal(out["label"], a[..., 0] * 100 + a[..., 1])  # unscaled keys stay at A's size
        tops.add(int(a[0, 0, 0]))
        flips.add(bool(a[0, 0, 1] > a[0, -1, 1]))
    assert len(tops) > 3 and flips == {True, False}  # random positions and flips were exercised


def test_paired_transform_scale_1_is_todays_transform():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    pic = (np.random.default_rng(1).random((40, 50, 3)) * 255).astype(np.uint8)
    old = PairedTransform(36, 32)({"A": pic, "B": pic[..., :1]}, rng_a)
    new = PairedTransform(36, 32, scale=1)({"A": pic, "B": pic[..., :1]}, rng_b)
    assert all(np.array_equal(old[k], new[k]) for k in old)


def test_paired_transform_resizes_the_target_at_the_scale_and_checks_sizes():
    pic = (np.random.default_rng(1).random((40, 50, 3)) * 255).astype(np.uint8)
    big = np.repeat(np.repeat(pic, 2, axis=0), 2, axis=1)
    out = PairedTransform(20, 16, train=False, scale=2)({"A": pic, "B": big})
    assert out["A"].shape == (16, 16, 3) and out["B"].shape == (32, 32, 3)
    with pytest.raises(DataError, match="x2 model"):
        PairedTransform(0, 16, scale=2)({"A": pic, "B": pic}, path="pair.png")
    with pytest.raises(ValueError, match="whole number"):
        PairedTransform(scale=1.5)
