"""Quality of a predicted graph against the gold graph, per sample and head, in query blocks.

For one sample with valid pairs ``V`` (n^2, or n(n+1)/2 causal), gold support ``G`` with entmax
probabilities ``p``, and predicted pairs ``P`` (intersected with ``V``):

* sparsity  = 1 - |P| / |V|
* recall    = |P & G| / |G|
* precision = |P & G| / |P|                      (NaN when nothing is predicted)
* exact     = share of the n queries with G_i subset of P_i (their attention is then unchanged)
* mass      = sum of p over P & G, divided by the sum of p over G (n up to float rounding: each row of
              p sums to 1; both sums are reduced alike, so mass never exceeds 1 by rounding)
* output_error = ||O - O_hat||_F / ||O||_F, with O = p V and O_hat = alpha-entmax restricted to P, times
  V (NaN when the data has no V). A query whose row of P is empty gets O_hat_i = 0. The restricted
  probabilities are the sparse execution's (:func:`bench.execution.row_entmax.rows_p`): for alpha = 1.5
  the threshold from the candidates of each row only, bit for bit :func:`predictors.entmax.row_entmax`'s
  (tests/test_sparse_exec.py) at a third of its time on real heads; on the CPU ``O_hat`` is summed over
  the restricted support only (:func:`predictors.entmax.restricted_output`, the compiled kernel).

Metrics are computed per sample and head, then macro-averaged over samples (NaN-aware), per head; the
caller averages over heads and layers. Nothing larger than ``[H, block, n]`` is ever built.
"""

from __future__ import annotations

import torch

from bench.evaluation.metric_table import PAIR_METRICS
from bench.execution.row_entmax import rows_p
from predictors.data import LayerView
from predictors.entmax import restricted_output, uses_kernel
from predictors.masking import allowed_keys, block_scores
from predictors.support import LayerGold

METRICS = PAIR_METRICS  # directions, tolerances and labels: bench.evaluation.metric_table
COUNTS = ("valid_pairs", "gold_pairs", "pred_pairs", "hit_pairs")


def score_layer(view: LayerView, gold: LayerGold, graph, block: int = 256) -> dict[str, torch.Tensor]:
    """Score ``graph`` on one layer.

    Parameters
    ----------
    view : the layer's eval data, ``q``/``k``/``v`` ``[S, H, T, D]``
    gold : the exact gold of the same samples and heads
    graph : a :class:`predictors.graphs.PredictedGraph` for these samples and heads

    Returns
    -------
    dict of float64 ``[S, H]`` tensors: every name in ``METRICS`` and ``COUNTS``.
    """
    s_count, nh = view.q.shape[:2]
    if gold.counts.shape[:2] != (s_count, nh):
        raise ValueError(f"gold covers {tuple(gold.counts.shape[:2])} (samples, heads), data {(s_count, nh)}")
    acc = {name: torch.zeros(s_count, nh, dtype=torch.float64)
           for name in COUNTS + ("exact_rows", "mass_sum", "gold_mass", "err_sq", "out_sq")}
    for s in range(s_count):
        n = int(view.lengths[s])
        k = view.k[s, :, :n]
        v = None if view.v is None else view.v[s, :, :n].float()
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            allowed = allowed_keys(i0, i1, n, view.causal)
            pred = graph.block_mask(s, i0, i1, n)
            if pred.shape != (nh, i1 - i0, n):
                raise ValueError(f"graph block has shape {tuple(pred.shape)}, expected {(nh, i1 - i0, n)}")
            pred &= allowed
            g_mask, g_prob, g = gold_terms(gold, s, i0, i1, n, v)
            hit = pred & g_mask
            acc["valid_pairs"][s] += float(allowed.sum())
            acc["gold_pairs"][s] += g["pairs"]
            acc["pred_pairs"][s] += pred.sum((1, 2)).double()
            acc["hit_pairs"][s] += hit.sum((1, 2)).double()
            row_exact = hit.sum(-1) == g["row_counts"]  # [H, B]
            acc["exact_rows"][s] += row_exact.sum(-1).double()
            acc["mass_sum"][s] += (g_prob * hit).sum((1, 2)).double()
            acc["gold_mass"][s] += g["mass"]  # the same reduction as mass_sum, over all of G
            if v is not None:
                out = g["out"]
                acc["out_sq"][s] += g["out_sq"]
                # Exact rows keep their attention; only the others are recomputed.
                redo = ~row_exact
                if redo.any():
                    acc["err_sq"][s] += _redo_error(view, s, i0, i1, k, v, pred, redo, out)
    return _metrics(acc, view.lengths.double()[:, None], view.v is not None)


