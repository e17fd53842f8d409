"""Plots as inline SVG: no external files, no JavaScript, and ~1000x cheaper than rasterising.

Each function returns an `<svg>` element (or None when there is nothing to draw) that the HTML
report embeds directly; the numbers behind every plot are also in reports/stats.json.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

W, H = 420, 240
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 24, 40
BAR = "#4C72B0"
CUT = "#C44E52"
PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.2g}"
    return f"{v:.4g}"


def _frame(title: str, xlabel: str, ylabel: str, body: str, width: int = W, height: int = H) -> str:
    return (f'<svg width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">'
            f'<rect width="{width}" height="{height}" fill="white"/>'
            f'<text x="{width / 2}" y="15" text-anchor="middle" font-size="12" font-family="sans-serif">'
            f"{_esc(title)}</text>"
            f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle" font-size="10" '
            f'font-family="sans-serif">{_esc(xlabel)}</text>'
            f'<text x="11" y="{height / 2}" text-anchor="middle" font-size="10" font-family="sans-serif" '
            f'transform="rotate(-90 11 {height / 2})">{_esc(ylabel)}</text>{body}</svg>')


def _axes(x0: float, x1: float, y1: float, width: int = W, height: int = H, xlog: bool = False,
          ylog: bool = False) -> tuple[Any, Any, str]:
    """Scales from data to pixels, and the axis lines with min/mid/max tick labels."""
    pw, ph = width - LEFT - RIGHT, height - TOP - BOTTOM

    def tx(v: float) -> float:
        if xlog:
            v, lo, hi = math.log10(max(v, 1e-12)), math.log10(max(x0, 1e-12)), math.log10(max(x1, 1e-12))
        else:
            lo, hi = x0, x1
        return LEFT + (v - lo) / ((hi - lo) or 1) * pw

    def ty(v: float) -> float:
        if ylog:
            top = math.log10(max(y1, 1.0))
            return TOP + ph - (math.log10(max(v, 1.0)) / (top or 1)) * ph
        return TOP + ph - v / (y1 or 1) * ph

    ticks = f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="#333"/>'
    ticks += f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="#333"/>'
    for v in (x0, (x0 + x1) / 2 if not xlog else math.sqrt(max(x0, 1e-12) * x1), x1):
        ticks += (f'<text x="{tx(v):.1f}" y="{TOP + ph + 13}" text-anchor="middle" font-size="9" '
                  f'font-family="sans-serif">{_num(v)}</text>')
    for v in (0 if not ylog else 1, y1 / 2 if not ylog else math.sqrt(max(y1, 1)), y1):
        ticks += (f'<text x="{LEFT - 4}" y="{ty(v) + 3:.1f}" text-anchor="end" font-size="9" '
                  f'font-family="sans-serif">{_num(v)}</text>')
    return tx, ty, ticks


def histogram_svg(hist: dict[str, Any], title: str, xlabel: str, marks: Sequence[float] | None = None) -> str | None:
    counts, edges = hist.get("counts") or [], hist.get("edges") or []
    if not counts:
        return None
    tx, ty, body = _axes(edges[0], edges[-1], max(counts))
    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        if c:
            x, y = tx(a), ty(c)
            body += (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(tx(b) - x - 0.5, 0.5):.1f}" '
                     f'height="{ty(0) - y:.1f}" fill="{BAR}"><title>[{_num(a)}, {_num(b)}): {c}</title></rect>')
    for m in marks or []:
        if edges[0] <= m <= edges[-1]:
            body += (f'<line x1="{tx(m):.1f}" y1="{TOP}" x2="{tx(m):.1f}" y2="{ty(0):.1f}" stroke="{CUT}" '
                     f'stroke-dasharray="4 3" stroke-width="1.5"><title>cut {_num(m)}</title></line>')
    return _frame(title, xlabel, "samples", body)


def bar_svg(counts: dict[str, int], title: str) -> str | None:
    """Horizontal bars, one per label, largest first as given."""
    if not counts:
        return None
    row = 16
    height = TOP + BOTTOM + row * len(counts)
    label_w = 170
    pw = W - label_w - RIGHT - 40
    top = max(counts.values()) or 1
    body = ""
    for i, (label, n) in enumerate(counts.items()):
        y = TOP + i * row
        short = label if len(label) <= 30 else label[:29] + "…"
        w = pw * n / top
        body += (f'<text x="{label_w - 4}" y="{y + 11}" text-anchor="end" font-size="10" font-family="sans-serif">'
                 f"{_esc(short)}<title>{_esc(label)}</title></text>"
                 f'<rect x="{label_w}" y="{y + 2}" width="{max(w, 0.5):.1f}" height="{row - 4}" fill="{PALETTE[2]}"/>'
                 f'<text x="{label_w + w + 3:.1f}" y="{y + 11}" font-size="9" font-family="sans-serif">{n:,}</text>')
    return _frame(title, "count", "", body, height=height)


def rank_curves_svg(curves: dict[str, list[float]], title: str) -> str | None:
    """Entry counts sorted descending on log-log axes: the head/tail shape that balancing flattens."""
    curves = {k: [v for v in vals if v > 0] for k, vals in curves.items()}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    n = max(len(v) for v in curves.values())
    top = max(max(v) for v in curves.values())
    tx, ty, body = _axes(1, max(n, 2), top, xlog=True, ylog=True)
    for i, (name, values) in enumerate(curves.items()):
        color = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{tx(r + 1):.1f},{ty(v):.1f}" for r, v in enumerate(values))
        body += f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.6"/>'
        body += (f'<text x="{W - RIGHT - 4}" y="{TOP + 12 + 12 * i}" text-anchor="end" font-size="10" '
                 f'font-family="sans-serif" fill="{color}">{_esc(name)}</text>')
    return _frame(title, "entry rank (log)", "matches (log)", body)


def interval_bars_svg(rows: list[tuple[str, float, float]], title: str, xlabel: str) -> str | None:
    """Horizontal bars of (label, mean, std) with a ±std whisker each: one bar per arm of an evaluation."""
    if not rows:
        return None
    row = 18
    height = TOP + BOTTOM + row * len(rows)
    label_w = 150
    pw = W - label_w - RIGHT - 30
    top = max(m + s for _, m, s in rows) or 1.0
    body = ""
    for i, (label, mean, std) in enumerate(rows):
        y = TOP + i * row
        short = label if len(label) <= 26 else label[:25] + "…"
        w, lo, hi = pw * mean / top, pw * max(mean - std, 0) / top, pw * (mean + std) / top
        # Controls in another colour, so the curated arms stand out.
        color = PALETTE[1] if label == "pool" or label.startswith("random-") else PALETTE[0]
        body += (f'<text x="{label_w - 4}" y="{y + 12}" text-anchor="end" font-size="10" font-family="sans-serif">'
                 f"{_esc(short)}<title>{_esc(label)}</title></text>"
                 f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="{row - 6}" fill="{color}">'
                 f"<title>{_esc(label)}: {_num(mean)} ± {_num(std)}</title></rect>"
                 f'<line x1="{label_w + lo:.1f}" y1="{y + row / 2}" x2="{label_w + hi:.1f}" y2="{y + row / 2}" '
                 f'stroke="#222" stroke-width="1.2"/>'
                 f'<text x="{label_w + hi + 3:.1f}" y="{y + 12}" font-size="9" font-family="sans-serif">'
                 f"{_num(mean)}</text>")
    return _frame(title, xlabel, "", body, height=height)
