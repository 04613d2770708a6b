"""The paper's claim, measured with intervals: Sparsefinder's learned variants against the efficient baselines.

The claim: "Sparsefinder's learned variants give better sparsity-recall trade-offs than Reformer,
Routing, BigBird and Longformer". Per dataset, helper variant and sparsity level, the best Sparsefinder
family's front reading (:func:`bench.report.front_stats.interpolate_on_front`) is set against the best
baseline family's, each with a percentile bootstrap interval over eval samples, and
:func:`bench.report.front_stats.claim_verdict` says whether the claim holds there.

"Best" is chosen inside every replicate (the statistic is ``max_f reading_f``, the max over the group's
families), so the interval of the winner includes the luck of being chosen. All families of a dataset
share the replicate's sample indices (they are scored on the same eval samples), so the two sides are
paired.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.report.front_stats import claim_verdict, interpolate_batch, percentile_interval, replicate_means
from bench.report.pareto import LEVELS

SPARSEFINDER = ("sf-dist", "sf-quant", "sf-kmeans")
PAPER_BASELINES = ("reformer", "routing", "bigbird", "longformer")
INPUT_COLUMNS = ("dataset", "family", "variant", "name", "sparsity", "recall")
CLAIM_COLUMNS = ["dataset", "variant", "level", "sf_family", "sf_recall", "sf_lo", "sf_hi", "baseline_family",
                 "baseline_recall", "baseline_lo", "baseline_hi", "verdict", "missing"]


def _key(*parts: str) -> list[int]:
    # a seed per dataset (and family) from its name, so adding a dataset or family moves no other's draws
    return [zlib.crc32(str(p).encode()) for p in parts]


def _family_values(rows: pd.DataFrame, where: str, y: str = "recall") -> np.ndarray:
    """``[K, 2, R, S]`` (sparsity, ``y``) of one family's configurations, seeds sorted, names sorted."""
    per_config = []
    for name, g in rows.groupby("name", sort=True):
        g = g.sort_values("seed", kind="stable") if "seed" in g else g
        if "seed" not in g and len(g) > 1:
            raise BenchError(f"{where}: configuration {name!r} appears {len(g)} times (add a seed column "
                             "for several seeds)")
        cells = [np.asarray(v, dtype=float) for col in ("sparsity", y) for v in g[col]]
        if len({c.shape for c in cells}) != 1 or cells[0].ndim != 1:
            raise BenchError(f"{where}: {name!r} needs 1-d per-sample arrays of one length in sparsity and {y}")
        per_config.append(np.stack(cells).reshape(2, len(g), -1))
    if len({v.shape for v in per_config}) != 1:
        shapes = sorted({v.shape[1:] for v in per_config})
        raise BenchError(f"{where}: configurations differ in (seeds, samples): {shapes}")
    return np.stack(per_config)


def _check_input(df: pd.DataFrame, y: str = "recall") -> None:
    need = tuple(c if c != "recall" else y for c in INPUT_COLUMNS)
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise BenchError(f"the claim table needs columns {', '.join(need)}; missing: {', '.join(missing)}")


def family_means(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                 y: str = "recall") -> dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray, list[str]]]:
    """Configuration means of every (dataset, variant, family): full sample and bootstrap replicates.

    Per dataset one generator, ``default_rng([seed, crc32(dataset)])``, draws the ``[n_boot, S]`` sample
    indices shared by all its families; a family with ``R > 1`` seeds per configuration also resamples
    seeds (``[n_boot, R]`` from ``default_rng([seed, crc32(dataset), crc32(variant), crc32(family)])``,
    shared by its configurations; the two-way scheme of
    :func:`bench.report.front_stats.bootstrap_interval_seeds`).

    Parameters
    ----------
    df : see :func:`paper_claim_table`; ``y`` names the second per-sample column (``recall``, ``mass``).

    Returns
    -------
    ``{(dataset, variant, family): (full [1, K, 2], replicates [n_boot, K, 2], names [K])}``: per
    configuration (names sorted) the mean sparsity and ``y`` of the full sample and of each replicate.
    """
    _check_input(df, y)
    out = {}
    for ds, drows in df.groupby("dataset", sort=True):
        groups = {key: (_family_values(g, f"{ds}/{key[0]}/{key[1]}", y), sorted(set(g["name"])))
                  for key, g in drows.groupby(["variant", "family"], sort=True)}
        sizes = {v.shape[3] for v, _ in groups.values()}
        if len(sizes) != 1:
            raise BenchError(f"{ds}: families have different numbers of eval samples {sorted(sizes)}")
        S = sizes.pop()
        samples = np.random.default_rng([seed, *_key(ds)]).integers(0, S, size=(n_boot, S))
        for (variant, family), (values, names) in groups.items():
            R = values.shape[2]
            seeds = (np.random.default_rng([seed, *_key(ds, variant, family)]).integers(0, R, size=(n_boot, R))
                     if R > 1 else None)
            out[(ds, variant, family)] = (replicate_means(values, np.arange(S)[None]),
                                          replicate_means(values, samples, seeds), names)
    return out


