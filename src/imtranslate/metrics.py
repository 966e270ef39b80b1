"""Image quality metrics: L1, PSNR, SSIM, and (with local weights) FID and LPIPS.

Every metric takes model tensors, float ``(B, C, H, W)`` pictures in **[-1, 1]** (C = 1 or 3),
and computes in **[0, 1]** units: ``x01 = (clamp(x, -1, 1) + 1) / 2``. Clamping first means a
metric measures the picture that would be saved to disk, not values a generator could never
write. ``pred`` and ``target`` must have the same shape.

Per-image metrics (differentiable, no weights needed)
    * :func:`l1` — mean absolute error, ``(B,)``.
    * :func:`psnr` — peak signal-to-noise ratio in dB, ``(B,)``, by :func:`psnr_from_mse`, the one
      PSNR convention of imtranslate (video's clip PSNR uses it too): the MSE is floored at
      ``MSE_FLOOR = 1e-10``, so identical images give a finite ``10 * log10(data_range**2 / 1e-10)``
      (100 dB for data_range=1), never ``inf`` (which would poison means and is not valid JSON).
    * :func:`ssim` — Wang et al. (2004) SSIM, ``(B,)``; see its docstring for the exact
      convention (it matches ``skimage.metrics.structural_similarity`` with Gaussian weights).
    * :class:`MetricAccumulator` — running means of the three over a validation set.

Metrics that need pretrained networks (optional), computed by torchmetrics
    * :func:`fid` — Fréchet Inception Distance (``torchmetrics.image.fid``) of torchvision's
      Inception-v3 pool3 features.
    * :func:`lpips` — LPIPS (Zhang et al. 2018; torchmetrics' network) with a VGG16 or AlexNet backbone.

Nothing is ever downloaded. The weights files are found by :mod:`imtranslate.weights` (explicit
path, then ``$IMTRANSLATE_WEIGHTS`` — default ``~/.cache/imtranslate/weights`` —, then the torch hub
cache):

    ====================================  ==========================================================
    ``inception_v3_fid.safetensors``      torchvision Inception-v3 state dict; or torchvision's own
                                          ``inception_v3_google-0cc3c7bd.pth``
    ``lpips_vgg.safetensors``             backbone + linear layers, see :func:`lpips`; or
                                          torchvision's ``vgg16-397923af.pth`` alone
    ====================================  ==========================================================

:func:`optional_metrics_status` says which are present; asking for a metric whose file is
missing raises :class:`~imtranslate.errors.WeightsMissingError` naming the expected path.
"""
from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import weights as _weights
from .errors import WeightsMissingError

__all__ = [
    "l1",
    "psnr",
    "psnr_from_mse",
    "MSE_FLOOR",
    "ssim",
    "MetricAccumulator",
    "weights_dir",
    "default_weights_path",
    "find_weights",
    "optional_metrics_status",
    "InceptionFeatures",
    "inception_network",
    "inception_features",
    "feature_statistics",
    "frechet_distance",
    "fid_from_features",
    "fid",
    "fid_metric",
    "fid_value",
    "LPIPSNet",
    "lpips",
    "convert_lpips_weights",
]

