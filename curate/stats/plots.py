"""Plots as base64 PNG data URIs (matplotlib Agg), so the HTML report needs no external files."""

from __future__ import annotations

import base64
import io
import itertools
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FIGSIZE = (5.2, 3.0)


def _to_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_png(hist: dict[str, Any], title: str, xlabel: str, marks: list[float] | None = None) -> str | None:
    if not hist.get("counts"):
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    edges = hist["edges"]
    widths = [b - a for a, b in itertools.pairwise(edges)]
    ax.bar(edges[:-1], hist["counts"], width=widths, align="edge", color="#4C72B0", edgecolor="white", linewidth=0.3)
    for m in marks or []:
        ax.axvline(m, color="#C44E52", linestyle="--", linewidth=1.2)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("samples", fontsize=9)
    return _to_uri(fig)


def bar_png(counts: dict[str, int], title: str, horizontal: bool = True) -> str | None:
    if not counts:
        return None
    labels = [k if len(k) <= 40 else k[:37] + "…" for k in counts]
    height = max(2.2, 0.28 * len(labels) + 0.8)
    fig, ax = plt.subplots(figsize=(FIGSIZE[0], height) if horizontal else FIGSIZE)
    if horizontal:
        ax.barh(labels[::-1], list(counts.values())[::-1], color="#55A868")
        ax.set_xlabel("count", fontsize=9)
    else:
        ax.bar(labels, list(counts.values()), color="#55A868")
        ax.set_ylabel("count", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.set_title(title, fontsize=10)
    return _to_uri(fig)


def funnel_png(steps: list[tuple[str, int]], title: str) -> str | None:
    if not steps:
        return None
    return bar_png(dict(steps), title)


def rank_curves_png(curves: dict[str, list[float]], title: str) -> str | None:
    """Entry counts sorted descending on log-log axes: the head/tail shape balancing flattens."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for name, values in curves.items():
        positive = [v for v in values if v > 0]
        if positive:
            ax.plot(range(1, len(positive) + 1), positive, label=name, linewidth=1.4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("entry rank", fontsize=9)
    ax.set_ylabel("matches", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _to_uri(fig)
