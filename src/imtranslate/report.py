"""A self-contained HTML report of a training run.

Data in, one file out: :func:`write_report` takes plain Python/numpy data (example images, loss
curves, validation history, headline numbers) and writes a single ``.html`` file with every
image and plot embedded as a base64 PNG and a small inline stylesheet, so it opens offline,
can be mailed or archived, and needs no server.

The training loop keeps a ``metrics.jsonl`` (one JSON object per line)::

    {"step": 10, "kind": "train", "loss_G": 0.52, "loss_D": 0.31}
    {"step": 200, "kind": "val", "l1": 0.081, "psnr": 21.4, "ssim": 0.71}

and :func:`load_metrics_jsonl` turns it into the ``curves`` and ``val_history`` arguments.

Typical use::

    curves, val_history = load_metrics_jsonl(run_dir / "metrics.jsonl")
    write_report(run_dir / "report.html", title="multires on facades", rows=rows,
                 curves=curves, val_history=val_history,
                 summary={"held-out PSNR (untrained)": 9.8, "held-out PSNR (trained)": 21.4})
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["write_report", "load_metrics_jsonl"]

# Image columns of the examples table, in display order ("untrained" only when given).
IMAGE_COLUMNS = ("input", "untrained", "bicubic", "output", "target")
_COLUMN_TITLES = {
    "input": "input",
    "untrained": "untrained model",
    "bicubic": "bicubic",
    "output": "trained model",
    "target": "target",
}
# Validation metrics shown first (then any other numeric keys, in first-seen order).
_VAL_ORDER = ("psnr", "ssim", "l1")
_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "l1": "L1", "lpips": "LPIPS", "fid": "FID"}
_HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "l1": False, "lpips": False, "fid": False}

_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1d232b; background: #f6f7f9; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 24px; margin: 4px 0 2px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #dde1e6; }
.meta { color: #6a737d; font-size: 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 16px; }
.card { background: #fff; border: 1px solid #dde1e6; border-radius: 8px; padding: 10px 16px;
        min-width: 150px; }
.card .k { color: #6a737d; font-size: 12px; }
.card .v { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .v small { font-size: 13px; font-weight: 400; color: #444d56; }
table { border-collapse: collapse; background: #fff; border: 1px solid #dde1e6; }
th, td { padding: 6px 10px; border-bottom: 1px solid #eef0f2; text-align: left;
         vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; font-size: 13px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { font-weight: 600; background: #eef7ee; }
table.examples td { padding: 6px; }
table.examples .name { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px;
                       max-width: 160px; word-break: break-all; }
table.examples .name div { color: #6a737d; margin-top: 4px; }
img.ex { display: block; image-rendering: pixelated; image-rendering: crisp-edges;
         max-width: 100%; height: auto; }
img.plot { display: block; max-width: 100%; height: auto; background: #fff;
           border: 1px solid #dde1e6; margin-bottom: 12px; }
.empty { color: #6a737d; font-style: italic; }
.scroll { overflow-x: auto; }
"""


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> str:
    """Numbers as people read them: 0.0812, 21.43, 12000; strings unchanged."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        v = float(v)
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        a = abs(v)
        if a == 0:
            return "0"
        if a < 1e-3 or a >= 1e6:
            return f"{v:.3e}"
        if a < 1:
            return f"{v:.4f}"
        if a < 1000:
            return f"{v:.2f}"
        return f"{v:.1f}"
    return str(v)


def _png_b64(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _prepare_image(array, what: str, width: int) -> np.ndarray:
    """Check a uint8 (H, W) / (H, W, 1|3|4) image and upscale it (nearest) to about ``width``."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise ValueError(
            f"report image {what} must be uint8 (0..255), got {a.dtype}; convert it first, "
            "e.g. ((x + 1) * 127.5).round().clip(0, 255).astype(np.uint8) for [-1, 1] floats"
        )
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or a.size == 0:
        raise ValueError(f"report image {what} must be (H, W) or (H, W, 3), got {a.shape}")
    factor = max(1, width // a.shape[1])
    if factor > 1:
        a = np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)
    return np.ascontiguousarray(a)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what is available)."""
    if window <= 1 or values.size < 3:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values)
    idx = np.arange(values.size)
    lo = np.maximum(0, idx + 1 - window)
    out[:] = (c[idx + 1] - c[lo]) / (idx + 1 - lo)
    return out


def _series(points) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(list(points), dtype=np.float64).reshape(-1, 2)
    keep = np.isfinite(arr).all(axis=1)
    return arr[keep, 0], arr[keep, 1]


def _figure_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _grid_figure(n: int, ncols: int = 3, cell=(4.0, 2.8)):
    # matplotlib.figure.Figure renders with Agg without touching pyplot's global state.
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(cell[0] * ncols, cell[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _style_axis(ax, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3, linewidth=0.6)


def _plot_curves(curves: Mapping[str, Sequence], per_figure: int = 9) -> list[str]:
    """Loss curves, one small panel per loss (raw values faint, smoothed line on top)."""
    names = [k for k in curves if _series(curves[k])[0].size]
    images = []
    for start in range(0, len(names), per_figure):
        chunk = names[start : start + per_figure]
        fig, axes = _grid_figure(len(chunk))
        for ax, name in zip(axes, chunk):
            x, y = _series(curves[name])
            window = max(1, min(100, x.size // 10))
            ax.plot(x, y, color="C0", alpha=0.25, linewidth=0.8, label="raw")
            ax.plot(x, _smooth(y, window), color="C0", linewidth=1.6,
                    label=f"moving mean of {window}" if window > 1 else "value")
            if x.size == 1:
                ax.scatter(x, y, color="C0", s=12)
            _style_axis(ax, name)
            ax.legend(fontsize=7, frameon=False, loc="upper right")
        images.append(_figure_b64(fig))
    return images


def _val_keys(val_history: Sequence[Mapping]) -> list[str]:
    keys = []
    for entry in val_history:
        for k, v in entry.items():
            if k != "step" and k not in keys and isinstance(v, numbers.Real):
                keys.append(k)
    ordered = [k for k in _VAL_ORDER if k in keys]
    return ordered + [k for k in keys if k not in ordered]


def _plot_val(val_history: Sequence[Mapping], keys: list[str]) -> str | None:
    panels = [k for k in keys if _series(
        (e["step"], e[k]) for e in val_history if isinstance(e.get(k), numbers.Real)
    )[0].size]
    if not panels:
        return None
    fig, axes = _grid_figure(len(panels))
    for i, (ax, key) in enumerate(zip(axes, panels)):
        x, y = _series((e["step"], e[key]) for e in val_history
                       if isinstance(e.get(key), numbers.Real))
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.4, color=f"C{i + 1}")
        _style_axis(ax, f"held-out {_LABELS.get(key, key)}")
    return _figure_b64(fig)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
def _summary_html(summary: Mapping) -> str:
    if not summary:
        return ""
    cards = []
    for key, value in summary.items():
        if isinstance(value, Mapping):
            parts = " · ".join(f"<small>{_esc(k)}</small> {_esc(_fmt(v))}" for k, v in value.items())
            shown = parts
        else:
            shown = _esc(_fmt(value))
        cards.append(f'<div class="card"><div class="k">{_esc(key)}</div>'
                     f'<div class="v">{shown}</div></div>')
    return '<section class="cards">' + "".join(cards) + "</section>"


def _rows_html(rows: Sequence[Mapping], image_width: int) -> str:
    if not rows:
        return '<p class="empty">No example images.</p>'
    columns = [c for c in IMAGE_COLUMNS if any(r.get(c) is not None for r in rows)]
    head = "<tr><th>name</th>" + "".join(f"<th>{_esc(_COLUMN_TITLES[c])}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        name = str(row.get("name", f"#{i}"))
        info = ""
        if isinstance(row.get("metrics"), Mapping):
            info = "".join(f"<div>{_esc(k)} {_esc(_fmt(v))}</div>" for k, v in row["metrics"].items())
        cells = [f'<td class="name">{_esc(name)}{info}</td>']
        for col in columns:
            if row.get(col) is None:
                cells.append('<td class="empty">—</td>')
                continue
            img = _prepare_image(row[col], f"{name!r}/{col}", image_width)
            h, w = img.shape[:2]
            cells.append(
                f'<td><img class="ex" width="{w}" height="{h}" alt="{_esc(name)} {col}" '
                f'src="data:image/png;base64,{_png_b64(img)}"></td>'
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="examples"><thead>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _val_html(val_history: Sequence[Mapping]) -> str:
    if not val_history:
        return '<p class="empty">No validation results recorded.</p>'
    keys = _val_keys(val_history)
    parts = []
    plot = _plot_val(val_history, keys)
    if plot:
        parts.append(f'<img class="plot" alt="validation metrics" src="data:image/png;base64,{plot}">')
    # Highlight the best validation (by PSNR, else the first metric with a known direction).
    best = None
    rank_key = next((k for k in ("psnr", "ssim", "l1", *keys) if k in keys), None)
    if rank_key is not None:
        scored = [(i, float(e[rank_key])) for i, e in enumerate(val_history)
                  if isinstance(e.get(rank_key), numbers.Real) and math.isfinite(float(e[rank_key]))]
        if scored:
            higher = _HIGHER_IS_BETTER.get(rank_key, True)
            best = (max if higher else min)(scored, key=lambda t: t[1])[0]
    head = '<tr><th class="num">step</th>' + "".join(
        f'<th class="num">{_esc(_LABELS.get(k, k))}</th>' for k in keys) + "</tr>"
    body = []
    for i, e in enumerate(val_history):
        cls = ' class="best"' if i == best else ""
        cells = [f'<td class="num">{_esc(_fmt(e.get("step")))}</td>']
        cells += [f'<td class="num">{_esc(_fmt(e.get(k)))}</td>' for k in keys]
        body.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    note = (f'<p class="meta">Highlighted: best {_esc(_LABELS.get(rank_key, rank_key))}.</p>' if best is not None else "")
    parts.append(f'<div class="scroll"><table class="val"><thead>{head}</thead>'
                 f"<tbody>{''.join(body)}</tbody></table></div>{note}")
    return "".join(parts)


def _curves_html(curves: Mapping[str, Sequence]) -> str:
    plots = _plot_curves(curves) if curves else []
    if not plots:
        return '<p class="empty">No training curves recorded.</p>'
    return "".join(f'<img class="plot" alt="training losses" src="data:image/png;base64,{p}">'
                   for p in plots)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def write_report(
    path,
    *,
    title: str,
    rows: Sequence[Mapping] = (),
    curves: Mapping[str, Sequence] | None = None,
    val_history: Sequence[Mapping] | None = None,
    summary: Mapping | None = None,
    image_width: int = 192,
) -> Path:
    """Write a self-contained HTML report and return its path.

    Args:
        path: output file (parent folders are created; written to a temp file and renamed).
        title: page title.
        rows: example images, one table row each: ``{"name": str, "input": img, "output": img,
            "target": img}`` plus optionally ``"untrained": img`` (the untrained model's output)
            and ``"bicubic": img`` (an up-sampling baseline), each shown as its own column when
            any row has it, and ``"metrics": {name: value}``
            (printed under the name). Each ``img`` is a ``uint8`` ``(H, W)`` or ``(H, W, 3)``
            array; images narrower than ``image_width`` are enlarged by an integer factor with
            nearest-neighbour sampling (and shown with ``image-rendering: pixelated``) so
            64-px pictures stay readable; larger ones are embedded at their own size.
        curves: ``{loss_name: [(step, value), ...]}``; one panel per loss, raw values faint
            with a trailing moving average on top (non-finite values are left out).
        val_history: ``[{"step": int, "l1": ..., "psnr": ..., "ssim": ...}, ...]`` (any other
            numeric keys, e.g. ``lpips``, are shown too); plotted per metric and tabulated,
            best PSNR highlighted.
        summary: headline figures shown first, ``{label: value}``; a value may be a number, a
            string, or a dict such as ``{"untrained": 9.8, "trained": 21.4}``.
        image_width: target display width of example images, pixels.
    """
    curves = curves or {}
    val_history = list(val_history or [])
    summary = summary or {}
    try:
        from . import __version__ as version
    except ImportError:  # pragma: no cover
        version = "?"
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections = [
        f"<header><h1>{_esc(title)}</h1>"
        f'<div class="meta">imtranslate {version} · report written {stamp}</div></header>',
        _summary_html(summary),
        "<section><h2>Examples</h2>" + _rows_html(rows, image_width) + "</section>",
        "<section><h2>Training losses</h2>" + _curves_html(curves) + "</section>",
        "<section><h2>Validation</h2>" + _val_html(val_history) + "</section>",
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(s for s in sections if s)
        + "\n</main>\n</body>\n</html>\n"
    )
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _append(series: list, step: int, item) -> None:
    """Append, first dropping entries at or after ``step`` (a resumed run re-logs them)."""
    while series and _step_of(series[-1]) >= step:
        series.pop()
    series.append(item)


def _step_of(item) -> int:
    return item["step"] if isinstance(item, dict) else item[0]


def load_metrics_jsonl(path) -> tuple[dict[str, list[tuple[int, float]]], list[dict]]:
    """Read a run's ``metrics.jsonl`` into ``(curves, val_history)`` for :func:`write_report`.

    Each line is a JSON object with an integer ``"step"`` and a ``"kind"``:

    * ``"train"`` (also assumed when ``kind`` is absent): every other numeric value becomes a
      point of the curve of that name -> ``curves[name] = [(step, value), ...]``;
    * ``"val"``: the numeric values become one ``{"step": step, name: value, ...}`` entry of
      ``val_history`` (consecutive val lines of the same step are merged into one entry);
    * other kinds are ignored, as are non-numeric values.

    Steps that go backwards mean the run was resumed from an earlier checkpoint: the entries
    logged at or after the resumed step are replaced by the new ones. Blank lines and a
    truncated last line (a crash while writing) are skipped; any other unreadable line raises
    :class:`~imtranslate.errors.DataError` naming the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(path, "metrics file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read metrics file ({e})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    curves: dict[str, list[tuple[int, float]]] = {}
    val_history: list[dict] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                break  # last line cut short while the run was writing it
            raise DataError(path, f"line {number} is not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise DataError(path, f"line {number} is not a JSON object")
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, numbers.Real) or step != int(step):
            raise DataError(path, f"line {number} has no integer 'step'")
        step = int(step)
        kind = record.get("kind", "train")
        values = {
            k: float(v)
            for k, v in record.items()
            if k not in ("step", "kind") and isinstance(v, numbers.Real) and not isinstance(v, bool)
        }
        if kind == "train":
            for name, value in values.items():
                _append(curves.setdefault(name, []), step, (step, value))
        elif kind == "val":
            if val_history and val_history[-1]["step"] == step:
                val_history[-1].update(values)  # more metrics for the same validation
            else:
                _append(val_history, step, {"step": step, **values})
    return curves, val_history
