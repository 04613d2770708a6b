"""The numbers of the trade-off reports: Pareto fronts, matched-sparsity tables, per-head grids, crossovers.

Everything the notebooks in ``notebooks/`` show is computed here, from a finished run's files only
(``summary.json`` and ``results.csv``, see :mod:`bench.results.summary`); nothing is measured again.

Vocabulary
----------
configuration
    one predictor name on one dataset and backend: a row of :func:`configs_frame`.
series
    what one colour of a plot and one row of a table stands for: the family, except that the window
    family is split by its sink tokens: ``window`` (none), ``window+sink`` (g = 1, the first token: the
    baseline every report shows explicitly), ``window+g<g>`` for other fixed ``g``, and
    ``window+learned-sink`` for sink columns learned from the fit samples (``s > 0``).
ceiling
    a family that reads the dense scores (``oracle-*``, :data:`CEILING_PREFIX`): drawn on every plot as
    the best any predictor could reach, never a winner of a "best family" statement.
direction
    whether a metric is better high or low (:mod:`bench.evaluation.metric_table`); ``output_error``
    is better low, and every function here honours that.

A point ``(x_j, y_j)`` *dominates* ``(x_i, y_i)`` when it is at least as good in both metrics and
strictly better in one; the Pareto front is the set of points no other point dominates. Points with
a NaN coordinate take no part (they are neither on the front nor dominate anything); identical
points dominate neither each other, so both stay on the front.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.evaluation.metric_table import higher_is_better  # noqa: F401  (part of this module's API)
from bench.evaluation.metrics import METRICS

BASELINE_SERIES = "window+sink"
LEARNED_SINK_SERIES = "window+learned-sink"
# Every ceiling family is named oracle-... (predictors/torch/oracle.py; tests/test_pareto.py checks the registry).
CEILING_PREFIX = "oracle-"
# Columns that identify a configuration's group in fronts and tables.
GROUP = ("dataset", "series", "backend")
LEVELS = (0.8, 0.9, 0.95)


def is_ceiling(series: str) -> bool:
    """Whether a family or series is a ceiling (reads the dense scores; see the module docstring)."""
    return isinstance(series, str) and series.startswith(CEILING_PREFIX)


def _int_param(params: dict | None, key: str) -> int:
    v = (params or {}).get(key, 0)
    return 0 if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def series_label(family: str, params: dict | None) -> str:
    """The series of a configuration: its family, with the window family split by sink tokens (fixed
    ``g``, learned ``s``; see the module docstring)."""
    if family != "window":
        return family
    g, s = _int_param(params, "g"), _int_param(params, "s")
    label = {0: "window", 1: BASELINE_SERIES}.get(g, f"window+g{g}")
    if s > 0:
        label = LEARNED_SINK_SERIES if g == 0 else f"{label}+learned-sink"
    return label


# ---------------------------------------------------------------- reading a run


@dataclass
class Run:
    """A finished run, as frames. ``heads`` is empty when the run has no ``results.csv``."""

    path: Path
    summary: dict
    configs: pd.DataFrame
    heads: pd.DataFrame
    scaling: pd.DataFrame

    @property
    def datasets(self) -> list[str]:
        return sorted(self.configs["dataset"].unique()) if len(self.configs) else []


def load_run(run_dir: str | Path) -> Run:
    """Read ``summary.json`` (required) and ``results.csv`` (optional) of a run folder."""
    path = Path(run_dir)
    sfile = path / "summary.json"
    if not sfile.is_file():
        raise BenchError(f"{path} has no summary.json: is it a run folder (reports/runs/NAME) of a finished run?")
    try:
        summary = json.loads(sfile.read_text())
    except json.JSONDecodeError as exc:
        raise BenchError(f"{sfile} is not valid JSON ({exc})") from None
    csv = path / "results.csv"
    heads = heads_frame(pd.read_csv(csv)) if csv.is_file() else heads_frame(pd.DataFrame())
    return Run(path=path, summary=summary, configs=configs_frame(summary), heads=heads,
               scaling=scaling_frame(summary))


def _num(v) -> float:
    return math.nan if v is None else float(v)


CONFIG_COLUMNS = ["dataset", "backend", "name", "family", "series", "baseline", *METRICS, "gold_sparsity",
                  "predict_seconds", "fit_seconds", "prediction_flops", "attention_flops", "dense_flops",
                  "total_flops", "flops_ratio"]


def configs_frame(summary: dict) -> pd.DataFrame:
    """One row per configuration of ``summary["predictors"]``.

    Columns: ``dataset, backend, name, family, series, baseline`` (series is the window+sink baseline),
    the mean of every metric of :data:`bench.evaluation.metrics.METRICS`, ``gold_sparsity``, ``predict_seconds``
    (mean prediction time of all eval layers), ``fit_seconds``, the FLOPs, ``total_flops`` (prediction
    plus attention on the predicted graph) and ``flops_ratio = total_flops / dense_flops``; then
    ``param_<key>`` for every parameter. Missing numbers are NaN.
    """
    rows = []
    for e in summary.get("predictors", []):
        mean = e.get("mean") or {}
        pred, att, dense = (_num(e.get(k)) for k in ("prediction_flops", "attention_flops", "dense_flops"))
        total = pred + att
        row = {"dataset": e["dataset"], "backend": e["backend"], "name": e["name"], "family": e["family"],
               "series": series_label(e["family"], e.get("params")),
               **{m: _num(mean.get(m)) for m in METRICS},
               "gold_sparsity": _num(e.get("gold_sparsity")),
               "predict_seconds": _num((e.get("time") or {}).get("mean")), "fit_seconds": _num(e.get("fit_seconds")),
               "prediction_flops": pred, "attention_flops": att, "dense_flops": dense, "total_flops": total,
               "flops_ratio": total / dense if dense and not math.isnan(dense) else math.nan}
        row["baseline"] = row["series"] == BASELINE_SERIES
        row.update({f"param_{k}": v for k, v in (e.get("params") or {}).items()})
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=CONFIG_COLUMNS)
    return pd.DataFrame(rows)


def heads_frame(results: pd.DataFrame) -> pd.DataFrame:
    """``results.csv`` (one row per configuration x layer x head) with a ``series`` column added."""
    df = results.copy()
    if df.empty:
        return pd.DataFrame(columns=["dataset", "backend", "name", "family", "series", "layer", "head"])
    g = df["param_g"] if "param_g" in df else pd.Series(0, index=df.index)
    s = df["param_s"] if "param_s" in df else pd.Series(0, index=df.index)
    df["series"] = [series_label(f, {"g": gv, "s": sv}) for f, gv, sv in zip(df["family"], g, s)]
    return df


def scaling_frame(summary: dict) -> pd.DataFrame:
    """The scaling records: ``n, backend, method, time_mean, time_min, flops`` (``backend == "dense"`` for
    the dense references), sorted by method, backend and n."""
    rows = [{"n": int(r["n"]), "backend": r["backend"], "method": r["method"],
             "time_mean": _num((r.get("time") or {}).get("mean")),
             "time_min": _num((r.get("time") or {}).get("min")), "flops": _num(r.get("flops"))}
            for r in summary.get("scaling", [])]
    if not rows:
        return pd.DataFrame(columns=["n", "backend", "method", "time_mean", "time_min", "flops"])
    return pd.DataFrame(rows).sort_values(["method", "backend", "n"], ignore_index=True)


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


# ---------------------------------------------------------------- per head


def head_matrix(heads: pd.DataFrame, metric: str, dataset: str, name: str | None = None,
                backend: str | None = None) -> pd.DataFrame:
    """``[layers x heads]`` grid of ``metric`` for one dataset (and configuration, when ``name`` is given).

    Without ``name`` the grid is the mean over every configuration (NaN-aware), which is what a
    property of the data, such as ``gold_sparsity``, needs.
    """
    if metric not in heads:
        raise BenchError(f"results.csv has no column {metric!r}")
    sel = heads["dataset"] == dataset
    if name is not None:
        sel &= heads["name"] == name
    if backend is not None:
        sel &= heads["backend"] == backend
    sub = heads[sel]
    if sub.empty:
        raise BenchError(f"no per-head rows for dataset {dataset!r}" + (f", predictor {name!r}" if name else ""))
    return sub.pivot_table(index="layer", columns="head", values=metric, aggfunc="mean", dropna=False)


def gold_sparsity_matrix(heads: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, str]:
    """Gold sparsity per layer and head of ``dataset``, and where it came from.

    Recorded values (column ``gold_sparsity``) are used when present. Otherwise it is estimated from
    each configuration's per-head metrics: ``gold_pairs / valid = (1 - sparsity) * precision / recall``
    (exact per sample; here applied to sample means, so approximate), for rows with recall > 0, and
    the median over configurations is taken. Returns ``(grid, source)`` with source ``"recorded"`` or
    ``"estimated"``.
    """
    sub = heads[heads["dataset"] == dataset]
    if sub.empty:
        raise BenchError(f"no per-head rows for dataset {dataset!r}")
    if "gold_sparsity" in sub and sub["gold_sparsity"].notna().any():
        return head_matrix(sub, "gold_sparsity", dataset), "recorded"
    rec, prec, sp = (sub[c].to_numpy(float) for c in ("recall", "precision", "sparsity"))
    with np.errstate(divide="ignore", invalid="ignore"):
        density = np.where(rec > 0, (1.0 - sp) * prec / rec, np.nan)
    est = sub.assign(gold_est=np.clip(1.0 - density, 0.0, 1.0))
    grid = est.pivot_table(index="layer", columns="head", values="gold_est", aggfunc="median", dropna=False)
    return grid, "estimated"


def choose_config(configs: pd.DataFrame, dataset: str, name: str = "", level: float = 0.9,
                  x: str = "sparsity", y: str = "recall") -> pd.Series | None:
    """The configuration whose per-head grid the report shows for ``dataset``.

    ``name`` given: that configuration (torch before faiss when both exist). Otherwise the best ``y``
    among the non-ceiling configurations reaching ``x`` level ``level`` (:func:`best_at_levels` rules);
    when none reaches it, the one with the best ``x`` (the sparsest). None when the dataset has no
    configuration.
    """
    sub = configs[configs["dataset"] == dataset]
    if not name:
        cheap = sub[~sub["series"].map(is_ceiling)]
        sub = cheap if len(cheap) else sub
    if sub.empty:
        return None
    if name:
        hit = sub[sub["name"] == name].sort_values("backend", key=lambda s: s != "torch")
        if hit.empty:
            known = ", ".join(sorted(sub["name"].unique()))
            raise BenchError(f"no configuration {name!r} on dataset {dataset!r}; known: {known}")
        return hit.iloc[0]
    best = best_at_levels(sub, x, y, [level], by=("dataset",))
    if best["name"].notna().any():
        row = best.iloc[0]
        hit = sub[sub["name"] == row["name"]]
        return hit[np.isclose(hit[x], row["at"])].iloc[0]
    return sub.sort_values([x, "name"], ascending=[not higher_is_better(x), True]).iloc[0]


def hardest_heads(heads: pd.DataFrame, dataset: str, name: str, backend: str, k: int = 10) -> pd.DataFrame:
    """The ``k`` heads of ``dataset`` where configuration ``name`` has the lowest recall, with their gold
    density (``1 - gold sparsity``, :func:`gold_sparsity_matrix`) and their rank by density (1 = densest).

    Columns: ``head`` (``L<layer>H<head>``), ``layer``, ``head_index``, ``recall``, ``gold_density``,
    ``density_rank``; ties in recall are broken by higher density, then layer and head.
    """
    rec = head_matrix(heads, "recall", dataset, name, backend).stack(future_stack=True).rename("recall")
    gold, _ = gold_sparsity_matrix(heads, dataset)
    dens = (1.0 - gold).stack(future_stack=True).rename("gold_density")
    df = pd.concat([rec, dens], axis=1).reset_index()
    df.columns = ["layer", "head_index", "recall", "gold_density"]
    df["density_rank"] = df["gold_density"].rank(ascending=False, method="min").astype("Int64")
    df = df.sort_values(["recall", "gold_density", "layer", "head_index"], ascending=[True, False, True, True],
                        na_position="last")
    df.insert(0, "head", [f"L{int(a)}H{int(b)}" for a, b in zip(df["layer"], df["head_index"])])
    return df.head(k).reset_index(drop=True)


def densest_heads(heads: pd.DataFrame, dataset: str, k: int = 10) -> pd.DataFrame:
    """The ``k`` heads of ``dataset`` with the densest gold graph (highest ``1 - gold sparsity``).

    Columns: ``head`` (``L<layer>H<head>``), ``layer``, ``head_index``, ``gold_density``; ties by layer, head.
    """
    gold, _ = gold_sparsity_matrix(heads, dataset)
    df = (1.0 - gold).stack(future_stack=True).rename("gold_density").reset_index()
    df.columns = ["layer", "head_index", "gold_density"]
    df = df.sort_values(["gold_density", "layer", "head_index"], ascending=[False, True, True], na_position="last")
    df.insert(0, "head", [f"L{int(a)}H{int(b)}" for a, b in zip(df["layer"], df["head_index"])])
    return df.head(k).reset_index(drop=True)


def heads_sentence(dataset: str, config: str, hardest: pd.DataFrame, densest: pd.DataFrame, k: int = 3) -> str:
    """The report's sentence on the hardest heads of one dataset (from :func:`hardest_heads` of
    ``config`` and :func:`densest_heads`)."""
    low = ", ".join(f"{r['head']} (recall {r['recall']:.3f}, gold density {r['gold_density']:.3f})"
                    for _, r in hardest.head(k).iterrows())
    dense = ", ".join(f"{r['head']} ({r['gold_density']:.3f})" for _, r in densest.head(k).iterrows())
    return (f"{dataset}: the hardest heads for {config} are {low or 'none'}; "
            f"the densest gold graphs are at {dense or 'none'}.")


# ---------------------------------------------------------------- scaling


def crossover(scaling: pd.DataFrame, reference: str = "entmax15-topk") -> pd.DataFrame:
    """From which ``n`` each predictor's prediction is cheaper than the dense ``reference``.

    Only the ``n`` where both were timed count. ``crossover_n`` is the smallest measured ``n`` from
    which the predictor's mean time is strictly below the reference's at that ``n`` and at every larger
    measured ``n``; NaN when it is not cheaper at the largest one. When it is cheaper at every measured
    ``n``, ``crossover_n`` is the smallest ``n`` measured and ``always`` is True (the true crossover may
    lie lower). ``speedup_at_max`` is reference time / predictor time at the largest common ``n``.

    Returns one row per (backend, method) of the non-dense records: ``backend, method, crossover_n,
    always, n_min, n_max, speedup_at_max, verdict`` (a phrase for the report).
    """
    cols = ["backend", "method", "crossover_n", "always", "n_min", "n_max", "speedup_at_max", "verdict"]
    ref = scaling[(scaling["backend"] == "dense") & (scaling["method"] == reference)].set_index("n")["time_mean"]
    rows = []
    preds = scaling[scaling["backend"] != "dense"]
    for (backend, method), g in preds.groupby(["backend", "method"], sort=True):
        t = g.set_index("n")["time_mean"]
        common = sorted(set(t.index) & set(ref.index))
        common = [n for n in common if np.isfinite(t[n]) and np.isfinite(ref[n])]
        if not common:
            rows.append(dict(backend=backend, method=method, crossover_n=math.nan, always=False, n_min=math.nan,
                             n_max=math.nan, speedup_at_max=math.nan, verdict=f"{reference} not timed at the same n"))
            continue
        cheaper = [bool(t[n] < ref[n]) for n in common]
        cross = math.nan
        for i in range(len(common) - 1, -1, -1):
            if not cheaper[i]:
                break
            cross = common[i]
        always = all(cheaper)
        if math.isnan(cross):
            verdict = f"not cheaper up to n = {common[-1]}"
        elif always:
            verdict = f"cheaper at every measured n (from n = {common[0]})"
        else:
            verdict = f"cheaper from n = {cross}"
        rows.append(dict(backend=backend, method=method, crossover_n=float(cross), always=always,
                         n_min=common[0], n_max=common[-1], speedup_at_max=float(ref[common[-1]] / t[common[-1]]),
                         verdict=verdict))
    return pd.DataFrame(rows, columns=cols)


def crossover_sentences(table: pd.DataFrame, reference: str = "entmax15-topk") -> list[str]:
    """One sentence per predictor of :func:`crossover`."""
    lines = []
    for _, r in table.iterrows():
        line = f"{r['method']} ({r['backend']}): {r['verdict']} than dense {reference}"
        speedup = r["speedup_at_max"]
        if not math.isnan(speedup):
            how = f"{speedup:.3g}x faster" if speedup >= 1 else f"{1 / speedup:.3g}x slower"
            line += f" ({how} at n = {int(r['n_max'])})"
        lines.append(line + ".")
    return lines


# ---------------------------------------------------------------- environment


def environment_rows(summary: dict) -> pd.DataFrame:
    """What ran the benchmark, as ``item, value`` rows: the recorded environment, the devices of the
    records, and per dataset its data descriptor (corpus hash included)."""
    rows = [{"item": k, "value": "" if v is None else str(v)}
            for k, v in sorted((summary.get("environment") or {}).items())]
    devices = sorted({r.get("device") for kind in ("dense", "scaling") for r in summary.get(kind, [])
                      if r.get("device")})
    rows.append({"item": "devices", "value": ", ".join(devices) if devices else "unknown"})
    seen = {}
    for e in summary.get("predictors", []):
        seen.setdefault(e["dataset"], e.get("dataset_descriptor"))
    for ds, desc in sorted(seen.items()):
        if not desc:
            rows.append({"item": f"data {ds}", "value": "no descriptor recorded"})
            continue
        for k, v in sorted(desc.items()):
            rows.append({"item": f"data {ds}: {k}", "value": v if isinstance(v, str) else json.dumps(v)})
    return pd.DataFrame(rows, columns=["item", "value"])


# ---------------------------------------------------------------- downstream effect and sparse execution


DOWNSTREAM_COLUMNS = ["dataset", "backend", "name", "family", "series", "metric", "higher_is_better", "value",
                      "reference", "delta", "sparsity", "support_sparsity", "empty_rows", "seconds", "fit_seconds",
                      "eval_samples"]


def downstream_frame(summary: dict) -> pd.DataFrame:
    """One row per downstream record (``summary["downstream"]``, ``bench/suite/bench_downstream.py``).

    Columns: ``dataset, backend, name, family, series`` (as :func:`series_label`; the dense reference is
    family and series ``dense``), ``metric`` (``bpc`` or ``cosine``), ``higher_is_better``, ``value`` (the
    restricted model), ``reference`` (the dense-entmax model), ``delta = value - reference``, the effective
    ``sparsity`` and ``support_sparsity``, ``empty_rows``, ``seconds`` (mean time of the restricted run),
    ``fit_seconds``, ``eval_samples``; then ``cosine_to_softmax`` and ``reference_to_softmax`` where
    recorded, and ``param_<key>``. Sorted by dataset, series and sparsity.
    """
    rows = []
    for r in summary.get("downstream", []):
        row = {"dataset": r["dataset"], "backend": r.get("backend", "torch"), "name": r["name"],
               "family": r["family"], "series": series_label(r["family"], r.get("params")),
               "metric": r["metric"], "higher_is_better": bool(r["higher_is_better"]),
               **{k: _num(r.get(k)) for k in ("value", "reference", "delta", "sparsity", "support_sparsity",
                                              "empty_rows", "fit_seconds")},
               "seconds": _num((r.get("time") or {}).get("mean")),
               "eval_samples": _num(r.get("eval_samples"))}
        for k in ("cosine_to_softmax", "reference_to_softmax"):
            if k in r:
                row[k] = _num(r[k])
        row.update({f"param_{k}": v for k, v in (r.get("params") or {}).items()})
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=DOWNSTREAM_COLUMNS)
    return pd.DataFrame(rows).sort_values(["dataset", "series", "sparsity", "name"], ignore_index=True)


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
    """One sentence per dataset from :func:`downstream_nearest`: every family's value near ``level``."""
    lines = []
    for ds, g in nearest.groupby("dataset", sort=True):
        metric = g["metric"].iloc[0]
        what = ("held-out bits per byte (dense entmax: {ref:.3f}; lower is better)" if metric == "bpc" else
                "cosine to the dense-entmax embeddings (higher is better)")
        parts = [f"{r['series']} {r['value']:.3f} ({r['name']}, sparsity {r['sparsity']:.3f})"
                 for _, r in g.sort_values("value", ascending=metric == "bpc").iterrows()]
        lines.append(f"{ds}: {what.format(ref=g['reference'].iloc[0])} at effective sparsity near {level:g}: "
                     + "; ".join(parts) + ".")
    return lines


