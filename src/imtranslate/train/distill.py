"""Distillation from a teacher checkpoint for any task, through the config:
``train.distill_from=CKPT`` (a checkpoint of the same task), ``train.lambda_distill`` (output L1)
and ``train.lambda_distill_feat`` (features at four inner convs, 1x1 adapters where the widths
differ; :mod:`imtranslate.losses.distill`).

After every step of the task the loop calls :meth:`Distiller.step`: one more update of the
generator (and the adapters) on ``lambda_distill * L1(G(A), T(A)) + lambda_distill_feat *
feature term``, with its own Adam at ``train.lr_g`` (scaled by the learning-rate schedule).
Single process only (the extra update is not all-reduced); its Adam moments start afresh on resume.
"""
from __future__ import annotations

import torch

from ..checkpoint_file import load_generator, read_meta
from ..errors import ConfigError
from ..losses.distill import DistillLoss, FeatureTaps, feature_layers, layer_channels


class Distiller:
    def __init__(self, task, path: str, lambda_out: float, lambda_feat: float, n_feat: int = 4):
        meta = read_meta(path)
        if meta.get("task") != task.cfg.task:
            raise ConfigError(f"train.distill_from: {path} is a {meta.get('task')} checkpoint; distilling a "
                              f"{task.cfg.task} model needs a teacher of the same task")
        self.task, self.lambda_out, self.lambda_feat = task, float(lambda_out), float(lambda_feat)
        self.teacher = load_generator(path, device=task.device).net.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.n_feat = n_feat
        self._setup(task.generator)

    def _setup(self, G) -> None:
        self.G = G
        names = feature_layers(self.teacher, self.n_feat) if self.lambda_feat > 0 else []
        mods = dict(G.named_modules())
        self.names = [n for n in names if n in mods]
        self.loss = DistillLoss(layer_channels(G, self.names), layer_channels(self.teacher, self.names)).to(
            self.task.device)
        t = self.task.cfg.train
        self.opt = torch.optim.Adam(list(G.parameters()) + list(self.loss.parameters()), lr=t.lr_g,
                                    betas=(t.beta1, t.beta2))

    def follow(self, key, net) -> None:
        """The task replaced its generator (e.g. pruned it): distil into the new one."""
        if key == self.task.generator_key:
            self._setup(net)

    def step(self, batch: dict, lr_factor: float = 1.0) -> dict[str, float]:
        task = self.task
        A = batch["A"]
        for g in self.opt.param_groups:
            g["lr"] = task.cfg.train.lr_g * lr_factor
        with FeatureTaps(self.G, self.names) as s_taps, FeatureTaps(self.teacher, self.names) as t_taps:
            with torch.no_grad():
                t_out = task.translate(self.teacher, A, task.cfg, task.extra_tensors(), batch=batch)
                t_feats = t_taps.take() if self.names else []
            s_out = task.translate(self.G, A, task.cfg, task.extra_tensors(), batch=batch)
            s_feats = s_taps.take() if self.names else []
        terms = self.loss.terms(s_out, t_out, s_feats, t_feats)
        loss = self.lambda_out * terms["out"] + (self.lambda_feat * terms["feat"] if "feat" in terms else 0.0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {f"distill_{k}": float(v.detach()) for k, v in terms.items()}
