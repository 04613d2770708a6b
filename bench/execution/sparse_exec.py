"""Entmax attention computed on a predicted graph only: masked (reference) and sparse (no ``n x n``).

For one sample with ``n`` valid tokens, a head's queries ``q`` ``[n, D]``, keys ``k``, values ``v``
``[n, Dv]`` and predicted pairs ``P`` (a :class:`~predictors.graphs.PredictedGraph`), restricted
attention is

    allowed_i = { j < n : (i, j) in P, and j <= i when causal }
    p_i       = alpha-entmax( scale * q_i . k_j  for j in allowed_i )       (0 outside allowed_i)
    out_i     = sum_j p_ij v_j                                               (0 when allowed_i is empty)

Two implementations compute it:

* :func:`~bench.execution.masked.masked_entmax_attention`, the reference: query blocks of ``block``
  rows, every key scored, disallowed keys replaced by a large finite negative
  (:func:`predictors.masking.mask_scores`, never ``-inf``), any graph. Memory ``O(H x block x n)``,
  work ``O(n^2)``.
* :func:`sparse_entmax_attention`: scores only the predicted pairs, never an ``n x n`` tensor, for
  graphs made of the parts below (a :class:`~predictors.graphs.UnionGraph` of them included). The
  heads are folded into the token axis (row ``h n + i``), so one set of operations serves them all.

  - :class:`~predictors.graphs.CodeGraph` (clusters, buckets, hash codes), as the Routing Transformer
    does: query and key *members* (token, code) are sorted by code; the query members of one code fill
    whole chunks of rows, and each chunk meets the keys of its code, one contiguous run of the sorted
    key members, as a dense ``[chunk, W]`` block. Codes are grouped by their number of keys (classes
    ``[ratio^c, ratio^(c+1))``) and each group is padded to its own ``W``, so the blocks hold about as
    many entries as the pairs themselves, even for the very unequal clusters of k-means. A pair sharing
    several codes is kept under the smallest one only (bit masks of the code sets).
  - :class:`~predictors.graphs.KeyListGraph`: the listed keys, gathered (duplicates kept once).
  - :class:`~predictors.graphs.WindowGraph`: a band of ``2 (w // 2) + 1`` keys per query (the past
    half and the query when causal), gathered by offset; the widest window of a union serves all.
  - :class:`~predictors.graphs.GlobalGraph`: global key columns (positions, per-head sink columns,
    counted from the start or the end) as ``[n, g]`` blocks, and global *rows* (a global query sees
    every key) computed densely for those few rows.

  A pair that an earlier part already holds is masked in every later part, so no pair is counted
  twice. With one code per query (top-1 clusters, one hash round) every group of code blocks is a
  block of query rows: the other parts are appended to its rows and one entmax per row
  (:func:`~bench.execution.row_entmax.entmax15_rows`) gives the restricted attention; each part
  multiplies its probabilities by its own gathered values. On the CPU the compiled kernel gives each
  row's support and ``P V`` is summed over it only; code blocks with no other part read their masks
  from structure (the code's key count, empty slots, causality) instead of building them
  (:func:`~bench.execution.code_blocks.fast_group_rows`). With several codes per query (top-t, hash
  rounds, balanced routing) a row is spread over several blocks: each block row gives its
  ``partial_k(W)`` largest entries, the exact threshold of the row is computed from those candidates
  (widened until no left-out entry could be in the support), and the probabilities are formed in the
  blocks. Memory ``O(pairs)``.

Both take ``q``, ``k``, ``v`` ``[S, H, T, D]`` (padding at the end, ``lengths`` ``[S]``) and return
``out`` ``[S, H, T, Dv]`` in float32, with zero rows for padding queries. Both run on any torch device:
plain PyTorch there, and on the CPU the compiled entmax kernel of :mod:`predictors.entmax15_kernel`
(the same floats; tests hold the two paths together); ``bench_sparse_exec.py`` benchmarks them on the CPU,
``bench_gpu.py`` on a lent GPU (``--profile gpu``), and the tests of a CUDA device skip where there is none.

Which of the strategies above runs is the graph's plan (:func:`bench.execution.plan.sparse_plan`); a
graph it cannot execute sparsely (another part type, or several codes per query with alpha other
than 1.5) gets an explicit unsupported plan, and :func:`sparse_entmax_attention` raises
:class:`~bench.execution.plan.UnsupportedGraph` with its reason instead of computing anything else.
The modules: :mod:`~bench.execution.masked` (the reference), :mod:`~bench.execution.plan`,
:mod:`~bench.execution.code_blocks` (code blocks), :mod:`~bench.execution.row_parts` (row blocks:
listed keys, band, global columns), :mod:`~bench.execution.general_path` (several codes per row),
:mod:`~bench.execution.row_entmax` and :mod:`~bench.execution.exec_stats`. The dense references of
the speed comparison are :func:`bench.execution.dense.dense_attention` (``P V`` included, so every
method produces the same attention output).
"""
from __future__ import annotations

