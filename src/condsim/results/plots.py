"""Plot specifications (plain data) and their matplotlib rendering to PNG bytes.

Report views describe *what* to draw (:class:`CurvePlot`, :class:`BarPlot`); this module
draws it with matplotlib's Agg canvas, imported inside the render functions and without
pyplot, so neither importing condsim nor rendering touches matplotlib's global state.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DPI = 110
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")


@dataclass(frozen=True)
class Series:
    """One line (curves) or one bar colour (bars): ``y[i]`` with interval ``[low[i], high[i]]``
    (NaN = missing)."""

    label: str
    y: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    x: tuple[float, ...] = ()


@dataclass(frozen=True)
class CurvePlot:
    """Lines of ``y`` vs ``x`` with a shaded interval band per series."""

    name: str
    title: str
    xlabel: str
    ylabel: str
    series: tuple[Series, ...]
    band: str
    log_x: bool = True


@dataclass(frozen=True)
class BarPlot:
    """Grouped bars (one group per category, one bar per series) with error bars;
    ``reference`` draws a dashed marker per group (e.g. chance level)."""

    name: str
    title: str
    ylabel: str
    groups: tuple[str, ...]
    series: tuple[Series, ...]
    interval: str
    reference: tuple[float, ...] = ()
    reference_label: str = "chance"
    extra: dict[str, Any] = field(default_factory=dict)


Plot = CurvePlot | BarPlot


def _figure(width: float, height: float) -> Any:
    """A figure on its own Agg canvas: no pyplot, so no global backend or figure registry
    is touched (safe inside notebooks and GUI sessions)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _to_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _x_scale(ax: Any, xs: np.ndarray, log_x: bool) -> None:
    positive = xs[xs > 0]
    if not log_x or positive.size == 0:
        return
    if (xs <= 0).any():  # a 0-distractor point: linear near 0, log beyond
        ax.set_xscale("symlog", linthresh=float(positive.min()))
    else:
        ax.set_xscale("log")


def render_curves(plot: CurvePlot) -> bytes:
    """Lines with ``fill_between`` bands; x on a log scale (symlog when 0 is present)."""
    fig = _figure(6.4, 4.0)
    ax = fig.subplots()
    all_x = []
    for i, s in enumerate(plot.series):
        color = PALETTE[i % len(PALETTE)]
        x = np.asarray(s.x, float)
        ax.plot(x, s.y, marker="o", ms=4, color=color, label=s.label)
        ax.fill_between(x, s.low, s.high, color=color, alpha=0.18, linewidth=0)
        all_x.append(x)
    if all_x:
        xs = np.unique(np.concatenate(all_x))
        _x_scale(ax, xs, plot.log_x)
        ax.set_xticks(xs, [_short_number(v) for v in xs], fontsize=8)
        ax.minorticks_off()
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    ax.set_title(plot.title, fontsize=10)
    ax.grid(alpha=0.3)
    _legend_below(ax, plot.band, len(plot.series))
    return _to_png(fig)


def render_bars(plot: BarPlot) -> bytes:
    """Grouped bars with asymmetric error bars (interval ends), optional reference marks."""
    n_groups, n_series = len(plot.groups), max(1, len(plot.series))
    fig = _figure(max(6.4, 1.2 * n_groups * max(1, n_series / 3)), 4.0)
    ax = fig.subplots()
    width = 0.8 / n_series
    x = np.arange(n_groups)
    for i, s in enumerate(plot.series):
        y = np.asarray(s.y, float)
        lo = np.clip(y - np.asarray(s.low, float), 0, None)
        hi = np.clip(np.asarray(s.high, float) - y, 0, None)
        ax.bar(x + (i - (n_series - 1) / 2) * width, np.nan_to_num(y), width * 0.95,
               yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], capsize=3,
               color=PALETTE[i % len(PALETTE)], label=s.label, error_kw={"elinewidth": 1})
    for j, ref in enumerate(plot.reference):
        if math.isfinite(ref):
            ax.hlines(ref, j - 0.45, j + 0.45, colors="#444", linestyles="dashed", linewidth=1,
                      label=plot.reference_label if j == 0 else None)
    ax.set_xticks(x, plot.groups, rotation=12, fontsize=8)
    ax.set_ylabel(plot.ylabel)
    ax.set_title(plot.title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(bottom=0)
    _legend_below(ax, plot.interval, len(plot.series) + bool(plot.reference))
    return _to_png(fig)


def _legend_below(ax: Any, title: str, n_entries: int) -> None:
    """Legend under the axes (long model names never hide the data)."""
    ax.legend(fontsize=7, title=title, title_fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.16), ncol=2 if n_entries > 3 else 1, frameon=False)


RENDERERS: dict[type, Callable[[Any], bytes]] = {
    CurvePlot: render_curves,
    BarPlot: render_bars,
}


def render_png(plot: Plot) -> bytes:
    """PNG bytes of ``plot`` (dispatch on its type through :data:`RENDERERS`)."""
    return RENDERERS[type(plot)](plot)


def _short_number(v: float) -> str:
    """``1000 -> '1K'``, ``2500000 -> '2.5M'``."""
    for div, suffix in ((1_000_000, "M"), (1_000, "K")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"
