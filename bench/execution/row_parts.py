"""The parts of a row block (code blocks of one code per row, listed keys, the band, global columns) and
the restricted attention of a row block built from them.

Rows and keys are flat, heads folded into the token axis (row ``h * n + i``, see
:mod:`bench.execution.code_blocks`). A row block is ``B`` query rows; each part gives ``width``
candidate keys per row. Side by side, with a pair an earlier part already holds masked in every later
part (so no pair is counted twice), they form the row's allowed keys, and one entmax per row
(:func:`bench.execution.row_entmax.rows_p`) gives its restricted attention. On the CPU the compiled
kernel gives each row's nonzeros and ``P V`` is summed over them only
(:func:`predictors.entmax.keyed_values`); elsewhere each part multiplies its probabilities by its own
gathered values.

* :class:`BlockPart`: one group of code blocks when every row has one code (top-1 clusters, one hash
  round): the group is itself a row block.
* :class:`GatherRows`: the listed keys of a :class:`~predictors.graphs.KeyListGraph` (duplicates kept once).
* :class:`WindowRows`: the band of a :class:`~predictors.graphs.WindowGraph`, ``2 (w // 2) + 1`` keys
  per query (the past half and the query when causal), gathered by offset.
* :class:`ColumnRows`: the global key columns of :class:`~predictors.graphs.GlobalGraph` parts.
"""

from __future__ import annotations

import torch

from bench.execution.code_blocks import take
from bench.execution.row_entmax import rows_p
from predictors.entmax import keyed_values, partial_k, support_counts, uses_kernel


class Part:
    """One part of a row block: ``width`` candidate keys per row.

    ``block()`` gives ``scores``/``ok`` ``[B, width]`` (scaled scores; a real, valid, allowed pair not yet
    counted), ``keys()`` the flat key of each entry (asked for only when an earlier part must be
    checked), ``apply(p)`` the part's ``p @ v`` ``[B, Dv]``, ``contains(j)`` whether the part predicts
    ``(row, j)`` for keys ``j`` ``[B, m]``.
    """

    width: int = 0
    masks_padding: bool = False  # whether ``ok`` already excludes the padding rows of a row block


class BlockPart(Part):
    """Fast path (one code per row): one group of code blocks is itself a row block of ``nch * chunk`` rows."""

    masks_padding = True

    def __init__(self, table, scores, ok, kt, qrow, vf, chunk):
        self.table, self.kt, self.qrow, self.vf, self.chunk = table, kt, qrow, vf, chunk
        self.nch, _, self.width = scores.shape
        self.scores, self.ok = scores.view(-1, self.width), ok.view(-1, self.width)

    def block(self):
        return self.scores, self.ok

    def keys(self):
        return self.kt.repeat_interleave(self.chunk, 0)

    def apply(self, p):
        return torch.matmul(p.view(self.nch, self.chunk, -1), take(self.vf, self.kt)).view(self.nch * self.chunk, -1)

    def contains(self, j):
        return self.table.contains(self.qrow, j)


class GatherRows(Part):
    """Keys listed per row: ``keys`` int64 ``[B, m]`` token indices of the row's head (``-1``: none)."""

    def __init__(self, keys, rows, qf, kf, vf, n, scale, causal, dedup):
        self.rows, self.n = rows, n
        i = rows % n
        ok = (keys >= 0) & (keys < n)
        if causal:
            ok &= keys <= i[:, None]
        m = keys.shape[-1]
        if dedup and m > 1:
            earlier = torch.ones(m, m, dtype=torch.bool, device=keys.device).tril(-1)
            ok &= ~((keys[:, :, None] == keys[:, None, :]) & earlier & ok[:, None, :]).any(-1)
        self.ok = ok
        self.kflat = (rows - i)[:, None] + keys.clamp(0, max(n - 1, 0))
        self.width = m
        self.vf = vf
        self.scores = torch.einsum("bd,bmd->bm", take(qf, rows), take(kf, self.kflat)).mul_(scale)

    def block(self):
        return self.scores, self.ok

    def keys(self):
        return self.kflat

    def apply(self, p):
        return torch.einsum("bm,bmd->bd", p, take(self.vf, self.kflat))

    def contains(self, j):
        return (j[:, :, None] == torch.where(self.ok, self.kflat, -1)[:, None, :]).any(-1)


