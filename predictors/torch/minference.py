"""MInference's vertical-slash pattern (Jiang et al., 2024), estimated from the last queries.

For a sample of ``n`` tokens, the last ``m = min(lq, n)`` queries (param ``lq``) attend densely,

    P = softmax(scale * Q_last K^T)       over each query's allowed keys (``j <= i`` when causal),

as in the reference implementation (a cheap softmax estimate, whatever the model's own attention).
Their attention is summed per key column and per diagonal (offset ``delta = i - j``):

    vertical(j)    = sum_i P_ij,           slash(delta) = sum_{i} P_{i, i - delta}.

Each head keeps its top ``v`` columns and top ``sl`` diagonals (ties to the lower column, the lower
offset index), and predicts, for *every* query ``i``, the pairs ``(i, j)`` with ``j`` a kept column or
``i - j`` a kept offset. Offsets range over ``-(n-1) .. n-1`` (``0 .. n-1`` when causal). The
reference also forces the first 30 columns and the last 100 diagonals in; here such fixed parts are
the common ``g``/``s`` (sinks) and ``w`` (window) extras, so they can be measured apart. Keeping more
columns or diagonals only adds pairs. The graph is token-level (:class:`VerticalSlashGraph`); block
kernels gather its columns and diagonals as they come.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from predictors.base import Param, Predictor
from predictors.errors import PredictorError
from predictors.graphs import PredictedGraph
from predictors.masking import allowed_keys, block_scores
from predictors.registry import register


@dataclass
class VerticalSlashGraph(PredictedGraph):
    """Kept columns and diagonals per sample and head.

    ``columns``: int64 ``[S, H, v]``, ``-1`` padded. ``offsets``: int64 ``[S, H, sl]`` (``i - j``, may be
    negative) with ``offset_valid`` bool ``[S, H, sl]``.
    """

    columns: torch.Tensor
    offsets: torch.Tensor
    offset_valid: torch.Tensor

    def block_mask(self, s, i0, i1, n):
        h = self.columns.shape[1]
        b = i1 - i0
        out = torch.zeros(h, b, n + 1, dtype=torch.bool)
        cols = self.columns[s]
        out.scatter_(2, torch.where((cols >= 0) & (cols < n), cols, n)[:, None, :].expand(-1, b, -1), True)
        i = torch.arange(i0, i1)[None, :, None]
        j = i - self.offsets[s][:, None, :]  # [H, B, sl]
        ok = self.offset_valid[s][:, None, :] & (j >= 0) & (j < n)
        out.scatter_(2, torch.where(ok, j, n), True)
        return out[..., :n]


def vertical_slash(prob: torch.Tensor, rows: torch.Tensor, n: int, v: int, sl: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top columns and diagonals of the attention ``prob`` ``[H, m, n]`` of query positions ``rows`` ``[m]``.

    Returns ``columns`` ``[H, v]`` (``-1`` padded when ``n < v``), ``offsets`` ``[H, sl]`` and their
    validity ``[H, sl]`` (false when fewer than ``sl`` offsets exist).
    """
    h = prob.shape[0]
    vertical = prob.sum(1)  # [H, n]
    offs = rows[:, None] - torch.arange(n)[None, :]  # [m, n], in -(n-1) .. n-1
    slash = torch.zeros(h, 2 * n - 1, dtype=prob.dtype)
    slash.index_add_(1, (offs + n - 1).flatten(), prob.reshape(h, -1))
    columns = torch.full((h, v), -1, dtype=torch.int64)
    # A stable descending sort breaks ties towards the lower index (topk does not promise an order).
    columns[:, :min(v, n)] = vertical.sort(dim=-1, descending=True, stable=True).indices[:, :v]
    width = min(sl, 2 * n - 1)
    offsets = torch.zeros(h, sl, dtype=torch.int64)
    valid = torch.zeros(h, sl, dtype=torch.bool)
    offsets[:, :width] = slash.sort(dim=-1, descending=True, stable=True).indices[:, :width] - (n - 1)
    valid[:, :width] = True
    return columns, offsets, valid


@register
class MInferenceVS(Predictor):
    """Vertical-slash from the last ``lq`` queries: top ``v`` columns, top ``sl`` diagonals.

    FLOPs per head, one sample of ``n`` tokens: the scores of the last ``m = min(lq, n)`` queries,
    ``2 m n d``; the softmax, sums and sorts are ``O(m n)`` and ``O(n log n)`` and not counted.
    """

    kind = "block"
    family = "minference"
    params = (
        Param("lq", "lq", int, 64, doc="last queries whose attention is estimated"),
        Param("v", "v", int, 16, doc="vertical lines (key columns) kept per head"),
        Param("sl", "sl", int, 16, doc="slash lines (diagonals i - j) kept per head"),
    )

    def check(self):
        super().check()
        for key, low in (("lq", 1), ("v", 0), ("sl", 0)):
            if self.values[key] < low:
                raise PredictorError(f"{self.family}: {key} must be >= {low}, got {self.values[key]}")

    def _predict(self, view, layer):
        s_count, nh = view.q.shape[:2]
        v, sl = self.values["v"], self.values["sl"]
        columns = torch.full((s_count, nh, v), -1, dtype=torch.int64)
        offsets = torch.zeros(s_count, nh, sl, dtype=torch.int64)
        valid = torch.zeros(s_count, nh, sl, dtype=torch.bool)
        for s in range(s_count):
            n = int(view.lengths[s])
            i0 = n - min(self.values["lq"], n)
            z = block_scores(view.q[s, :, i0:n], view.k[s, :, :n], view.scale)
            z = z.masked_fill(~allowed_keys(i0, n, n, view.causal), float("-inf"))
            prob = torch.softmax(z, dim=-1)
            columns[s], offsets[s], valid[s] = vertical_slash(prob, torch.arange(i0, n), n, v, sl)
        return VerticalSlashGraph(columns, offsets, valid)

    def _flops(self, n, d):
        return 2.0 * min(self.values["lq"], n) * n * d
