"""Degradations of batches of pictures, pure torch: blur, downscale, noise, JPEG, colour jitter.

One implementation serves every task that makes a low-quality input from a good picture: the
face-enhancement task (a pipeline of typed steps with coefficients that it changes while it
trains), the stylise + SR task (``data/degrade.py``'s LR inputs use the primitives below) and
``imtranslate data pairs --kind degrade`` (fixed pairs for evaluation).

A **step** is a *type* and a *coefficient* ``c`` in [0, 1]; ``c = 0`` leaves the picture
exactly as it is, and the strength grows monotonically with ``c``. Each picture of a batch
draws its own strength ``s = c * (1 - spread * u)``, ``u ~ U(0, 1)`` (``spread = 0.5`` by
default: ``s`` in ``[c / 2, c]``), and its own random parts (blur angle, noise, jitter signs)
from its own seed, so a batch is deterministic from its seeds. The coefficient maps to a
physical range:

=================  ===========================================================================
type               strength ``s`` in [0, 1] ->
=================  ===========================================================================
gaussian_blur      Gaussian of std ``sigma = 4 s`` pixels
motion_blur        a line kernel ``1 + 20 s`` pixels long at a random angle
downscale          by the factor ``1 + 7 s`` (x1 .. x8) with the step's kernel (bicubic,
                   bilinear, area, nearest); the pipeline scales back up (bicubic) at the end
gaussian_noise     additive, std ``50 s`` grey levels (of 0..255), per channel
poisson_noise      shot noise of ``10 ** (3.5 - 2.5 s)`` photons at white (3162 .. 10)
jpeg               a JPEG round trip at quality ``round(95 - 85 s)`` (95 .. 10), Pillow's codec
colour_jitter      brightness x(1 +- 0.4 s), contrast x(1 +- 0.4 s), saturation x(1 +- 0.5 s),
                   hue +- 0.05 s turns; signs drawn per picture
=================  ===========================================================================

A **pipeline** is an ordered tuple of steps; the classic order is blur -> downscale -> noise ->
JPEG (:data:`DEFAULT_FACE_PIPELINE`). Pictures are ``(B, C, H, W)`` in [-1, 1].
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

DegradationType = Literal["gaussian_blur", "motion_blur", "downscale", "gaussian_noise", "poisson_noise", "jpeg",
                          "colour_jitter"]
DEGRADATION_TYPES: tuple[str, ...] = get_args(DegradationType)
DownscaleKernel = Literal["bicubic", "bilinear", "area", "nearest"]
DOWNSCALE_KERNELS: tuple[str, ...] = get_args(DownscaleKernel)


# --------------------------------------------------------------------------------------------
# Primitives (also used by data/degrade.py)
# --------------------------------------------------------------------------------------------
def downscale(x: torch.Tensor, scale: int, method: str = "bicubic") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H / scale, W / scale); H and W must be multiples of ``scale``."""
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"a {h}x{w} picture cannot be downscaled by exactly {scale}")
    if scale == 1:
        return x
    if method == "area":
        return F.avg_pool2d(x, scale)
    if method == "bicubic":
        return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", align_corners=False,
                             antialias=True).clamp(-1, 1)
    raise ValueError(f"unknown downscale method {method!r}; choose bicubic or area")


def resize(x: torch.Tensor, size: tuple[int, int], kernel: str = "bicubic") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, *size) with ``kernel`` (antialiased when shrinking), clamped to [-1, 1]."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if kernel == "area":
        return F.interpolate(x, size=size, mode="area")
    if kernel == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    if kernel in ("bicubic", "bilinear"):
        shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        return F.interpolate(x, size=size, mode=kernel, align_corners=False, antialias=shrink).clamp(-1, 1)
    raise ValueError(f"unknown resize kernel {kernel!r}; choose one of {', '.join(DOWNSCALE_KERNELS)}")


