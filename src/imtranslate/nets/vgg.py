"""Frozen VGG-19 feature extractor for the perceptual and style losses.

Nothing here downloads. The weights come from (``weights=``):

* ``"imagenet"``: torchvision's IMAGENET1K_V1 file, found by :mod:`imtranslate.weights` (network
  ``vgg19``): ``$IMTRANSLATE_WEIGHTS/vgg19.safetensors`` (or ``vgg19-dcbb9e9d.pth``), else the torch
  hub cache (``<torch.hub.get_dir()>/checkpoints/vgg19-dcbb9e9d.pth``);
* a path to a ``.safetensors`` (preferred) or ``.pth``/``.pt`` file holding the full vgg19
  state_dict or only its ``features.*`` part (loaded without pickle, ``weights_only=True``);
* ``"random"``: random weights, an explicit opt-in for tests (the losses are then meaningless).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from .. import weights as _weights
from ..errors import WeightsMissingError

# VGG-19 ("configuration E"): conv widths per block, each block ending in a 2x2 max-pool.
_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


def _layer_names() -> list[str]:
    """Names of the layers of ``vgg19().features`` in order: conv1_1, relu1_1, ..., pool5."""
    names = []
    for b, widths in enumerate(_BLOCKS, start=1):
        for i in range(1, len(widths) + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


LAYER_NAMES = _layer_names()


def imagenet_weights_path() -> Path:
    """Where torchvision keeps the VGG-19 ImageNet file (the torch hub cache; honours TORCH_HOME)."""
    return _weights.hub_dir() / _weights.NETWORKS["vgg19"].files[-1]


def resolve_vgg_weights(spec: str | os.PathLike = "imagenet") -> str | Path:
    """``"random"``, or the path of an existing weights file for ``spec`` (see the module docstring).

    Raises :class:`WeightsMissingError` (saying what to put where) when the file is missing.
    """
    return _weights.resolve("vgg19", spec, default="imagenet")


class VGG19Features(nn.Module):
    """VGG-19 ``features`` up to the deepest of ``layers``; frozen and always in eval mode.

    ``forward(x)`` takes pictures in [-1, 1] (B, 3, H, W), normalises them with the ImageNet
    mean/std, and returns ``{layer_name: (B, C_l, H_l, W_l)}`` for every requested layer.
    Layer names are ``conv{block}_{i}``, ``relu{block}_{i}`` or ``pool{block}``.
    """

    def __init__(
        self,
        *,
        layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        weights: str | os.PathLike = "imagenet",
    ):
        super().__init__()
        unknown = [name for name in layers if name not in LAYER_NAMES]
        if unknown or not layers:
            raise ValueError(f"unknown VGG-19 layer(s) {unknown}; known: {', '.join(LAYER_NAMES)}")
        self.layers = tuple(layers)
        self.weights = str(weights)
        depth = max(LAYER_NAMES.index(name) for name in layers) + 1
        self.features = nn.Sequential(*self._build(depth))
        self._index = {LAYER_NAMES.index(name): name for name in layers}
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

        source = resolve_vgg_weights(weights)
        if source != "random":
            self._load(source)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _build(depth: int) -> list[nn.Module]:
        modules, c_in = [], 3
        for widths in _BLOCKS:
            for c_out in widths:
                conv = nn.Conv2d(c_in, c_out, 3, padding=1)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                modules += [conv, nn.ReLU()]  # not in-place: a conv output may be a requested feature
                c_in = c_out
            modules.append(nn.MaxPool2d(2, 2))
        return modules[:depth]

    def _load(self, path: Path) -> None:
        state, _ = _weights.read_state_dict(path, "VGG-19 weights")
        if any(k.startswith("features.") for k in state):
            state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        wanted = self.features.state_dict()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise WeightsMissingError(
                f"{path} does not hold the VGG-19 weights needed (missing {', '.join(missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''}): expected torchvision's vgg19 state_dict or its features.* part"
            )
        bad = [k for k in wanted if state[k].shape != wanted[k].shape]
        if bad:
            raise WeightsMissingError(f"{path}: tensor shapes do not match VGG-19 for {', '.join(bad[:4])}")
        self.features.load_state_dict({k: state[k] for k in wanted})

    def train(self, mode: bool = True) -> VGG19Features:
        """Stays in eval mode: a frozen extractor must not change with its owner's mode."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] -> ImageNet-normalised (B, 3, H, W)
        out = {}
        for j, layer in enumerate(self.features):
            x = layer(x)
            if j in self._index:
                out[self._index[j]] = x  # (B, C_l, H_l, W_l)
        return out
