"""Entmax attention computed on a predicted graph only: masked (reference) and sparse (no ``n x n``).

For one sample with ``n`` valid tokens, a head's queries ``q`` ``[n, D]``, keys ``k``, values ``v``
``[n, Dv]`` and predicted pairs ``P`` (a :class:`~predictors.graphs.PredictedGraph`), restricted
attention is

    allowed_i = { j < n : (i, j) in P, and j <= i when causal }
    p_i       = alpha-entmax( scale * q_i . k_j  for j in allowed_i )       (0 outside allowed_i)
    out_i     = sum_j p_ij v_j                                               (0 when allowed_i is empty)

Two implementations compute it:

* :func:`masked_entmax_attention`, the reference: query blocks of ``block`` rows, every key scored,
  disallowed keys replaced by a large finite negative (:func:`predictors.masking.mask_scores`, never
  ``-inf``), any graph. Memory ``O(H x block x n)``, work ``O(n^2)``.
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
  (:func:`entmax15_rows`) gives the restricted attention; each part multiplies its probabilities by
  its own gathered values. With several codes per query (top-t, hash rounds, balanced routing) a row
  is spread over several blocks: each block row gives its ``partial_k(W)`` largest entries, the exact
  threshold of the row is computed from those candidates (widened until no left-out entry could be in
  the support), and the probabilities are formed in the blocks. Memory ``O(pairs)``.

Both take ``q``, ``k``, ``v`` ``[S, H, T, D]`` (padding at the end, ``lengths`` ``[S]``) and return
``out`` ``[S, H, T, Dv]`` in float32, with zero rows for padding queries. Both are plain PyTorch and
run on any torch device (no custom kernel); only the CPU is benchmarked here, and the tests of a CUDA
device skip where there is none.

:func:`bench.execution.dense.dense_attention` gives the dense references of the speed comparison
(``P V`` included, so every method produces the same attention output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bench.errors import BenchError
from bench.execution.dense import DENSE_METHODS, dense_attention  # noqa: F401  (re-exported)
from predictors.entmax import partial_k, row_entmax
from predictors.graphs import CodeGraph, GlobalGraph, KeyListGraph, PredictedGraph, UnionGraph, WindowGraph
from predictors.masking import MASK_GAP, allowed_keys

DEFAULT_CHUNK = 32
DEFAULT_RATIO = 1.25
# Smallest number of score entries worth a group of its own (see _merge_classes).
MIN_BLOCK = 1 << 16


class UnsupportedGraph(BenchError):
    """A graph type that :func:`sparse_entmax_attention` cannot execute sparsely."""


# ---------------------------------------------------------------- entmax over rows


def entmax15_rows(scores: torch.Tensor, allowed: torch.Tensor, topk: bool = True) -> torch.Tensor:
    """1.5-entmax of each row of ``scores`` ``[R, m]`` over its ``allowed`` entries, in few passes.

    The same mathematics as :func:`row_entmax` (``z = (s - max) / 2`` over the allowed entries, the
    others set to ``-MASK_GAP / 2``; ``p = max(z - tau, 0)^2`` with the exact threshold ``tau`` of the
    sort-based algorithm, from the ``partial_k(m)`` largest ``z`` of each row and twice as many for the
    rows whose support fills them), written for the sparse execution: in place, no autograd, and the
    rows without any allowed entry all zero. ``scores`` is overwritten.
    """
    r, m = scores.shape
    if m == 0:
        return scores
    lowest = torch.finfo(scores.dtype).min
    banned = ~allowed
    mx = scores.masked_fill_(banned, lowest).amax(-1, keepdim=True)
    # lowest - mx rounds to lowest (no overflow); those entries are set to the gap right after.
    z = scores.sub_(mx).mul_(0.5).masked_fill_(banned, -MASK_GAP / 2)
    k = partial_k(m) if topk else m
    tau, support = _threshold15(z.topk(k, dim=-1).values if k < m else z.sort(dim=-1, descending=True).values)
    unsure = (support[:, 0] == k).nonzero().flatten() if k < m else support.new_zeros(0)
    while unsure.numel():
        k = min(m, 2 * k)
        sub = z.index_select(0, unsure)
        t2, s2 = _threshold15(sub.topk(k, dim=-1).values if k < m else sub.sort(dim=-1, descending=True).values)
        tau[unsure], support[unsure] = t2, s2
        unsure = unsure[(s2[:, 0] == k).nonzero().flatten()] if k < m else unsure[:0]
    p = z.sub_(tau).clamp_(min=0).square_()
    empty = (mx[:, 0] == lowest).nonzero().flatten()
    if empty.numel():
        p[empty] = 0.0
    return p


def _rows_p(scores: torch.Tensor, allowed: torch.Tensor, alpha: float) -> torch.Tensor:
    """Restricted probabilities of the sparse execution: :func:`entmax15_rows` for alpha = 1.5."""
    if alpha == 1.5:
        return entmax15_rows(scores, allowed)
    return row_entmax(scores, allowed, alpha)


# ---------------------------------------------------------------- the reference


@dataclass
class ExecStats:
    """What a restricted computation attended to, per sample and head (float64 ``[S, H]`` each).

    ``pred_pairs``: predicted pairs that are valid (``|P & allowed|``); ``valid_pairs``: all valid pairs
    (n^2 or n(n+1)/2); ``support_pairs``: pairs with non-zero probability; ``empty_rows``: valid queries
    with no predicted key; ``valid_rows``: valid queries (n).
    """

    pred_pairs: torch.Tensor
    valid_pairs: torch.Tensor
    support_pairs: torch.Tensor
    empty_rows: torch.Tensor
    valid_rows: torch.Tensor

    @classmethod
    def zeros(cls, s: int, h: int) -> ExecStats:
        z = lambda: torch.zeros(s, h, dtype=torch.float64)
        return cls(z(), z(), z(), z(), z())

    @property
    def sparsity(self) -> torch.Tensor:
        """``1 - pred_pairs / valid_pairs``, ``[S, H]``: the share of valid pairs never computed."""
        return 1.0 - self.pred_pairs / self.valid_pairs

    @property
    def support_sparsity(self) -> torch.Tensor:
        """``1 - support_pairs / valid_pairs``, ``[S, H]``: the sparsity of the restricted attention itself."""
        return 1.0 - self.support_pairs / self.valid_pairs


def _check(q, k, v, lengths):
    if q.ndim != 4 or k.shape[:3] != q.shape[:3] or v.shape[:3] != q.shape[:3] or k.shape[-1] != q.shape[-1]:
        raise BenchError(f"q, k, v must be [S, H, T, D] with matching S, H, T, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if lengths.shape != q.shape[:1] or int(lengths.min()) < 1 or int(lengths.max()) > q.shape[2]:
        raise BenchError(f"lengths must be [S={q.shape[0]}] with values in 1..{q.shape[2]}, got {lengths.tolist()}")


def masked_entmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                            causal: bool, scale: float, graph: PredictedGraph | None = None, alpha: float = 1.5,
                            block: int = 256, stats: ExecStats | None = None) -> torch.Tensor:
    """Restricted entmax attention (module docstring), computed by masking dense query blocks.

    Parameters
    ----------
    q, k, v : float ``[S, H, T, D]`` (``v``: ``[S, H, T, Dv]``), unscaled
    lengths : int64 ``[S]``, valid tokens per sample (padding at the end)
    causal : restrict to ``j <= i``
    scale : multiplies ``q . k``
    graph : the predicted pairs, for these samples and heads; ``None``: every pair (dense entmax attention)
    alpha : entmax alpha (1.5: exact sort-based entmax15; otherwise bisection)
    block : query rows per block (memory ``O(H x block x n)``)
    stats : when given, :class:`ExecStats` ``[S, H]`` to which this call's counts are added

    Returns
    -------
    float32 ``[S, H, T, Dv]``; rows of padding queries and of queries with no predicted key are 0.
    """
    _check(q, k, v, lengths)
    s_count, nh, t, _ = q.shape
    out = torch.zeros(s_count, nh, t, v.shape[-1], dtype=torch.float32, device=q.device)
    for s in range(s_count):
        n = int(lengths[s])
        out[s, :, :n] = _masked_sample(q[s, :, :n], k[s, :, :n], v[s, :, :n], s, n, causal, scale, graph, alpha,
                                       block, stats)
    return out


def _masked_sample(q, k, v, s, n, causal, scale, graph, alpha, block=256, stats=None):
    """:func:`masked_entmax_attention` of sample ``s`` (``q``, ``k``, ``v`` ``[H, n, D]``): ``[H, n, Dv]``."""
    nh = q.shape[0]
    out = torch.zeros(nh, n, v.shape[-1], dtype=torch.float32, device=q.device)
    ks, vs = k.float(), v.float()
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        allowed = allowed_keys(i0, i1, n, causal, device=q.device).expand(nh, -1, -1)
        if graph is not None:
            pred = graph.block_mask(s, i0, i1, n).to(q.device)
            if pred.shape != (nh, i1 - i0, n):
                raise BenchError(f"graph block has shape {tuple(pred.shape)}, expected {(nh, i1 - i0, n)}")
            allowed = allowed & pred
        scores = torch.matmul(q[:, i0:i1].float(), ks.transpose(-1, -2)).mul_(scale)
        p = row_entmax(scores, allowed, alpha)
        out[:, i0:i1] = torch.matmul(p, vs)
        if stats is not None:
            stats.pred_pairs[s] += allowed.sum((1, 2)).double().cpu()
            stats.support_pairs[s] += (p > 0).sum((1, 2)).double().cpu()
            stats.empty_rows[s] += (~allowed.any(-1)).sum(-1).double().cpu()
    if stats is not None:
        stats.valid_pairs[s] += float(n * (n + 1) // 2 if causal else n * n)
        stats.valid_rows[s] += float(n)
    return out


# ---------------------------------------------------------------- the parts of a sparse plan
#
# Everything below works on one sample with the heads folded into the token axis: query row and key
# ``h * n + i`` is token ``i`` of head ``h`` (``qf``, ``kf``, ``vf`` ``[H n, D]``), and code ``c`` of head
# ``h`` becomes code ``h * C + c``, so one sort and one set of blocks serve every head. Key indices are
# always of the row's own head.


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``x[index]`` of a 1-d or 2-d ``x`` for an index tensor of any shape: ``[*index.shape, *x.shape[1:]]``.

    ``index_select`` on the flattened index: several times faster on the CPU than advanced indexing.
    """
    return x.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])