def upscale_bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline: (B, C, H, W) -> (B, C, scale * H, scale * W), clamped to [-1, 1]."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur picture ``i`` of ``x`` (B, C, H, W) with a Gaussian of std ``sigmas[i]`` (0 = untouched).

    One separable, grouped convolution for the whole batch (reflection at the borders).
    """
    b, c, h, w = x.shape
    smax = float(sigmas.max()) if sigmas.numel() else 0.0
    if smax <= 0:
        return x
    r = min(max(1, math.ceil(3 * smax)), (min(h, w) - 1))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    s = sigmas.to(x).clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)  # (B, 2r + 1)
    k = k / k.sum(1, keepdim=True)
    k = torch.where(sigmas.to(x.device)[:, None] > 0, k, (t[None] == 0).to(x))  # sigma 0: identity taps
    k = k.repeat_interleave(c, 0)  # one kernel per (picture, channel)
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)  # along W
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)  # along H
    return y.reshape(b, c, h, w)


def motion_kernel(length: float, angle: float, size: int) -> torch.Tensor:
    """A (size, size) line kernel of ``length`` pixels at ``angle`` radians, summing to 1.

    The line is sampled densely and each sample splatted bilinearly, so sub-pixel lengths and
    any angle give a smooth kernel; ``length <= 1`` is the identity (a single centre tap).
    """
    k = torch.zeros(size, size, dtype=torch.float64)
    c = (size - 1) / 2
    n = max(2, int(math.ceil(length * 4)))
    t = torch.linspace(-(length - 1) / 2, (length - 1) / 2, n, dtype=torch.float64) if length > 1 else \
        torch.zeros(1, dtype=torch.float64)
    xs, ys = c + t * math.cos(angle), c + t * math.sin(angle)
    x0, y0 = xs.floor().long().clamp(0, size - 1), ys.floor().long().clamp(0, size - 1)
    fx, fy = xs - x0, ys - y0
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        k.index_put_(((y0 + dy).clamp(0, size - 1), (x0 + dx).clamp(0, size - 1)), wgt, accumulate=True)
    return (k / k.sum()).float()


def motion_blur(x: torch.Tensor, lengths: list[float], angles: list[float]) -> torch.Tensor:
    """Blur picture ``i`` of ``x`` (B, C, H, W) along a line of ``lengths[i]`` px at ``angles[i]``."""
    b, c, h, w = x.shape
    lmax = max(lengths) if lengths else 1.0
    if lmax <= 1:
        return x
    size = min(2 * int(math.ceil(lmax / 2)) + 1, 2 * ((min(h, w) - 1) // 2) + 1)
    r = size // 2
    k = torch.stack([motion_kernel(min(L, size), a, size) for L, a in zip(lengths, angles)]).to(x)  # (B, k, k)
    k = k.repeat_interleave(c, 0)[:, None]  # (B * C, 1, k, k)
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    return F.conv2d(y, k, groups=b * c).reshape(b, c, h, w)


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """One picture (C, H, W) in [-1, 1] through JPEG at ``quality`` and back (Pillow's codec)."""
    from PIL import Image

    u8 = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as jpeg:
        back = torch.from_numpy(np.asarray(jpeg.convert("RGB")).copy()).permute(2, 0, 1)
    return (back.float() / 127.5 - 1.0).to(x)


def _rgb_to_grey(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x * w).sum(1, keepdim=True)


def _hue_rotate(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of (B, 3, H, W) in [0, 1] by ``turns`` (B,) about the grey axis (YIQ plane)."""
    theta = 2 * math.pi * turns.to(x)
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          dtype=x.dtype, device=x.device)
    rot = torch.zeros(x.shape[0], 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos[:, 0, 0], -sin[:, 0, 0], sin[:, 0, 0], cos[:, 0, 0]
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x)


def colour_jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor,
                  hue: torch.Tensor) -> torch.Tensor:
    """Per-picture factors (B,): brightness / contrast / saturation multiply, hue adds turns."""
    y = (x + 1) / 2  # [0, 1]
    if x.shape[1] == 3:
        y = _hue_rotate(y, hue)
    y = y * brightness.to(y)[:, None, None, None]
    mean = _rgb_to_grey(y).mean((2, 3), keepdim=True) if y.shape[1] == 3 else y.mean((2, 3), keepdim=True)
    y = mean + (y - mean) * contrast.to(y)[:, None, None, None]
    if y.shape[1] == 3:
        g = _rgb_to_grey(y)
        y = g + (y - g) * saturation.to(y)[:, None, None, None]
    return (y * 2 - 1).clamp(-1, 1)


# --------------------------------------------------------------------------------------------
# Typed steps and pipelines
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DegradationStep:
    """One degradation: its type, coefficient in [0, 1] and (downscale) kernel (module doc)."""

    type: DegradationType
    coefficient: float = 0.5
    kernel: DownscaleKernel = "bicubic"

    def __post_init__(self):
        if self.type not in DEGRADATION_TYPES:
            raise ValueError(f"unknown degradation {self.type!r}; choose one of {', '.join(DEGRADATION_TYPES)}")
        if not 0.0 <= float(self.coefficient) <= 1.0:
            raise ValueError(f"degradation coefficient must lie in [0, 1], got {self.coefficient} for {self.type}")
        if self.kernel not in DOWNSCALE_KERNELS:
            raise ValueError(f"unknown downscale kernel {self.kernel!r}; choose one of {', '.join(DOWNSCALE_KERNELS)}")


def physical(step_type: str, s: float) -> float:
    """The physical parameter of strength ``s`` in [0, 1] (the table of the module docstring)."""
    return {
        "gaussian_blur": lambda: 4.0 * s,  # sigma, px
        "motion_blur": lambda: 1.0 + 20.0 * s,  # length, px
        "downscale": lambda: 1.0 + 7.0 * s,  # factor
        "gaussian_noise": lambda: 50.0 * s,  # std, 0..255 levels
        "poisson_noise": lambda: 10 ** (3.5 - 2.5 * s),  # photons at white
        "jpeg": lambda: float(round(95 - 85 * s)),  # quality
        "colour_jitter": lambda: s,  # the fraction of the jitter ranges
    }[step_type]()


#: blur -> downscale -> noise -> JPEG: the classic order of blind face restoration.
DEFAULT_FACE_PIPELINE: tuple[DegradationStep, ...] = (
    DegradationStep("gaussian_blur", 0.3), DegradationStep("downscale", 0.3), DegradationStep("gaussian_noise", 0.2),
    DegradationStep("jpeg", 0.4),
)


def parse_pipeline(spec: str) -> tuple[DegradationStep, ...]:
    """``"gaussian_blur:0.3,downscale:0.4:area,jpeg:0.5"`` -> steps (``type[:coefficient[:kernel]]``)."""
    steps = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        bits = part.split(":")
        try:
            coef = float(bits[1]) if len(bits) > 1 else 0.5
            steps.append(DegradationStep(bits[0], coef, bits[2] if len(bits) > 2 else "bicubic"))
        except ValueError as e:
            raise ConfigError(f"degradation {part!r}: {e} (write type:coefficient[:kernel], e.g. jpeg:0.5)") from None
    if not steps:
        raise ConfigError("an empty degradation pipeline; write e.g. gaussian_blur:0.3,jpeg:0.5")
    return tuple(steps)


def _picture_generators(seeds) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s) & 0x7FFFFFFFFFFFFFFF) for s in torch.as_tensor(seeds).tolist()]


@torch.no_grad()
def apply_pipeline(x: torch.Tensor, seeds, steps, coefficients=None, *, spread: float = 0.5,
                   keep_size: bool = True, return_strengths: bool = False):
    """Degrade ``x`` (B, C, H, W) in [-1, 1] by ``steps`` in order; picture ``i`` uses ``seeds[i]``.

    ``coefficients`` (one per step) overrides the steps' own (a task's adapting coefficients).
    With ``keep_size`` the result is scaled back (bicubic) to H x W after the last step.
    ``return_strengths`` also returns, per picture, each step's physical parameter.
    """
    steps = tuple(steps)
    coefs = [float(s.coefficient) for s in steps] if coefficients is None else [float(c) for c in coefficients]
    if len(coefs) != len(steps):
        raise ValueError(f"{len(coefs)} coefficients for {len(steps)} degradation steps")
    gens = _picture_generators(seeds)
    if len(gens) != x.shape[0]:
        raise ValueError(f"{len(gens)} seeds for a batch of {x.shape[0]}")
    dtype, (h, w) = x.dtype, x.shape[-2:]
    outs, strengths = [], []
    for i, g in enumerate(gens):  # one picture at a time: a downscale changes each one's size
        y = x[i:i + 1].float()
        record = {}
        for step, c in zip(steps, coefs):
            u = float(torch.rand((), generator=g))
            s = c * (1.0 - spread * u)
            if c <= 0:
                record[step.type] = physical(step.type, 0.0)
                continue
            y = _apply_step(y, step, s, g)
            record[step.type] = physical(step.type, s)
        if keep_size:
            y = resize(y, (h, w), "bicubic")
        outs.append(y)
        strengths.append(record)
    out = torch.cat(outs).to(dtype) if keep_size else outs
    return (out, strengths) if return_strengths else out


def _apply_step(y: torch.Tensor, step: DegradationStep, s: float, g: torch.Generator) -> torch.Tensor:
    t = step.type
    if t == "gaussian_blur":
        return gaussian_blur(y, torch.tensor([physical(t, s)]))
    if t == "motion_blur":
        angle = float(torch.rand((), generator=g)) * math.pi
        return motion_blur(y, [physical(t, s)], [angle])
    if t == "downscale":
        f = physical(t, s)
        size = (max(1, round(y.shape[-2] / f)), max(1, round(y.shape[-1] / f)))
        return resize(y, size, step.kernel)
    if t == "gaussian_noise":
        return (y + torch.randn(y.shape, generator=g) * (physical(t, s) / 127.5)).clamp(-1, 1)
    if t == "poisson_noise":
        photons = physical(t, s)
        lam = ((y + 1) / 2).clamp(0, 1) * photons
        return (torch.poisson(lam, generator=g) / photons * 2 - 1).clamp(-1, 1)
    if t == "jpeg":
        return jpeg_roundtrip(y[0], int(physical(t, s)))[None]
    if t == "colour_jitter":
        signs = torch.randint(0, 2, (4,), generator=g).float() * 2 - 1
        one = torch.ones(1)
        return colour_jitter(y, one + 0.4 * s * signs[0], one + 0.4 * s * signs[1], one + 0.5 * s * signs[2],
                             0.05 * s * signs[3:4])
    raise AssertionError(t)  # DegradationStep checked the type


def with_coefficients(steps, coefficients) -> tuple[DegradationStep, ...]:
    """The same steps with new coefficients (clamped to [0, 1])."""
    return tuple(replace(s, coefficient=float(min(max(c, 0.0), 1.0))) for s, c in zip(steps, coefficients))


__all__ = ["DEFAULT_FACE_PIPELINE", "DEGRADATION_TYPES", "DOWNSCALE_KERNELS", "DegradationStep", "apply_pipeline",
           "colour_jitter", "downscale", "gaussian_blur", "jpeg_roundtrip", "motion_blur", "motion_kernel",
           "parse_pipeline", "physical", "resize", "upscale_bicubic", "with_coefficients"]
