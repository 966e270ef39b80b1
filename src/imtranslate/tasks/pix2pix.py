"""pix2pix (Isola et al. 2017): U-Net (or ResNet) generator, 70x70 PatchGAN, L1 + GAN loss.

Phases of one step::

    fake = G(A)
    D step:  GAN(D(A, B) -> real) + GAN(D(A, fake.detach()) -> fake), halved as pix2pix does
    G step:  lambda_gan * GAN(D(A, fake) -> real) + lambda_l1 * |fake - B|
             [+ lambda_temporal * temporal term, see :meth:`Task.temporal_term`]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..data.datasets import input_kind
from ..errors import ConfigError
from ..losses import GANLoss, GanMode, l1_loss
from ..nets.layers import Norm
from . import register_task
from .base import Task, check_gan_options, set_requires_grad


@dataclass
class Pix2PixConfig:
    generator: Literal["unet", "resnet"] = "unet"
    ngf: int = 64  # generator base width
    num_downs: int = 8  # unet: downsamplings (8 -> 256 px bottleneck of 1x1)
    n_blocks: int = 9  # resnet: residual blocks
    norm: Norm = "batch"  # batch | instance | none
    dropout: bool = True  # dropout in the generator (pix2pix's only source of noise)
    ndf: int = 64  # discriminator base width
    n_layers_d: int = 3  # 3 -> 70x70 receptive field
    norm_d: Norm = "batch"
    gan_mode: GanMode = "vanilla"  # vanilla | lsgan | hinge
    lambda_gan: float = 1.0
    lambda_l1: float = 100.0
    lambda_temporal: float = 0.0  # > 0: temporal loss on a randomly warped copy of the input (steadier video; one more G pass)


@register_task
class Pix2PixTask(Task):
    name = "pix2pix"
    Config = Pix2PixConfig

    @classmethod
    def check_config(cls, cfg) -> None:
        check_gan_options(cfg.model)

    def build(self) -> None:
        m = self.m
        if m.generator == "unet":
            G = self.add_net("G", "unet", in_channels=self.in_channels, out_channels=self.out_channels,
                             num_downs=m.num_downs, ngf=m.ngf, norm=m.norm, dropout=m.dropout)
        else:
            G = self.add_net("G", "resnet", in_channels=self.in_channels, out_channels=self.out_channels,
                             ngf=m.ngf, n_blocks=m.n_blocks, norm=m.norm, dropout=m.dropout)
        # conditional D: it sees the input next to the real or generated picture
        D = self.add_net("D", "patch", in_channels=self.in_channels + self.out_channels,
                         ndf=m.ndf, n_layers=m.n_layers_d, norm=m.norm_d)
        self.check_patch_size(D, self.cfg.data.crop_size, "the discriminator")
        self.gan = GANLoss(m.gan_mode)
        self.add_optimizer("G", G.parameters(), self.cfg.train.lr_g)
        self.add_optimizer("D", D.parameters(), self.cfg.train.lr_d)

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        G, D, m = self.nets["G"], self.nets["D"], self.m
        A, B = batch["A"], batch["B"]
        with self.autocast():
            fake = G(A)  # (B, C_out, H, W)

        # ---- D phase
        set_requires_grad(D, True)
        with self.autocast():
            real_out = D(torch.cat([A, B], 1))
            fake_out = D(torch.cat([A, fake.detach()], 1))
            loss_d = 0.5 * self.gan.d_loss(real_out, fake_out)
        self.backward_step(loss_d, "D")

        # ---- G phase (D frozen so its weights get no gradient)
        set_requires_grad(D, False)
        with self.autocast():
            fake_out = D(torch.cat([A, fake], 1))
            loss_gan = self.gan.g_loss(fake_out)
            loss_l1 = l1_loss(fake.float(), B)
            loss_g = m.lambda_gan * loss_gan + m.lambda_l1 * loss_l1
            if m.lambda_temporal > 0:
                loss_temporal = self.temporal_term(A, fake, G, nearest=input_kind(self.cfg.data) == "label")
                loss_g = loss_g + m.lambda_temporal * loss_temporal
        self.backward_step(loss_g, "G")
        set_requires_grad(D, True)  # leave every net trainable between steps
        logs = {"loss_D": loss_d.item(), "loss_G": loss_g.item(), "G_gan": loss_gan.item(), "G_l1": loss_l1.item()}
        if m.lambda_temporal > 0:
            logs["G_temporal"] = loss_temporal.item()
        return logs
