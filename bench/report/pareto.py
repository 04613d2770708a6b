"""Pareto fronts and matched-sparsity tables: the trade-off numbers of the report.

Directions (whether a metric is better high or low) come from :mod:`bench.evaluation.metric_table`;
``output_error`` is better low, and every function here honours that. Series, the window+sink baseline
and the ceilings are defined in :mod:`bench.report.series`: a ceiling is never the winner of a "best
family" statement.

A point ``(x_j, y_j)`` *dominates* ``(x_i, y_i)`` when it is at least as good in both metrics and
strictly better in one; the Pareto front is the set of points no other point dominates. Points with
a NaN coordinate take no part (they are neither on the front nor dominate anything); identical
points dominate neither each other, so both stay on the front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.evaluation.metric_table import higher_is_better, phrase
from bench.report.series import BASELINE_SERIES, is_ceiling

# Columns that identify a configuration's group in fronts and tables.
GROUP = ("dataset", "series", "backend")
LEVELS = (0.8, 0.9, 0.95)


# ---------------------------------------------------------------- fronts


def pareto_mask(x: Sequence[float], y: Sequence[float], x_higher: bool = True, y_higher: bool = True) -> np.ndarray:
    """Which points are on the Pareto front.

    Parameters
    ----------
    x, y : ``[N]`` coordinates; NaN marks a point that takes no part.
    x_higher, y_higher : whether a higher value is better in each coordinate.

    Returns
    -------
    ``[N]`` bool: True for a non-dominated point with finite coordinates. Point ``i`` is dominated when
    some ``j`` has ``x_j >= x_i`` and ``y_j >= y_i`` (after flipping lower-is-better coordinates) with
    one of them strict; duplicates of a front point are on the front too.
    """
    a = np.asarray(x, dtype=float) * (1.0 if x_higher else -1.0)
    b = np.asarray(y, dtype=float) * (1.0 if y_higher else -1.0)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be 1-d of one length, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    out = np.zeros(a.shape, dtype=bool)
    idx = np.flatnonzero(ok)
    av, bv = a[idx], b[idx]
    for start in range(0, len(idx), 1024):  # bounded O(block x N) memory
        ai, bi = av[start:start + 1024, None], bv[start:start + 1024, None]
        dominated = ((av >= ai) & (bv >= bi) & ((av > ai) | (bv > bi))).any(axis=1)
        out[idx[start:start + 1024]] = ~dominated
    return out


def pareto_front(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The rows of ``df`` on the front of metrics ``x`` and ``y`` (directions from :func:`higher_is_better`),
    sorted by ``x`` ascending (then ``y``), so that they can be drawn as a line."""
    if df.empty:
        return df.copy()
    mask = pareto_mask(df[x].to_numpy(float), df[y].to_numpy(float), higher_is_better(x), higher_is_better(y))
    return df[mask].sort_values([x, y], kind="stable")


def fronts(df: pd.DataFrame, x: str, y: str, by: Sequence[str] = GROUP) -> pd.DataFrame:
    """:func:`pareto_front` of every group of ``by`` (default: dataset, series, backend), concatenated."""
    parts = [pareto_front(g, x, y) for _, g in df.groupby(list(by), sort=True, dropna=False)]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else df.iloc[0:0].copy()


# ---------------------------------------------------------------- matched-sparsity tables


def best_at_levels(df: pd.DataFrame, x: str = "sparsity", y: str = "recall", levels: Sequence[float] = LEVELS,
                   by: Sequence[str] = GROUP, tol: float = 1e-9) -> pd.DataFrame:
    """Best ``y`` among the configurations that reach each level of ``x``, per group.

    A configuration *reaches* level ``l`` when ``x >= l - tol`` (``x <= l + tol`` when lower ``x`` is
    better); ``tol`` only absorbs float noise. Among those with a finite ``y`` the best ``y`` wins
    (highest, or lowest for a lower-is-better metric such as ``output_error``); ties go to the better
    ``x``, then to the first name in alphabetical order.

    Returns
    -------
    Long table, one row per group x level (every group of ``df`` appears at every level): the ``by``
    columns, ``level``, ``value`` (the best ``y``; NaN when no configuration reaches the level),
    ``name`` (that configuration; missing, ``pd.isna``, when none) and ``at`` (its ``x``).
    """
    xh, yh = higher_is_better(x), higher_is_better(y)
    rows = []
    for key, g in df.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        g = g[np.isfinite(g[y].to_numpy(float)) & np.isfinite(g[x].to_numpy(float))]
        for level in levels:
            ok = g[g[x] >= level - tol] if xh else g[g[x] <= level + tol]
            row = dict(zip(by, key), level=float(level), value=math.nan, name=None, at=math.nan)
            if len(ok):
                best = ok.sort_values([y, x, "name"], ascending=[not yh, not xh, True], kind="stable").iloc[0]
                row.update(value=float(best[y]), name=best["name"], at=float(best[x]))
            rows.append(row)
    return pd.DataFrame(rows, columns=[*by, "level", "value", "name", "at"])


