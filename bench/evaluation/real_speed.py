"""Prediction plus sparse execution against dense entmax attention on one layer of real attention.

What the sparse-execution benchmarks on real heads share (``bench_sparse_exec.py``'s goal on MiniLM, and
``bench_sparse_real.py`` over lengths and datasets): a fitted predictor and the eval part of a prepared
dataset, of which one layer (the middle one) is timed, every eval sample at its own length:

* dense: :func:`bench.execution.dense.dense_attention` of ``reference`` (``entmax15-topk``, the fastest
  exact dense entmax here, ``P V`` included) sample by sample on its valid tokens;
* sparse: the predictor's graph of that layer, then :func:`~bench.execution.sparse_exec.sparse_entmax_attention`
  on it (the padded batch with its lengths): prediction included.

The two run in alternation (:func:`bench.execution.timing.timed_rounds`), so the speed-up is a ratio
measured in one run: ``speedup_min`` = min dense seconds / min sparse seconds. The quality of the same
layer, read from the scores every caller computes anyway (:func:`scored_layer`), gives the efficiency
``speedup_min * (1 - sparsity)``: 1 when every predicted pair costs what a pair costs dense
(:func:`bench.report.frames.efficiency`).
"""

from __future__ import annotations

import statistics

import torch

from bench.evaluation.metrics import macro_average, score_layer
from bench.execution.dense import dense_attention
from bench.execution.plan import UnsupportedGraph, sparse_plan
from bench.execution.sparse_exec import sparse_entmax_attention
from bench.execution.timing import timed_rounds

REFERENCE = "entmax15-topk"
QUALITY = ("recall", "sparsity", "output_error", "mass")


def layer_quality(view, gold, graph) -> dict[str, float]:
    """``recall``, ``sparsity``, ``output_error`` and ``mass`` of ``graph`` on one layer ``view`` against
    its ``gold``: per head over samples (NaN-aware), then the mean over heads."""
    res = macro_average(score_layer(view, gold, graph))
    return {m: res[m].mean().item() for m in QUALITY}


def scored_layer(scored: dict, layer: int) -> dict[str, float]:
    """:func:`layer_quality` of one layer, read from a record of
    :func:`bench.evaluation.score.score_fitted` (its ``per_head`` rows are the same per-head values, so the
    means are the same floats): ``recall``, ``sparsity``, ``output_error`` and ``mass``."""
    return {m: torch.tensor(scored["per_head"][m][layer], dtype=torch.float64).mean().item() for m in QUALITY}


def timed_layer_quality(prep, scored: dict, speed: dict) -> dict[str, float]:
    """The quality of the layer :func:`real_layer_speed` timed (``speed``), from the record ``scored`` of
    :func:`bench.evaluation.score.score_fitted` on ``prep`` (:func:`scored_layer`), with that layer's
    ``gold_sparsity`` and ``efficiency_min`` (its speed-up times ``1 - sparsity``)."""
    layer = speed["layer"]
    quality = {**scored_layer(scored, layer), "gold_sparsity": prep.eval_gold.layers[layer].sparsity().mean().item()}
    return {**quality, "efficiency_min": speed["speedup_min"] * (1.0 - quality["sparsity"])}


def real_layer_speed(prep, predictor, rounds: int, reference: str = REFERENCE) -> dict:
    """Time the fitted ``predictor``'s prediction plus sparse execution against dense ``reference`` on the
    middle eval layer of ``prep`` (a :class:`~bench.evaluation.prepared.Prepared`), ``rounds`` alternating
    rounds after one warm-up each (module docstring).

    Returns ``layer``, ``eval_lengths``, ``n_mean``, ``n_min``, ``n_max``, ``dense_seconds`` and
    ``sparse_seconds`` (per round), ``speedup_min`` and ``speedup_median``. Raises
    :class:`~bench.execution.plan.UnsupportedGraph` when sparse execution cannot run the graph (nothing
    is timed then).
    """
    layer = prep.eval.num_layers // 2
    lv = prep.eval.layer(layer)
    plan = sparse_plan(predictor.predict(lv, layer))
    if not plan.supported:
        raise UnsupportedGraph(plan.reason)
    lengths = [int(m) for m in lv.lengths]

    def dense():
        for s, m in enumerate(lengths):
            dense_attention(lv.q[s, :, :m], lv.k[s, :, :m], lv.v[s, :, :m], lv.causal, lv.scale, reference)

    def sparse():
        sparse_entmax_attention(lv.q, lv.k, lv.v, lv.lengths, lv.causal, lv.scale, predictor.predict(lv, layer))

    td, ts = timed_rounds([dense, sparse], rounds, warmup=1)
    return {"layer": layer, "eval_lengths": lengths, "n_mean": statistics.fmean(lengths), "n_min": min(lengths),
            "n_max": max(lengths), "dense_seconds": td, "sparse_seconds": ts, "speedup_min": min(td) / min(ts),
            "speedup_median": statistics.median(td) / statistics.median(ts)}
