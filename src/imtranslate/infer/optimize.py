"""Inference-only rewrites of a generator that compute the same function faster.

``fold_batchnorm``: a batch-norm layer in eval mode is an affine map per channel, so it can be
folded into the convolution right before it (scale the weights, shift the bias). That removes
one full read and write of every normalised activation map; the outputs agree with the unfolded
net to float rounding (~1e-6).

``subpixel_transposed_convs``: a stride-2 transposed convolution with a 4x4 kernel and padding 1
(the U-Net's up-sampling layer; the ResNet and pix2pixHD generators use 3x3 kernels, not rewritten) computes each of its four
output phases (even / odd row x even / odd column) as a 2x2 correlation of the input, so it equals
one ordinary 3x3 convolution with four times the output channels followed by a pixel shuffle
(depth-to-space) — exactly, to float rounding. The ordinary convolution has 9/4 of the
multiply-adds but runs on the convolution kernels, which for an image head (3 output channels)
are the faster ones. Measured layer by layer (2 threads, fp32, medians of 15; 128² -> 256²):
16 -> 3 channels 1.17 -> 0.56 ms (NCHW) / 1.42 -> 0.54 ms (NHWC), 32 -> 3 1.38 -> 0.82 / 1.47 ->
0.73 ms, 128 -> 3 1.89 -> 2.30 / 2.02 -> 2.07 ms; every wider output lost (e.g. 32 -> 16 at 64²:
0.25 -> 0.51 ms NHWC, 256 -> 64: 5.7 -> 13.1 ms). So the predictor rewrites only narrow heads
(``SUBPIXEL_MAX_OUT`` / ``SUBPIXEL_MAX_IN``): on a U-Net-256 with ngf 8 (a pruned one's widths)
5.11 -> 4.11 ms per image, none of the layers of the full-width one. In an ONNX file the rewrite
also lets every layer quantise to int8 (onnxruntime's CPU provider has no int8 transposed conv),
but at these widths the int8 file was not faster than the fp32 one with transposed convs
(docs/COMPRESS.md), and onnxruntime ran the rewritten heads slower (U-Net ngf 8: 3.2 -> 4.5 ms),
so export writes the transposed form (:func:`transposed_form`).

``winograd_convs``: wide 3x3 convolutions (>= 256 channels in and out) run Winograd F(2x2, 3x3)
with cached transformed filters where the map size wins (``nets/winograd.py``: pix2pixHD's
residual blocks at 256^2, 1024 channels on 16x16, 1.7-1.9x per layer); the cache costs 16/9 of
those layers' weights in memory.

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


#: 1-D tap maps of a k=4, s=2, p=1 transposed conv: for output phase a, the 3-tap correlation
#: window (input rows i-1, i, i+1) uses these kernel rows (None: no tap)
_PHASE_TAPS = ((3, 1, None), (None, 2, 0))


def subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_in, C_out, 4, 4) transposed-conv weight -> the (4 C_out, C_in, 3, 3) weight of the 3x3 conv
    that, followed by ``pixel_shuffle(2)``, computes the same map (module doc); output channel
    ``c * 4 + a * 2 + b`` is output channel ``c`` at phase (row a, column b), as pixel_shuffle reads it."""
    c_in, c_out = weight.shape[:2]
    w = weight.new_zeros(c_out, 2, 2, c_in, 3, 3)
    for a in (0, 1):
        for b in (0, 1):
            for th, kh in enumerate(_PHASE_TAPS[a]):
                for tw, kw in enumerate(_PHASE_TAPS[b]):
                    if kh is not None and kw is not None:
                        w[:, a, b, :, th, tw] = weight[:, :, kh, kw].t()
    return w.reshape(4 * c_out, c_in, 3, 3)


def _subpixel_eligible(m: nn.Module) -> bool:
    return (isinstance(m, nn.ConvTranspose2d) and m.kernel_size == (4, 4) and m.stride == (2, 2)
            and m.padding == (1, 1) and m.output_padding == (0, 0) and m.dilation == (1, 1)
            and m.groups == 1 and m.padding_mode == "zeros")


