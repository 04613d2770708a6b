"""Dense references: what a predictor's prediction time, and sparse execution, are compared with.

For one sample (its ``n`` valid tokens, all heads of a layer at once), :func:`dense_attention` runs

* ``entmax15-topk``: scores ``scale Q K^T`` plus exact ``entmax15`` (bit for bit
  ``entmax15(scores, k=PARTIAL_K)``, which doubles ``k`` for the rows whose support fills it, so it
  stays exact), computed as the gold graph computes it: in blocks of :data:`BLOCK` queries (scores in
  one reused buffer), on the CPU by the compiled kernel (:mod:`predictors.entmax15_kernel`: each row's
  maximum, its few candidates, their sort and threshold), and with ``values`` the output ``P V`` over
  the support only (:func:`predictors.entmax.support_values`), never multiplying the zeros of ``P``.
  The fastest exact dense computation here (one layer of 12 MiniLM-shaped heads at n = 4096, one
  thread, 2026-12-02: 1.00 s against 1.57 s with the product of the whole block, and 1.20 s for
  softmax SDPA); on other devices the PyTorch path of the same floats
  (:func:`predictors.entmax.entmax15_dense`) and ``P V`` as a product.
* ``entmax15-sort``: scores plus the library's ``entmax.entmax15`` with a full sort.
* ``entmax-bisect``: scores plus ``entmax_bisect(alpha=1.5)`` (:data:`BISECT_ITERS` = 50 iterations).
* ``softmax-sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (softmax, fused, and it
  includes ``P V``), the everyday dense attention.

With ``values=False`` the entmax references stop at the probabilities (no ``P V``), as the gold graph
does: that is what the dense benchmark times (:func:`dense_layer`, over every sample of a layer). With
``values=True`` every method ends with the attention output ``P V``, so the sparse-execution benchmark
compares like with like.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from entmax import entmax15, entmax_bisect

from bench.errors import BenchError
from predictors.entmax import (  # noqa: F401  (PARTIAL_K: documented here)
    BISECT_ITERS,
    PARTIAL_K,
    entmax15_dense,
    partial_k,
    support_counts,
    support_values,
    uses_kernel,
)
from predictors.masking import allowed_keys, block_scores, mask_scores

DENSE_METHODS = ("entmax15-topk", "entmax15-sort", "entmax-bisect", "softmax-sdpa")
BLOCK = 256  # queries per block of entmax15-topk: the gold graph's (bench.evaluation.gold.layer_gold)


def check_method(method: str) -> None:
    """Raise :class:`BenchError` naming the known methods unless ``method`` is one of :data:`DENSE_METHODS`."""
    if method not in DENSE_METHODS:
        raise BenchError(f"unknown dense method {method!r}; known: {', '.join(DENSE_METHODS)}")


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None, causal: bool, scale: float,
                    method: str, values: bool = True) -> torch.Tensor:
    """Dense attention of one sample, all heads, by ``method`` (module docstring).

    Parameters
    ----------
    q, k : float ``[H, n, D]``, unscaled
    v : float ``[H, n, Dv]``; needed for ``values`` and for ``softmax-sdpa`` (``None``: ``k`` stands in)
    causal : restrict query ``i`` to keys ``j <= i``
    scale : multiplies ``q . k``
    method : one of :data:`DENSE_METHODS`
    values : multiply the probabilities by ``v``

    Returns
    -------
    float32 ``[H, n, Dv]`` (``P V``) when ``values`` or for ``softmax-sdpa`` (fused: it always includes
    ``P V``); otherwise the probabilities ``P`` ``[H, n, n]``.
    """
    check_method(method)
    n = q.shape[1]
    if method == "softmax-sdpa":
        v = k if v is None else v
        return F.scaled_dot_product_attention(q[None].float(), k[None].float(), v[None].float(),
                                              is_causal=causal, scale=scale)[0]
    if method == "entmax15-topk":
        return _entmax15_blocks(q, k, v, causal, scale, values)
    scores = block_scores(q, k, scale)
    if causal:
        scores = mask_scores(scores, allowed_keys(0, n, n, True, device=q.device))
    if method == "entmax15-sort":
        p = entmax15(scores, dim=-1)
    else:
        p = entmax_bisect(scores, alpha=1.5, dim=-1, n_iter=BISECT_ITERS)
    return torch.matmul(p, v.float()) if values else p


def _entmax15_blocks(q, k, v, causal: bool, scale: float, values: bool, block: int = BLOCK) -> torch.Tensor:
    """``entmax15-topk`` of :func:`dense_attention`, ``block`` queries at a time (the gold graph's blocks,
    so its probabilities are the gold's bit for bit): the scores of a block in one reused buffer (and
    the kernel's ``work``), its probabilities written into the output (``values`` false) or, with
    ``values``, multiplied by ``v``: on the CPU over the support only (:func:`support_values`: the
    fastest exact way, the zeros of ``P`` are not multiplied; at n = 4096 about a third less time
    than the product of the whole block), elsewhere as a product of a reused buffer of ``P`` and ``v``."""
    h, n = q.shape[0], q.shape[1]
    rows = min(block, n)
    buf, work = torch.empty(h * rows * n, device=q.device), torch.empty(h * rows * n // 2, device=q.device)
    if values:
        v = v.float()
        out = torch.empty(h, n, v.shape[-1], device=q.device)
        p_buf = None if uses_kernel(buf) else torch.empty(h * rows * n, device=q.device)
    else:
        out = torch.zeros(h, n, n, device=q.device)
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        scores = block_scores(q[:, i0:i1], k, scale, out=buf)
        if causal:
            scores = mask_scores(scores, allowed_keys(i0, i1, n, True, device=q.device))
        if values and p_buf is None:
            counts, cols, probs = support_counts(scores.view(-1, n), partial_k(n))
            out[:, i0:i1] = support_values(counts, cols, probs, v, i1 - i0).view(h, i1 - i0, -1)
        elif values:
            p = entmax15_dense(scores, partial_k(n), p_buf[: scores.numel()].view(scores.shape).zero_(), work)
            out[:, i0:i1] = torch.matmul(p, v)
        else:
            entmax15_dense(scores, partial_k(n), out[:, i0:i1], work)  # a full sort when k >= n, as entmax15
    return out


def dense_layer(view, method: str) -> None:
    """Run one dense reference over all samples of a layer view, probabilities only (results discarded)."""
    check_method(method)
    for s in range(view.q.shape[0]):
        n = int(view.lengths[s])
        v = view.v[s, :, :n] if view.v is not None else None
        dense_attention(view.q[s, :, :n], view.k[s, :, :n], v, view.causal, view.scale, method, values=False)
