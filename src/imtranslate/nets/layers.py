"""Building blocks shared by every net: norm/activation factories, conv-norm-act, residual
block, up-sampling, halving. (Generators take any image size with ``imtranslate.ops``'
``pad_to_multiple`` / ``crop_to``.)

Conventions used throughout ``imtranslate.nets``:

* ``norm`` is ``"batch"``, ``"instance"`` or ``"none"``. Instance norm has no affine
  parameters and keeps no running statistics (as in pix2pix / pix2pixHD).
* A convolution has a bias only when no norm follows it: a norm subtracts the mean, which
  would cancel the bias (and leave it with a zero gradient forever).
* Activations are never in-place, because several nets keep a tensor (a skip connection) that
  is also fed to an activation.
"""
from __future__ import annotations

import typing
from typing import Literal

import contextlib
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from .winograd import winograd_conv3x3, winograd_filters, winograd_wins

Norm = Literal["batch", "instance", "none"]  # the normalisation of a conv block
NORMS: tuple[str, ...] = typing.get_args(Norm)
ACTS = ("relu", "lrelu", "tanh", "none")


def make_norm(norm: str, channels: int) -> nn.Module | None:
    """The normalisation layer called ``norm`` for ``channels`` channels (None for "none")."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "none":
        return None
    raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")


def make_act(act: str) -> nn.Module | None:
    """The activation called ``act`` (LeakyReLU has slope 0.2 as in pix2pix); None for "none"."""
    if act == "relu":
        return nn.ReLU()
    if act == "lrelu":
        return nn.LeakyReLU(0.2)
    if act == "tanh":
        return nn.Tanh()
    if act == "none":
        return None
    raise ValueError(f"unknown activation {act!r}; choose one of {ACTS}")


#: pick PyTorch's GEMM convolution over oneDNN's where it measured faster (``imtranslate bench
#: --plain`` turns it off to show the difference)
GEMM_CONV_ON_SMALL_MAPS = True


#: under CPU bf16 autocast, the weight-bound layers (>= 512 input channels on <= 8x8 maps, tiny
#: convs: their cost is reading the weights, and bf16 adds a cast and a reorder of every weight
#: per call) run in fp32 on the GEMM path, their output handed on in bf16 as autocast's would be.
#: Measured, the variants alternated in one process (noisy host, 7-9 rounds, medians): pix2pix
#: bf16 training step 0.635 -> 0.508 s, 0.542 -> 0.385, 0.677 -> 0.515 (1.25-1.41x), inference
#: 0.144 -> 0.091 s, 0.117 -> 0.078, 0.153 -> 0.094 (1.50-1.63x). pix2pixHD's 1024-channel
#: residual blocks on 16x16 maps are compute-bound and faster in bf16 (taking them too made its
#: step 2.42 -> 2.74 s), so they stay in bf16: pix2pixHD even (2.89 / 2.95 s).
AUTOCAST_FP32_GEMM = True


def _eager_cpu_fp32(x: torch.Tensor, autocast_ok: bool = False) -> bool:
    """The kernel choice applies: lever on, an fp32 CPU image batch outside autocast, not traced
    or compiled (exporters and compilers see a plain convolution)."""
    if not GEMM_CONV_ON_SMALL_MAPS or x.device.type != "cpu" or x.dim() != 4:
        return False
    if torch.is_autocast_enabled("cpu"):  # autocast casts conv2d, not the aten::convolution used here
        if not (autocast_ok and AUTOCAST_FP32_GEMM and x.dtype in (torch.float32, torch.bfloat16)):
            return False
    elif x.dtype != torch.float32:
        return False
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling())


#: a convolution this small (multiply-adds per picture, on at most TINY_POSITIONS output positions
#: per picture; groups 1) takes the GEMM path: see :func:`_tiny_conv`. Per picture, so a batch
#: and its pictures one by one run the same kernels and give the same numbers.
TINY_MACS = 1 << 18
TINY_POSITIONS = 256


def _tiny_conv(positions: int, macs: int, groups: int) -> bool:
    """oneDNN spends 60-100 us per call whatever the size (primitive set-up), PyTorch's GEMM path
    10-40 us on tiny ones. Measured (2 threads, fp32, 4x4 stride-2 layers of a pruned U-Net):
    inference 8->8 channels on 16x16 / 8x8 / 2x2 maps 25 / 16 / 12 us against 74-101, 4->8 on
    32x32 40 against 82; transposed 8->8 on 1x1 11 against 100, 16->8 on 4x4 19 against 95;
    forward + backward 62 against 238 us (8->8, 16x16), 95 against 261 (16->16, 16x16, 262 k
    multiply-adds), at batch 4 242 against 322. From 1 M multiply-adds per picture at batch 4
    oneDNN wins (16->16 transposed on 16x16: 1118 against 442 us), and on larger maps (4->4 on
    128x128: 330 against 96 us)."""
    return groups == 1 and positions <= TINY_POSITIONS and macs <= TINY_MACS


def _native_conv_wins(x: torch.Tensor, weight: torch.Tensor, stride=(1, 1), groups: int = 1) -> bool:
    """Whether PyTorch's own im2col + GEMM convolution beats oneDNN's for this call.

    Measured on a 2-core Xeon (fp32, forward + backward of a 3x3 conv, 2 threads): with >= 1024
    input channels on maps of <= 512 positions oneDNN reaches 48-138 GFLOP/s and the GEMM path
    95-159 (1024 ch at 16x16: 114 vs 152; 8x8: 48 vs 95; 16x32: 138 vs 159); from 32x32 up, or
    with 512 channels, oneDNN is as fast or faster. pix2pixHD's residual blocks (1024 channels at
    1/16 of the image) are exactly the first case. Measured again with 512 input channels (4x4,
    stride 2, the U-Net's inner encoder, with glibc keeping freed memory: ``allocator.py``): on
    8x8 maps and smaller the GEMM path takes 1.6-4.3 ms forward + backward against oneDNN's
    6.4-7.4, 0.5-1.3 against 2.4-3.1 ms forward; at 16x16 they are even (10.2 vs 9.5 ms).
    """
    if not _eager_cpu_fp32(x, autocast_ok=True):
        return False
    c_in, positions = weight.shape[1], x.shape[-2] * x.shape[-1]
    out_positions = (x.shape[-2] // stride[0]) * (x.shape[-1] // stride[1])
    macs = out_positions * weight.numel()  # per picture
    if torch.is_autocast_enabled("cpu"):  # bf16: only the weight-bound layers (see AUTOCAST_FP32_GEMM)
        return (c_in >= 512 and positions <= 64) or _tiny_conv(out_positions, macs, groups)
    return ((c_in >= 1024 and positions <= 640) or (c_in >= 512 and positions <= 64)
            or _tiny_conv(out_positions, macs, groups))


def _nhwc_conv_wins(x: torch.Tensor, weight: torch.Tensor, bias, groups: int) -> bool:
    """Whether an NCHW inference conv runs faster converted to NHWC and back: oneDNN's NCHW
    kernels handle input channels that are not a multiple of 16 badly. Measured (fp32, 2 threads,
    batch 1, medians of 3 x 7, conversions included): 7x7 convs of 36 -> 64 channels (pix2pixHD's
    first layer: 35 labels + edge map) at 256^2 101 -> 77 ms, at 128^2 29 -> 20 ms, 24 -> 64 at
    256^2 82 -> 58 ms; but 3x3 convs (20 -> 64 at 128^2: 4.5 -> 5.4 ms; 35 -> 64 at 256^2 37 -> 41)
    and few channels (3 or 6 -> 64, 7x7: 2x slower) lose. Not for training: nothing that needs a
    gradient takes it."""
    if not _eager_cpu_fp32(x) or groups != 1 or not x.is_contiguous():
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return False
    c_in, k = weight.shape[1], min(weight.shape[-2:])
    return k >= 7 and 16 < c_in < 48 and c_in % 16 != 0 and x.shape[-2] * x.shape[-1] >= 128 * 128


@contextlib.contextmanager
def _onednn_off():
    # torch.backends.mkldnn.flags() would also touch the TF32 setting and warn on every CPU
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was


def _native_conv_transpose_wins(x: torch.Tensor, weight: torch.Tensor, groups: int = 1) -> bool:
    """The same choice for transposed convolutions (``weight`` is (C_in, C_out / groups, k, k)).

    Measured as above (4x4, stride 2): with 1024 input channels on maps of <= 8x8 the GEMM path
    takes 1.3-9.6 ms against oneDNN's 12.6-21 ms in inference, and 23-40 against 64-80 ms for
    forward + backward (the U-Net's inner decoder blocks); with <= 4 output channels (an output
    layer) 3.0 against 6.3 ms; at 16x16 and larger oneDNN is as fast or faster. With 512 input
    channels on a 1x1 map (the U-Net's innermost up-conv) 1.7 against 5.8 ms forward + backward.
    """
    if not _eager_cpu_fp32(x, autocast_ok=True):
        return False
    positions = x.shape[-2] * x.shape[-1]
    macs = positions * weight.numel()  # per picture
    if torch.is_autocast_enabled("cpu"):  # bf16: only the weight-bound layers (see AUTOCAST_FP32_GEMM)
        return (weight.shape[0] >= 512 and positions <= 64) or _tiny_conv(positions, macs, groups)
    return ((weight.shape[0] >= 512 and positions <= 64) or weight.shape[1] <= 4
            or _tiny_conv(positions, macs, groups))


class _NativeConv(torch.autograd.Function):
    """``torch.convolution`` (plain or transposed) with oneDNN off in the forward *and* the
    backward pass (the backward runs outside any context the forward was called in, so a flag
    around the forward is not enough)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, transposed, output_padding, groups, bias is not None)
        with _onednn_off():
            return torch.convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, transposed, output_padding, groups, has_bias = ctx.conf
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
        bias_sizes = [weight.shape[1] * groups if transposed else weight.shape[0]] if has_bias else None
        with _onednn_off():
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad_out, x, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, mask)
        return gx, gw, gb if has_bias else None, None, None, None, None, None, None


