"""The face-enhancement generator (SPEC S5) and its discriminator.

Data flow of :class:`FaceEnhancer` for a degraded face ``x`` (B, 3, H, W)::

    e_0 .. e_{L-1} = encoder(x)                 # conv encoder, e_i at H / 2**i, widths[i]
    w = mapping(mean_hw(e_{L-1}))               # linear mapping network -> attribute vector (B, latent)
    n_i = noise_conv_i(e_i)                     # noise features: spatial, one map set per resolution
    h = modconv(e_{L-1}, w)                     # decoder starts at the coarsest level
    for i = L-2 .. 0:                           # StyleGAN2-style synthesis, coarse to fine
        h = up2(h); h = modconv(h, w) + s_i * n_i + skip_i(e_i); h = modconv(h, w)
        rgb = up2(rgb) + torgb_i(h, w)          # skip-architecture RGB outputs, summed
    y = tanh(atanh(x) + rgb)                    # a residual on the input, in [-1, 1]

``modconv`` is StyleGAN2's modulated convolution: the weight ``W`` (out, in, k, k) is scaled
per input channel by a style ``s = A(w)`` (an affine map of the attribute vector), then
demodulated, ``W' = W * s / sqrt(sum((W * s)**2) + eps)`` per output channel, computed in
StyleGAN2's unfused form (input scaled by ``s``, one shared conv, output scaled by the
demodulation factor: the same result without per-picture weights). The noise features take the place of StyleGAN2's
random noise (GPEN's and GFPGAN's reading: the encoder says where detail goes); the encoder
skips carry the degraded face's structure to every resolution.

``widths`` (per encoder level, finest first) and ``dec_widths`` (per decoder level, same order)
are constructor kwargs, so a checkpoint rebuilds a net with any per-layer widths (128-512 px
faces: ``L`` levels give a multiple of ``2**(L-1)``; inputs are padded to it and cropped back).

:class:`FaceDiscriminator` is a residual down-sampling conv net; it returns, as every
discriminator here, ``[[feature_1, ..., logits]]`` with a (B, 1, h, w) logit map last.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import crop_to, pad_to_multiple
from .registry import init_config, register_net


#: set while a pruner traces a net (``imtranslate.prune.channels``): the demodulation factor is
#: computed from a detached style, so the traced graph has no edge from the style (input
#: channels) to the factor (output channels) — a per-output-channel scale that changes no channel
#: structure, but that a dependency graph would read as tying input to output channels.
TRACING_FOR_PRUNING = False


class ModulatedConv(nn.Module):
    """StyleGAN2 modulated conv: style-scaled, demodulated weights, one group per picture.

    The shared weight is a plain ``nn.Conv2d`` (``self.conv``), so structural pruning sees an
    ordinary conv with the style's affine layer tied to its input channels."""

    def __init__(self, in_ch: int, out_ch: int, latent: int, k: int = 3, demodulate: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(out_ch, in_ch, k, k) / math.sqrt(in_ch * k * k))
        self.affine = nn.Linear(latent, in_ch)
        nn.init.normal_(self.affine.weight, std=0.1 / math.sqrt(latent))
        nn.init.ones_(self.affine.bias)  # styles start near 1: close to a plain conv until the mapping learns
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.k, self.demodulate = k, demodulate

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the weight moved into self.conv
        if prefix + "weight" in state_dict and prefix + "conv.weight" not in state_dict:
            state_dict[prefix + "conv.weight"] = state_dict.pop(prefix + "weight")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # (B, in)
        # StyleGAN2's unfused form: scaling the input by s and the output by the demodulation
        # factor equals a conv with the per-picture weight W * s / ||W * s||, with one shared
        # weight (a plain conv, fast on any backend; no per-picture groups)
        out = self.conv(x * s[:, :, None, None])
        if self.demodulate:
            sd = s.detach() if TRACING_FOR_PRUNING else s
            W = self.conv.weight
            d = torch.rsqrt((W[None] ** 2 * sd[:, None, :, None, None] ** 2).sum((2, 3, 4)) + 1e-8)  # (B, out)
            out = out * d[:, :, None, None]
        return out + self.bias[None, :, None, None]


class _DecoderLevel(nn.Module):
    """One synthesis resolution: up x2, modconv + noise features + encoder skip, modconv, toRGB."""

    def __init__(self, in_ch: int, out_ch: int, skip_ch: int, latent: int, out_channels: int):
        super().__init__()
        self.conv1 = ModulatedConv(in_ch, out_ch, latent)
        self.conv2 = ModulatedConv(out_ch, out_ch, latent)
        self.noise = nn.Conv2d(skip_ch, out_ch, 1)  # noise features from the encoder at this resolution
        self.noise_strength = nn.Parameter(torch.full((1, out_ch, 1, 1), 0.1))
        self.skip = nn.Conv2d(skip_ch, out_ch, 1)  # the encoder skip
        self.torgb = ModulatedConv(out_ch, out_channels, latent, k=1, demodulate=False)

    def forward(self, h, skip, w):
        h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        h = self.conv1(h, w) + self.noise_strength * self.noise(skip) + self.skip(skip)
        h = F.leaky_relu(h, 0.2)
        h = F.leaky_relu(self.conv2(h, w), 0.2)
        return h, self.torgb(h, w)


