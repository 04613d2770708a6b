"""Fit predictors on the fit samples, score them on the eval samples, per layer and head.

:func:`score_predictor` is what ``sparsebench score`` and the benchmark suite call. Its record holds
numbers only (NaN where undefined): per-head metrics ``[L][H]``, their means, counts, FLOPs and
timings. :func:`score_graphs` is its quality part alone, on graphs already predicted (or stored and
read back: ``sparsebench rescore``), so the same numbers come from either path.
"""

from __future__ import annotations

import math
import time

import torch

from bench.evaluation.flops import attention_flops
from bench.evaluation.metrics import COUNTS, METRICS, macro_average, score_layer
from bench.evaluation.prepared import Prepared
from predictors.graphs import block_sparsity


def score_predictor(prep: Prepared, predictor, block: int = 256, layers=None) -> dict:
    """Fit ``predictor`` on ``prep.fit`` and score it on ``prep.eval`` (see :func:`score_fitted`)."""
    predictor.fit(prep.fit, prep.fit_gold)
    return score_fitted(prep, predictor, block=block, layers=layers)


# The record's quality numbers: everything :func:`score_graphs` returns, recomputable from stored graphs.
QUALITY_KEYS = ("per_head", "mean", "per_sample", "pred_pairs", "valid_pairs", "gold_pairs", "attention_flops",
                "dense_flops", "gold_sparsity")
PARTS = ("eval", "val")


def score_fitted(prep: Prepared, predictor, block: int = 256, layers=None, graphs=None, part: str = "eval") -> dict:
    """Score an already fitted ``predictor`` on ``prep.eval`` (``part="val"``: the validation samples,
    on which configurations are chosen), layer by layer.

    ``graphs``: the predictor's graphs of every eval layer, already predicted (by a timed call of the
    benchmark); they are scored instead of predicting again, and ``predict_seconds`` is then 0.

    Returns
    -------
    dict with ``name``, ``family``, ``backend``, ``params``, ``seed``, the quality numbers of
    :func:`score_graphs` (``per_head``, ``mean``, pair counts, ``attention_flops``, ``dense_flops``,
    ``gold_sparsity``), ``prediction_flops`` (the predictor's own cost, summed over eval samples,
    layers and heads), ``fit_seconds``, ``predict_seconds`` and ``score_seconds``.
    """
    ev, _ = part_of(prep, part)
    layers = range(ev.num_layers) if layers is None else layers
    predict_seconds = 0.0
    if graphs is None:
        graphs = {}
        for layer in layers:
            start = time.perf_counter()
            graphs[layer] = predictor.predict(ev.layer(layer), layer)
            predict_seconds += time.perf_counter() - start
    start = time.perf_counter()
    quality = score_graphs(prep, graphs, tile=tile_size(predictor.block_param, predictor.values),
                           block=block, layers=layers, part=part)
    score_seconds = time.perf_counter() - start
    heads = ev.num_heads * len(layers)
    prediction = sum(predictor.flops(int(n), ev.head_dim) for n in ev.lengths) * heads
    return {
        "name": predictor.name, "family": predictor.family, "backend": predictor.backend,
        "params": dict(predictor.values), "seed": predictor.seed, **quality,
        "prediction_flops": prediction,
        "fit_seconds": predictor.fit_seconds, "predict_seconds": predict_seconds,
        "score_seconds": score_seconds,
    }


def tile_size(block_param: str | None, values: dict) -> int | None:
    """The tile size ``B`` of a block-level family (its ``block_param`` value), else None."""
    return None if block_param is None else values[block_param]


def part_of(prep: Prepared, part: str):
    """The data and gold of ``part`` (``eval`` or ``val``) of ``prep``."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    return getattr(prep, part), getattr(prep, f"{part}_gold")


def score_graphs(prep: Prepared, graphs, tile: int | None = None, block: int = 256, layers=None,
                 part: str = "eval") -> dict:
    """The quality numbers of predicted graphs on ``prep.eval`` (or the part named): ``graphs[layer]`` for
    every layer scored.

    ``tile``: the tile size ``B`` of a block-level family; its tile sparsity is then recorded too.

    Returns
    -------
    dict keyed by :data:`QUALITY_KEYS`: ``per_head`` (metric -> ``[L][H]`` lists, with
    ``gold_sparsity`` and, given ``tile``, ``block_sparsity``), ``mean`` (metric -> float, the mean
    over layers and heads, NaN-aware), ``per_sample`` (metric -> ``[S]``: each sample's NaN-aware mean
    over layers and heads, what bootstrap intervals resample), ``pred_pairs``, ``valid_pairs``,
    ``gold_pairs`` (summed over samples, layers and heads), ``attention_flops`` (attention on the predicted pairs),
    ``dense_flops`` (on every valid pair) and ``gold_sparsity`` (mean of the eval gold's).
    """
    ev, gold = part_of(prep, part)
    layers = range(ev.num_layers) if layers is None else layers
    per_head = {m: [] for m in METRICS + COUNTS}
    per_head["block_sparsity"] = []
    per_sample = {m: [] for m in METRICS}  # per layer: [S, H]
    for layer in layers:
        view, graph = ev.layer(layer), graphs[layer]
        raw = score_layer(view, gold.layers[layer], graph, block=block)
        for m in METRICS:
            per_sample[m].append(raw[m])
        res = macro_average(raw)
        if tile is not None:
            per_head["block_sparsity"].append(block_sparsity(graph, view.lengths, view.causal, tile).mean(0).tolist())
        for m in METRICS + COUNTS:
            per_head[m].append(res[m].tolist())
    d = ev.head_dim
    dv = ev.v.shape[-1] if ev.v is not None else d
    pred_pairs = sum(sum(row) for row in per_head["pred_pairs"])
    valid_pairs = sum(sum(row) for row in per_head["valid_pairs"])
    mean = {m: _nanmean(per_head[m]) for m in METRICS}
    # Tile sparsity of block-level families (the work a block-sparse kernel skips); NaN otherwise.
    mean["block_sparsity"] = _nanmean(per_head["block_sparsity"]) if per_head["block_sparsity"] else float("nan")
    return {
        "per_head": {**{m: per_head[m] for m in METRICS + ("block_sparsity",) if per_head[m]},
                     "gold_sparsity": [gold.layers[layer].sparsity().mean(0).tolist() for layer in layers]},
        "mean": mean,
        "per_sample": {m: torch.cat(per_sample[m], 1).nanmean(1).tolist() for m in METRICS} if per_sample["recall"]
        else {},
        "pred_pairs": pred_pairs, "valid_pairs": valid_pairs,
        "gold_pairs": sum(sum(row) for row in per_head["gold_pairs"]),
        "attention_flops": attention_flops(pred_pairs, d, dv),
        "dense_flops": attention_flops(valid_pairs, d, dv),
        "gold_sparsity": gold.sparsity().mean().item(),
    }


def _nanmean(rows) -> float:
    t = torch.tensor(rows, dtype=torch.float64)
    v = t.nanmean().item()
    return v if not math.isnan(v) else float("nan")