def matched_table(best: pd.DataFrame, by: Sequence[str] = GROUP, column: str = "value") -> pd.DataFrame:
    """Wide form of :func:`best_at_levels`: one row per group, one column per level."""
    if best.empty:
        return pd.DataFrame()
    return best.pivot(index=list(by), columns="level", values=column)


def best_series(best: pd.DataFrame, level: float, y: str = "recall") -> pd.DataFrame:
    """Per dataset, the winner among the non-ceiling rows of :func:`best_at_levels` at ``level``.

    Returns one row per dataset: ``dataset, series, backend, name, value, at`` of the best row that is
    not a ceiling (:func:`is_ceiling`; ties: every tied row is kept, in series order), plus ``baseline``
    (the best value of the window+sink series at that level, NaN when absent), ``ties`` (how many rows
    share the best value), and ``ceiling``, ``ceiling_series`` (the best ceiling value and its series at
    that level; NaN and None without ceilings). A dataset where no cheap configuration reaches the
    level has NaN ``value`` and a missing (``pd.isna``) ``series``.
    """
    yh = higher_is_better(y)
    cols = ["dataset", "series", "backend", "name", "value", "at", "baseline", "ties", "ceiling", "ceiling_series"]
    out = []
    for ds, g in best[np.isclose(best["level"], level)].groupby("dataset", sort=True):
        base = g.loc[g["series"] == BASELINE_SERIES, "value"]
        base_v = float(base.max() if yh else base.min()) if base.notna().any() else math.nan
        ceil = g[g["series"].map(is_ceiling) & g["value"].notna()]
        ceil_v, ceil_s = math.nan, None
        if len(ceil):
            c = ceil.sort_values(["value", "series"], ascending=[not yh, True], kind="stable").iloc[0]
            ceil_v, ceil_s = float(c["value"]), c["series"]
        valid = g[g["value"].notna() & ~g["series"].map(is_ceiling)]
        if valid.empty:
            out.append({"dataset": ds, "series": None, "backend": None, "name": None, "value": math.nan,
                        "at": math.nan, "baseline": base_v, "ties": 0, "ceiling": ceil_v, "ceiling_series": ceil_s})
            continue
        top = valid["value"].max() if yh else valid["value"].min()
        winners = valid[valid["value"] == top].sort_values(["series", "backend"])
        for _, w in winners.iterrows():
            out.append({"dataset": ds, "series": w["series"], "backend": w["backend"], "name": w["name"],
                        "value": float(w["value"]), "at": float(w["at"]), "baseline": base_v,
                        "ties": len(winners), "ceiling": ceil_v, "ceiling_series": ceil_s})
    return pd.DataFrame(out, columns=cols)


def best_series_sentences(winners: pd.DataFrame, level: float, x: str = "sparsity", y: str = "recall") -> list[str]:
    """One plain sentence per dataset from :func:`best_series` (what the report's first page says): the
    best cheap family, the window+sink baseline, and the gap to the ceiling."""
    cmp = ">=" if higher_is_better(x) else "<="
    lines = []
    for ds, g in winners.groupby("dataset", sort=True):
        w = g.iloc[0]
        ceil = ""
        if "ceiling" in g and not math.isnan(w["ceiling"]):
            ceil = f" The ceiling ({w['ceiling_series']}, not cheap) reaches {w['ceiling']:.3f}"
            if not pd.isna(w["series"]):
                ceil += f", a gap of {abs(w['ceiling'] - w['value']):.3f}"
            ceil += "."
        if pd.isna(w["series"]):
            lines.append(f"{ds}: no cheap configuration reaches {x} {cmp} {level:g}.{ceil}")
            continue
        who = " and ".join(f"{r['series']} ({r['name']}, {r['backend']})" for _, r in g.iterrows())
        base = "" if math.isnan(w["baseline"]) else f"; the window+sink baseline reaches {w['baseline']:.3f}"
        if w["series"] == BASELINE_SERIES and len(g) == 1:
            base = "; no other family beats the window+sink baseline"
        lines.append(f"{ds}: best {y} at {x} {cmp} {level:g} is {w['value']:.3f}, by {who} at {x} {w['at']:.3f}"
                     f"{base}.{ceil}")
    return lines


