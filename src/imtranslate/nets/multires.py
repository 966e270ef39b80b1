"""The multi-resolution, multi-output generator of SPEC S1 (the flagship model).

Levels are indexed 0 = coarsest ... n_levels-1 = finest; level i works at 1/2**(n_levels-1-i)
of the finest size with width ``c_i = min(ngf * 2**(n_levels-1-i), max_channels)``::

    x_2 ─E_2─ e_2 ───────────────────────────────┐ (skip)
              │ Down_2                            │
    x_1 ─E_1─ e_1 ─Fuse_1─ h_1 ────────────┐      │
                           │ Down_1        │      │
    x_0 ─E_0─ e_0 ─Fuse_0─ h_0 ─ bottleneck ─ D_0 ─ Up_1 ─ D_1 ─ Up_2 ─ D_2
                                            │          │           │
                                          out_0      out_1       out_2

Fine features flow coarse-ward through the encoders; the cascaded decoder climbs back and
fuses each level's input features (e_i) as it passes that level. Staged training activates
the k coarsest levels only (:meth:`MultiResGenerator.set_active_levels`).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from ..ops import crop_to, pad_to_size
from .layers import ConvNormAct, down_block, output_head, res_blocks, up_block
from .registry import init_config, register_net


class _Level(nn.Module):
    """Every module that belongs to one level (and only to it), so a level can be trained alone.

    encoder: x_i -> e_i;  down: h_i -> the coarser level's size and width (levels >= 1);
    fuse: concat(e_i, Down(h_{i+1})) -> h_i (concat fusion, all but the finest level);
    up: d_{i-1} -> level i's size and width (levels >= 1); skip: concat(up, e_i) -> c_i;
    decoder: residual blocks -> d_i; head: d_i -> out_i.
    """

    def __init__(self, *, in_channels, out_channels, width, coarser_width, finest, n_enc_blocks,
                 n_dec_blocks, norm, fusion):
        super().__init__()
        self.encoder = nn.Sequential(
            ConvNormAct(in_channels, width, 7, pad_mode="reflect", norm=norm),
            *res_blocks(width, n_enc_blocks, norm=norm),
        )
        coarsest = coarser_width is None
        self.down = None if coarsest else down_block(width, coarser_width, norm=norm)
        self.fuse = None if finest or fusion == "sum" else ConvNormAct(2 * width, width, 3, norm=norm)
        # Bilinear up-sampling + conv between decoder levels (no checkerboard artefacts).
        self.up = None if coarsest else up_block(coarser_width, width, norm=norm, mode="bilinear")
        self.skip = ConvNormAct(2 * width, width, 3, norm=norm)
        self.decoder = res_blocks(width, n_dec_blocks, norm=norm)
        self.head = output_head(width, out_channels)


@register_net("multires")
class MultiResGenerator(nn.Module):
    """N pyramid inputs (coarsest first, each half the next) -> N outputs of the same sizes.

    * ``forward(pyramid, return_all=None)``: ``pyramid`` holds n_levels tensors
      (B, in_channels, H_i, W_i), or just the active ones. Returns the list of the k active
      outputs (B, out_channels, H_i, W_i), coarsest first, in training mode or with
      ``return_all=True``; otherwise (inference) only the finest active output.
    * Any sizes: each level is padded so the finest active one is a multiple of
      ``2**(k-1 + n_bottleneck_down)`` (``multiple`` for the full model) and outputs are
      cropped back to their input's size.
    * ``fusion="concat"`` fuses a finer level's features by concatenation + conv-norm-relu;
      when that finer level is inactive, zeros stand in for its half so the same weights serve
      every training stage. ``fusion="sum"`` adds them instead.
    * ``n_enc_blocks_coarse``: residual blocks in the encoders of every level but the finest
      (None = ``n_enc_blocks``), a lighter input module where the pictures are small.
    * The bottleneck (stride-2 convs to ``max_channels``, residual blocks, bilinear up-sampling
      back to the coarsest size) has the same width whatever the number of levels.
    * :meth:`level_parameters` ``(i)`` yields the parameters of level i only (the bottleneck
      belongs to level 0); over all levels every parameter appears exactly once.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        n_levels: int = 3,
        ngf: int = 32,
        max_channels: int = 256,
        n_enc_blocks: int = 1,
        n_bottleneck_down: int = 2,
        n_res_blocks: int = 3,
        n_dec_blocks: int = 1,
        norm: str = "instance",
        fusion: str = "concat",
        n_enc_blocks_coarse: int | None = None,
    ):
        super().__init__()
        self.config = init_config(locals())
        if n_levels < 1:
            raise ValueError(f"n_levels must be >= 1, got {n_levels}")
        if fusion not in ("concat", "sum"):
            raise ValueError(f"unknown fusion {fusion!r}; choose 'concat' or 'sum'")
        self.in_channels = in_channels
        self.n_levels = n_levels
        self.n_bottleneck_down = n_bottleneck_down
        self.multiple = 2 ** (n_levels - 1 + n_bottleneck_down)  # the finest level is padded to this
        self.scale = 1  # output size / finest input size (each output level is its input level's size)
        self.widths = [min(ngf * 2 ** (n_levels - 1 - i), max_channels) for i in range(n_levels)]
        self.levels = nn.ModuleList(
            _Level(
                in_channels=in_channels, out_channels=out_channels, width=self.widths[i],
                coarser_width=self.widths[i - 1] if i > 0 else None, finest=i == n_levels - 1,
                n_enc_blocks=n_enc_blocks if i == n_levels - 1 or n_enc_blocks_coarse is None else n_enc_blocks_coarse,
                n_dec_blocks=n_dec_blocks, norm=norm, fusion=fusion,
            )
            for i in range(n_levels)
        )
        # Bottleneck widths: doubling from c_0, the deepest one exactly max_channels.
        b = [min(self.widths[0] * 2**j, max_channels) for j in range(n_bottleneck_down)] + [max_channels]
        b = b if n_bottleneck_down else [self.widths[0]]
        self.bottleneck = nn.Sequential(
            *[down_block(b[j], b[j + 1], norm=norm) for j in range(n_bottleneck_down)],
            *res_blocks(b[-1], n_res_blocks, norm=norm),
            *[up_block(b[j + 1], b[j], norm=norm, mode="bilinear") for j in reversed(range(n_bottleneck_down))],
        )
        self.active_levels = n_levels

    # ---------------------------------------------------------------------------- staging
    def set_active_levels(self, k: int) -> None:
        """Use only the ``k`` coarsest levels (1..n_levels); staged training grows k."""
        if not 1 <= k <= self.n_levels:
            raise ValueError(f"active levels must be in 1..{self.n_levels}, got {k}")
        self.active_levels = k

    def run_state(self) -> dict:
        """What the weights do not carry: how many levels are active (saved in checkpoints)."""
        return {"active_levels": self.active_levels}

    def load_run_state(self, state: dict) -> None:
        # a checkpoint saved mid-schedule predicts with the levels trained so far
        self.set_active_levels(int(state.get("active_levels", self.active_levels)))

    def level_parameters(self, i: int) -> Iterator[nn.Parameter]:
        """Parameters that belong to level ``i`` only (level 0 also owns the bottleneck)."""
        if not 0 <= i < self.n_levels:
            raise ValueError(f"level must be in 0..{self.n_levels - 1}, got {i}")
        yield from self.levels[i].parameters()
        if i == 0:
            yield from self.bottleneck.parameters()

    def active_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the active levels (what an optimiser needs in the current stage)."""
        for i in range(self.active_levels):
            yield from self.level_parameters(i)

    # ---------------------------------------------------------------------------- forward
    def _check_pyramid(self, pyramid: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        k = self.active_levels
        if isinstance(pyramid, torch.Tensor) or len(pyramid) not in (self.n_levels, k):
            got = "a single tensor" if isinstance(pyramid, torch.Tensor) else f"{len(pyramid)} levels"
            raise ValueError(
                f"the multi-resolution generator takes a list of {self.n_levels} pyramid levels "
                f"(coarsest first) or of its {k} active ones, got {got}"
            )
        xs = list(pyramid[:k])
        for i, x in enumerate(xs):
            if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[0] != xs[0].shape[0]:
                raise ValueError(
                    f"pyramid level {i} must be (B, {self.in_channels}, H, W) with the same B as "
                    f"level 0, got {tuple(x.shape)}"
                )
        for i in range(1, k):
            (hc, wc), (hf, wf) = xs[i - 1].shape[-2:], xs[i].shape[-2:]
            if hc not in (hf // 2, (hf + 1) // 2) or wc not in (wf // 2, (wf + 1) // 2):
                raise ValueError(
                    f"pyramid level {i - 1} is {hc}x{wc} but level {i} is {hf}x{wf}: each level must "
                    f"be half the size of the next finer one (coarsest first)"
                )
        return xs

    def _fuse(self, i: int, e: torch.Tensor, from_finer: torch.Tensor | None) -> torch.Tensor:
        """h_i from e_i and (if level i+1 is active) Down_{i+1}(h_{i+1})."""
        fuse = self.levels[i].fuse
        if fuse is None:  # finest level, or fusion="sum"
            return e if from_finer is None else e + from_finer
        return fuse(torch.cat([e, torch.zeros_like(e) if from_finer is None else from_finer], dim=1))

    def forward(self, pyramid: Sequence[torch.Tensor], return_all: bool | None = None):
        k = self.active_levels
        xs = self._check_pyramid(pyramid)
        sizes = [x.shape[-2:] for x in xs]
        # Pad so the finest active level is a multiple of what the encoder needs and every
        # coarser level is exactly half the next one.
        m = 2 ** (k - 1 + self.n_bottleneck_down)
        hp, wp = (math.ceil(s / m) * m for s in sizes[-1])
        xs = [pad_to_size(x, (hp >> (k - 1 - i), wp >> (k - 1 - i))) for i, x in enumerate(xs)]

        e = [self.levels[i].encoder(x) for i, x in enumerate(xs)]  # e[i]: (B, c_i, H_i, W_i)
        h = None
        for i in reversed(range(k)):  # fine features flow coarse-ward
            h = self._fuse(i, e[i], None if h is None else self.levels[i + 1].down(h))  # (B, c_i, H_i, W_i)
        d = self.bottleneck(h)  # (B, c_0, H_0, W_0)

        all_outputs = self.training if return_all is None else return_all
        outputs = []
        for i in range(k):
            level = self.levels[i]
            if i > 0:
                d = level.up(d)  # (B, c_i, H_i, W_i)
            d = level.decoder(level.skip(torch.cat([d, e[i]], dim=1)))  # (B, c_i, H_i, W_i)
            if all_outputs or i == k - 1:
                outputs.append(crop_to(level.head(d), sizes[i]))  # (B, C_out, H_i, W_i) as given
        return outputs if all_outputs else outputs[-1]
