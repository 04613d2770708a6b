"""The fair comparison the report leads with: each family's reported front, read at sparsity levels and
over a window, with bootstrap intervals; and the paper's claim on those fronts.

Per dataset, variant and series, the configurations selected on validation
(:func:`bench.report.selection.select_on_validation`) are scored on eval; their eval front is read at
each level (:func:`bench.report.front_stats.interpolate_on_front`, NaN outside the front) and averaged
over the covered part of the window (:func:`bench.report.front_stats.front_auc`, with the covered
share). Intervals are percentile bootstraps over eval samples, the sample indices shared by every
configuration and series of a dataset (paired), seeds resampled too for randomised families
(:func:`bench.report.claims.family_means`); the front is recomputed in every replicate. Only
higher-better ``y`` (recall, mass) are read this way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.evaluation.metric_table import higher_is_better
from bench.report import claims
from bench.report.front_stats import auc_batch, front_mask_batch, interpolate_batch, percentile_interval
from bench.report.pareto import LEVELS
from bench.report.selection import NO_SAMPLES, bootstrap_input, select_on_validation
from bench.report.series import is_reference

WINDOW = (0.8, 0.99)
READING_COLUMNS = ["dataset", "variant", "series", "reference", "metric", "statistic", "level", "estimate", "lo",
                   "hi", "covered", "selected_on", "intervals", "seeds", "configurations", "selected", "front"]


@dataclass
class SeriesFront:
    """One series' selected configurations on one dataset and variant, for metric ``y``.

    ``full``: ``[1, K, 2]`` eval means (sparsity, ``y``) of the ``K`` configurations ``names`` (sorted);
    ``reps``: ``[B, K, 2]`` the same in each bootstrap replicate; ``intervals``: whether the replicates
    resample real per-sample values (False: ``B = 1``, estimates only); ``selected_on``: validation or eval;
    ``configurations``: how many the series has in this variant before selection; ``seeds``: the seeds
    per selected configuration (more than 1 for a randomised family run with several: its estimates are
    means over seeds, and its replicates resample seeds too).
    """

    dataset: str
    variant: str
    series: str
    y: str
    names: list
    full: np.ndarray
    reps: np.ndarray
    intervals: bool
    selected_on: str
    configurations: int
    seeds: int = 1

    @property
    def front(self) -> tuple[np.ndarray, np.ndarray, list]:
        """The reported front: ``(x [F], y [F], names [F])`` of the eval front of the selected
        configurations, sorted by sparsity (a selected configuration may be dominated on eval)."""
        x, y = self.full[0, :, 0], self.full[0, :, 1]
        on = front_mask_batch(x[None], y[None])[0]
        order = np.lexsort((y[on], x[on]))
        return x[on][order], y[on][order], list(np.array(self.names, dtype=object)[on][order])


def series_fronts(points: pd.DataFrame, y: str = "recall", n_boot: int = 1000,
                  seed: int = 0) -> tuple[list[SeriesFront], list[str]]:
    """:class:`SeriesFront` of every dataset, variant and series, and the notes of datasets without intervals.

    A dataset without per-sample values (or whose per-sample values do not fit together: the reason
    is noted) gets estimates from the eval means and no intervals.
    """
    if not higher_is_better(y):
        raise BenchError(f"fronts are read for higher-better metrics only, not {y}")
    selection = select_on_validation(points, y)
    frame, intervals = bootstrap_input(points, selection, y)
    notes, out = [], []
    for ds, g in frame.groupby("dataset", sort=True):
        if intervals[ds]:
            try:
                means = claims.family_means(g, n_boot, seed, y)
            except BenchError as exc:  # e.g. configurations with different numbers of seeds or samples
                notes.append(f"{ds}: no intervals for {y} ({exc}).")
                intervals[ds] = False
        else:
            notes.append(f"{ds}: {NO_SAMPLES} (estimates only).")
        if not intervals[ds]:
            means = claims.family_means(_collapse(g, y), 1, seed, y)
        seeds = g.groupby(["variant", "family", "name"]).size().groupby(level=[0, 1]).max()
        out += [_front(selection, key, value, y, intervals[ds], int(seeds[key[1:]])) for key, value in means.items()]
    return out, notes


def _collapse(frame: pd.DataFrame, y: str) -> pd.DataFrame:
    """One row per configuration: the mean over seeds and samples, as one-element arrays."""
    rows = frame.groupby(["dataset", "family", "variant", "name"], sort=True).agg(
        sparsity=("sparsity", lambda v: np.array([np.mean(np.concatenate(list(v)))])),
        **{y: (y, lambda v: np.array([np.mean(np.concatenate(list(v)))]))})
    return rows.reset_index().assign(seed=np.nan)


def _front(selection: pd.DataFrame, key: tuple, value: tuple, y: str, intervals: bool, seeds: int) -> SeriesFront:
    ds, variant, series = key
    full, reps, names = value
    here = selection[(selection["dataset"] == ds) & (selection["series"] == series)]
    here = here if is_reference(series) else here[here["variant"] == variant]
    return SeriesFront(ds, variant, series, y, list(names), full, reps, intervals,
                       str(here["selected_on"].iloc[0]) if len(here) else "", len(here), seeds)


def _interval(reps: np.ndarray, intervals: bool, confidence: float) -> tuple[float, float]:
    return percentile_interval(reps, confidence) if intervals else (np.nan, np.nan)


def front_readings(fronts: list[SeriesFront], levels=LEVELS, window=WINDOW, confidence: float = 0.95) -> pd.DataFrame:
    """The tidy table of every number: one row per front and statistic (columns :data:`READING_COLUMNS`).

    ``statistic`` is ``at <level>`` (``level`` set; ``estimate`` the reading, NaN outside the front) or
    ``area`` (the mean of the front over the covered part of ``window``, ``covered`` its share); ``lo``,
    ``hi`` the percentile interval (NaN without per-sample values); ``intervals`` what it resamples
    (``bootstrap``: eval samples, and seeds too where ``seeds`` > 1; ``none``); ``configurations`` and ``selected``
    how many the series has and how many were selected; ``front`` the configurations on the reported
    front, ``;``-separated.
    """
    rows = []
    for f in fronts:
        fx, fy = f.full[..., 0], f.full[..., 1]
        rx, ry = f.reps[..., 0], f.reps[..., 1]
        est, reps = interpolate_batch(fx, fy, levels)[0], interpolate_batch(rx, ry, levels)
        auc, cov = auc_batch(fx, fy, *window)
        base = {"dataset": f.dataset, "variant": f.variant, "series": f.series, "reference": is_reference(f.series),
                "metric": f.y, "selected_on": f.selected_on, "intervals": "bootstrap" if f.intervals else "none",
                "seeds": f.seeds,
                "configurations": f.configurations, "selected": len(f.names), "front": "; ".join(f.front[2])}
        for i, lv in enumerate(levels):
            lo, hi = _interval(reps[:, i], f.intervals, confidence)
            rows.append({**base, "statistic": f"at {lv:g}", "level": float(lv), "estimate": float(est[i]),
                         "lo": lo, "hi": hi, "covered": np.nan})
        lo, hi = _interval(auc_batch(rx, ry, *window)[0], f.intervals, confidence)
        rows.append({**base, "statistic": f"area {window[0]:g}-{window[1]:g}", "level": np.nan,
                     "estimate": float(auc[0]), "lo": lo, "hi": hi, "covered": float(cov[0])})
    return pd.DataFrame(rows, columns=READING_COLUMNS)


def front_band(front: SeriesFront, grid, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(estimate, lo, hi)``, each ``[G]``: the front's reading at every ``grid`` sparsity and its
    pointwise percentile interval (NaN where the front does not reach, or without intervals)."""
    g = np.asarray(grid, dtype=float)
    est = interpolate_batch(front.full[..., 0], front.full[..., 1], g)[0]
    if not front.intervals:
        return est, np.full_like(est, np.nan), np.full_like(est, np.nan)
    reps = interpolate_batch(front.reps[..., 0], front.reps[..., 1], g)
    # percentile_interval's rule, all columns at once: a NaN replicate is below every number
    with np.errstate(invalid="ignore"):
        q = np.quantile(np.where(np.isnan(reps), -np.inf, reps), [(1 - confidence) / 2, (1 + confidence) / 2], axis=0)
    q = np.where(np.isfinite(q), q, np.nan)
    return est, q[0], q[1]


def claim_table(points: pd.DataFrame, levels=LEVELS, n_boot: int = 1000, seed: int = 0,
                confidence: float = 0.95) -> pd.DataFrame:
    """:func:`bench.report.claims.paper_claim_table` on the configurations selected on validation.

    A dataset without per-sample values is read on its eval means: numbers without intervals and the
    verdict ``"not measured: no per-sample scores"`` (``"not measured: no intervals"`` when its
    per-sample values do not fit together; :func:`series_fronts` notes why).
    """
    selection = select_on_validation(points, "recall")
    frame, intervals = bootstrap_input(points, selection, "recall")
    parts = []
    for ds, g in frame.groupby("dataset", sort=True):
        t, why = None, "no per-sample scores"
        if intervals[ds]:
            try:
                t = claims.paper_claim_table(g, levels, n_boot, seed, confidence)
            except BenchError:  # configurations with different numbers of seeds or samples
                why = "no intervals"
        if t is None:
            t = claims.paper_claim_table(_collapse(g, "recall"), levels, 1, seed, confidence)
            t[["sf_lo", "sf_hi", "baseline_lo", "baseline_hi"]] = np.nan
            t["verdict"] = f"not measured: {why}"
        parts.append(t)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=claims.CLAIM_COLUMNS)
