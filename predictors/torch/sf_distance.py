"""Sparsefinder by distance (``sf-dist``): a pair is predicted when its projected keys are close.

With the learned projections ``q'_i = q_i W_q``, ``k'_j = k_j W_k`` (see :mod:`predictors.projections`)
the predicted graph of a head is

    metric l2:   { (i, j) : ||q'_i - k'_j||^2 < t }
    metric cos:  { (i, j) : 1 - cos(q'_i, k'_j) < t }

returned as a compact :class:`~predictors.graphs.DistanceGraph` (the projected points and ``t``).
Larger ``t`` predicts a superset. ``t = 0`` predicts nothing (the test is strict).

The budget is either one absolute threshold ``t`` for every layer and head (the paper's grid), or a
target sparsity ``sp``: each head's threshold is calibrated on the fit samples so that the share ``sp``
of its valid fit pairs is left out (:mod:`predictors.calibration`; ``sf-dist-r4-sp0.9``).
"""

from __future__ import annotations

from predictors.base import Param
from predictors.calibration import calibrate_below, one_budget
from predictors.errors import PredictorError
from predictors.graphs import DistanceGraph, projected_distances
from predictors.projections import PROJECTION_PARAMS, ProjectedPredictor, projection_flops
from predictors.registry import register

METRICS = {"l2": "l2", "cos": "cosine"}


@register
class SparsefinderDistance(ProjectedPredictor):
    """Threshold on the projected distance; names ``sf-dist-r4-t2``, ``sf-dist-r4-shared-cos-t0.5``.

    Parameters: ``r`` projected dimension, ``proj`` sep|shared, ``metric`` l2|cos, and one budget:
    ``t`` absolute threshold (2 when neither is given) or ``sp`` target sparsity calibrated per layer and
    head on the fit samples; plus the common ``w``, ``g`` and ``s``.

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
        Param("t", "t", float, None, doc="absolute threshold: a pair is predicted when its distance is below t "
              "(default 2 when sp is not given)"),
        Param("sp", "sp", float, None, doc="target sparsity: per-head thresholds calibrated on the fit samples"),
    )

    def check_family(self) -> None:
        if one_budget(self.family, self.values, "t", 2.0):
            return
        t = self.values["t"]
        if not t >= 0:
            raise PredictorError(f"{self.family}: threshold t must be >= 0, got {t}")

    def _fit_projected(self, data, gold) -> None:
        self.thresholds = None
        if self.values["sp"] is None:
            return
        metric = METRICS[self.values["metric"]]

        def layer_distances(layer):
            qp, kp = self.projections.apply(data.layer(layer), layer)
            return lambda s, n: projected_distances(qp[s, :, :n], kp[s, :, :n], metric)

        self.thresholds = calibrate_below(data, self.values["sp"], layer_distances)  # [L, H]

    def _predict(self, view, layer):
        qp, kp = self.project(view, layer)
        if self.values["sp"] is not None:
            self.check_fitted(layer, qp.shape[1], *self.thresholds.shape)
            threshold = self.thresholds[layer]
        else:
            threshold = self.values["t"]
        return DistanceGraph(qp, kp, threshold, METRICS[self.values["metric"]])

    def _flops(self, n, d):
        r = self.values["r"]
        if self.values["metric"] == "cos":
            pairs = 6.0 * n * r + n * n * (2.0 * r + 1.0)
        else:
            pairs = n * n * (3.0 * r + 1.0)
        return projection_flops(n, d, r) + pairs
