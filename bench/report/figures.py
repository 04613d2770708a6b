"""The report's figures: trade-off fronts, FLOPs, per-head heatmaps, scaling and downstream effect.

Colour = series (:mod:`bench.report.series`), the same in every figure (:func:`palette`): the window+sink
baseline black, the ceilings grey; line style and marker = backend. Axis labels come from
:func:`bench.evaluation.metric_table.axis_label`. Plotting libraries are imported where a figure is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.evaluation.metric_table import axis_label, higher_is_better
from bench.report import pareto
from bench.report.series import BASELINE_SERIES, is_ceiling

BASELINE_COLOUR = "black"
BACKEND_STYLE = {"torch": {"linestyle": "-", "marker": "o"}, "faiss": {"linestyle": "--", "marker": "X"}}
CEILING_COLOURS = ("dimgray", "darkgray", "silver")


def colours(count: int) -> list:
    """``count`` distinct colours without greys (greys mean dense references and ceilings here)."""
    import seaborn as sns

    if count <= 9:
        return [c for i, c in enumerate(sns.color_palette("tab10", 10)) if i != 7][:count]  # 7: grey
    base = [c for i, c in enumerate(sns.color_palette("tab20", 20)) if i not in (14, 15)]  # tab20's greys
    return (base + sns.color_palette("husl", max(0, count - len(base))))[:count]


def palette(series: Sequence[str]) -> dict:
    """A fixed colour per series, the same in every figure: the window+sink baseline black, the ceilings
    (:func:`bench.report.series.is_ceiling`) in greys, every other series from a qualitative palette."""
    ceilings = sorted({s for s in series if is_ceiling(s)})
    names = sorted({s for s in series if s != BASELINE_SERIES and not is_ceiling(s)})
    out = dict(zip(names, colours(len(names))))
    out.update({c: CEILING_COLOURS[i % len(CEILING_COLOURS)] for i, c in enumerate(ceilings)})
    out[BASELINE_SERIES] = BASELINE_COLOUR
    return out


def _style(backend: str) -> dict:
    return BACKEND_STYLE.get(backend, {"linestyle": ":", "marker": "s"})


def series_caption(series: str) -> str:
    """Legend and table label: the baseline and the ceilings say what they are."""
    if series == BASELINE_SERIES:
        return series + " (baseline)"
    return series + (" (ceiling, not cheap)" if is_ceiling(series) else "")


def _legend(ax, colours: dict, series: Sequence[str], backends: Sequence[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[s], lw=2.5 if s == BASELINE_SERIES else 1.8,
                      ls=":" if is_ceiling(s) else "-", label=series_caption(s)) for s in sorted(set(series))]
    if len(set(backends)) > 1 or set(backends) - {"torch"}:
        handles += [Line2D([], [], color="grey", label=f"backend {b}", **_style(b)) for b in sorted(set(backends))]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)


def plot_tradeoff(configs, x: str, y: str, colours: dict, title: str = "", levels: Sequence[float] = ()):
    """Every configuration of ``configs`` (one dataset) as a faint point, and each series' Pareto front
    (:func:`bench.report.pareto.fronts`) as a line: colour = series, line style and marker = backend."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    front = pareto.fronts(configs, x, y, by=("series", "backend"))
    for (series, backend), g in configs.groupby(["series", "backend"], sort=True):
        st = dict(_style(backend), **({"linestyle": ":"} if is_ceiling(series) else {}))
        ax.scatter(g[x], g[y], color=colours[series], marker=st["marker"], alpha=0.3, s=22, linewidths=0)
        f = front[(front["series"] == series) & (front["backend"] == backend)]
        ax.plot(f[x], f[y], color=colours[series], lw=2.5 if series == BASELINE_SERIES else 1.6, ms=5,
                zorder=3 if series == BASELINE_SERIES else 2, **st)
    for level in levels:
        ax.axvline(level, color="grey", lw=0.8, ls=":", zorder=0)
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax, colours, configs["series"], configs["backend"])
    fig.tight_layout()
    return fig


