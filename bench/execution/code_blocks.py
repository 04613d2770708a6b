"""Code parts of a sparse plan as dense blocks: clusters, buckets and hash codes (Routing-style).

Everything here works on one sample with the heads folded into the token axis: query row and key
``h * n + i`` is token ``i`` of head ``h`` (``qf``, ``kf``, ``vf`` ``[H n, D]``), and code ``c`` of head
``h`` becomes code ``h * C + c``, so one sort and one set of blocks serve every head. Key indices are
always of the row's own head.

Query and key *members* (token, code) are sorted by code; the query members of one code fill whole
chunks of rows, and each chunk meets the keys of its code, one contiguous run of the sorted key
members, as a dense ``[chunk, W]`` block. Codes are grouped by their number of keys (classes
``[ratio^c, ratio^(c+1))``) and each group is padded to its own ``W``, so the blocks hold about as many
entries as the pairs themselves, even for the very unequal clusters of k-means. A pair sharing several
codes is kept under the smallest one only (bit masks of the code sets, :data:`BITS` codes per word).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from predictors.entmax import band_support, keyed_values, partial_k
from predictors.graphs import CodeGraph

# Smallest number of score entries worth a group of its own (see merge_classes).
MIN_BLOCK = 1 << 16
# Most score entries of one row block (split_group): 4 MiB of float32 scores, measured fastest at n = 4096.
MAX_PIECE = 1 << 22
BITS = 63


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``x[index]`` of a 1-d or 2-d ``x`` for an index tensor of any shape: ``[*index.shape, *x.shape[1:]]``.

    ``index_select`` on the flattened index: several times faster on the CPU than advanced indexing.
    """
    return x.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])


def code_sets(codes: torch.Tensor, graph: CodeGraph) -> tuple[torch.Tensor, int]:
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