class WindowRows(GatherRows):
    """The band of a window of ``width``: keys ``i - width // 2 .. i + width // 2`` of row ``i`` (up to
    ``i`` when causal), those outside ``0..n-1`` left out."""

    def __init__(self, width, rows, qf, kf, vf, n, scale, causal):
        half = width // 2
        offsets = torch.arange(-half, 1 if causal else half + 1, device=rows.device)
        keys = (rows % n)[:, None] + offsets
        super().__init__(torch.where((keys >= 0) & (keys < n), keys, -1), rows, qf, kf, vf, n, scale, causal,
                         dedup=False)
        self.half = half

    def contains(self, j):
        return (j - self.rows[:, None]).abs() <= self.half  # same head: flat distance = token distance


class ColumnRows(GatherRows):
    """Global key columns ``cols`` ``[H, g]`` (``-1`` padding) of each row's head."""

    def __init__(self, cols, rows, qf, kf, vf, n, scale, causal):
        super().__init__(cols[rows // n], rows, qf, kf, vf, n, scale, causal, dedup=False)


def run_rows(parts, rows, real, n, alpha, out, acc):
    """Restricted attention of one row block: ``parts`` side by side, a pair an earlier part holds masked
    in the later ones, one entmax per row; adds each row's output to ``out[rows]`` and its counts to
    ``acc`` (per head). ``real`` (bool ``[B]``, optional) marks the rows that are queries, not padding."""
    parts = [p for p in parts if p.width > 0]
    head = torch.div(rows, n, rounding_mode="floor") if acc is not None else None
    if not parts:
        if acc is not None:
            acc[2].index_add_(0, head, torch.ones(rows.numel(), dtype=acc.dtype, device=rows.device))
        return
    scores, oks = [], []
    for idx, part in enumerate(parts):
        sc, ok = part.block()
        if idx:
            j = part.keys()
            for prev in parts[:idx]:
                ok = ok & ~prev.contains(j)
        if real is not None and not part.masks_padding:
            ok = ok & real[:, None]
        scores.append(sc)
        oks.append(ok)
    ok_all = torch.cat(oks, -1) if len(oks) > 1 else oks[0]
    scores_all = torch.cat(scores, -1) if len(scores) > 1 else scores[0]
    if alpha == 1.5 and uses_kernel(scores_all):
        supports = _support_output(parts, scores_all, ok_all)
    else:
        supports = _product_output(parts, scores_all, ok_all, alpha)
    out.index_add_(0, rows, supports[0])
    if acc is None:
        return
    acc[0].index_add_(0, head, ok_all.sum(-1).to(acc.dtype))
    acc[1].index_add_(0, head, supports[1].to(acc.dtype))
    empty = ~ok_all.any(-1)
    if real is not None:
        empty &= real
    acc[2].index_add_(0, head, empty.to(acc.dtype))


def _support_output(parts, scores, ok):
    """``(P V, support sizes)`` of a row block on the CPU: the nonzeros of each row's entmax by the
    compiled kernel (:func:`predictors.entmax.support_counts` over the allowed entries), then ``P V``
    over them only (:func:`predictors.entmax.keyed_values`): the zeros of ``P`` are not multiplied."""
    counts, cols, probs = support_counts(scores, partial_k(scores.shape[-1]), ok)
    if len(parts) == 1 and isinstance(parts[0], BlockPart):  # the rows of a chunk share its keys
        keys, factor = parts[0].kt, parts[0].chunk
    else:
        keys, factor = torch.cat([part.keys() for part in parts], -1), 1
    return keyed_values(counts, cols, probs, keys, factor, parts[0].vf), counts


def _product_output(parts, scores, ok, alpha):
    """``(P V, support sizes)`` of a row block elsewhere: the probabilities (over the scores, which no
    part reads again), then each part's ``p @ v``."""
    p_all = rows_p(scores, ok, alpha)
    res = None
    for part, p in zip(parts, p_all.split([p.width for p in parts], -1)):
        o = part.apply(p)
        if o is not None:
            res = o if res is None else res + o
    return res, (p_all > 0).sum(-1)
