"""Shared fixtures: tiny configs of every task on tiny synthetic data (CPU, seconds).

``tiny_overrides(task, tmp_path)`` / ``tiny_config(task, tmp_path)`` is the one place that knows
how to make each registered task small; every test parametrized over ``TASKS`` (all of
``imtranslate.tasks.task_names()``) goes through it. A newly registered task without an entry
in ``TINY_MODEL`` fails those tests with a message saying so, instead of being left out.

``IMTRANSLATE_NO_SKIP=1`` (set by ``.ci/run``) turns every skip into an error: a missing extra
(onnxruntime, PyAV, FastAPI, a browser) then fails the run instead of silently dropping tests.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, os.cpu_count() or 1))

from imtranslate.tasks import task_names  # noqa: E402

#: every registered task: the parametrized train-step / resume / round-trip / predictor tests run over these
TASKS = task_names()
#: the paired image-to-image tasks (synthetic label map -> photo); tests of paired-only features use these
PAIRED_TASKS = ["multires", "pix2pix", "pix2pixhd"]
ALL_TASKS = PAIRED_TASKS  # the older name, kept for the tests that import it
#: tasks with a discriminator (their logs hold loss_G and loss_D)
GAN_TASKS = ["faceenhance", "multires", "pix2pix", "pix2pixhd", "stylesr"]

# the smallest nets that still exercise every code path of each task
TINY_MODEL = {
    "faceparse": ["model.width=4"],  # the face parser (synthetic faces at data.crop_size=32)
    "multires": ["model.n_levels=3", "model.ngf=4", "model.max_channels=16", "model.n_res_blocks=1",
                 "model.ndf=4", "model.vgg_weights=random", "model.stage_steps=[1,1,1]",
                 "model.style_layers=[relu1_1,relu2_1]"],  # a VGG-19 cut at relu2_1: the deep layers cost 10x
    "pix2pix": ["model.num_downs=5", "model.ngf=4", "model.ndf=4"],
    "pix2pixhd": ["model.ngf=4", "model.n_downsampling=2", "model.n_blocks=1", "model.n_blocks_local=1",
                  "model.ndf=4", "model.num_d=2", "model.n_layers_d=1", "model.vgg_weights=random",
                  "model.global_fraction=0.25",
                  "model.features=true", "model.n_clusters=2", "data.use_instance=true"],
    "styleswap": ["model.vgg_weights=random", "model.encoder_layer=relu2_1", "model.ngf=4", "model.depth=3",
                  "model.lambda_pixel=1.0"],
    # the stylise + super-resolve task (arriving from its own branch; the options of its tests/test_stylesr.py)
    "stylesr": ["model.ngf=4", "model.n_levels=2", "model.n_blocks=1", "model.ndf=4", "model.n_layers_d=2",
                "model.vgg_weights=random"],
    # the sequential video generator on 3-frame synthetic clips (tests/test_vid2vid.py)
    "vid2vid": ["model.n_frames=3", "model.ngf=4", "model.n_downsampling=2", "model.n_blocks=1", "model.flow_ngf=4",
                "model.flow_downsampling=2", "model.flow_blocks=1", "model.ndf=4", "model.ndf_video=4",
                "model.n_layers_d=1", "model.num_d=1", "model.num_d_video=1", "model.lambda_vgg=0",
                "model.lambda_l1=1", "data.synthetic.input=contour"],
    # face enhancement (tests/test_face*.py): tiny widths, a random identity net, adaptation every step
    "faceenhance": ["model.widths=[4,8,8]", "model.latent_dim=8", "model.d_widths=[4,8]", "model.vgg_weights=random",
                    "model.perceptual_layers=[relu1_1]", "model.identity=random", "model.adapt_every=1"],
}


def _style_pictures(folder, n: int, seed: int, sizes=((36, 40), (40, 34), (34, 34))):
    """Small colour pictures with gradients and noise (content or style for styleswap)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        y, x = np.mgrid[:h, :w]
        base = np.stack([(x * (i + 2) * 5) % 256, (y * 7 + 30 * i) % 256, ((x + y) * 3) % 256], -1)
        pic = np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"p{i}.png"
        if not path.exists():
            Image.fromarray(pic).save(path)
    return folder


