"""pix2pixHD's feature-matching loss on discriminator features."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_matching_loss(real_outputs, fake_outputs) -> torch.Tensor:
    """L1 between the discriminator's intermediate features on real and on generated inputs.

    ``real_outputs``/``fake_outputs``: ``list[list[Tensor]]`` (scales x layers, logits last,
    which are not matched). Real features are detached. Mean over layers, then over scales.
    """
    per_scale = []
    for real, fake in zip(real_outputs, fake_outputs, strict=True):
        pairs = list(zip(real[:-1], fake[:-1], strict=True))
        if not pairs:
            raise ValueError("feature matching needs discriminator outputs with intermediate features")
        per_scale.append(torch.stack([F.l1_loss(f, r.detach()) for r, f in pairs]).mean())
    return torch.stack(per_scale).mean()
