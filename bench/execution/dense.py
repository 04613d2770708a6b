"""Dense references: what a predictor's prediction time is compared with, in the same run.

For every eval sample (its ``n`` valid tokens, all heads of a layer at once):

* ``entmax15-topk``: scores ``scale Q K^T`` plus exact ``entmax15`` with partial sort of the
  :data:`PARTIAL_K` largest scores per row (``entmax15`` doubles ``k`` for the rows whose support fills
  it, so it stays exact). The fastest exact dense computation here: real supports are small (a few to
  a few tens of keys), and a small first ``k`` beats a share of ``n`` (measured at n = 2048-4096 on
  synthetic heads: k = 16 took half the time of k = 0.1 n, a quarter of the full sort's; on MiniLM
  rows of ~500 keys 16-32 were best).
* ``entmax15-sort``: scores plus ``entmax15`` with a full sort.
* ``entmax-bisect``: scores plus ``entmax_bisect(alpha=1.5)`` (50 iterations).
* ``softmax-sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (softmax, fused, and it
  includes ``P V``), the everyday dense attention.

The entmax references stop at the probabilities (no ``P V``), as the gold graph does.
"""

from __future__ import annotations

import torch.nn.functional as F
from entmax import entmax15, entmax_bisect

from predictors.entmax import PARTIAL_K, partial_k  # noqa: F401  (PARTIAL_K: documented here)
from predictors.masking import allowed_keys, block_scores, mask_scores

DENSE_METHODS = ("entmax15-topk", "entmax15-sort", "entmax-bisect", "softmax-sdpa")


def dense_layer(view, method: str) -> None:
    """Run one dense reference over all samples of a layer view (results are discarded)."""
    if method not in DENSE_METHODS:
        raise ValueError(f"unknown dense method {method!r}; known: {', '.join(DENSE_METHODS)}")
    for s in range(view.q.shape[0]):
        n = int(view.lengths[s])
        q, k = view.q[s, :, :n], view.k[s, :, :n]
        if method == "softmax-sdpa":
            v = view.v[s, :, :n] if view.v is not None else k
            F.scaled_dot_product_attention(q[None].float(), k[None].float(), v[None].float(),
                                           is_causal=view.causal, scale=view.scale)
            continue
        scores = block_scores(q, k, view.scale)
        if view.causal:
            scores = mask_scores(scores, allowed_keys(0, n, n, True))
        if method == "entmax15-topk":
            entmax15(scores, dim=-1, k=partial_k(n))
        elif method == "entmax15-sort":
            entmax15(scores, dim=-1)
        else:
            entmax_bisect(scores, alpha=1.5, dim=-1)