def plot_flops(configs, colours: dict, y: str = "recall", title: str = ""):
    """``y`` against ``flops_ratio`` (prediction plus attention on the predicted graph, over dense
    attention's FLOPs), log x; the vertical line is dense attention."""
    fig = plot_tradeoff(configs, "flops_ratio", y, colours, title)
    ax = fig.axes[0]
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", lw=1.2, ls="--", zorder=0)
    ax.annotate("dense", (1.0, 1.0), xycoords=("data", "axes fraction"), xytext=(-4, -12),
                textcoords="offset points", ha="right", color="grey", fontsize=9)
    return fig


def plot_heatmap(grid, title: str, label: str, cmap: str = "viridis", vmin=None, vmax=None):
    """A ``[layers x heads]`` grid (rows = layers) with its values written in the cells."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows, cols = grid.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 0.62 * cols + 2.2), max(2.6, 0.42 * rows + 1.4)))
    sns.heatmap(grid, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, annot=rows * cols <= 400, fmt=".2f",
                annot_kws={"fontsize": 7}, cbar_kws={"label": label}, linewidths=0.4, linecolor="white")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_scaling(scaling, reference: str = "entmax15-topk", title: str = ""):
    """Mean time against ``n``, log-log: dense references in grey (the crossover ``reference`` in black),
    predictors in colour, line style by backend."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import NullLocator

    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    dense = scaling[scaling["backend"] == "dense"]
    greys = dict(zip(sorted(dense["method"].unique()), sns.color_palette("Greys", dense["method"].nunique() + 2)[2:]))
    for method, g in dense.groupby("method", sort=True):
        ref = method == reference
        ax.plot(g["n"], g["time_mean"], color="black" if ref else greys[method], lw=2.4 if ref else 1.4,
                ls="-" if ref else "-.", marker="s", ms=4, label=f"dense {method}" + (" (reference)" if ref else ""))
    preds = scaling[scaling["backend"] != "dense"]
    methods = sorted(preds["method"].unique())
    colour = dict(zip(methods, colours(len(methods))))
    for (method, backend), g in preds.groupby(["method", "backend"], sort=True):
        ax.plot(g["n"], g["time_mean"], color=colour[method], ms=5, label=f"{method} ({backend})", **_style(backend))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ns = sorted(scaling["n"].unique())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("sequence length n")
    ax.set_ylabel("mean time per call (s)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def plot_downstream(frame, colours: dict, title: str = ""):
    """Downstream metric against effective sparsity for one dataset (:func:`bench.report.frames.downstream_frame`):
    every configuration as a faint point, each family's Pareto front (sparser and better, in the
    metric's own direction) as a line, the dense-entmax model as a dashed horizontal line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    dense = frame[frame["series"] == "dense"]
    sub = frame[frame["series"] != "dense"]
    for series, g in sub.groupby("series", sort=True):
        colour, base = colours.get(series, "grey"), series == BASELINE_SERIES
        ax.scatter(g["sparsity"], g["value"], color=colour, alpha=0.35, s=22, linewidths=0)
        hib = bool(g["higher_is_better"].iloc[0])
        front = g[pareto.pareto_mask(g["sparsity"].to_numpy(float), g["value"].to_numpy(float),
                                     higher_is_better("effective_sparsity"), hib)]
        front = front.sort_values("sparsity")
        ax.plot(front["sparsity"], front["value"], color=colour, marker="o", ms=5, lw=2.5 if base else 1.6,
                zorder=3 if base else 2, label=series_caption(series))
    ref = dense["value"] if len(dense) else frame["reference"]
    if ref.notna().any():
        ax.axhline(float(ref.dropna().iloc[0]), color="grey", ls="--", lw=1.2, zorder=0, label="dense entmax")
    metric = frame["metric"].iloc[0] if len(frame) else ""
    ax.set_xlabel(axis_label("effective_sparsity"))
    ax.set_ylabel(axis_label(metric))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    fig.tight_layout()
    return fig
