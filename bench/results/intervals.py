"""Percentile bootstrap primitives, and the interval of one configuration's mean over eval samples and seeds.

:func:`replicate_means` and :func:`percentile_interval` are what every interval of the report is made of
(:mod:`bench.report.front_stats` re-exports them); :func:`mean_interval` uses them for the interval a
gate baseline stores per configuration and metric (:func:`bench.results.gates.make_baseline`).

Scheme (the same as the report's, :func:`bench.report.front_stats.bootstrap_interval_seeds`): each
replicate draws the ``S`` eval samples with replacement and, with ``R > 1`` seeds, the ``R`` seeds with
replacement too, independently (the two-way bootstrap of a crossed design, Owen 2007); its value is
``mean_r mean_s values[seeds[r], samples[s]]``. With one seed only samples are resampled.
"""

from __future__ import annotations

import numpy as np

# Replicates gathered at once: bounds the [K, M, b, R, S] gather to about 32 MiB of float64.
_GATHER_ELEMENTS = 1 << 22


def replicate_means(values: np.ndarray, samples: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
    """Configuration means of each bootstrap replicate.

    Parameters
    ----------
    values : ``[K, M, R, S]`` per-sample values of ``K`` configurations, ``M`` metrics, ``R`` seeds and
        ``S`` eval samples.
    samples : ``[B, S]`` sample indices of each replicate (shared by every configuration).
    seeds : ``[B, R]`` seed indices of each replicate, or None for the seeds as they are.

    Returns
    -------
    ``[B, K, M]``: ``mean_r mean_s values[k, m, seeds[b, r], samples[b, s]]``. Each mean runs along a
    contiguous last axis, so a replicate's numbers do not depend on how many are gathered at once, and
    the identity replicate gives the full-sample mean bit for bit.
    """
    K, M, R, S = values.shape
    seeds = np.broadcast_to(np.arange(R), (len(samples), R)) if seeds is None else seeds
    out = np.empty((len(samples), K, M))
    step = max(1, _GATHER_ELEMENTS // max(1, K * M * R * S))
    for b0 in range(0, len(samples), step):
        g = values[:, :, seeds[b0:b0 + step, :, None], samples[b0:b0 + step, None, :]]  # [K, M, b, R, S]
        out[b0:b0 + step] = np.ascontiguousarray(g).mean(axis=-1).mean(axis=-1).transpose(2, 0, 1)
    return out


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The ``(1 - level)/2`` and ``(1 + level)/2`` quantiles (numpy's linear rule) of ``[B]`` replicates.

    A NaN replicate (the statistic was not measured: e.g. the front did not reach the level) is ordered
    below every number, the worst outcome for a higher-better statistic; a quantile that falls among
    the NaN replicates is NaN. So an interval is never computed from the lucky replicates only.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    r = np.asarray(replicates, dtype=float)
    if r.size == 0:
        return np.nan, np.nan
    # -inf for NaN: numpy's rule reads order statistics floor(h) and ceil(h); one -inf among them gives
    # -inf or NaN (inf - inf), which is "not measured"
    with np.errstate(invalid="ignore"):
        q = np.quantile(np.where(np.isnan(r), -np.inf, r), [(1 - level) / 2, (1 + level) / 2])
    lo, hi = (float(v) if np.isfinite(v) else np.nan for v in q)
    return lo, hi


def mean_interval(values, n_boot: int = 1000, seed=0, level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval of ``mean_r mean_s values[r, s]`` (module docstring).

    Parameters
    ----------
    values : ``[R, S]`` one metric per seed (row) and eval sample (column); sample ``s`` is the same eval
        sample in every row. NaN anywhere gives ``(nan, nan)``: an interval of the lucky replicates only
        would claim too much.
    n_boot : replicates (at least 1).
    seed : seed (or seed sequence) of numpy's default Generator: same input and seed, same interval.
    level : coverage in (0, 1).

    Returns
    -------
    ``(lo, hi)``: the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of the replicates.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or 0 in v.shape:
        raise ValueError(f"values must be [R, S] with R, S >= 1, got shape {v.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if np.isnan(v).any():
        return np.nan, np.nan
    R, S = v.shape
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, S, size=(n_boot, S))  # drawn first, as the report's bootstrap does
    seeds = rng.integers(0, R, size=(n_boot, R)) if R > 1 else None
    reps = replicate_means(v[None, None], samples, seeds)[:, 0, 0]
    return percentile_interval(reps, level)
