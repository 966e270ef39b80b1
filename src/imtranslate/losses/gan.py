"""Adversarial losses on discriminator outputs (``list[list[Tensor]]``, logits last per scale)."""
from __future__ import annotations

import typing
from typing import Literal

import torch
import torch.nn.functional as F

GanMode = Literal["lsgan", "vanilla", "hinge"]  # the adversarial objective
GAN_MODES: tuple[str, ...] = typing.get_args(GanMode)


def _logits(outputs) -> list[torch.Tensor]:
    """The logit map of every scale: the last tensor of each inner list (a bare tensor is one scale)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [scale[-1] for scale in outputs]


class GANLoss:
    """GAN objective in one of three forms, averaged over the discriminator's scales.

    * ``"lsgan"`` (pix2pixHD, CycleGAN): least squares towards 1 (real) and 0 (fake).
    * ``"vanilla"`` (pix2pix): binary cross-entropy on logits; the generator uses the
      non-saturating form (fake labelled real).
    * ``"hinge"``: ``relu(1 - real) + relu(1 + fake)`` for D, ``-fake`` for G.

    ``d_loss`` is the plain sum of its real and fake terms (unweighted: pix2pix and pix2pixHD
    multiply it by 0.5, which is the task's business). Pass ``fake_outputs`` computed from a
    detached generator output to ``d_loss``.
    """

    def __init__(self, mode: str = "lsgan"):
        if mode not in GAN_MODES:
            raise ValueError(f"unknown GAN loss {mode!r}; choose one of {GAN_MODES}")
        self.mode = mode

    def _term(self, logits: torch.Tensor, real: bool, for_d: bool) -> torch.Tensor:
        if self.mode == "lsgan":
            return F.mse_loss(logits, torch.full_like(logits, 1.0 if real else 0.0))
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))
        if not for_d:  # hinge, generator side
            return -logits.mean()
        return F.relu(1 - logits).mean() if real else F.relu(1 + logits).mean()

    def d_loss(self, real_outputs, fake_outputs) -> torch.Tensor:
        """Discriminator loss: real logits pushed up, fake logits pushed down."""
        real, fake = _logits(real_outputs), _logits(fake_outputs)
        terms = [self._term(r, True, True) + self._term(f, False, True) for r, f in zip(real, fake, strict=True)]
        return torch.stack(terms).mean()

    def g_loss(self, fake_outputs) -> torch.Tensor:
        """Generator loss: make the discriminator call the fakes real."""
        return torch.stack([self._term(f, True, False) for f in _logits(fake_outputs)]).mean()

    def __repr__(self) -> str:
        return f"GANLoss(mode={self.mode!r})"
