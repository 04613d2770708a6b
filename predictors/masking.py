"""Validity masks and masked scores, shared by the gold graph, the metrics and restricted attention.

Masked entries get a large *finite* negative (the row's valid maximum minus ``MASK_GAP``), never
``-inf``: entmax's sort-based threshold computes cumulative sums of squares, which ``-inf`` turns into
NaN. Any entry more than ``1 / (alpha - 1)`` below the row maximum has zero alpha-entmax
probability, so ``MASK_GAP`` = 1e4 keeps masked entries out of every support while staying small
enough for float32 sums.
"""

from __future__ import annotations

import torch

MASK_GAP = 1e4


def allowed_keys(i0: int, i1: int, n: int, causal: bool, device=None) -> torch.Tensor:
    """Boolean ``[i1 - i0, n]``: which of the ``n`` valid keys each query ``i0 <= i < i1`` may see."""
    if not causal:
        return torch.ones(i1 - i0, n, dtype=torch.bool, device=device)
    i = torch.arange(i0, i1, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    return j <= i


def block_scores(q: torch.Tensor, k: torch.Tensor, scale: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """``scale * q @ k^T`` in float32: ``q`` ``[H, B, D]``, ``k`` ``[H, n, D]`` -> ``[H, B, n]``.

    ``out``: a float32 buffer of at least ``H B n`` elements to write into (the same product, bit for
    bit: one allocation per sample instead of one per block, whose page faults cost as much as the
    product at n = 2048-4096).
    """
    qk = (q.float(), k.float().transpose(-1, -2))
    if out is None:
        return torch.matmul(*qk).mul_(scale)
    h, b, n = q.shape[0], q.shape[1], k.shape[1]
    return torch.matmul(*qk, out=out.view(-1)[: h * b * n].view(h, b, n)).mul_(scale)


def mask_scores(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Replace disallowed entries of ``scores`` ``[..., B, n]`` by (row max over allowed) - MASK_GAP.

    ``allowed`` broadcasts against ``scores``. Rows with no allowed entry are left to the caller.
    """
    lowest = torch.finfo(scores.dtype).min
    row_max = scores.masked_fill(~allowed, lowest).amax(dim=-1, keepdim=True)
    row_max = torch.where(row_max == lowest, torch.zeros_like(row_max), row_max)
    return torch.where(allowed, scores, row_max - MASK_GAP)


def valid_pair_count(n: int, causal: bool) -> int:
    """Number of valid (query, key) pairs of a sample with ``n`` tokens: n^2, or n(n+1)/2 if causal."""
    return n * (n + 1) // 2 if causal else n * n