def _native_conv(x, weight, bias, stride, padding, dilation, transposed=False, output_padding=(0, 0), groups=1):
    if torch.is_autocast_enabled("cpu"):  # a weight-bound layer of a bf16 run: fp32 on the GEMM path
        with torch.autocast("cpu", enabled=False):
            y = _native_conv(x.float(), weight.float(), None if bias is None else bias.float(), stride, padding,
                             dilation, transposed, output_padding, groups)
        return y.to(torch.get_autocast_dtype("cpu"))  # what autocast's conv would hand on
    args = (list(stride), list(padding), list(dilation), transposed, list(output_padding), groups)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _NativeConv.apply(x, weight, bias, *args)
    with _onednn_off():
        return torch.convolution(x, weight, bias, *args)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same state-dict keys, same maths) that picks the faster
    CPU kernel for wide convolutions on small maps (see :func:`_native_conv_wins`).

    ``winograd = True`` (set by the predictor's rewrites, ``infer/optimize.py``) lets an eligible
    3x3 conv run Winograd F(2x2, 3x3) when nothing needs its gradient and the map size wins
    (``nets/winograd.py``); its transformed filters are cached and rebuilt when the weights change.
    """

    winograd = False

    def winograd_eligible(self) -> bool:
        """3x3, stride 1, no dilation, one group, numeric padding: what F(2x2, 3x3) computes."""
        return (self.kernel_size == (3, 3) and self.stride == (1, 1) and self.dilation == (1, 1)
                and self.groups == 1 and not isinstance(self.padding, str))

    def _winograd_filters(self, weight: torch.Tensor) -> torch.Tensor:
        try:
            version = weight._version
        except RuntimeError:  # an inference tensor keeps no version counter: it cannot change in place
            version = None
        key = (weight.data_ptr(), version, weight.dtype, tuple(weight.shape))
        cached = self.__dict__.get("_winograd_cache")
        # the same tensor (not only the same address: a new one may reuse a freed one's), unchanged
        if cached is None or cached[0] != key or cached[2]() is not weight:
            with torch.no_grad():
                cached = (key, winograd_filters(weight.detach()), weakref.ref(weight))
            self.__dict__["_winograd_cache"] = cached  # not a buffer: not saved, not moved
        return cached[1]

    def _winograd_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        """The Winograd result, or None where PyTorch's kernels are the ones to run."""
        if not (self.winograd and _eager_cpu_fp32(x)) or weight.dtype != torch.float32:
            return None
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad)):
            return None  # training: transforming the filters every step costs what it saves
        h = x.shape[-2] + 2 * self.padding[0] - 2
        w = x.shape[-1] + 2 * self.padding[1] - 2
        if h < 1 or w < 1 or not winograd_wins(self.in_channels, self.out_channels, h * w):
            return None
        if any(self.padding):
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=mode)
        y = winograd_conv3x3(x, self._winograd_filters(weight), bias)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            y = y.contiguous(memory_format=torch.channels_last)  # keep the net's memory format
        return y

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.winograd:
            y = self._winograd_forward(x, weight, bias)
            if y is not None:
                return y
        if not isinstance(self.padding, str) and _nhwc_conv_wins(x, weight, bias, self.groups):
            padding = self.padding
            if self.padding_mode != "zeros":
                x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
                padding = (0, 0)
            cl = torch.channels_last
            return F.conv2d(x.contiguous(memory_format=cl), weight.contiguous(memory_format=cl), bias,
                            self.stride, padding, self.dilation, self.groups).contiguous()
        if isinstance(self.padding, str) or not _native_conv_wins(x, weight, self.stride, self.groups):
            return super()._conv_forward(x, weight, bias)
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        return _native_conv(x, weight, bias, self.stride, padding, self.dilation, groups=self.groups)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with the same CPU kernel choice (:func:`_native_conv_transpose_wins`)."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if not _native_conv_transpose_wins(x, self.weight, self.groups):
            return super().forward(x, output_size)
        output_padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size,
                                              2, self.dilation)
        return _native_conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                            transposed=True, output_padding=output_padding, groups=self.groups)


