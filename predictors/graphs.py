"""Compact predicted graphs, and the one operation the metrics need: one query block as a mask.

A predictor never returns an ``n x n`` mask. It returns one of these small objects, per layer, for a
batch of samples and all heads of that layer; :meth:`block_mask` turns it into the boolean mask of
one block of queries of one sample, ``[H, i1 - i0, n]`` over that sample's ``n`` valid keys. The
metrics intersect it with the causal mask themselves, so graphs may over-predict future keys.

Every graph also counts the pairs it predicts through ``block_mask``; nothing else is assumed.
:meth:`PredictedGraph.to_state` and :func:`predictors.graph_state.graph_from_state` store a graph as
tensors plus a JSON-able spec and read it back exactly (the benchmark keeps its graphs that way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class PredictedGraph:
    """Base class. Subclasses implement ``block_mask(s, i0, i1, n) -> bool [H, i1 - i0, n]``."""

    def block_mask(self, s: int, i0: int, i1: int, n: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def to_state(self, prefix: str = "graph", shared: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
        """``(tensors, spec)``: a flat dict of tensors and a JSON-able spec that
        :func:`predictors.graph_state.graph_from_state` turns back into an equal graph (see that module)."""
        from predictors.graph_state import graph_to_state

        return graph_to_state(self, prefix, shared)

    def __or__(self, other: PredictedGraph) -> UnionGraph:
        parts = (self.parts if isinstance(self, UnionGraph) else [self]) + (
            other.parts if isinstance(other, UnionGraph) else [other])
        return UnionGraph(parts)


@dataclass
class UnionGraph(PredictedGraph):
    """A pair is predicted when any part predicts it (window + globals + a learned predictor...)."""

    parts: list

    def block_mask(self, s, i0, i1, n):
        mask = self.parts[0].block_mask(s, i0, i1, n)
        for part in self.parts[1:]:
            mask |= part.block_mask(s, i0, i1, n)
        return mask


@dataclass
class WindowGraph(PredictedGraph):
    """A centred window of total width ``w``: ``|i - j| <= w // 2`` (causal: ``i - w//2 <= j <= i``).

    The causal restriction to past keys is applied by the metrics, so one rule serves both.
    ``num_heads`` heads share the window. ``w = 0`` predicts nothing.
    """

    width: int
    num_heads: int

    def block_mask(self, s, i0, i1, n):
        i = torch.arange(i0, i1)[:, None]
        j = torch.arange(n)[None, :]
        half = self.width // 2
        m = ((i - j).abs() <= half) if self.width > 0 else torch.zeros(i1 - i0, n, dtype=torch.bool)
        return m.expand(self.num_heads, -1, -1).clone()


@dataclass
class GlobalGraph(PredictedGraph):
    """Global tokens as full rows and columns.

    ``positions``: token indices; negative ones count from the sample's end (``-1`` = last valid
    token). ``per_head`` (optional, ``[H, m]`` with ``-1`` padding) adds head-specific global key
    columns, for example sink tokens found on the fit samples; ``per_head_from_end`` (optional,
    ``[H, m']`` with ``-1`` padding) does the same counting from each sample's end: ``e >= 0`` is key
    ``n - 1 - e`` (``0`` = the last valid token). Per-head columns never add rows.
    """

    positions: tuple
    num_heads: int
    rows: bool = True
    per_head: torch.Tensor | None = None
    per_head_from_end: torch.Tensor | None = None

    def _resolve(self, n):
        pos = [p + n if p < 0 else p for p in self.positions]
        return torch.tensor([p for p in pos if 0 <= p < n], dtype=torch.long)

    def block_mask(self, s, i0, i1, n):
        pos = self._resolve(n)
        mask = torch.zeros(self.num_heads, i1 - i0, n, dtype=torch.bool)
        mask[:, :, pos] = True
        if self.rows:
            r = pos[(pos >= i0) & (pos < i1)] - i0
            mask[:, r, :] = True
        if self.per_head is not None:
            for h in range(self.num_heads):
                cols = self.per_head[h]
                cols = cols[(cols >= 0) & (cols < n)].long()
                mask[h, :, cols] = True
        if self.per_head_from_end is not None:
            for h in range(self.num_heads):
                ends = self.per_head_from_end[h]
                ends = ends[(ends >= 0) & (ends < n)].long()
                mask[h, :, n - 1 - ends] = True
        return mask


@dataclass
class CodeGraph(PredictedGraph):
    """Pairs that share a code: buckets, clusters, or hash values.

    ``q_codes``, ``k_codes``: int64 ``[S, H, T, R]``, ``-1`` for "no code". ``matched_rounds=True``:
    a pair is predicted when ``q_codes[..., i, r] == k_codes[..., j, r]`` for some round ``r``
    (Reformer rounds, quantization dimensions). ``matched_rounds=False``: when the two code *sets*
    intersect, any round against any round (top-t clustering, balanced routing membership). Codes of
    different rounds are made disjoint by offsetting with ``num_codes``.
    """

    q_codes: torch.Tensor
    k_codes: torch.Tensor
    num_codes: int
    matched_rounds: bool = True

    def _one_hot(self, codes):
        # [H, B, R] -> [H, B, R * C] (matched) or [H, B, C] (sets); -1 maps to no column.
        h, b, r = codes.shape
        c = self.num_codes
        if self.matched_rounds:
            offset = torch.arange(r) * c
            flat = torch.where(codes >= 0, codes + offset, -1)
            width = r * c
        else:
            flat, width = codes, c
        out = torch.zeros(h, b, width + 1, dtype=torch.float32)
        out.scatter_(2, torch.where(flat >= 0, flat, width), 1.0)
        return out[..., :width]

    def block_mask(self, s, i0, i1, n):
        qh = self._one_hot(self.q_codes[s, :, i0:i1])
        kh = self._one_hot(self.k_codes[s, :, :n])
        return torch.bmm(qh, kh.transpose(1, 2)) > 0


@dataclass
class DistanceGraph(PredictedGraph):
    """Pairs whose projected distance is below a threshold.

    ``q_proj``, ``k_proj``: ``[S, H, T, r]``. ``metric="l2"``: ``||q'_i - k'_j||^2 < threshold``;
    ``metric="cosine"``: ``1 - cos(q'_i, k'_j) < threshold``. ``threshold`` is one number for every head,
    or a float tensor ``[H]`` of per-head thresholds (calibrated budgets).
    """

    q_proj: torch.Tensor
    k_proj: torch.Tensor
    threshold: float | torch.Tensor
    metric: str = "l2"

    def block_mask(self, s, i0, i1, n):
        return projected_distances(self.q_proj[s, :, i0:i1], self.k_proj[s, :, :n], self.metric) < self._per_head()

    def _per_head(self):
        if isinstance(self.threshold, torch.Tensor):
            return self.threshold.float()[:, None, None]
        return self.threshold


def projected_distances(q: torch.Tensor, k: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """Distances ``[H, B, n]`` between projected queries ``q`` ``[H, B, r]`` and keys ``k`` ``[H, n, r]``:
    squared L2 (``metric="l2"``, exact difference form, not the matmul expansion) or ``1 - cosine``."""
    q, k = q.float(), k.float()
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=-1)
        k = torch.nn.functional.normalize(k, dim=-1)
        return 1.0 - torch.bmm(q, k.transpose(1, 2))
    return torch.cdist(q, k, compute_mode="donot_use_mm_for_euclid_dist").pow(2)


@dataclass
class KeyListGraph(PredictedGraph):
    """Explicit key lists: ``keys`` int64 ``[S, H, T, m]``, ``-1`` padding (random keys, top-k)."""

    keys: torch.Tensor

    def block_mask(self, s, i0, i1, n):
        keys = self.keys[s, :, i0:i1]
        h, b, _ = keys.shape
        out = torch.zeros(h, b, n + 1, dtype=torch.bool)
        out.scatter_(2, torch.where((keys >= 0) & (keys < n), keys, n), True)
        return out[..., :n]


@dataclass
class PairGraph(PredictedGraph):
    """Explicit pairs: ``pairs[s][h]`` is a sorted int64 tensor of ``i * n_s + j``; ``lengths`` ``[S]``.

    For a user's predictor that lists its pairs (the FAISS SimHash twin once did)."""

    pairs: list
    lengths: torch.Tensor

    def block_mask(self, s, i0, i1, n):
        if n != int(self.lengths[s]):
            raise ValueError(f"PairGraph of sample {s} holds n={int(self.lengths[s])} tokens, asked for n={n}")
        nh = len(self.pairs[s])
        out = torch.zeros(nh, i1 - i0, n, dtype=torch.bool)
        for h, keys in enumerate(self.pairs[s]):
            lo, hi = torch.searchsorted(keys, torch.tensor([i0 * n, i1 * n])).tolist()
            sel = keys[lo:hi]
            out[h, sel // n - i0, sel % n] = True
        return out


@dataclass
class BlockGraph(PredictedGraph):
    """Block-level predictions: ``blocks`` bool ``[S, H, ceil(T/B), ceil(T/B)]`` over ``B x B`` tiles.

    A predicted tile covers every pair in it.
    """

    blocks: torch.Tensor
    block_size: int

    def block_mask(self, s, i0, i1, n):
        bi = torch.arange(i0, i1) // self.block_size
        bj = torch.arange(n) // self.block_size
        return self.blocks[s][:, bi][:, :, bj]

    def block_sparsity(self, lengths: torch.Tensor, causal: bool) -> torch.Tensor:
        """Share of valid tiles *not* predicted, per sample and head: float64 ``[S, H]``.

        Sample ``s`` with ``n`` valid tokens has ``m = ceil(n / B)`` tile rows and columns; its valid
        tiles are all ``m^2`` of them, or, causal, the ``m (m + 1) / 2`` tiles with column <= row (those
        holding at least one pair ``j <= i``). Block sparsity = 1 - predicted valid tiles / valid tiles,
        the work a block-sparse kernel skips; token sparsity (the metrics') counts pairs instead.
        """
        return tile_sparsity(self.blocks, self.block_size, lengths, causal)


def tile_sparsity(tiles: torch.Tensor, block_size: int, lengths: torch.Tensor, causal: bool) -> torch.Tensor:
    """:meth:`BlockGraph.block_sparsity` of a bool tile tensor ``[S, H, M, M]``: float64 ``[S, H]``."""
    out = torch.empty(tiles.shape[:2], dtype=torch.float64)
    for s, n in enumerate(lengths.tolist()):
        m = -(-int(n) // block_size)
        valid = torch.ones(m, m, dtype=torch.bool)
        if causal:
            valid = valid.tril()
        kept = (tiles[s, :, :m, :m] & valid).sum((1, 2)).double()
        out[s] = 1.0 - kept / float(valid.sum())
    return out


def block_sparsity(graph: PredictedGraph, lengths: torch.Tensor, causal: bool, block_size: int,
                   query_block: int = 256) -> torch.Tensor:
    """Tile-level sparsity of any graph: the share of valid ``B x B`` tiles holding no predicted pair.

    A tile counts as predicted when at least one of its valid pairs (``j <= i`` when causal) is
    predicted: the tiles a block-sparse kernel would have to compute for this graph (window and sink
    columns included). Computed from ``block_mask`` over query blocks (``query_block`` rounded down
    to a multiple of ``B``, at least ``B``), so memory is ``O(H x query_block x n)``. For a bare
    :class:`BlockGraph` with the same ``B`` this equals :meth:`BlockGraph.block_sparsity`.

    Returns float64 ``[S, H]``.
    """
    rows_per = max(block_size, query_block // block_size * block_size)
    out = []
    for s, n in enumerate(lengths.tolist()):
        n = int(n)
        m = -(-n // block_size)
        hit = None
        for i0 in range(0, n, rows_per):
            i1 = min(n, i0 + rows_per)
            mask = graph.block_mask(s, i0, i1, n)
            if causal:
                mask &= torch.arange(n)[None, :] <= torch.arange(i0, i1)[:, None]
            h, b, _ = mask.shape
            pad = torch.zeros(h, -(-b // block_size) * block_size, m * block_size, dtype=torch.bool)
            pad[:, :b, :n] = mask
            tiles = pad.view(h, -1, block_size, m, block_size).any(4).any(2)  # [H, rows/B, m]
            hit = tiles if hit is None else torch.cat([hit, tiles], dim=1)
        valid = torch.ones(m, m, dtype=torch.bool)
        if causal:
            valid = valid.tril()
        out.append(1.0 - (hit & valid).sum((1, 2)).double() / float(valid.sum()))
    return torch.stack(out)


@dataclass
class FunctionGraph(PredictedGraph):
    """A rule on positions: ``rule(i, j) -> bool`` on broadcast index tensors, for all heads."""

    rule: object
    num_heads: int
    name: str = field(default="rule")

    def block_mask(self, s, i0, i1, n):
        i = torch.arange(i0, i1)[:, None]
        j = torch.arange(n)[None, :]
        return self.rule(i, j).expand(self.num_heads, -1, -1).clone()