def sparse_exec_frame(summary: dict) -> pd.DataFrame:
    """The sparse-execution records (``summary["sparse_exec"]``) in the shape of :func:`scaling_frame`:
    ``n, backend`` (``dense`` for the references, ``sparse`` for prediction + sparse execution),
    ``method, time_mean, time_min``, plus ``sparsity`` (NaN for dense). :func:`crossover` and
    :func:`bench.report.render.plot_scaling` take it as it is."""
    rows = [{"n": int(r["n"]), "backend": r["backend"], "method": r["method"],
             "time_mean": _num((r.get("time") or {}).get("mean")), "time_min": _num((r.get("time") or {}).get("min")),
             "sparsity": _num(r.get("sparsity"))}
            for r in summary.get("sparse_exec", [])]
    if not rows:
        return pd.DataFrame(columns=["n", "backend", "method", "time_mean", "time_min", "sparsity"])
    return pd.DataFrame(rows).sort_values(["method", "backend", "n"], ignore_index=True)


GOAL_COLUMNS = ["method", "n", "reference", "speedup_min", "speedup_median", "recall_synthetic",
                "sparsity_synthetic", "recall_minilm", "sparsity_minilm", "minilm_length", "speedup_minilm"]


def sparse_goal_frame(summary: dict) -> pd.DataFrame:
    """The speed-goal records (``summary["sparse_exec_goal"]``), one row each: ``method, n, reference``,
    the speed-up of prediction + sparse execution over the dense reference (ratio of minimum and of
    median times, alternating rounds), its recall and sparsity on that synthetic data and on real MiniLM
    (``minilm_length`` tokens at most) and the speed-up measured there."""
    rows = []
    for r in summary.get("sparse_exec_goal", []):
        syn, real = r.get("synthetic") or {}, r.get("minilm") or {}
        rows.append({"method": r["method"], "n": int(r["n"]), "reference": r.get("reference"),
                     "speedup_min": _num(r.get("speedup_min")), "speedup_median": _num(r.get("speedup_median")),
                     "recall_synthetic": _num(syn.get("recall")), "sparsity_synthetic": _num(syn.get("sparsity")),
                     "recall_minilm": _num(real.get("recall")), "sparsity_minilm": _num(real.get("sparsity")),
                     "minilm_length": _num(real.get("length")), "speedup_minilm": _num(real.get("speedup_min"))})
    return pd.DataFrame(rows, columns=GOAL_COLUMNS)


