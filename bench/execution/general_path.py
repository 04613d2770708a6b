"""The ``code-candidates`` strategy: several codes per query row, or several code graphs (alpha = 1.5).

The code blocks stay in their block layout (:mod:`bench.execution.code_blocks`): each member (row, code)
is one block row, and a row is spread over several blocks. The exact 1.5-entmax threshold of a query
row needs only the entries that can be in its support, so each member contributes its ``partial_k(w)``
largest entries, and the threshold is computed on those candidates plus the other parts' entries
(:mod:`bench.execution.row_parts`). It is exact when every truncated member's smallest candidate lies
at or below the threshold (then nothing left out could be in the support); otherwise the candidates
are doubled and the threshold computed again, as :func:`entmax.entmax15` does with its partial sort.
Probabilities are then formed in the block layout and multiplied by the blocks' values.

Rows and keys are flat (heads folded into the token axis); ``acc`` ``[3, H]`` float64, when given,
collects predicted pairs, support pairs and empty rows per head.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from bench.execution.code_blocks import CodeBlocks, take
from predictors.entmax import partial_k, threshold15
from predictors.masking import MASK_GAP

GAP = MASK_GAP / 2  # the halved gap: entries outside a row's allowed keys sit at z = -GAP


class Members(NamedTuple):
    """One group of code blocks, flattened to member rows: scores ``s`` and ``ok`` ``[nch chunk, w]``,
    key tokens ``kt`` ``[nch, w]``, query token ``qrow`` and ``filled`` ``[nch chunk]`` of each slot,
    ``col``, the slot's candidate column (its code graph's columns offset by the earlier graphs')."""

    s: torch.Tensor
    ok: torch.Tensor
    kt: torch.Tensor
    qrow: torch.Tensor
    filled: torch.Tensor
    col: torch.Tensor
    nch: int
    chunk: int


def general_path(tables, rows_all, others, qf, kf, vf, n, scale, causal, chunk, ratio, out, acc):
    """Restricted attention of the rows ``rows_all`` ``[N]`` by the ``code-candidates`` strategy (module
    docstring): adds each row's output to ``out`` ``[H n, Dv]`` and its counts to ``acc``.

    ``tables`` are the :class:`~bench.execution.code_blocks.CodeTable` of the plan's code graphs and
    ``others(rows)`` the other parts of those rows; ``chunk`` and ``ratio`` shape the code blocks.
    """
    ntok, nrows = qf.shape[0], rows_all.numel()
    pos = torch.full((ntok,), -1, dtype=torch.long, device=qf.device)
    pos[rows_all] = torch.arange(nrows, device=qf.device)
    groups, ncols = code_groups(tables, rows_all, qf, kf, vf, n, scale, causal, chunk, ratio)
    parts = [p for p in others(rows_all) if p.width > 0]
    so, oko = other_entries(parts, tables, rows_all, qf)
    rowmax, has = row_max(groups, so, oko, rows_all, ntok, qf)
    zo = torch.where(oko, (so - rowmax[rows_all, None]) / 2, -GAP)
    tau = thresholds(groups, zo, rowmax, pos, ncols)
    tau_tok = qf.new_zeros(ntok)
    tau_tok[rows_all] = tau[:, 0]
    apply_codes(groups, rowmax, tau_tok, vf, n, out, acc)
    head = torch.div(rows_all, n, rounding_mode="floor")
    if so.shape[1]:
        po = (zo - tau).clamp(min=0).square_().masked_fill_(~oko, 0.0)
        res = None
        for part, p in zip(parts, po.split([p.width for p in parts], -1)):
            res = part.apply(p) if res is None else res + part.apply(p)
        out.index_add_(0, rows_all, res)
        if acc is not None:
            acc[0].index_add_(0, head, oko.sum(-1).to(acc.dtype))
            acc[1].index_add_(0, head, (po > 0).sum(-1).to(acc.dtype))
    if acc is not None:
        acc[2].index_add_(0, head, (~has[rows_all]).to(acc.dtype))


def code_groups(tables, rows_all, qf, kf, vf, n, scale, causal, chunk, ratio) -> tuple[list[Members], int]:
    """The code blocks of every table as :class:`Members`, a pair an earlier table holds masked, and the
    number of candidate columns per row (the tables' code columns side by side)."""
    groups, col0 = [], 0
    for ti, tb in enumerate(tables):
        blocks = CodeBlocks(tb, rows_all, qf, kf, vf, n, scale, causal, chunk, ratio)
        for g in blocks.groups:
            s, ok, kt, qrow, filled = blocks.compute(g)
            for prev in tables[:ti]:
                shared = take(prev.qbits, qrow).view(g.nch, g.chunk, 1, -1) & take(prev.kbits, kt)[:, None]
                ok &= ~(shared != 0).any(-1)
            col = col0 + g.slot_member.clamp(min=0) % tb.r
            groups.append(Members(s.view(-1, g.w), ok.view(-1, g.w), kt, qrow, filled, col, g.nch, g.chunk))
        col0 += tb.r
    return groups, col0