WEIGHTS_ENV = _weights.WEIGHTS_ENV
FID_WEIGHTS_NAME = _weights.NETWORKS["inception_fid"].files[0]  # "inception_v3_fid.safetensors"
LPIPS_WEIGHTS_NAME = _weights.NETWORKS["lpips"].files[0]  # "lpips_vgg.safetensors"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if not (isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor)):
        raise TypeError("metrics take torch tensors")
    if pred.ndim != 4:
        raise ValueError(f"metrics take (B, C, H, W) tensors, got shape {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )


def _to01(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped; at least float32 precision."""
    if x.dtype != torch.float64:
        x = x.float()
    return (x.clamp(-1.0, 1.0) + 1.0) * 0.5


# --------------------------------------------------------------------------------------------
# L1 / PSNR / SSIM
# --------------------------------------------------------------------------------------------
def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image in [0, 1] units, shape ``(B,)``."""
    _check_pair(pred, target)
    return (_to01(pred) - _to01(target)).abs().flatten(1).mean(1)


MSE_FLOOR = 1e-10  # identical pictures: 10 log10(1 / 1e-10) = 100 dB, a finite "perfect" score


def psnr_from_mse(mse, data_range: float = 1.0):
    """PSNR in dB from a mean squared error (a tensor -> a tensor, a number -> a float).

    The one convention of imtranslate: ``10 * log10(data_range**2 / max(mse, MSE_FLOOR))``, so
    identical signals give 100 dB (``data_range=1``), never ``inf``.
    """
    if isinstance(mse, torch.Tensor):
        return 10.0 * torch.log10(data_range**2 / mse.clamp_min(MSE_FLOOR))
    return 10.0 * math.log10(data_range**2 / max(float(mse), MSE_FLOOR))


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, shape ``(B,)``.

    :func:`psnr_from_mse` of the MSE taken in [0, 1] units, so identical images give a finite
    100 dB (for ``data_range=1``) instead of infinity. A constant error of ``e`` (in [0, 1]
    units) gives ``-20 * log10(e)``.
    """
    _check_pair(pred, target)
    mse = (_to01(pred) - _to01(target)).pow(2).flatten(1).mean(1)
    return psnr_from_mse(mse, data_range)


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _gaussian_taps(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image, shape ``(B,)`` (Wang et al. 2004).

    Convention (identical to ``skimage.metrics.structural_similarity(a, b,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
    channel_axis=-1)``):

    * images in [0, 1] (``data_range = 1``), ``C1 = (0.01)^2``, ``C2 = (0.03)^2``;
    * local means/variances/covariance from an 11x11 Gaussian window, sigma 1.5 (the kernel is
      ``exp(-x^2 / 2 sigma^2)`` for ``x = -5..5``, normalised), population (not sample)
      statistics;
    * only windows that lie fully inside the image count ('valid' convolution — skimage filters
      with reflected borders and then crops ``(win - 1) / 2`` pixels, which is the same thing);
    * the SSIM map is computed per channel (grouped ``conv2d``) and averaged over channels and
      positions.

    **Small images:** when ``min(H, W) < 11`` the window shrinks to the largest odd size that
    fits (``1 <= win <= min(H, W)``); the Gaussian keeps sigma 1.5 and is truncated to that
    window and renormalised. skimage refuses such images; values computed with a shrunken
    window are not comparable to full-window SSIM (a 1x1 window compares luminance only).
    """
    _check_pair(pred, target)
    x, y = _to01(pred), _to01(target)
    b, c, h, w = x.shape
    win = min(SSIM_WINDOW, h, w)
    if win % 2 == 0:
        win -= 1
    g = _gaussian_taps(win, SSIM_SIGMA, x.dtype, x.device)

    # One grouped, separable convolution for the five local moments of every channel.
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
    n = stack.shape[1]
    mom = F.conv2d(stack, g.view(1, 1, win, 1).expand(n, 1, win, 1), groups=n)
    mom = F.conv2d(mom, g.view(1, 1, 1, win).expand(n, 1, 1, win), groups=n)
    mu_x, mu_y, e_xx, e_yy, e_xy = mom.split(c, dim=1)

    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    c1 = SSIM_K1**2
    c2 = SSIM_K2**2
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(1)


class MetricAccumulator:
    """Running means of per-image L1, PSNR and SSIM over any number of batches.

    >>> acc = MetricAccumulator()
    >>> for batch in loader:
    ...     acc.update(generator(batch["A"]), batch["B"])
    >>> acc.compute()      # {"l1": ..., "psnr": ..., "ssim": ...}

    Means are over images (the PSNR is the mean of per-image PSNRs, not the PSNR of the pooled
    MSE). Nothing is kept on the GPU and no gradients are recorded. ``compute()`` before any
    image was added returns NaN for every metric.
    """

    names = ("l1", "psnr", "ssim")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sums = {k: 0.0 for k in self.names}
        self._count = 0

    @property
    def count(self) -> int:
        """Number of images added so far."""
        return self._count

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Add a batch; returns this batch's per-image values (``(B,)`` CPU tensors)."""
        values = {
            "l1": l1(pred, target),
            "psnr": psnr(pred, target),
            "ssim": ssim(pred, target),
        }
        values = {k: v.detach().double().cpu() for k, v in values.items()}
        for k, v in values.items():
            self._sums[k] += float(v.sum())
        self._count += int(pred.shape[0])
        return values

    def compute(self) -> dict[str, float]:
        """``{"l1": mean, "psnr": mean, "ssim": mean}`` as Python floats."""
        if self._count == 0:
            return {k: float("nan") for k in self.names}
        return {k: self._sums[k] / self._count for k in self.names}


# --------------------------------------------------------------------------------------------
# Local weights (found by imtranslate.weights: explicit path -> $IMTRANSLATE_WEIGHTS -> torch hub cache)
# --------------------------------------------------------------------------------------------
_NETWORK = {"fid": "inception_fid", "lpips": "lpips"}


weights_dir = _weights.weights_dir  # $IMTRANSLATE_WEIGHTS, else ~/.cache/imtranslate/weights


def default_weights_path(metric: str) -> Path:
    """The preferred file of ``metric`` ("fid" or "lpips") in :func:`weights_dir`."""
    if metric not in _NETWORK:
        raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(_NETWORK)}")
    return weights_dir() / _weights.NETWORKS[_NETWORK[metric]].files[0]


def find_weights(metric: str, weights=None) -> Path:
    """The weights file of ``metric`` by the search order; raises WeightsMissingError."""
    return _weights.find(_NETWORK[metric], weights)


def optional_metrics_status() -> dict[str, tuple[bool, str]]:
    """``{"fid": (available, message), "lpips": (available, message)}`` for the default search.

    The message says where the file was found, or which file is missing and how to get it.
    Only existence is checked; a broken file is reported when the metric is first used.
    """
    out = {}
    for metric, name in _NETWORK.items():
        path = _weights.locate(name)
        out[metric] = ((True, f"{metric.upper()} weights found at {path}") if path is not None
                       else (False, _weights.missing_message(name)))
    return out


def _load_into(module: nn.Module, state: dict, path: Path, what: str) -> None:
    """Strict load that tolerates missing BatchNorm ``num_batches_tracked`` counters."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None:
            m.num_batches_tracked.zero_()
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise WeightsMissingError(f"{path}: tensors do not fit the {what} network: {str(e).splitlines()[0]}") from e
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        def short(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        problems = ([f"missing {short(missing)}"] if missing else []) + (
            [f"unexpected {short(unexpected)}"] if unexpected else [])
        raise WeightsMissingError(f"{path}: not a {what} weights file ({'; '.join(problems)})")


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


# --------------------------------------------------------------------------------------------
# FID: torchmetrics' FrechetInceptionDistance, fed torchvision's Inception-v3 from a local file
# --------------------------------------------------------------------------------------------
# Why not torchmetrics' own Inception: `FrechetInceptionDistance(feature=2048)` builds
# torch-fidelity's FeatureExtractorInceptionV3, which needs the torch-fidelity package and fetches
# pt_inception-2015-12-05-6726825d.pth from GitHub when it is constructed (tried offline: it cannot
# be built without that download). torchmetrics accepts any feature extractor module instead, so it
# gets the same torchvision Inception-v3 pool3 features imtranslate always used, from the local file
# of :mod:`imtranslate.weights`; the statistics and the distance are torchmetrics'.
FID_SIZE = 299


class InceptionFeatures(nn.Module):
    """torchvision Inception-v3 pool3 features ``float64 (N, 2048)`` of pictures in [-1, 1].

    Each picture is clamped, grey repeated to three channels, resized to 299x299 (bilinear, as
    pytorch-fid does) and fed in [-1, 1], the range torchvision's weights expect with
    ``transform_input=False``. ``num_features`` tells torchmetrics the feature size.
    """

    num_features = 2048

    def __init__(self, state: dict[str, torch.Tensor], path: Path):
        super().__init__()
        import torchvision

        with torch.device("meta"):  # no time spent initialising weights that are overwritten
            net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                                  transform_input=False)
        net.fc = nn.Identity()  # forward() now returns the 2048-d pool3 features
        self.net = net.to_empty(device="cpu")
        state = {k: v for k, v in state.items() if not k.startswith(("AuxLogits.", "fc."))}
        _load_into(self.net, state, path, "Inception-v3 (FID)")
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # frozen: batch-norm statistics must never update

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32).clamp(-1.0, 1.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"FID needs 1- or 3-channel images, got {x.shape[1]} channels")
        if x.shape[-2:] != (FID_SIZE, FID_SIZE):
            x = F.interpolate(x, size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False)
        return self.net(x).double()  # (N, 2048); float64 so torchmetrics returns a float64 distance


@functools.lru_cache(maxsize=2)
def _inception_cached(key: tuple, device: str) -> InceptionFeatures:
    path = Path(key[0])
    state, _ = _weights.read_state_dict(path, "Inception-v3 (FID) weights")
    return InceptionFeatures(state, path).to(device)


def inception_network(weights=None, device="cpu") -> InceptionFeatures:
    """The (cached) :class:`InceptionFeatures` from ``weights`` or the search order."""
    return _inception_cached(_file_key(find_weights("fid", weights)), str(torch.device(device)))


def _as_batches(images) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        images = [images]
    for batch in images:
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
            raise ValueError("FID takes (N, C, H, W) tensors in [-1, 1] or an iterable of them")
        yield batch


@torch.no_grad()
def inception_features(images, *, weights=None, batch_size: int = 32, device=None) -> np.ndarray:
    """Inception-v3 pool3 features, ``float64 (N, 2048)``, of a ``(N, C, H, W)`` tensor in [-1, 1]
    (C = 1 or 3) or an iterable of such batches; see :class:`InceptionFeatures`."""
    path = find_weights("fid", weights)
    feats, net, dev = [], None, None
    for batch in _as_batches(images):
        if net is None:  # everything runs where the first batch is (or on `device`)
            dev = torch.device(device) if device is not None else batch.device
            net = inception_network(path, dev)
        feats += [net(chunk.to(dev)).cpu() for chunk in batch.split(batch_size)]
    if not feats:
        raise ValueError("FID got no images")
    return torch.cat(feats).numpy()


class _Given(nn.Module):
    """Feature "extractor" that passes precomputed ``(N, D)`` features through to torchmetrics."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def fid_value(metric) -> float:
    """The metric's distance, floored at 0: torchmetrics' eigenvalue route leaves round-off of
    about 1e-7 (20-d) to 1e-3 (2048-d, few images) below zero for identical sets (measured), and a
    squared distance is never negative."""
    return max(0.0, float(metric.compute()))


def _fid_metric(extractor: nn.Module):
    from torchmetrics.image.fid import FrechetInceptionDistance

    # normalize=False: torchmetrics passes the input unchanged to a custom extractor
    return FrechetInceptionDistance(feature=extractor, normalize=False)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, N - 1) of ``(N, D)`` features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features for a covariance, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2), by torchmetrics' formula:
    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 sum(sqrt(eig(sigma1 sigma2)))`` in float64."""
    from torchmetrics.image.fid import _compute_fid

    t = [torch.as_tensor(np.asarray(v, np.float64)) for v in (mu1, sigma1, mu2, sigma2)]
    t = [t[0].reshape(-1), t[1].reshape(t[0].numel(), -1), t[2].reshape(-1), t[3].reshape(t[2].numel(), -1)]
    if t[0].shape != t[2].shape or t[1].shape != t[3].shape or t[1].shape != (t[0].numel(),) * 2:
        raise ValueError("mean/covariance shapes do not match")
    return float(_compute_fid(*t))


def fid_from_features(real_features, fake_features) -> float:
    """FID from two ``(N, D)`` feature arrays (e.g. cached real-image features), N >= 2 each."""
    f1 = torch.as_tensor(np.asarray(real_features, np.float64))
    f2 = torch.as_tensor(np.asarray(fake_features, np.float64))
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"need two (N, D) feature arrays of one D, got {tuple(f1.shape)} and {tuple(f2.shape)}")
    if min(f1.shape[0], f2.shape[0]) < 2:
        raise ValueError("FID needs at least 2 feature vectors in each set")
    metric = _fid_metric(_Given(f1.shape[1]))
    metric.update(f1, real=True)
    metric.update(f2, real=False)
    return fid_value(metric)


def fid_metric(weights=None, device="cpu"):
    """A streaming FID: torchmetrics' ``FrechetInceptionDistance`` on :class:`InceptionFeatures`.

    ``m.update(images, real=True|False)`` with ``(N, C, H, W)`` tensors in [-1, 1] on ``device``;
    :func:`fid_value` ``(m)`` gives the distance. Only the 2048-d sums are kept, never the images.
    """
    return _fid_metric(inception_network(weights, device)).to(device)


@torch.no_grad()
def fid(real_images, fake_images, weights=None, *, batch_size: int = 32, device=None) -> float:
    """Fréchet Inception Distance between two image sets (lower is better).

    ``real_images`` / ``fake_images``: ``(N, C, H, W)`` tensors in [-1, 1] or iterables of such
    batches (streamed: only the 2048-d statistics are kept); at least 2 images each (FID is only
    meaningful with thousands). ``weights``: the Inception-v3 file, default the search order of
    :mod:`imtranslate.weights` (network ``inception_fid``). Features: :class:`InceptionFeatures`;
    statistics and distance: ``torchmetrics.image.fid.FrechetInceptionDistance``.

    Raises :class:`~imtranslate.errors.WeightsMissingError` when the weights file is missing.
    Note: torchvision's ImageNet Inception weights give numbers close to, but not identical
    with, the TF-Inception FID of published papers.
    """
    path = find_weights("fid", weights)
    metric = dev = None
    for real, images in ((True, real_images), (False, fake_images)):
        n = 0
        for batch in _as_batches(images):
            if metric is None:  # everything runs where the first batch is (or on `device`)
                dev = torch.device(device) if device is not None else batch.device
                metric = fid_metric(path, dev)
            for chunk in batch.split(batch_size):
                metric.update(chunk.to(dev), real=real)
            n += batch.shape[0]
        if n < 2:
            raise ValueError(f"FID needs at least 2 {'real' if real else 'generated'} images, got {n}")
    return fid_value(metric)


# --------------------------------------------------------------------------------------------
# LPIPS: torchmetrics' LPIPS network, weights from one local file
# --------------------------------------------------------------------------------------------
# Why not `torchmetrics.image.LearnedPerceptualImagePatchSimilarity(net_type="vgg")` itself: its
# constructor loads the ImageNet backbone through torchvision, which downloads it unless it is in the
# torch hub cache (tried offline: URLError), and it cannot be pointed at a file. So the same network
# module (`_LPIPS`, torchmetrics' port of the official LPIPS v0.1) is built with random weights and
# the local tensors are loaded into it; the forward pass is torchmetrics'. The linear layers come
# from the local file or, for a bare torchvision backbone file, from the copy torchmetrics ships.
_LPIPS_NETS = {  # backbone -> (features modules used, channels of the five compared layers)
    "vgg": (30, [64, 128, 256, 512, 512]),
    "alex": (12, [64, 192, 384, 256, 256]),
}
LPIPS_FORMAT = "imtranslate-lpips-v1"
_FEATURE_KEY = re.compile(r"^features\.(\d+)\.(weight|bias)$")
_LIN_KEY = re.compile(r"^(?:.*\.)?lin(\d+)\.(?:model\.)?(?:\d+\.)?weight$")


def _tm_lpips(net: str) -> nn.Module:
    """torchmetrics' LPIPS module for ``net``, built without reading or initialising any weights."""
    from torchmetrics.functional.image.lpips import ScalingLayer, _NoTrainLpips

    with torch.device("meta"):  # the random init of torchvision's whole VGG16 takes seconds
        m = _NoTrainLpips(pretrained=False, net=net, pnet_rand=True, use_dropout=True)
    m = m.to_empty(device="cpu")
    m.scaling_layer = ScalingLayer()  # its constants are buffers, not weights: rebuild them off "meta"
    return m


