"""FAISS twin of Sparsefinder clustering (:mod:`predictors.torch.sf_clustering`): same name and graph.

Fit: the learned projections are the torch twin's (the same in-process cache); per layer, the union of
the projected fit queries and keys is clustered per head by
:func:`predictors.faiss.common.faiss_kmeans` (``faiss.Clustering`` from the torch twin's k-means++
seeding, drawn from the same generator stream).

Predict: per head, a flat L2 index holds the ``k`` centroids and is searched with ``k = top`` by the
projected queries and keys of every sample together: each point's ``top`` nearest centroids, nearest
first, as the torch twin's :func:`predictors.kmeans.assign`. Padding positions are assigned like any
other point (the projections set them to 0), as in the torch twin; the metrics never read them.
"""

from __future__ import annotations

import numpy as np
import torch

from predictors.errors import PredictorError
from predictors.faiss.common import FaissTwin, as_float32, faiss_kmeans, faiss_threads, search
from predictors.graphs import CodeGraph
from predictors.projections import projected_points
from predictors.registry import register
from predictors.torch.sf_clustering import KMEANS_ITERS, SparsefinderClustering


def centroid_generator(seed: int) -> torch.Generator:
    """The torch twin's k-means generator: one stream for all layers, apart from the projections'."""
    return torch.Generator().manual_seed((seed * 1_000_003 + 7_919) % (2 ** 63))


def nearest_centroids(xs: list[torch.Tensor], centroids: torch.Tensor, top: int,
                      device: str = "cpu") -> list[torch.Tensor]:
    """The ``top`` nearest of ``centroids [H, k, r]`` for each point of each ``x [S, H, T, r]`` in ``xs``.

    One FAISS search per head for all inputs together. Returns int64 ``[S, H, T, top]`` per input,
    nearest first.
    """
    s_count, nh, t, r = xs[0].shape
    points = as_float32(torch.stack(xs).permute(2, 0, 1, 3, 4).reshape(nh, -1, r))  # [H, len(xs)*S*T, r]
    cents = as_float32(centroids)
    ids = np.empty((nh, points.shape[1], top), dtype=np.int64)
    for h in range(nh):
        search("l2", cents[h], points[h], top, device, out=ids[h])
    out = torch.from_numpy(ids).reshape(nh, len(xs), s_count, t, top).permute(1, 2, 0, 3, 4)
    return [c.contiguous() for c in out]


@register
class FaissSparsefinderClustering(FaissTwin, SparsefinderClustering):
    """Sparsefinder clustering through FAISS; see the module docstring and :class:`SparsefinderClustering`.

    ``device``: ``"cpu"`` or ``"cuda"`` (keyword only, not part of the name). After fitting,
    ``kmeans_info`` holds the per-layer :class:`~predictors.faiss.common.KMeansInfo`.
    """

    def _fit_projected(self, data, gold) -> None:
        gen = centroid_generator(self.seed)
        centroids, self.kmeans_info = [], []
        with faiss_threads():
            for layer in range(data.num_layers):
                try:
                    c, info = faiss_kmeans(projected_points(self.projections, data, layer), self.values["k"],
                                           KMEANS_ITERS, gen, self.device)
                except ValueError as err:  # fewer fit points than clusters
                    raise PredictorError(f"{self.name}: {err}") from None
                centroids.append(c)
                self.kmeans_info.append(info)
        self.centroids = torch.stack(centroids)  # [L, H, k, r]

    def codes(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """The ``top`` nearest centroids of projected points ``x`` ``[S, H, T, r]``: int64 ``[S, H, T, top]``."""
        with faiss_threads():
            return nearest_centroids([x], self.centroids[layer], self.values["top"], self.device)[0]

    def _predict(self, view, layer):
        qp, kp = self.project(view, layer)
        with faiss_threads():
            qc, kc = nearest_centroids([qp, kp], self.centroids[layer], self.values["top"], self.device)
        return CodeGraph(qc, kc, self.values["k"], matched_rounds=False)
