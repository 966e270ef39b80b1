"""Losses. Each returns an UNWEIGHTED scalar; the weights live in the task's config.

* :class:`GANLoss` (``lsgan`` | ``vanilla`` | ``hinge``): ``d_loss(real, fake)``, ``g_loss(fake)``
  on discriminator outputs ``list[list[Tensor]]``.
* :func:`feature_matching_loss` (pix2pixHD) on the same discriminator outputs.
* :func:`l1_loss`, :func:`pyramid_l1` (one L1 per pyramid level, averaged).
* :class:`VGGLoss` (perceptual + style in one VGG pass), :func:`perceptual_loss`,
  :func:`style_loss`, :func:`gram_matrix`.
* :func:`tv_loss`.
* :func:`temporal_loss` — masked L1 between an output and the flow-warped previous output;
  :func:`flow_loss` — masked L1 between flows (vid2vid).
* :class:`DistillLoss`, :func:`output_distill`, :func:`feature_distill`, :class:`FeatureTaps` —
  output + intermediate-feature distillation from a teacher (1x1 adapters where widths differ).
* :func:`identity_loss` — ``1 - cos`` of a face-recognition net's embeddings (enhanced vs real).
"""
from __future__ import annotations

from .distill import DistillLoss, FeatureTaps, feature_distill, feature_layers, layer_channels, output_distill
from .feature_matching import feature_matching_loss
from .identity import identity_loss, identity_similarity
from .gan import GAN_MODES, GanMode, GANLoss
from .perceptual import VGGLoss, gram_matrix, perceptual_loss, style_loss
from .pixel import l1_loss, pyramid_l1
from .temporal import flow_loss, temporal_loss
from .tv import tv_loss

__all__ = [
    "GANLoss", "GAN_MODES", "GanMode", "feature_matching_loss", "l1_loss", "pyramid_l1",
    "VGGLoss", "gram_matrix", "perceptual_loss", "style_loss", "tv_loss", "temporal_loss", "flow_loss",
    "identity_loss", "identity_similarity",
    "DistillLoss", "FeatureTaps", "feature_distill", "feature_layers", "layer_channels", "output_distill",
]
