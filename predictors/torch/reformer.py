"""Reformer LSH attention (Kitaev et al., 2020) as a sparsity predictor.

Reformer shares one space for queries and keys: here both are L2-normalised, then hashed with the
same random Gaussian matrix ``R`` (``d x b/2``) per layer, head and round. The bucket of a vector
``x`` in one round is

    bucket(x) = argmax([x R ; -x R])          in {0, ..., b - 1}

and a pair ``(i, j)`` is predicted when ``q_i`` and ``k_j`` share a bucket in at least one of the ``h``
rounds. A query equal to a key always lands in that key's buckets.

``space`` picks what is hashed: ``raw``, the head's own ``d``-dimensional queries and keys, or ``proj``,
the ``r = 4`` dimensional learned Sparsefinder projections of :mod:`predictors.projections` (fitted on
the fit samples' gold graph).

The rotations are drawn in :meth:`fit`, round by round from one generator seeded by the predictor seed,
so for the same seed and ``b`` the first rounds of ``h = 4`` are the rounds of ``h = 2``: more rounds
only add pairs.
"""

from __future__ import annotations

import torch

from predictors.base import Param, Predictor
from predictors.errors import PredictorError
from predictors.graphs import CodeGraph
from predictors.projections import cached_projections, projection_key
from predictors.registry import register

PROJ_DIM = 4

SPACE = Param("space", "", str, "raw", choices=("raw", "proj"),
              doc="raw: the head's own q/k; proj: the learned Sparsefinder projections (r = 4)")


def fit_projections(data, gold, seed: int):
    """The learned ``r = 4`` projections of the ``proj`` space, separate maps for q and k.

    Trained once per ``(data, seed)`` in a process (:func:`predictors.projections.cached_projections`),
    so every bucket or cluster count of a sweep shares them.
    """
    return cached_projections(data, gold, r=PROJ_DIM, shared=False, seed=seed)


def space_qk(view, layer: int, projections) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float32 queries and keys ``[S, H, T, d']`` in the predictor's space.

    ``projections`` is ``None`` for the raw space (``d' = d``), else the fitted projection object
    (``d' = r``). Zero vectors (padding) stay zero.
    """
    if projections is None:
        q, k = view.q, view.k
    else:
        q, k = projections.apply(view, layer)
    q = torch.nn.functional.normalize(q.float(), dim=-1)
    k = torch.nn.functional.normalize(k.float(), dim=-1)
    return q, k


def padding_to_minus_one(codes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Set the codes of padding positions (``t >= length``) of ``codes [S, H, T, R]`` to ``-1``."""
    t = codes.shape[2]
    pad = torch.arange(t, device=codes.device)[None, :] >= lengths.to(codes.device)[:, None]
    return codes.masked_fill(pad[:, None, :, None], -1)


@register
class ReformerLSH(Predictor):
    """Reformer LSH: ``h`` rounds of ``b`` angular buckets in a shared, normalised q/k space.

    FLOPs per head, one sample of ``n`` tokens, head dim ``d``: hashing one side is ``n x d'`` times
    ``d' x (b/2)`` per round, ``2 n d' (b/2) h``, so for queries and keys

        raw:  2 * 2 n d (b/2) h            = 2 n d b h
        proj: 2 * (2 n d r + 2 n r (b/2) h) = 4 n d r + 2 n r b h      (r = 4; first term: projection)

    The argmax over ``b`` values and the normalisation are ``O(n b h)`` and ``O(n d)`` and not counted.
    """

    kind = "hashing"
    family = "reformer"
    randomised = True  # random rotations (and, in the proj space, seeded projections)
    params = (
        SPACE,
        Param("b", "b", int, 8, doc="buckets per round (even): R has b/2 columns"),
        Param("h", "h", int, 2, doc="hash rounds, OR-ed"),
    )

    def __init__(self, seed: int = 0, **values):
        super().__init__(seed=seed, **values)
        self.learned = self.space == "proj" or self.s > 0  # raw only reads shapes from the fit data
        self.rotations = None  # [L, H, h, d', b/2]
        self.projections = None

    def check(self):
        super().check()
        if self.b < 2 or self.b % 2:
            raise PredictorError(f"{self.family}: buckets b must be even and >= 2, got {self.b}")
        if self.h < 1:
            raise PredictorError(f"{self.family}: rounds h must be >= 1, got {self.h}")

    def shared_fit(self):
        return projection_key(PROJ_DIM, False, self.seed) if self.space == "proj" else None

    def _fit(self, data, gold):
        self.projections = fit_projections(data, gold, self.seed) if self.space == "proj" else None
        dim = PROJ_DIM if self.space == "proj" else data.head_dim
        gen = torch.Generator().manual_seed(self.seed)
        shape = (data.num_layers, data.num_heads, dim, self.b // 2)
        # One draw per round, in order, so that round m is the same for every h.
        self.rotations = torch.stack([torch.randn(shape, generator=gen) for _ in range(self.h)], dim=2)

    def _predict(self, view, layer):
        s_count, nh = view.q.shape[:2]
        self.check_fitted(layer, nh, *self.rotations.shape[:2])
        q, k = space_qk(view, layer, self.projections)
        rot = self.rotations[layer].to(q.device)  # [H, h, d', b/2]
        self.check_fitted(layer, nh, *self.rotations.shape[:2], q.shape[-1], rot.shape[2])
        return CodeGraph(self.buckets(q, rot, view.lengths), self.buckets(k, rot, view.lengths),
                         num_codes=self.b, matched_rounds=True)

    @staticmethod
    def buckets(x: torch.Tensor, rot: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Buckets ``argmax([x R; -x R])`` of ``x [S, H, T, d']`` under ``rot [H, h, d', b/2]``.

        Returns int64 ``[S, H, T, h]`` on the CPU, ``-1`` on padding.
        """
        proj = torch.einsum("shtd,hrdc->shtrc", x, rot)
        codes = torch.cat([proj, -proj], dim=-1).argmax(dim=-1)
        return padding_to_minus_one(codes, lengths).cpu()

    def _flops(self, n, d):
        if self.space == "proj":
            return 2 * (2 * n * d * PROJ_DIM + 2 * n * PROJ_DIM * (self.b // 2) * self.h)
        return 2 * (2 * n * d * (self.b // 2) * self.h)
