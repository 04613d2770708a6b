"""Selection on validation, reported on eval: which configurations make a family's reported front.

Every family is tuned on the validation samples and reported on the eval samples. Per dataset, series
(:mod:`bench.report.series`) and variant, the configurations on the *validation* Pareto front of ``y``
against sparsity are selected; the reported front is made of the *eval* numbers of those configurations
(:mod:`bench.report.fair`). Choosing on eval and reporting on eval favours the family with the most
configurations: the best of many noisy points is biased up, and the bias grows with the sweep.

points
    one row per predictor record (a configuration, and a seed for randomised families):
    :func:`points_frame`. A configuration is ``key`` (its name, with the backend when not torch): the
    torch and FAISS twins of a family are configurations of one front.
eval numbers
    a configuration's eval value of a metric is the mean of its per-sample values when the record has
    them (the quantity the bootstrap resamples: the interval and its estimate then agree; NaN when a
    sample is NaN, and the configuration takes no part), else the recorded mean.
fallbacks
    a series without validation means for every configuration is selected on eval, and says so
    (:func:`selection_notes`); a dataset without per-sample values for every selected configuration
    has estimates and no intervals.
reference series
    the baseline and the ceilings (:func:`bench.report.series.is_reference`) are selected once over all
    their configurations (variant :data:`POOLED`) and shown in every variant.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.evaluation.metric_table import higher_is_better
from bench.report.pareto import pareto_mask
from bench.report.series import family_kind, is_reference, series_label, variant_of

FAIR_METRICS = ("sparsity", "recall", "mass", "precision", "exact", "output_error")
FRONT_METRICS = ("recall", "mass", "precision", "exact")  # higher-better: read at sparsity levels
POOLED = "any"
NO_VALIDATION = "selected on eval: this run has no validation scores"
NO_SAMPLES = "no intervals: this run has no per-sample scores"
GUESSED_VARIANT = "variant inferred from the parameters (helped: w >= 3 and g >= 1): this run records no variant"


def config_key(name: str, backend: str) -> str:
    """A configuration's name in fronts and tables: the predictor name, ``name (faiss)`` for a twin."""
    return name if backend == "torch" else f"{name} ({backend})"


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _point(e: dict) -> dict:
    mean, val = e.get("mean") or {}, e.get("val") or {}
    per = e.get("per_sample") or {}
    samples = {m: np.asarray(per[m], dtype=float) for m in FAIR_METRICS if per.get(m) is not None}
    variant, recorded = variant_of(e.get("params"), e.get("variant"))
    series = series_label(e["family"], e.get("params"))
    row = {"dataset": e["dataset"], "backend": e["backend"], "name": e["name"],
           "key": config_key(e["name"], e["backend"]), "family": e["family"], "series": series,
           "kind": family_kind(e["family"], e.get("family_kind", e.get("kind"))), "variant": variant,
           "variant_recorded": recorded,
           "seed": _num(e.get("seed")), "reference": is_reference(series), "samples": samples or None}
    for m in FAIR_METRICS:
        s = samples.get(m)
        row[f"eval_{m}"] = float(s.mean()) if s is not None and s.size else _num(mean.get(m))
        row[f"val_{m}"] = _num((val.get("mean") or {}).get(m))
    return row


def points_frame(summary: dict) -> pd.DataFrame:
    """One row per predictor record of ``summary["predictors"]``.

    Columns: ``dataset, backend, name, key`` (:func:`config_key`), ``family, series, kind, variant,
    variant_recorded, seed`` (NaN when none), ``reference`` (baseline or ceiling), ``samples`` (None, or
    ``{metric: [S] float64}`` eval per-sample values), and ``eval_<m>``, ``val_<m>`` for every metric
    of :data:`FAIR_METRICS` (eval numbers as the module docstring says; validation means, NaN when the
    record has none).
    """
    rows = [_point(e) for e in summary.get("predictors", [])]
    cols = ["dataset", "backend", "name", "key", "family", "series", "kind", "variant", "variant_recorded",
            "seed", "reference", "samples", *(f"{p}_{m}" for m in FAIR_METRICS for p in ("eval", "val"))]
    return pd.DataFrame(rows, columns=cols)


