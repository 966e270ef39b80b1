"""Tiled inference: translate an image of any size within a memory budget.

The image is cut into overlapping tiles; each tile is padded to the model's size multiple,
translated, and blended into a float32 output accumulated tile by tile, so the peak memory is
that of one tile plus the output image, never the activations of the whole image.

:func:`tile_translate` is the one tiling engine of the package: the predictor's translators,
and the style-swap encoder, inverse net and optimisation-based inversion (``infer/stylize.py``)
all run through it. A model of output ``scale`` (output size / input size: 4 for a x4 net,
1/4 for an encoder that shrinks 4x) gets an output buffer ``scale`` times the input; tiles are
planned in input pixels (``tile`` and ``overlap`` are what a user asks for) and the cross-fade
weights laid out in output pixels (:meth:`TilePlan.scaled`), so the ramp is as smooth as the
output's resolution allows.

What keeps tiled outputs equal to untiled ones (``benchmarks/tiling.py`` measures it):

* **Feathered blending.** Neighbouring tiles share at least ``overlap`` pixels. In that band
  the outer three eighths on each side are dropped (a tile's border is where its convolutions
  saw padding instead of the real neighbours) and the middle quarter is cross-faded with a
  raised-cosine ramp whose two halves sum to one, so no seam shows. (A middle half instead
  doubles the tiled-vs-untiled difference of the test nets; the seam step is no smaller.)
* **Enough overlap.** How far a tile border disturbs the output depends on the net's receptive
  field; :func:`measure_edge_effect` measures it on a probe (cut the probe, see how far in the
  output changes) and the default overlap is twice that distance.
* **Aligned tiles.** Tile origins sit on multiples of the model's size multiple (its total
  stride), so every stride-2 layer samples the same grid as on the whole image.
* **Whole-image instance-norm statistics.** Instance norm (pix2pixHD, the multi-resolution
  net) normalises by the mean and variance of the *whole* image, so per-tile statistics would
  change the output tile by tile. :func:`tile_translate` first finds every ``InstanceNorm2d``
  call's statistics for the whole image, then runs the tiles with them frozen (the layers'
  ``forward`` is swapped on the instances for the duration; the nets are not edited):

  - ``stats="whole"``: one untiled pass over the whole image (exact; needs the memory of an
    untiled pass, so it is used when that fits and tiling was asked for anyway);
  - ``stats="stream"``: exact within tile memory. Layer k's statistics depend on those of the
    layers before it, so there is one streaming pass per instance-norm call: every tile runs
    up to that layer (earlier layers frozen at their already exact statistics), adds the
    sums of the pixels it owns, and stops. Costs up to about (layers / 2) tiled passes;
  - ``stats="shrunk"``: one untiled pass over the image shrunk by a power of two (fast,
    approximate: feature statistics change with scale).

  Batch norm in eval mode uses stored statistics and needs none of this.

Memory: :func:`measure_memory` runs the model on two probes and reads the peak memory (CPU: the
kernel's resident high-water mark ``VmHWM``, reset through ``/proc/self/clear_refs``; CUDA: the
allocator's peak), fitting ``fixed + per_pixel * pixels``; :func:`choose_tiling` turns that and
a budget into "untiled" or the largest tile that fits.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..allocator import release_free_memory
from ..errors import ImtranslateError
from ..ops import as_ratio, crop_to, pad_to_multiple, scale_size

#: smallest default CPU budget (GB) for one translation, the whole process included
DEFAULT_CPU_BUDGET_GB = 2.0
#: an edge effect smaller than this (mean absolute difference, [0, 1] units) counts as none
EDGE_TOL = 0.5 / 255
#: the overlap :func:`measure_edge_effect` suggests, in multiples of the measured distance
OVERLAP_PER_EDGE = 2
#: estimates are multiplied by this before they are compared with a budget
SAFETY = 1.2


class TilingError(ImtranslateError):
    """A tiling request cannot be met (tile too small for its overlap, budget too small)."""


# --------------------------------------------------------------------------------------------
# Tile layout and blending weights
# --------------------------------------------------------------------------------------------
def plan_axis(length: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the tiles along one axis of ``length`` pixels.

    Starts are multiples of the stride ``tile - overlap`` rounded *down* to a multiple of
    ``align`` (so the effective overlap can be larger than asked); the last tile ends at
    ``length`` and may be narrower than ``tile`` (it is always wider than the overlap).
    """
    if length <= tile:
        return [(0, length)]
    stride = tile - overlap
    if stride < 1:
        raise TilingError(f"a tile overlap of {overlap} px needs tiles larger than {overlap} px, got {tile}")
    a = max(1, int(align))
    while a > 1 and stride < a:  # the stride cannot hold one alignment step: align more finely
        a //= 2
    stride -= stride % a
    spans = []
    start = 0
    while True:
        end = min(start + tile, length)
        spans.append((start, end))
        if end >= length:
            return spans
        start += stride


