"""Image quality metrics: L1, PSNR, SSIM, and (with local weights) FID and LPIPS.

Every metric takes model tensors, float ``(B, C, H, W)`` pictures in **[-1, 1]** (C = 1 or 3),
and computes in **[0, 1]** units: ``x01 = (clamp(x, -1, 1) + 1) / 2``. Clamping first means a
metric measures the picture that would be saved to disk, not values a generator could never
write. ``pred`` and ``target`` must have the same shape.

Per-image metrics (differentiable, no weights needed)
    * :func:`l1` — mean absolute error, ``(B,)``.
    * :func:`psnr` — peak signal-to-noise ratio in dB, ``(B,)``; MSE is clamped at 1e-10, so
      identical images give ``10 * log10(data_range**2 / 1e-10)`` (100 dB for data_range=1).
    * :func:`ssim` — Wang et al. (2004) SSIM, ``(B,)``; see its docstring for the exact
      convention (it matches ``skimage.metrics.structural_similarity`` with Gaussian weights).
    * :class:`MetricAccumulator` — running means of the three over a validation set.

Metrics that need pretrained networks (optional)
    * :func:`fid` — Fréchet Inception Distance from torchvision's Inception-v3 pool3 features.
    * :func:`lpips` — LPIPS (Zhang et al. 2018) with a VGG16 or AlexNet backbone.

Nothing is ever downloaded. The weights are read from local files; by default from the folder
named by the ``IMTRANSLATE_WEIGHTS`` environment variable, else ``~/.cache/imtranslate/weights``:

    ============================  ==========================================================
    ``inception_v3_fid.safetensors``  torchvision Inception-v3 state dict (``.pth`` also read)
    ``lpips_vgg.safetensors``         backbone + linear layers, see :func:`lpips`
    ============================  ==========================================================

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

from .errors import WeightsMissingError

__all__ = [
    "l1",
    "psnr",
    "ssim",
    "MetricAccumulator",
    "weights_dir",
    "default_weights_path",
    "optional_metrics_status",
    "inception_features",
    "feature_statistics",
    "frechet_distance",
    "fid_from_features",
    "fid",
    "LPIPSNet",
    "lpips",
    "convert_lpips_weights",
]

WEIGHTS_ENV = "IMTRANSLATE_WEIGHTS"
FID_WEIGHTS_NAME = "inception_v3_fid.safetensors"
LPIPS_WEIGHTS_NAME = "lpips_vgg.safetensors"


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


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, shape ``(B,)``.

    ``10 * log10(data_range**2 / max(MSE, 1e-10))`` with the MSE taken in [0, 1] units, so
    identical images give a finite 100 dB (for ``data_range=1``) instead of infinity. A
    constant error of ``e`` (in [0, 1] units) gives ``-20 * log10(e)``.
    """
    _check_pair(pred, target)
    mse = (_to01(pred) - _to01(target)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-10))


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
# Local weights
# --------------------------------------------------------------------------------------------
def weights_dir() -> Path:
    """``$IMTRANSLATE_WEIGHTS`` if set, else ``~/.cache/imtranslate/weights`` (read each call)."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "imtranslate" / "weights"


def default_weights_path(metric: str) -> Path:
    """Where :func:`fid` (``metric="fid"``) or :func:`lpips` (``"lpips"``) look by default."""
    names = {"fid": FID_WEIGHTS_NAME, "lpips": LPIPS_WEIGHTS_NAME}
    if metric not in names:
        raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(names)}")
    return weights_dir() / names[metric]


_WHAT = {
    "fid": "a torchvision Inception-v3 state dict (e.g. torchvision's inception_v3_google-*.pth "
    "saved as safetensors; a .pth path can also be passed as weights=)",
    "lpips": "one safetensors file holding the VGG16 backbone and the LPIPS linear layers",
}
_HOW = {
    "fid": "",
    "lpips": " (make it from torchvision's vgg16-*.pth and the official LPIPS v0.1 vgg.pth with "
    "imtranslate.metrics.convert_lpips_weights(backbone_path, lin_path, out_path))",
}
_HOW_TO = {k: _WHAT[k] + _HOW[k] for k in _WHAT}


def _missing_message(metric: str, path: Path) -> str:
    return (
        f"{metric.upper()} weights not found: {path} does not exist. Put {_WHAT[metric]} there"
        f"{_HOW[metric]}, or set ${WEIGHTS_ENV} to the folder that holds "
        f"{default_weights_path(metric).name}. Nothing is downloaded automatically."
    )


def _resolve(metric: str, weights) -> Path:
    path = Path(weights).expanduser() if weights is not None else default_weights_path(metric)
    if not path.is_file():
        raise WeightsMissingError(_missing_message(metric, path))
    return path


def optional_metrics_status() -> dict[str, tuple[bool, str]]:
    """``{"fid": (available, message), "lpips": (available, message)}`` for the default paths.

    The message says where the file was found, or which file is missing and how to get it.
    Only existence is checked; a broken file is reported when the metric is first used.
    """
    out = {}
    for metric in ("fid", "lpips"):
        path = default_weights_path(metric)
        if path.is_file():
            out[metric] = (True, f"{metric.upper()} weights found at {path}")
        else:
            out[metric] = (False, _missing_message(metric, path))
    return out


def _read_state_dict(path: Path, metric: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, safetensors metadata) from a .safetensors file or a torch.load-able file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            tensors, meta = {}, {}
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                for k in f.keys():
                    tensors[k] = f.get_tensor(k)
            return tensors, meta
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / wrong format
        raise WeightsMissingError(
            f"{path}: cannot be read as {metric.upper()} weights ({type(e).__name__}: {e}). "
            f"Expected {_HOW_TO[metric]}."
        ) from e
    for key in ("state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsMissingError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    tensors = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            tensors[k[len("module."):] if k.startswith("module.") else k] = v
    return tensors, {}


def _load_into(module: nn.Module, state: dict, path: Path, metric: str) -> None:
    """Strict load that tolerates missing BatchNorm ``num_batches_tracked`` counters."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None:
            m.num_batches_tracked.zero_()
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise WeightsMissingError(
            f"{path}: tensors do not fit the {metric.upper()} network: {e}"
        ) from e
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        def short(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        problems = []
        if missing:
            problems.append(f"missing {short(missing)}")
        if unexpected:
            problems.append(f"unexpected {short(unexpected)}")
        raise WeightsMissingError(
            f"{path}: not a {metric.upper()} weights file ({'; '.join(problems)}). "
            f"Expected {_HOW_TO[metric]}."
        )


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


# --------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------
FID_SIZE = 299


def _build_inception() -> nn.Module:
    import torchvision

    # Built on the meta device (no time spent initialising weights that are overwritten).
    with torch.device("meta"):
        net = torchvision.models.inception_v3(
            weights=None, aux_logits=False, init_weights=False, transform_input=False
        )
    net.fc = nn.Identity()  # forward() now returns the 2048-d pool3 features
    return net.to_empty(device="cpu")


@functools.lru_cache(maxsize=2)
def _inception_cached(key: tuple, device: str) -> nn.Module:
    path = Path(key[0])
    state, _ = _read_state_dict(path, "fid")
    state = {k: v for k, v in state.items() if not k.startswith(("AuxLogits.", "fc."))}
    net = _build_inception()
    _load_into(net, state, path, "fid")
    net.eval().requires_grad_(False)
    return net.to(device)


def _as_batches(images) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        images = [images]
    for batch in images:
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
            raise ValueError("FID takes (N, C, H, W) tensors in [-1, 1] or an iterable of them")
        yield batch


@torch.no_grad()
def inception_features(images, *, weights=None, batch_size: int = 32, device=None) -> np.ndarray:
    """Inception-v3 pool3 features, ``float64 (N, 2048)``.

    ``images``: a ``(N, C, H, W)`` tensor in [-1, 1] (C = 1 or 3) or an iterable of such
    batches (e.g. a DataLoader's target tensors). Each image is resized to 299x299 (bilinear,
    as pytorch-fid does) and fed in [-1, 1], the range torchvision's Inception weights expect
    with ``transform_input=False``; grey images are repeated to three channels.
    """
    path = _resolve("fid", weights)
    feats = []
    net = dev = None
    for batch in _as_batches(images):
        if net is None:  # everything runs where the first batch is (or on `device`)
            dev = torch.device(device) if device is not None else batch.device
            net = _inception_cached(_file_key(path), str(dev))
        for chunk in batch.split(batch_size):
            x = chunk.to(dev, torch.float32).clamp(-1.0, 1.0)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            elif x.shape[1] != 3:
                raise ValueError(f"FID needs 1- or 3-channel images, got {x.shape[1]} channels")
            if x.shape[-2:] != (FID_SIZE, FID_SIZE):
                x = F.interpolate(x, size=(FID_SIZE, FID_SIZE), mode="bilinear",
                                  align_corners=False)
            feats.append(net(x).double().cpu())
    if not feats:
        raise ValueError("FID got no images")
    return torch.cat(feats).numpy()


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, N - 1) of ``(N, D)`` features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features for a covariance, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues -> 0)."""
    w, v = np.linalg.eigh((a + a.T) * 0.5)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """``tr(sqrt(s1 @ s2))`` for symmetric PSD s1, s2, with eigen-decompositions only.

    ``s1 @ s2`` is not symmetric, but it is similar to ``A = sqrt(s1) @ s2 @ sqrt(s1)``
    (conjugate by ``sqrt(s1)``), which is symmetric PSD. Similar matrices share eigenvalues, and
    the trace of a matrix square root is the sum of the square roots of its eigenvalues, so
    ``tr(sqrt(s1 s2)) = sum(sqrt(eig(A)))``.
    """
    r1 = _sym_sqrt(s1)
    a = r1 @ s2 @ r1
    w = np.linalg.eigvalsh((a + a.T) * 0.5)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def _trace_sqrt_product_scipy(s1: np.ndarray, s2: np.ndarray) -> float:
    import warnings

    from scipy import linalg

    with warnings.catch_warnings():  # singular input is detected and handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():  # singular product: nudge both diagonals
            off = np.eye(s1.shape[0]) * 1e-6
            covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    if np.iscomplexobj(covmean):
        if not np.isfinite(covmean).all() or np.abs(covmean.imag).max() > 1e-3 * max(
            1.0, np.abs(covmean.real).max()
        ):
            return _trace_sqrt_product_eigh(s1, s2)  # sqrtm went numerically astray
        covmean = covmean.real
    if not np.isfinite(covmean).all():
        return _trace_sqrt_product_eigh(s1, s2)
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, *, method: str = "auto") -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2))``.

    ``method``: ``"scipy"`` (``scipy.linalg.sqrtm``, the usual FID route), ``"eigh"`` (numpy
    only, via the symmetric form ``sqrt(sigma1) sigma2 sqrt(sigma1)``), or ``"auto"``
    (scipy when importable, else eigh).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError("mean/covariance shapes do not match")
    if method == "auto":
        try:
            import scipy.linalg  # noqa: F401

            method = "scipy"
        except ImportError:
            method = "eigh"
    if method == "scipy":
        tr_covmean = _trace_sqrt_product_scipy(s1, s2)
    elif method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(s1, s2)
    else:
        raise ValueError(f"method must be 'auto', 'scipy' or 'eigh', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid_from_features(real_features, fake_features, *, method: str = "auto") -> float:
    """FID from two ``(N, D)`` feature arrays (e.g. cached real-image features).

    When both sets have at most D images (then both covariances are singular and
    ``sqrtm`` is slow and inaccurate) the trace term is computed exactly in sample space:
    with centred features X1, X2, ``tr(sqrt(S1 S2)) = ||X1 X2^T||_* / sqrt((n1-1)(n2-1))``
    (nuclear norm: the non-zero eigenvalues of ``S1 S2`` are the squared singular values of
    ``X1 X2^T`` up to that factor). Otherwise :func:`frechet_distance` with ``method``.
    """
    f1 = np.asarray(real_features, dtype=np.float64)
    f2 = np.asarray(fake_features, dtype=np.float64)
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sizes differ: {f1.shape[1]} vs {f2.shape[1]}")
    (n1, d), n2 = f1.shape, f2.shape[0]
    if n1 > d or n2 > d:
        return frechet_distance(mu1, s1, mu2, s2, method=method)
    x1, x2 = f1 - mu1, f2 - mu2
    tr_covmean = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid(real_images, fake_images, weights=None, *, batch_size: int = 32, device=None,
        method: str = "auto") -> float:
    """Fréchet Inception Distance between two image sets (lower is better).

    ``real_images`` / ``fake_images``: ``(N, C, H, W)`` tensors in [-1, 1] or iterables of such
    batches; at least 2 images each (FID is only meaningful with thousands). ``weights``: path
    of the Inception-v3 state dict, default :func:`default_weights_path` ``("fid")``. Features
    are torchvision Inception-v3's 2048-d pool3 output (see :func:`inception_features`); the
    distance is :func:`fid_from_features` (``method`` as in :func:`frechet_distance`).

    Raises :class:`~imtranslate.errors.WeightsMissingError` when the weights file is missing.
    Note: torchvision's ImageNet Inception weights give numbers close to, but not identical
    with, the TF-Inception FID of published papers.
    """
    kw = dict(weights=weights, batch_size=batch_size, device=device)
    return fid_from_features(
        inception_features(real_images, **kw), inception_features(fake_images, **kw), method=method
    )


# --------------------------------------------------------------------------------------------
# LPIPS
# --------------------------------------------------------------------------------------------
# Per backbone: torchvision constructor, how many `features` modules are used, and the
# [start, end) ranges of `features` after which a layer's activation is compared.
_LPIPS_NETS = {
    "vgg": ("vgg16", 30, [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)], [64, 128, 256, 512, 512]),
    "alex": ("alexnet", 12, [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)], [64, 192, 384, 256, 256]),
}
LPIPS_FORMAT = "imtranslate-lpips-v1"


class LPIPSNet(nn.Module):
    """LPIPS v0.1 network (Zhang et al. 2018): distances between unit-normalised deep features.

    ``forward(pred, target) -> (B,)``. Inputs in [-1, 1], 3 channels (grey is repeated),
    at least 32x32 pixels (VGG) / 64x64 (AlexNet) for meaningful deep layers.

    State-dict keys (exactly those of the single weights file, see :func:`lpips`):
    ``features.{i}.weight|bias`` — torchvision's ``vgg16().features`` (i < 30) or
    ``alexnet().features`` (i < 12) indices, unchanged; ``lin.{k}.weight`` — ``(1, C_k, 1, 1)``
    for k = 0..4. A freshly constructed net has random backbone weights and non-negative
    random linear weights (useful for tests only).
    """

    def __init__(self, net: str = "vgg"):
        super().__init__()
        import torchvision

        if net not in _LPIPS_NETS:
            raise ValueError(f"LPIPS backbone must be one of {sorted(_LPIPS_NETS)}, got {net!r}")
        ctor, n_used, self._slices, chans = _LPIPS_NETS[net]
        self.net = net
        with torch.device("meta"):  # skip initialising the (large) classifier
            backbone = getattr(torchvision.models, ctor)(weights=None)
        self.features = backbone.features[:n_used].to_empty(device="cpu")
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
        self.lin = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in chans)
        with torch.no_grad():
            for conv in self.lin:
                conv.weight.abs_()
        # Input scaling of the official implementation ([-1, 1] -> ImageNet-like statistics).
        self.register_buffer(
            "shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False
        )

    def _activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.shift) / self.scale
        outs = []
        for start, end in self._slices:
            for i in range(start, end):
                h = self.features[i](h)
            outs.append(h)
        return outs

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(pred, target)
        if pred.shape[1] == 1:
            pred, target = pred.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
        elif pred.shape[1] != 3:
            raise ValueError(f"LPIPS needs 1- or 3-channel images, got {pred.shape[1]}")
        dtype = self.shift.dtype
        x = pred.to(dtype).clamp(-1.0, 1.0)
        y = target.to(dtype).clamp(-1.0, 1.0)
        # One pass over both images (the in-place ReLUs never touch a kept activation: every
        # slice ends with a ReLU and the next starts with a pool or a conv).
        acts = self._activations(torch.cat([x, y]))
        total = pred.new_zeros(pred.shape[0], dtype=dtype)
        for a, lin in zip(acts, self.lin):
            a = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            fx, fy = a.chunk(2)
            total = total + lin((fx - fy).pow(2)).mean(dim=(1, 2, 3))
        return total

    def save(self, path) -> Path:
        """Write this net as a single LPIPS weights file (the layout :func:`lpips` reads)."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return _write_lpips_file(state, self.net, path)


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


