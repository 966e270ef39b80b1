"""imtranslate: generative image-to-image translation.

Quick start::

    import imtranslate
    predictor = imtranslate.load("runs/0001-multires/checkpoints/last.safetensors")
    out = predictor(pil_image)          # PIL in, PIL out, at the input's own size
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import ImtranslateError, ConfigError, DataError, WeightsMissingError, CheckpointError  # noqa: E402,F401


def load(checkpoint, **kwargs):
    """Rebuild a predictor from a checkpoint file alone (see :class:`imtranslate.infer.Predictor`)."""
    from .infer.predictor import Predictor

    return Predictor.from_checkpoint(checkpoint, **kwargs)


def train(config=None, overrides=None, **kwargs):
    """Train from a YAML config path and/or ``key=value`` overrides; returns the run folder."""
    from .config import load_config
    from .train.loop import train as _train

    cfg = load_config(config, overrides)
    return _train(cfg, **kwargs)
