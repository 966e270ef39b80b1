"""Tiled inference: tiled outputs equal untiled ones (no seams), tiles chosen under a budget."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_overrides
from imtranslate.cli import main
from imtranslate.tasks import load_config
from imtranslate.data import input_channels
from imtranslate.infer.predictor import Predictor
from imtranslate.infer.tiling import (TilePlan, TilingError, axis_weights, compare_outputs, memory_in_use, plan_axis,
                                      probe_input, tile_translate)
from imtranslate.tasks import get_task

LEVEL = 1 / 255  # one 8-bit grey level in [0, 1] units

# tiny generators whose receptive field suits ~150 px images (the conftest ones reach ~90 px
# past a tile border, more than such an image can hold); random weights, seeded
SMALL = {"pix2pix": [],
         "pix2pixhd": ["model.n_downsampling=1"],
         "multires": ["model.n_levels=2", "model.n_bottleneck_down=1", "model.stage_steps=[1,1]"]}
TILE = {"pix2pix": 64, "pix2pixhd": 96, "multires": 128}


def small_predictor(task: str, tmp_path) -> Predictor:
    torch.manual_seed(0)
    cfg = load_config(None, tiny_overrides(task, tmp_path, 2) + SMALL[task])
    G = get_task(task)(cfg, "cpu").generator
    extras = None
    if task == "pix2pixhd":  # instance features: cluster centres as a finished run would hold
        g = torch.Generator().manual_seed(0)
        n = cfg.data.synthetic.n_classes
        extras = {"clusters": torch.randn(n, 2, cfg.model.feat_channels, generator=g),
                  "cluster_sizes": torch.ones(n, 2, dtype=torch.long)}
    return Predictor(G, cfg, extras, device="cpu")


def scene(p: Predictor, h: int, w: int, seed: int = 3) -> torch.Tensor:
    return probe_input(input_channels(p.cfg.data), h, w, p.read_mode == "label", seed=seed)


# ---- layout ------------------------------------------------------------------------------------
@pytest.mark.parametrize("length, tile, overlap, align", [(163, 64, 16, 32), (150, 96, 48, 4), (1000, 256, 64, 256),
                                                           (97, 128, 32, 8), (300, 100, 30, 1)])
def test_layout_covers_once_and_weights_sum_to_one(length, tile, overlap, align):
    spans = plan_axis(length, tile, overlap, align)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (s0, e0), (s1, e1) in zip(spans[:-1], spans[1:]):
        assert s1 % align == 0 or tile - overlap < align  # aligned when the stride allows
        assert e0 - s1 >= overlap  # at least the overlap asked for
        assert e0 - s0 == tile
    total = torch.zeros(length, dtype=torch.float64)
    for (s, e), w in zip(spans, axis_weights(spans)):
        total[s:e] += w
        assert w.min() >= 0 and w.max() <= 1
    assert torch.allclose(total, torch.ones_like(total))


# ---- tiled == untiled --------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["pix2pix", "pix2pixhd", "multires"])
def test_tiled_matches_untiled_without_seams(task, tmp_path):
    p = small_predictor(task, tmp_path)
    A = scene(p, 150, 163)  # neither side a multiple of the tile or of the model's multiple
    ref = p.translate_tensor(A, tile=0)
    out = p.translate_tensor(A, tile=TILE[task])
    choice = p.last_tiling
    plan = TilePlan.make(150, 163, choice.tile, choice.overlap, p.multiple)
    assert plan.n_tiles >= 4 and out.shape == ref.shape
    c = compare_outputs(out, ref, plan)
    assert c["mean"] <= LEVEL, c
    # no seam: no jump at tile lines the untiled output lacks, and band lines stay close
    assert c["seam_step"] <= 0.25 * LEVEL, c
    assert c["band_line_max"] <= 2 * LEVEL, c
    if task != "pix2pix":  # instance norm: per-tile statistics would be far off
        naive = tile_translate(p._tile_fn({}), A, choice.tile, choice.overlap, p.multiple, model=None)
        assert compare_outputs(naive, ref, plan)["mean"] > 3 * max(c["mean"], 0.1 * LEVEL)
    # a seam case: neighbouring tiles that disagree by 16 grey levels (+-8, a checkerboard over the
    # tiles, as per-tile errors would). The raised-cosine cross-fade spreads the step over the band;
    # a hard cut in the middle of the overlap puts all of it on one line
    base, delta = p._tile_fn({}), 2 * 8 * LEVEL  # 8 grey levels, in [-1, 1] units

    def disagreeing(t, box):
        i, j = plan_index(plan.ys, box[0]), plan_index(plan.xs, box[2])
        return base(t) + (delta if (i + j) % 2 else -delta)

    step = tile_translate(disagreeing, A, choice.tile, choice.overlap, p.multiple, model=p.G, with_box=True)
    c = compare_outputs(step, ref, plan)
    # measured 0.2-1.0 levels with the cross-fade, 3.3-11 with a hard cut
    assert c["seam_step"] <= 2 * LEVEL, c


def plan_index(spans, start: int) -> int:
    return [s for s, _ in spans].index(start)


def test_streamed_statistics_equal_whole_image_statistics(tmp_path):
    p = small_predictor("pix2pixhd", tmp_path)
    A = scene(p, 150, 163)
    fn = p._tile_fn({})
    ref = p.translate_tensor(A, tile=0)
    whole = tile_translate(fn, A, 96, 48, p.multiple, model=p.G, stats="whole")
    stream = tile_translate(fn, A, 96, 48, p.multiple, model=p.G, stats="stream")
    # streamed sums see tile-border activations in the band only: a small fraction of a level
    assert (whole - stream).abs().mean() / 2 <= 0.1 * LEVEL
    assert (stream - ref).abs().mean() / 2 <= LEVEL
    fast = tile_translate(fn, A, 96, 48, p.multiple, model=p.G, stats="shrunk", stats_scale=2, is_label=True)
    assert fast.shape == ref.shape and torch.isfinite(fast).all()
    # the instance-norm layers are left as they were
    assert all("forward" not in vars(m) for m in p.G.modules())


def test_auto_tiling_under_a_small_budget(tmp_path):
    p = small_predictor("pix2pixhd", tmp_path)
    A = scene(p, 301, 257)  # odd sizes come back unchanged
    mem = p.memory_model()
    untiled = mem.bytes_for(1, 304, 260)
    budget = (memory_in_use(p.device) + 0.4 * untiled) / 2**30
    assert p.translate_tensor(A).shape[-2:] == (301, 257) and p.last_tiling.tile == 0  # default budget
    out = p.translate_tensor(A, max_memory=budget)
    choice = p.last_tiling
    assert 0 < choice.tile < 301 and choice.stats == "stream", choice
    assert out.shape[-2:] == (301, 257)
    ref = p.translate_tensor(A, tile=0)
    assert (out - ref).abs().mean() / 2 <= LEVEL
    with pytest.raises(TilingError, match="max-memory"):
        p.translate_tensor(A, max_memory=memory_in_use(p.device) / 2**30)


def test_translate_cli_tiles(tmp_path, capsys):
    assert main(["train", *tiny_overrides("pix2pix", tmp_path, 2)]) == 0
    ckpt = next((tmp_path / "runs").glob("*/checkpoints/last.safetensors"))
    labels = sorted((tmp_path / "synthetic" / "val" / "label").glob("*.png"))
    big = np.tile(np.array(Image.open(labels[0])), (3, 3))[:91, :77]  # odd, larger than the tiles
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(big).save(src / "big.png")
    for name, extra in (("tiled", ["--tile", "64", "--tile-overlap", "16"]), ("untiled", ["--tile", "0"])):
        assert main(["translate", str(ckpt), str(src), "-o", str(tmp_path / name), "--quiet", *extra]) == 0
    err = capsys.readouterr().err
    assert "big.png: tile size asked for" in err
    tiled = np.asarray(Image.open(tmp_path / "tiled" / "big.png")).astype(int)
    untiled = np.asarray(Image.open(tmp_path / "untiled" / "big.png")).astype(int)
    assert tiled.shape == untiled.shape == (91, 77, 3)
    assert np.abs(tiled - untiled).mean() <= 1.0
    code = main(["translate", str(ckpt), str(src), "-o", str(tmp_path / "x"), "--quiet", "--max-memory", "0.01"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--max-memory" in err and "Traceback" not in err


def test_budget_shrinks_a_measured_overlap_but_keeps_an_asked_one():
    from imtranslate.infer.tiling import MemoryModel, choose_tiling

    mem = MemoryModel(fixed=0, per_pixel=1000, out_channels=3)
    shape, budget = (1, 3, 4096, 4096), 1.5 * 2**30  # room for ~1000 px tiles
    c = choose_tiling(mem, shape, 32, budget, 0, overlap=1024, overlap_measured=True)
    assert 0 < c.tile < 2048 and c.overlap == 8 * (c.tile // 16) and "raise --max-memory" in c.notes[0]
    with pytest.raises(TilingError, match="lower --tile-overlap"):
        choose_tiling(mem, shape, 32, budget, 0, overlap=1024)
    assert choose_tiling(mem, (1, 3, 256, 256), 32, budget, 0).tile == 0  # fits: untiled
