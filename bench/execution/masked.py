"""Restricted entmax attention by masking dense query blocks: the reference of the sparse execution.

For one sample with ``n`` valid tokens and predicted pairs ``P`` (see :mod:`bench.execution.sparse_exec`),
query blocks of ``block`` rows score every key, and disallowed keys get a large finite negative
(:func:`predictors.masking.mask_scores` through :func:`predictors.entmax.row_entmax`, never ``-inf``).
Any graph; memory ``O(H x block x n)``, work ``O(n^2)``.
"""

from __future__ import annotations

import torch

from bench.errors import BenchError
from bench.execution.exec_stats import ExecStats, check_inputs
from predictors.entmax import row_entmax
from predictors.graphs import PredictedGraph
from predictors.masking import allowed_keys


def masked_entmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                            causal: bool, scale: float, graph: PredictedGraph | None = None, alpha: float = 1.5,
                            block: int = 256, stats: ExecStats | None = None) -> torch.Tensor:
    """Restricted entmax attention (:mod:`bench.execution.sparse_exec`), computed by masking dense query blocks.

    Parameters
    ----------
    q, k, v : float ``[S, H, T, D]`` (``v``: ``[S, H, T, Dv]``), unscaled
    lengths : int64 ``[S]``, valid tokens per sample (padding at the end)
    causal : restrict to ``j <= i``
    scale : multiplies ``q . k``
    graph : the predicted pairs, for these samples and heads; ``None``: every pair (dense entmax attention)
    alpha : entmax alpha (1.5: exact sort-based entmax15; otherwise bisection)
    block : query rows per block (memory ``O(H x block x n)``)
    stats : when given, :class:`ExecStats` ``[S, H]`` to which this call's counts are added

    Returns
    -------
    float32 ``[S, H, T, Dv]``; rows of padding queries and of queries with no predicted key are 0.
    """
    check_inputs(q, k, v, lengths)
    s_count, nh, t, _ = q.shape
    out = torch.zeros(s_count, nh, t, v.shape[-1], dtype=torch.float32, device=q.device)
    for s in range(s_count):
        n = int(lengths[s])
        out[s, :, :n] = masked_sample(q[s, :, :n], k[s, :, :n], v[s, :, :n], s, n, causal, scale, graph, alpha,
                                      block, stats)
    return out


def masked_sample(q, k, v, s, n, causal, scale, graph, alpha, block=256, stats=None):
    """:func:`masked_entmax_attention` of sample ``s`` (``q``, ``k``, ``v`` ``[H, n, D]``): ``[H, n, Dv]``."""
    nh = q.shape[0]
    out = torch.zeros(nh, n, v.shape[-1], dtype=torch.float32, device=q.device)
    ks, vs = k.float(), v.float()
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        allowed = allowed_keys(i0, i1, n, causal, device=q.device).expand(nh, -1, -1)
        if graph is not None:
            pred = graph.block_mask(s, i0, i1, n).to(q.device)
            if pred.shape != (nh, i1 - i0, n):
                raise BenchError(f"graph block has shape {tuple(pred.shape)}, expected {(nh, i1 - i0, n)}")
            allowed = allowed & pred
        scores = torch.matmul(q[:, i0:i1].float(), ks.transpose(-1, -2)).mul_(scale)
        p = row_entmax(scores, allowed, alpha)
        out[:, i0:i1] = torch.matmul(p, vs)
        if stats is not None:
            stats.pred_pairs[s] += allowed.sum((1, 2)).double().cpu()
            stats.support_pairs[s] += (p > 0).sum((1, 2)).double().cpu()
            stats.empty_rows[s] += (~allowed.any(-1)).sum(-1).double().cpu()
    if stats is not None:
        stats.add_valid(s, n, causal)
    return out