def config_means(points: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (dataset, series, variant, key): ``eval_<m>`` and ``val_<m>`` averaged
    over its seeds (NaN when a seed's is), ``seeds`` (how many records), ``group`` (the variant it is
    selected in: :data:`POOLED` for reference series) and its ``backend, name, family, kind, reference``."""
    if points.empty:
        return points.assign(seeds=0, group="").drop(columns="samples")
    nums = [c for c in points.columns if c.startswith(("eval_", "val_"))]
    keys = ["dataset", "series", "variant", "key"]
    grouped = points.groupby(keys, sort=True)
    agg = grouped[nums].mean()
    agg = agg.mask(points[nums].isna().groupby([points[k] for k in keys], sort=True).any())  # NaN if a seed's is
    first = grouped[["backend", "name", "family", "kind", "reference"]].first()
    out = first.join(agg).reset_index()
    out["seeds"] = grouped.size().to_numpy()
    out["group"] = np.where(out["reference"], POOLED, out["variant"])
    return out


def select_on_validation(points: pd.DataFrame, y: str = "recall", x: str = "sparsity") -> pd.DataFrame:
    """:func:`config_means` with ``selected`` (on the front of ``y`` against ``x``) and ``selected_on``.

    Per dataset, series and ``group``: when every configuration has finite validation means of ``x``
    and ``y``, the selected ones are those on the validation front (:func:`bench.report.pareto.pareto_mask`,
    directions from the metric table) and ``selected_on`` is ``"validation"``; otherwise the eval front
    is used and ``selected_on`` is ``"eval"`` (:data:`NO_VALIDATION`).
    """
    conf = config_means(points)
    conf["selected"], conf["selected_on"] = False, ""
    dirs = (higher_is_better(x), higher_is_better(y))
    for _, g in conf.groupby(["dataset", "series", "group"], sort=True):
        vx, vy = g[f"val_{x}"].to_numpy(float), g[f"val_{y}"].to_numpy(float)
        on_val = bool(np.isfinite(vx).all() and np.isfinite(vy).all())
        px, py = (vx, vy) if on_val else (g[f"eval_{x}"].to_numpy(float), g[f"eval_{y}"].to_numpy(float))
        conf.loc[g.index, "selected"] = pareto_mask(px, py, *dirs)
        conf.loc[g.index, "selected_on"] = "validation" if on_val else "eval"
    return conf


def selection_notes(selection: pd.DataFrame, y: str = "recall") -> list[str]:
    """The selection fallbacks the report must say, one line per dataset: series selected on eval
    (:data:`NO_VALIDATION`); ``y`` (the metric ``selection`` was made for) is named unless recall."""
    notes = []
    what = "" if y == "recall" else f" ({y} fronts)"
    for ds, g in selection.groupby("dataset", sort=True):
        series = g.drop_duplicates(["series", "group"])
        on_eval = series[series["selected_on"] == "eval"]
        if len(on_eval) == len(series):
            notes.append(f"{ds}: {NO_VALIDATION} (every series){what}.")
        elif len(on_eval):
            notes.append(f"{ds}: {NO_VALIDATION} for " + ", ".join(sorted(set(on_eval["series"]))) + f"{what}.")
    return notes


def all_selection_notes(selections: dict) -> list[str]:
    """:func:`selection_notes` of ``{y: selection}`` (the first ``y`` leads), a later metric's note
    kept only where it says more than the first's (its series fell back alone)."""
    (y0, first), *rest = selections.items()
    notes = selection_notes(first, y0)
    for y, sel in rest:
        notes += [n for n in selection_notes(sel, y) if n.replace(f" ({y} fronts)", "") not in notes]
    return notes


def variant_notes(points: pd.DataFrame) -> list[str]:
    """One line when some records carry no variant (:data:`GUESSED_VARIANT`), saying how many."""
    guessed = points[~points["variant_recorded"].astype(bool)]
    if not len(guessed):
        return []
    which = "every record" if len(guessed) == len(points) else f"{len(guessed)} of {len(points)} records"
    return [f"{GUESSED_VARIANT} ({which})."]


def variants_of(points: pd.DataFrame, dataset: str) -> list[str]:
    """The variants a dataset is shown in: those of its non-reference records (``bare`` when it has none)."""
    own = points[(points["dataset"] == dataset) & ~points["reference"].astype(bool)]
    return sorted(set(own["variant"])) or ["bare"]


def bootstrap_input(points: pd.DataFrame, selection: pd.DataFrame, y: str = "recall") -> tuple[pd.DataFrame, dict]:
    """The selected configurations as the input of :func:`bench.report.claims.family_means`.

    Returns ``(frame, intervals)``: ``frame`` has one row per selected record (per seed) with columns
    ``dataset, family`` (the series), ``variant`` (a reference series once per variant of
    :func:`variants_of`), ``name`` (the key), ``seed``, ``sparsity`` and ``y`` (1-d arrays: the eval
    per-sample values, or for a dataset without them for every selected record and both metrics,
    one-element arrays of the eval means); ``intervals`` maps each dataset to whether it has them.
    """
    picked = selection[selection["selected"]]
    keys = ["dataset", "series", "variant", "key"]
    rows = points.merge(picked[[*keys, "group"]], on=keys)
    intervals, out = {}, []
    for ds, g in rows.groupby("dataset", sort=True):
        have = [s is not None and "sparsity" in s and y in s and s["sparsity"].shape == s[y].shape
                for s in g["samples"]]
        intervals[ds] = bool(all(have)) and len(g) > 0
        variants = variants_of(points, ds)
        for _, r in g.iterrows():
            if intervals[ds]:
                xs, ys = r["samples"]["sparsity"], r["samples"][y]
            else:
                xs, ys = np.array([r["eval_sparsity"]]), np.array([r[f"eval_{y}"]])
            for v in (variants if r["group"] == POOLED else [r["variant"]]):
                out.append({"dataset": ds, "family": r["series"], "variant": v, "name": r["key"],
                            "seed": r["seed"], "sparsity": xs, y: ys})
    return pd.DataFrame(out, columns=["dataset", "family", "variant", "name", "seed", "sparsity", y]), intervals
