"""vid2vid (Wang et al. 2018): a sequential generator trained on clips of K frames.

For every frame ``t`` of a training clip (``data/video_clips.py``: ``clip_A``, ``clip_B``, the flow
``w_t`` from frame t to t-1 and its validity ``v_t``, ``cut``)::

    r_t = G.step(s_t, s_{t-1}, x_{t-1}.detach(), fg_t, first = cut_t)
        x_t = m_t * warp(x_{t-1}, f_t) + (1 - m_t) * h_t         (nets/vid2vid.py)
    G:  lambda_gan   * GAN(D_I(s_t, x_t))              image D: pix2pixHD's multi-scale D, every frame
      + lambda_video * GAN(D_V(x_1..K, w_2..K))        video D: K frames stacked with their flows
      + lambda_fm    * feature matching (both Ds)
      + lambda_l1 * |x_t - y_t| + lambda_vgg * VGG(x_t, y_t)
      + lambda_flow  * |f_t - w_t|_v                   flow loss against the reference flow
      + lambda_warp  * |warp(y_{t-1}, f_t) - y_t|_v    warping loss on the target frames
      + lambda_mask  * |m_t - v_t|                     the mask learns where the past is visible
    D:  the same Ds on (s_t, y_t) / (y_1..K, w) as real and the generated ones as fake.

The reference flow is exact for the synthetic clips and DIS on the target frames for users'
clips. The flow branch is trained from scratch with the flow loss (vid2vid initialised it from a
pretrained FlowNet2; no weights are downloaded here, and a supervised flow loss from the first
step gets the same effect on these clips). Previous outputs are detached (no backpropagation
through time), so a K-frame clip costs K generator passes. A cut (``cut_t``) starts a new shot:
no past, mask 0, ``x_t = h_t``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import metrics
from ..config import Config
from ..data.datasets import input_kind
from ..errors import ConfigError
from ..losses import GANLoss, GanMode, VGGLoss, feature_matching_loss, flow_loss, l1_loss, temporal_loss
from ..nets.layers import Norm
from ..ops import warp_tensor
from . import register_task
from .base import Task, set_requires_grad


@dataclass
class Vid2VidConfig:
    n_frames: int = 4  # K: frames per training clip (and the video D's window)
    ngf: int = 32  # image branch (pix2pixHD generator) width of its finest level
    n_downsampling: int = 3
    n_blocks: int = 6
    n_local_enhancers: int = 0  # pix2pixHD local enhancers on top of G1 (0 = G1 alone)
    n_blocks_local: int = 3
    norm: Norm = "instance"
    flow_ngf: int = 16  # flow + mask branch width
    flow_downsampling: int = 3
    flow_blocks: int = 3
    ndf: int = 32  # image D (multi-scale PatchGAN)
    n_layers_d: int = 3
    num_d: int = 2
    norm_d: Norm = "instance"
    ndf_video: int = 32  # video D: K frames + K-1 flows stacked as channels
    num_d_video: int = 2
    gan_mode: GanMode = "lsgan"
    lambda_gan: float = 1.0
    lambda_video: float = 1.0
    lambda_fm: float = 10.0
    lambda_l1: float = 0.0  # pixel L1 to the target frames (the built-in CPU config uses it instead of VGG)
    lambda_vgg: float = 10.0  # VGG-19 perceptual loss (0: no VGG weights needed)
    vgg_weights: str = "imagenet"
    lambda_flow: float = 10.0  # flow loss against the reference flow
    lambda_warp: float = 10.0  # warping loss: target t-1 warped by the predicted flow vs target t
    lambda_mask: float = 1.0  # mask towards the validity of the reference flow
    fg_bg: bool = False  # label inputs: foreground classes hallucinated by their own head
    fg_classes: list[int] = field(default_factory=list)  # which label classes are foreground
    # synthetic clips (data.dataset=synthetic): motion scale, light change, share of clips with a cut
    clip_motion: float = 1.0
    clip_light: float = 0.05
    clip_cut_prob: float = 0.2


def foreground(A: torch.Tensor, cfg: Config) -> torch.Tensor | None:
    """(B, 1, H, W) 1 on the foreground classes of one-hot label inputs (``model.fg_bg``)."""
    m = cfg.model
    if not m.fg_bg:
        return None
    return A[:, list(m.fg_classes)].sum(1, keepdim=True).clamp(0, 1)


def generate_clip(G, clip_A: torch.Tensor, cfg: Config, cut: torch.Tensor | None = None,
                  detach: bool = True) -> list[dict]:
    """Run ``G`` over clips ``(B, K, C, H, W)`` frame by frame; ``cut (B, K)`` starts new shots
    (frame 0 always does). Returns one :meth:`Vid2VidGenerator.step` dict per frame."""
    b, k = clip_A.shape[:2]
    if cut is None:
        cut = torch.zeros(b, k, dtype=torch.bool, device=clip_A.device)
    cut = cut.clone()
    cut[:, 0] = True
    steps, prev_out = [], None
    for t in range(k):
        cur = clip_A[:, t]
        prev_in = clip_A[:, t - 1] if t > 0 else torch.zeros_like(cur)
        if prev_out is None:
            prev_out = cur.new_zeros(b, G.out_channels, *cur.shape[-2:])
        r = G.step(cur, prev_in, prev_out.detach() if detach else prev_out, foreground(cur, cfg), cut[:, t])
        steps.append(r)
        prev_out = r["out"]
    return steps


@register_task
class Vid2VidTask(Task):
    name = "vid2vid"
    Config = Vid2VidConfig

    @classmethod
    def check_config(cls, cfg) -> None:
        m = cfg.model
        if m.n_frames < 2:
            raise ConfigError(f"model.n_frames must be >= 2 (a clip needs a previous frame), got {m.n_frames}")
        if cfg.data.dataset not in ("synthetic", "folders"):
            raise ConfigError(f"vid2vid trains on clips: data.dataset must be synthetic (animated scenes) or "
                              f"folders (<root>/A/<clip> and <root>/B/<clip>), got {cfg.data.dataset}")
        if m.fg_bg:
            if input_kind(cfg.data) != "label":
                raise ConfigError("model.fg_bg (foreground / background apart) needs label-map inputs")
            n = cfg.data.synthetic.n_classes if cfg.data.dataset == "synthetic" else cfg.data.n_classes
            bad = [c for c in m.fg_classes if not 0 <= c < n]
            if not m.fg_classes or bad:
                raise ConfigError(f"model.fg_bg needs model.fg_classes, a list of label classes in 0..{n - 1}"
                                  + (f" (got {bad})" if bad else ""))

    # ---- data: clips --------------------------------------------------------------------------
    @classmethod
    def check_data(cls, cfg) -> dict:
        ds = cls.build_dataset(cfg, "train")
        item = ds[0]
        return {"clips": len(ds), "frames per clip": int(item["clip_A"].shape[0]),
                "frame size": tuple(item["A"].shape[-2:])}

    @classmethod
    def build_dataset(cls, cfg, split: str):
        from ..data.video_clips import FolderClips, SyntheticClips

        m, d = cfg.model, cfg.data
        if d.dataset == "synthetic":
            return SyntheticClips(d, split, m.n_frames, motion=m.clip_motion, light=m.clip_light,
                                  cut_prob=m.clip_cut_prob if split == "train" else 0.0)
        from pathlib import Path

        root = Path(d.val_root) if split == "val" and d.val_root else Path(d.root) / (split if (Path(d.root) / split).is_dir() else "")
        if split == "val" and not d.val_root and not (Path(d.root) / "val").is_dir():
            root = Path(d.root)  # no held-out clips: validate on the training clips
        return FolderClips(d, root, m.n_frames)

    # ---- construction --------------------------------------------------------------------------
    def build(self) -> None:
        m = self.m
        G = self.add_net("G", "vid2vid", in_channels=self.in_channels, out_channels=self.out_channels, ngf=m.ngf,
                         n_downsampling=m.n_downsampling, n_blocks=m.n_blocks, n_local_enhancers=m.n_local_enhancers,
                         n_blocks_local=m.n_blocks_local, norm=m.norm, flow_ngf=m.flow_ngf,
                         flow_downsampling=m.flow_downsampling, flow_blocks=m.flow_blocks, fg_bg=m.fg_bg)
        D = self.add_net("D", "multiscale", in_channels=self.in_channels + self.out_channels, ndf=m.ndf,
                         n_layers=m.n_layers_d, num_d=m.num_d, norm=m.norm_d)
        K = m.n_frames
        DV = self.add_net("DV", "multiscale", in_channels=K * self.out_channels + (K - 1) * 2, ndf=m.ndf_video,
                          n_layers=m.n_layers_d, num_d=m.num_d_video, norm=m.norm_d)
        crop = self.cfg.data.synthetic.size if self.cfg.data.dataset == "synthetic" else self.cfg.data.crop_size
        self.check_patch_size(D, crop, "the image discriminator")
        self.check_patch_size(DV, crop, "the video discriminator")
        self.gan = GANLoss(m.gan_mode)
        self.vgg_loss = None
        if m.lambda_vgg > 0:
            from ..nets.vgg import VGG19Features

            self.vgg_loss = VGGLoss(VGG19Features(weights=m.vgg_weights).to(self.device), style_layers=())
        self.add_optimizer("G", G.parameters(), self.cfg.train.lr_g)
        self.add_optimizer("D", list(D.parameters()) + list(DV.parameters()), self.cfg.train.lr_d)

    # ---- training ------------------------------------------------------------------------------
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        G, D, DV, m = self.nets["G"], self.nets["D"], self.nets["DV"], self.m
        A, B, flow, valid, cut = batch["clip_A"], batch["clip_B"], batch["flow"], batch["valid"], batch["cut"]
        b, k = A.shape[:2]
        with self.autocast():
            steps = generate_clip(G, A, self.cfg, cut)
        fake = torch.stack([r["out"] for r in steps], 1)  # (B, K, 3, H, W)
        has_past = (~cut).float().view(b, k, 1, 1, 1)  # frames whose flow and mask are learned
        has_past[:, 0] = 0

        set_requires_grad([D, DV], True)
        with self.autocast():
            # image D over every frame at once: (B*K, C_in + 3, H, W)
            a_flat = A.flatten(0, 1)
            real_i = D(torch.cat([a_flat, B.flatten(0, 1)], 1))
            fake_i = D(torch.cat([a_flat, fake.flatten(0, 1)], 1))
            # video D: the K frames with the reference flows (real and fake see the same motion)
            flows = flow[:, 1:].flatten(1, 2)  # (B, 2(K-1), H, W)
            real_v = DV(torch.cat([B.flatten(1, 2), flows], 1))
            fake_v = DV(torch.cat([fake.flatten(1, 2), flows], 1))
            loss_d = 0.5 * (self.gan.d_loss(real_i, fake_i) + self.gan.d_loss(real_v, fake_v))
            loss_gan = self.gan.g_loss(fake_i)
            loss_video = self.gan.g_loss(fake_v)
            loss_fm = feature_matching_loss(real_i, fake_i) + feature_matching_loss(real_v, fake_v)
            f_flat, b_flat = fake.flatten(0, 1).float(), B.flatten(0, 1)
            loss_l1 = l1_loss(f_flat, b_flat) if m.lambda_l1 > 0 else fake.new_zeros(())
            loss_vgg = self.vgg_loss(f_flat, b_flat)["perceptual"] if self.vgg_loss else fake.new_zeros(())
            pred_flow = torch.stack([r["flow"] for r in steps], 1)  # (B, K, 2, H, W)
            mask = torch.stack([r["mask"] for r in steps], 1)  # (B, K, 1, H, W)
            v = valid * has_past  # (B, K, 1, H, W): where the reference flow is known
            loss_flow = flow_loss(pred_flow[:, 1:].flatten(0, 1), flow[:, 1:].flatten(0, 1), v[:, 1:].flatten(0, 1))
            loss_warp = temporal_loss(B[:, 1:].flatten(0, 1), B[:, :-1].flatten(0, 1),
                                      pred_flow[:, 1:].flatten(0, 1).float(), v[:, 1:].flatten(0, 1))
            hp = has_past[:, 1:].expand_as(mask[:, 1:])
            loss_mask = ((mask[:, 1:].float() - v[:, 1:]).abs() * hp).sum() / hp.sum().clamp_min(1.0)
            loss_g = (m.lambda_gan * loss_gan + m.lambda_video * loss_video + m.lambda_fm * loss_fm
                      + m.lambda_l1 * loss_l1 + m.lambda_vgg * loss_vgg + m.lambda_flow * loss_flow
                      + m.lambda_warp * loss_warp + m.lambda_mask * loss_mask)
        self.backward_step(loss_g, "G", inputs=self._learning("G"), retain_graph=True)
        self.backward_step(loss_d, "D", inputs=self._learning("D"))
        return {"loss_D": loss_d.item(), "loss_G": loss_g.item(), "G_gan": loss_gan.item(),
                "G_video": loss_video.item(), "G_fm": loss_fm.item(), "G_l1": float(loss_l1.detach()),
                "G_vgg": float(loss_vgg.detach()), "G_flow": loss_flow.item(), "G_warp": loss_warp.item(),
                "G_mask": loss_mask.item(), "mask_mean": float(mask[:, 1:].mean().detach())}

    # ---- validation: whole clips ---------------------------------------------------------------
    def validation_translate(self, G, batch) -> torch.Tensor:
        """The last frame of each clip, generated through the whole clip (or one frame without a clip)."""
        if "clip_A" not in batch:
            return G(batch["A"])
        return generate_clip(G, batch["clip_A"], self.cfg, batch.get("cut"))[-1]["out"]

    def validation_metrics(self, G, batch) -> dict[str, torch.Tensor]:
        """L1 / PSNR / SSIM over every frame of each clip, and the warping error of the output with
        the reference flow (``warp_err``, [0, 1] units, over the valid pixels)."""
        if "clip_A" not in batch:
            return super().validation_metrics(G, batch)
        steps = generate_clip(G, batch["clip_A"], self.cfg, batch.get("cut"))
        out = torch.stack([r["out"] for r in steps], 1).float()  # (B, K, 3, H, W)
        tgt = batch["clip_B"].float()
        b, k = out.shape[:2]
        per = {name: fn(out.flatten(0, 1), tgt.flatten(0, 1)).view(b, k).mean(1)
               for name, fn in (("l1", metrics.l1), ("psnr", metrics.psnr), ("ssim", metrics.ssim))}
        v = batch["valid"][:, 1:].float()
        warped = warp_tensor(out[:, :-1].flatten(0, 1), batch["flow"][:, 1:].flatten(0, 1).float()).view_as(out[:, 1:])
        diff = (out[:, 1:] - warped).abs() / 2  # [-1, 1] -> [0, 1] units
        per["warp_err"] = (diff * v).sum((1, 2, 3, 4)) / (v.sum((1, 2, 3, 4)) * 3).clamp_min(1.0)
        return per
