"""Fit predictors on the fit samples, score them on the eval samples, per layer and head.

:func:`score_predictor` is what ``sparsebench score`` and the benchmark suite call. Its record holds
numbers only (NaN where undefined): per-head metrics ``[L][H]``, their means, counts, FLOPs and
timings.
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


def score_fitted(prep: Prepared, predictor, block: int = 256, layers=None, graphs=None, part: str = "eval") -> dict:
    """Score an already fitted ``predictor`` on ``prep.eval`` (or the validation part, ``part="val"``),
    layer by layer.

    ``graphs``: the predictor's graphs of every eval layer, already predicted (by a timed call of the
    benchmark); they are scored instead of predicting again, and ``predict_seconds`` is then 0.

    Returns
    -------
    dict with ``name``, ``family``, ``backend``, ``params``, ``per_head`` (metric -> ``[L][H]`` lists),
    ``mean`` (metric -> float, the mean over layers and heads), ``per_sample`` (metric -> ``[S]``, each
    sample's NaN-aware mean over layers and heads: what bootstrap intervals resample; the mean of a
    sample's values need not equal ``mean``, which averages heads first), ``fit_seconds``, ``predict_seconds``,
    ``score_seconds``, and FLOPs: ``prediction_flops`` (the predictor's own cost),
    ``attention_flops`` (attention on the predicted pairs) and ``dense_flops``, all summed over
    eval samples, layers and heads.
    """
    ev, part_gold = _part(prep, part)
    layers = range(ev.num_layers) if layers is None else layers
    per_head = {m: [] for m in METRICS + COUNTS}
    per_sample = {m: [] for m in METRICS}  # per layer: [S, H]
    per_head["block_sparsity"] = []
    predict_seconds = score_seconds = 0.0
    for layer in layers:
        view = ev.layer(layer)
        if graphs is None:
            start = time.perf_counter()
            graph = predictor.predict(view, layer)
            predict_seconds += time.perf_counter() - start
        else:
            graph = graphs[layer]
        start = time.perf_counter()
        raw = score_layer(view, part_gold.layers[layer], graph, block=block)
        for m in METRICS:
            per_sample[m].append(raw[m])
        res = macro_average(raw)
        if predictor.block_param is not None:
            tiles = block_sparsity(graph, view.lengths, view.causal, predictor.values[predictor.block_param])
            per_head["block_sparsity"].append(tiles.mean(0).tolist())
        score_seconds += time.perf_counter() - start
        for m in METRICS + COUNTS:
            per_head[m].append(res[m].tolist())
    d = ev.head_dim
    dv = ev.v.shape[-1] if ev.v is not None else d
    pred_pairs = sum(sum(row) for row in per_head["pred_pairs"])
    valid_pairs = sum(sum(row) for row in per_head["valid_pairs"])
    heads = ev.num_heads * len(layers)
    prediction = sum(predictor.flops(int(n), d) for n in ev.lengths) * heads
    mean = {m: _nanmean(per_head[m]) for m in METRICS}
    # Tile sparsity of block-level families (the work a block-sparse kernel skips); NaN otherwise.
    mean["block_sparsity"] = _nanmean(per_head["block_sparsity"]) if per_head["block_sparsity"] else float("nan")
    return {
        "name": predictor.name, "family": predictor.family, "backend": predictor.backend,
        "params": dict(predictor.values), "seed": predictor.seed,
        "per_head": {**{m: per_head[m] for m in METRICS + ("block_sparsity",) if per_head[m]},
                     "gold_sparsity": [part_gold.layers[layer].sparsity().mean(0).tolist() for layer in layers]},
        "mean": mean,
        "per_sample": {m: torch.cat(per_sample[m], 1).nanmean(1).tolist() for m in METRICS} if per_sample["recall"]
        else {},
        "pred_pairs": pred_pairs, "valid_pairs": valid_pairs,
        "gold_pairs": sum(sum(row) for row in per_head["gold_pairs"]),
        "prediction_flops": prediction,
        "attention_flops": attention_flops(pred_pairs, d, dv),
        "dense_flops": attention_flops(valid_pairs, d, dv),
        "fit_seconds": predictor.fit_seconds, "predict_seconds": predict_seconds,
        "score_seconds": score_seconds,
    }


def _part(prep: Prepared, part: str):
    """The data and gold of ``part`` (``eval`` or ``val``)."""
    if part not in ("eval", "val"):
        raise ValueError(f"part must be eval or val, got {part!r}")
    return getattr(prep, part), getattr(prep, f"{part}_gold")


def _nanmean(rows) -> float:
    t = torch.tensor(rows, dtype=torch.float64)
    v = t.nanmean().item()
    return v if not math.isnan(v) else float("nan")