def family_replicates(df: pd.DataFrame, levels: Sequence[float] = LEVELS, n_boot: int = 1000,
                      seed: int = 0) -> dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]:
    """Front readings at ``levels`` of every (dataset, variant, family): full sample and replicates
    (the configuration means of :func:`family_means`, their fronts read at each level).

    Parameters
    ----------
    df : see :func:`paper_claim_table`.

    Returns
    -------
    ``{(dataset, variant, family): (estimate [L], replicates [n_boot, L])}``.
    """
    return {key: (interpolate_batch(full[..., 0], full[..., 1], levels)[0],
                  interpolate_batch(reps[..., 0], reps[..., 1], levels))
            for key, (full, reps, _) in family_means(df, n_boot, seed).items()}


def family_intervals(df: pd.DataFrame, levels: Sequence[float] = LEVELS, n_boot: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> pd.DataFrame:
    """One row per dataset, variant, family and level: ``estimate`` (the front reading on the full
    sample), ``lo``, ``hi`` (:func:`bench.report.front_stats.percentile_interval` of the replicates of
    :func:`family_replicates`). ``df`` as in :func:`paper_claim_table`."""
    rows = [{"dataset": ds, "variant": variant, "family": family, "level": float(lv), "estimate": float(est[i]),
             **dict(zip(("lo", "hi"), percentile_interval(reps[:, i], confidence)))}
            for (ds, variant, family), (est, reps) in family_replicates(df, levels, n_boot, seed).items()
            for i, lv in enumerate(levels)]
    return pd.DataFrame(rows, columns=["dataset", "variant", "family", "level", "estimate", "lo", "hi"])


def _best_of(found: dict, families: Sequence[str], i: int, confidence: float) -> tuple[str | None, tuple]:
    """The best family of ``families`` at level index ``i`` and the interval of ``max_f reading_f``.

    ``found``: ``{family: (estimate [L], replicates [B, L])}`` of one dataset and variant. Ties of the
    estimate go to the first family in ``families`` order; NaN readings take no part (fmax).
    """
    present = [f for f in families if f in found]
    est = np.array([found[f][0][i] for f in present], dtype=float)
    if not np.isfinite(est).any():
        return None, (np.nan, np.nan, np.nan)
    reps = np.fmax.reduce(np.stack([found[f][1][:, i] for f in present]), axis=0)
    return present[int(np.nanargmax(est))], (float(np.nanmax(est)), *percentile_interval(reps, confidence))


def paper_claim_table(df: pd.DataFrame, levels: Sequence[float] = LEVELS, n_boot: int = 1000, seed: int = 0,
                      confidence: float = 0.95, sparsefinder: Sequence[str] = SPARSEFINDER,
                      baselines: Sequence[str] = PAPER_BASELINES) -> pd.DataFrame:
    """The paper's claim per dataset, helper variant and sparsity level, with intervals and a verdict.

    Parameters
    ----------
    df : tidy, one row per configuration (per configuration and seed for randomised families), columns

        - ``dataset``, ``family`` (e.g. ``sf-dist``, ``reformer``), ``variant`` (``"bare"`` or
          ``"helped"``: run alone or with the helper), ``name`` (the configuration);
        - ``sparsity``, ``recall``: each cell a 1-d array ``[S]``, per eval sample the mean over layers
          and heads; sample ``s`` is the same eval sample in every row of a dataset;
        - optional ``seed``: rows that share dataset, variant, family and name are seeds of one
          configuration (the same number of seeds for every configuration of a family); without it,
          each of those keys appears once.
    levels : sparsity levels of the readings.
    n_boot, seed, confidence : replicates, seed (:func:`family_replicates`) and interval coverage.
    sparsefinder, baselines : the two sides of the claim.

    Returns
    -------
    One row per dataset x variant x level, columns :data:`CLAIM_COLUMNS`: the best Sparsefinder family
    and its reading ``sf_recall`` with ``[sf_lo, sf_hi]`` (the interval of ``max_f reading_f`` over that
    side, see the module docstring), the same for the best baseline, ``verdict`` of
    :func:`bench.report.front_stats.claim_verdict` for "Sparsefinder is better", and ``missing``: the
    claim's families absent from that dataset and variant (comma-separated, "" when none). A side
    whose fronts all miss the level has no family (None) and NaN numbers: "not measured".
    """
    _check_input(df)
    sides = (*sparsefinder, *baselines)
    found = family_replicates(df[df["family"].isin(sides)], levels, n_boot, seed)
    rows = []
    for ds, variant in sorted(set(zip(df["dataset"], df["variant"]))):  # every pair, claim families or not
        here = {f: r for (d, v, f), r in found.items() if (d, v) == (ds, variant)}
        missing = ", ".join(f for f in sides if f not in here)
        for i, lv in enumerate(levels):
            sf_fam, sf = _best_of(here, sparsefinder, i, confidence)
            base_fam, base = _best_of(here, baselines, i, confidence)
            rows.append(dict(zip(CLAIM_COLUMNS, (ds, variant, float(lv), sf_fam, *sf, base_fam, *base,
                                                 claim_verdict(sf, base), missing))))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
