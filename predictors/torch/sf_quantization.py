"""Sparsefinder by quantization (``sf-quant``): a pair is predicted when it shares a bucket.

Each of the ``r`` dimensions of the learned projections (:mod:`predictors.projections`) is cut into
``b`` buckets (``beta`` in the paper), per layer and head:

* ``rank`` (equal-count): the boundaries are the quantiles at levels ``1/b, ..., (b-1)/b`` (linear
  interpolation between order statistics) of the fit samples' projected queries and keys together,
  per layer, head and dimension; bucket ``= #{boundaries <= x}``;
* ``tanh`` (equal-width): bucket ``= min(floor((tanh(x) + 1) / 2 * b), b - 1)``; nothing is fitted
  beyond the projections.

A pair ``(i, j)`` is predicted when ``bucket(q'_i)[c] == bucket(k'_j)[c]`` for at least one dimension
``c``: a :class:`~predictors.graphs.CodeGraph` with ``matched_rounds=True`` whose rounds are the
dimensions. When ``b1`` divides ``b2`` the buckets of ``b2`` refine those of ``b1`` (both modes), so the
graph of ``b2`` is a subset of the graph of ``b1``.
"""

from __future__ import annotations

import math

import torch

from predictors.base import Param
from predictors.errors import PredictorError
from predictors.graphs import CodeGraph
from predictors.projections import PROJECTION_PARAMS, ProjectedPredictor, projected_points, projection_flops
from predictors.registry import register


def quantile_boundaries(x: torch.Tensor, buckets: int) -> torch.Tensor:
    """Equal-count bucket boundaries of ``x`` ``[..., N]`` along the last dimension: ``[..., b - 1]``.

    The boundary ``m`` is the quantile at level ``m / b``, linearly interpolated between the sorted
    values (numpy's default rule), so that the levels of ``b1`` are among those of ``b2 = c b1``.
    """
    n = x.shape[-1]
    if n == 0:
        raise PredictorError("quantile_boundaries: no points to fit bucket boundaries on")
    xs = x.sort(dim=-1).values
    levels = torch.arange(1, buckets, dtype=torch.float64) / buckets
    pos = levels * (n - 1)
    lo = pos.floor().long()
    hi = torch.clamp(lo + 1, max=n - 1)
    frac = (pos - lo.double()).to(x.dtype)
    return xs[..., lo] + (xs[..., hi] - xs[..., lo]) * frac


def rank_buckets(x: torch.Tensor, boundaries: torch.Tensor) -> torch.Tensor:
    """Buckets of ``x`` ``[S, H, T, r]`` given ``boundaries`` ``[H, r, b - 1]``: int64 ``[S, H, T, r]``."""
    s, h, t, r = x.shape
    flat = x.permute(1, 3, 0, 2).reshape(h, r, s * t).contiguous()
    idx = torch.searchsorted(boundaries.contiguous(), flat, right=True)
    return idx.reshape(h, r, s, t).permute(2, 0, 3, 1)


def tanh_buckets(x: torch.Tensor, buckets: int) -> torch.Tensor:
    """Equal-width buckets of ``tanh(x)`` over ``[-1, 1]``: int64, same shape as ``x``."""
    u = (torch.tanh(x) + 1.0) * 0.5
    return torch.clamp((u * buckets).floor().long(), 0, buckets - 1)


@register
class SparsefinderQuantization(ProjectedPredictor):
    """Shared buckets per projected dimension; names ``sf-quant-r4-b8``, ``sf-quant-r4-tanh-b8``.

    Parameters: ``r`` projected dimension, ``proj`` sep|shared, ``mode`` rank|tanh, ``b`` buckets per
    dimension, plus the common ``w`` and ``g``.

    FLOPs per head for one sample of ``n`` tokens, head dimension ``d``:

    * projection: ``2 n d r`` per side, ``4 n d r`` in all;
    * bucketing, per coordinate: ``rank`` a binary search, ``ceil(log2 b)`` comparisons; ``tanh``
      4 (tanh, add, scale, floor); for ``2 n r`` coordinates;
    * pairs: one code comparison per dimension, ``r n^2``.
    """

    kind = "learned"
    family = "sf-quant"
    params = PROJECTION_PARAMS + (
        Param("mode", "", str, "rank", choices=("rank", "tanh"),
              doc="rank: equal-count buckets (fitted quantiles); tanh: equal-width buckets of tanh"),
        Param("b", "b", int, 4, doc="buckets per projected dimension (beta)"),
    )

    def check_family(self) -> None:
        if self.values["b"] < 1:
            raise PredictorError(f"{self.family}: number of buckets b must be >= 1, got {self.values['b']}")

    def _fit_projected(self, data, gold) -> None:
        self.boundaries = None
        if self.values["mode"] == "rank":
            # [L, H, r, b - 1]: one set of boundaries per layer, head and dimension.
            self.boundaries = torch.stack([
                quantile_boundaries(projected_points(self.projections, data, layer).transpose(1, 2), self.values["b"])
                for layer in range(data.num_layers)])

    def codes(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Bucket of every coordinate of projected points ``x`` ``[S, H, T, r]``: int64 ``[S, H, T, r]``."""
        if self.values["mode"] == "rank":
            return rank_buckets(x, self.boundaries[layer].to(x.device))
        return tanh_buckets(x, self.values["b"])

    def _predict(self, view, layer):
        qp, kp = self.project(view, layer)
        return CodeGraph(self.codes(qp, layer), self.codes(kp, layer), self.values["b"], matched_rounds=True)

    def _flops(self, n, d):
        r, b = self.values["r"], self.values["b"]
        per_coord = math.ceil(math.log2(b)) if self.values["mode"] == "rank" and b > 1 else (
            4.0 if self.values["mode"] == "tanh" else 0.0)
        return projection_flops(n, d, r) + 2.0 * n * r * per_coord + float(r) * n * n
