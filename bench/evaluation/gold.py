"""The gold graph: the exact support of alpha-entmax attention, with its probabilities.

For sample ``s``, layer ``l``, head ``h`` with ``n`` valid tokens, the gold attention is

    P = alpha-entmax(scale * Q K^T)   over the allowed keys (all n, or j <= i when causal),

computed for alpha = 1.5 with :func:`predictors.entmax.support_counts` on the CPU (the compiled kernel
of :mod:`predictors.entmax15_kernel`: per row its maximum, the few candidates within reach of the
threshold, their sort and the exact sort-based threshold; elsewhere
:func:`predictors.entmax.entmax15_support`): bit for bit what the exact sort-based ``entmax15`` with a
partial sort of :data:`~predictors.entmax.PARTIAL_K` entries gives (it widens the sort for the rows
whose support fills it), and only the support is formed; ``entmax_bisect`` otherwise. The gold graph
is the set of pairs with ``P > 0``. It is built one block of queries at a time, so memory is
``O(block x n)`` per head, and stored sparsely (CSR over rows ``(s, h, i)``) with the probabilities,
which the metrics need for mass recall and output error.

Measured on one layer of 12 MiniLM-shaped heads (d = 32), one thread, against
``scaled_dot_product_attention`` on the same q, k, v (``bench/suite/bench_gold.py`` records that
ratio): with the PyTorch kernel (partial sorts and group maxima, :func:`predictors.entmax.largest`)
2.75 / 2.41 / 1.96 times SDPA at n = 1024 / 2048 / 4096 (2026-12-01), 2.16 at 4096 on an AVX-512
machine; with the compiled kernel about 1.0 / 0.85 / 0.86 times SDPA (2026-12-02, an AMD EPYC
machine, busy): the product ``Q K^T`` and two passes over each row are what is left. Before the
finite bound (:func:`scores_stay_finite`) each block's ``isfinite`` check took half of the time.
"""

from __future__ import annotations

import time

import torch

from predictors.data import AttentionData, LayerView
from predictors.entmax import BISECT_ITERS, PARTIAL_K, entmax15_support, entmax_probs, support_counts, uses_kernel
from predictors.errors import DataError
from predictors.masking import allowed_keys, block_scores, mask_scores
from predictors.support import Gold, LayerGold


def block_support(scores: torch.Tensor, alpha: float, work: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The support of alpha-entmax over the rows of (masked) ``scores`` ``[H, B, n]`` (``work``: a
    reusable buffer of the kernel, :func:`predictors.entmax.largest`).

    Returns
    -------
    counts : int64 ``[H, B]``; cols : int32 (the compiled kernel's, on the CPU) or int64 ``[nnz]``
    and probs : float32 ``[nnz]``, rows ``(h, i)`` in row-major order, columns increasing within a row
    """
    nh, b, n = scores.shape
    if alpha == 1.5 and uses_kernel(scores):
        counts, cols, probs = support_counts(scores.reshape(nh * b, n), PARTIAL_K)
        return counts.view(nh, b), cols, probs
    if alpha == 1.5:
        rows, cols, probs = entmax15_support(scores.reshape(nh * b, n), PARTIAL_K, work)
        counts = torch.bincount(rows, minlength=nh * b).view(nh, b)
        return counts, cols, probs
    p = entmax_probs(scores, alpha)
    nz = p > 0
    return nz.sum(-1), nz.nonzero()[:, 2], p[nz]


def layer_gold(view: LayerView, block: int = 256, progress=None, layer: int | None = None) -> LayerGold:
    """Exact gold attention of one layer, computed ``block`` queries at a time.

    ``view.q``, ``view.k`` are ``[S, H, T, D]``. Memory is ``O(H * block * n)``. Scores that are not finite
    in float32 (finite Q and K whose products overflow) are a DataError naming ``layer``, sample, head and
    query: no support is defined for them. The work runs on the device of ``view.q`` (the GPU benchmark
    times it on CUDA); ``counts`` are on the CPU, ``cols`` and ``probs`` on that device.
    """
    s_count, nh, t, _ = view.q.shape
    counts = torch.zeros(s_count, nh, t, dtype=torch.int64)
    cols_parts: list[torch.Tensor] = []
    probs_parts: list[torch.Tensor] = []
    for s in range(s_count):
        n = int(view.lengths[s])
        per_head_cols = [[] for _ in range(nh)]
        per_head_probs = [[] for _ in range(nh)]
        k = view.k[s, :, :n]
        bounded = scores_stay_finite(view.q[s, :, :n], k, view.scale)
        # One allocation a sample, not a block: fresh pages cost as much as the product at n = 2048-4096.
        dev = view.q.device
        buffer = torch.empty(nh * min(block, n) * n, device=dev)
        work = torch.empty(nh * min(block, n) * n // 2, device=dev)
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            scores = block_scores(view.q[s, :, i0:i1], k, view.scale, out=buffer)
            if not bounded and not bool(torch.isfinite(scores).all()):
                raise _overflow(scores, layer, s, i0)
            if view.causal:
                scores = mask_scores(scores, allowed_keys(i0, i1, n, True, device=dev))
            counts[s, :, i0:i1], cols, probs = block_support(scores, view.alpha, work)
            # Rows (h, i) come in row-major order: split by head, so the layer's rows end up (s, h, i).
            sizes = counts[s, :, i0:i1].sum(-1).tolist()
            for h, (c, pr) in enumerate(zip(cols.to(torch.int32).split(sizes), probs.split(sizes))):
                per_head_cols[h].append(c)
                per_head_probs[h].append(pr)
            if progress is not None:
                progress.update(nh * (i1 - i0))
        cols_parts.extend(torch.cat(c) for c in per_head_cols)
        probs_parts.extend(torch.cat(c) for c in per_head_probs)
    cols = torch.cat(cols_parts) if cols_parts else torch.zeros(0, dtype=torch.int32)
    probs = torch.cat(probs_parts) if probs_parts else torch.zeros(0)
    return LayerGold(counts=counts, cols=cols, probs=probs, lengths=view.lengths.clone(), causal=view.causal)


#: Scores bounded by this (in float64) cannot overflow float32 (3.4e38) in any summation order.
FINITE_BOUND = 1e37


def scores_stay_finite(q: torch.Tensor, k: torch.Tensor, scale: float) -> bool:
    """Whether every score ``scale * q_i . k_j`` of ``q`` ``[H, B, D]`` and ``k`` ``[H, n, D]`` is finite
    in float32 without looking at them: ``q`` and ``k`` finite and, by Cauchy-Schwarz, every partial sum
    of a product at most ``|scale| max_i |q_i| max_j |k_j|`` (twice that with rounding, far below
    float32's limit when this is under :data:`FINITE_BOUND`). When it holds, the per-block check of
    the scores (half the gold's time at n = 4096: ``isfinite`` is two passes, ``all`` a third)
    is left out; when not, every block is checked and an overflow is named."""
    if not (bool(torch.isfinite(q).all()) and bool(torch.isfinite(k).all())):
        return False
    if q.numel() == 0 or k.numel() == 0:
        return True
    qn = torch.linalg.vector_norm(q.double(), dim=-1).amax()
    kn = torch.linalg.vector_norm(k.double(), dim=-1).amax()
    return bool(abs(scale) * qn * kn < FINITE_BOUND)


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
