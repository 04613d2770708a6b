"""The main trade-off figures: each family's reported front in three panels, with its bootstrap band.

Panels (:data:`FACETS`): the Sparsefinder paper's families, today's families (and any other), fixed
patterns and sinks. In every panel: each configuration of a family as a faint point, the reported front
(:class:`bench.report.fair.SeriesFront`: the eval numbers of the configurations selected on validation)
as a line with its pointwise 95% bootstrap band, and the references drawn in all three: the
window+sink baseline (black, thick) and the ceilings (grey, dotted, labelled as ceilings). Within a
panel no two families share a colour or a marker (:func:`facet_styles`), and a family keeps its style
in every figure. Plotting libraries are imported where a figure is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.evaluation.metric_table import axis_label, higher_is_better
from bench.report.claims import PAPER_BASELINES, SPARSEFINDER
from bench.report.fair import SeriesFront, front_band
from bench.report.pareto import pareto_mask
from bench.report.series import BASELINE_SERIES, is_ceiling, is_reference

PAPER_FAMILIES = (*SPARSEFINDER, *PAPER_BASELINES)
TODAY_FAMILIES = ("xattention", "minference", "seer", "quest", "hashattn", "simhash")
FACETS = ("the paper's families", "today's families", "fixed patterns and sinks")
MARKERS = ("o", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p", "8")
CEILING_STYLES = (("dimgray", "d"), ("grey", "x"), ("darkgrey", "+"))  # line markers: unlike any family's
BASELINE_STYLE = ("black", "s")


def facet_of(series: str) -> int | None:
    """The panel of a series (index into :data:`FACETS`); None for the references (drawn in every panel)."""
    if is_reference(series):
        return None
    if series in PAPER_FAMILIES:
        return 0
    if series.startswith("window") or series == "fixed":
        return 2
    return 1


def facet_order(series: str) -> tuple:
    """Sort key of series within a panel: the order of :data:`PAPER_FAMILIES` and
    :data:`TODAY_FAMILIES`, then by name."""
    known = PAPER_FAMILIES + TODAY_FAMILIES
    return (known.index(series) if series in known else len(known), series)


def facet_styles(series: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{series: (colour, marker)}`` for every series of a run: within a panel the ``j``-th family (in
    the order of :data:`PAPER_FAMILIES`, :data:`TODAY_FAMILIES`, then by name) gets the ``j``-th colour
    and marker; the baseline black squares, the ceilings greys."""
    from bench.report.figures import colours

    out = {}
    for i in range(len(FACETS)):
        mine = sorted({s for s in series if facet_of(s) == i}, key=facet_order)
        cs = colours(len(mine))
        out.update({s: (cs[j], MARKERS[j % len(MARKERS)]) for j, s in enumerate(mine)})
    for j, c in enumerate(sorted({s for s in series if is_ceiling(s)})):
        out[c] = CEILING_STYLES[j % len(CEILING_STYLES)]
    out[BASELINE_SERIES] = BASELINE_STYLE
    return out


@dataclass
class Curve:
    """What one series' line needs: its configurations (``px, py``), the reported front (``fx, fy``) and
    the band (``gx``, ``lo``, ``hi``; NaN where undefined, empty without intervals)."""

    series: str
    px: np.ndarray
    py: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    gx: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def front_curves(fronts: Sequence[SeriesFront], selection: pd.DataFrame, dataset: str, variant: str,
                 points: int = 120, confidence: float = 0.95) -> list[Curve]:
    """The :class:`Curve` of every front of ``dataset`` and ``variant``; ``selection`` (from
    :func:`bench.report.selection.select_on_validation`) gives the faint points; the band is read at
    ``points`` sparsities evenly spread over the front's span."""
    out = []
    for f in fronts:
        if (f.dataset, f.variant) != (dataset, variant):
            continue
        conf = _configs(selection, dataset, variant, f.series)
        fx, fy, _ = f.front
        gx = np.linspace(fx.min(), fx.max(), points) if len(fx) > 1 else np.array([])
        _, lo, hi = front_band(f, gx, confidence) if len(gx) else (None, gx, gx)
        out.append(Curve(f.series, conf["eval_sparsity"].to_numpy(float), conf[f"eval_{f.y}"].to_numpy(float),
                         fx, fy, gx, lo, hi))
    return out