def _redo_error(view: LayerView, s: int, i0: int, i1: int, k, v, pred, redo, out) -> torch.Tensor:
    """float64 ``[H]``: the squared error ``||O_hat - O||^2`` of the ``redo`` ``[H, B]`` rows of a query
    block (the others are exact), ``O_hat`` entmax restricted to ``pred`` times ``v`` (empty rows: 0).
    On the CPU for alpha = 1.5 ``P V`` over the restricted support only
    (:func:`predictors.entmax.restricted_output`); else the restricted probabilities times ``v``."""
    scores = block_scores(view.q[s, :, i0:i1], k, view.scale)
    if view.alpha == 1.5 and uses_kernel(scores):
        heads, rows = redo.nonzero(as_tuple=True)
        o_hat = restricted_output(scores[heads, rows], pred[heads, rows], heads, v)
        err = (o_hat - out[heads, rows]).pow(2).sum(-1)
        return torch.zeros(redo.shape[0], dtype=err.dtype).index_add_(0, heads, err).double()
    p_hat = torch.zeros_like(scores)
    p_hat[redo] = rows_p(scores[redo], pred[redo], view.alpha)  # empty rows: all zero
    diff = torch.bmm(p_hat, v) - out
    return (diff * redo[..., None]).pow(2).sum((1, 2)).double()


#: Bytes of dense gold blocks (mask and probabilities) a layer's gold keeps for the next graph scored on
#: it; beyond, blocks are expanded again from the CSR each time (the small terms are always kept).
DENSE_KEEP_BYTES = 128 << 20


def gold_terms(gold: LayerGold, s: int, i0: int, i1: int, n: int, v: torch.Tensor | None):
    """``(mask, probs, terms)`` of the gold rows ``i0 <= i < i1`` of sample ``s``: :meth:`LayerGold.block`'s
    mask and probabilities ``[H, B, n]`` and what depends on the gold alone, ``terms``: ``pairs`` and
    ``mass`` (float64 ``[H]``: gold pairs, the probabilities summed as the mass is), ``row_counts``
    ``[H, B]`` and, with values ``v`` ``[H, n, Dv]`` (the values of the samples the gold was computed
    on, as ``score_layer`` does; other values get terms of their own), ``out = p V`` ``[H, B, Dv]`` and
    ``out_sq`` (float64 ``[H]``: its squared norm).

    Every graph of a sweep is scored against the same gold: the terms are computed once per block and kept
    on the layer's gold (the same floats each time, so a score is bit for bit what computing them afresh
    gives); the dense mask and probabilities too, up to :data:`DENSE_KEEP_BYTES` per layer.
    """
    memo = gold.__dict__.setdefault("_score_terms", {"dense_bytes": 0})
    # The values' address names them: the memo holds the tensor, so no other tensor can take its place
    # while the entry lives; a gold scored with other values gets (and keeps) terms of its own.
    key = (s, i0, i1, n, None if v is None else (v.data_ptr(), tuple(v.shape), v.stride()))
    if key in memo:
        mask, probs, terms = memo[key]
        return (*(gold.block(s, i0, i1, n) if mask is None else (mask, probs)), terms)
    mask, probs = gold.block(s, i0, i1, n)
    terms = {"pairs": mask.sum((1, 2)).double(), "mass": (probs * mask).sum((1, 2)).double(),
             "row_counts": mask.sum(-1)}
    if v is not None:
        terms["values"] = v
        terms["out"] = torch.bmm(probs, v)
        terms["out_sq"] = terms["out"].pow(2).sum((1, 2)).double()
    size = mask.numel() * (mask.element_size() + probs.element_size())
    keep = memo["dense_bytes"] + size <= DENSE_KEEP_BYTES
    memo["dense_bytes"] += size if keep else 0
    memo[key] = (mask, probs, terms) if keep else (None, None, terms)
    return mask, probs, terms


def _metrics(acc: dict[str, torch.Tensor], lengths: torch.Tensor, has_v: bool) -> dict[str, torch.Tensor]:
    """The metrics of the module docstring from the sums ``acc`` ``[S, H]`` of :func:`score_layer` and the
    valid tokens ``lengths`` ``[S, 1]``; ``output_error`` is NaN without values (``has_v`` false)."""
    res = {name: acc[name] for name in COUNTS}
    res["sparsity"] = 1.0 - acc["pred_pairs"] / acc["valid_pairs"]
    res["recall"] = acc["hit_pairs"] / acc["gold_pairs"]
    res["precision"] = torch.where(acc["pred_pairs"] > 0, acc["hit_pairs"] / acc["pred_pairs"].clamp(min=1),
                                   torch.full_like(acc["pred_pairs"], float("nan")))
    res["exact"] = acc["exact_rows"] / lengths
    res["mass"] = acc["mass_sum"] / acc["gold_mass"]
    if has_v:
        res["output_error"] = acc["err_sq"].sqrt() / acc["out_sq"].sqrt()
    else:
        res["output_error"] = torch.full_like(acc["out_sq"], float("nan"))
    return res


def macro_average(per_sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average ``[S, H]`` metrics over samples (NaN-aware): ``[H]`` each. Counts are summed."""
    out = {}
    for name, t in per_sample.items():
        out[name] = t.sum(0) if name in COUNTS else t.nanmean(0)
    return out