class ConvNormAct(nn.Sequential):
    """``conv -> norm -> dropout -> act`` (or ``act -> conv -> norm -> dropout`` with ``preact``).

    ``padding`` defaults to ``kernel_size // 2`` ("same" size for stride 1, half size for
    stride 2); ``pad_mode="reflect"`` pads by reflection as the ResNet / pix2pixHD nets do.
    ``transposed=True`` makes it a transposed convolution that multiplies the size by
    ``stride`` exactly (the output padding is chosen for that).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int | None = None,
        pad_mode: str = "zeros",
        norm: str = "instance",
        act: str = "relu",
        dropout: float = 0.0,
        transposed: bool = False,
        preact: bool = False,
    ):
        padding = kernel_size // 2 if padding is None else padding
        bias = norm == "none"
        if transposed:
            # out = (in - 1) * stride - 2 * padding + kernel_size + output_padding = in * stride
            output_padding = stride - kernel_size + 2 * padding
            if not 0 <= output_padding < stride:
                raise ValueError(f"a {kernel_size}x{kernel_size} transposed conv with padding {padding} "
                                 f"cannot scale the size by exactly {stride}")
            conv = ConvTranspose2d(
                in_channels, out_channels, kernel_size, stride, padding,
                output_padding=output_padding, bias=bias,
            )
        else:
            conv = Conv2d(
                in_channels, out_channels, kernel_size, stride, padding,
                padding_mode=pad_mode, bias=bias,
            )
        layers = [conv, make_norm(norm, out_channels), nn.Dropout(dropout) if dropout > 0 else None]
        act_layer = make_act(act)
        layers = [act_layer, *layers] if preact else [*layers, act_layer]
        super().__init__(*[m for m in layers if m is not None])


class SeparableConv2d(nn.Sequential):
    """Depthwise-separable convolution (MobileNet): a ``k x k`` depthwise conv (one filter per
    input channel, no bias) followed by a 1x1 pointwise conv that mixes channels.

    Parameters: ``c_in * k * k + c_in * c_out (+ c_out bias)`` instead of ``c_in * c_out * k * k
    (+ c_out)``; multiply-adds per output pixel shrink by about ``1 / c_out + 1 / k**2``. Same
    call signature as :class:`Conv2d` for the arguments used here (``stride``, ``padding``,
    ``padding_mode``, ``bias``), so a net can pick either with one flag. ``dw`` and ``pw`` are
    the two convs (``pw`` is the one to initialise as a whole-conv's output weights).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, *, padding_mode: str = "zeros", bias: bool = True):
        padding = kernel_size // 2 if padding is None else padding
        super().__init__()
        self.dw = Conv2d(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels,
                         padding_mode=padding_mode, bias=False)
        self.pw = Conv2d(in_channels, out_channels, 1, bias=bias)


def conv2d(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *,
           separable: bool = False, padding_mode: str = "zeros", bias: bool = True) -> nn.Module:
    """A "same"-padded conv (``padding = k // 2``): a plain :class:`Conv2d`, or with ``separable``
    (and ``k > 1``) a :class:`SeparableConv2d` of the same shape."""
    if separable and kernel_size > 1:
        return SeparableConv2d(in_channels, out_channels, kernel_size, stride, padding_mode=padding_mode, bias=bias)
    return Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, padding_mode=padding_mode,
                  bias=bias)