def _rise(n: int) -> torch.Tensor:
    """Raised-cosine ramp of ``n`` samples from ~0 to ~1; ``_rise(n) + _rise(n).flip(0) == 1``."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return 0.5 - 0.5 * torch.cos(math.pi * t)


def _blend_band(overlap_start: int, overlap_end: int) -> tuple[int, int]:
    """Global ``(start, width)`` of the cross-fade inside an overlap band: its middle quarter."""
    ov = overlap_end - overlap_start
    if ov <= 0:  # tiles that only touch (overlap 0): a plain cut, no ramp
        return overlap_start, 0
    width = max(1, ov // 4)
    return overlap_start + (ov - width) // 2, width


def axis_weights(spans: list[tuple[int, int]]) -> list[torch.Tensor]:
    """One float64 weight vector per tile of an axis: 1 inside, cross-faded in the overlaps.

    At every boundary the next tile's rising ramp and this tile's falling ramp cover the same
    global pixels, so the weights on a pixel sum to one (where more than two tiles meet the sum
    stays positive and the output is divided by it).
    """
    weights = []
    for i, (s, e) in enumerate(spans):
        w = torch.ones(e - s, dtype=torch.float64)
        if i > 0:
            b0, n = _blend_band(s, spans[i - 1][1])
            w[: b0 - s] = 0
            w[b0 - s: b0 - s + n] *= _rise(n)
        if i + 1 < len(spans):
            b0, n = _blend_band(spans[i + 1][0], e)
            w[b0 - s: b0 - s + n] *= 1 - _rise(n)
            w[b0 - s + n:] = 0
        weights.append(w)
    return weights


def owned_cuts(spans: list[tuple[int, int]]) -> list[int]:
    """Boundaries of the pixels each tile *owns* (a partition of the axis, cut in the middle of
    every overlap): tile i owns ``[cuts[i], cuts[i + 1])``."""
    cuts = [0]
    for (_, e), (s_next, _) in zip(spans[:-1], spans[1:]):
        cuts.append((s_next + e) // 2)
    cuts.append(spans[-1][1])
    return cuts


def _band_pixels(spans) -> list[int]:
    out = []
    for (_, e), (s_next, _) in zip(spans[:-1], spans[1:]):
        b0, n = _blend_band(s_next, e)
        out.extend(range(b0, b0 + n))
    return out


def _scaled(n: int, up: int, down: int) -> int:
    """``n`` input pixels in output pixels; a tile edge must land on a whole output pixel."""
    if (n * up) % down:
        raise TilingError(f"a tile edge at {n} px does not fall on an output pixel of a net that shrinks "
                          f"{down // math.gcd(up, down)}x; use tiles and images that are multiples of {down}")
    return n * up // down


@dataclass
class TilePlan:
    """Where the tiles of one image go: ``ys`` / ``xs`` are the spans along each axis and the
    tiles their product, visited row by row."""

    height: int
    width: int
    tile: int
    overlap: int
    ys: list[tuple[int, int]]
    xs: list[tuple[int, int]]

    @classmethod
    def make(cls, height: int, width: int, tile: int, overlap: int, align: int = 1) -> "TilePlan":
        return cls(height, width, tile, overlap, plan_axis(height, tile, overlap, align),
                   plan_axis(width, tile, overlap, align))

    def scaled(self, scale) -> "TilePlan":
        """The same tiles in the output pixels of a net of output ``scale`` (the layout the
        cross-fade weights and :func:`compare_outputs` use); every edge must land on a whole
        output pixel."""
        up, down = as_ratio(scale)
        if (up, down) == (1, 1):
            return self

        def sc(spans):
            return [(_scaled(a, up, down), _scaled(b, up, down)) for a, b in spans]

        return TilePlan(_scaled(self.height, up, down), _scaled(self.width, up, down), scale_size(self.tile, scale),
                        scale_size(self.overlap, scale), sc(self.ys), sc(self.xs))

    @property
    def n_tiles(self) -> int:
        return len(self.ys) * len(self.xs)

    def blend_columns(self) -> list[int]:
        """x indices inside a cross-fade band (where a seam would show)."""
        return _band_pixels(self.xs)

    def blend_rows(self) -> list[int]:
        return _band_pixels(self.ys)

    def tile_edges_x(self) -> list[int]:
        """x indices where a tile starts or ends inside the image."""
        return sorted({s for s, _ in self.xs[1:]} | {e for _, e in self.xs[:-1]})

    def tile_edges_y(self) -> list[int]:
        return sorted({s for s, _ in self.ys[1:]} | {e for _, e in self.ys[:-1]})


# --------------------------------------------------------------------------------------------
# Instance norm with whole-image statistics
# --------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by the layer a streaming pass measures: nothing after it needs to run."""


