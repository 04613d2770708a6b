"""The first page in words and Markdown-ready tables: front readings per family and level, the paper's
claim with its verdicts, from the numbers of :mod:`bench.report.fair` (nothing is computed here but
text).

Cells read ``0.523 [0.49, 0.56]``: the estimate (three decimals) and its 95% bootstrap interval (two);
an estimate alone when the run has no per-sample values; an en dash where the front does not reach.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.report.claims import PAPER_BASELINES, SPARSEFINDER
from bench.report.facets import facet_of, facet_order
from bench.report.series import BASELINE_SERIES, is_ceiling

CLAIM = ("Sparsefinder's learned variants give better sparsity-recall trade-offs than Reformer, Routing, "
         "BigBird and Longformer")
VARIANT_WORDS = {"bare": "bare: each predictor alone",
                 "helped": "helped: with the paper's helper, a window of w >= 3 and the first token"}


def interval_cell(estimate: float, lo: float, hi: float, covered: float = math.nan) -> str:
    """``0.523 [0.49, 0.56]`` (``over 75%`` of the window added for an area); ``0.523`` without an
    interval; an en dash without an estimate."""
    if estimate is None or math.isnan(estimate):
        return "–"
    text = f"{estimate:.3f}"
    if not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo:.2f}, {hi:.2f}]"
    elif not (math.isnan(lo) and math.isnan(hi)):  # one side unmeasured: the replicates often miss the level
        text += f" [{'–' if math.isnan(lo) else f'{lo:.2f}'}, {'–' if math.isnan(hi) else f'{hi:.2f}'}]"
    if not math.isnan(covered):
        text += f" over {covered:.0%}"
    return text


def series_name(series: str) -> str:
    """A table's row label: the baseline and the ceilings say what they are."""
    if series == BASELINE_SERIES:
        return f"{series} (baseline)"
    return f"{series} (ceiling, not cheap)" if is_ceiling(series) else series


def _row_order(series: str) -> tuple:
    facet = facet_of(series)
    return (3 if facet is None else facet, 1 if is_ceiling(series) else 0, facet_order(series))


def level_table(readings: pd.DataFrame, dataset: str, variant: str, metric: str = "recall") -> pd.DataFrame:
    """One dataset and variant of :func:`bench.report.fair.front_readings`: rows = families (the paper's,
    today's, fixed patterns, then the baseline and the ceilings; a family run with several seeds says how
    many, ``reformer (3 seeds)``: :func:`interval_words`), columns = the levels, the area and how many
    configurations were selected; cells of :func:`interval_cell`."""
    sub = readings[(readings["dataset"] == dataset) & (readings["variant"] == variant)
                   & (readings["metric"] == metric)]
    rows = []
    for series in sorted(set(sub["series"]), key=_row_order):
        g = sub[sub["series"] == series]
        seeds = int(g["seeds"].max()) if "seeds" in g else 1
        row = {"family": series_name(series) + (f" ({seeds} seeds)" if seeds > 1 else "")}
        for _, r in g.iterrows():
            label = f"sparsity {r['level']:g}" if not math.isnan(r["level"]) else r["statistic"]
            row[label] = interval_cell(r["estimate"], r["lo"], r["hi"], r["covered"])
        first = g.iloc[0]
        row["selected"] = f"{first['selected']} of {first['configurations']} on {first['selected_on']}"
        rows.append(row)
    return pd.DataFrame(rows)


def interval_words(readings: pd.DataFrame) -> str:
    """What the intervals of ``readings`` (:func:`bench.report.fair.front_readings`) resample, in one
    sentence: eval samples, and for the families run with several seeds (named), seeds too."""
    seeded = readings[readings["seeds"] > 1] if "seeds" in readings else readings.iloc[:0]
    text = "Intervals: 95% percentile bootstrap over eval samples (paired: the same draws for every family)"
    if not len(seeded):
        return text + "; every family ran with one seed."
    names = ", ".join(sorted(set(seeded["series"])))
    counts = sorted(set(seeded["seeds"].astype(int)))
    return (text + f"; for the randomised families run with {'/'.join(map(str, counts))} seeds per configuration "
            f"({names}), over eval samples and seeds jointly, their estimate the mean over seeds.")


def _side(family, est, lo, hi) -> str:
    if family is None or (isinstance(family, float) and math.isnan(family)):
        return "– (no front reaches it)"
    return f"{family} {interval_cell(est, lo, hi)}"


def claim_cells(claims: pd.DataFrame) -> pd.DataFrame:
    """:func:`bench.report.fair.claim_table` for reading: ``dataset, variant, sparsity``, the best
    Sparsefinder family and the best baseline with their readings, and the verdict."""
    rows = [{"dataset": r["dataset"], "variant": r["variant"], "sparsity": f"{r['level']:g}",
             "best Sparsefinder": _side(r["sf_family"], r["sf_recall"], r["sf_lo"], r["sf_hi"]),
             "best baseline": _side(r["baseline_family"], r["baseline_recall"], r["baseline_lo"], r["baseline_hi"]),
             "verdict": r["verdict"]} for _, r in claims.iterrows()]
    return pd.DataFrame(rows, columns=["dataset", "variant", "sparsity", "best Sparsefinder", "best baseline",
                                       "verdict"])


def claim_summary(claims: pd.DataFrame) -> list[str]:
    """One line per dataset and variant: how many levels the claim holds at, fails at, is within noise
    at, and which of the claim's families the run lacks."""
    lines = []
    for (ds, variant), g in claims.groupby(["dataset", "variant"], sort=True):
        counts = g["verdict"].value_counts(sort=False)
        line = f"{ds}, {variant}: " + "; ".join(f"{v} ({n} of {len(g)} levels)" for v, n in counts.items())
        missing = g["missing"].iloc[0]
        if missing:
            line += f" (not in this variant: {missing})"
        lines.append(line + ".")
    return lines


def claim_intro(levels) -> str:
    """The sentence above the claim table: the claim, how it is tested."""
    sf, base = ", ".join(SPARSEFINDER), ", ".join(PAPER_BASELINES)
    return (f"**The paper's claim**: \"{CLAIM}\". Per dataset, variant and sparsity level "
            f"({', '.join(f'{lv:g}' for lv in levels)}): the best of {sf} against the best of {base}, each "
            "read on its front (configurations selected on validation, numbers on eval), with 95% bootstrap "
            "intervals over eval samples, and over seeds too for randomised families run with several (the "
            "best family chosen again in every replicate). *holds*: the "
            "Sparsefinder interval lies above the baseline's; *does not hold*: below; *within noise*: they "
            "overlap.")
