"""Routing Transformer attention (Roy et al., 2021) as a sparsity predictor: balanced k-means routing.

Fit: per layer and head, ``k`` centroids by k-means (:func:`predictors.kmeans.kmeans`, k-means++
seeding from the predictor seed, at most ``KMEANS_ITERS`` Lloyd iterations) on the L2-normalised
queries and keys of the fit samples (their union, valid tokens only), in the ``raw`` head space or
the learned ``proj`` space (see :mod:`predictors.torch.reformer`).

Predict: the clusters are *balanced*, as in the Routing Transformer: for a sample of ``n`` valid
tokens each cluster ``c`` keeps the

    m = ceil(n / k)          (which is <= n, and >= 1)

queries closest to its centroid ``mu_c``, and separately the ``m`` keys closest to it. For unit vectors
``||x - mu_c||^2 = 1 + ||mu_c||^2 - 2 x . mu_c``, so "closest" is "largest ``x . mu_c``". ``ceil``
rather than ``floor`` makes the ``k`` clusters hold at least ``n`` tokens per side together. A token may
be kept by several clusters, or by none. A pair ``(i, j)`` is predicted when some cluster keeps both
query ``i`` and key ``j``.
"""

from __future__ import annotations

import math

import torch

from predictors.base import Param, Predictor
from predictors.errors import PredictorError
from predictors.graphs import CodeGraph
from predictors.kmeans import kmeans
from predictors.projections import projection_key
from predictors.registry import register
from predictors.torch.reformer import PROJ_DIM, SPACE, fit_projections, space_qk

KMEANS_ITERS = 25


def balanced_codes(x: torch.Tensor, centroids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Cluster memberships of balanced routing, as code columns.

    Parameters
    ----------
    x : float ``[S, H, T, r]``, unit vectors (one side: queries or keys)
    centroids : float ``[H, k, r]``
    lengths : int64 ``[S]``

    Returns
    -------
    int64 ``[S, H, T, R]`` on the CPU: the clusters that keep each token (ascending), ``-1`` padded;
    ``R`` is the largest number of clusters any token is kept by (at least 1). Cluster ``c`` keeps the
    ``ceil(n_s / k)`` valid tokens of sample ``s`` with the largest ``x . mu_c``.
    """
    s_count, nh, t, _ = x.shape
    k = centroids.shape[1]
    scores = torch.einsum("shtr,hcr->shct", x, centroids.to(x.device))  # [S, H, k, T]
    valid = torch.arange(t, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # [S, T]
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    keep = torch.tensor([math.ceil(int(n) / k) for n in lengths], device=x.device)  # [S], <= n
    top = scores.topk(int(keep.max()), dim=-1).indices  # [S, H, k, m_max]
    rank_ok = torch.arange(top.shape[-1], device=x.device)[None, :] < keep[:, None]  # [S, m_max]
    member = torch.zeros(s_count, nh, k, t + 1, dtype=torch.bool, device=x.device)
    # Ranks beyond the sample's own m go to a dump column t, dropped below.
    member.scatter_(3, torch.where(rank_ok[:, None, None, :], top, t), True)
    member = member[..., :t].transpose(2, 3)  # [S, H, T, k]
    width = max(1, int(member.sum(-1).max()))
    # Kept clusters in ascending order, then padding: sort with k standing for "not kept".
    codes = torch.where(member, torch.arange(k, device=x.device), k).sort(dim=-1).values[..., :width]
    return torch.where(codes < k, codes, -1).cpu()


@register
class RoutingKMeans(Predictor):
    """Routing Transformer: balanced k-means routing of normalised queries and keys.

    FLOPs per head, one sample of ``n`` tokens, head dim ``d``: scoring one side against the ``k``
    centroids is ``2 n d' k``, and keeping the top ``ceil(n/k)`` tokens of each of the ``k`` clusters is
    counted as one comparison per score, ``n k``. For queries and keys:

        raw:  2 * (2 n d k + n k)
        proj: 2 * (2 n d r + 2 n r k + n k)      (r = 4; first term: the projection)

    The normalisation (``O(n d)``) is not counted; k-means runs in fit and is not prediction.
    """

    kind = "learned"
    family = "routing"
    learned = True
    randomised = True  # k-means++ seeding (and, in the proj space, seeded projections)
    params = (SPACE, Param("k", "k", int, 8, doc="clusters"))

    def __init__(self, seed: int = 0, **values):
        super().__init__(seed=seed, **values)
        self.centroids = None  # [L, H, k, d']
        self.projections = None

    def check(self):
        super().check()
        if self.k < 1:
            raise PredictorError(f"{self.family}: clusters k must be >= 1, got {self.k}")

    def shared_fit(self):
        return projection_key(PROJ_DIM, False, self.seed) if self.space == "proj" else None

    def _fit(self, data, gold):
        self.projections = fit_projections(data, gold, self.seed) if self.space == "proj" else None
        # One generator for every layer's seeding; one k-means call per layer, batched over heads, so
        # memory stays at one layer's points.
        gen = torch.Generator().manual_seed(self.seed)
        centroids = []
        for layer in range(data.num_layers):
            q, k = space_qk(data.layer(layer), layer, self.projections)
            # Union of the valid queries and keys of every fit sample, per head: [H, N, d'].
            x = torch.cat([side[s, :, :int(n)] for s, n in enumerate(data.lengths) for side in (q, k)], dim=1)
            try:
                centroids.append(kmeans(x, self.k, iters=KMEANS_ITERS, seed=gen))
            except ValueError as err:  # fewer fit points than clusters
                raise PredictorError(f"{self.name}: {err}") from None
        self.centroids = torch.stack(centroids)  # [L, H, k, d']

    def _predict(self, view, layer):
        self.check_fitted(layer, view.q.shape[1], *self.centroids.shape[:2])
        q, k = space_qk(view, layer, self.projections)
        mu = self.centroids[layer]
        self.check_fitted(layer, view.q.shape[1], *self.centroids.shape[:2], q.shape[-1], mu.shape[-1])
        return CodeGraph(balanced_codes(q, mu, view.lengths), balanced_codes(k, mu, view.lengths),
                         num_codes=self.k, matched_rounds=False)

    def _flops(self, n, d):
        if self.space == "proj":
            return 2 * (2 * n * d * PROJ_DIM + 2 * n * PROJ_DIM * self.k + n * self.k)
        return 2 * (2 * n * d * self.k + n * self.k)
