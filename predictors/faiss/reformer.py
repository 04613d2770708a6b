"""FAISS twin of Reformer LSH (:mod:`predictors.torch.reformer`): same rotations, same buckets.

Fit is the torch twin's own (the rotations ``R`` ``[L, H, h, d', b/2]`` are drawn from the same
generator, so they are equal, not merely alike). Predict hashes through FAISS: per head and round, a
flat inner-product index holds the ``b`` signed rotation columns

    [R_:,0, ..., R_:,b/2-1, -R_:,0, ..., -R_:,b/2-1]          (b vectors of dimension d')

as "centroids", and a search with ``k = 1`` returns, for each normalised query and key ``x``,

    argmax_c  x . [R; -R]_c  =  argmax([x R; -x R])

the torch twin's bucket. Ties go to the lower column in both (a first maximum). Padding gets ``-1``.
"""

from __future__ import annotations

import numpy as np
import torch

from predictors.faiss.common import FaissTwin, as_float32, faiss_threads, search
from predictors.graphs import CodeGraph
from predictors.registry import register
from predictors.torch.reformer import ReformerLSH, padding_to_minus_one, space_qk


def faiss_buckets(xs: list[torch.Tensor], rot: torch.Tensor, lengths: torch.Tensor,
                  device: str = "cpu") -> list[torch.Tensor]:
    """Buckets ``argmax([x R; -x R])`` of each ``x [S, H, T, d']`` in ``xs`` under ``rot [H, h, d', b/2]``.

    All tensors of ``xs`` (queries and keys) are hashed together, one FAISS search per head and round.
    Returns int64 ``[S, H, T, h]`` per input, on the CPU, ``-1`` on padding.
    """
    s_count, nh, t, d = xs[0].shape
    rounds = rot.shape[1]
    # Tokens of every input, grouped by head: [H, len(xs) * S * T, d'].
    tokens = as_float32(torch.stack(xs).permute(2, 0, 1, 3, 4).reshape(nh, -1, d))
    signed = as_float32(torch.cat([rot, -rot], dim=-1).transpose(-1, -2))  # [H, h, b, d']
    codes = np.empty((nh, rounds, tokens.shape[1], 1), dtype=np.int64)
    for h in range(nh):
        for r in range(rounds):
            search("ip", signed[h, r], tokens[h], 1, device, out=codes[h, r])
    out = torch.from_numpy(codes).reshape(nh, rounds, len(xs), s_count, t).permute(2, 3, 0, 4, 1)
    return [padding_to_minus_one(c, lengths).contiguous() for c in out]


@register
class FaissReformerLSH(FaissTwin, ReformerLSH):
    """Reformer LSH hashed through FAISS; see the module docstring and :class:`ReformerLSH`.

    ``device``: ``"cpu"`` or ``"cuda"`` (keyword only, not part of the name).
    """

    def _predict(self, view, layer):
        self.check_fitted(layer, view.q.shape[1], *self.rotations.shape[:2])
        q, k = space_qk(view, layer, self.projections)
        rot = self.rotations[layer]  # [H, h, d', b/2]
        self.check_fitted(layer, view.q.shape[1], *self.rotations.shape[:2], q.shape[-1], rot.shape[2])
        with faiss_threads():
            qb, kb = faiss_buckets([q, k], rot, view.lengths, self.device)
        return CodeGraph(qb, kb, num_codes=self.b, matched_rounds=True)
