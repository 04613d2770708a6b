"""Fair comparisons of families on their fronts: readings at sparsity levels, areas, bootstrap intervals.

A family is compared through its Pareto front of recall (or mass, or any metric) against sparsity, not
through one hand-picked configuration. Everything here is a pure function of per-configuration means
(or per-eval-sample values, for the bootstrap); :mod:`bench.report.claims` builds the paper's claim
table on top.

Definitions
-----------
front
    the points no other point dominates (:func:`bench.report.pareto.pareto_mask`), sorted by ``x``
    ascending. With both metrics higher-better, ``y`` is then non-increasing along the front:
    ``x_1 < x_2 < ... < x_F`` and ``y_1 >= y_2 >= ... >= y_F`` (identical points are kept once).
reading at a level ``l``
    ``f(l) = y_i + (y_{i+1} - y_i) (l - x_i) / (x_{i+1} - x_i)`` for ``x_i <= l <= x_{i+1}``,
    ``f(x_i) = y_i`` exactly, NaN outside ``[x_1, x_F]``. Linear interpolation between neighbours is
    monotone on a front. It is a *reading* of the front, not a configuration: a point between two
    achievable points is achievable only by randomised mixing of the two configurations (run one with
    probability ``t``, the other with ``1 - t``), which no report runs.
area
    ``A = (1 / |C|) int_C f(x) dx`` over the covered part ``C = [lo, hi] ∩ [x_1, x_F]`` of the
    window, together with the covered fraction ``|C| / (hi - lo)``: the mean recall of the front
    where it exists. ``A * covered`` is the area over the whole window counting the uncovered part as
    zero (a lower bound). NaN when ``|C| = 0`` (the front misses the window, or touches it at a point).

Batched forms (``*_batch``) take ``[B, K]`` arrays, one row per bootstrap replicate, and find the
front of every row at once; the single-front forms are the same code with ``B = 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from bench.evaluation.metric_table import higher_is_better
from bench.report.pareto import LEVELS, pareto_mask

# The resampling primitives live with the gates, which bootstrap a configuration's mean too; re-exported here.
from bench.results.intervals import percentile_interval, replicate_means

__all__ = ["FrontArea", "Interval", "auc_between", "auc_batch", "bootstrap_interval", "bootstrap_interval_seeds",
           "claim_verdict", "front_auc", "front_mask_batch", "front_points", "interpolate_batch",
           "interpolate_on_front", "metric_front", "percentile_interval", "recall_at", "replicate_means"]

class FrontArea(NamedTuple):
    """:func:`front_auc`: ``auc`` (mean of the front over the covered part) and ``covered`` (its share)."""

    auc: float
    covered: float


class Interval(NamedTuple):
    """A point estimate on the full sample and a percentile bootstrap interval ``[lo, hi]``."""

    estimate: float
    lo: float
    hi: float


# ---------------------------------------------------------------- one front


def front_points(x: Sequence[float], y: Sequence[float], x_higher: bool = True,
                 y_higher: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The Pareto front of ``y`` against ``x`` as two arrays sorted by ``x`` ascending.

    Parameters
    ----------
    x, y : ``[N]`` per-configuration means, e.g. sparsity and recall (or mass); NaN points take no part.
    x_higher, y_higher : directions (both higher-better for sparsity against recall or mass).

    Returns
    -------
    ``(front_x, front_y)``, each ``[F]`` float64, ``F <= N``: the non-dominated points, identical
    points once, sorted by ``x`` then ``y``. Empty when no point is finite.
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    on = pareto_mask(xa, ya, x_higher, y_higher)
    pts = np.unique(np.stack([xa[on], ya[on]], axis=1), axis=0)  # sorted by x, then y
    return pts[:, 0].copy(), pts[:, 1].copy()


def metric_front(df: pd.DataFrame, x: str = "sparsity", y: str = "recall") -> tuple[np.ndarray, np.ndarray]:
    """:func:`front_points` of two columns of ``df``, directions from the metric table."""
    return front_points(df[x].to_numpy(float), df[y].to_numpy(float), higher_is_better(x), higher_is_better(y))


def _check_front(front_x, front_y) -> tuple[np.ndarray, np.ndarray]:
    fx, fy = np.asarray(front_x, dtype=float), np.asarray(front_y, dtype=float)
    if fx.shape != fy.shape or fx.ndim != 1:
        raise ValueError(f"front_x and front_y must be 1-d of one length, got {fx.shape} and {fy.shape}")
    if not (np.isfinite(fx).all() and np.isfinite(fy).all()):
        raise ValueError("a front has finite points only (front_points drops NaN)")
    if np.any(np.diff(fx) <= 0):
        raise ValueError("front_x must be strictly increasing (front_points sorts and deduplicates)")
    return fx, fy


def interpolate_on_front(front_x: Sequence[float], front_y: Sequence[float],
                         levels: Sequence[float] = LEVELS) -> np.ndarray:
    """The front's reading at each level (module docstring): linear between the two neighbouring
    front points, exact at a front point, NaN outside ``[min front_x, max front_x]``.

    Parameters
    ----------
    front_x, front_y : ``[F]`` a front from :func:`front_points` (``front_x`` strictly increasing).
    levels : ``[L]`` levels of ``x`` (default 0.80, 0.90, 0.95).

    Returns
    -------
    ``[L]`` float64. Not a configuration: see the module docstring on randomised mixing.
    """
    fx, fy = _check_front(front_x, front_y)
    return _interp_rows(fx[None], fy[None], np.ones((1, fx.size), bool), levels)[0]


def front_auc(front_x: Sequence[float], front_y: Sequence[float], lo: float = 0.8, hi: float = 0.99) -> FrontArea:
    """Mean of the front's linear interpolation over the part of ``[lo, hi]`` it covers.

    ``auc = (1/|C|) sum_i int_{[x_i, x_{i+1}] ∩ C} f``, each piece a trapezoid, with
    ``C = [max(lo, x_1), min(hi, x_F)]``; ``covered = |C| / (hi - lo)``. ``auc`` is NaN when
    ``|C| = 0``; then ``covered`` is 0. Compare ``auc`` across families at equal ``covered`` only, or
    compare ``auc * covered`` (uncovered part counted as zero).

    Parameters
    ----------
    front_x, front_y : ``[F]`` a front from :func:`front_points`.
    lo, hi : the window, ``lo < hi``.
    """
    fx, fy = _check_front(front_x, front_y)
    auc, cov = _auc_rows(fx[None], fy[None], np.ones((1, fx.size), bool), lo, hi)
    return FrontArea(float(auc[0]), float(cov[0]))


# ---------------------------------------------------------------- many fronts at once (one per replicate)


def front_mask_batch(x: np.ndarray, y: np.ndarray, x_higher: bool = True, y_higher: bool = True) -> np.ndarray:
    """:func:`bench.report.pareto.pareto_mask` of every row: ``[B, K]`` inputs, ``[B, K]`` bool out.

    ``O(B K^2)`` time and memory (a few configurations per family, so ``K`` is small).
    """
    a = np.asarray(x, dtype=float) * (1.0 if x_higher else -1.0)
    b = np.asarray(y, dtype=float) * (1.0 if y_higher else -1.0)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"x and y must be 2-d of one shape, got {a.shape} and {b.shape}")
    ai, bi = a[:, :, None], b[:, :, None]  # the point under test, i
    aj, bj = a[:, None, :], b[:, None, :]  # every other point, j (NaN compares False: dominates nothing)
    dominated = ((aj >= ai) & (bj >= bi) & ((aj > ai) | (bj > bi))).any(axis=2)
    return np.isfinite(a) & np.isfinite(b) & ~dominated


def interpolate_batch(x: np.ndarray, y: np.ndarray, levels: Sequence[float] = LEVELS) -> np.ndarray:
    """:func:`interpolate_on_front` of the front of every row (both higher-better).

    Parameters
    ----------
    x, y : ``[B, K]`` configuration means of one family, one row per replicate.

    Returns
    -------
    ``[B, L]`` readings; NaN where a row's front does not span the level.
    """
    return _interp_rows(x, y, front_mask_batch(x, y), levels)


def auc_batch(x: np.ndarray, y: np.ndarray, lo: float = 0.8, hi: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """:func:`front_auc` of the front of every row: ``[B, K]`` in, ``(auc [B], covered [B])`` out."""
    return _auc_rows(x, y, front_mask_batch(x, y), lo, hi)


def _interp_rows(x: np.ndarray, y: np.ndarray, ok: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Readings at ``levels`` of the points ``ok`` of each row (a front: ``y`` is a function of ``x``).

    The left neighbour is the largest ``x <= l``, the right one the smallest ``x >= l``; no sorting.
    """
    lv = np.asarray(levels, dtype=float).reshape(1, 1, -1)
    if x.shape[1] == 0:  # no points: nothing to read
        return np.full((x.shape[0], lv.size), np.nan)
    xs, okl = x[:, :, None], ok[:, :, None]
    below, above = okl & (xs <= lv), okl & (xs >= lv)
    li = np.where(below, xs, -np.inf).argmax(axis=1)  # [B, L]
    ri = np.where(above, xs, np.inf).argmin(axis=1)
    xl, yl = np.take_along_axis(x, li, axis=1), np.take_along_axis(y, li, axis=1)
    xr, yr = np.take_along_axis(x, ri, axis=1), np.take_along_axis(y, ri, axis=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        v = yl + (yr - yl) * ((lv[0] - xl) / (xr - xl))
    v = np.where(xr == xl, yl, v)  # the level is a front point: its value, exactly
    return np.where(below.any(axis=1) & above.any(axis=1), v, np.nan)


def _auc_rows(x: np.ndarray, y: np.ndarray, ok: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoids of consecutive points ``ok`` of each row, clipped to ``[lo, hi]`` (see :func:`front_auc`)."""
    if not lo < hi:
        raise ValueError(f"the window needs lo < hi, got [{lo}, {hi}]")
    if x.shape[1] == 0:  # no points: nothing covered
        return np.full(x.shape[0], np.nan), np.zeros(x.shape[0])
    order = np.argsort(np.where(ok, x, np.inf), axis=1, kind="stable")  # points not ok go last
    xs = np.take_along_axis(np.where(ok, x, np.nan), order, axis=1)
    ys = np.take_along_axis(y, order, axis=1)
    x0, x1, y0, y1 = xs[:, :-1], xs[:, 1:], ys[:, :-1], ys[:, 1:]
    a, b = np.maximum(x0, lo), np.minimum(x1, hi)
    seg = np.isfinite(x0) & np.isfinite(x1) & (b > a)  # NaN compares False: padding drops out
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        dx, dy = x1 - x0, y1 - y0  # shares of the segment, not slopes: no overflow on a tiny dx
        piece = (b - a) * ((y0 + dy * ((a - x0) / dx)) + (y0 + dy * ((b - x0) / dx))) / 2
    area = np.where(seg, piece, 0.0).sum(axis=1)
    xmin, xmax = np.where(ok, x, np.inf).min(axis=1), np.where(ok, x, -np.inf).max(axis=1)
    cov = np.maximum(0.0, np.minimum(hi, xmax) - np.maximum(lo, xmin))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        auc = np.where(cov > 0, area / cov, np.nan)
    return auc, cov / (hi - lo)


# ---------------------------------------------------------------- statistics for the bootstrap

Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x [B, K], y [B, K]) -> [B]


def recall_at(level: float) -> Statistic:
    """The statistic "front reading at ``level``" (:func:`interpolate_batch`), for :func:`bootstrap_interval`."""
    return lambda x, y: interpolate_batch(x, y, [level])[:, 0]


def auc_between(lo: float = 0.8, hi: float = 0.99) -> Statistic:
    """The statistic "front mean over the covered part of ``[lo, hi]``" (:func:`auc_batch`)."""
    return lambda x, y: auc_batch(x, y, lo, hi)[0]


# ---------------------------------------------------------------- percentile bootstrap over eval samples


def _stack(per_sample: Mapping[str, np.ndarray], seeded: bool) -> np.ndarray:
    """``{config: [S, M]}`` (or ``[R, S, M]`` when ``seeded``) to ``[K, M, R, S]``, checking shapes."""
    if not per_sample:
        raise ValueError("no configurations to bootstrap")
    arrs = [np.asarray(v, dtype=float) for v in per_sample.values()]
    arrs = arrs if seeded else [a[None] for a in arrs]
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1 or arrs[0].ndim != 3 or arrs[0].shape[2] < 2 or 0 in arrs[0].shape:
        want = "[R, S, 2]" if seeded else "[S, 2]"
        raise ValueError(f"every configuration needs one array of shape {want} (sparsity, recall), got "
                         f"{sorted({a.shape[int(not seeded):] for a in arrs})}")
    return np.stack(arrs).transpose(0, 3, 1, 2)


def _bootstrap(values: np.ndarray, statistic: Statistic, n_boot: int, seed: int, level: float) -> Interval:
    """Estimate and interval of ``statistic`` on ``[K, M, R, S]`` values (see :func:`bootstrap_interval`)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    _, _, R, S = values.shape
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, S, size=(n_boot, S))  # drawn first: seeds=1 reads the same stream
    seeds = rng.integers(0, R, size=(n_boot, R)) if R > 1 else None
    full = replicate_means(values, np.arange(S)[None])
    est = float(statistic(full[..., 0], full[..., 1])[0])
    reps = replicate_means(values, samples, seeds)
    return Interval(est, *percentile_interval(statistic(reps[..., 0], reps[..., 1]), level))


def bootstrap_interval(per_sample: Mapping[str, np.ndarray], statistic: Statistic, n_boot: int = 1000,
                       seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap over eval samples of a front statistic of one family.

    Each replicate ``b`` draws ``S`` sample indices with replacement, the same for every configuration
    (paired), recomputes each configuration's mean sparsity ``x_bk`` and recall ``y_bk``, and the
    statistic of the front of ``(x_b, y_b)`` (the front is recomputed per replicate, so a configuration
    may enter or leave it). Returns the statistic on the full sample and the :func:`percentile_interval`
    of the ``n_boot`` replicates. A configuration with a NaN sample has NaN means and takes no part.

    Parameters
    ----------
    per_sample : ``{config: [S, 2]}``, columns (sparsity, recall) per eval sample (any second metric,
        e.g. mass, works alike); ``S`` equal for all, sample ``s`` the same sample in every array.
    statistic : ``(x [B, K], y [B, K]) -> [B]``, e.g. :func:`recall_at` ``(0.9)`` or :func:`auc_between`.
    n_boot, seed, level : replicates, the seed of numpy's default Generator (same inputs and seed: the
        same interval, bit for bit), and the interval's coverage.
    """
    return _bootstrap(_stack(per_sample, seeded=False), statistic, n_boot, seed, level)


def bootstrap_interval_seeds(per_seed: Mapping[str, np.ndarray], statistic: Statistic, n_boot: int = 1000,
                             seed: int = 0, level: float = 0.95) -> Interval:
    """:func:`bootstrap_interval` for a randomised family run with ``R`` seeds per configuration.

    Scheme: each replicate resamples the ``S`` eval samples *and* the ``R`` seeds with replacement,
    independently (the two-way "pigeonhole" bootstrap of a crossed design, Owen 2007), the same indices
    for every configuration; a configuration's mean is ``mean_r mean_s`` over the drawn seeds and samples.
    Why not average the seeds within each replicate: that treats the few seeds run (2-5 here) as fixed
    and leaves the seed-to-seed spread out of the interval, so a randomised family would look as certain
    as a deterministic one. The two-way scheme keeps both sources (it is mildly conservative), and with
    ``R = 1`` it is :func:`bootstrap_interval` bit for bit (sample indices are drawn first).

    Parameters
    ----------
    per_seed : ``{config: [R, S, 2]}``, seed ``r`` of every configuration in row ``r`` (same ``R``, ``S``).
    statistic, n_boot, seed, level : as in :func:`bootstrap_interval`.
    """
    return _bootstrap(_stack(per_seed, seeded=True), statistic, n_boot, seed, level)


# ---------------------------------------------------------------- verdicts


def claim_verdict(a: Sequence[float], b: Sequence[float]) -> str:
    """Whether "a is better than b" (higher is better) holds, from two ``(estimate, lo, hi)``.

    ``"holds"`` when ``lo_a > hi_b``, ``"does not hold"`` when ``hi_a < lo_b``, ``"within noise"``
    when the closed intervals overlap (touching counts as overlap), ``"not measured"`` when any of the
    six numbers is NaN. Non-overlap of two 95% intervals is a conservative test of a difference.
    """
    (ea, la, ha), (eb, lb, hb) = a, b
    if any(np.isnan(float(v)) for v in (ea, la, ha, eb, lb, hb)):
        return "not measured"
    if la > hb:
        return "holds"
    if ha < lb:
        return "does not hold"
    return "within noise"
