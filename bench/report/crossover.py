"""From which sequence length a predictor is cheaper than dense attention: crossover tables of the
scaling and sparse-execution records (:func:`bench.report.frames.scaling_frame`,
:func:`bench.report.frames.sparse_exec_frame`), and the sentences on the sparse-execution speed goal.

Formula patterns: a family of kind ``fixed`` whose prediction is a formula of the positions
(:data:`FORMULA_FAMILIES`: no data read, nothing drawn) does no measurable work when it predicts; the
timer measures the call overhead, and a ratio such as "1e6x faster" would be an artefact. The first
page lists them apart (:func:`crossover_table`). BigBird, also ``fixed``, draws its random blocks on
every call, a cost that grows with n, so it is timed like the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from bench.report.series import family_kind

FORMULA_FAMILIES = ("window", "fixed", "longformer")
FORMULA_NOTE = "prediction is a formula: no measurable cost"
TABLE_COLUMNS = ["family", "configuration", "backend", "crossover_n", "always", "n_max", "speedup_at_max"]


def cheaper_from(ns: list, cheaper: list[bool]) -> tuple[float, bool]:
    """``(crossover, always)`` of ascending lengths ``ns`` and whether the predictor was cheaper at each:
    the smallest ``n`` from which it is cheaper at that ``n`` and every larger one (NaN when not at the
    largest), and whether it is cheaper at every ``n``."""
    cross = math.nan
    for n, ok in zip(reversed(ns), reversed(cheaper)):
        if not ok:
            break
        cross = n
    return cross, all(cheaper)


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
        cross, always = cheaper_from(common, cheaper)
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


def _verdict(eff: float, rec: float, target: float, recall: float) -> str:
    met = eff >= target and rec >= recall
    return (f"{'meets' if met else 'misses'} the goal of efficiency {target:g} at recall {recall:g}")


def sparse_goal_sentences(goal: pd.DataFrame, target: float = 0.8, recall: float = 0.9) -> list[str]:
    """Each goal record in words: its speed-up, and whether its efficiency (speed-up over the pair-count
    ideal ``1 / (1 - sparsity)``) reaches ``target`` at ``recall``, on the timing data and on real MiniLM."""
    lines = []
    how = lambda x: f"{x:.2f}x faster" if x >= 1 else f"{1 / x:.2f}x slower"
    for _, r in goal.iterrows():
        line = (f"{r['method']} at n = {r['n']}: prediction + sparse execution is {how(r['speedup_min'])} "
                f"(medians: {how(r['speedup_median'])}) than dense {r['reference']}, at recall "
                f"{r['recall_synthetic']:.3f} and sparsity {r['sparsity_synthetic']:.3f} on the timing data: "
                f"efficiency {r['efficiency_synthetic']:.2f} of the ideal {1 / (1 - r['sparsity_synthetic']):.3g}x "
                f"({_verdict(r['efficiency_synthetic'], r['recall_synthetic'], target, recall)})")
        if not math.isnan(r["recall_minilm"]):
            line += (f"; on real MiniLM ({int(r['minilm_length'])} tokens at most) its recall is "
                     f"{r['recall_minilm']:.3f} at sparsity {r['sparsity_minilm']:.3f}, {how(r['speedup_minilm'])} "
                     f"there, efficiency {r['efficiency_minilm']:.2f} "
                     f"({_verdict(r['efficiency_minilm'], r['recall_minilm'], target, recall)})")
        lines.append(line + ".")
    return lines


REAL_COLUMNS = ["dataset", "method", "crossover_length", "always", "length_max", "n_mean_at_max", "speedup_at_max",
                "recall_at_max", "sparsity_at_max", "efficiency_at_max", "verdict"]


def real_crossover(real: pd.DataFrame) -> pd.DataFrame:
    """From which length each configuration's prediction + sparse execution beats dense attention on real
    heads (:func:`bench.report.frames.sparse_real_frame`: one row per dataset, length and configuration,
    the speed-up a ratio of minimum times measured in alternation on the same layer).

    ``crossover_length`` is the smallest length ``L`` (texts of at most ``L`` tokens) from which the
    speed-up exceeds 1 at ``L`` and every longer measured length (:func:`cheaper_from`; NaN when it does
    not at the longest); ``always`` when it does at every length. The ``*_at_max`` columns are those of
    the longest length: mean eval tokens, speed-up, the recall and sparsity reached on the timed layer,
    and the efficiency (speed-up times ``1 - sparsity``). Columns :data:`REAL_COLUMNS`.
    """
    rows = []
    for (dataset, method), g in real.groupby(["dataset", "method"], sort=True):
        g = g.sort_values("length")
        ok = [bool(x > 1) for x in g["speedup_min"]]
        cross, always = cheaper_from(list(g["length"]), ok)
        last = g.iloc[-1]
        verdict = (f"not faster up to L = {int(last['length'])}" if math.isnan(cross)
                   else f"faster at every measured length (from L = {int(cross)})" if always
                   else f"faster from L = {int(cross)}")
        rows.append({"dataset": dataset, "method": method, "crossover_length": cross, "always": always,
                     "length_max": int(last["length"]), "n_mean_at_max": float(last["n_mean"]),
                     "speedup_at_max": float(last["speedup_min"]), "recall_at_max": float(last["recall"]),
                     "sparsity_at_max": float(last["sparsity"]), "efficiency_at_max": float(last["efficiency"]),
                     "verdict": verdict})
    return pd.DataFrame(rows, columns=REAL_COLUMNS)


def real_crossover_sentences(table: pd.DataFrame, reference: str = "entmax15-topk") -> list[str]:
    """One sentence per row of :func:`real_crossover`."""
    how = lambda x: f"{x:.2f}x faster" if x >= 1 else f"{1 / x:.2f}x slower"
    return [f"{r['dataset']}, {r['method']}: {r['verdict']} than dense {reference} ({how(r['speedup_at_max'])} "
            f"at L = {r['length_max']}, {r['n_mean_at_max']:.0f} tokens on average, at recall "
            f"{r['recall_at_max']:.3f} and sparsity {r['sparsity_at_max']:.3f}: efficiency "
            f"{r['efficiency_at_max']:.2f})." for _, r in table.iterrows()]


def twin_sentences(twins: pd.DataFrame, within: float = 1.5) -> list[str]:
    """The FAISS twins in words (:func:`bench.report.frames.twin_frame`): one line per configuration with its
    two ratios (FAISS time over torch time: below 1, FAISS is faster) and share of identical codes, then
    whether FAISS keeps up: every ratio at most ``within`` (a FAISS twin may be faster without limit)."""
    lines = [f"{r['dataset']}, {r['name']}: FAISS over torch {r['fit_ratio']:.2f} to fit, {r['predict_ratio']:.2f} "
             f"to predict; codes identical in {r['codes_equal_fraction']:.4f} of entries" for _, r in twins.iterrows()]
    ratios = twins[["fit_ratio", "predict_ratio"]].to_numpy(dtype=float).ravel()
    ratios = ratios[np.isfinite(ratios)]
    if len(ratios):
        slow = int((ratios > within).sum())
        span = f"{ratios.min():.2f} to {ratios.max():.2f}"
        lines.append(f"every ratio at most {within:g} ({span}): FAISS keeps up with torch" if not slow
                     else f"{slow} of {len(ratios)} ratios above {within:g} ({span})")
    return lines


def method_families(configs: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """``{configuration name: (family, kind)}`` of a run's configurations
    (:func:`bench.report.frames.configs_frame`)."""
    if configs.empty:
        return {}
    return {n: (f, k) for n, f, k in zip(configs["name"], configs["family"], configs["kind"])}


def _family_of(method: str, families: Mapping[str, tuple[str, str]]) -> tuple[str, str]:
    """The family and kind of a timed method: from the run's configurations, else the longest known
    family name it starts with (``unknown`` when none)."""
    if method in families:
        return families[method]
    from predictors.registry import family_of

    known = dict(families.values())  # the run's own kinds win over the registry's
    hits = [f for f in known if method == f or method.startswith(f + "-")]
    family = max(hits, key=len) if hits else family_of(method)  # sf-kmeans before a family named sf
    if family is None:
        return "unknown", "unknown"
    return family, known.get(family) or family_kind(family)


def is_formula(family: str, kind: str) -> bool:
    """Whether a family's prediction is a formula of the positions (see the module docstring)."""
    return kind == "fixed" and family in FORMULA_FAMILIES


