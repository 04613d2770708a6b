"""From which sequence length a predictor is cheaper than dense attention: crossover tables of the
scaling and sparse-execution records (:func:`bench.report.frames.scaling_frame`,
:func:`bench.report.frames.sparse_exec_frame`), and the sentences on the sparse-execution speed goal."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


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
