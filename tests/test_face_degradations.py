"""Typed degradations (data/degradations.py): identity at 0, monotone in the coefficient, seeded."""
from __future__ import annotations

import pytest
import torch

from imtranslate.data.degradations import (DEGRADATION_TYPES, DegradationStep, apply_pipeline, parse_pipeline,
                                           physical)
from imtranslate.data.synthetic_faces import render_face
from imtranslate.errors import ConfigError


@pytest.fixture(scope="module")
def faces():
    imgs = [torch.from_numpy(render_face(s, 48).image).permute(2, 0, 1).float() / 127.5 - 1 for s in (1, 2)]
    return torch.stack(imgs)


@pytest.mark.parametrize("kind", DEGRADATION_TYPES)
def test_identity_at_zero_and_monotone(faces, kind):
    seeds = torch.tensor([11, 12])
    assert torch.equal(apply_pipeline(faces, seeds, [DegradationStep(kind, 0.0)]), faces)
    errs = []
    for c in (0.1, 0.4, 1.0):
        y = apply_pipeline(faces, seeds, [DegradationStep(kind, c)], spread=0.0)
        assert y.shape == faces.shape and y.abs().max() <= 1.0
        errs.append(float((y - faces).abs().mean()))
    assert errs[0] > 0 and errs[0] < errs[1] < errs[2], (kind, errs)
    if kind != "jpeg":  # the weakest coefficient is close to the picture (JPEG at q=87 is also close)
        assert errs[0] < 0.05, (kind, errs)


def test_deterministic_per_picture_and_kernels(faces):
    steps = parse_pipeline("gaussian_blur:0.3,motion_blur:0.3,downscale:0.5:area,gaussian_noise:0.3,"
                           "poisson_noise:0.3,jpeg:0.5,colour_jitter:0.5")
    a = apply_pipeline(faces, torch.tensor([1, 2]), steps)
    assert torch.equal(a, apply_pipeline(faces, torch.tensor([1, 2]), steps))
    assert not torch.equal(a, apply_pipeline(faces, torch.tensor([3, 2]), steps))
    # picture 2 depends only on its own seed, not on the batch around it
    assert torch.equal(a[1:], apply_pipeline(faces[1:], torch.tensor([2]), steps))
    for kernel in ("bicubic", "bilinear", "area", "nearest"):
        y = apply_pipeline(faces, torch.tensor([1, 2]), [DegradationStep("downscale", 1.0, kernel)], spread=0.0)
        assert y.shape == faces.shape  # x8 down and back up
    _, strengths = apply_pipeline(faces, torch.tensor([1, 2]), steps, return_strengths=True)
    assert 0.6 <= strengths[0]["gaussian_blur"] <= 1.2 and 50 <= strengths[0]["jpeg"] <= 95
    # overridden coefficients (the task's adapting ones) win over the steps' own
    assert torch.equal(apply_pipeline(faces, torch.tensor([1, 2]), steps, [0.0] * len(steps)), faces)


def test_ranges_and_errors():
    assert physical("downscale", 0) == 1 and physical("downscale", 1) == 8
    assert physical("jpeg", 1) == 10 and physical("gaussian_blur", 1) == 4
    with pytest.raises(ConfigError, match="unknown degradation"):
        parse_pipeline("blurr:0.3")
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        parse_pipeline("jpeg:1.5")
    with pytest.raises(ConfigError, match="not a number|could not convert"):
        parse_pipeline("jpeg:x")


def test_data_pairs_kind_degrade_cli(tmp_path):
    import json

    from PIL import Image

    from imtranslate.cli import main

    src = tmp_path / "faces"
    src.mkdir()
    for i in range(2):
        Image.fromarray(render_face(i, 48).image).save(src / f"f{i}.png")
    assert main(["data", "pairs", str(src), str(tmp_path / "p"), "--kind", "degrade",
                 "--degradations", "motion_blur:0.5,downscale:0.5:area,jpeg:0.6"]) == 0
    meta = json.loads((tmp_path / "p" / "pairs.json").read_text())
    assert meta["degradations"][1] == ["downscale", 0.5, "area"]
    assert set(meta["degrade"]["f0"]) == {"motion_blur", "downscale", "jpeg"}
    assert (tmp_path / "p" / "A" / "f1.png").is_file()
    assert main(["data", "pairs", str(src), str(tmp_path / "q"), "--kind", "degrade", "--degradations", "blur:2"]) == 2
