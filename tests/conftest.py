"""Shared fixtures: tiny configs of every task on tiny synthetic scenes (CPU, seconds)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, os.cpu_count() or 1))

# the smallest nets that still exercise every code path of each task
TINY_MODEL = {
    "multires": ["model.n_levels=3", "model.ngf=4", "model.max_channels=16", "model.n_res_blocks=1",
                 "model.ndf=4", "model.vgg_weights=random", "model.stage_steps=[1,1,1]"],
    "pix2pix": ["model.num_downs=5", "model.ngf=4", "model.ndf=4"],
    "pix2pixhd": ["model.ngf=4", "model.n_downsampling=2", "model.n_blocks=1", "model.n_blocks_local=1",
                  "model.ndf=4", "model.num_d=2", "model.n_layers_d=1", "model.vgg_weights=random",
                  "model.global_fraction=0.25",
                  "model.features=true", "model.n_clusters=2", "data.use_instance=true"],
}


def tiny_overrides(task: str, tmp_path, steps: int = 4, **extra) -> list[str]:
    o = [f"task={task}", "data.dataset=synthetic", f"data.synthetic.root={tmp_path / 'synthetic'}",
         "data.synthetic.n_train=8", "data.synthetic.n_val=4", "data.synthetic.size=32", "data.crop_size=32",
         f"train.steps={steps}", "train.batch_size=2", "train.log_every=1", "train.val_every=0",
         "train.ckpt_every=2", "train.tensorboard=false", "train.progress=false", "train.image_every=0",
         f"train.out_dir={tmp_path / 'runs'}", "train.ema_decay=0.9", "train.device=cpu"]
    o += TINY_MODEL[task]
    o += [f"{k}={v}" for k, v in extra.items()]
    return o


@pytest.fixture
def tiny(tmp_path):
    """``tiny("multires", steps=4)`` -> a resolved Config."""
    from imtranslate.tasks import load_config

    def make(task, steps=4, extra=()):
        return load_config(None, tiny_overrides(task, tmp_path, steps) + list(extra))

    return make


ALL_TASKS = ["multires", "pix2pix", "pix2pixhd"]