class CodeTable:
    """The codes of one :class:`CodeGraph` on one sample, heads folded: what every row block needs.

    ``qc``, ``kc`` int64 ``[H n, R]`` (global codes, ``-1`` none; ``R`` may differ between the two);
    ``qbits``, ``kbits`` int64
    ``[H n, words]``, the same sets as bit masks of the head's own codes (63 per word); key members
    ``(token, r)`` sorted by code: ``key_tok`` (their flat token), ``kstart``, ``kcnt`` per code;
    ``need`` ``[H n]``: the keys a query row meets through its codes, duplicates included.
    """

    def __init__(self, graph: CodeGraph, s: int, n: int, device):
        qc, total = code_sets(graph.q_codes[s, :, :n].to(device), graph)
        kc, _ = code_sets(graph.k_codes[s, :, :n].to(device), graph)
        h, _, r = qc.shape
        rk = kc.shape[-1]  # queries and keys may have different numbers of code columns
        self.qbits, self.kbits = code_bits(qc.reshape(h * n, r), total), code_bits(kc.reshape(h * n, rk), total)
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
        return ((take(self.qbits, rows)[:, None, :] & take(self.kbits, j)) != 0).any(-1)

    def below(self, code: torch.Tensor) -> torch.Tensor:
        """Bit masks ``[..., words]`` of the codes of the same head below global codes ``code``."""
        local = code % self.total
        word = torch.arange(self.qbits.shape[1], device=code.device)
        bit = torch.ones_like(local).bitwise_left_shift(local % BITS) - 1
        full = torch.full_like(local, (1 << BITS) - 1)
        w = (local // BITS)[..., None]
        return torch.where(word < w, full[..., None], torch.where(word == w, bit[..., None], 0))


def code_bits(codes: torch.Tensor, total: int) -> torch.Tensor:
    """Code sets ``[N, R]`` (``-1`` none, no repeats) as bit masks ``[N, ceil(total / 63)]``, int64."""
    words = max(1, -(-total // BITS))
    out = torch.zeros(codes.shape[0], words + 1, dtype=torch.long, device=codes.device)
    ok = codes >= 0
    word = torch.where(ok, codes // BITS, words)  # none -> a spare word, dropped
    value = torch.where(ok, torch.ones_like(codes).bitwise_left_shift(codes.clamp(min=0) % BITS), 0)
    return out.scatter_add_(1, word, value)[:, :words]


@dataclass
class Group:
    """One width class of code blocks: ``nch`` chunks of ``chunk`` slots meeting ``w`` keys each."""

    codes: torch.Tensor  # [U] codes of the group, each filling whole chunks
    chunk_code: torch.Tensor  # [nch]
    slot_member: torch.Tensor  # [nch * chunk], member index (row position * R + r), -1 empty
    nch: int
    w: int
    chunk: int  # slots per chunk


class CodeBlocks:
    """The code part of one sample for the query rows ``rows``, as dense blocks (Routing-style).

    Query members (row, code) are sorted by code; the members of one code fill whole chunks of
    ``chunk`` slots, and each chunk meets the keys of its code (one contiguous run of the code-sorted
    key members) as a dense ``[chunk, W]`` block. Codes are grouped by their key count in classes
    ``[ratio^c, ratio^(c+1))`` and each group is padded to its own ``W`` only, so the blocks hold about
    as many entries as the code pairs themselves.
    """

    def __init__(self, table: CodeTable, rows, qf, kf, vf, n, scale, causal, chunk, ratio):
        self.table, self.rows, self.chunk = table, rows, chunk
        self.qf, self.kf, self.vf, self.n, self.scale, self.causal = qf, kf, vf, n, scale, causal
        dev = rows.device
        qc = table.qc[rows]  # [N, R]
        self.seg = torch.where(qc >= 0, table.kcnt[qc.clamp(min=0)], 0)  # keys met by each member
        members = (self.seg > 0).flatten().nonzero().flatten()  # member index = row position * R + r
        self.groups: list[Group] = []
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
        for gsize in merge_classes(csizes.tolist(), per.tolist(), table.kcnt[ucode].tolist(), chunk):
            gcode, gcnt = ucode[first : first + gsize], ucnt[first : first + gsize]
            first += gsize
            gm = int(gcnt.sum())
            gchunk = group_chunk(gcnt, chunk)
            gper = (gcnt + gchunk - 1) // gchunk
            pad = gper * gchunk
            astart = torch.cumsum(pad, 0) - pad
            ustart = torch.cumsum(gcnt, 0) - gcnt
            which = torch.repeat_interleave(torch.arange(gsize, device=dev), gcnt)
            slot = astart[which] + torch.arange(gm, device=dev) - ustart[which]
            slot_member = torch.full((int(pad.sum()),), -1, dtype=torch.long, device=dev)
            slot_member[slot] = members[m0 : m0 + gm]
            m0 += gm
            group = Group(gcode, torch.repeat_interleave(gcode, gper), slot_member, int(gper.sum()),
                          int(table.kcnt[gcode].max()), gchunk)
            self.groups.extend(split_group(group, table.kcnt, MAX_PIECE))

    def compute(self, g: Group):
        """Scores and ``ok`` ``[nch, chunk, w]`` of one group, its key tokens ``kt`` ``[nch, w]``, the query
        token of each slot ``qrow`` ``[nch * chunk]`` and whether the slot is used ``filled``."""
        table, chunk, n, dev = self.table, g.chunk, self.n, self.rows.device
        r = table.r
        klen = table.kcnt[g.chunk_code]
        kidx = (table.kstart[g.chunk_code][:, None] + torch.arange(g.w, device=dev)).clamp(
            max=table.key_tok.numel() - 1)
        kt = take(table.key_tok, kidx)  # [nch, W] flat key tokens
        filled = g.slot_member >= 0
        qrow = self.rows[torch.div(g.slot_member.clamp(min=0), r, rounding_mode="floor")]
        scores = torch.matmul(take(self.qf, qrow).view(g.nch, chunk, -1),
                              take(self.kf, kt).transpose(-1, -2)).mul_(self.scale)
        ok = (torch.arange(g.w, device=dev) < klen[:, None])[:, None, :] & filled.view(g.nch, chunk, 1)
        if self.causal:
            ok &= (kt % n)[:, None, :] <= (qrow % n).view(g.nch, chunk, 1)
        if r > 1:
            # A pair met through code c counts only when c is the smallest code the two share.
            qlow = take(table.qbits, qrow).view(g.nch, chunk, -1) & table.below(g.chunk_code)[:, None, :]
            kbits = take(table.kbits, kt)
            for word in range(qlow.shape[-1]):
                ok &= (qlow[..., word, None] & kbits[:, None, :, word]) == 0
        return scores, ok, kt, qrow, filled


def fast_group_rows(blocks: CodeBlocks, g: Group, out: torch.Tensor, acc: torch.Tensor | None) -> None:
    """One group of code blocks computed as a row block of its own on the CPU when it has no other
    part (no window, keys or global columns) and one code per row: :meth:`CodeBlocks.compute`'s
    products, but the masks (the code's key count, the empty slots, causality) are read from their
    structure by the compiled kernel (:func:`predictors.entmax.band_support`) instead of being built,
    and ``P V`` is summed over the support (:func:`predictors.entmax.keyed_values`); adds to ``out``
    and ``acc`` what :func:`bench.execution.row_parts.run_rows` adds, the same supports and counts."""
    table, chunk, n, dev = blocks.table, g.chunk, blocks.n, blocks.rows.device
    klen = table.kcnt[g.chunk_code]
    kidx = (table.kstart[g.chunk_code][:, None] + torch.arange(g.w, device=dev)).clamp(
        max=table.key_tok.numel() - 1)
    kt = take(table.key_tok, kidx)  # [nch, W] flat key tokens
    filled = g.slot_member >= 0
    qrow = blocks.rows[torch.div(g.slot_member.clamp(min=0), table.r, rounding_mode="floor")]
    raw = torch.matmul(take(blocks.qf, qrow).view(g.nch, chunk, -1), take(blocks.kf, kt).transpose(-1, -2))
    widths = torch.where(filled, klen.repeat_interleave(chunk), 0)
    kpos = kt % n if blocks.causal else None
    counts, cols, probs, allowed = band_support(raw.view(-1, g.w), blocks.scale, widths, chunk, blocks.causal,
                                                kpos, qrow % n, partial_k(g.w))
    out.index_add_(0, qrow, keyed_values(counts, cols, probs, kt, chunk, blocks.vf))
    if acc is not None:
        head = torch.div(qrow, n, rounding_mode="floor")
        acc[0].index_add_(0, head, allowed.to(acc.dtype))
        acc[1].index_add_(0, head, counts.to(acc.dtype))
        acc[2].index_add_(0, head, ((allowed == 0) & filled).to(acc.dtype))


def split_group(g: Group, kcnt: torch.Tensor, max_entries: int = MAX_PIECE) -> list[Group]:
    """``g`` cut into pieces of whole chunks holding at most ``max_entries`` score entries each (one
    chunk at least), each padded to its own widest code (``kcnt``: keys per code). Every pass of a
    row block (scores, masks, entmax, ``P V``) then runs over a few MiB that stay in the cache,
    instead of the whole group from memory once per pass."""
    per = max(1, max_entries // max(1, g.chunk * g.w))
    if g.nch <= per:
        return [g]
    out = []
    for a in range(0, g.nch, per):
        b = min(g.nch, a + per)
        codes = g.chunk_code[a:b]
        out.append(Group(g.codes, codes, g.slot_member[a * g.chunk : b * g.chunk], b - a, int(kcnt[codes].max()),
                         g.chunk))
    return out


def group_chunk(counts: torch.Tensor, chunk: int) -> int:
    """Slots per chunk of a group whose codes have ``counts`` query members: the largest of ``chunk``,
    ``2 chunk``, ... ``8 chunk`` that pads the group by at most an eighth. Larger chunks gather each
    code's keys and values fewer times (every chunk gathers its own ``[W, D]`` block)."""
    total = int(counts.sum())
    best = chunk
    for c in (2 * chunk, 4 * chunk, 8 * chunk):
        if int(((counts + c - 1) // c * c).sum()) <= total * 1.125:
            best = c
    return best


def merge_classes(sizes: list, chunks: list, widths: list, chunk: int) -> list:
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