@register_net("face_enhancer")
class FaceEnhancer(nn.Module):
    """Encoder + mapping network -> noise features + attribute vector -> modulated-conv decoder."""

    scale = 1

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, widths: list[int] | None = None,
                 dec_widths: list[int] | None = None, latent_dim: int = 128, n_mapping: int = 2,
                 residual: bool = True):
        super().__init__()
        self.config = init_config(locals())
        widths = list(widths or [32, 64, 128, 128, 128])
        dec_widths = list(dec_widths or widths)
        if len(widths) < 2 or len(dec_widths) != len(widths):
            raise ValueError(f"face_enhancer needs >= 2 levels and one decoder width per level, got widths={widths}, "
                             f"dec_widths={dec_widths}")
        if in_channels != out_channels and residual:
            raise ValueError("face_enhancer: residual=True needs in_channels == out_channels")
        L = len(widths)
        self.multiple = 2 ** (L - 1)
        self.residual = residual
        # ---- encoder: a stem, then one strided conv + conv per coarser level
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i - 1], widths[i], 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                          nn.Conv2d(widths[i], widths[i], 3, padding=1), nn.LeakyReLU(0.2))
            for i in range(1, L))
        # ---- mapping network: pooled coarsest features -> attribute (latent) vector
        layers: list[nn.Module] = [nn.Linear(widths[-1], latent_dim), nn.LeakyReLU(0.2)]
        for _ in range(n_mapping - 1):
            layers += [nn.Linear(latent_dim, latent_dim), nn.LeakyReLU(0.2)]
        self.mapping = nn.Sequential(*layers)
        # ---- decoder
        self.const_conv = ModulatedConv(widths[-1], dec_widths[-1], latent_dim)
        self.top_rgb = ModulatedConv(dec_widths[-1], out_channels, latent_dim, k=1, demodulate=False)
        self.levels = nn.ModuleList(
            _DecoderLevel(dec_widths[i + 1], dec_widths[i], widths[i], latent_dim, out_channels)
            for i in reversed(range(L - 1)))  # coarse to fine

    def feature_names(self) -> list[str]:
        """Modules whose outputs are the decoder's features (distillation taps), coarse to fine."""
        return [f"levels.{j}.conv2" for j in range(len(self.levels))]

    def feature_channels(self) -> list[int]:
        return [lv.conv2.weight.shape[0] for lv in self.levels]

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Encoder features (finest first) and the attribute vector ``w`` (B, latent)."""
        feats = [self.stem(x)]
        for d in self.down:
            feats.append(d(feats[-1]))
        w = self.mapping(feats[-1].mean((2, 3)))
        return feats, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        xp = pad_to_multiple(x, self.multiple)
        feats, w = self.encode(xp)
        h = F.leaky_relu(self.const_conv(feats[-1], w), 0.2)
        rgb = self.top_rgb(h, w)
        for j, level in enumerate(self.levels):
            skip = feats[len(feats) - 2 - j]
            h, rgb_j = level(h, skip, w)
            rgb = F.interpolate(rgb, size=skip.shape[-2:], mode="bilinear", align_corners=False) + rgb_j
        if self.residual:
            xc = xp.clamp(-0.999, 0.999)
            rgb = rgb + 0.5 * torch.log((1 + xc) / (1 - xc))  # atanh as a log ratio (ONNX has no atanh)
        return crop_to(torch.tanh(rgb), size)


@register_net("face_discriminator")
class FaceDiscriminator(nn.Module):
    """Residual down-sampling discriminator; returns ``[[features..., logits (B, 1, h, w)]]``."""

    def __init__(self, *, in_channels: int = 3, widths: list[int] | None = None):
        super().__init__()
        self.config = init_config(locals())
        widths = list(widths or [32, 64, 128, 128])
        self.min_size = 2 ** len(widths)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        chans = [widths[0]] + widths
        for i in range(len(widths)):
            self.blocks.append(nn.ModuleDict({
                "conv1": nn.Conv2d(chans[i], chans[i + 1], 3, padding=1),
                "conv2": nn.Conv2d(chans[i + 1], chans[i + 1], 3, stride=2, padding=1),
                "skip": nn.Conv2d(chans[i], chans[i + 1], 1, stride=2),
            }))
        self.head = nn.Conv2d(widths[-1], 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        h = F.leaky_relu(self.stem(x), 0.2)
        feats = []
        for blk in self.blocks:
            r = blk["skip"](h)
            h = F.leaky_relu(blk["conv1"](h), 0.2)
            h = (F.leaky_relu(blk["conv2"](h), 0.2) + r) / math.sqrt(2)
            feats.append(h)
        return [feats + [self.head(h)]]