def sparse_goal_sentences(goal: pd.DataFrame, speedup: float = 5.0, recall: float = 0.9) -> list[str]:
    """Whether each goal record meets ``speedup`` x at ``recall``, in words (recall on both data sets)."""
    lines = []
    for _, r in goal.iterrows():
        fast = r["speedup_min"] >= speedup
        how = lambda x: f"{x:.2f}x faster" if x >= 1 else f"{1 / x:.2f}x slower"
        line = (f"{r['method']} at n = {r['n']}: prediction + sparse execution is {how(r['speedup_min'])} "
                f"(medians: {how(r['speedup_median'])}) than dense {r['reference']} "
                f"({'meets' if fast else 'misses'} the {speedup:g}x goal), at recall {r['recall_synthetic']:.3f} "
                f"and sparsity {r['sparsity_synthetic']:.3f} on the timing data")
        if not math.isnan(r["recall_minilm"]):
            line += (f"; on real MiniLM ({int(r['minilm_length'])} tokens at most) its recall is "
                     f"{r['recall_minilm']:.3f} at sparsity {r['sparsity_minilm']:.3f} "
                     f"({'meets' if r['recall_minilm'] >= recall else 'misses'} recall {recall:g}), "
                     f"{how(r['speedup_minilm'])} there")
        lines.append(line + ".")
    return lines