class SubpixelUpConv(nn.Sequential):
    """``Conv2d(C_in, 4 C_out, 3, padding=1) -> PixelShuffle(2)``, built from a k=4, s=2, p=1
    ``ConvTranspose2d`` to compute the same map (module doc); for inference."""

    def __init__(self, deconv: nn.ConvTranspose2d):
        from ..nets.layers import Conv2d

        c_in, c_out = deconv.in_channels, deconv.out_channels
        conv = Conv2d(c_in, 4 * c_out, 3, padding=1, bias=deconv.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(subpixel_weight(deconv.weight.detach()))
            if deconv.bias is not None:
                conv.bias.copy_(deconv.bias.detach().repeat_interleave(4))
        conv.to(device=deconv.weight.device, dtype=deconv.weight.dtype)
        super().__init__(conv, nn.PixelShuffle(2))
        object.__setattr__(self, "transposed", deconv)  # not a submodule: for transposed_form()


def transposed_form(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with every :class:`SubpixelUpConv` back as the transposed conv it was
    built from (the form onnxruntime runs faster: docs/COMPRESS.md); ``net`` itself is unchanged
    (and returned as it is when it holds none)."""
    import copy

    if not any(isinstance(m, SubpixelUpConv) for m in net.modules()):
        return net
    net = copy.deepcopy(net)
    _replace_children(net, lambda m: isinstance(m, SubpixelUpConv), lambda m: m.transposed)
    return net


def _replace_children(net: nn.Module, match, make) -> int:
    """Every submodule ``m`` of ``net`` with ``match(m)`` becomes ``make(m)`` (in place); how many."""
    n = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if match(child):
                setattr(parent, name, make(child))
                n += 1
    return n


#: the transposed convs the predictor rewrites (measured, module doc): image heads of at most
#: this many output channels fed by at most this many
SUBPIXEL_MAX_OUT = 4
SUBPIXEL_MAX_IN = 64


def subpixel_transposed_convs(net: nn.Module, max_out_channels: int | None = None,
                              max_in_channels: int | None = None) -> int:
    """Replace every k=4, s=2, p=1 ``ConvTranspose2d`` of ``net`` with at most ``max_out_channels``
    outputs and ``max_in_channels`` inputs (None: any) by its :class:`SubpixelUpConv` (in place;
    same outputs to float rounding); returns how many. For inference: the replacement is built
    from the current weights and does not share them."""
    def match(m: nn.Module) -> bool:
        return (_subpixel_eligible(m) and (max_out_channels is None or m.out_channels <= max_out_channels)
                and (max_in_channels is None or m.in_channels <= max_in_channels))
    return _replace_children(net, match, SubpixelUpConv)


def winograd_convs(net: nn.Module) -> int:
    """Let every eligible 3x3 conv of an eval-mode net run Winograd where it wins (in place:
    ``Conv2d.winograd``, decided per call by channels and map size); returns how many may."""
    from ..nets.layers import Conv2d
    from ..nets.winograd import MIN_CHANNELS

    if net.training:
        raise ValueError("winograd_convs is for eval-mode nets (it caches transformed filters)")
    n = 0
    for m in net.modules():
        if isinstance(m, Conv2d) and m.winograd_eligible() and min(m.in_channels, m.out_channels) >= MIN_CHANNELS:
            m.winograd = True
            n += 1
    return n


#: whether a predictor lets wide 3x3 convs run Winograd (``winograd_convs``); False (or
#: ``IMTRANSLATE_WINOGRAD=0`` in the environment) keeps PyTorch's kernels and no cache of
#: transformed filters (16/9 of those layers' weights: pix2pixHD at ngf 64 +1.1 GB)
WINOGRAD = True


def winograd_enabled() -> bool:
    import os

    return WINOGRAD and os.environ.get("IMTRANSLATE_WINOGRAD", "1").strip().lower() not in ("0", "false", "off", "no")


def optimize_for_inference(G: nn.Module, train_cfg, device) -> bool:
    """What a predictor does to an eval-mode generator before it runs (in place): batch norm
    folded into its convs, narrow transposed-conv heads rewritten as conv + pixel shuffle, wide
    3x3 convs on Winograd where that wins (CPU), and NHWC where that is the faster format.
    Returns whether the inputs should be NHWC too."""
    fold_batchnorm(G)
    subpixel_transposed_convs(G, SUBPIXEL_MAX_OUT, SUBPIXEL_MAX_IN)
    if winograd_enabled() and torch.device(device).type == "cpu":
        winograd_convs(G)
    channels_last = inference_channels_last(G, train_cfg, device)
    if channels_last:
        G.to(memory_format=torch.channels_last)
    return channels_last


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
