"""pix2pixHD (Wang et al. 2018): coarse-to-fine generator, multi-scale discriminators,
feature matching, VGG perceptual loss, instance boundary maps and instance-wise features.

Schedule: the global generator G1 first, alone, at 1/2**n_local_enhancers of the resolution
(``global_fraction`` of the run); then the local enhancer(s) join at full resolution, optionally
with G1 frozen for ``fix_global_fraction`` of the run, then everything trains jointly.

With ``features: true`` an instance-wise encoder E turns the target photo into per-instance
feature vectors that are fed to G next to the label map. After training, E's features over the
training set are clustered per class with K-means; at inference a user picks a cluster per class
(``--cluster K``) to get different colours and textures from the same label map.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import input_read_mode
from ..errors import ConfigError
from ..losses import GANLoss, GanMode, VGGLoss, feature_matching_loss
from ..nets.layers import Norm
from ..nets.vgg import VGG19Features
from . import register_task
from .base import Task, check_gan_options, set_requires_grad


@dataclass
class Pix2PixHDConfig:
    ngf: int = 32  # width of the finest local enhancer; G1 is ngf * 2**n_local_enhancers wide
    n_downsampling: int = 4  # G1 downsamplings
    n_blocks: int = 9  # G1 residual blocks
    n_local_enhancers: int = 1
    n_blocks_local: int = 3
    norm: Norm = "instance"  # batch | instance | none
    ndf: int = 64
    n_layers_d: int = 3
    num_d: int = 3  # discriminator scales: full, 1/2, 1/4
    norm_d: Norm = "instance"
    gan_mode: GanMode = "lsgan"  # lsgan | vanilla | hinge
    lambda_gan: float = 1.0
    lambda_fm: float = 10.0  # discriminator feature matching
    lambda_vgg: float = 10.0  # VGG-19 perceptual loss (0 disables and needs no VGG weights)
    global_fraction: float = 0.3  # share of the run training G1 alone at low resolution
    fix_global_fraction: float = 0.0  # then: share training only the enhancers (G1 frozen)
    features: bool = False  # instance-wise feature encoder (label-map inputs only)
    feat_channels: int = 3
    encoder_ngf: int = 16
    n_clusters: int = 10  # K-means clusters per class after training
    cluster_batches: int = 50  # training batches encoded for the clustering
    vgg_weights: str = "imagenet"
    lambda_temporal: float = 0.0  # > 0: temporal loss on a randomly warped copy of the input (steadier video)


def _kmeans(x: torch.Tensor, k: int, iters: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain Lloyd's K-means with k-means++ seeding; returns (centres (k, D), sizes (k,)) sorted by size.

    A dozen lines of torch instead of a scikit-learn dependency for one call per class.
    """
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randint(len(x), (1,), generator=g)]
    while len(centres) < k:
        d = torch.cdist(x, centres).min(1).values ** 2
        if d.sum() <= 0:
            break
        centres = torch.cat([centres, x[torch.multinomial(d / d.sum(), 1, generator=g)]])
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        new = torch.stack([x[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(len(centres))])
        if torch.allclose(new, centres):
            break
        centres = new
    sizes = torch.bincount(torch.cdist(x, centres).argmin(1), minlength=len(centres))
    order = sizes.argsort(descending=True)
    return centres[order], sizes[order]


@register_task
class Pix2PixHDTask(Task):
    name = "pix2pixhd"
    Config = Pix2PixHDConfig

    @classmethod
    def check_config(cls, cfg) -> None:
        m = cfg.model
        check_gan_options(m)
        if not 0 <= m.global_fraction + m.fix_global_fraction <= 1:
            raise ConfigError("model.global_fraction + model.fix_global_fraction must be within [0, 1]")
        if m.features and input_read_mode(cfg.data) != "label":
            raise ConfigError("model.features (instance-wise feature encoder) needs label-map inputs")

    # ---- construction --------------------------------------------------------------------------
    def build(self) -> None:
        m = self.m
        self.is_label = input_read_mode(self.cfg.data) == "label"
        self.n_classes = (self.cfg.data.synthetic.n_classes if self.cfg.data.dataset == "synthetic"
                          else self.cfg.data.n_classes)
        g_in = self.in_channels + (m.feat_channels if m.features else 0)
        G = self.add_net("G", "pix2pixhd", in_channels=g_in, out_channels=self.out_channels, ngf=m.ngf,
                         n_downsampling=m.n_downsampling, n_blocks=m.n_blocks, n_local_enhancers=m.n_local_enhancers,
                         n_blocks_local=m.n_blocks_local, norm=m.norm)
        D = self.add_net("D", "multiscale", in_channels=self.in_channels + self.out_channels, ndf=m.ndf,
                         n_layers=m.n_layers_d, num_d=m.num_d, norm=m.norm_d)
        crop = self.cfg.data.crop_size
        self.check_patch_size(D, crop // 2 ** m.n_local_enhancers if m.global_fraction > 0 else crop,
                              "the discriminator (global stage)")
        g_params = list(G.parameters())
        if m.features:
            E = self.add_net("E", "pix2pixhd_encoder", in_channels=self.out_channels, feat_channels=m.feat_channels,
                             ngf=m.encoder_ngf)
            g_params += list(E.parameters())  # E learns with G, as in pix2pixHD
        self.gan = GANLoss(m.gan_mode)
        self.vgg_loss = None
        if m.lambda_vgg > 0:
            vgg = VGG19Features(weights=m.vgg_weights).to(self.device)
            self.vgg_loss = VGGLoss(vgg, style_layers=())
        self.add_optimizer("G", g_params, self.cfg.train.lr_g)
        self.add_optimizer("D", D.parameters(), self.cfg.train.lr_d)
        self.clusters = None  # (n_classes, K, feat) after finish()
        self.cluster_sizes = None
        self.stage = ""
        self.on_step_start(0)

    # ---- schedule --------------------------------------------------------------------------------
    def stage_at(self, step: int) -> str:
        t, m = self.cfg.train, self.m
        g_end = int(round(m.global_fraction * t.steps))
        f_end = g_end + int(round(m.fix_global_fraction * t.steps))
        return "global" if step < g_end else ("local" if step < f_end else "joint")

    def on_step_start(self, step: int) -> str | None:
        stage = self.stage_at(step)
        if stage == self.stage:
            return None
        self.stage = stage
        G = self.nets["G"]
        G.set_active_enhancers(0 if stage == "global" else self.m.n_local_enhancers)
        set_requires_grad(G, True)
        if stage == "local":
            set_requires_grad(G.global_net, False)
        return {"global": "stage global: G1 alone at low resolution",
                "local": "stage local: enhancers join at full resolution, G1 frozen",
                "joint": "stage joint: G1 and enhancers train together"}[stage]

    # ---- helpers -------------------------------------------------------------------------------
    def _down(self, x: torch.Tensor, size, label: bool) -> torch.Tensor:
        """``x`` at the generator's output size (G1 alone works at a lower resolution)."""
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        # label one-hots stay one-hot; pictures are averaged like G's own input pooling
        return F.interpolate(x, size=tuple(size), mode="nearest" if label else "area")

    def g_input(self, A: torch.Tensor, batch: dict) -> torch.Tensor:
        if not self.m.features:
            return A
        feat = self.nets["E"](batch["B"], batch["inst"])  # (B, feat, H, W), constant within each instance
        return torch.cat([A, feat], 1)

    # ---- training ------------------------------------------------------------------------------
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        G, D, m = self.nets["G"], self.nets["D"], self.m
        A, B = batch["A"], batch["B"]
        g_in = self.g_input(A, batch)
        with self.autocast():
            fake = G(g_in)  # (B, C_out, H/s, W/s), s = G.output_scale()
        A_s, B_s = self._down(A, fake.shape[-2:], self.is_label), self._down(B, fake.shape[-2:], False)

        # One pass of D over the real and one over the generated picture serve every loss: as in
        # pix2pixHD, the G losses (GAN, feature matching) and the D loss come from the same D
        # (before its update), so G's and D's gradients are taken from the same graph, each for
        # its own parameters only; G steps first, then D, as pix2pixHD does.
        set_requires_grad(D, True)
        with self.autocast():
            real_out = D(torch.cat([A_s, B_s], 1))
            fake_out = D(torch.cat([A_s, fake], 1))
            loss_d = 0.5 * self.gan.d_loss(real_out, fake_out)
            loss_gan = self.gan.g_loss(fake_out)
            loss_fm = feature_matching_loss(real_out, fake_out)  # real features detached inside
            loss_vgg = self.vgg_loss(fake.float(), B_s)["perceptual"] if self.vgg_loss else fake.new_zeros(())
            loss_g = m.lambda_gan * loss_gan + m.lambda_fm * loss_fm + m.lambda_vgg * loss_vgg
            loss_t = None
            if m.lambda_temporal > 0:  # instance features are constant per object: nearest moves them intact
                loss_t = self.temporal_term(g_in, fake, G, nearest=self.is_label)
                loss_g = loss_g + m.lambda_temporal * loss_t
        self.backward_step(loss_g, "G", inputs=self._learning("G"), retain_graph=True)
        self.backward_step(loss_d, "D", inputs=self._learning("D"))
        logs = {"loss_D": loss_d.item(), "loss_G": loss_g.item(), "G_gan": loss_gan.item(),
                "G_fm": loss_fm.item(), "G_vgg": float(loss_vgg.detach())}
        if loss_t is not None:
            logs["G_temporal"] = float(loss_t.detach())
        return logs

    # ---- instance features: clustering and inference ---------------------------------------------
    @torch.no_grad()
    def finish(self, train_loader) -> None:
        if not self.m.features:
            return
        E = self.nets["E"]
        was = E.training
        E.eval()
        per_class: dict[int, list[torch.Tensor]] = {}
        for i, batch in enumerate(train_loader):
            if i >= self.m.cluster_batches:
                break
            batch = self.to_device(batch)
            feat = E(batch["B"], batch["inst"])  # (B, F, H, W)
            for b in range(feat.shape[0]):
                inst, label = batch["inst"][b], batch["label"][b]
                for iid in inst.unique():
                    mask = inst == iid
                    cls = int(label[mask].mode().values)
                    if 0 <= cls < self.n_classes:
                        per_class.setdefault(cls, []).append(feat[b][:, mask].mean(1).cpu())
        E.train(was)
        K, Fc = self.m.n_clusters, self.m.feat_channels
        self.clusters = torch.zeros(self.n_classes, K, Fc)
        self.cluster_sizes = torch.zeros(self.n_classes, K, dtype=torch.int64)
        for cls, vecs in per_class.items():
            c, n = _kmeans(torch.stack(vecs), min(K, len(vecs)), seed=self.cfg.train.seed)
            self.clusters[cls, :len(c)] = c
            self.cluster_sizes[cls, :len(n)] = n

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        if self.clusters is None:
            return {}
        return {"clusters": self.clusters, "cluster_sizes": self.cluster_sizes}

    def load_extra_tensors(self, tensors) -> None:
        if "clusters" in tensors:
            self.clusters, self.cluster_sizes = tensors["clusters"], tensors["cluster_sizes"]

    @classmethod
    def translate(cls, G, A, cfg, extras=None, batch=None, cluster=0, **options) -> torch.Tensor:
        """Full-resolution output; with instance features, every class region gets the centre of
        its chosen K-means cluster (``cluster``: one index for all classes, or {class: index})."""
        m = cfg.model
        if m.features:
            if not extras or "clusters" not in extras:
                raise ConfigError("this pix2pixHD checkpoint uses instance features but holds no clusters "
                                  "(training did not finish); resume it to the end first")
            clusters, sizes = extras["clusters"].to(A.device), extras["cluster_sizes"].to(A.device)
            n_cls = clusters.shape[0]
            label = A[:, :n_cls].argmax(1)  # (B, H, W)
            choice = torch.zeros(n_cls, dtype=torch.long, device=A.device)
            if isinstance(cluster, dict):
                for c, k in cluster.items():
                    choice[int(c)] = int(k)
            else:
                choice[:] = int(cluster)
            valid = (sizes > 0).sum(1).clamp(min=1)  # clusters that exist per class
            choice = torch.minimum(choice, valid - 1)
            table = clusters[torch.arange(n_cls, device=A.device), choice]  # (n_cls, F)
            feat = table[label].permute(0, 3, 1, 2)  # (B, F, H, W)
            A = torch.cat([A, feat.to(A.dtype)], 1)
        out = G(A)
        if out.shape[-2:] != A.shape[-2:]:  # saved during the global stage: G1's output, upsampled
            out = F.interpolate(out, size=A.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def validation_translate(self, G, batch) -> torch.Tensor:
        G.set_active_enhancers(self.nets["G"].active_enhancers)
        if self.m.features and self.clusters is None:
            # before clustering: the target's own encoded features (a reconstruction score)
            out = G(self.g_input(batch["A"], batch))
            if out.shape[-2:] != batch["A"].shape[-2:]:
                out = F.interpolate(out, size=batch["A"].shape[-2:], mode="bilinear", align_corners=False)
            return out
        return self.translate(G, batch["A"], self.cfg, self.extra_tensors(), batch)