def _code_sets(codes: torch.Tensor, graph: CodeGraph) -> tuple[torch.Tensor, int]:
    """Per-token code sets ``[H, n, R]`` in one code space of ``total`` codes, ``-1`` = none.

    Matched rounds offset round ``r`` by ``r * num_codes`` (a pair must match in the same round); a code
    repeated within one token's set is kept once.
    """
    r = codes.shape[-1]
    c = graph.num_codes
    codes = codes.long()
    if graph.matched_rounds:
        codes = torch.where(codes >= 0, codes + torch.arange(r, device=codes.device) * c, -1)
        total = r * c
    else:
        total = c
    codes = torch.where((codes >= 0) & (codes < total), codes, -1)
    if r > 1:
        dup = torch.zeros_like(codes, dtype=torch.bool)
        for a in range(1, r):
            dup[..., a] = (codes[..., :a] == codes[..., a : a + 1]).any(-1)
        codes = codes.masked_fill(dup, -1)
    return codes, total


class _CodeTable:
    """The codes of one :class:`CodeGraph` on one sample, heads folded: what every row block needs.

    ``qc``, ``kc`` int64 ``[H n, R]`` (global codes, ``-1`` none; ``R`` may differ between the two);
    ``qbits``, ``kbits`` int64
    ``[H n, words]``, the same sets as bit masks of the head's own codes (63 per word); key members
    ``(token, r)`` sorted by code: ``key_tok`` (their flat token), ``kstart``, ``kcnt`` per code;
    ``need`` ``[H n]``: the keys a query row meets through its codes, duplicates included.
    """

    def __init__(self, graph: CodeGraph, s: int, n: int, device):
        qc, total = _code_sets(graph.q_codes[s, :, :n].to(device), graph)
        kc, _ = _code_sets(graph.k_codes[s, :, :n].to(device), graph)
        h, _, r = qc.shape
        rk = kc.shape[-1]  # queries and keys may have different numbers of code columns
        self.qbits, self.kbits = _bits(qc.reshape(h * n, r), total), _bits(kc.reshape(h * n, rk), total)
        offset = torch.arange(h, device=device)[:, None, None] * total
        self.qc = torch.where(qc >= 0, qc + offset, -1).reshape(h * n, r)
        self.kc = torch.where(kc >= 0, kc + offset, -1).reshape(h * n, rk)
        self.r, self.total, self.none = r, total, h * total
        kcode = torch.where(self.kc >= 0, self.kc, self.none).flatten()
        _, kord = kcode.sort(stable=True)
        self.key_tok = kord // rk
        self.kcnt = torch.bincount(kcode, minlength=self.none + 1)[: self.none]
        self.kstart = torch.cumsum(self.kcnt, 0) - self.kcnt
        self.need = torch.where(self.qc >= 0, self.kcnt[self.qc.clamp(min=0)], 0).sum(-1)

    def contains(self, rows: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Whether rows ``rows`` ``[B]`` and keys ``j`` ``[B, m]`` (flat) share a code: bool ``[B, m]``."""
        return ((_take(self.qbits, rows)[:, None, :] & _take(self.kbits, j)) != 0).any(-1)

    def below(self, code: torch.Tensor) -> torch.Tensor:
        """Bit masks ``[..., words]`` of the codes of the same head below global codes ``code``."""
        local = code % self.total
        word = torch.arange(self.qbits.shape[1], device=code.device)
        bit = torch.ones_like(local).bitwise_left_shift(local % BITS) - 1
        full = torch.full_like(local, (1 << BITS) - 1)
        w = (local // BITS)[..., None]
        return torch.where(word < w, full[..., None], torch.where(word == w, bit[..., None], 0))


BITS = 63


def _bits(codes: torch.Tensor, total: int) -> torch.Tensor:
    """Code sets ``[N, R]`` (``-1`` none, no repeats) as bit masks ``[N, ceil(total / 63)]``, int64."""
    words = max(1, -(-total // BITS))
    out = torch.zeros(codes.shape[0], words + 1, dtype=torch.long, device=codes.device)
    ok = codes >= 0
    word = torch.where(ok, codes // BITS, words)  # none -> a spare word, dropped
    value = torch.where(ok, torch.ones_like(codes).bitwise_left_shift(codes.clamp(min=0) % BITS), 0)
    return out.scatter_add_(1, word, value)[:, :words]


class _Part:
    """One part of a row block: ``width`` candidate keys per row.

    ``block()`` gives ``scores``/``ok`` ``[B, width]`` (scaled scores; a real, valid, allowed pair not yet
    counted), ``keys()`` the flat key of each entry (asked for only when an earlier part must be
    checked), ``apply(p)`` the part's ``p @ v`` ``[B, Dv]``, ``contains(j)`` whether the part predicts
    ``(row, j)`` for keys ``j`` ``[B, m]``.
    """

    width: int = 0
    masks_padding: bool = False  # whether ``ok`` already excludes the padding rows of a row block


@dataclass
class _Group:
    """One width class of code blocks: ``nch`` chunks of ``chunk`` slots meeting ``w`` keys each."""

    codes: torch.Tensor  # [U] codes of the group, each filling whole chunks
    chunk_code: torch.Tensor  # [nch]
    slot_member: torch.Tensor  # [nch * chunk], member index (row position * R + r), -1 empty
    nch: int
    w: int
    chunk: int  # slots per chunk


class _CodeBlocks:
    """The code part of one sample for the query rows ``rows``, as dense blocks (Routing-style).

    Query members (row, code) are sorted by code; the members of one code fill whole chunks of
    ``chunk`` slots, and each chunk meets the keys of its code (one contiguous run of the code-sorted
    key members) as a dense ``[chunk, W]`` block. Codes are grouped by their key count in classes
    ``[ratio^c, ratio^(c+1))`` and each group is padded to its own ``W`` only, so the blocks hold about
    as many entries as the code pairs themselves.
    """

    def __init__(self, table: _CodeTable, rows, qf, kf, vf, n, scale, causal, chunk, ratio):
        self.table, self.rows, self.chunk = table, rows, chunk
        self.qf, self.kf, self.vf, self.n, self.scale, self.causal = qf, kf, vf, n, scale, causal
        dev = rows.device
        qc = table.qc[rows]  # [N, R]
        self.seg = torch.where(qc >= 0, table.kcnt[qc.clamp(min=0)], 0)  # keys met by each member
        members = (self.seg > 0).flatten().nonzero().flatten()  # member index = row position * R + r
        self.groups: list[_Group] = []
        if members.numel() == 0:
            return
        code = qc.flatten()[members]
        wcls = torch.floor(torch.log(table.kcnt[code].double()) / math.log(ratio)).long()
        order = (wcls * (table.none + 1) + code).argsort(stable=True)
        members, code = members[order], code[order]
        ucode, ucnt = torch.unique_consecutive(code, return_counts=True)
        ucls = torch.floor(torch.log(table.kcnt[ucode].double()) / math.log(ratio)).long()
        per = (ucnt + chunk - 1) // chunk
        _, csizes = torch.unique_consecutive(ucls, return_counts=True)
        first = m0 = 0
        for gsize in _merge_classes(csizes.tolist(), per.tolist(), table.kcnt[ucode].tolist(), chunk):
            gcode, gcnt = ucode[first : first + gsize], ucnt[first : first + gsize]
            first += gsize
            gm = int(gcnt.sum())
            gchunk = _group_chunk(gcnt, chunk)
            gper = (gcnt + gchunk - 1) // gchunk
            pad = gper * gchunk
            astart = torch.cumsum(pad, 0) - pad
            ustart = torch.cumsum(gcnt, 0) - gcnt
            which = torch.repeat_interleave(torch.arange(gsize, device=dev), gcnt)
            slot = astart[which] + torch.arange(gm, device=dev) - ustart[which]
            slot_member = torch.full((int(pad.sum()),), -1, dtype=torch.long, device=dev)
            slot_member[slot] = members[m0 : m0 + gm]
            m0 += gm
            self.groups.append(_Group(gcode, torch.repeat_interleave(gcode, gper), slot_member,
                                      int(gper.sum()), int(table.kcnt[gcode].max()), gchunk))

    def compute(self, g: _Group):
        """Scores and ``ok`` ``[nch, chunk, w]`` of one group, its key tokens ``kt`` ``[nch, w]``, the query
        token of each slot ``qrow`` ``[nch * chunk]`` and whether the slot is used ``filled``."""
        table, chunk, n, dev = self.table, g.chunk, self.n, self.rows.device
        r = table.r
        klen = table.kcnt[g.chunk_code]
        kidx = (table.kstart[g.chunk_code][:, None] + torch.arange(g.w, device=dev)).clamp(
            max=table.key_tok.numel() - 1)
        kt = _take(table.key_tok, kidx)  # [nch, W] flat key tokens
        filled = g.slot_member >= 0
        qrow = self.rows[torch.div(g.slot_member.clamp(min=0), r, rounding_mode="floor")]
        scores = torch.matmul(_take(self.qf, qrow).view(g.nch, chunk, -1),
                              _take(self.kf, kt).transpose(-1, -2)).mul_(self.scale)
        ok = (torch.arange(g.w, device=dev) < klen[:, None])[:, None, :] & filled.view(g.nch, chunk, 1)
        if self.causal:
            ok &= (kt % n)[:, None, :] <= (qrow % n).view(g.nch, chunk, 1)
        if r > 1:
            # A pair met through code c counts only when c is the smallest code the two share.
            qlow = _take(table.qbits, qrow).view(g.nch, chunk, -1) & table.below(g.chunk_code)[:, None, :]
            kbits = _take(table.kbits, kt)
            for word in range(qlow.shape[-1]):
                ok &= (qlow[..., word, None] & kbits[:, None, :, word]) == 0
        return scores, ok, kt, qrow, filled


def _group_chunk(counts: torch.Tensor, chunk: int) -> int:
    """Slots per chunk of a group whose codes have ``counts`` query members: the largest of ``chunk``,
    ``2 chunk``, ... ``8 chunk`` that pads the group by at most an eighth. Larger chunks gather each
    code's keys and values fewer times (every chunk gathers its own ``[W, D]`` block)."""
    total = int(counts.sum())
    best = chunk
    for c in (2 * chunk, 4 * chunk, 8 * chunk):
        if int(((counts + c - 1) // c * c).sum()) <= total * 1.125:
            best = c
    return best


def _merge_classes(sizes: list, chunks: list, widths: list, chunk: int) -> list:
    """Codes per group: consecutive width classes (``sizes`` codes each; per code its ``chunks`` and key
    count ``widths``, ascending by class) merged while a group holds fewer than :data:`MIN_BLOCK`
    entries, so short sequences are not split into many tiny groups (each costs a round of calls)."""
    out, i, cur, slots, w = [], 0, 0, 0, 0
    for size in sizes:
        slots += sum(chunks[i : i + size]) * chunk
        w = max([w] + widths[i : i + size])
        cur += size
        i += size
        if slots * w >= MIN_BLOCK:
            out.append(cur)
            cur = slots = w = 0
    if cur:
        out.append(cur)
    return out


class _BlockPart(_Part):
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
        return torch.matmul(p.view(self.nch, self.chunk, -1), _take(self.vf, self.kt)).view(self.nch * self.chunk, -1)

    def contains(self, j):
        return self.table.contains(self.qrow, j)


class _GatherRows(_Part):
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
        self.scores = torch.einsum("bd,bmd->bm", _take(qf, rows), _take(kf, self.kflat)).mul_(scale)

    def block(self):
        return self.scores, self.ok

    def keys(self):
        return self.kflat

    def apply(self, p):
        return torch.einsum("bm,bmd->bd", p, _take(self.vf, self.kflat))

    def contains(self, j):
        return (j[:, :, None] == torch.where(self.ok, self.kflat, -1)[:, None, :]).any(-1)


class _WindowRows(_GatherRows):
    def __init__(self, width, rows, qf, kf, vf, n, scale, causal):
        half = width // 2
        offsets = torch.arange(-half, 1 if causal else half + 1, device=rows.device)
        keys = (rows % n)[:, None] + offsets
        super().__init__(torch.where((keys >= 0) & (keys < n), keys, -1), rows, qf, kf, vf, n, scale, causal,
                         dedup=False)
        self.half = half

    def contains(self, j):
        return (j - self.rows[:, None]).abs() <= self.half  # same head: flat distance = token distance


class _ColumnRows(_GatherRows):
    """Global key columns ``cols`` ``[H, g]`` (``-1`` padding) of each row's head."""

    def __init__(self, cols, rows, qf, kf, vf, n, scale, causal):
        super().__init__(cols[rows // n], rows, qf, kf, vf, n, scale, causal, dedup=False)


# ---------------------------------------------------------------- the plan of a graph


@dataclass
class SparsePlan:
    """A supported graph, split into its parts (see the module docstring)."""

    codes: list = field(default_factory=list)
    key_lists: list = field(default_factory=list)
    window: int = 0
    globals: list = field(default_factory=list)
    num_heads: int | None = None

    def columns(self, n: int, device) -> torch.Tensor:
        """Global key columns of a sample with ``n`` tokens, per head: int64 ``[H, g]``, ``-1`` padded."""
        h = self.num_heads
        per_head: list[set] = [set() for _ in range(h)]
        for g in self.globals:
            common = {p + n if p < 0 else p for p in g.positions}
            common = {p for p in common if 0 <= p < n}
            for head in range(h):
                per_head[head] |= common
                if g.per_head is not None:
                    per_head[head] |= {int(c) for c in g.per_head[head].tolist() if 0 <= c < n}
                if g.per_head_from_end is not None:
                    per_head[head] |= {n - 1 - int(e) for e in g.per_head_from_end[head].tolist() if 0 <= e < n}
        g = max((len(x) for x in per_head), default=0)
        out = torch.full((h, g), -1, dtype=torch.long)
        for head, cols in enumerate(per_head):
            out[head, : len(cols)] = torch.tensor(sorted(cols), dtype=torch.long)
        return out.to(device)

    def rows(self, n: int) -> list[int]:
        """Global query rows (every key predicted) of a sample with ``n`` tokens."""
        rows = set()
        for g in self.globals:
            if g.rows:
                rows |= {p + n if p < 0 else p for p in g.positions}
        return sorted(p for p in rows if 0 <= p < n)


def sparse_plan(graph: PredictedGraph) -> SparsePlan:
    """Split ``graph`` into code, key-list, window and global parts; :class:`UnsupportedGraph` otherwise."""
    plan = SparsePlan()
    parts = graph.parts if isinstance(graph, UnionGraph) else [graph]
    for part in parts:
        if isinstance(part, UnionGraph):
            sub = sparse_plan(part)
            plan.codes += sub.codes
            plan.key_lists += sub.key_lists
            plan.globals += sub.globals
            plan.window = max(plan.window, sub.window)
            heads = sub.num_heads
        elif isinstance(part, CodeGraph):
            plan.codes.append(part)
            heads = part.q_codes.shape[1]
        elif isinstance(part, KeyListGraph):
            plan.key_lists.append(part)
            heads = part.keys.shape[1]
        elif isinstance(part, WindowGraph):
            plan.window = max(plan.window, part.width)
            heads = part.num_heads
        elif isinstance(part, GlobalGraph):
            plan.globals.append(part)
            heads = part.num_heads
        else:
            raise UnsupportedGraph(f"sparse execution supports CodeGraph, KeyListGraph, WindowGraph, GlobalGraph "
                                   f"and their unions, not {type(part).__name__}")
        plan.num_heads = heads if plan.num_heads is None else plan.num_heads
    return plan


def supports(graph: PredictedGraph) -> bool:
    """Whether :func:`sparse_entmax_attention` can execute ``graph``."""
    try:
        sparse_plan(graph)
    except UnsupportedGraph:
        return False
    return True


# ---------------------------------------------------------------- sparse execution


def sparse_entmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                            causal: bool, scale: float, graph: PredictedGraph, alpha: float = 1.5,
                            chunk: int = DEFAULT_CHUNK, ratio: float = DEFAULT_RATIO,
                            stats: ExecStats | None = None) -> torch.Tensor:
    """Restricted entmax attention on ``graph`` without any ``n x n`` tensor (module docstring).

    Same parameters and result as :func:`masked_entmax_attention` (which it equals within float
    tolerance; counts in ``stats`` are identical), plus ``chunk``, the fewest query rows of one code
    block (a group of codes uses up to 8 times more when that pads it by at most an eighth), and
    ``ratio``: codes are grouped by their number of keys in classes ``[ratio^c, ratio^(c+1))`` (small
    classes merged), each group padded to its own widest code only. Alpha other than 1.5 with several
    codes per query falls back to the masked computation for that sample. Raises
    :class:`UnsupportedGraph` for graphs outside :func:`supports`.
    """
    _check(q, k, v, lengths)
    if chunk < 1 or not ratio > 1:
        raise BenchError(f"need chunk >= 1 and ratio > 1, got chunk={chunk}, ratio={ratio}")
    plan = sparse_plan(graph)
    s_count, nh, t, _ = q.shape
    if plan.num_heads is not None and plan.num_heads != nh:
        raise BenchError(f"graph has {plan.num_heads} heads, the data {nh}")
    out = torch.zeros(s_count, nh, t, v.shape[-1], dtype=torch.float32, device=q.device)
    for s in range(s_count):
        n = int(lengths[s])
        out[s, :, :n] = _sample_attention(q[s, :, :n].float(), k[s, :, :n].float(), v[s, :, :n].float(), s, n,
                                          causal, scale, graph, plan, alpha, chunk, ratio, stats)
    return out


def _sample_attention(q, k, v, s, n, causal, scale, graph, plan, alpha, chunk, ratio, stats):
    nh, _, d = q.shape
    dev = q.device
    qf, kf, vf = q.reshape(nh * n, d), k.reshape(nh * n, d), v.reshape(nh * n, -1)
    out = qf.new_zeros(nh * n, vf.shape[-1])
    tables = [_CodeTable(g, s, n, dev) for g in plan.codes]
    key_lists = [g.keys[s, :, :n].to(dev).long().reshape(nh * n, -1) for g in plan.key_lists]
    cols = plan.columns(n, dev)
    band = (plan.window // 2) * (1 if causal else 2) + 1 if plan.window > 0 else 0
    grows = plan.rows(n)
    keep = torch.ones(nh, n, dtype=torch.bool, device=dev)
    keep[:, grows] = False  # global rows see every key: computed densely below
    rows_all = keep.flatten().nonzero().flatten()
    # Predicted pairs, support, empty rows per head; only counted when asked for.
    acc = torch.zeros(3, nh, dtype=torch.float64, device=dev) if stats is not None else None

    def others(rows):
        parts = [_GatherRows(kl[rows], rows, qf, kf, vf, n, scale, causal, dedup=True) for kl in key_lists]
        if band:
            parts.append(_WindowRows(plan.window, rows, qf, kf, vf, n, scale, causal))
        if cols.shape[1]:
            parts.append(_ColumnRows(cols, rows, qf, kf, vf, n, scale, causal))
        return parts

    if not tables:
        _run_rows(others(rows_all), rows_all, None, n, alpha, out, acc)
    elif len(tables) == 1 and tables[0].r == 1:
        # Fast path, one code per row (top-1 clustering, one hash round): every group of code blocks is
        # a row block as it is, with the other parts appended to its rows.
        blocks = _CodeBlocks(tables[0], rows_all, qf, kf, vf, n, scale, causal, chunk, ratio)
        for g in blocks.groups:
            scores, ok, kt, qrow, filled = blocks.compute(g)
            parts = [_BlockPart(tables[0], scores, ok, kt, qrow, vf, g.chunk)] + others(qrow)
            _run_rows(parts, qrow, filled, n, alpha, out, acc)
        rest = rows_all[blocks.seg[:, 0] == 0]
        if rest.numel():
            _run_rows(others(rest), rest, None, n, alpha, out, acc)
    elif alpha == 1.5:
        _general_path(tables, rows_all, others, qf, kf, vf, n, scale, causal, chunk, ratio, out, acc)
    else:  # several codes per row and another alpha: no sparse threshold here, mask instead
        return _masked_sample(q, k, v, s, n, causal, scale, graph, alpha, stats=stats)
    out = out.view(nh, n, -1)
    if grows:
        r = torch.tensor(grows, device=dev)
        row_ok = torch.ones(len(grows), n, dtype=torch.bool, device=dev)
        if causal:
            row_ok = torch.arange(n, device=dev)[None, :] <= r[:, None]
        row_ok = row_ok.expand(nh, -1, -1)
        pr = _rows_p(torch.matmul(q[:, r], k.transpose(-1, -2)).mul_(scale).view(-1, n),
                     row_ok.reshape(-1, n), alpha).view(nh, len(grows), n)
        out[:, r] = torch.matmul(pr, v)
        if acc is not None:
            acc[0] += row_ok.sum((1, 2)).double()
            acc[1] += (pr > 0).sum((1, 2)).double()
    if stats is not None:
        stats.pred_pairs[s] += acc[0].cpu()
        stats.support_pairs[s] += acc[1].cpu()
        stats.empty_rows[s] += acc[2].cpu()
        stats.valid_pairs[s] += float(n * (n + 1) // 2 if causal else n * n)
        stats.valid_rows[s] += float(n)
    return out


def _threshold15(xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1.5-entmax threshold ``tau`` ``[R, 1]`` of rows ``xs`` ``[R, m]``, already shifted, halved
    (``x = (s - max s) / 2``) and sorted in decreasing order (all of a row, or its largest entries):
    ``sum_j max(x_j - tau, 0)^2 = 1``, by the exact sort-based formula of :mod:`entmax` (Peters et al.,
    2019); and the support size ``[R, 1]``, which equals ``m`` when the given entries may not hold all of it."""
    rho = torch.arange(1, xs.shape[-1] + 1, device=xs.device, dtype=xs.dtype)
    mean = xs.cumsum(-1) / rho
    mean_sq = (xs * xs).cumsum(-1) / rho
    delta = (1 - rho * (mean_sq - mean * mean)) / rho
    tau = mean - delta.clamp(min=0).sqrt()
    support = (tau <= xs).sum(-1, keepdim=True)
    return tau.gather(-1, (support - 1).clamp(min=0)), support


def _general_path(tables, rows_all, others, qf, kf, vf, n, scale, causal, chunk, ratio, out, acc):
    """Several codes per row, or several code graphs (alpha = 1.5).

    The code blocks stay in their block layout: each member (row, code) is one block row. The exact
    1.5-entmax threshold of a query row needs only the entries that can be in its support, so each
    member contributes its ``partial_k(w)`` largest entries, and the threshold is computed on those
    candidates plus the other parts' entries. It is exact when every truncated member's smallest
    candidate lies at or below the threshold (then nothing left out could be in the support);
    otherwise the candidates are doubled and the threshold computed again, as :func:`entmax.entmax15`
    does with its partial sort. Probabilities are then formed in the block layout and multiplied by
    the blocks' values.
    """
    dev = qf.device
    ntok, nrows = qf.shape[0], rows_all.numel()
    lowest = torch.finfo(qf.dtype).min
    gap = MASK_GAP / 2
    pos = torch.full((ntok,), -1, dtype=torch.long, device=dev)
    pos[rows_all] = torch.arange(nrows, device=dev)
    groups, col0 = [], 0
    for ti, tb in enumerate(tables):
        blocks = _CodeBlocks(tb, rows_all, qf, kf, vf, n, scale, causal, chunk, ratio)
        for g in blocks.groups:
            s, ok, kt, qrow, filled = blocks.compute(g)
            for prev in tables[:ti]:
                shared = _take(prev.qbits, qrow).view(g.nch, g.chunk, 1, -1) & _take(prev.kbits, kt)[:, None]
                ok &= ~(shared != 0).any(-1)
            col = col0 + g.slot_member.clamp(min=0) % tb.r
            groups.append((s.view(-1, g.w), ok.view(-1, g.w), kt, qrow, filled, col, g.nch, g.chunk))
        col0 += tb.r
    parts = [p for p in others(rows_all) if p.width > 0]
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
    so = torch.cat(so, -1) if so else qf.new_zeros(nrows, 0)
    oko = torch.cat(oko, -1) if oko else torch.zeros(nrows, 0, dtype=torch.bool, device=dev)
    # Row maxima over every part.
    rowmax = torch.full((ntok,), lowest, dtype=qf.dtype, device=dev)
    for s, ok, _, qrow, *_ in groups:
        rowmax.scatter_reduce_(0, qrow, torch.where(ok, s, lowest).amax(-1), "amax")
    if so.shape[1]:
        rowmax[rows_all] = torch.maximum(rowmax[rows_all], torch.where(oko, so, lowest).amax(-1))
    has = rowmax > lowest
    rowmax = torch.where(has, rowmax, 0.0)
    zo = torch.where(oko, (so - rowmax[rows_all, None]) / 2, -gap)

    def z_of(s, ok, qrow):
        return torch.where(ok, (s - rowmax[qrow, None]) / 2, -gap)

    grow = 1
    while True:
        ks = [min(s.shape[1], partial_k(s.shape[1]) * grow) for s, *_ in groups]
        kmax = max(ks, default=0)
        cand = torch.full((nrows, col0, kmax), -gap, dtype=qf.dtype, device=dev)
        kth = torch.full((nrows, col0), -math.inf, dtype=qf.dtype, device=dev)
        for (s, ok, _, qrow, filled, col, *_), k in zip(groups, ks):
            vals = z_of(s, ok, qrow).topk(k, dim=-1).values[filled]
            p_rows, p_cols = pos[qrow[filled]], col[filled]
            cand[p_rows, p_cols, :k] = vals
            if k < s.shape[1]:  # a member with fewer than k real entries is complete (its k-th is -gap)
                kth[p_rows, p_cols] = torch.where(vals[:, -1] > -gap, vals[:, -1], -math.inf)
        tau, _ = _threshold15(torch.cat([cand.view(nrows, -1), zo], -1).sort(dim=-1, descending=True).values)
        unsure = (kth > tau).any(-1)
        if not bool(unsure.any()):
            break
        grow *= 2
    tau_tok = qf.new_zeros(ntok)
    tau_tok[rows_all] = tau[:, 0]
    for s, ok, kt, qrow, _, _, nch, gchunk in groups:
        p = (z_of(s, ok, qrow) - tau_tok[qrow, None]).clamp(min=0).square_().masked_fill_(~ok, 0.0)
        w = p.shape[1]
        out.index_add_(0, qrow, torch.matmul(p.view(nch, gchunk, w), _take(vf, kt)).view(-1, vf.shape[1]))
        if acc is not None:
            head = torch.div(qrow, n, rounding_mode="floor")
            acc[0].index_add_(0, head, ok.sum(-1).to(acc.dtype))
            acc[1].index_add_(0, head, (p > 0).sum(-1).to(acc.dtype))
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


def _run_rows(parts, rows, real, n, alpha, out, acc):
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
    # The probabilities overwrite the scores (no part reads its scores again).
    p_all = _rows_p(torch.cat(scores, -1) if len(scores) > 1 else scores[0], ok_all, alpha)
    res = None
    for part, p in zip(parts, p_all.split([p.width for p in parts], -1)):
        o = part.apply(p)
        if o is not None:
            res = o if res is None else res + o
    if res is not None:
        out.index_add_(0, rows, res)
    if acc is None:
        return
    acc[0].index_add_(0, head, ok_all.sum(-1).to(acc.dtype))
    acc[1].index_add_(0, head, (p_all > 0).sum(-1).to(acc.dtype))
    empty = ~ok_all.any(-1)
    if real is not None:
        empty &= real
    acc[2].index_add_(0, head, empty.to(acc.dtype))


def graph_attention(q, k, v, lengths, causal, scale, graph, alpha=1.5, method: str = "auto",
                    stats: ExecStats | None = None) -> torch.Tensor:
    """Restricted attention on ``graph``: ``method`` ``"sparse"``, ``"masked"``, or ``"auto"`` (sparse
    when :func:`supports` the graph, masked otherwise)."""
    if method not in ("auto", "sparse", "masked"):
        raise BenchError(f"unknown method {method!r}; known: auto, sparse, masked")
    if graph is not None and method != "masked" and (method == "sparse" or supports(graph)):
        return sparse_entmax_attention(q, k, v, lengths, causal, scale, graph, alpha, stats=stats)
    return masked_entmax_attention(q, k, v, lengths, causal, scale, graph, alpha, stats=stats)
