"""1.5-entmax over rows of gathered scores, in few passes: the probabilities of the sparse execution.

The same mathematics as :func:`predictors.entmax.row_entmax` (``z = (s - max) / 2`` over the allowed
entries; ``p = max(z - tau, 0)^2`` with the exact threshold ``tau`` of the sort-based algorithm),
written for the sparse execution: in place, no autograd, and rows without any allowed entry all zero.
"""

from __future__ import annotations

import torch

from predictors.entmax import dense_into, partial_k, row_entmax, threshold15, uses_kernel
from predictors.masking import MASK_GAP

#: Entries of a shifted, halved row (``z = (s - max s) / 2``, so ``max z = 0``) below this are never in
#: the 1.5-entmax support, nor counted by the sort-based formula: its threshold at every prefix is at
#: least ``max z - 1 = -1`` (one term of ``sum (z - tau)^2 = 1`` is ``(0 - tau)^2``), less a rounding
#: error far below the margin of ``1e-3`` (every value it is compared with lies in ``[-1, 0]``).
CANDIDATE_FLOOR = -1.001


def top_values(z: torch.Tensor, k: int) -> torch.Tensor:
    """What ``z.topk(k).values`` gives for the threshold of :func:`threshold15`, ``[R, k]`` for shifted,
    halved rows ``z`` ``[R, m]`` (``k < m``): the ``k`` largest entries at or above
    :data:`CANDIDATE_FLOOR` in decreasing order (the same floats), the rest ``-MASK_GAP / 2``.

    Only the candidates can be in the support or change the formula's threshold (at every prefix up to
    the support the same floats are summed in the same order; past the support no entry is counted, a
    candidate or a filler), so ``tau`` is bit for bit ``topk``'s. Real rows hold a few candidates of
    hundreds or thousands of entries: a comparison, ``nonzero`` and a sort of the candidates cost a
    fraction of ``topk``'s partial sort of every entry (about 10 ns an entry on one CPU thread).
    """
    r = z.shape[0]
    rows, cols = (z >= CANDIDATE_FLOOR).nonzero(as_tuple=True)
    vals = z[rows, cols]
    order = vals.argsort(descending=True, stable=True)
    order = order[rows[order].argsort(stable=True)]  # by row, decreasing within a row
    rows, vals = rows[order], vals[order]
    counts = torch.bincount(rows, minlength=r)
    first = torch.cumsum(counts, 0) - counts  # where each row's candidates start
    pos = torch.arange(rows.numel(), device=z.device) - first[rows]
    keep = pos < k
    out = z.new_full((r, k), -MASK_GAP / 2)
    out[rows[keep], pos[keep]] = vals[keep]
    return out


def entmax15_rows(scores: torch.Tensor, allowed: torch.Tensor, topk: bool = True) -> torch.Tensor:
    """1.5-entmax of each row of ``scores`` ``[R, m]`` over its ``allowed`` entries, in few passes.

    The same mathematics as :func:`row_entmax` (``z = (s - max) / 2`` over the allowed entries, the
    others set to ``-MASK_GAP / 2``; ``p = max(z - tau, 0)^2`` with the exact threshold ``tau`` of the
    sort-based algorithm, from the ``partial_k(m)`` largest ``z`` of each row (:func:`top_values`) and
    twice as many for the rows whose support fills them; rows without any allowed entry, the padding
    slots of code blocks, are never widened), written for the sparse execution: in place, no
    autograd, and the rows without any allowed entry all zero. ``scores`` is overwritten. On the CPU
    the compiled kernel computes the same floats (:func:`predictors.entmax.dense_into`).
    """
    r, m = scores.shape
    if m == 0:
        return scores
    if uses_kernel(scores):
        return dense_into(scores.view(1, r, m), scores, partial_k(m) if topk else m, allowed).view(r, m)
    lowest = torch.finfo(scores.dtype).min
    banned = ~allowed
    mx = scores.masked_fill_(banned, lowest).amax(-1, keepdim=True)
    # lowest - mx rounds to lowest (no overflow); those entries are set to the gap right after (never a
    # candidate of top_values; leaving them at about lowest / 2 measured slower end to end).
    z = scores.sub_(mx).mul_(0.5).masked_fill_(banned, -MASK_GAP / 2)

    def largest_z(at: torch.Tensor | None, k: int) -> torch.Tensor:
        sub = z if at is None else z.index_select(0, at)
        return top_values(sub, k) if k < m else sub.sort(dim=-1, descending=True).values

    k = partial_k(m) if topk else m
    tau, support = threshold15(largest_z(None, k))
    # Rows whose support fills k are widened; a row with no allowed entry (a padding slot of a code
    # block) looks full (every entry the same) but is all zeros below: never widened.
    empty_row = mx[:, 0] == lowest
    unsure = ((support[:, 0] == k) & ~empty_row).nonzero().flatten() if k < m else support.new_zeros(0)
    while unsure.numel():
        k = min(m, 2 * k)
        t2, s2 = threshold15(largest_z(unsure, k))
        tau[unsure], support[unsure] = t2, s2
        unsure = unsure[(s2[:, 0] == k).nonzero().flatten()] if k < m else unsure[:0]
    p = z.sub_(tau).clamp_(min=0).square_()
    empty = empty_row.nonzero().flatten()
    if empty.numel():
        p[empty] = 0.0
    return p


def rows_p(scores: torch.Tensor, allowed: torch.Tensor, alpha: float) -> torch.Tensor:
    """Restricted probabilities of the sparse execution: :func:`entmax15_rows` for alpha = 1.5,
    :func:`predictors.entmax.row_entmax` (bisection) otherwise."""
    if alpha == 1.5:
        return entmax15_rows(scores, allowed)
    return row_entmax(scores, allowed, alpha)