class LPIPSNet(nn.Module):
    """LPIPS v0.1 (Zhang et al. 2018) as torchmetrics computes it: ``forward(pred, target) -> (B,)``.

    Inputs in [-1, 1] (clamped), 1 or 3 channels (grey is repeated), at least 32x32 pixels (VGG) /
    64x64 (AlexNet) for meaningful deep layers. A freshly constructed net has random backbone
    weights and non-negative random linear weights (tests only).

    The weights file layout (:meth:`file_state_dict`, read by :func:`lpips`):
    ``features.{i}.weight|bias`` — torchvision's ``vgg16().features`` (i < 30) or
    ``alexnet().features`` (i < 12) indices, unchanged; ``lin.{k}.weight`` — ``(1, C_k, 1, 1)``
    for k = 0..4.
    """

    def __init__(self, net: str = "vgg"):
        super().__init__()
        if net not in _LPIPS_NETS:
            raise ValueError(f"LPIPS backbone must be one of {sorted(_LPIPS_NETS)}, got {net!r}")
        self.net = net
        self.lpips = _tm_lpips(net)
        with torch.no_grad():
            for m in self.lpips.modules():
                if isinstance(m, nn.Conv2d):
                    m.reset_parameters()
            for lin in self.lpips.lins:
                lin.model[-1].weight.abs_()

    def _convs(self) -> dict[int, nn.Conv2d]:
        """torchvision ``features`` index -> conv module (torchmetrics keeps the indices as names)."""
        return {int(i): m for s in range(1, 6) for i, m in getattr(self.lpips.net, f"slice{s}").named_children()
                if isinstance(m, nn.Conv2d)}

    def file_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors in the layout of the weights file (see the class docstring)."""
        out = {}
        for i, conv in self._convs().items():
            out[f"features.{i}.weight"], out[f"features.{i}.bias"] = conv.weight.detach(), conv.bias.detach()
        for k, lin in enumerate(self.lpips.lins):
            out[f"lin.{k}.weight"] = lin.model[-1].weight.detach()
        return out

    def load_file_state_dict(self, state: dict[str, torch.Tensor], path="the weights") -> None:
        """Load tensors in the file layout; every tensor must be there with its shape."""
        convs, n_lin = self._convs(), len(self.lpips.lins)
        want = [f"features.{i}.{p}" for i in convs for p in ("weight", "bias")] + [f"lin.{k}.weight" for k in range(n_lin)]
        missing = [k for k in want if k not in state]
        unexpected = [k for k in state if k not in want]
        if missing or unexpected:
            raise WeightsMissingError(
                f"{path}: not an LPIPS ({self.net}) weights file ("
                + "; ".join(([f"missing {', '.join(missing[:5])}"] if missing else [])
                            + ([f"unexpected {', '.join(unexpected[:5])}"] if unexpected else []))
                + f"). Expected {_weights.NETWORKS['lpips'].hint}")
        targets = {**{f"features.{i}.weight": c.weight for i, c in convs.items()},
                   **{f"features.{i}.bias": c.bias for i, c in convs.items()},
                   **{f"lin.{k}.weight": lin.model[-1].weight for k, lin in enumerate(self.lpips.lins)}}
        with torch.no_grad():
            for k, t in targets.items():
                if state[k].shape != t.shape:
                    raise WeightsMissingError(f"{path}: {k} has shape {tuple(state[k].shape)}, the LPIPS "
                                              f"({self.net}) network needs {tuple(t.shape)}")
                t.copy_(state[k])

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(pred, target)
        if pred.shape[1] == 1:
            pred, target = pred.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
        elif pred.shape[1] != 3:
            raise ValueError(f"LPIPS needs 1- or 3-channel images, got {pred.shape[1]}")
        dtype = self.lpips.scaling_layer.shift.dtype
        x, y = pred.to(dtype).clamp(-1.0, 1.0), target.to(dtype).clamp(-1.0, 1.0)
        return self.lpips(x, y).flatten()  # (B, 1, 1, 1) -> (B,)

    def save(self, path) -> Path:
        """Write this net as a single LPIPS weights file (the layout :func:`lpips` reads)."""
        return _write_lpips_file({k: v.cpu() for k, v in self.file_state_dict().items()}, self.net, path)


def _write_lpips_file(state: dict, net: str, out_path) -> Path:
    from safetensors.torch import save_file

    out_path = Path(out_path).expanduser()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
              metadata={"format": LPIPS_FORMAT, "net": net})
    os.replace(tmp, out_path)
    return out_path


def _guess_lpips_net(state: dict) -> str | None:
    w = state.get("features.0.weight")
    if w is None or w.ndim != 4:
        return None
    return "alex" if w.shape[-1] == 11 else "vgg" if w.shape[-1] == 3 else None


def _bundled_lins(net: str) -> Path:
    """The official LPIPS v0.1 linear layers that torchmetrics ships (``lpips_models/<net>.pth``)."""
    import torchmetrics.functional.image.lpips as tm_lpips

    return Path(tm_lpips.__file__).parent / "lpips_models" / f"{net}.pth"


def _lpips_state(backbone: dict, lin_state: dict, backbone_path, lin_path) -> tuple[dict, str]:
    """File-layout tensors from a torchvision backbone state dict and LPIPS linear layers."""
    net = _guess_lpips_net(backbone)
    if net is None:
        raise WeightsMissingError(f"{backbone_path}: not a torchvision VGG16/AlexNet checkpoint "
                                  "(no 'features.0.weight' with a 3x3 or 11x11 kernel)")
    n_used, chans = _LPIPS_NETS[net]
    state = {}
    for k, v in backbone.items():
        m = _FEATURE_KEY.match(k)
        if m and int(m.group(1)) < n_used:
            state[k] = v.float()
    lins = {}
    for k, v in lin_state.items():
        m = _LIN_KEY.match(k)
        if m and v.ndim == 4 and v.shape[0] == 1:
            lins[int(m.group(1))] = v.float()
    if sorted(lins) != list(range(5)):
        raise WeightsMissingError(f"{lin_path}: expected LPIPS linear layers lin0..lin4 (keys like "
                                  f"'lin0.model.1.weight'), found {sorted(lins) or 'none'}")
    for k, c in enumerate(chans):
        if lins[k].shape[1] != c:
            raise WeightsMissingError(f"{lin_path}: lin{k} has {lins[k].shape[1]} channels but the {net} backbone "
                                      f"in {backbone_path} gives {c}; use the LPIPS file made for {net}")
        state[f"lin.{k}.weight"] = lins[k]
    return state, net


@functools.lru_cache(maxsize=2)
def _lpips_cached(key: tuple, device: str) -> LPIPSNet:
    path = Path(key[0])
    state, meta = _weights.read_state_dict(path, "LPIPS weights")
    if not any(k.startswith("lin") for k in state):  # a bare torchvision backbone (e.g. the hub cache's)
        state, net = _lpips_state(state, _weights.read_state_dict(_bundled_lins(_guess_lpips_net(state) or "vgg"),
                                                                  "LPIPS linear layers")[0],
                                  path, "torchmetrics' LPIPS linear layers")
    else:
        net = meta.get("net") or _guess_lpips_net(state)
    if net not in _LPIPS_NETS:
        raise WeightsMissingError(f"{path}: not an LPIPS weights file (no 'features.0.weight' of a VGG16 or "
                                  f"AlexNet). {_weights.NETWORKS['lpips'].hint}")
    model = LPIPSNet(net)
    model.load_file_state_dict(state, path)
    return model.to(device)


def lpips(pred: torch.Tensor, target: torch.Tensor, weights=None) -> torch.Tensor:
    """LPIPS distance per image, shape ``(B,)`` (lower is more similar; identical -> 0).

    Inputs: ``(B, C, H, W)`` in [-1, 1], C = 1 or 3. Gradients flow to the inputs (the
    network itself is frozen), so it can also serve as a loss.

    ``weights``: a file, default the search order of :mod:`imtranslate.weights` (network
    ``lpips``): ``lpips_vgg.safetensors``, else torchvision's ``vgg16-397923af.pth``. Either ONE
    safetensors file holding, as float tensors:

    ====================================  ==================================================
    ``features.{i}.weight``, ``.bias``    torchvision backbone convolutions, torchvision's
                                          own ``features`` indices: VGG16 i in {0, 2, 5, 7,
                                          10, 12, 14, 17, 19, 21, 24, 26, 28}; AlexNet i in
                                          {0, 3, 6, 8, 10}
    ``lin.{k}.weight``                    LPIPS linear layer k = 0..4, shape ``(1, C_k, 1,
                                          1)``; C = 64,128,256,512,512 (VGG) or
                                          64,192,384,256,256 (AlexNet)
    ====================================  ==================================================

    and the header metadata ``{"format": "imtranslate-lpips-v1", "net": "vgg" | "alex"}``
    (without it the backbone is recognised from ``features.0.weight``'s kernel size),
    as :func:`convert_lpips_weights` writes; or a bare torchvision VGG16/AlexNet checkpoint, whose
    linear layers are then the official v0.1 ones that torchmetrics ships.
    Raises :class:`~imtranslate.errors.WeightsMissingError` when it is missing or unusable.
    """
    path = find_weights("lpips", weights)
    model = _lpips_cached(_file_key(path), str(pred.device))
    return model(pred, target)


def convert_lpips_weights(backbone_path, lin_path, out_path) -> Path:
    """Write the single LPIPS weights file that :func:`lpips` reads.

    ``backbone_path``: torchvision's ImageNet checkpoint of the backbone, e.g.
    ``vgg16-397923af.pth`` (or ``alexnet-owt-7be5be79.pth``); only its ``features.*`` tensors
    are kept. ``lin_path``: the official LPIPS v0.1 linear layers for that backbone
    (``lpips/weights/v0.1/vgg.pth`` or ``alex.pth``, keys ``lin{k}.model.1.weight``). Both are
    read with ``torch.load(weights_only=True)``. ``out_path``: where to write, normally
    ``$IMTRANSLATE_WEIGHTS/lpips_vgg.safetensors``. Returns ``out_path`` as a Path.
    """
    backbone_path, lin_path = Path(backbone_path).expanduser(), Path(lin_path).expanduser()
    for p in (backbone_path, lin_path):
        if not p.is_file():
            raise WeightsMissingError(f"{p} does not exist")
    state, net = _lpips_state(_weights.read_state_dict(backbone_path, "LPIPS backbone")[0],
                              _weights.read_state_dict(lin_path, "LPIPS linear layers")[0], backbone_path, lin_path)
    LPIPSNet(net).load_file_state_dict(state, backbone_path)  # complete and of the right shapes, before writing
    return _write_lpips_file(state, net, out_path)
