"""Per-head numbers of the report: ``[layers x heads]`` grids, gold density, the hardest and densest heads,
and which configuration's grid the report shows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.evaluation.metric_table import higher_is_better
from bench.report.pareto import best_at_levels
from bench.report.series import is_ceiling


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
