"""Sparsefinder by distance (``sf-dist``): a pair is predicted when its projected keys are close.

With the learned projections ``q'_i = q_i W_q``, ``k'_j = k_j W_k`` (see :mod:`predictors.projections`)
the predicted graph of a head is

    metric l2:   { (i, j) : ||q'_i - k'_j||^2 < t }
    metric cos:  { (i, j) : 1 - cos(q'_i, k'_j) < t }

returned as a compact :class:`~predictors.graphs.DistanceGraph` (the projected points and ``t``).
Larger ``t`` predicts a superset. ``t = 0`` predicts nothing (the test is strict).
"""

from __future__ import annotations

from predictors.base import Param
from predictors.errors import PredictorError
from predictors.graphs import DistanceGraph
from predictors.projections import PROJECTION_PARAMS, ProjectedPredictor, projection_flops
from predictors.registry import register

METRICS = {"l2": "l2", "cos": "cosine"}


@register
class SparsefinderDistance(ProjectedPredictor):
    """Threshold on the projected distance; names ``sf-dist-r4-t2``, ``sf-dist-r4-shared-cos-t0.5``.

    Parameters: ``r`` projected dimension, ``proj`` sep|shared, ``metric`` l2|cos, ``t`` threshold,
    plus the common ``w`` and ``g``.

    FLOPs per head for one sample of ``n`` tokens, head dimension ``d``:

    * projection: ``2 n d r`` per side, ``4 n d r`` in all;
    * l2: ``3 r`` per pair (difference, square, sum) for all ``n^2`` pairs, plus one comparison:
      ``n^2 (3 r + 1)``;
    * cos: normalising both sides (``3 n r`` each: square, sum, divide) and a ``2 r`` dot product per
      pair, plus the comparison: ``6 n r + n^2 (2 r + 1)``.

    Causal attention needs only ``n (n + 1) / 2`` of the pairs; the formula counts all ``n^2``.
    """

    kind = "learned"
    family = "sf-dist"
    params = PROJECTION_PARAMS + (
        Param("metric", "", str, "l2", choices=tuple(METRICS), doc="l2: squared L2 distance; cos: 1 - cosine"),
        Param("t", "t", float, 2.0, doc="threshold: a pair is predicted when its distance is below t"),
    )

    def check_family(self) -> None:
        if not self.values["t"] >= 0:
            raise PredictorError(f"{self.family}: threshold t must be >= 0, got {self.values['t']}")

    def _predict(self, view, layer):
        qp, kp = self.project(view, layer)
        return DistanceGraph(qp, kp, self.values["t"], METRICS[self.values["metric"]])

    def _flops(self, n, d):
        r = self.values["r"]
        if self.values["metric"] == "cos":
            pairs = 6.0 * n * r + n * n * (2.0 * r + 1.0)
        else:
            pairs = n * n * (3.0 * r + 1.0)
        return projection_flops(n, d, r) + pairs