def _data_overrides(task: str, tmp_path) -> list[str]:
    if task == "styleswap":  # unpaired: a content folder (train/ + val/) and a style folder
        content, style = tmp_path / "styledata" / "content", tmp_path / "styledata" / "style"
        _style_pictures(content / "train", 8, 0)
        _style_pictures(content / "val", 2, 2)
        _style_pictures(style, 3, 1)
        return ["data.dataset=unpaired", f"data.root={content}", f"data.style_root={style}", "data.crop_size=32"]
    if task == "faceenhance":  # the built-in synthetic faces; the degraded input is made per batch
        return ["data.dataset=synthetic_faces", f"data.synthetic.root={tmp_path / 'faces'}", "data.synthetic.n_train=8",
                "data.synthetic.n_val=4", "data.synthetic.size=32", "data.crop_size=32"]
    if task == "stylesr":  # HR photos (the synthetic scenes' photos); the LR input is made per batch
        return ["data.dataset=photos", f"data.synthetic.root={tmp_path / 'synthetic'}", "data.synthetic.n_train=8",
                "data.synthetic.n_val=4", "data.synthetic.size=48", "data.crop_size=32"]
    if task == "faceparse":  # the built-in synthetic faces, rendered at the crop size
        return ["data.dataset=synthetic", "data.synthetic.n_train=8", "data.synthetic.n_val=4", "data.crop_size=32"]
    return ["data.dataset=synthetic", f"data.synthetic.root={tmp_path / 'synthetic'}", "data.synthetic.n_train=8",
            "data.synthetic.n_val=4", "data.synthetic.size=32", "data.crop_size=32"]


def tiny_overrides(task: str, tmp_path, steps: int = 4, **extra) -> list[str]:
    """``key=value`` overrides of a tiny, CPU, seconds-long run of ``task`` writing under ``tmp_path``."""
    if task not in TINY_MODEL:
        raise LookupError(f"task {task!r} is registered but has no tiny config: add its smallest options to "
                          f"TINY_MODEL in tests/conftest.py (and its data to _data_overrides if not paired "
                          f"synthetic), so the tests parametrized over every task can run it")
    o = [f"task={task}", *_data_overrides(task, tmp_path),
         f"train.steps={steps}", "train.batch_size=2", "train.log_every=1", "train.val_every=0",
         "train.ckpt_every=2", "train.tensorboard=false", "train.progress=false", "train.image_every=0",
         f"train.out_dir={tmp_path / 'runs'}", "train.ema_decay=0.9", "train.device=cpu"]
    o += TINY_MODEL[task]
    o += [f"{k}={v}" for k, v in extra.items()]
    return o


def tiny_config(task: str, tmp_path, steps: int = 4, extra=()):
    """The resolved Config of :func:`tiny_overrides` (plus ``extra`` overrides)."""
    from imtranslate.tasks import load_config

    return load_config(None, tiny_overrides(task, tmp_path, steps) + list(extra))


@pytest.fixture
def tiny(tmp_path):
    """``tiny("multires", steps=4)`` -> a resolved Config."""
    def make(task, steps=4, extra=()):
        return tiny_config(task, tmp_path, steps, extra)

    return make


# --------------------------------------------------------------------------------------------
# CI must not pass by skipping
# --------------------------------------------------------------------------------------------
NO_SKIP = os.environ.get("IMTRANSLATE_NO_SKIP", "") not in ("", "0")


def pytest_configure(config):
    config.addinivalue_line("markers", "may_skip(reason): a skip that is not an install failure (e.g. a "
                            "GPU-only test): allowed even with IMTRANSLATE_NO_SKIP set")


def _reason(report) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With IMTRANSLATE_NO_SKIP set, a test skipped at run time (``pytest.skip``: e.g. no browser)
    is reported as failed, with the reason, unless it is marked ``may_skip``."""
    outcome = yield
    report = outcome.get_result()
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail") and not item.get_closest_marker("may_skip"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but IMTRANSLATE_NO_SKIP is set (CI installs every extra): {_reason(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """With IMTRANSLATE_NO_SKIP set, a test module skipped while being collected
    (``pytest.importorskip`` of an extra that does not import) is an error too."""
    outcome = yield
    report = outcome.get_result()
    if NO_SKIP and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped, but IMTRANSLATE_NO_SKIP is set (CI installs every extra): {_reason(report)}"
