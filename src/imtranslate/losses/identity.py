"""Identity similarity loss: ``1 - cos(embed(enhanced), embed(real))`` per picture, averaged.

``embed`` is a frozen face-recognition net (``nets/face_recog.py``'s ArcFace IResNet); the
gradient flows through it into the enhanced face only. Identical faces give exactly 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def identity_similarity(emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of embeddings (B, D) -> (B,)."""
    return F.cosine_similarity(emb_a.float(), emb_b.float(), dim=1, eps=1e-8)


def identity_loss(net, enhanced: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Unweighted mean of ``1 - cos`` between ``net``'s embeddings of ``enhanced`` and ``real``."""
    with torch.no_grad():
        target = net(real)
    return (1.0 - identity_similarity(net(enhanced), target)).mean()