def other_entries(parts, tables, rows_all, qf) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and ``ok`` ``[N, m]`` of the non-code ``parts`` side by side, a pair any code table or an
    earlier part holds masked."""
    so, oko = [], []
    for idx, part in enumerate(parts):
        sc, ok = part.block()
        j = part.keys()
        for prev in tables:
            ok = ok & ~prev.contains(rows_all, j)
        for prev in parts[:idx]:
            ok = ok & ~prev.contains(j)
        so.append(sc)
        oko.append(ok)
    nrows = rows_all.numel()
    so = torch.cat(so, -1) if so else qf.new_zeros(nrows, 0)
    oko = torch.cat(oko, -1) if oko else torch.zeros(nrows, 0, dtype=torch.bool, device=qf.device)
    return so, oko


def row_max(groups, so, oko, rows_all, ntok, qf) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's largest allowed score over every part ``[H n]`` (0 where it has none), and whether it
    has any allowed entry."""
    lowest = torch.finfo(qf.dtype).min
    rowmax = torch.full((ntok,), lowest, dtype=qf.dtype, device=qf.device)
    for g in groups:
        rowmax.scatter_reduce_(0, g.qrow, torch.where(g.ok, g.s, lowest).amax(-1), "amax")
    if so.shape[1]:
        rowmax[rows_all] = torch.maximum(rowmax[rows_all], torch.where(oko, so, lowest).amax(-1))
    has = rowmax > lowest
    return torch.where(has, rowmax, 0.0), has


def _z(g: Members, rowmax: torch.Tensor) -> torch.Tensor:
    """``z = (s - row max) / 2`` of a group's allowed entries, ``-GAP`` elsewhere."""
    return torch.where(g.ok, (g.s - rowmax[g.qrow, None]) / 2, -GAP)


def thresholds(groups, zo, rowmax, pos, ncols) -> torch.Tensor:
    """The exact 1.5-entmax threshold ``[N, 1]`` of every row from its members' largest entries and the
    other parts' ``zo`` ``[N, m]``, the candidates doubled until no left-out entry could be in a support."""
    nrows = zo.shape[0]
    grow = 1
    while True:
        ks = [min(g.s.shape[1], partial_k(g.s.shape[1]) * grow) for g in groups]
        kmax = max(ks, default=0)
        cand = torch.full((nrows, ncols, kmax), -GAP, dtype=zo.dtype, device=zo.device)
        kth = torch.full((nrows, ncols), -math.inf, dtype=zo.dtype, device=zo.device)
        for g, k in zip(groups, ks):
            vals = _z(g, rowmax).topk(k, dim=-1).values[g.filled]
            p_rows, p_cols = pos[g.qrow[g.filled]], g.col[g.filled]
            cand[p_rows, p_cols, :k] = vals
            if k < g.s.shape[1]:  # a member with fewer than k real entries is complete (its k-th is -GAP)
                kth[p_rows, p_cols] = torch.where(vals[:, -1] > -GAP, vals[:, -1], -math.inf)
        entries = torch.cat([cand.view(nrows, -1), zo], -1)
        if entries.shape[1] == 0:  # no row shares a code with any key, and no other part: nothing to keep
            return torch.zeros(nrows, 1, dtype=zo.dtype, device=zo.device)
        tau, _ = threshold15(entries.sort(dim=-1, descending=True).values)
        if not bool((kth > tau).any(-1).any()):
            return tau
        grow *= 2


def apply_codes(groups, rowmax, tau_tok, vf, n, out, acc) -> None:
    """Probabilities ``max(z - tau, 0)^2`` of every group in its block layout, times the blocks' values,
    added to ``out``; counts to ``acc``."""
    for g in groups:
        p = (_z(g, rowmax) - tau_tok[g.qrow, None]).clamp(min=0).square_().masked_fill_(~g.ok, 0.0)
        w = p.shape[1]
        out.index_add_(0, g.qrow, torch.matmul(p.view(g.nch, g.chunk, w), take(vf, g.kt)).view(-1, vf.shape[1]))
        if acc is not None:
            head = torch.div(g.qrow, n, rounding_mode="floor")
            acc[0].index_add_(0, head, g.ok.sum(-1).to(acc.dtype))
            acc[1].index_add_(0, head, (p > 0).sum(-1).to(acc.dtype))
