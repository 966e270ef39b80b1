"""Style transfer by style swap at inference (SPEC S3): stylise, then blend per channel.

    >>> import imtranslate
    >>> st = imtranslate.load_stylizer("runs/0001-styleswap/checkpoints/last.safetensors")
    >>> out = st("photo.jpg", "painting.jpg", blend=0.3)          # PIL picture, the photo's size
    >>> raw = st.stylize("photo.jpg", "painting.jpg")             # uint8 (H, W, 3): the initial stylised picture
    >>> final = blend(content, raw, 0.2, 0.5, 0.8)                # per-channel weights, no network run

The pipeline: the content and style pictures go through the frozen VGG-19 encoder, the content
features are style-swapped (``imtranslate.nets.style_swap``), and the inverse network (or, with
``optimize=True``, gradient descent on the picture itself) turns the swapped features into the
*initial stylised picture*, at the content's own size. :func:`blend` then mixes it with the
content picture channel by channel, ``R3 = a R1 + (1 - a) R2`` (1 = content, 2 = stylised), and
likewise with ``b`` for G and ``c`` for B — a cheap numpy operation, so weights can change
without running any network (the web page does the same in the browser).

Pictures of any size: the encoder (scale 1/4 for relu3_1), the inverse net (scale 4) and the
optimisation-based inversion run through the one tiling engine (``infer/tiling.py``) with
overlaps wider than their receptive fields (the same result as one pass, bounded memory), and
the swap itself works in bounded chunks.
"""
from __future__ import annotations

import hashlib
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..tasks import resolve
from ..data import read_image, write_image
from ..errors import CheckpointError, ConfigError, DataError, ImtranslateError
from ..losses import tv_loss
from ..checkpoint_file import load_generator, read_meta
from ..nets.inverse import InverseNet, build_encoder, encoder_geometry, encoder_receptive_field
from ..nets.style_swap import DEFAULT_CHUNK, style_swap, style_swap_fast
from ..nets.vgg import VGG19Features
from ..ops import crop_to, pad_to_multiple
from .tiling import tile_translate

#: pictures larger than this many pixels a side are encoded / decoded tile by tile
DEFAULT_TILE = 1024
#: gradient steps of the optimisation-based inversion
DEFAULT_STEPS = 100

# BT.601 luma weights (the Y of JPEG's YCbCr); the web page uses the same numbers
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Blending (pure numpy)
# --------------------------------------------------------------------------------------------
def _weights(a, b=None, c=None) -> np.ndarray:
    if (b is None) != (c is None):
        raise ConfigError("give one blend weight for all channels, or three (a, b, c for R, G, B)")
    w = np.array([a, a, a] if b is None else [a, b, c], dtype=np.float64)
    if not np.all(np.isfinite(w)) or w.min() < 0 or w.max() > 1:
        raise ConfigError(f"blend weights must be between 0 and 1 (0 = stylised, 1 = content), got {w.tolist()}")
    return w.astype(np.float32)


def preserve_colors(content: np.ndarray, stylised: np.ndarray) -> np.ndarray:
    """The stylised picture's luminance with the content's colours (float, same range as the inputs).

    In YCbCr, RGB = Y * (1, 1, 1) + (a term of Cb, Cr only), so keeping the content's Cb, Cr
    and the stylised Y is ``content + (Y_stylised - Y_content)`` on every channel.
    """
    c = np.asarray(content, dtype=np.float32)
    s = np.asarray(stylised, dtype=np.float32)
    dy = s @ _LUMA - c @ _LUMA  # (H, W)
    hi = 255.0 if np.asarray(content).dtype == np.uint8 else 1.0
    return np.clip(c + dy[..., None], 0.0, hi)


