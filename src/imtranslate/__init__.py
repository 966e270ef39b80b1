"""imtranslate: generative image-to-image translation.

Quick start::

    import imtranslate
    predictor = imtranslate.load("runs/0001-multires/checkpoints/last.safetensors")
    out = predictor(pil_image)          # PIL in, PIL out, at the input's own size
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import (ImtranslateError, ConfigError, DataError, WeightsMissingError, CheckpointError,  # noqa: E402,F401
                     TrainingDiverged, TrainingInterrupted)
# The subpackage imtranslate.train, imported now: imported later (by the first call of train()),
# Python would bind it over the train() function below, and `imtranslate.train(...)` would stop working.
from . import train as _train_package  # noqa: E402,F401


def load(checkpoint, **kwargs):
    """Rebuild a predictor from a checkpoint file alone (see :class:`imtranslate.infer.Predictor`)."""
    from .infer.predictor import Predictor

    return Predictor.from_checkpoint(checkpoint, **kwargs)


def train(config=None, overrides=None, *, resume=None, **kwargs):
    """Train from a YAML config path (or built-in config name's file) and/or ``key=value``
    overrides; returns the run folder. ``resume=RUN`` continues a run exactly (``overrides``
    then may change only what :data:`imtranslate.config.RESUMABLE` lists)."""
    from .tasks import load_config
    from .train.loop import train as _train

    if resume is not None:
        return _train(None, resume=resume, overrides=overrides, **kwargs)
    from .cli import _find_config

    cfg = load_config(_find_config(str(config)) if config else None, overrides)  # a path or a built-in name
    return _train(cfg, **kwargs)


def load_stylesr(checkpoint, **kwargs):
    """A ``stylesr`` net (stylise and up-scale in one pass) with SPEC S3's per-channel blend:
    ``load_stylesr(ckpt)(photo, blend=(a, b, c))`` (see :class:`imtranslate.infer.stylize.StyleSRBlender`)."""
    from .infer.stylize import StyleSRBlender

    return StyleSRBlender.from_checkpoint(checkpoint, **kwargs)


def load_stylizer(inverse=None, **kwargs):
    """A style-swap stylizer (SPEC S3) from a ``styleswap`` checkpoint (the inverse network), or
    without one for optimisation-based inversion (see :class:`imtranslate.infer.stylize.Stylizer`)."""
    from .infer.stylize import Stylizer

    if inverse is not None:
        return Stylizer.from_checkpoint(inverse, **kwargs)
    return Stylizer(None, **kwargs)


def stylize(content, style, inverse=None, *, blend=0.0, preserve_color=False, vgg_weights=None, device="auto",
            **options):
    """Stylise ``content`` with ``style`` and blend per channel (0 = stylised, 1 = content; one weight or
    (a, b, c) for R, G, B). ``inverse`` is a styleswap checkpoint; without it pass ``optimize=True``.
    Other ``options``: patch, stride, fast, optimize, steps. PIL/path in -> PIL out, ndarray -> ndarray."""
    kwargs = {"device": device}
    if vgg_weights is not None or inverse is None:
        kwargs["vgg_weights"] = vgg_weights or "imagenet"
    return load_stylizer(inverse, **kwargs)(content, style, blend=blend, preserve_color=preserve_color, **options)


def compress(checkpoint, out, **kwargs):
    """Prune in rounds (quality-gated, distilled), optionally make separable and int8; returns
    ``(new checkpoint path, per-round table)`` (see :func:`imtranslate.compress.compress`)."""
    from .compress import compress as _compress

    return _compress(checkpoint, out, **kwargs)


def load_restorer(*, sr="none", enhancer="none", parser="landmarks", detector="auto", upscale=2, **options):
    """The face restoration pipeline (SPEC S5): ``load_restorer(enhancer=CKPT)(photo)`` -> a result with
    ``.image`` (uint8), ``.faces``, ``.timings``. ``sr``/``enhancer``/``parser``: checkpoint paths or
    ``none``/``landmarks``; other options as ``imtranslate restore`` (see :class:`imtranslate.infer.restore.Restorer`)."""
    from .infer.restore import Restorer

    return Restorer.from_options(sr=sr, enhancer=enhancer, parser=parser, detector=detector, upscale=upscale,
                                 **options)


def restore(photo, **options):
    """Restore the faces of one photograph (path, PIL image or uint8 array): the restored picture as a
    uint8 array (``upscale`` x its size). Options as :func:`load_restorer`."""
    return load_restorer(**options)(photo).image