def plain_curves(selection: pd.DataFrame, dataset: str, variant: str, y: str, x: str = "sparsity") -> list[Curve]:
    """Curves without bands (any direction, e.g. ``output_error``): the eval front of the selected
    configurations of each series (``selection`` made for ``y``)."""
    out = []
    here = selection[selection["dataset"] == dataset]
    for series in sorted(set(here["series"])):
        conf = _configs(selection, dataset, variant, series)
        if conf.empty:
            continue
        sel = conf[conf["selected"]]
        on = pareto_mask(sel[f"eval_{x}"].to_numpy(float), sel[f"eval_{y}"].to_numpy(float),
                         higher_is_better(x), higher_is_better(y))
        front = sel[on].sort_values([f"eval_{x}", f"eval_{y}"])
        empty = np.array([])
        out.append(Curve(series, conf[f"eval_{x}"].to_numpy(float), conf[f"eval_{y}"].to_numpy(float),
                         front[f"eval_{x}"].to_numpy(float), front[f"eval_{y}"].to_numpy(float), empty, empty, empty))
    return out


def _configs(selection: pd.DataFrame, dataset: str, variant: str, series: str) -> pd.DataFrame:
    sel = selection[(selection["dataset"] == dataset) & (selection["series"] == series)]
    return sel if is_reference(series) else sel[sel["variant"] == variant]


def _draw(ax, c: Curve, style: tuple[str, str]) -> None:
    colour, marker = style
    base, ceil = c.series == BASELINE_SERIES, is_ceiling(c.series)
    ax.scatter(c.px, c.py, color=colour, marker=marker, alpha=0.25, s=18, linewidths=0, zorder=1)
    ok = np.isfinite(c.lo) & np.isfinite(c.hi)
    if ok.any():
        ax.fill_between(c.gx, np.where(ok, c.lo, np.nan), np.where(ok, c.hi, np.nan), color=colour,
                        alpha=0.10 if ceil else 0.18, linewidth=0, zorder=1)
    ax.plot(c.fx, c.fy, color=colour, marker=marker, ms=4.5, lw=2.4 if base else (1.2 if ceil else 1.6),
            ls=":" if ceil else "-", zorder=3 if base else 2)


def _label(series: str) -> str:
    if series == BASELINE_SERIES:
        return "window+sink (baseline)"
    return f"{series} (ceiling)" if is_ceiling(series) else series


def plot_front_facets(curves: Sequence[Curve], styles: dict, y: str, title: str, x: str = "sparsity",
                      xlim: tuple[float, float] | None = None, levels: Sequence[float] = ()):
    """Three panels (:data:`FACETS`) of :class:`Curve` lines, the references in each; ``xlim`` zooms
    (y then spans what is visible), ``levels`` are drawn as dotted vertical lines."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, len(FACETS), figsize=(15.5, 5.4), sharex=True, sharey=True)
    refs = [c for c in curves if is_reference(c.series)]
    for i, (ax, name) in enumerate(zip(axes, FACETS)):
        mine = sorted([c for c in curves if facet_of(c.series) == i], key=lambda c: facet_order(c.series))
        for c in refs + mine:
            _draw(ax, c, styles.get(c.series, ("grey", "o")))
        for level in levels:
            ax.axvline(level, color="grey", lw=0.7, ls=(0, (1, 3)), zorder=0)
        ax.set_title(name if mine else f"{name} (none in this run)", fontsize=11)
        ax.set_xlabel(axis_label(x))
        ax.grid(alpha=0.3)
        handles = [Line2D([], [], color=styles.get(c.series, ("grey", "o"))[0],
                          marker=styles.get(c.series, ("grey", "o"))[1], ms=5,
                          ls=":" if is_ceiling(c.series) else "-", lw=2.4 if c.series == BASELINE_SERIES else 1.6,
                          label=_label(c.series)) for c in mine + refs]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False,
                  fontsize=8.5)
    axes[0].set_ylabel(axis_label(y))
    if xlim is not None:
        for ax in axes:
            ax.set_xlim(*xlim)
        _fit_y(axes[0], curves, xlim, y)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def _fit_y(ax, curves: Sequence[Curve], xlim: tuple[float, float], y: str) -> None:
    """Y limits spanning the points, fronts and bands inside ``xlim`` (shared by all panels): a front
    line crossing an edge of the window counts with its value there."""
    vals = []
    for c in curves:
        for xs, ys in ((c.px, c.py), (c.fx, c.fy), (c.gx, c.lo), (c.gx, c.hi)):
            xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
            vals += list(ys[(xs >= xlim[0]) & (xs <= xlim[1]) & np.isfinite(ys)])
        if len(c.fx) > 1 and c.fx.max() >= xlim[0] and c.fx.min() <= xlim[1]:
            edges = np.clip(xlim, c.fx.min(), c.fx.max())
            vals += list(np.interp(edges, c.fx, c.fy))  # fx is sorted: a front's line
    if not vals:
        return
    lo, hi = min(vals), max(vals)
    pad = 0.04 * (hi - lo or 1.0)
    if y in ("recall", "mass"):  # bounded metrics: never past [0, 1]
        lo, hi = max(0.0, lo - pad), min(1.02, hi + pad)
    else:
        lo, hi = lo - pad, hi + pad
    ax.set_ylim(lo, hi)