def blend(content, stylised, a: float, b: float | None = None, c: float | None = None,
          preserve_color: bool = False) -> np.ndarray:
    """SPEC S3's adjustment: ``R3 = a R1 + (1 - a) R2``, ``G3 = b G1 + (1 - b) G2``, ``B3 = c B1 + (1 - c) B2``.

    Args:
        content: picture 1, (H, W, 3) uint8 (or float in [0, 1]).
        stylised: picture 2, the initial stylised picture, same shape and kind.
        a: weight of the content in R; also G and B unless ``b`` and ``c`` are given.
        preserve_color: replace the stylised picture's colours by the content's (keeping its
            luminance) before blending.

    Returns:
        (H, W, 3), uint8 (rounded half to even and clipped, as a browser canvas does) for uint8
        inputs, float otherwise. ``a = 1`` gives the content, ``a = 0`` the stylised picture.
    """
    c1, c2 = np.asarray(content), np.asarray(stylised)
    if c1.shape != c2.shape or c1.ndim != 3 or c1.shape[2] != 3:
        raise ConfigError(f"blend needs two (H, W, 3) pictures of the same size, got {c1.shape} and {c2.shape}")
    w = _weights(a, b, c)
    p2 = preserve_colors(c1, c2) if preserve_color else c2.astype(np.float32)
    out = c1.astype(np.float32) * w + p2 * (1.0 - w)
    if c1.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out


