"""The one table of metrics: name, which way is better, default gate tolerance and axis label.

Scoring, downstream records, the regression gates, Pareto fronts, the notebook and the report all read
directions, tolerances and labels from here, so they never disagree about which way is better.

Kinds: ``pair`` metrics are computed per eval sample, layer and head (:mod:`bench.evaluation.metrics`);
``config`` metrics are derived per configuration (FLOPs, times, gold and tile sparsity); ``downstream``
metrics score the model run on a predicted graph (:mod:`bench.evaluation.downstream`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.errors import BenchError


@dataclass(frozen=True)
class Metric:
    """One metric: ``higher_is_better`` gives its direction; ``tolerance`` is the default quality gate's
    allowed worsening (``None``: not gated by default); ``label`` is the axis label of figures;
    ``phrase`` is how a sentence of the report names it (:func:`phrase`; empty: by its label)."""

    name: str
    kind: str
    higher_is_better: bool
    label: str
    tolerance: float | None = None
    phrase: str = ""


_ROWS = (
    Metric("recall", "pair", True, "recall of the gold graph", 0.01),
    Metric("sparsity", "pair", True, "sparsity (share of pairs not computed)", 0.01),
    Metric("precision", "pair", True, "precision"),
    Metric("exact", "pair", True, "share of exact rows", 0.02),
    Metric("mass", "pair", True, "entmax mass recall"),
    Metric("output_error", "pair", False, "relative output error (lower is better)"),
    Metric("gold_sparsity", "config", True, "gold sparsity"),
    Metric("block_sparsity", "config", True, "tile sparsity (share of B x B tiles not computed)"),
    Metric("flops_ratio", "config", False, "FLOPs / dense FLOPs (prediction + attention, lower is better)"),
    Metric("total_flops", "config", False, "FLOPs of prediction + attention"),
    Metric("predict_seconds", "config", False, "prediction time (s)"),
    # The cosine of the dense model to itself is 1 by definition: its sentences leave the reference out.
    Metric("bpc", "downstream", False, "held-out bits per byte (lower is better)",
           phrase="held-out bits per byte (dense entmax: {reference:.3f}; {direction})"),
    Metric("cosine", "downstream", True, "cosine to dense-entmax embeddings (higher is better)",
           phrase="cosine to the dense-entmax embeddings ({direction})"),
    # The downstream records' ``sparsity``: measured on the live queries and keys of the restricted run.
    Metric("effective_sparsity", "downstream", True,
           "effective sparsity of the restricted run (share of pairs not computed)"),
)
METRIC_TABLE: dict[str, Metric] = {m.name: m for m in _ROWS}
PAIR_METRICS: tuple[str, ...] = tuple(m.name for m in _ROWS if m.kind == "pair")


def metric(name: str) -> Metric:
    """The table's row for ``name``; an unknown name is an error listing the known ones."""
    if name not in METRIC_TABLE:
        raise BenchError(f"unknown metric {name!r}; known: {', '.join(METRIC_TABLE)}")
    return METRIC_TABLE[name]


def higher_is_better(name: str) -> bool:
    return metric(name).higher_is_better


def direction_words(name: str) -> str:
    """``"higher is better"`` or ``"lower is better"``: the direction of ``name`` in words."""
    return "higher is better" if higher_is_better(name) else "lower is better"


def phrase(name: str, reference: float = math.nan) -> str:
    """How a sentence names ``name``: its ``phrase`` with ``{reference}`` (the dense model's value) and
    ``{direction}`` (:func:`direction_words`) filled in, or its label when it has no phrase."""
    m = metric(name)
    return m.phrase.format(reference=reference, direction=direction_words(name)) if m.phrase else m.label


def axis_label(name: str) -> str:
    """The figure label of ``name``, or the name itself for a column outside the table."""
    return METRIC_TABLE[name].label if name in METRIC_TABLE else name


def default_gates() -> dict[str, dict]:
    """``{metric: {"tolerance", "higher_is_better"}}`` for every metric gated by default."""
    return {m.name: {"tolerance": m.tolerance, "higher_is_better": m.higher_is_better}
            for m in _ROWS if m.tolerance is not None}