class _NormState:
    """What the swapped-in instance-norm forwards do. Layers are keyed by (module, call index
    within one forward), so a layer called twice gets two sets of statistics.

    ``mode``:
      * "record": normalise as usual and keep every call's (mean, var);
      * "apply": normalise with the kept statistics;
      * "stream": like "apply" up to the call ``target``, which adds the pixels the current
        tile owns to running sums and stops the forward.
    """

    def __init__(self):
        self.mode = "record"
        self.stats: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # key -> (B, C) mean, var
        self.order: list[tuple] = []  # keys in call order (filled by "record")
        self.target: tuple | None = None
        self.sums: list = []  # [sum, sum of squares, count, shift] of the target
        # the current tile's padded origin and size and the global pixels it owns, in input
        # pixels: (y0, x0, hp, wp, gy0, gy1, gx0, gx1)
        self.region = None
        self._calls: dict[nn.Module, int] = {}

    def begin(self) -> None:
        """Call before every forward: call indices restart at 0."""
        self._calls = {}
        if self.mode == "record":
            self.order = []

    def forward_for(self, m: nn.InstanceNorm2d) -> Callable:
        def forward(x: torch.Tensor) -> torch.Tensor:
            n = self._calls.get(m, 0)
            self._calls[m] = n + 1
            key = (m, n)
            if self.mode == "record":
                var, mean = torch.var_mean(x, dim=(-2, -1), correction=0)  # biased, as instance norm
                self.stats[key] = (mean.float(), var.float())
                self.order.append(key)
            elif key not in self.stats:
                raise TilingError("the model called an instance-norm layer the statistics pass did not see; "
                                  "translate this model untiled (--tile 0)")
            mean, var = self.stats[key]
            if self.mode == "stream" and key == self.target:
                self._accumulate(x, mean)
                raise _Stop
            y = (x - mean[..., None, None].to(x.dtype)).mul_(torch.rsqrt(var + m.eps)[..., None, None].to(x.dtype))
            if m.affine:
                y = y * m.weight[:, None, None] + m.bias[:, None, None]
            return y

        return forward

    def _accumulate(self, x: torch.Tensor, shift: torch.Tensor) -> None:
        y0, x0, hp, wp, gy0, gy1, gx0, gx1 = self.region
        h, w = x.shape[-2:]
        # the owned input pixels at this layer's resolution, mapped in *global* coordinates so
        # two neighbours round a shared cut alike and every feature pixel is counted once
        oy, ox = (y0 * h) // hp, (x0 * w) // wp
        r0, r1 = max(0, (gy0 * h) // hp - oy), min(h, (gy1 * h) // hp - oy)
        c0, c1 = max(0, (gx0 * w) // wp - ox), min(w, (gx1 * w) // wp - ox)
        if r1 <= r0 or c1 <= c0:
            return
        # sums of (x - a nearby mean) in float64: no cancellation in the variance
        d = x[..., r0:r1, c0:c1] - shift[..., None, None].to(x.dtype)
        s1 = d.sum(dim=(-2, -1), dtype=torch.float64)
        s2 = torch.linalg.vector_norm(d, dim=(-2, -1), dtype=torch.float64) ** 2
        if not self.sums:
            self.sums = [0.0, 0.0, 0, shift]
        self.sums[0] = self.sums[0] + s1
        self.sums[1] = self.sums[1] + s2
        self.sums[2] += (r1 - r0) * (c1 - c0)

    def finish_target(self) -> None:
        """The target's statistics from the sums of the pass that just ended."""
        s1, s2, n, shift = self.sums
        mu = s1 / n
        var = (s2 / n - mu * mu).clamp(min=0)
        self.stats[self.target] = ((shift.double() + mu).float(), var.float())
        self.sums = []


def instance_norms(model: nn.Module | None) -> list[nn.InstanceNorm2d]:
    """The instance-norm layers of ``model`` that compute per-image statistics."""
    if model is None:
        return []
    return [m for m in model.modules()
            if isinstance(m, nn.InstanceNorm2d) and not (m.track_running_stats and not m.training)]


@contextlib.contextmanager
def whole_image_norm(model: nn.Module | None):
    """Within the block every per-image ``InstanceNorm2d`` of ``model`` obeys the yielded
    :class:`_NormState`: its ``forward`` is swapped on the instance and restored on exit."""
    state = _NormState()
    layers = instance_norms(model)
    for m in layers:
        m.forward = state.forward_for(m)
    try:
        yield state
    finally:
        for m in layers:
            del m.forward


# --------------------------------------------------------------------------------------------
# The tiled run
# --------------------------------------------------------------------------------------------
def shrink(A: torch.Tensor, factor: int, is_label: bool) -> torch.Tensor:
    """``A`` shrunk ``factor`` times: label one-hots by sampling, pictures by box averaging."""
    if factor == 1:
        return A
    if is_label:
        return A[..., ::factor, ::factor].contiguous()
    h, w = A.shape[-2:]
    return F.interpolate(A, size=(max(1, h // factor), max(1, w // factor)), mode="area")


def tile_translate(fn: Callable[..., torch.Tensor], A: torch.Tensor, tile: int, overlap: int,
                   multiple: int = 1, *, scale=1, model: nn.Module | None = None, align: int | None = None,
                   stats: str = "whole", stats_scale: int = 2, is_label: bool = False,
                   device: torch.device | str | None = None, out_device: torch.device | str = "cpu",
                   with_box: bool = False, inference: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Run ``fn`` over ``A`` (B, C_in, H, W) tile by tile; returns float32 (B, C_out, ceil(scale H),
    ceil(scale W)) on ``out_device``. The one tiling engine: the predictor's translations, the
    style-swap encoder, inverse net and optimisation-based inversion all run through it.

    Args:
        fn: the model on one tile: (B, C_in, h, w), h and w multiples of ``multiple`` ->
            (B, C_out, scale h, scale w). With ``with_box``, ``fn(tile, (y0, y1, x0, x1))``
            also gets the tile's place in ``A`` (before padding).
        tile: tile side in input pixels (a multiple of ``multiple`` wastes nothing on padding).
        overlap: input pixels neighbouring tiles share at least (see :func:`plan_axis`).
        multiple: every tile is reflect-padded to a multiple of this before ``fn``, and its
            output cropped back (``imtranslate.ops``).
        scale: output size / input size of ``fn`` (:func:`imtranslate.ops.as_ratio`): 4 for a x4
            net, 1/4 for an encoder that shrinks 4x (then tiles start and end on multiples of 4).
            The output buffer is ``scale`` times the input and the cross-fade weights are laid
            out in output pixels.
        model: the module ``fn`` runs; its per-image instance-norm layers get whole-image
            statistics (None: nothing to freeze).
        align: tile origins are multiples of this (default ``multiple``).
        stats: how those statistics are found: "whole", "stream" or "shrunk" (module docstring).
        stats_scale: the shrink factor of ``stats="shrunk"`` (a power of two).
        is_label: ``A`` holds one-hot labels (shrunk by sampling, never averaged).
        device: where ``fn`` runs; tiles are moved there one at a time (default: ``A``'s device).
        out_device: where the output is blended (the CPU by default: the whole output never
            has to fit next to a tile's activations).
        inference: run under ``torch.inference_mode`` (False for an ``fn`` that takes gradients).
        progress: ``progress(done, total)`` after every tile run (statistics passes included).
    """
    with torch.inference_mode(inference):
        return _tile_run(fn, A, tile, overlap, multiple, scale, model, align, stats, stats_scale, is_label,
                         device, out_device, with_box, progress)


def _tile_run(fn, A, tile, overlap, multiple, scale, model, align, stats, stats_scale, is_label, device,
              out_device, with_box, progress) -> torch.Tensor:
    if tile < 1:
        raise TilingError(f"tile size must be positive, got {tile}")
    if overlap < 0:
        raise TilingError(f"tile overlap must be >= 0, got {overlap}")
    if stats not in ("whole", "stream", "shrunk"):
        raise TilingError(f"unknown statistics mode {stats!r}; choose whole, stream or shrunk")
    up, down = as_ratio(scale)
    device = torch.device(device) if device is not None else A.device
    b, _, H, W = A.shape
    a = align or multiple
    a = a * down // math.gcd(a, down)  # a shrinking net: tiles start on whole output pixels
    plan = TilePlan.make(H, W, tile, overlap, a)
    out_plan = plan.scaled(scale)  # cross-fade bands and weights at the output's resolution
    oys, oxs = out_plan.ys, out_plan.xs
    wy, wx = axis_weights(oys), axis_weights(oxs)
    cy, cx = owned_cuts(plan.ys), owned_cuts(plan.xs)
    norms = bool(instance_norms(model))

    with whole_image_norm(model) as state:
        def run(i: int, j: int) -> torch.Tensor:
            (y0, y1), (x0, x1) = plan.ys[i], plan.xs[j]
            t = pad_to_multiple(A[..., y0:y1, x0:x1].to(device, torch.float32), multiple)
            hp, wp = t.shape[-2:]
            # the last tile owns its padding too: the untiled statistics include the image's pad
            gy1 = y0 + hp if i == len(plan.ys) - 1 else cy[i + 1]
            gx1 = x0 + wp if j == len(plan.xs) - 1 else cx[j + 1]
            state.region = (y0, x0, hp, wp, cy[i], gy1, cx[j], gx1)
            state.begin()
            return fn(t, (y0, y1, x0, x1)) if with_box else fn(t)

        tiles = [(i, j) for i in range(len(plan.ys)) for j in range(len(plan.xs))]
        n_stream = 0
        if norms:
            state.mode = "record"
            if stats == "stream":
                run(0, 0)  # the call order (and starting guesses) of every instance-norm layer
                n_stream = len(state.order)
            else:
                state.begin()
                small = shrink(A, stats_scale if stats == "shrunk" else 1, is_label).to(device, torch.float32)
                small = pad_to_multiple(small, multiple)
                fn(small, (0, H, 0, W)) if with_box else fn(small)
        total, done = (n_stream + 1) * len(tiles), 0
        for key in list(state.order) if n_stream else []:
            state.mode, state.target = "stream", key
            for i, j in tiles:
                try:
                    run(i, j)
                except _Stop:
                    pass
                done += 1
                if progress is not None:
                    progress(done, total)
            state.finish_target()
        state.mode = "apply"

        out = None
        for i, j in tiles:
            (y0, y1), (x0, x1) = oys[i], oxs[j]
            in_size = (plan.ys[i][1] - plan.ys[i][0], plan.xs[j][1] - plan.xs[j][0])
            o = crop_to(run(i, j), in_size, scale).float().to(out_device)
            if out is None:  # the channel count is known after the first tile
                out = torch.zeros(b, o.shape[1], out_plan.height, out_plan.width, dtype=torch.float32,
                                  device=out_device)
            out[..., y0:y1, x0:x1].add_(o.mul_((wy[i][:, None] * wx[j][None, :]).to(o)))
            del o
            done += 1
            if progress is not None:
                progress(done, total)
    # separable weights over a full grid: their sum over the tiles is the product of the sums
    sy = torch.zeros(out.shape[-2], dtype=torch.float64)
    sx = torch.zeros(out.shape[-1], dtype=torch.float64)
    for (y0, y1), w in zip(oys, wy):
        sy[y0:y1] += w
    for (x0, x1), w in zip(oxs, wx):
        sx[x0:x1] += w
    if not (torch.allclose(sy, torch.ones_like(sy)) and torch.allclose(sx, torch.ones_like(sx))):
        out.div_((sy[:, None] * sx[None, :]).to(out))
    return out


# --------------------------------------------------------------------------------------------
# Edge effects: how much overlap a model needs
# --------------------------------------------------------------------------------------------
def probe_input(channels: int, h: int, w: int, is_label: bool, seed: int = 0) -> torch.Tensor:
    """A deterministic picture-like (or label-map-like) input: smooth blobs plus fine noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, max(2, h // 16), max(2, w // 16), generator=g) * 2 - 1
    x = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    if is_label:
        return F.one_hot(x.argmax(1), channels).permute(0, 3, 1, 2).float()
    return (x + 0.1 * torch.randn(1, channels, h, w, generator=g)).clamp(-1, 1)


@torch.inference_mode()
def measure_edge_effect(fn: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor, multiple: int,
                        model: nn.Module | None = None, tol: float = EDGE_TOL, scale=1) -> tuple[int, bool]:
    """How far (input pixels) a tile border changes the output by more than ``tol``.

    Runs ``fn`` on ``probe`` (1, C, P, P) and on ``probe`` without its left ``cut`` columns
    (a multiple of ``multiple``, about a quarter of P), instance norm frozen at the whole
    probe's statistics (as tiles run), and compares the outputs column by column (mean absolute
    difference in [0, 1] units; a net of output ``scale`` is compared in output columns and the
    distance given back in input pixels). Returns ``(distance, saturated)``: ``saturated`` is
    True when the change never fell below ``tol`` within the probe (the true distance is larger).
    """
    up, down = as_ratio(scale)
    p = probe.shape[-1]
    step = multiple * down // math.gcd(multiple, down)
    cut = step * max(1, round(p / 4 / step))
    if cut >= p:
        return 0, True
    with whole_image_norm(model) as state:
        state.mode = "record"
        state.begin()
        whole = crop_to(fn(pad_to_multiple(probe, multiple)), probe.shape[-2:], scale)
        state.mode = "apply"
        state.begin()
        part = crop_to(fn(pad_to_multiple(probe[..., cut:], multiple)), (probe.shape[-2], p - cut), scale)
    prof = ((part - whole[..., cut * up // down:]).abs().mean(dim=(0, 1, 2)) / 2).cpu()  # by distance from the cut
    above = (prof > tol).nonzero()
    if len(above) == 0:
        return 0, False
    d = int(above[-1]) + 1
    return scale_size(d, Fraction(down, up)), d >= prof.numel()


def overlap_for_edge(distance: int) -> int:
    """The overlap that hides an edge effect reaching ``distance`` pixels in (a multiple of 8).

    With twice the distance, every pixel a tile contributes lies at least 3/4 of it from the
    tile's border (the cross-fade is the middle quarter of the overlap).
    """
    return 8 * math.ceil(OVERLAP_PER_EDGE * distance / 8)


# --------------------------------------------------------------------------------------------
# Memory: measure, budget, choose
# --------------------------------------------------------------------------------------------
def rss_bytes() -> int:
    """Resident memory of this process now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes() -> int:
    """Peak resident memory since the last :func:`reset_peak_rss` (VmHWM); OSError without /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("VmHWM not found in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        peak_rss_bytes()
        return True
    except OSError:
        return False


def _trim() -> None:
    """Give freed heap memory back to the OS, so the resident size is what is live."""
    release_free_memory()


def memory_in_use(device: torch.device) -> int:
    """What counts against a budget now: CUDA allocated memory, or this process's RSS."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    _trim()
    return rss_bytes()


def _available_bytes() -> int:
    """MemAvailable of /proc/meminfo (0 where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def default_budget(device: torch.device) -> int:
    """Bytes one translation may use by default.

    CUDA: 90% of the GPU memory (free plus what torch holds). CPU: what the process holds now
    plus half the memory the system has available, but at least 2 GB for the whole process.
    Tiling is slower, and with instance norm streamed statistics cost several passes, so a
    machine with spare memory translates untiled whatever fits in half of it.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.9 * (free + torch.cuda.memory_allocated(device)))
    return max(int(DEFAULT_CPU_BUDGET_GB * 2**30), memory_in_use(device) + _available_bytes() // 2)


@dataclass
class MemoryModel:
    """Peak memory one forward adds: ``fixed + per_pixel * batch * h * w`` bytes (times SAFETY),
    ``h * w`` in input pixels; the output has ``out_channels`` at ``scale`` times the input size."""

    fixed: float
    per_pixel: float
    out_channels: int
    method: str = ""
    scale: float = 1.0

    def output_bytes(self, batch: int, h: int, w: int) -> float:
        """The float32 output of a ``batch`` of ``h x w`` inputs (what tiles are blended into)."""
        return 4 * batch * self.out_channels * h * w * self.scale**2

    def bytes_for(self, batch: int, h: int, w: int) -> float:
        return SAFETY * (self.fixed + self.per_pixel * batch * h * w)


def _peak_of(run: Callable[[], torch.Tensor], device: torch.device,
             leaves: list[nn.Module]) -> tuple[int, str]:
    """Peak bytes ``run()`` adds to what was in use before it, and how that was measured."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, "CUDA allocator peak"
    _trim()
    base = rss_bytes()
    if base and reset_peak_rss():
        run()
        return max(0, peak_rss_bytes() - base), "peak RSS (VmHWM)"
    # no /proc: the sum of every module output, an upper bound of what is alive at once
    total = [0]

    def hook(_m, _i, o):
        if torch.is_tensor(o):
            total[0] += o.numel() * o.element_size()

    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return total[0], "sum of module outputs"


@torch.inference_mode()
def measure_memory(fn: Callable[[torch.Tensor], torch.Tensor], in_channels: int, multiple: int,
                   device: torch.device | str = "cpu", model: nn.Module | None = None,
                   sizes: tuple[int, int] | None = None, scale=1) -> MemoryModel:
    """Fit ``fixed + per_pixel * pixels`` to the peak memory of ``fn`` on two square probes.

    The probes are multiples of ``multiple`` (about 128 and 256 px, the second at least twice
    the first); a first run warms caches so one-off allocations are not taken for activations.
    """
    device = torch.device(device)
    if sizes is None:
        p1 = multiple * math.ceil(128 / multiple)
        sizes = (p1, multiple * math.ceil(max(256, 2 * p1) / multiple))
    leaves = [m for m in model.modules() if not list(m.children())] if model is not None else []
    c_out = fn(torch.zeros(1, in_channels, sizes[0], sizes[0], device=device)).shape[1]
    peaks, method = [], ""
    for s in sizes:
        x = torch.zeros(1, in_channels, s, s, device=device)
        peak, method = _peak_of(lambda: fn(x), device, leaves)
        peaks.append(peak)
        del x
    px = [s * s for s in sizes]
    slope = (peaks[1] - peaks[0]) / (px[1] - px[0])
    # a noisy slope (allocator granularity on tiny models) must not claim pixels are free
    per_pixel = max(slope, 0.5 * peaks[1] / px[1])
    # besides the model: the tile crop, its padded copy, the output and its weighted copy
    up, down = as_ratio(scale)
    per_pixel += 4 * (2 * in_channels + 2 * c_out * (up / down) ** 2)
    fixed = max(0.0, peaks[1] - per_pixel * px[1])
    return MemoryModel(fixed=fixed, per_pixel=per_pixel, out_channels=c_out, method=method, scale=up / down)


def round_up(n: int, m: int) -> int:
    return m * math.ceil(n / m)


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


@dataclass
class TilingChoice:
    """``tile`` 0: untiled. Otherwise the tile side, its overlap and how instance-norm
    statistics are found (:func:`tile_translate`)."""

    tile: int
    overlap: int = 0
    stats: str = "whole"
    stats_scale: int = 1
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def choose_tiling(mem: MemoryModel | None, shape, multiple: int, budget: float, in_use: float, *,
                  tile: int | None = None, overlap: int = 64, overlap_measured: bool = False,
                  instance_norm: bool = False, fast_stats: bool = False) -> TilingChoice:
    """Untiled when the whole image fits the ``budget`` (bytes, ``in_use`` of it already taken),
    else the largest tile that fits. ``tile`` forces a size (0: untiled). ``mem`` may be None
    only when nothing needs estimating (a forced tile size on a net without instance norm).

    A tile must be at least twice the overlap. When the budget only allows smaller tiles, a
    ``overlap_measured`` (default) overlap shrinks to half the tile, with a note saying so; an
    overlap the user asked for is kept and the budget is reported as too small.
    """
    b, _, h, w = shape
    hp, wp = round_up(h, multiple), round_up(w, multiple)
    if overlap < 0:
        raise TilingError(f"tile overlap must be >= 0, got {overlap}")
    if tile == 0:
        return TilingChoice(0, reason="untiled (asked for)")
    avail = budget - in_use
    whole_fits = mem is not None and mem.bytes_for(b, hp, wp) <= avail

    def stats_choice() -> tuple[str, int]:
        if not instance_norm or whole_fits:
            return "whole", 1
        if not fast_stats:
            return "stream", 1
        f = 2
        while mem.bytes_for(b, round_up(math.ceil(h / f), multiple), round_up(math.ceil(w / f), multiple)) > avail:
            f *= 2
        return "shrunk", f

    if tile is not None:
        if tile < 1:
            raise TilingError(f"tile size must be 0 (untiled) or positive, got {tile}")
        if overlap >= tile:
            raise TilingError(f"the tile overlap ({overlap}) must be smaller than the tile ({tile})")
        return TilingChoice(int(tile), overlap, *stats_choice(), reason="tile size asked for")
    if whole_fits:
        return TilingChoice(0, reason=f"untiled: needs ~{_gb(mem.bytes_for(b, hp, wp))} of {_gb(avail)} free")
    accum = mem.output_bytes(b, h, w)  # the float32 output the tiles are blended into
    room = avail - accum
    smallest = round_up(max(2 * overlap, multiple), multiple)
    side = multiple * int(math.sqrt(max(0.0, (room / SAFETY - mem.fixed) / (mem.per_pixel * b))) // multiple)
    side = min(side, round_up(max(h, w), multiple))
    notes = []
    if side < smallest and overlap_measured and side >= max(multiple, 32):
        notes.append(f"the budget allows {side} px tiles, too small for the {overlap} px overlap this model "
                     f"needs: overlap {8 * (side // 16)} px, so tile borders may show (raise --max-memory)")
        overlap = 8 * (side // 16)
        smallest = side
    if side < smallest:
        need = mem.bytes_for(b, smallest, smallest) + accum
        raise TilingError(f"the memory budget ({_gb(budget)}, {_gb(in_use)} of it in use) cannot hold a "
                          f"{smallest}x{smallest} tile ({overlap} px overlap) and the output: ~{_gb(need)} more "
                          f"needed; raise --max-memory (or lower --tile-overlap)")
    return TilingChoice(side, overlap, *stats_choice(),
                        reason=f"tiled: {side} px tiles need ~{_gb(mem.bytes_for(b, side, side) + accum)} "
                               f"of {_gb(avail)} free", notes=notes)


# --------------------------------------------------------------------------------------------
# How close is tiled to untiled
# --------------------------------------------------------------------------------------------
def compare_outputs(tiled: torch.Tensor, untiled: torch.Tensor, plan: TilePlan) -> dict[str, float]:
    """Differences between a tiled and an untiled output (B, C, H, W) in [-1, 1], reported in
    [0, 1] units (multiply by 255 for 8-bit levels):

    * ``mean`` / ``max``: mean and largest absolute difference;
    * ``band_line_max`` / ``other_line_max``: the largest mean absolute difference along one
      row or column inside a cross-fade band / anywhere else (a seam is a band line worse than
      any other line);
    * ``seam_step``: on the lines of the cross-fade bands and where tiles start or end, how much
      larger the tiled output's mean jump between neighbouring pixels is than the untiled
      one's (0: no step the untiled output does not also have).
    """
    d = (tiled.float() - untiled.float()).abs() / 2
    col, row = d.mean(dim=(0, 1, 2)), d.mean(dim=(0, 1, 3))
    bc, br = set(plan.blend_columns()), set(plan.blend_rows())
    band = [col[i] for i in sorted(bc)] + [row[i] for i in sorted(br)]
    other = [col[i] for i in range(col.numel()) if i not in bc] + [row[i] for i in range(row.numel()) if i not in br]
    jx = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean(dim=(0, 1, 2)) / 2  # noqa: E731  jump x-1 -> x
    jy = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean(dim=(0, 1, 3)) / 2  # noqa: E731
    lx, ly = sorted(bc | set(plan.tile_edges_x())), sorted(br | set(plan.tile_edges_y()))
    steps = [float(jx(tiled)[x - 1] - jx(untiled)[x - 1]) for x in lx if 0 < x < col.numel()]
    steps += [float(jy(tiled)[y - 1] - jy(untiled)[y - 1]) for y in ly if 0 < y < row.numel()]
    return {"mean": float(d.mean()), "max": float(d.max()),
            "band_line_max": float(max(band)) if band else 0.0,
            "other_line_max": float(max(other)) if other else 0.0,
            "seam_step": max([0.0, *steps])}