import torch

from bench.errors import BenchError
from bench.execution.code_blocks import CodeBlocks, CodeTable, fast_group_rows
from bench.execution.exec_stats import ExecStats, check_inputs
from bench.execution.general_path import general_path
from bench.execution.masked import masked_entmax_attention
from bench.execution.plan import SparsePlan, UnsupportedGraph, sparse_plan
from bench.execution.row_entmax import rows_p
from bench.execution.row_parts import BlockPart, ColumnRows, GatherRows, WindowRows, run_rows
from predictors.entmax import uses_kernel
from predictors.graphs import PredictedGraph

DEFAULT_CHUNK = 32
DEFAULT_RATIO = 1.25


def sparse_entmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                            causal: bool, scale: float, graph: PredictedGraph, alpha: float = 1.5,
                            chunk: int = DEFAULT_CHUNK, ratio: float = DEFAULT_RATIO,
                            stats: ExecStats | None = None) -> torch.Tensor:
    """Restricted entmax attention on ``graph`` without any ``n x n`` tensor (module docstring).

    Same parameters and result as :func:`~bench.execution.masked.masked_entmax_attention` (which it
    equals within float tolerance; counts in ``stats`` are identical), plus ``chunk``, the fewest query
    rows of one code block (a group of codes uses up to 8 times more when that pads it by at most an
    eighth), and ``ratio``: codes are grouped by their number of keys in classes
    ``[ratio^c, ratio^(c+1))`` (small classes merged), each group padded to its own widest code only.
    Raises :class:`~bench.execution.plan.UnsupportedGraph` with the reason of the graph's plan when
    :func:`~bench.execution.plan.sparse_plan` finds it unsupported at ``alpha`` (nothing is computed
    then: the caller chooses the masked reference explicitly if it wants it).
    """
    check_inputs(q, k, v, lengths)
    if chunk < 1 or not ratio > 1:
        raise BenchError(f"need chunk >= 1 and ratio > 1, got chunk={chunk}, ratio={ratio}")
    plan = sparse_plan(graph, alpha)
    if not plan.supported:
        raise UnsupportedGraph(plan.reason)
    s_count, nh, t, _ = q.shape
    if plan.num_heads is not None and plan.num_heads != nh:
        raise BenchError(f"graph has {plan.num_heads} heads, the data {nh}")
    out = torch.zeros(s_count, nh, t, v.shape[-1], dtype=torch.float32, device=q.device)
    for s in range(s_count):
        n = int(lengths[s])
        out[s, :, :n] = _sample_attention(q[s, :, :n].float(), k[s, :, :n].float(), v[s, :, :n].float(), s, n,
                                          causal, scale, plan, alpha, chunk, ratio, stats)
    return out


class _SampleRows:
    """One sample's tensors with the heads folded (``qf``, ``kf``, ``vf`` ``[H n, D]``) and the
    non-code parts of its plan, built for any set of query rows by :meth:`others`."""

    def __init__(self, q, k, v, s: int, n: int, causal: bool, scale: float, plan: SparsePlan):
        nh, _, d = q.shape
        self.qf, self.kf, self.vf = q.reshape(nh * n, d), k.reshape(nh * n, d), v.reshape(nh * n, -1)
        self.n, self.causal, self.scale, self.window = n, causal, scale, plan.window
        self.key_lists = [g.keys[s, :, :n].to(q.device).long().reshape(nh * n, -1) for g in plan.key_lists]
        self.cols = plan.columns(n, q.device)

    def has_others(self) -> bool:
        """Whether rows have parts besides code blocks (key lists, a band, global columns)."""
        return bool(self.key_lists) or self.window > 0 or self.cols.shape[1] > 0

    def others(self, rows: torch.Tensor) -> list:
        """The key-list, band and global-column parts of the flat query rows ``rows`` ``[B]``."""
        args = (rows, self.qf, self.kf, self.vf, self.n, self.scale, self.causal)
        parts = [GatherRows(kl[rows], *args, dedup=True) for kl in self.key_lists]
        if self.window > 0:
            parts.append(WindowRows(self.window, *args))
        if self.cols.shape[1]:
            parts.append(ColumnRows(self.cols, *args))
        return parts