class ResBlock(nn.Module):
    """Residual block ``x + conv-norm-relu-[dropout]-conv-norm(x)`` with reflection padding."""

    def __init__(self, channels: int, *, norm: str = "instance", dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(channels, channels, 3, pad_mode="reflect", norm=norm, act="relu", dropout=dropout),
            ConvNormAct(channels, channels, 3, pad_mode="reflect", norm=norm, act="none"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        return x + self.body(x)


def res_blocks(channels: int, n: int, *, norm: str = "instance", dropout: float = 0.0) -> nn.Sequential:
    """``n`` residual blocks in a row (an empty Sequential, i.e. identity, for n = 0)."""
    return nn.Sequential(*[ResBlock(channels, norm=norm, dropout=dropout) for _ in range(n)])


def down_block(in_channels: int, out_channels: int, *, norm: str = "instance") -> ConvNormAct:
    """Halve the size: 3x3 stride-2 conv-norm-relu."""
    return ConvNormAct(in_channels, out_channels, 3, stride=2, norm=norm, act="relu")


def up_block(in_channels: int, out_channels: int, *, norm: str = "instance", mode: str = "transpose") -> nn.Sequential:
    """Double the size, then norm-relu.

    ``mode="transpose"``: 3x3 stride-2 transposed conv (pix2pixHD / ResNet generator).
    ``mode="bilinear"``: bilinear x2 then 3x3 conv, which avoids checkerboard artefacts.
    """
    if mode == "transpose":
        return nn.Sequential(ConvNormAct(in_channels, out_channels, 3, stride=2, norm=norm, transposed=True))
    if mode == "bilinear":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ConvNormAct(in_channels, out_channels, 3, pad_mode="reflect", norm=norm),
        )
    raise ValueError(f"unknown up-sampling mode {mode!r}; choose 'transpose' or 'bilinear'")


def output_head(in_channels: int, out_channels: int) -> ConvNormAct:
    """7x7 reflect-padded conv to the output channels, then tanh (values in [-1, 1])."""
    return ConvNormAct(in_channels, out_channels, 7, pad_mode="reflect", norm="none", act="tanh")


# --------------------------------------------------------------------------------------------
# Sizes: halve (pad to a multiple and crop back are ``imtranslate.ops.pad_to_multiple`` /
# ``crop_to``, shared with the predictor, the tiling engine and the ONNX graph)
# --------------------------------------------------------------------------------------------
def downsample_avg(x: torch.Tensor) -> torch.Tensor:
    """Halve the size as pix2pixHD does: 3x3 average pool, stride 2, padding 1, border-aware.

    (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)). Tasks should halve targets with this too, so
    they line up with what the multi-scale nets see.
    """
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