@functools.lru_cache(maxsize=2)
def _lpips_cached(key: tuple, device: str) -> LPIPSNet:
    path = Path(key[0])
    state, meta = _read_state_dict(path, "lpips")
    net = meta.get("net") or _guess_lpips_net(state)
    if net not in _LPIPS_NETS:
        raise WeightsMissingError(
            f"{path}: not an LPIPS weights file (no 'features.0.weight' of a VGG16 or AlexNet). "
            f"Expected {_HOW_TO['lpips']}."
        )
    model = LPIPSNet(net)
    _load_into(model, state, path, "lpips")
    model.eval().requires_grad_(False)
    return model.to(device)


def lpips(pred: torch.Tensor, target: torch.Tensor, weights=None) -> torch.Tensor:
    """LPIPS distance per image, shape ``(B,)`` (lower is more similar; identical -> 0).

    Inputs: ``(B, C, H, W)`` in [-1, 1], C = 1 or 3. Gradients flow to the inputs (the
    network itself is frozen), so it can also serve as a loss.

    ``weights``: ONE safetensors file (default :func:`default_weights_path` ``("lpips")``,
    i.e. ``lpips_vgg.safetensors``) holding, as float tensors:

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
    (without it the backbone is recognised from ``features.0.weight``'s kernel size).
    :func:`convert_lpips_weights` writes this file from the two files a user downloads.
    Raises :class:`~imtranslate.errors.WeightsMissingError` when it is missing or unusable.
    """
    path = _resolve("lpips", weights)
    model = _lpips_cached(_file_key(path), str(pred.device))
    return model(pred, target)