def _sample_attention(q, k, v, s, n, causal, scale, plan, alpha, chunk, ratio, stats):
    """:func:`sparse_entmax_attention` of sample ``s`` (``q``, ``k``, ``v`` float32 ``[H, n, D]``) by the
    strategy of ``plan``: ``[H, n, Dv]``."""
    nh, dev = q.shape[0], q.device
    rows = _SampleRows(q, k, v, s, n, causal, scale, plan)
    out = rows.qf.new_zeros(nh * n, rows.vf.shape[-1])
    grows = plan.rows(n)
    keep = torch.ones(nh, n, dtype=torch.bool, device=dev)
    keep[:, grows] = False  # global rows see every key: computed densely below
    rows_all = keep.flatten().nonzero().flatten()
    # Predicted pairs, support, empty rows per head; only counted when asked for.
    acc = torch.zeros(3, nh, dtype=torch.float64, device=dev) if stats is not None else None
    tables = [CodeTable(g, s, n, dev) for g in plan.codes]
    if plan.strategy == "rows":
        run_rows(rows.others(rows_all), rows_all, None, n, alpha, out, acc)
    elif plan.strategy == "code-blocks":
        _code_block_rows(tables[0], rows_all, rows, chunk, ratio, alpha, out, acc)
    else:
        general_path(tables, rows_all, rows.others, rows.qf, rows.kf, rows.vf, n, scale, causal, chunk, ratio,
                     out, acc)
    out = out.view(nh, n, -1)
    if grows:
        _global_rows(q, k, v, grows, causal, scale, alpha, out, acc)
    if stats is not None:
        stats.pred_pairs[s] += acc[0].cpu()
        stats.support_pairs[s] += acc[1].cpu()
        stats.empty_rows[s] += acc[2].cpu()
        stats.add_valid(s, n, causal)
    return out


def _code_block_rows(table: CodeTable, rows_all, rows: _SampleRows, chunk, ratio, alpha, out, acc) -> None:
    """The ``code-blocks`` strategy (one code per row, top-1 clustering, one hash round): every group
    of code blocks is a row block as it is, with the other parts appended to its rows; the rows that
    meet no key through their code get the other parts alone."""
    n = rows.n
    blocks = CodeBlocks(table, rows_all, rows.qf, rows.kf, rows.vf, n, rows.scale, rows.causal, chunk, ratio)
    # Code blocks alone, one code per row, alpha 1.5 on the CPU: masks from structure (fast_group_rows).
    fast = alpha == 1.5 and table.r == 1 and not rows.has_others() and uses_kernel(rows.qf)
    for g in blocks.groups:
        if fast:
            fast_group_rows(blocks, g, out, acc)
            continue
        scores, ok, kt, qrow, filled = blocks.compute(g)
        parts = [BlockPart(table, scores, ok, kt, qrow, rows.vf, g.chunk)] + rows.others(qrow)
        run_rows(parts, qrow, filled, n, alpha, out, acc)
    rest = rows_all[blocks.seg[:, 0] == 0]
    if rest.numel():
        run_rows(rows.others(rest), rest, None, n, alpha, out, acc)


def _global_rows(q, k, v, grows: list[int], causal, scale, alpha, out, acc) -> None:
    """Global query rows ``grows`` (each sees every valid key), computed densely into ``out`` ``[H, n, Dv]``."""
    nh, n, dev = q.shape[0], q.shape[1], q.device
    r = torch.tensor(grows, device=dev)
    row_ok = torch.ones(len(grows), n, dtype=torch.bool, device=dev)
    if causal:
        row_ok = torch.arange(n, device=dev)[None, :] <= r[:, None]
    row_ok = row_ok.expand(nh, -1, -1)
    pr = rows_p(torch.matmul(q[:, r], k.transpose(-1, -2)).mul_(scale).view(-1, n),
                row_ok.reshape(-1, n), alpha).view(nh, len(grows), n)
    out[:, r] = torch.matmul(pr, v)
    if acc is not None:
        acc[0] += row_ok.sum((1, 2)).double()
        acc[1] += (pr > 0).sum((1, 2)).double()


def graph_attention(q, k, v, lengths, causal, scale, graph, alpha=1.5, method: str = "auto",
                    stats: ExecStats | None = None) -> torch.Tensor:
    """Restricted attention on ``graph`` by ``method``: ``"sparse"`` (:func:`sparse_entmax_attention`,
    :class:`~bench.execution.plan.UnsupportedGraph` when the graph's plan is unsupported),
    ``"masked"`` (the reference, any graph), or ``"auto"``: sparse when the plan of ``graph`` at
    ``alpha`` is supported, the masked reference otherwise, by the caller's choice. ``graph`` ``None``
    (every pair) is always masked."""
    if method not in ("auto", "sparse", "masked"):
        raise BenchError(f"unknown method {method!r}; known: auto, sparse, masked")
    if graph is not None and method != "masked" and (method == "sparse" or sparse_plan(graph, alpha).supported):
        return sparse_entmax_attention(q, k, v, lengths, causal, scale, graph, alpha, stats=stats)
    return masked_entmax_attention(q, k, v, lengths, causal, scale, graph, alpha, stats=stats)
