"""Perceptual (VGG feature) and style (Gram matrix) losses.

Both need a :class:`imtranslate.nets.VGG19Features` extractor; :class:`VGGLoss` computes the
features of the prediction once and of the target once (without a graph) for both losses.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nets.vgg import VGG19Features

PERCEPTUAL_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
PERCEPTUAL_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)  # pix2pixHD: deeper layers count more
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # Gatys et al.


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C): channel correlations ``F F^T / (C*H*W)``."""
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def _perceptual(fp: dict, ft: dict, layers: Sequence[str], weights: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Weighted sum over layers of the L1 between features."""
    loss = like.new_zeros(())
    for name, w in zip(layers, weights, strict=True):
        loss = loss + w * F.l1_loss(fp[name], ft[name])
    return loss


def _style(fp: dict, ft: dict, layers: Sequence[str], like: torch.Tensor, norm: str = "none") -> torch.Tensor:
    """Mean over layers of the mean squared difference of Gram matrices.

    ``norm="relative"`` divides each image's squared Gram difference by the target Gram's own
    squared norm: the loss no longer depends on the scale of the features, so one loss weight
    serves ImageNet and random VGG weights, and every layer counts alike.
    """
    if not layers:
        return like.new_zeros(())
    per_layer = []
    for n in layers:
        gp, gt = gram_matrix(fp[n]), gram_matrix(ft[n])
        if norm == "relative":
            err = (gp - gt).pow(2).sum((1, 2)) / gt.pow(2).sum((1, 2)).clamp_min(1e-12)  # (B,)
            per_layer.append(err.mean())
        else:
            per_layer.append(F.mse_loss(gp, gt))
    return torch.stack(per_layer).mean()


class VGGLoss(nn.Module):
    """``forward(pred, target)`` -> ``{"perceptual": scalar, "style": scalar}`` (unweighted).

    * perceptual: ``sum_l w_l * L1(VGG_l(pred), VGG_l(target))`` over ``perceptual_layers``
      with ``perceptual_weights`` (pix2pixHD's VGG loss; it weights it by 10 in the total).
    * style: mean over ``style_layers`` of the MSE between Gram matrices (normalised by
      C*H*W, so values are small: weights of 1e2..1e4 are usual), or with
      ``style_norm="relative"`` the Gram difference relative to the target's Gram (scale-free).

    Pictures are in [-1, 1]. The target's features are computed under ``torch.no_grad``.
    An empty layer tuple turns that loss off (it is then 0). The extractor must provide every
    layer asked for. It is a frozen submodule: exclude it from what you checkpoint.
    """

    def __init__(
        self,
        extractor: VGG19Features,
        *,
        perceptual_layers: Sequence[str] = PERCEPTUAL_LAYERS,
        perceptual_weights: Sequence[float] = PERCEPTUAL_WEIGHTS,
        style_layers: Sequence[str] = STYLE_LAYERS,
        style_norm: str = "none",
    ):
        super().__init__()
        if style_norm not in ("none", "relative"):
            raise ValueError(f"style_norm must be 'none' or 'relative', got {style_norm!r}")
        self.style_norm = style_norm
        if len(perceptual_layers) != len(perceptual_weights):
            raise ValueError(
                f"perceptual_layers and perceptual_weights must have the same length, "
                f"got {len(perceptual_layers)} and {len(perceptual_weights)}"
            )
        missing = sorted((set(perceptual_layers) | set(style_layers)) - set(extractor.layers))
        if missing:
            raise ValueError(f"the VGG extractor does not provide layer(s) {missing}; it has {extractor.layers}")
        self.extractor = extractor
        self.perceptual_layers = tuple(perceptual_layers)
        self.perceptual_weights = tuple(perceptual_weights)
        self.style_layers = tuple(style_layers)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        fp = self.extractor(pred)
        with torch.no_grad():
            ft = self.extractor(target)
        return {
            "perceptual": _perceptual(fp, ft, self.perceptual_layers, self.perceptual_weights, pred),
            "style": _style(fp, ft, self.style_layers, pred, self.style_norm),
        }


def perceptual_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    extractor: VGG19Features,
    *,
    layers: Sequence[str] = PERCEPTUAL_LAYERS,
    weights: Sequence[float] = PERCEPTUAL_WEIGHTS,
) -> torch.Tensor:
    """The perceptual part of :class:`VGGLoss` alone."""
    return VGGLoss(extractor, perceptual_layers=layers, perceptual_weights=weights, style_layers=())(pred, target)[
        "perceptual"
    ]


def style_loss(
    pred: torch.Tensor, target: torch.Tensor, extractor: VGG19Features, *, layers: Sequence[str] = STYLE_LAYERS
) -> torch.Tensor:
    """The style (Gram matrix) part of :class:`VGGLoss` alone."""
    return VGGLoss(extractor, perceptual_layers=(), perceptual_weights=(), style_layers=layers)(pred, target)["style"]
