"""The gold graph: the exact support of alpha-entmax attention, with its probabilities.

For sample ``s``, layer ``l``, head ``h`` with ``n`` valid tokens, the gold attention is

    P = alpha-entmax(scale * Q K^T)   over the allowed keys (all n, or j <= i when causal),

computed with the exact sort-based ``entmax15`` (partial sort with ``k``: exact, it doubles ``k``
until the support fits) for alpha = 1.5, and ``entmax_bisect`` otherwise. The gold graph is the set of
pairs with ``P > 0``. It is built one block of queries at a time, so memory is ``O(block x n)`` per
head, and stored sparsely (CSR over rows ``(s, h, i)``) with the probabilities, which the metrics need
for mass recall and output error.
"""

from __future__ import annotations

import time

import torch

from predictors.data import AttentionData, LayerView
from predictors.entmax import BISECT_ITERS, PARTIAL_K, entmax_probs
from predictors.errors import DataError
from predictors.masking import allowed_keys, block_scores, mask_scores
from predictors.support import Gold, LayerGold


def layer_gold(view: LayerView, block: int = 256, progress=None, layer: int | None = None) -> LayerGold:
    """Exact gold attention of one layer, computed ``block`` queries at a time.

    ``view.q``, ``view.k`` are ``[S, H, T, D]``. Memory is ``O(H * block * n)``. Scores that are not finite
    in float32 (finite Q and K whose products overflow) are a DataError naming ``layer``, sample, head and
    query: no support is defined for them.
    """
    s_count, nh, t, _ = view.q.shape
    counts = torch.zeros(s_count, nh, t, dtype=torch.int64)
    cols_parts: list[list[torch.Tensor]] = []
    probs_parts: list[list[torch.Tensor]] = []
    topk = PARTIAL_K  # exact either way: entmax15 widens k for the rows whose support fills it
    for s in range(s_count):
        n = int(view.lengths[s])
        per_head_cols = [[] for _ in range(nh)]
        per_head_probs = [[] for _ in range(nh)]
        k = view.k[s, :, :n]
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            scores = block_scores(view.q[s, :, i0:i1], k, view.scale)
            if not bool(torch.isfinite(scores).all()):
                raise _overflow(scores, layer, s, i0)
            if view.causal:
                scores = mask_scores(scores, allowed_keys(i0, i1, n, True))
            p = entmax_probs(scores, view.alpha, topk)
            nz = p > 0
            counts[s, :, i0:i1] = nz.sum(-1)
            # Partial-sort width for the next block: a little above the largest support seen.
            topk = max(PARTIAL_K, int(counts[s, :, i0:i1].max()) * 2)
            # One nonzero for all heads: (h, i, j) in row-major order, then split by head.
            sizes = counts[s, :, i0:i1].sum(-1).tolist()
            cols = nz.nonzero()[:, 2].to(torch.int32)
            for h, (c, pr) in enumerate(zip(cols.split(sizes), p[nz].split(sizes))):
                per_head_cols[h].append(c)
                per_head_probs[h].append(pr)
            if progress is not None:
                progress.update(nh * (i1 - i0))
        cols_parts.append([torch.cat(c) for c in per_head_cols])
        probs_parts.append([torch.cat(c) for c in per_head_probs])
    cols = torch.cat([c for per_s in cols_parts for c in per_s]) if cols_parts else torch.zeros(0, dtype=torch.int32)
    probs = torch.cat([c for per_s in probs_parts for c in per_s]) if probs_parts else torch.zeros(0)
    return LayerGold(counts=counts, cols=cols, probs=probs, lengths=view.lengths.clone(), causal=view.causal)


def _overflow(scores: torch.Tensor, layer: int | None, sample: int, i0: int) -> DataError:
    h, i, _ = (~torch.isfinite(scores)).nonzero()[0].tolist()
    where = "" if layer is None else f"layer {layer}, "
    return DataError(f"attention scores scale * q.k are not finite in float32 (inf or NaN) in {where}sample {sample}, "
                     f"head {h}, query {i0 + i}: Q and K are too large (float32 holds at most 3.4e38); rescale them")


def compute_gold(data: AttentionData, block: int = 256, show_progress: bool = False) -> Gold:
    """Exact gold attention of every layer of ``data`` (see :func:`layer_gold`)."""
    from bench.progress import Step

    rows = int(data.lengths.sum()) * data.num_heads * data.num_layers
    part = data.descriptor.get("part") if data.descriptor else None
    desc = f"gold {data.name}" + (f" ({part} samples)" if part else "")
    start = time.perf_counter()
    with Step(desc, total=rows, unit="rows", enabled=show_progress) as bar:
        layers = [layer_gold(data.layer(li), block=block, progress=bar, layer=li) for li in range(data.num_layers)]
    return Gold(layers=layers, seconds=time.perf_counter() - start,
                bisect_iters=None if data.alpha == 1.5 else BISECT_ITERS)