_blend = blend  # Stylizer.__call__ has an argument of the same name


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def as_picture(x, what: str = "picture") -> np.ndarray:
    """A path, PIL image or array -> uint8 (H, W, 3) (grey and RGBA are converted)."""
    if isinstance(x, (str, Path)):
        return read_image(x, "rgb")
    if isinstance(x, np.ndarray):
        arr = x
    else:
        from PIL import Image

        if not isinstance(x, Image.Image):
            raise ImtranslateError(f"cannot use an object of type {type(x).__name__} as the {what}; give a path, "
                                   "a PIL image or a uint8 numpy array")
        arr = np.asarray(x.convert("RGB"))
    if arr.dtype != np.uint8:
        raise DataError(f"<{what} array>", f"expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise DataError(f"<{what} array>", f"expected an (H, W, 3) picture, got shape {arr.shape}")
    return np.ascontiguousarray(arr[:, :, :3])


def _to_tensor(img: np.ndarray, device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(device=device, dtype=torch.float32)
    return (t / 127.5 - 1.0)[None]  # (1, 3, H, W) in [-1, 1]


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return ((t[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def context_overlap(margin: int, step: int = 1) -> int:
    """The tile overlap (a multiple of ``step``) that keeps every pixel a tile contributes at
    least ``margin`` from that tile's border: the engine cross-fades the middle quarter of an
    overlap and drops the outer three eighths on each side, so 3 x the margin leaves 9/8 of it."""
    return step * math.ceil(3 * margin / step)


def encode_tiled(encoder: VGG19Features, layer: str, x: torch.Tensor, tile: int) -> torch.Tensor:
    """Features of ``layer`` for pictures ``x`` (B, 3, H, W), over tiles ``tile`` pixels apart.

    ``H`` and ``W`` must be multiples of ``2**n_pools``. Tiles start on that multiple (so the
    max-pools see the same grid) and carry context wider than the receptive field beyond their
    own part, so the result equals the untiled features (the encoder is a net of scale
    ``1 / 2**n_pools`` to the tiling engine).
    """
    _, n_pools = encoder_geometry(layer)
    f = 2**n_pools
    h, w = x.shape[-2:]
    if h % f or w % f:
        raise ValueError(f"encode_tiled needs sizes that are multiples of {f}, got {h}x{w}")
    if tile <= 0 or (h <= tile and w <= tile):
        return encoder(x)[layer]
    tile = max(f, tile // f * f)
    overlap = context_overlap(encoder_receptive_field(layer) // 2 + 1, f)
    return tile_translate(lambda part: encoder(part)[layer], x, tile + overlap, overlap, f, scale=Fraction(1, f),
                          out_device=x.device)


def invert_tiled(net: InverseNet, feat: torch.Tensor, tile: int, margin: int | None = None) -> torch.Tensor:
    """``net(feat)`` computed over tiles ``tile`` feature pixels apart; the same result, bounded memory.

    Each tile is decoded with ``margin`` feature pixels of context beyond its own part (default:
    the net's receptive radius), which the cross-fade never reaches, so the seams are invisible.
    """
    h, w = feat.shape[-2:]
    if tile <= 0 or (h <= tile and w <= tile):
        return net(feat)
    overlap = context_overlap(net.receptive_radius() if margin is None else margin)
    return tile_translate(net, feat, tile + overlap, overlap, net.multiple, scale=net.scale, model=net,
                          stats="stream", out_device=feat.device)


# --------------------------------------------------------------------------------------------
# The stylizer
# --------------------------------------------------------------------------------------------
class Stylizer:
    """Encoder + style swap + inverse network (or optimisation), built once, used for many pictures.

    Args:
        inverse: a trained :class:`~imtranslate.nets.inverse.InverseNet`, or None to invert by
            optimisation only.
        encoder_layer: the VGG-19 layer swapped (must be the one the inverse net was trained on).
        vgg_weights: ``"imagenet"`` (the torch cache), a weights file, or ``"random"``.
        patch, stride: default swap geometry (each call may override it).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        tile: pictures larger than this (pixels, per side) are encoded and decoded by tiles.
    """

    def __init__(self, inverse: InverseNet | None = None, *, encoder_layer: str = "relu3_1",
                 vgg_weights="imagenet", patch: int = 3, stride: int = 1, device="auto",
                 tile: int = DEFAULT_TILE, source: str = ""):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.layer = encoder_layer
        channels, n_pools = encoder_geometry(encoder_layer)
        self.multiple = 2**n_pools
        if inverse is not None and inverse.config.get("in_channels") != channels:
            raise CheckpointError(f"the inverse net takes {inverse.config.get('in_channels')} channels but "
                                  f"{encoder_layer} has {channels}")
        self.encoder = build_encoder(encoder_layer, vgg_weights).to(self.device)
        self.inverse = inverse.to(self.device).eval() if inverse is not None else None
        self.vgg_weights = str(vgg_weights)
        self.patch, self.stride = int(patch), int(stride)
        self.tile = int(tile)
        self.source = source
        self._style_key = None
        self._style_feat = None

    @classmethod
    def from_checkpoint(cls, path, vgg_weights=None, device="auto", use_ema: bool = True,
                        tile: int = DEFAULT_TILE) -> "Stylizer":
        """The inverse net of a ``styleswap`` checkpoint, with the encoder it was trained on.

        ``vgg_weights`` defaults to what the run used (``model.vgg_weights`` in the checkpoint);
        give a file when that was ``imagenet`` and this machine has no cached copy.
        """
        meta = read_meta(path)
        if meta.get("task") != "styleswap":
            raise CheckpointError(f"{path}: a {meta.get('task')} checkpoint, not a styleswap inverse network; "
                                  "translate with `imtranslate translate`, or train one with task=styleswap")
        cfg = resolve(meta["config"])
        G, _, source = load_generator(path, use_ema=use_ema)
        m = cfg.model
        return cls(G, encoder_layer=m.encoder_layer, vgg_weights=vgg_weights or m.vgg_weights, patch=m.patch,
                   stride=m.stride, device=device, tile=tile, source=f"{source} weights of {path}")

    # ---- features --------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, picture: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> features (1, C, ceil(H / m), ceil(W / m)) of the padded picture."""
        x = pad_to_multiple(_to_tensor(picture, self.device), self.multiple)
        return encode_tiled(self.encoder, self.layer, x, self.tile).float()

    def style_features(self, style, name: str = "style") -> torch.Tensor:
        """Features of the style picture; the last style's are cached (a folder reuses them)."""
        pic = as_picture(style, name)
        key = hashlib.sha1(pic.tobytes()).hexdigest() + str(pic.shape)
        if key != self._style_key:
            self._style_feat, self._style_key = None, None  # free the old ones first
            feat = self.encode(pic)
            self._style_feat, self._style_key = feat, key
        return self._style_feat

    # ---- the initial stylised picture -----------------------------------------------------------
    def stylize(self, content, style, *, patch: int | None = None, stride: int | None = None, fast: bool = False,
                optimize: bool = False, steps: int = DEFAULT_STEPS, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
        """The initial stylised picture, uint8 (H, W, 3) at the content's own size.

        Args:
            content, style: paths, PIL images or uint8 arrays.
            patch, stride: swap geometry in feature pixels (default: the checkpoint's).
            fast: the approximate coarse-to-fine swap (:func:`style_swap_fast`).
            optimize: invert the swapped features by gradient descent on the picture (starting
                from the content) instead of the inverse network; needed when there is none.
            steps: gradient steps for ``optimize``.
        """
        patch = self.patch if patch is None else int(patch)
        stride = self.stride if stride is None else int(stride)
        if patch < 1 or not 1 <= stride <= patch:
            raise ConfigError(f"patch must be >= 1 and 1 <= stride <= patch (got patch={patch}, stride={stride})")
        if not optimize and self.inverse is None:
            raise ConfigError("no inverse network: give a trained styleswap checkpoint (--inverse CKPT) or "
                              "invert by optimisation (--optimize)")
        pic = as_picture(content, "content")
        h, w = pic.shape[:2]
        s_feat = self.style_features(style)
        if min(s_feat.shape[-2:]) < patch:
            need = patch * self.multiple
            where = style if isinstance(style, (str, Path)) else "<style picture>"
            raise DataError(where, f"style picture is too small for {patch}x{patch} patches of {self.layer} "
                            f"features", f"use one of at least {need}x{need} pixels")
        c_feat = self.encode(pic)
        swap = style_swap_fast if fast else style_swap
        h_x = swap(c_feat, s_feat, patch, stride, chunk=chunk)
        if optimize:
            out = self.invert_by_optimization(h_x, pic, steps=steps)
        else:
            with torch.inference_mode():
                out = invert_tiled(self.inverse, h_x, max(1, self.tile // self.multiple))
        return _to_uint8(crop_to(out, (h, w)))

    def invert_by_optimization(self, target: torch.Tensor, init: np.ndarray, steps: int = DEFAULT_STEPS,
                               lr: float = 0.05, tv_weight: float = 1e-3) -> torch.Tensor:
        """A picture whose features match ``target`` (1, C, h, w): Adam on the pixels from ``init``.

        Minimises ``mean |phi(x) - target|^2 + tv_weight * TV(x)``; large pictures are optimised
        tile by tile by the tiling engine (overlapping tiles with context beyond the receptive
        field, cross-faded). Returns
        (1, 3, h * m, w * m) in [-1, 1].
        """
        if steps < 1:
            raise ConfigError(f"optimisation steps must be >= 1, got {steps}")
        f = self.multiple
        x0 = pad_to_multiple(_to_tensor(init, self.device), f)
        H, W = x0.shape[-2:]
        tile = max(f, self.tile // f * f)
        if H <= tile and W <= tile:
            return self._optimize(target, x0, steps, lr, tv_weight)
        overlap = context_overlap(encoder_receptive_field(self.layer) // 2 + 1, f)

        def fn(part: torch.Tensor, box) -> torch.Tensor:
            y0, y1, x0_, x1 = box  # the tile's picture pixels; its features are f times smaller
            return self._optimize(target[..., y0 // f:y1 // f, x0_ // f:x1 // f], part.clone(), steps, lr, tv_weight)

        return tile_translate(fn, x0, tile + overlap, overlap, f, align=f, with_box=True, inference=False,
                              out_device=x0.device)

    def _optimize(self, target, init, steps, lr, tv_weight) -> torch.Tensor:
        x = init.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(self.encoder(x)[self.layer], target) + tv_weight * tv_loss(x)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(-1, 1)
        return x.detach()

    # ---- blended results ----------------------------------------------------------------------
    def __call__(self, content, style, blend: float | tuple = 0.0, preserve_color: bool = False, **options):
        """Stylise and blend. ``blend``: one weight, or (a, b, c) for R, G, B (0 = stylised, 1 = content).

        PIL in (or a path) -> PIL out; ndarray in -> uint8 ndarray out. ``options`` go to :meth:`stylize`.
        """
        pic = as_picture(content, "content")
        raw = self.stylize(pic, style, **options)
        weights = tuple(blend) if isinstance(blend, (tuple, list)) else (blend,)
        if len(weights) not in (1, 3):
            raise ConfigError(f"blend takes one weight or three, got {len(weights)}")
        out = _blend(pic, raw, *weights, preserve_color=preserve_color)
        if isinstance(content, np.ndarray):
            return out
        from PIL import Image

        return Image.fromarray(out)

    def stylize_files(self, contents, style, out_dir, *, blend: float | tuple = 0.0, preserve_color: bool = False,
                      suffix: str = ".png", progress: bool = True, **options) -> list[Path]:
        """Stylise files / folders / globs with one style picture into ``out_dir`` (same stems).

        The style's features are computed once. Every output has its content's size.
        """
        from ..infer.predictor import expand_inputs

        files = expand_inputs(contents)
        as_picture(style, "style")  # a bad style file fails before any work
        out_dir = Path(out_dir)
        written = []
        from tqdm import tqdm

        for path in tqdm(files, disable=not progress, desc="stylize", dynamic_ncols=True):
            img = self(read_image(path, "rgb"), style, blend=blend, preserve_color=preserve_color, **options)
            written.append(write_image(out_dir / f"{path.stem}{suffix}", img))
        return written


# --------------------------------------------------------------------------------------------
# One network that stylises and super-resolves (task stylesr), with the same per-channel blend
# --------------------------------------------------------------------------------------------
class StyleSRBlender:
    """A ``stylesr`` checkpoint's net (stylise and/or up-scale in one pass) followed by SPEC S3's
    per-channel blend with the content, up-sampled (bicubic) to the output size.

        >>> b = StyleSRBlender.from_checkpoint("runs/0007-stylesr/checkpoints/last.safetensors")
        >>> big = b(photo, blend=(0.2, 0.5, 0.8))     # 4x the photo's size

    Large pictures go through the predictor's tiling (seam-free, bounded memory).
    """

    def __init__(self, predictor):
        self.predictor = predictor
        self.scale = int(getattr(predictor.G, "scale", 1))

    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", use_ema: bool = True) -> "StyleSRBlender":
        from .predictor import Predictor

        meta = read_meta(path)
        if meta.get("task") != "stylesr":
            raise CheckpointError(f"{path}: a {meta.get('task')} checkpoint, not a stylesr network; "
                                  "--stylesr takes a checkpoint trained with task=stylesr")
        return cls(Predictor.from_checkpoint(path, device=device, use_ema=use_ema))

    def __call__(self, content, blend: float | tuple = 0.0, preserve_color: bool = False, **options):
        """content (PIL / ndarray / path) -> the stylised, up-scaled picture blended with the
        content (0 = the net's output, 1 = the content up-sampled). PIL in -> PIL out."""
        from PIL import Image

        pic = as_picture(content, "content")
        out = self.predictor(pic, **options)  # uint8 (scale H, scale W, 3)
        big = np.asarray(Image.fromarray(pic).resize((out.shape[1], out.shape[0]), Image.Resampling.BICUBIC))
        weights = blend if isinstance(blend, (tuple, list)) else (blend,)
        res = _blend(big, out, *weights, preserve_color=preserve_color)
        return Image.fromarray(res) if isinstance(content, Image.Image) else res

    def stylize_files(self, contents, out_dir, *, blend: float | tuple = 0.0, preserve_color: bool = False,
                      suffix: str = ".png", progress: bool = True, **options) -> list[Path]:
        from tqdm import tqdm

        from .predictor import expand_inputs

        written = []
        for path in tqdm(expand_inputs(contents), disable=not progress, desc="stylize --stylesr", dynamic_ncols=True):
            img = self(read_image(path, "rgb"), blend=blend, preserve_color=preserve_color, **options)
            written.append(write_image(Path(out_dir) / f"{path.stem}{suffix}", img))
        return written