# ---------------------------------------------------------------- downstream effect


def downstream_at_levels(frame: pd.DataFrame, levels: Sequence[float] = LEVELS, tol: float = 1e-9) -> pd.DataFrame:
    """Best downstream value of each family among its configurations reaching each effective sparsity.

    A configuration reaches level ``l`` when its ``sparsity >= l - tol``; among those with a finite value
    the best one wins (lowest ``bpc``, highest ``cosine``: the row's ``higher_is_better``), ties to the
    sparser, then to the first name. The dense reference rows (series ``dense``) take no part.

    Returns one row per dataset x series x level: ``dataset, series, metric, level, value, delta, name,
    at`` (its sparsity); ``value``/``delta``/``at`` NaN and ``name`` missing where nothing reaches the level.
    """
    cols = ["dataset", "series", "metric", "level", "value", "delta", "name", "at"]
    rows = []
    sub = frame[frame["series"] != "dense"]
    for (ds, series), g in sub.groupby(["dataset", "series"], sort=True):
        g = g[np.isfinite(g["value"].to_numpy(float)) & np.isfinite(g["sparsity"].to_numpy(float))]
        metric = g["metric"].iloc[0] if len(g) else None
        hib = bool(g["higher_is_better"].iloc[0]) if len(g) else True
        for level in levels:
            ok = g[g["sparsity"] >= level - tol]
            row = dict(dataset=ds, series=series, metric=metric, level=float(level), value=math.nan, delta=math.nan,
                       name=None, at=math.nan)
            if len(ok):
                best = ok.sort_values(["value", "sparsity", "name"], ascending=[not hib, False, True],
                                      kind="stable").iloc[0]
                row.update(value=float(best["value"]), delta=float(best["delta"]), name=best["name"],
                           at=float(best["sparsity"]))
            rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def downstream_nearest(frame: pd.DataFrame, level: float = 0.9) -> pd.DataFrame:
    """Per dataset and family, the configuration whose effective sparsity is nearest to ``level``.

    Ties go to the sparser configuration, then to the better value. Returns ``dataset, series, metric,
    name, sparsity, value, reference, delta``, one row per dataset x series (dense reference excluded).
    """
    cols = ["dataset", "series", "metric", "name", "sparsity", "value", "reference", "delta"]
    rows = []
    sub = frame[(frame["series"] != "dense") & np.isfinite(frame["sparsity"].to_numpy(float))]
    for _, g in sub.groupby(["dataset", "series"], sort=True):
        hib = bool(g["higher_is_better"].iloc[0])
        g = g.assign(_dist=(g["sparsity"] - level).abs(), _v=g["value"] * (-1.0 if hib else 1.0))
        best = g.sort_values(["_dist", "sparsity", "_v", "name"], ascending=[True, False, True, True],
                             kind="stable").iloc[0]
        rows.append({c: best[c] for c in cols})
    return pd.DataFrame(rows, columns=cols)


def downstream_sentences(nearest: pd.DataFrame, level: float = 0.9) -> list[str]:
    """One sentence per dataset from :func:`downstream_nearest`: every family's value near ``level``, best
    first; the metric is named as :func:`bench.evaluation.metric_table.phrase` says."""
    lines = []
    for ds, g in nearest.groupby("dataset", sort=True):
        metric = g["metric"].iloc[0]
        parts = [f"{r['series']} {r['value']:.3f} ({r['name']}, sparsity {r['sparsity']:.3f})"
                 for _, r in g.sort_values("value", ascending=not higher_is_better(metric)).iterrows()]
        lines.append(f"{ds}: {phrase(metric, g['reference'].iloc[0])} at effective sparsity near {level:g}: "
                     + "; ".join(parts) + ".")
    return lines
