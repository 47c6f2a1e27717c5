"""The leaderboard's figures: SVG bytes from plain data, the same bytes for the same data.

Figures are drawn on matplotlib `Figure` objects with the Agg canvas (no pyplot, no global
backend switch), except the claims' figures, which reuse the reproduction report's. Determinism:
a fixed `svg.hashsalt` names the SVG elements and `Date=None` drops the timestamp. Every function
takes JSON-able arguments only, so the builder can key a figure by a hash of its arguments and
skip redrawing it.
"""

from __future__ import annotations

import functools
import io
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from benchsuite.report import figures as report_figures
from benchsuite.report.claims import ClaimResult

# All CKA-like heatmaps share this colour scale, so colours compare across pages.
HEATMAP_CMAP = "magma"
SCORE_CMAP = "viridis"  # block-structure score, on the index grid
BLOCK_EDGE = "#1565ff"
_RC = {
    "svg.hashsalt": "benchsuite-leaderboard",
    "svg.fonttype": "path",  # glyphs as paths: the page looks the same whatever fonts the viewer has
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
}
MAX_TICKS = 24  # layer labels per axis; more would overlap on a laptop screen
# The code that draws the figures: a figure's cache key covers these files.
SOURCES = [Path(__file__), Path(report_figures.__file__)]

Layers = Sequence[Sequence]  # [(name, stage), ...] per probe point


def svg_figure(draw: Callable[..., Figure]) -> Callable[..., bytes]:
    """Turn `draw(**data) -> Figure` into `(**data) -> SVG bytes`, drawn under the site's rc settings."""

    @functools.wraps(draw)
    def render(**data) -> bytes:
        with matplotlib.rc_context(_RC):
            buf = io.BytesIO()
            figure(render, **data).savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
        return buf.getvalue()

    return render


def figure(render: Callable[..., bytes], **data) -> Figure:
    """The matplotlib Figure behind one of the site's figures (for notebooks), drawn under its rc settings."""
    with matplotlib.rc_context(_RC):
        fig = render.__wrapped__(**data)
        FigureCanvasAgg(fig)
    return fig


def _labels(layers: Layers, n: int) -> tuple[list[str], list]:
    """Names and stages of n probe points; numbered placeholders if the layers table lacks them."""
    if len(layers) == n:
        return [str(name) for name, _ in layers], [stage for _, stage in layers]
    return [str(i) for i in range(n)], [None] * n


def _boundaries(stages: list) -> list[float]:
    """Positions between probe points where the stage changes."""
    return [i - 0.5 for i in range(1, len(stages)) if stages[i] != stages[i - 1] and stages[i] is not None]


def _ticks(n: int) -> list[int]:
    return list(range(0, n, max(1, math.ceil(n / MAX_TICKS))))


@svg_figure
def heatmap(values: list, rows: Layers, cols: Layers, title: str, label: str = "CKA",
            blocks: Sequence[Sequence[int]] = (), xlabel: str = "layer", ylabel: str = "layer") -> Figure:
    """A (rows x cols) map on the shared [0, 1] scale, stage boundaries in white, blocks outlined."""
    m = np.asarray(values, dtype=float)
    row_names, row_stages = _labels(rows, m.shape[0])
    col_names, col_stages = _labels(cols, m.shape[1])
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[HEATMAP_CMAP].with_extremes(bad="#c8c8c8")
    im = ax.imshow(m, origin="lower", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="none",
                   aspect="equal" if m.shape[0] == m.shape[1] else "auto")
    for x in _boundaries(col_stages):
        ax.axvline(x, color="white", lw=0.9)
    for y in _boundaries(row_stages):
        ax.axhline(y, color="white", lw=0.9)
    for start, end in blocks:
        ax.add_patch(Rectangle((start - 0.5, start - 0.5), end - start + 1, end - start + 1,
                               fill=False, ec=BLOCK_EDGE, lw=2.2))
    ax.set_xticks(_ticks(m.shape[1]), [col_names[i] for i in _ticks(m.shape[1])], rotation=90)
    ax.set_yticks(_ticks(m.shape[0]), [row_names[i] for i in _ticks(m.shape[0])])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label=label, ticks=np.linspace(0, 1, 6))
    return fig


@svg_figure
def layer_lines(series: Sequence[Sequence], layers: Layers, title: str, ylabel: str) -> Figure:
    """Values per probe point: one thin line per (label, values) series, and their mean when there are several."""
    n = max(len(v) for _, v in series)
    names, stages = _labels(layers, n)
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    edges = [-0.5, *_boundaries(stages), n - 0.5]
    for k, (lo, hi) in enumerate(zip(edges, edges[1:])):
        if k % 2:
            ax.axvspan(lo, hi, color="#000000", alpha=0.05, lw=0)  # alternate shading marks the stages
    several = len(series) > 1
    for label, values in series:
        ax.plot(range(len(values)), np.asarray(values, dtype=float), marker="o", ms=2.5, lw=1.0,
                alpha=0.55 if several else 1.0, label=label)
    same_length = {len(v) for _, v in series} == {n}
    if several and same_length:
        ax.plot(range(n), np.nanmean(np.asarray([v for _, v in series], dtype=float), axis=0),
                color="black", lw=2.2, label="mean")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(0.0, 1.02)
    ax.set_xticks(_ticks(n), [names[i] for i in _ticks(n)], rotation=90)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", color="#dddddd", lw=0.6)
    ax.legend(loc="best", frameon=False, ncols=min(4, len(series) + several))
    return fig


@svg_figure
def class_bars(classes: list[int], mean_a: list[float], mean_b: list[float], significant: list[bool],
               title: str, labels: Sequence[str] = ("group A", "group B")) -> Figure:
    """Per-class accuracy of two groups of runs, significant differences starred."""
    x = np.arange(len(classes))
    fig = Figure(figsize=(max(4.0, 0.45 * len(classes) + 1.5), 3.2))
    ax = fig.add_subplot()
    a = np.asarray(mean_a, dtype=float)
    b = np.asarray(mean_b, dtype=float)
    ax.bar(x - 0.2, a, 0.4, label=labels[0], color="#3b6fb6")
    ax.bar(x + 0.2, b, 0.4, label=labels[1], color="#e08a2c")
    for i in np.flatnonzero(significant):
        ax.text(x[i], np.nanmax([a[i], b[i]]) + 0.02, "*", ha="center", fontsize=11)
    ax.set_xticks(x, [str(c) for c in classes])
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.12)
    ax.set_title(title)
    ax.legend(frameon=False, ncols=2, loc="upper right")
    return fig


def claim(**fields: Any) -> bytes:
    """A claim's figure from a ClaimResult's fields, drawn by the reproduction report's code (pyplot, its own rc
    settings) so that docs/figures and the site hold the same bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "claim.svg"
        report_figures.claim_figure(ClaimResult(**fields), path)
        return path.read_bytes()


def score_colours(score: float | None) -> tuple[str, str] | None:
    """Background and text colour of an index cell with this block score in [0, 1]; None when unknown."""
    if score is None or not math.isfinite(score):
        return None
    r, g, b, _ = matplotlib.colormaps[SCORE_CMAP](min(max(score, 0.0), 1.0))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return matplotlib.colors.to_hex((r, g, b)), "#111111" if luminance > 0.5 else "#ffffff"


def score_gradient(stops: int = 11) -> str:
    """The score colour scale as a CSS linear-gradient, for the index legend."""
    colours = [matplotlib.colors.to_hex(matplotlib.colormaps[SCORE_CMAP](i / (stops - 1))) for i in range(stops)]
    return f"linear-gradient(to right, {', '.join(colours)})"
