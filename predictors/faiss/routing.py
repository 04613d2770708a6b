"""FAISS twin of Routing k-means (:mod:`predictors.torch.routing`): same name, parameters and graph.

Fit: per layer, the union of the fit samples' normalised queries and keys (in the same order as the
torch twin) is clustered per head by :func:`predictors.faiss.common.faiss_kmeans` (``faiss.Clustering``
from the torch twin's k-means++ seeding, the same generator stream over layers).

Predict: balanced routing searched from the centroid side. For each sample of ``n`` valid tokens, head
and side, a flat inner-product index holds the ``n`` unit vectors and is queried by the ``k`` centroids
with ``m = ceil(n / k)`` neighbours: cluster ``c`` keeps the ``m`` tokens with the largest
``x . mu_c``, exactly the torch twin's rule. Memberships become the same code columns (clusters that
keep a token, ascending, ``-1`` padded to the layer's widest token).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from predictors.errors import PredictorError
from predictors.faiss.common import FaissTwin, as_float32, faiss_kmeans, faiss_threads, search
from predictors.graphs import CodeGraph
from predictors.registry import register
from predictors.torch.reformer import fit_projections, space_qk
from predictors.torch.routing import KMEANS_ITERS, RoutingKMeans


def membership_codes(member: np.ndarray) -> torch.Tensor:
    """Code columns of a membership ``bool [S, H, T, k]``: int64 ``[S, H, T, R]``.

    The clusters holding each token in ascending order, ``-1`` padded; ``R`` is the largest number of
    clusters holding any token (at least 1), as in :func:`predictors.torch.routing.balanced_codes`.
    """
    s_count, nh, t, k = member.shape
    # Kept (token, cluster) pairs in C order: by token, then by ascending cluster.
    token, cluster = np.divmod(np.flatnonzero(member), k)
    count = np.bincount(token, minlength=s_count * nh * t)
    width = max(1, int(count.max())) if count.size else 1
    rank = np.arange(token.size) - (np.cumsum(count) - count)[token]  # position among the token's clusters
    codes = np.full((s_count * nh * t, width), -1, dtype=np.int64)
    codes[token, rank] = cluster
    return torch.from_numpy(codes.reshape(s_count, nh, t, width))


def balanced_codes_faiss(x: torch.Tensor, centroids: torch.Tensor, lengths: torch.Tensor,
                         device: str = "cpu") -> torch.Tensor:
    """:func:`predictors.torch.routing.balanced_codes` with FAISS searches from the centroid side.

    For each sample ``s`` (``n`` valid tokens) and head ``h``, the ``k`` centroids query the ``n``
    tokens for their ``m = ceil(n / k)`` largest inner products.

    Parameters
    ----------
    x : float ``[S, H, T, r]``, unit vectors (one side); centroids : float ``[H, k, r]``;
    lengths : int64 ``[S]``; device : where FAISS searches

    Returns
    -------
    int64 ``[S, H, T, R]`` on the CPU (see :func:`membership_codes`).
    """
    s_count, nh, t, _ = x.shape
    k = centroids.shape[1]
    xs, mus = as_float32(x), as_float32(centroids)
    member = np.zeros((s_count, nh, t, k), dtype=bool)
    heads = np.arange(nh)[:, None, None]
    clusters = np.arange(k)[None, :, None]
    for s, n in enumerate(lengths.tolist()):
        m = math.ceil(n / k)  # <= n
        if m == 0:
            continue
        ids = np.empty((nh, k, m), dtype=np.int64)
        for h in range(nh):
            search("ip", xs[s, h, :n], mus[h], m, device, out=ids[h])
        member[s, heads, ids, clusters] = True
    return membership_codes(member)


@register
class FaissRoutingKMeans(FaissTwin, RoutingKMeans):
    """Routing k-means through FAISS; see the module docstring and :class:`RoutingKMeans`.

    ``device``: ``"cpu"`` or ``"cuda"`` (keyword only, not part of the name). After fitting,
    ``kmeans_info`` holds the per-layer :class:`~predictors.faiss.common.KMeansInfo`.
    """

    def _fit(self, data, gold):
        self.projections = fit_projections(data, gold, self.seed) if self.space == "proj" else None
        # The torch twin's generator and point order, so the k-means++ seeds are the same draws.
        gen = torch.Generator().manual_seed(self.seed)
        centroids, self.kmeans_info = [], []
        with faiss_threads():
            for layer in range(data.num_layers):
                q, k = space_qk(data.layer(layer), layer, self.projections)
                x = torch.cat([side[s, :, :int(n)] for s, n in enumerate(data.lengths) for side in (q, k)], dim=1)
                try:
                    c, info = faiss_kmeans(x, self.k, KMEANS_ITERS, gen, self.device)
                except ValueError as err:  # fewer fit points than clusters
                    raise PredictorError(f"{self.name}: {err}") from None
                centroids.append(c)
                self.kmeans_info.append(info)
        self.centroids = torch.stack(centroids)  # [L, H, k, d']

    def _predict(self, view, layer):
        self.check_fitted(layer, view.q.shape[1], *self.centroids.shape[:2])
        q, k = space_qk(view, layer, self.projections)
        mu = self.centroids[layer]
        self.check_fitted(layer, view.q.shape[1], *self.centroids.shape[:2], q.shape[-1], mu.shape[-1])
        with faiss_threads():
            qc = balanced_codes_faiss(q, mu, view.lengths, self.device)
            kc = balanced_codes_faiss(k, mu, view.lengths, self.device)
        return CodeGraph(qc, kc, num_codes=self.k, matched_rounds=False)
