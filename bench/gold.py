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
from dataclasses import dataclass

import torch
from entmax import entmax15, entmax_bisect

from bench.data.attention import AttentionData, LayerView
from bench.dense import PARTIAL_K, partial_k
from bench.masking import allowed_keys, block_scores, mask_scores

BISECT_ITERS = 50


def entmax_probs(scores: torch.Tensor, alpha: float, topk: int | None = None) -> torch.Tensor:
    """alpha-entmax over the last dimension of (already masked) float32 ``scores``."""
    if alpha == 1.5:
        k = topk if topk is not None and topk < scores.shape[-1] else None
        return entmax15(scores, dim=-1, k=k)
    return entmax_bisect(scores, alpha=alpha, dim=-1, n_iter=BISECT_ITERS)


def row_entmax(scores: torch.Tensor, allowed: torch.Tensor, alpha: float = 1.5,
               topk: bool = True) -> torch.Tensor:
    """alpha-entmax of each row of ``scores`` ``[..., m]`` over its ``allowed`` entries only.

    Disallowed entries get (row max - :data:`bench.masking.MASK_GAP`) and probability exactly 0; a row
    with no allowed entry is all zeros. For alpha = 1.5 the exact sort-based ``entmax15`` is used, with
    a partial sort of :func:`bench.dense.partial_k` ``(m)`` entries when ``topk`` (exact: it widens the
    sort until the support fits), the same rule as the dense reference; otherwise ``entmax_bisect``.
    """
    if scores.shape[-1] == 0:
        return scores.new_zeros(scores.shape)
    masked = mask_scores(scores, allowed)
    if alpha == 1.5:
        m = scores.shape[-1]
        p = entmax15(masked, dim=-1, k=partial_k(m) if topk and partial_k(m) < m else None)
    else:
        p = entmax_bisect(masked, alpha=alpha, dim=-1, n_iter=BISECT_ITERS)
    return p.masked_fill_(~allowed, 0.0)


@dataclass
class LayerGold:
    """Gold attention of one layer in CSR form.

    Attributes
    ----------
    counts : int64 ``[S, H, T]``, support size of each row ``(s, h, i)``; 0 for padding rows
    cols : int32 ``[nnz]``, key index of each support entry, rows in ``(s, h, i)`` order
    probs : float32 ``[nnz]``, the entmax probability of each entry
    lengths : int64 ``[S]``
    causal : bool
    """

    counts: torch.Tensor
    cols: torch.Tensor
    probs: torch.Tensor
    lengths: torch.Tensor
    causal: bool

    def __post_init__(self):
        self.rowptr = torch.zeros(self.counts.numel() + 1, dtype=torch.int64)
        torch.cumsum(self.counts.flatten(), 0, out=self.rowptr[1:])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.counts.shape)

    def block(self, s: int, i0: int, i1: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask and probabilities of rows ``i0 <= i < i1`` of sample ``s``, all heads.

        Returns
        -------
        mask : bool ``[H, i1 - i0, n]`` and probs : float32 ``[H, i1 - i0, n]``
        """
        _, nh, t = self.counts.shape
        b = i1 - i0
        mask = torch.zeros(nh * b, n, dtype=torch.bool)
        probs = torch.zeros(nh * b, n, dtype=torch.float32)
        # CSR rows (s, h, i) for every head at once: row r = h * b + (i - i0) of the block.
        first = (s * nh + torch.arange(nh)[:, None]) * t + torch.arange(i0, i1)[None, :]  # [H, B]
        starts = self.rowptr[first.flatten()]
        cnt = self.counts[s, :, i0:i1].flatten()
        rows = torch.repeat_interleave(torch.arange(nh * b), cnt)
        within = torch.arange(rows.numel()) - torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
        src = starts[rows] + within
        cols = self.cols[src].long()
        mask[rows, cols] = True
        probs[rows, cols] = self.probs[src]
        return mask.view(nh, b, n), probs.view(nh, b, n)

    def sparsity(self) -> torch.Tensor:
        """Gold sparsity per sample and head, ``[S, H]``: 1 - |support| / |valid pairs|."""
        n = self.lengths.double()
        valid = n * (n + 1) / 2 if self.causal else n * n
        return 1.0 - self.counts.sum(-1).double() / valid[:, None]

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.counts": self.counts, f"{prefix}.cols": self.cols, f"{prefix}.probs": self.probs}


def layer_gold(view: LayerView, block: int = 256, progress=None) -> LayerGold:
    """Exact gold attention of one layer, computed ``block`` queries at a time.

    ``view.q``, ``view.k`` are ``[S, H, T, D]``. Memory is ``O(H * block * n)``.
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


@dataclass
class Gold:
    """Gold attention of every layer of a dataset, and how long it took."""

    layers: list[LayerGold]
    seconds: float
    bisect_iters: int | None

    def sparsity(self) -> torch.Tensor:
        """Mean gold sparsity over samples, per layer and head: ``[L, H]``."""
        return torch.stack([g.sparsity().mean(0) for g in self.layers])


def compute_gold(data: AttentionData, block: int = 256, show_progress: bool = False) -> Gold:
    """Exact gold attention of every layer of ``data`` (see :func:`layer_gold`)."""
    from tqdm.auto import tqdm

    rows = int(data.lengths.sum()) * data.num_heads * data.num_layers
    start = time.perf_counter()
    with tqdm(total=rows, desc=f"gold {data.name}", unit="row", disable=not show_progress) as bar:
        layers = [layer_gold(data.layer(li), block=block, progress=bar) for li in range(data.num_layers)]
    return Gold(layers=layers, seconds=time.perf_counter() - start,
                bisect_iters=None if data.alpha == 1.5 else BISECT_ITERS)
