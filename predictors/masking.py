"""Validity masks and masked scores, shared by the gold graph, the metrics and restricted attention.

Masked entries get a large *finite* negative, never ``-inf``: entmax's sort-based threshold computes
cumulative sums of squares, which ``-inf`` turns into NaN. An entry more than ``1 / (alpha - 1)`` below
the row maximum has zero alpha-entmax probability, so a masked entry sits ``gap`` below its row's
valid maximum ``m``, with

    gap = max(MASK_GAP, |m| * GAP_SCALE)        (MASK_GAP = 1e4, GAP_SCALE = 2^-8)

and never below float32's lowest finite value. For ordinary scores (``|m| <= MASK_GAP / GAP_SCALE``,
about 2.6e6) the gap is the constant 1e4, the same bits as always: far enough to keep masked entries out
of every support, small enough for float32 sums. For larger scores a constant would vanish in float32
(at ``|m| = 1e12`` one unit in the last place is 65536, so ``m - 1e4 == m`` and masked keys would enter
the gold); ``|m| / 256`` is 2^15 units in the last place of ``m``, so the masked entry is always well
below ``m`` and ``m - gap`` stays finite for every finite ``m``. Scores that are not finite are
refused before they get here (:func:`bench.evaluation.gold.layer_gold`).
"""

from __future__ import annotations

import torch

MASK_GAP = 1e4
GAP_SCALE = 2.0 ** -8


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
    """Replace disallowed entries of ``scores`` ``[..., B, n]`` by (row max over allowed) - gap, the gap of the
    module docstring (1e4 for ordinary scores), so they have alpha-entmax probability exactly 0.

    ``allowed`` broadcasts against ``scores``. Rows with no allowed entry are left to the caller.
    """
    lowest = torch.finfo(scores.dtype).min
    row_max = scores.masked_fill(~allowed, lowest).amax(dim=-1, keepdim=True)
    row_max = torch.where(row_max == lowest, torch.zeros_like(row_max), row_max)
    gap = row_max.abs().mul_(GAP_SCALE).clamp_(min=MASK_GAP)
    return torch.where(allowed, scores, (row_max - gap).clamp_(min=lowest))


def valid_pair_count(n: int, causal: bool) -> int:
    """Number of valid (query, key) pairs of a sample with ``n`` tokens: n^2, or n(n+1)/2 if causal."""
    return n * (n + 1) // 2 if causal else n * n