def crossover_table(cross: pd.DataFrame, families: Mapping[str, tuple[str, str]],
                    formula_apart: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`crossover` as one table, and the formula patterns apart.

    Returns ``(table, formula)``: ``table`` has one row per timed predictor, columns
    :data:`TABLE_COLUMNS` (``crossover_n`` and ``n_max`` integers, missing when not cheaper / not timed;
    ``speedup_at_max`` = dense time / its time at ``n_max``), sorted by family and configuration;
    ``formula`` (``family, configuration, backend, note``) the predictors of :func:`is_formula` when
    ``formula_apart`` (their times include prediction only: see the module docstring), else empty.
    """
    rows, apart = [], []
    for _, r in cross.iterrows():
        family, kind = _family_of(r["method"], families)
        if formula_apart and is_formula(family, kind):
            apart.append({"family": family, "configuration": r["method"], "backend": r["backend"],
                          "note": FORMULA_NOTE})
            continue
        rows.append({"family": family, "configuration": r["method"], "backend": r["backend"],
                     "crossover_n": r["crossover_n"], "always": bool(r["always"]), "n_max": r["n_max"],
                     "speedup_at_max": float(r["speedup_at_max"])})
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS).sort_values(["family", "configuration", "backend"],
                                                                  ignore_index=True)
    for c in ("crossover_n", "n_max"):
        table[c] = pd.array([None if pd.isna(v) else int(v) for v in table[c]], dtype="Int64")
    formula = pd.DataFrame(apart, columns=["family", "configuration", "backend", "note"])
    return table, formula.sort_values(["family", "configuration", "backend"], ignore_index=True)


def _times(v: float) -> str:
    """A ratio as a reader takes it in: three significant digits below 100, whole numbers from there
    (``1,600x``), never an exponent."""
    return f"{v:,.0f}x" if v >= 100 else f"{v:.3g}x"


def crossover_cells(table: pd.DataFrame, reference: str = "entmax15-topk") -> pd.DataFrame:
    """:func:`crossover_table` for reading: ``cheaper than dense <reference> from n`` ("128 (every
    measured n)", "256", "not up to n = 4096") and ``at the largest n`` ("140x faster at n = 4096")."""
    def cheaper(r) -> str:
        if pd.isna(r["crossover_n"]):
            return "not up to n = " + ("–" if pd.isna(r["n_max"]) else str(int(r["n_max"])))
        return f"{int(r['crossover_n'])}" + (" (every measured n)" if r["always"] else "")

    def ratio(r) -> str:
        v = r["speedup_at_max"]
        if math.isnan(v):
            return "–"
        return f"{_times(v)} faster at n = {int(r['n_max'])}" if v >= 1 else \
            f"{_times(1 / v)} slower at n = {int(r['n_max'])}"

    return pd.DataFrame({"family": table["family"], "configuration": table["configuration"],
                         "backend": table["backend"],
                         f"cheaper than dense {reference} from n": [cheaper(r) for _, r in table.iterrows()],
                         "at the largest n": [ratio(r) for _, r in table.iterrows()]})
