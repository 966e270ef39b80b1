"""Style swap (Chen & Schmidt 2016) as tensor operations, with memory bounded by chunking.

Every content patch of a feature map is replaced by the style patch that correlates best with
it, and the overlapping replacements are averaged::

    index[i] = argmax_j  < c_i , s_j / |s_j| >          c_i: content patch i, s_j: style patch j
    out      = average over every patch i covering a position of  s_index[i]

Normalising the content patch too (the textbook normalised cross-correlation) would divide every
score of one content patch by the same positive number, so it cannot change the argmax and is
skipped.

How it is computed (no Python loop over patches anywhere):

* **Matching** (:func:`match_patches`). The score of content patch ``i`` and style patch ``j``
  is the sum over the ``patch x patch`` offsets ``d`` of the dot products of single feature
  vectors ``<c(i + d), s(j + d)>``. We compute those dot products once, as one matrix product
  of content pixels by style pixels (a pixel-level Gram matrix ``G``), and then sum ``G``
  along its ``patch x patch`` diagonals with shifted slices. That is ``patch**2`` times fewer
  multiply-adds than correlating with whole patches (9x for 3x3), for the same numbers up to
  float rounding. ``method="conv"`` does it the textbook way instead — ``conv2d`` of the
  content with the normalised style patches as filters — and is kept as a cross-check and a
  benchmark baseline.
* **Bounded memory.** The content is processed in bands of rows and the style in bands of
  rows (``chunk`` = patches per band, so one block of scores holds about ``chunk**2``
  numbers); a running max / argmax over the style bands keeps one score and one index per
  content patch. Memory is therefore that of the two feature maps plus one block, whatever the
  image sizes.
* **Reconstruction** (:func:`reconstruct`). Placing the winning patches back is what
  ``conv_transpose2d`` of the one-hot argmax map does in the original method, but that
  transposed convolution costs as much as the matching. Here, for each of the
  ``patch x patch`` offsets, the winning style vectors are gathered by index and added to
  their place, and the sum is divided by the number of patches covering each position —
  the same result in ``patch**2`` gathers of one feature map.

Coverage: the content map is padded (edge replication) at the bottom and right so that the
patch grid covers every position for any stride; the output is cropped back to the content's
size.

:func:`style_swap_fast` is an approximate, much faster variant (coarse-to-fine); see its doc.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: default patches per band: one block of scores holds about CHUNK**2 float32 numbers (64 MB; with
#: its two scratch buffers ~200 MB). Smaller is leaner but slower: more, smaller matrix products
DEFAULT_CHUNK = 4096
#: style patches of (almost) zero energy get this norm, so their score is 0 instead of nan
_EPS = 1e-8

__all__ = [
    "DEFAULT_CHUNK", "extract_patches", "grid_size", "pad_for_patches", "style_norms", "match_patches",
    "reconstruct", "style_swap", "style_swap_fast",
]


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def grid_size(size: int, patch: int, stride: int) -> int:
    """Number of patch positions along a side of ``size`` (``size >= patch``)."""
    return (size - patch) // stride + 1


def _covering_size(size: int, patch: int, stride: int) -> int:
    """Smallest size >= ``size`` whose patch grid covers every position."""
    size = max(size, patch)
    return patch + math.ceil((size - patch) / stride) * stride


def pad_for_patches(feat: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """Replicate-pad ``feat`` (B, C, H, W) at the bottom/right so the patch grid covers all of it."""
    h, w = feat.shape[-2:]
    ph, pw = _covering_size(h, patch, stride) - h, _covering_size(w, patch, stride) - w
    if ph or pw:
        feat = F.pad(feat, (0, pw, 0, ph), mode="replicate")
    return feat


def _check(content: torch.Tensor, style: torch.Tensor, patch: int, stride: int) -> None:
    if content.dim() != 4 or style.dim() != 4:
        raise ValueError(f"style swap takes (B, C, H, W) feature maps, got {tuple(content.shape)} "
                         f"and {tuple(style.shape)}")
    if content.shape[1] != style.shape[1]:
        raise ValueError(f"content and style features have {content.shape[1]} and {style.shape[1]} channels")
    if style.shape[0] not in (1, content.shape[0]):
        raise ValueError(f"{style.shape[0]} style maps for {content.shape[0]} content maps: give one, or one each")
    if patch < 1 or stride < 1:
        raise ValueError(f"patch ({patch}) and stride ({stride}) must be at least 1")
    if stride > patch:
        raise ValueError(f"stride {stride} > patch {patch} would leave content positions uncovered")
    if min(style.shape[-2:]) < patch:
        raise ValueError(f"the style feature map {tuple(style.shape[-2:])} is smaller than a {patch}x{patch} patch")


def extract_patches(feat: torch.Tensor, patch: int = 3, stride: int = 1) -> torch.Tensor:
    """All ``patch x patch`` patches of ``feat`` (C, H, W) or (1, C, H, W), row-major: (N, C, p, p).

    Patch ``n`` starts at row ``(n // Wo) * stride``, column ``(n % Wo) * stride`` with
    ``Wo = grid_size(W, patch, stride)``; this is the style-patch index used everywhere here.
    """
    if feat.dim() == 3:
        feat = feat[None]
    if feat.shape[0] != 1:
        raise ValueError("extract_patches takes one feature map")
    c = feat.shape[1]
    cols = F.unfold(feat, patch, stride=stride)  # (1, C*p*p, N)
    return cols[0].t().reshape(-1, c, patch, patch)


def style_norms(style: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """L2 norm of every style patch of ``style`` (1, C, H, W): (Ho, Wo), without extracting patches."""
    energy = style.pow(2).sum(1, keepdim=True)  # (1, 1, H, W)
    sq = F.avg_pool2d(energy, patch, stride=stride) * (patch * patch)  # sum over each window
    return sq[0, 0].clamp_min(0).sqrt().clamp_min(_EPS)


def _bands(n: int, size: int):
    """``[start, stop)`` ranges of at most ``size`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield start, min(n, start + size)


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------
class _Buffers:
    """Scratch memory reused from block to block.

    Fresh multi-megabyte tensors cost a page fault per 4 KB on every allocation, which made
    the element-wise passes twice as slow; a few flat buffers, viewed to each block's shape,
    avoid that.
    """

    def __init__(self):
        self.flat: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape, like: torch.Tensor) -> torch.Tensor:
        n = math.prod(shape)
        buf = self.flat.get(name)
        if buf is None or buf.numel() < n:
            buf = like.new_empty(n)
            self.flat[name] = buf
        return buf[:n].view(shape)


def _diagonal_sum(g: torch.Tensor, patch: int, stride: int, out_c: tuple, out_s: tuple,
                  bufs: _Buffers) -> torch.Tensor:
    """Patch scores from pixel dot products: sum ``g`` (hc, wc, hs, ws) along its patch diagonals.

    ``out[yc, xc, ys, xs] = sum_{dy, dx} g[yc*st + dy, xc*st + dx, ys*st + dy, xs*st + dx]``,
    shape (hco, wco, hso, wso). Done as ``patch - 1`` shifted adds along x, then along y.
    """
    (hco, wco), (hso, wso) = out_c, out_s
    ex_c, ex_s = (wco - 1) * stride + 1, (wso - 1) * stride + 1  # extent of the strided x slices
    t = bufs.get("t", (g.shape[0], wco, g.shape[2], wso), g)

    _sum_shifts(lambda d: g[:, d:d + ex_c:stride, :, d:d + ex_s:stride], patch, t)
    ey_c, ey_s = (hco - 1) * stride + 1, (hso - 1) * stride + 1
    out = bufs.get("out", (hco, wco, hso, wso), g)
    return _sum_shifts(lambda d: t[d:d + ey_c:stride, :, d:d + ey_s:stride], patch, out)


def _sum_shifts(view, patch: int, out: torch.Tensor) -> torch.Tensor:
    """``out = view(0) + ... + view(patch - 1)`` without temporaries."""
    if patch == 1:
        return out.copy_(view(0))
    torch.add(view(0), view(1), out=out)
    for d in range(2, patch):
        out += view(d)
    return out


def _merge_topk(best_s, best_i, scores, offset: int, k: int):
    """Running top-k: merge a block's scores (m, n) into (m, k) bests; earlier indices win ties."""
    if k == 1:
        s, i = scores.max(1, keepdim=True)  # first maximum on ties
        i = i + offset
        if best_s is None:
            return s, i
        better = s > best_s  # strict: an earlier block keeps a tie
        return torch.where(better, s, best_s), torch.where(better, i, best_i)
    kk = min(k, scores.shape[1])
    s, i = scores.topk(kk, dim=1)
    i = i + offset
    if best_s is None:
        return s, i
    s, i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
    top = s.topk(min(k, s.shape[1]), dim=1).indices
    return s.gather(1, top), i.gather(1, top)


def match_patches(content: torch.Tensor, style: torch.Tensor, patch: int = 3, stride: int = 1,
                  chunk: int = DEFAULT_CHUNK, method: str = "gram", k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Best style patches for every content patch, exactly.

    Args:
        content: (1, C, H, W), already padded so the grid covers it (:func:`pad_for_patches`).
        style: (1, C, Hs, Ws).
        chunk: patches per content band and per style band (memory ~ ``chunk**2`` scores).
        method: ``"gram"`` (pixel dot products summed along patch diagonals, ``patch**2`` times
            fewer operations) or ``"conv"`` (``conv2d`` with normalised style patches as filters).
        k: how many best patches to keep (1 for the swap; the fast swap asks for more).

    Returns:
        ``(scores, index)``, both (Hco, Wco, k), best first: the normalised correlation and the
        row-major style patch index (see :func:`extract_patches`).
    """
    if method not in ("gram", "conv"):
        raise ValueError(f"unknown matching method {method!r}; use 'gram' or 'conv'")
    c = content[0]
    s = style[0]
    hco, wco = grid_size(c.shape[1], patch, stride), grid_size(c.shape[2], patch, stride)
    hso, wso = grid_size(s.shape[1], patch, stride), grid_size(s.shape[2], patch, stride)
    inv_norm = 1.0 / style_norms(style, patch, stride)  # (hso, wso)
    rows_c = max(1, chunk // wco)  # content patch rows per band
    rows_s = max(1, chunk // wso)
    out_s, out_i = [], []
    bufs = _Buffers()
    for c0, c1 in _bands(hco, rows_c):
        band_c = c[:, c0 * stride:(c1 - 1) * stride + patch]  # (C, hc, W) with its halo
        pix_c = band_c.reshape(band_c.shape[0], -1).t() if method == "gram" else None  # (hc*W, C)
        best_s = best_i = None
        for s0, s1 in _bands(hso, rows_s):
            band_s = s[:, s0 * stride:(s1 - 1) * stride + patch]  # (C, hs, Ws)
            if method == "gram":
                g = bufs.get("g", (pix_c.shape[0], band_s.shape[1] * band_s.shape[2]), c)
                torch.mm(pix_c, band_s.reshape(band_s.shape[0], -1), out=g)  # (hc*W, hs*Ws) pixel dots
                g = g.view(band_c.shape[1], band_c.shape[2], band_s.shape[1], band_s.shape[2])
                sc = _diagonal_sum(g, patch, stride, (c1 - c0, wco), (s1 - s0, wso), bufs)
                sc *= inv_norm[s0:s1]  # (hco_b, wco, hso_b, wso) normalised correlation
                sc = sc.view((c1 - c0) * wco, (s1 - s0) * wso)
            else:
                filters = extract_patches(band_s, patch, stride)  # (n, C, p, p)
                filters = filters * inv_norm[s0:s1].reshape(-1, 1, 1, 1)
                sc = F.conv2d(band_c[None], filters, stride=stride)[0]  # (n, hco_b, wco)
                sc = sc.reshape(filters.shape[0], -1).t()
            best_s, best_i = _merge_topk(best_s, best_i, sc, s0 * wso, k)
        out_s.append(best_s)
        out_i.append(best_i)
    scores = torch.cat(out_s).view(hco, wco, -1)
    index = torch.cat(out_i).view(hco, wco, -1)
    return scores, index


# --------------------------------------------------------------------------------------------
# Reconstruction
# --------------------------------------------------------------------------------------------
def reconstruct(style: torch.Tensor, index: torch.Tensor, size: tuple[int, int], patch: int = 3,
                stride: int = 1) -> torch.Tensor:
    """Place style patch ``index[i]`` at content patch position ``i`` and average the overlaps.

    Args:
        style: (1, C, Hs, Ws).
        index: (Hco, Wco) row-major style patch indices (as :func:`match_patches` returns).
        size: (H, W) of the padded content map the grid was laid on.

    Returns:
        (1, C, H, W). Positions no patch covers (none, when the content was padded with
        :func:`pad_for_patches`) are 0.
    """
    s = style[0]
    C, Hs, Ws = s.shape
    wso = grid_size(Ws, patch, stride)
    hco, wco = index.shape
    rows = s.permute(1, 2, 0).reshape(Hs * Ws, C)  # channels last: one style vector per row
    top = torch.div(index, wso, rounding_mode="floor") * (stride * Ws) + (index % wso) * stride  # (Hco, Wco)
    out = s.new_zeros(tuple(size) + (C,))  # (H, W, C)
    count = s.new_zeros(tuple(size) + (1,))
    ey, ex = (hco - 1) * stride + 1, (wco - 1) * stride + 1
    for dy in range(patch):  # patch**2 gathers of one feature map, not a loop over patches
        for dx in range(patch):
            vecs = rows.index_select(0, (top + dy * Ws + dx).reshape(-1)).view(hco, wco, C)
            out[dy:dy + ey:stride, dx:dx + ex:stride] += vecs
            count[dy:dy + ey:stride, dx:dx + ex:stride] += 1
    return (out / count.clamp_min(1)).permute(2, 0, 1)[None]


# --------------------------------------------------------------------------------------------
# The swaps
# --------------------------------------------------------------------------------------------
def style_swap(content_feat: torch.Tensor, style_feat: torch.Tensor, patch: int = 3, stride: int = 1,
               chunk: int = DEFAULT_CHUNK, method: str = "gram", return_index: bool = False):
    """Exact style swap of ``content_feat`` (B, C, H, W) with ``style_feat`` (1 or B, C, Hs, Ws).

    Each content patch is replaced by the style patch of highest normalised cross-correlation;
    overlaps are averaged. Returns (B, C, H, W), plus the style patch index of every content
    patch, (B, Hco, Wco), with ``return_index=True``. Memory stays bounded for any size (see
    the module doc); runs under ``torch.no_grad``.
    """
    return _swap_each(content_feat, style_feat, patch, stride, return_index,
                      lambda c, style: match_patches(c, style, patch, stride, chunk, method)[1][..., 0])


def _swap_each(content_feat, style_feat, patch: int, stride: int, return_index: bool, find_index):
    """The swap, image by image: ``find_index(padded content, style)`` picks a style patch for
    every content patch; the picked patches are put back with overlaps averaged."""
    _check(content_feat, style_feat, patch, stride)
    outs, idxs = [], []
    with torch.no_grad():
        for b in range(content_feat.shape[0]):
            style = style_feat[b if style_feat.shape[0] > 1 else 0][None]
            c = pad_for_patches(content_feat[b][None], patch, stride)
            index = find_index(c, style)  # (Hco, Wco)
            out = reconstruct(style, index, c.shape[-2:], patch, stride)
            outs.append(out[..., :content_feat.shape[2], :content_feat.shape[3]])
            idxs.append(index)
    out = torch.cat(outs)
    return (out, torch.stack(idxs)) if return_index else out


def _refine_blocks(content: torch.Tensor, style: torch.Tensor, cand: torch.Tensor, hco: int, wco: int,
                   patch: int, stride: int, radius: int, chunk: int) -> torch.Tensor:
    """Full-resolution step of the fast swap: exact scores of a few candidates per content patch.

    The content patch grid is taken in 2x2 blocks, one per coarse content patch. ``cand``
    (Hb, Wb, K) holds each block's K coarse style patches (coarse style grid, row-major). The
    child ``(a, b)`` of a block points at the full-resolution style patch ``(2Y + a, 2X + b)``
    of each coarse candidate ``(Y, X)``, and every style patch within ``radius`` grid steps of
    that one is scored exactly.

    All candidates of one block and one coarse candidate touch a small window of style vectors
    (6x6 for a 3x3 patch, stride 1, radius 1) and the block's four patches a window of content
    vectors (4x4); both windows are gathered (channels last, so each vector is one contiguous
    row), multiplied in one batched matrix product, and a fixed 0/1 matrix sums the products of
    each (patch, candidate) pair into its score. Returns (hco, wco) row-major style indices.
    """
    c, s = content[0], style[0]
    C = c.shape[0]
    dev, dt = c.device, c.dtype
    hb, wb, K = cand.shape
    hso, wso = grid_size(s.shape[1], patch, stride), grid_size(s.shape[2], patch, stride)
    wso_c = grid_size(math.ceil(s.shape[2] / 2), patch, stride)  # coarse style grid width
    inv_norm = (1.0 / style_norms(style, patch, stride)).reshape(-1)
    n_c = stride + patch  # side of the content window of a 2x2 block of patches
    n_s = (2 * radius + 1) * stride + patch  # side of the style window of one coarse candidate
    nc2, ns2 = n_c * n_c, n_s * n_s
    pad = radius * stride
    # zero margins so every window lies inside the tensor; candidates off the grid are masked below
    c_pad = F.pad(c, (0, n_c, 0, n_c))
    s_pad = F.pad(s, (pad, pad + n_s, pad, pad + n_s))
    wc_pad, ws_pad = c_pad.shape[2], s_pad.shape[2]
    c_rows = c_pad.permute(1, 2, 0).reshape(-1, C)  # channels last: one vector per row
    s_rows = s_pad.permute(1, 2, 0).reshape(-1, C)

    def ar(n):
        return torch.arange(n, device=dev)

    c_off = (ar(n_c)[:, None] * wc_pad + ar(n_c)[None]).reshape(-1)  # (nc2,) rows of a content window
    s_off = (ar(n_s)[:, None] * ws_pad + ar(n_s)[None]).reshape(-1)  # (ns2,)
    # score[child, j] = sum over patch offsets q of dots[style pixel, content pixel]: a 0/1 matrix
    ab = torch.stack(torch.meshgrid(ar(2), ar(2), indexing="ij"), -1).reshape(4, 1, 1, 2)  # children
    r = 2 * radius + 1
    jit = torch.stack(torch.meshgrid(ar(r), ar(r), indexing="ij"), -1).reshape(1, -1, 1, 2)  # (1, J, 1, 2)
    q = torch.stack(torch.meshgrid(ar(patch), ar(patch), indexing="ij"), -1).reshape(1, 1, -1, 2)
    ci = ab * stride + q  # content pixel in the block window, (4, 1, P, 2)
    si = (ab + jit) * stride + q  # style pixel in the candidate window, (4, J, P, 2)
    J = jit.shape[1]
    rows = (si[..., 0] * n_s + si[..., 1]) * nc2 + (ci[..., 0] * n_c + ci[..., 1])  # (4, J, P)
    cols = (ar(4)[:, None] * J + ar(J)[None])[..., None].expand_as(rows)
    summer = torch.zeros(ns2 * nc2, 4 * J, device=dev, dtype=dt)
    summer.index_put_((rows.reshape(-1), cols.reshape(-1)), torch.ones((), device=dev, dtype=dt), accumulate=True)
    jy = (jit[0, :, 0, 0] - radius).view(1, 1, 1, J)  # grid offsets of the candidates
    jx = (jit[0, :, 0, 1] - radius).view(1, 1, 1, J)
    child_y, child_x = ab[:, 0, 0, 0].view(1, 1, 4, 1), ab[:, 0, 0, 1].view(1, 1, 4, 1)

    nb = hb * wb
    U, V = torch.div(ar(nb), wb, rounding_mode="floor"), ar(nb) % wb
    c_top = (U * 2 * stride) * wc_pad + V * 2 * stride  # (nb,) top-left row of each block's content window
    cand = cand.reshape(nb, K)
    cy, cx = torch.div(cand, wso_c, rounding_mode="floor"), cand % wso_c  # coarse style grid positions
    s_top = (2 * cy * stride) * ws_pad + 2 * cx * stride  # (nb, K) window origins (radius is in the padding)
    # every candidate's style grid index, norm and validity, for all blocks at once (a few large
    # operations rather than many small ones: each small one costs a thread hand-off)
    ty = 2 * cy[:, :, None, None] + child_y + jy  # (nb, K, 4, J) candidate style grid positions
    tx = 2 * cx[:, :, None, None] + child_x + jx
    invalid = (ty < 0) | (ty >= hso) | (tx < 0) | (tx >= wso)
    cand_idx = ty.clamp_(0, hso - 1).mul_(wso).add_(tx.clamp_(0, wso - 1))  # row-major style patch index
    scale = inv_norm.index_select(0, cand_idx.reshape(-1)).view(cand_idx.shape)
    cand_idx = cand_idx.transpose(1, 2).reshape(nb, 4, K * J)
    best = torch.empty(nb, 4, dtype=torch.long, device=dev)
    band = max(16, 2 * chunk * chunk // ((nc2 + K * ns2) * C))  # blocks per band: ~2 chunk**2 gathered numbers
    bufs = _Buffers()
    for a0, a1 in _bands(nb, band):
        m = a1 - a0
        cvec = bufs.get("c", (m * nc2, C), c)
        torch.index_select(c_rows, 0, (c_top[a0:a1, None] + c_off[None]).reshape(-1), out=cvec)
        svec = bufs.get("s", (m * K * ns2, C), c)
        torch.index_select(s_rows, 0, (s_top[a0:a1, :, None] + s_off).reshape(-1), out=svec)
        dots = torch.bmm(svec.view(m, K * ns2, C), cvec.view(m, nc2, C).transpose(1, 2))  # (m, K*ns2, nc2)
        sc = (dots.view(m * K, ns2 * nc2) @ summer).view(m, K, 4, J)  # patch correlations
        sc = sc.mul_(scale[a0:a1]).masked_fill_(invalid[a0:a1], -math.inf)  # normalised; off-grid never wins
        j = sc.transpose(1, 2).reshape(m, 4, K * J).argmax(2, keepdim=True)  # (m, 4, 1)
        best[a0:a1] = cand_idx[a0:a1].gather(2, j)[..., 0]
    # (nb, 4) in block order -> the (hco, wco) grid
    index = best.view(hb, wb, 2, 2).permute(0, 2, 1, 3).reshape(2 * hb, 2 * wb)
    return index[:hco, :wco]


def style_swap_fast(content_feat: torch.Tensor, style_feat: torch.Tensor, patch: int = 3, stride: int = 1,
                    chunk: int = DEFAULT_CHUNK, candidates: int = 4, radius: int = 2, return_index: bool = False):
    """Approximate style swap, coarse to fine; same arguments and outputs as :func:`style_swap`.

    1. Both feature maps are halved (2x2 average) and matched exactly at that coarse level,
       keeping the ``candidates`` best coarse style patches per coarse content patch: 16x fewer
       pairs to score than the exact swap.
    2. Back at full resolution, each content patch inherits its coarse parent's candidates;
       each points at the full-resolution style patch of the same parity, and every style patch
       within ``radius`` grid steps of it is scored exactly (:func:`_refine_blocks`); the best
       one wins.

    It picks the exact swap's patch for many content patches and a close one elsewhere;
    ``benchmarks/style_swap.py`` reports how often, and the PSNR against the exact swap.
    """
    def find_index(c, style):  # (Hco, Wco) style patch indices
        hco, wco = grid_size(c.shape[2], patch, stride), grid_size(c.shape[3], patch, stride)
        coarse_s = F.avg_pool2d(style, 2, ceil_mode=True)
        if min(coarse_s.shape[-2:]) < patch:  # too small to coarsen: the exact swap is cheap anyway
            index = match_patches(c, style, patch, stride, chunk)[1][..., 0]
        else:
            coarse_c = F.avg_pool2d(c, 2, ceil_mode=True)
            # every 2x2 block of the fine grid needs a parent on the coarse grid
            need_h = (math.ceil(hco / 2) - 1) * stride + patch
            need_w = (math.ceil(wco / 2) - 1) * stride + patch
            ph, pw = max(0, need_h - coarse_c.shape[2]), max(0, need_w - coarse_c.shape[3])
            if ph or pw:
                coarse_c = F.pad(coarse_c, (0, pw, 0, ph), mode="replicate")
            coarse_c = pad_for_patches(coarse_c, patch, stride)
            _, cand = match_patches(coarse_c, coarse_s, patch, stride, chunk, k=candidates)
            cand = cand[:math.ceil(hco / 2), :math.ceil(wco / 2)]  # (Hb, Wb, K)
            index = _refine_blocks(c, style, cand, hco, wco, patch, stride, radius, chunk)
        return index

    return _swap_each(content_feat, style_feat, patch, stride, return_index, find_index)
