"""Tasks: one file per method, registered by name.

``pix2pix``   — U-Net + PatchGAN, L1 + GAN                      (tasks/pix2pix.py)
``pix2pixhd`` — global generator + local enhancer, multi-scale D,
                feature matching, VGG loss, instance features     (tasks/pix2pixhd.py)
``multires``  — the multi-resolution, multi-loss translator (S1)  (tasks/multires.py)
``styleswap`` — style swap's inverse network (S3)                  (tasks/styleswap.py)
"""
from __future__ import annotations

from ..errors import ConfigError

TASKS: dict[str, type] = {}


def register_task(cls):
    TASKS[cls.name] = cls
    return cls


def _load_all():
    # importing the modules registers the tasks
    from . import multires, pix2pix, pix2pixhd, styleswap  # noqa: F401


def get_task(name: str):
    _load_all()
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def task_names() -> list[str]:
    _load_all()
    return sorted(TASKS)
