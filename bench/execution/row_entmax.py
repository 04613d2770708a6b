"""1.5-entmax over rows of gathered scores, in few passes: the probabilities of the sparse execution.

The same mathematics as :func:`predictors.entmax.row_entmax` (``z = (s - max) / 2`` over the allowed
entries; ``p = max(z - tau, 0)^2`` with the exact threshold ``tau`` of the sort-based algorithm),
written for the sparse execution: in place, no autograd, and rows without any allowed entry all zero.
"""

from __future__ import annotations

import torch

from predictors.entmax import partial_k, row_entmax, threshold15
from predictors.masking import MASK_GAP


def entmax15_rows(scores: torch.Tensor, allowed: torch.Tensor, topk: bool = True) -> torch.Tensor:
    """1.5-entmax of each row of ``scores`` ``[R, m]`` over its ``allowed`` entries, in few passes.

    The same mathematics as :func:`row_entmax` (``z = (s - max) / 2`` over the allowed entries, the
    others set to ``-MASK_GAP / 2``; ``p = max(z - tau, 0)^2`` with the exact threshold ``tau`` of the
    sort-based algorithm, from the ``partial_k(m)`` largest ``z`` of each row and twice as many for the
    rows whose support fills them), written for the sparse execution: in place, no autograd, and the
    rows without any allowed entry all zero. ``scores`` is overwritten.
    """
    r, m = scores.shape
    if m == 0:
        return scores
    lowest = torch.finfo(scores.dtype).min
    banned = ~allowed
    mx = scores.masked_fill_(banned, lowest).amax(-1, keepdim=True)
    # lowest - mx rounds to lowest (no overflow); those entries are set to the gap right after.
    z = scores.sub_(mx).mul_(0.5).masked_fill_(banned, -MASK_GAP / 2)
    k = partial_k(m) if topk else m
    tau, support = threshold15(z.topk(k, dim=-1).values if k < m else z.sort(dim=-1, descending=True).values)
    unsure = (support[:, 0] == k).nonzero().flatten() if k < m else support.new_zeros(0)
    while unsure.numel():
        k = min(m, 2 * k)
        sub = z.index_select(0, unsure)
        t2, s2 = threshold15(sub.topk(k, dim=-1).values if k < m else sub.sort(dim=-1, descending=True).values)
        tau[unsure], support[unsure] = t2, s2
        unsure = unsure[(s2[:, 0] == k).nonzero().flatten()] if k < m else unsure[:0]
    p = z.sub_(tau).clamp_(min=0).square_()
    empty = (mx[:, 0] == lowest).nonzero().flatten()
    if empty.numel():
        p[empty] = 0.0
    return p


def rows_p(scores: torch.Tensor, allowed: torch.Tensor, alpha: float) -> torch.Tensor:
    """Restricted probabilities of the sparse execution: :func:`entmax15_rows` for alpha = 1.5,
    :func:`predictors.entmax.row_entmax` (bisection) otherwise."""
    if alpha == 1.5:
        return entmax15_rows(scores, allowed)
    return row_entmax(scores, allowed, alpha)
