"""Inference-only rewrites of a generator that compute the same function faster.

``fold_batchnorm``: a batch-norm layer in eval mode is an affine map per channel, so it can be
folded into the convolution right before it (scale the weights, shift the bias). That removes
one full read and write of every normalised activation map; the outputs agree with the unfolded
net to float rounding (~1e-6).

``inference_channels_last``: the memory format a predictor runs a generator in.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def _fold(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
    w = conv.weight
    if isinstance(conv, nn.ConvTranspose2d):  # weight (C_in, C_out / groups, k, k)
        w.mul_(scale.view(1, -1, 1, 1))
    else:  # weight (C_out, C_in / groups, k, k)
        w.mul_(scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    new_bias = bias * scale + shift
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)


def fold_batchnorm(net: nn.Module) -> int:
    """Fold every ``Conv -> BatchNorm`` pair inside Sequentials (in place); returns how many.

    Only for inference: the net must be in eval mode and stay there.
    """
    if net.training:
        raise ValueError("fold_batchnorm is for eval-mode nets (it bakes in the running statistics)")
    n = 0
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if (isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d)
                    and bn.track_running_stats and conv.groups == 1):
                _fold(conv, bn)
                seq._modules[b] = nn.Identity()
                n += 1
    return n


def inference_channels_last(G: nn.Module, train_cfg, device) -> bool:
    """NHWC for inference: as ``train.channels_last`` says, except that ``auto`` on the CPU also
    takes it for nets that declare ``cpu_inference_channels_last`` (measured faster there: the
    pix2pix U-Net-256, 0.129 -> 0.091 s per image; for pix2pixHD and the multi-resolution
    generator NHWC was as slow or slower on this CPU, and for training it was slower for all)."""
    from ..config import use_channels_last

    if use_channels_last(train_cfg, device):
        return True
    return (train_cfg.channels_last == "auto" and torch.device(device).type == "cpu"
            and bool(getattr(G, "cpu_inference_channels_last", False)))
