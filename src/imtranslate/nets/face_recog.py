"""ArcFace-style IResNet face-recognition net: the identity loss's embedding (SPEC S5).

The architecture is insightface's ``arcface_torch`` IResNet (Deng et al. 2019, "ArcFace"), laid
out with the same module names so its published backbones load as they are: a 3x3 stem
(``conv1``, ``bn1``, ``prelu``), four stages of improved residual blocks (BN -> conv3x3 -> BN ->
PReLU -> conv3x3 (stride at the stage's first block) -> BN, plus a 1x1 conv + BN shortcut where
the shape changes), then ``bn2`` -> flatten -> ``fc`` (512 * 7 * 7 -> 512) -> ``features``
(BatchNorm1d). The input is an aligned 112 x 112 RGB face in [-1, 1]; the output a 512-d
embedding. IResNet-50 is ``layers=(3, 4, 14, 3)``.

Weights: :func:`load_identity_net` finds the ``arcface`` file by the one search order of
``imtranslate.weights`` (explicit path -> $IMTRANSLATE_WEIGHTS -> torch hub cache), reads a
``.safetensors`` or a ``.pth`` with ``weights_only=True``, and stops with the message that says
what to provide. ``"random"`` builds a small, randomly initialised net (tests only).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class IBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    """IResNet backbone; ``widths`` per stage (64, 128, 256, 512 in the published nets)."""

    input_size = 112

    def __init__(self, layers=(3, 4, 14, 3), widths=(64, 128, 256, 512), embedding: int = 512, stem: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, eps=1e-5)
        self.prelu = nn.PReLU(stem)
        inplanes = stem
        for i, (n, w) in enumerate(zip(layers, widths)):
            down = nn.Sequential(nn.Conv2d(inplanes, w, 1, stride=2, bias=False), nn.BatchNorm2d(w, eps=1e-5))
            blocks = [IBasicBlock(inplanes, w, 2, down)] + [IBasicBlock(w, w) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = w
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(inplanes * 7 * 7, embedding)  # 112 / 2**4 = 7
        self.features = nn.BatchNorm1d(embedding, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) faces in [-1, 1] -> (B, embedding); resized to 112 x 112 first."""
        if x.shape[-2:] != (112, 112):
            x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


#: the random test net: one block per stage, narrow (tests only)
TINY_RANDOM = dict(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), embedding=32, stem=8)


def load_identity_net(spec: str, device="cpu") -> IResNet:
    """The frozen identity net of ``model.identity``: ``"arcface"`` (search the weights folders),
    ``"random"`` (a tiny random net, tests) or a path to a ``.safetensors`` / ``.pth`` file."""
    from .. import weights
    from ..errors import WeightsMissingError

    path = weights.resolve("arcface", spec, default="arcface")
    if path == weights.RANDOM:
        g = torch.random.fork_rng()  # a fixed net, whatever the caller's RNG state
        with g:
            torch.manual_seed(0)
            net = IResNet(**TINY_RANDOM)
    else:
        tensors, _ = weights.read_state_dict(path, "the ArcFace IResNet")
        n_blocks = [len({k.split(".")[1] for k in tensors if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
        widths = [tensors[f"layer{i}.0.conv1.weight"].shape[0] for i in range(1, 5)] \
            if all(f"layer{i}.0.conv1.weight" in tensors for i in range(1, 5)) else None
        if widths is None or "fc.weight" not in tensors:
            raise WeightsMissingError(f"{path}: not an ArcFace IResNet backbone (no layer1..4 / fc weights); "
                                      "give insightface arcface_torch's backbone.pth")
        net = IResNet(layers=tuple(n_blocks), widths=tuple(widths), embedding=tensors["fc.weight"].shape[0],
                      stem=tensors["conv1.weight"].shape[0])
        missing, unexpected = net.load_state_dict(tensors, strict=False)
        if missing:
            raise WeightsMissingError(f"{path}: the ArcFace IResNet misses {len(missing)} tensors, e.g. "
                                      f"{missing[:3]}")
    net.eval().requires_grad_(False)
    return net.to(device)
