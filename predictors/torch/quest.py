"""Quest (Tang et al., 2024): query-aware page selection from per-page key bounds.

Keys are cut into pages of ``b`` tokens (param ``b``). Each page ``p`` keeps the channel-wise minimum
and maximum of its valid keys, ``kmin_p`` and ``kmax_p`` (``[D]`` each). For a query ``q`` the score of
any key of the page is bounded by

    ub(q, p) = scale * sum_c max(q_c kmin_pc, q_c kmax_pc)
             = scale * (q^+ . kmax_p + q^- . kmin_p),        q^+ = max(q, 0), q^- = min(q, 0),

and the bound is exact when one key of the page is the channel-wise max where ``q > 0`` and the min
where ``q < 0``. Pages are ranked by the bound (ties to the lower page) and the top ``k`` are kept:

* ``per = "query"`` (Quest's decoding view): per query, among its allowed pages (causal: pages that
  start at or before the query), a :class:`PageGraph`;
* ``per = "block"``: per block of ``b`` queries, ranking pages by ``max_{i in block} ub(q_i, p)`` (a
  bound over the whole ``b x b`` tile), among the pages of allowed tiles (causal: ``p <= a``), a
  :class:`~predictors.graphs.BlockGraph` whose tile sparsity a block kernel can use.

A larger ``k`` keeps a superset of pages. Memory: ``[H, 256, n / b]`` per chunk of queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from predictors.base import Param, Predictor
from predictors.errors import PredictorError
from predictors.graphs import BlockGraph, PredictedGraph
from predictors.registry import register

CHUNK = 256


@dataclass
class PageGraph(PredictedGraph):
    """Per-query key pages: ``pages`` int64 ``[S, H, T, k]`` (``-1`` padded) of ``page_size`` keys each."""

    pages: torch.Tensor
    page_size: int

    def block_mask(self, s, i0, i1, n):
        pages = self.pages[s, :, i0:i1]  # [H, B, k]
        h, b, _ = pages.shape
        m = -(-n // self.page_size)
        hot = torch.zeros(h, b, m + 1, dtype=torch.bool)
        hot.scatter_(2, torch.where((pages >= 0) & (pages < m), pages, m), True)
        return hot[:, :, torch.arange(n) // self.page_size]


def page_bounds(k: torch.Tensor, n: int, page: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel-wise min and max of the valid keys of each page: ``[H, P, D]`` each, ``P = ceil(n / b)``."""
    h, _, d = k.shape
    m = -(-n // page)
    x = k[:, :n].float()
    pad_lo = torch.full((h, m * page, d), float("inf"))
    pad_hi = torch.full((h, m * page, d), float("-inf"))
    pad_lo[:, :n], pad_hi[:, :n] = x, x
    return pad_lo.view(h, m, page, d).amin(2), pad_hi.view(h, m, page, d).amax(2)


def upper_bounds(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, scale: float) -> torch.Tensor:
    """``ub(q_i, p)`` for ``q`` ``[H, B, D]`` and page bounds ``[H, P, D]``: float32 ``[H, B, P]``."""
    q = q.float()
    return (torch.matmul(q.clamp(min=0), kmax.transpose(1, 2))
            + torch.matmul(q.clamp(max=0), kmin.transpose(1, 2))) * scale


def top_pages(scores: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` allowed pages of largest score per row: ``scores`` ``[H, B, P]``, ``allowed`` ``[B, P]``.

    Returns int64 ``[H, B, k]``, ``-1`` where a row has fewer allowed pages. Ties to the lower page.
    """
    h, b, m = scores.shape
    masked = scores.masked_fill(~allowed, float("-inf"))
    order = masked.sort(dim=-1, descending=True, stable=True).indices[..., :k]
    ok = torch.arange(order.shape[-1])[None, :] < allowed.sum(-1)[:, None]  # [B, k'], allowed first
    out = torch.full((h, b, k), -1, dtype=torch.int64)
    out[..., :order.shape[-1]] = torch.where(ok, order, -1)
    return out


@register
class Quest(Predictor):
    """Quest page selection: pages of ``b`` keys, top ``k`` pages per query (or per query block).

    FLOPs per head, one sample of ``n`` tokens, ``P = ceil(n / b)`` pages: the bounds of ``n`` queries
    against ``P`` pages, two products of ``d`` terms each, ``4 n P d``; the page minima and maxima,
    ``2 n d`` comparisons. The per-block maxima and the sorts are not counted.
    """

    block_param = "b"

    kind = "block"
    family = "quest"
    params = (
        Param("per", "", str, "query", choices=("query", "block"),
              doc="query: top pages per query (decoding view); block: per block of b queries (tiles)"),
        Param("b", "b", int, 16, doc="page size (keys per page; block size for per=block)"),
        Param("k", "k", int, 4, doc="pages kept per query or per query block"),
    )

    def check(self):
        super().check()
        if self.values["b"] < 1 or self.values["k"] < 1:
            raise PredictorError(f"{self.family}: need page size b >= 1 and pages k >= 1, "
                                 f"got b={self.values['b']}, k={self.values['k']}")

    def _predict(self, view, layer):
        b, k = self.values["b"], self.values["k"]
        s_count, nh, t, _ = view.q.shape
        m_max = -(-t // b)
        if self.values["per"] == "block":
            tiles = torch.zeros(s_count, nh, m_max, m_max, dtype=torch.bool)
        else:
            pages = torch.full((s_count, nh, t, k), -1, dtype=torch.int64)
        for s in range(s_count):
            n = int(view.lengths[s])
            m = -(-n // b)
            kmin, kmax = page_bounds(view.k[s], n, b)
            page_start = torch.arange(m) * b
            if self.values["per"] == "block":
                for a0 in range(0, m, max(1, CHUNK // b)):
                    a1 = min(m, a0 + max(1, CHUNK // b))
                    i0, i1 = a0 * b, min(n, a1 * b)
                    ub = upper_bounds(view.q[s, :, i0:i1], kmin, kmax, view.scale)  # [H, rows, m]
                    pad = torch.full((nh, (a1 - a0) * b, m), float("-inf"))
                    pad[:, :i1 - i0] = ub
                    tile_ub = pad.view(nh, a1 - a0, b, m).amax(2)  # [H, A, m]
                    allowed = torch.ones(a1 - a0, m, dtype=torch.bool)
                    if view.causal:
                        allowed = torch.arange(m)[None, :] <= torch.arange(a0, a1)[:, None]
                    top = top_pages(tile_ub, allowed, k)
                    hot = torch.zeros(nh, a1 - a0, m + 1, dtype=torch.bool)
                    hot.scatter_(2, torch.where(top >= 0, top, m), True)
                    tiles[s, :, a0:a1, :m] = hot[..., :m]
            else:
                for i0 in range(0, n, CHUNK):
                    i1 = min(n, i0 + CHUNK)
                    ub = upper_bounds(view.q[s, :, i0:i1], kmin, kmax, view.scale)
                    allowed = torch.ones(i1 - i0, m, dtype=torch.bool)
                    if view.causal:
                        allowed = page_start[None, :] <= torch.arange(i0, i1)[:, None]
                    pages[s, :, i0:i1] = top_pages(ub, allowed, k)
        if self.values["per"] == "block":
            return BlockGraph(tiles, b)
        return PageGraph(pages, b)

    def _flops(self, n, d):
        pages = -(-n // self.values["b"])
        return 4.0 * n * pages * d + 2.0 * n * d
