"""vid2vid's sequential generator (Wang et al. 2018, "Video-to-Video Synthesis").

From the current input frame ``s_t``, the previous input ``s_{t-1}`` and the previous output
``x_{t-1}`` it predicts

* the flow ``w_{t-1->t}`` (pixels; ``x_{t-1}`` warped by it lines up with frame t),
* a hallucinated frame ``h_t`` (pix2pixHD's generator: coarse-to-fine, residual blocks),
* a soft occlusion mask ``m_t`` in [0, 1] (1 = the warped past is right here),

and outputs ``x_t = m_t * warp(x_{t-1}, w) + (1 - m_t) * h_t``. With ``fg_bg`` (label-map inputs)
the foreground pixels (a mask ``fg`` the caller makes from the classes it calls foreground) are
hallucinated by their own head, since moving objects are what warping gets wrong:
``x_t = fg * h_fg + (1 - fg) * (m * warp + (1 - m) * h_bg)``.

The first frame of a shot (``first``) has no past: previous input and output are zeros and the
mask is 0, so ``x_t = h_t``. ``forward(x)`` is that first-frame output, so the net also works as
an image translator. The recurrence over frames lives in the task (training) and in
``infer/vid2vid.py`` (streaming); this module only holds one step.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import crop_to, pad_to_multiple, warp_tensor
from .layers import output_head
from .pix2pixhd import Pix2PixHDGenerator
from .registry import init_config, register_net
from .resnet_gen import ResNetGenerator


@register_net("vid2vid")
class Vid2VidGenerator(nn.Module):
    """One step of the sequential generator; see the module docstring.

    ``in_channels``: channels of one encoded input frame; the image branch (a
    :class:`Pix2PixHDGenerator`) and the flow/mask branch (a :class:`ResNetGenerator` body with a
    3-channel linear head) both see ``[s_t, s_{t-1}, x_{t-1}]``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 32,
        n_downsampling: int = 3,
        n_blocks: int = 6,
        n_local_enhancers: int = 0,
        n_blocks_local: int = 3,
        norm: str = "instance",
        flow_ngf: int = 16,
        flow_downsampling: int = 3,
        flow_blocks: int = 3,
        fg_bg: bool = False,
    ):
        super().__init__()
        self.config = init_config(locals())
        seq_in = 2 * in_channels + out_channels  # (s_t, s_{t-1}, x_{t-1})
        self.in_channels, self.out_channels = in_channels, out_channels
        self.image = Pix2PixHDGenerator(in_channels=seq_in, out_channels=out_channels, ngf=ngf,
                                        n_downsampling=n_downsampling, n_blocks=n_blocks,
                                        n_local_enhancers=n_local_enhancers, n_blocks_local=n_blocks_local, norm=norm)
        self.fg_head = output_head(ngf, out_channels) if fg_bg else None  # finest features: ngf wide
        flow = ResNetGenerator(in_channels=seq_in, out_channels=3, ngf=flow_ngf, n_downsampling=flow_downsampling,
                               n_blocks=flow_blocks, norm=norm)
        self.flow_body = flow.body
        self.flow_head = nn.Conv2d(flow_ngf, 3, 3, padding=1)  # (flow x, flow y, mask logit), linear
        # start near zero flow and mask 0.5 (small, not zero, weights: the body still gets gradients)
        nn.init.normal_(self.flow_head.weight, std=1e-3)
        nn.init.zeros_(self.flow_head.bias)
        self.multiple = max(self.image.multiple, flow.multiple)
        self.scale = 1

    def step(self, cur: torch.Tensor, prev_in: torch.Tensor | None = None, prev_out: torch.Tensor | None = None,
             fg: torch.Tensor | None = None, first: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One frame. ``cur``/``prev_in`` (B, C_in, H, W), ``prev_out`` (B, C_out, H, W) in [-1, 1],
        ``fg`` (B, 1, H, W) in [0, 1] (with ``fg_bg``), ``first`` (B,) bool: no past for these.

        Returns ``out``, ``hallucinated``, ``flow`` (B, 2, H, W), ``mask`` (B, 1, H, W), ``warped``.
        """
        b, _, h, w = cur.shape
        if prev_in is None or prev_out is None:
            prev_in = torch.zeros_like(cur)
            prev_out = cur.new_zeros(b, self.out_channels, h, w)
            first = torch.ones(b, dtype=torch.bool, device=cur.device)
        keep = (~first).to(cur.dtype).view(b, 1, 1, 1) if first is not None else cur.new_ones(b, 1, 1, 1)
        prev_in, prev_out = prev_in * keep, prev_out * keep  # a new shot sees no past
        x = pad_to_multiple(torch.cat([cur, prev_in, prev_out], 1), self.multiple)  # (B, 2C_in+C_out, H', W')
        feat, head = self.image.features(x)
        hallucinated = crop_to(head(feat), (h, w))  # (B, C_out, H, W)
        fm = crop_to(self.flow_head(self.flow_body(x)), (h, w))  # (B, 3, H, W)
        flow = fm[:, :2]
        mask = torch.sigmoid(fm[:, 2:3]) * keep  # (B, 1, H, W); 0 on a shot's first frame
        warped = warp_tensor(prev_out, flow)
        out = mask * warped + (1 - mask) * hallucinated
        if self.fg_head is not None and fg is not None:
            h_fg = crop_to(self.fg_head(feat), (h, w))
            out = fg * h_fg + (1 - fg) * out
        return {"out": out, "hallucinated": hallucinated, "flow": flow, "mask": mask, "warped": warped}

    def forward(self, cur: torch.Tensor, prev_in: torch.Tensor | None = None,
                prev_out: torch.Tensor | None = None) -> torch.Tensor:
        """The output frame; without a past, the first frame of a shot (an image translator)."""
        return self.step(cur, prev_in, prev_out)["out"]