_LIN_KEY = re.compile(r"^(?:.*\.)?lin(\d+)\.(?:model\.)?(?:\d+\.)?weight$")


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
    backbone, _ = _read_state_dict(backbone_path, "lpips")
    lin_state, _ = _read_state_dict(lin_path, "lpips")
    net = _guess_lpips_net(backbone)
    if net is None:
        raise WeightsMissingError(
            f"{backbone_path}: not a torchvision VGG16/AlexNet checkpoint "
            "(no 'features.0.weight' with a 3x3 or 11x11 kernel)"
        )
    _, n_used, _, chans = _LPIPS_NETS[net]
    state = {}
    for k, v in backbone.items():
        m = re.match(r"^features\.(\d+)\.(weight|bias)$", k)
        if m and int(m.group(1)) < n_used:
            state[k] = v.float()
    lins = {}
    for k, v in lin_state.items():
        m = _LIN_KEY.match(k)
        if m and v.ndim == 4 and v.shape[0] == 1:
            lins[int(m.group(1))] = v.float()
    if sorted(lins) != list(range(5)):
        raise WeightsMissingError(
            f"{lin_path}: expected LPIPS linear layers lin0..lin4 (keys like "
            f"'lin0.model.1.weight'), found {sorted(lins) or 'none'}"
        )
    for k, c in enumerate(chans):
        if lins[k].shape[1] != c:
            raise WeightsMissingError(
                f"{lin_path}: lin{k} has {lins[k].shape[1]} channels but the {net} backbone in "
                f"{backbone_path} gives {c}; use the LPIPS file made for {net}"
            )
        state[f"lin.{k}.weight"] = lins[k]
    # Check completeness against the network before writing anything.
    model = LPIPSNet(net)
    _load_into(model, state, backbone_path, "lpips")
    return _write_lpips_file(state, net, out_path)
