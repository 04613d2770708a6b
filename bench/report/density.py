"""Grid density: does each family's sweep put a configuration near every sparsity level it spans?

A front is read at levels (0.80, 0.90, 0.95) by linear interpolation between its neighbouring points
(:mod:`bench.report.front_stats`); where two configurations are far apart around a level, the reading
is a straight line across a stretch nobody measured. The check here says where a sweep needs a point:
per dataset, backend, variant and series, the configurations' eval sparsities ``x_1 <= ... <= x_K``
*span* a level ``l`` when ``x_1 <= l <= x_K``, and a spanned level is a *gap* when no configuration
has ``|x_k - l| <= tol`` (default 0.02). Levels outside the span are not gaps: the family does not
reach them with this sweep (the front tables show a dash there). Every configuration counts, on the
front or not: the question is whether the grid is dense, not which point wins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.report.pareto import LEVELS

TOLERANCE = 0.02
GAP_COLUMNS = ["dataset", "backend", "variant", "series", "level", "below", "above", "configurations"]
_GROUP = ["dataset", "backend", "variant", "series"]


def grid_gaps(configs: pd.DataFrame, levels: Sequence[float] = LEVELS, tol: float = TOLERANCE,
              x: str = "sparsity") -> pd.DataFrame:
    """The spanned levels without a configuration within ``tol`` (module docstring).

    Parameters
    ----------
    configs : one row per configuration (:func:`bench.report.frames.configs_frame`): ``dataset``,
        ``backend``, ``variant``, ``series`` and the eval mean ``x``; NaN ``x`` take no part.
    levels, tol : the levels checked and the distance that counts as near (closed: ``|x - l| <= tol``,
        to within 1e-12 for float noise).

    Returns
    -------
    One row per gap, :data:`GAP_COLUMNS`: the group, the ``level``, the nearest sparsities ``below`` and
    ``above`` it, and the group's number of configurations; sorted by group and level. Empty: no gaps.
    """
    rows = []
    for key, group in configs.groupby(_GROUP, sort=True):
        xs = np.sort(group[x].to_numpy(float))
        xs = xs[np.isfinite(xs)]
        if not xs.size:
            continue
        for level in levels:
            spanned = xs[0] <= level <= xs[-1]
            if not spanned or np.any(np.abs(xs - level) <= tol + 1e-12):
                continue
            rows.append({**dict(zip(_GROUP, key)), "level": float(level), "below": float(xs[xs < level].max()),
                         "above": float(xs[xs > level].min()), "configurations": int(xs.size)})
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def grid_gap_text(gaps: pd.DataFrame, levels: Sequence[float] = LEVELS, tol: float = TOLERANCE) -> str:
    """One paragraph for the report: what the check is and whether it found gaps."""
    shown = ", ".join(f"{lv:g}" for lv in levels)
    intro = (f"**Grid density.** A level ({shown}) that a series' configurations span (some sparser, some "
             f"denser) but none comes within {tol:g} of, on eval sparsity: its front reading there is an "
             "interpolation across an unmeasured stretch, and the sweep (predictors/sweeps/) needs a point "
             "there (a calibrated budget `sp` puts one where it is asked).")
    if not len(gaps):
        return intro + " No such gaps in this run."
    return intro + f" {len(gaps)} gap(s):"
