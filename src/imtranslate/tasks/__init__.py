"""Tasks: one file per method, registered by name.

``pix2pix``   — U-Net + PatchGAN, L1 + GAN                      (tasks/pix2pix.py)
``pix2pixhd`` — global generator + local enhancer, multi-scale D,
                feature matching, VGG loss, instance features     (tasks/pix2pixhd.py)
``multires``  — the multi-resolution, multi-loss translator (S1)  (tasks/multires.py)
``styleswap`` — style swap's inverse network (S3)                  (tasks/styleswap.py)
``stylesr``   — stylise + super-resolve in one net, x2 / x4 (S4)    (tasks/stylesr.py)
``vid2vid``   — sequential video generator: flow, mask, hallucination,
                image + video D, trained on clips (S6)           (tasks/vid2vid.py)

Resolving a config lives here, not in ``config.py``: only this layer knows which dataclass a
task's ``model:`` section is (``config.py`` stays below the tasks and never imports them).
"""
from __future__ import annotations

from ..config import Config, assemble, check_resume_overrides, load_yaml, merge, parse_overrides
from ..errors import ConfigError

TASKS: dict[str, type] = {}


def register_task(cls):
    TASKS[cls.name] = cls
    return cls


def _load_all():
    # importing the modules registers the tasks
    from . import faceenhance, faceparse, multires, pix2pix, pix2pixhd, styleswap, stylesr, vid2vid  # noqa: F401


def get_task(name: str):
    _load_all()
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def task_names() -> list[str]:
    _load_all()
    return sorted(TASKS)


def resolve(data: dict) -> Config:
    """A raw mapping (YAML + overrides) -> a fully typed and checked :class:`Config`."""
    task_cls = get_task(str((data or {}).get("task", "multires")))
    cfg = assemble(data, task_cls.Config)
    task_cls.check_config(cfg)
    return cfg


def load_config(path=None, overrides=None) -> Config:
    """YAML file (optional) + ``key=value`` overrides -> typed Config."""
    data = load_yaml(path) if path else {}
    return resolve(merge(data, parse_overrides(overrides)))


def resolve_resume(saved: dict, overrides=None) -> Config:
    """The config saved in a checkpoint with ``--resume`` overrides applied.

    Overrides go through the same typed checks as on a new run, and only options that do not
    change what the saved weights mean may be given (:data:`imtranslate.config.RESUMABLE`).
    Nothing is written here, so a bad override can never make a checkpoint unreadable.
    """
    extra = parse_overrides(overrides) if isinstance(overrides, (list, tuple)) else dict(overrides or {})
    check_resume_overrides(extra)
    return resolve(merge(saved, extra))
