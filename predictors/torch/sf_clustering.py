"""Sparsefinder by clustering (``sf-kmeans``): a pair is predicted when it shares a nearby centroid.

Per layer and head, ``k`` centroids are fitted by k-means (:func:`predictors.kmeans.kmeans`,
k-means++ seeding, seeded by the predictor's seed) on the union of the fit samples' projected
queries and keys (:mod:`predictors.projections`). At prediction every projected query and key is
assigned its ``top`` nearest centroids, and a pair ``(i, j)`` is predicted when the two sets
intersect: a :class:`~predictors.graphs.CodeGraph` with ``matched_rounds=False``. For the same fitted
centroids (``top`` does not enter the fit), the graph of ``top = t + 1`` contains the graph of ``top = t``.
"""

from __future__ import annotations

import torch

from predictors.base import Param
from predictors.errors import PredictorError
from predictors.graphs import CodeGraph
from predictors.kmeans import assign, kmeans
from predictors.projections import PROJECTION_PARAMS, ProjectedPredictor, projected_points, projection_flops
from predictors.registry import register

KMEANS_ITERS = 25


@register
class SparsefinderClustering(ProjectedPredictor):
    """Top-``top`` nearest of ``k`` centroids; names ``sf-kmeans-r4-k16-top2``, ``sf-kmeans-r4-k16-top2-w11-g1``.

    Parameters: ``r`` projected dimension, ``proj`` sep|shared, ``k`` clusters per head, ``top``
    centroids per query and per key, plus the common ``w`` and ``g``.

    FLOPs per head for one sample of ``n`` tokens, head dimension ``d``:

    * projection: ``2 n d r`` per side, ``4 n d r`` in all;
    * centroid assignment: ``2 n k r`` per side (``x.c`` products; the norms are negligible),
      ``4 n k r`` in all, plus ``top`` passes of ``k`` comparisons per point, ``2 n k top``;
    * pairs: intersecting two sets of ``top`` ids, ``top^2 n^2`` comparisons.
    """

    kind = "learned"
    family = "sf-kmeans"
    params = PROJECTION_PARAMS + (
        Param("k", "k", int, 16, doc="centroids per layer and head"),
        Param("top", "top", int, 1, doc="nearest centroids per query and per key"),
    )

    def check_family(self) -> None:
        k, top = self.values["k"], self.values["top"]
        if k < 1 or not 1 <= top <= k:
            raise PredictorError(f"{self.family}: need k >= 1 and 1 <= top <= k, got k={k}, top={top}")

    def _fit_projected(self, data, gold) -> None:
        # One generator for all layers, seeded apart from the projections' own streams.
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + 7_919) % (2 ** 63))
        try:  # [L, H, k, r]
            self.centroids = torch.stack([
                kmeans(projected_points(self.projections, data, layer), self.values["k"], iters=KMEANS_ITERS,
                       seed=gen)
                for layer in range(data.num_layers)])
        except ValueError as err:
            raise PredictorError(f"{self.name}: {err}") from None

    def codes(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """The ``top`` nearest centroids of projected points ``x`` ``[S, H, T, r]``: int64 ``[S, H, T, top]``."""
        s, h, t, r = x.shape
        c = self.centroids[layer].to(x.device)
        ids = assign(x.transpose(0, 1).reshape(h, s * t, r), c, self.values["top"])
        return ids.reshape(h, s, t, -1).transpose(0, 1)

    def _predict(self, view, layer):
        qp, kp = self.project(view, layer)
        return CodeGraph(self.codes(qp, layer), self.codes(kp, layer), self.values["k"], matched_rounds=False)

    def _flops(self, n, d):
        r, k, top = self.values["r"], self.values["k"], self.values["top"]
        return projection_flops(n, d, r) + 4.0 * n * k * r + 2.0 * n * k * top + float(top * top) * n * n
