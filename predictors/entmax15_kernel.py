"""Exact 1.5-entmax over rows of scores in compiled loops (numba): the CPU kernel of
:mod:`predictors.entmax`.

For a row ``x`` of ``n`` scores, ``entmax.entmax15(x, k=K)`` shifts and halves the row
(``z = (x - max x) / 2``), sorts the ``K`` largest ``z`` in decreasing order, computes for every prefix
``rho = 1..K`` of them (Peters et al., 2019)

    mean_rho = S1_rho / rho,   mean_sq_rho = S2_rho / rho       (S1, S2: cumulative sums of z, z^2)
    tau_rho  = mean_rho - sqrt(max(0, (1 - rho (mean_sq_rho - mean_rho^2)) / rho))

takes the support size ``s = #{rho : tau_rho <= z_(rho)}`` (again with ``2 K`` entries while
``s == K < n``), the threshold ``tau = tau_s`` and ``p = max(z - tau, 0)^2`` over the whole row.

The kernels compute the same floats in the same order, from the *candidates* of each row only: the
entries with ``z >= CANDIDATE_FLOOR``. Every other entry is out of the support and never counted by
the formula (its threshold at every prefix is at least ``max z - 1 = -1``, less a rounding error far
below the margin; :mod:`bench.execution.row_entmax` states the same bound), so the sorted candidates
are the sorted row as far as the formula looks. Real rows hold a few to a few hundred candidates
among hundreds or thousands of entries: two passes over the row (its maximum; the candidates) and a
sort of the candidates replace ``topk``'s partial sort and the library's five full passes.

Same floats: torch sums ``cumsum`` of float32 in float64 on the CPU (so ``S1``, ``S2`` are float64
sums rounded to float32 here too); ``+ - * /`` are correctly rounded float32 operations in both; but
torch's float32 ``sqrt`` on the CPU is MKL's vector math, which is not correctly rounded (about one
value in five differs from the correctly rounded root by one unit, the same value always giving the
same root). So the work is split in three: :func:`row_candidates` (candidates, sorted, and each
prefix's ``mean`` and clamped ``delta``), ``torch.sqrt`` of the ``delta`` (the caller,
:func:`predictors.entmax._kernel_threshold`), and :func:`support_rows` / :func:`dense_rows`
(threshold, support size with the widening, probabilities).

The kernels are compiled on first use (``cache=True``: once per machine, in numba's cache) and run on
one thread, on float32 CPU arrays; :mod:`predictors.entmax` keeps the PyTorch path for other devices.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: See the module docstring: entries of ``z = (x - max x) / 2`` below this are never in the support.
CANDIDATE_FLOOR = np.float32(-1.001)

_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)
_LOWEST = np.float32(-3.4028234663852886e38)


@njit(cache=True, nogil=True)
def _row_max(row, allowed, use_mask):
    """The largest allowed entry of ``row`` and whether it has any allowed entry."""
    mx = _LOWEST
    seen = False
    for j in range(row.shape[0]):
        if (not use_mask or allowed[j]) and (not seen or row[j] > mx):
            mx = row[j]
            seen = True
    return mx, seen


@njit(cache=True, nogil=True)
def _grow(a, used, need):
    """A copy of ``a``'s first ``used`` entries with room for ``need`` more (at least doubled)."""
    out = np.empty(max(2 * a.shape[0], used + need), dtype=a.dtype)
    out[:used] = a[:used]
    return out


@njit(cache=True, nogil=True)
def _fill_candidates(row, mask, use_mask, mx, cols, z, used):
    """Append the candidates of ``row`` (maximum ``mx``) to ``cols``, ``z`` from ``used`` on; return
    the new count. (A function of its own: the arrays are fixed inside it, which keeps the loop as
    fast as a plain pass, about 1 ns an entry; inlined where they may be reassigned it was 30x slower.)"""
    for j in range(row.shape[0]):
        if use_mask and not mask[j]:
            continue
        zj = (row[j] - mx) * _HALF
        if zj >= CANDIDATE_FLOOR:
            cols[used] = j
            z[used] = zj
            used += 1
    return used


@njit(cache=True, nogil=True)
def _prefix_terms(zs, mean, delta):
    """``mean_rho`` and ``max(0, delta_rho)`` of the module docstring for the sorted ``zs``, in place."""
    s1 = 0.0
    s2 = 0.0
    for r in range(zs.shape[0]):
        x = zs[r]
        s1 += np.float64(x)
        s2 += np.float64(np.float32(x * x))
        rho = np.float32(r + 1)
        m = np.float32(np.float32(s1) / rho)
        m_sq = np.float32(np.float32(s2) / rho)
        spread = np.float32(rho * np.float32(m_sq - np.float32(m * m)))
        d = np.float32(np.float32(_ONE - spread) / rho)
        mean[r] = m
        delta[r] = d if d > _ZERO else _ZERO


@njit(cache=True, nogil=True)
def row_candidates(scores, allowed, use_mask):
    """Candidates of every row of float32 ``scores`` ``[R, n]`` (over its ``allowed`` ``[R, n]``
    entries when ``use_mask``; else ``allowed`` is ignored).

    Returns ``starts`` int64 ``[R + 1]`` (row ``r``'s candidates are ``starts[r]:starts[r + 1]``; a row
    with no allowed entry has none and ``empty[r]``), ``empty`` bool ``[R]``, and per candidate:
    ``cols`` int32 and ``z`` float32 in column order, ``zs`` float32 sorted decreasing within the row,
    ``mean`` and ``delta`` float32 (the prefix terms of ``zs``)."""
    r_count, n = scores.shape
    starts = np.zeros(r_count + 1, dtype=np.int64)
    empty = np.zeros(r_count, dtype=np.bool_)
    cols = np.empty(max(64, 8 * r_count), dtype=np.int32)
    z = np.empty(cols.shape[0], dtype=np.float32)
    used = 0
    for r in range(r_count):
        row = scores[r]
        mask = allowed[r] if use_mask else allowed[0]
        mx, seen = _row_max(row, mask, use_mask)
        empty[r] = not seen
        if seen:
            if used + n > cols.shape[0]:
                cols, z = _grow(cols, used, n), _grow(z, used, n)
            used = _fill_candidates(row, mask, use_mask, mx, cols, z, used)
        starts[r + 1] = used
    zs = np.empty(used, dtype=np.float32)
    mean = np.empty(used, dtype=np.float32)
    delta = np.empty(used, dtype=np.float32)
    for r in range(r_count):
        a, b = starts[r], starts[r + 1]
        zs[a:b] = np.sort(z[a:b])[::-1]
        _prefix_terms(zs[a:b], mean[a:b], delta[a:b])
    return starts, empty, cols[:used].copy(), z[:used].copy(), zs, mean, delta


@njit(cache=True, nogil=True)
def _band_max(row, width, scale, causal, kpos, qpos):
    """The largest allowed ``scale * row[j]`` (``j < width``, and ``kpos[j] <= qpos`` when causal) and
    the number of allowed entries."""
    mx = _LOWEST
    count = 0
    for j in range(width):
        if causal and kpos[j] > qpos:
            continue
        x = row[j] * scale
        if count == 0 or x > mx:
            mx = x
        count += 1
    return mx, count


@njit(cache=True, nogil=True)
def _fill_band(row, width, scale, causal, kpos, qpos, mx, cols, z, used):
    """:func:`_fill_candidates` for the allowed entries of :func:`_band_max`, scaled by ``scale``."""
    for j in range(width):
        if causal and kpos[j] > qpos:
            continue
        zj = (row[j] * scale - mx) * _HALF
        if zj >= CANDIDATE_FLOOR:
            cols[used] = j
            z[used] = zj
            used += 1
    return used


@njit(cache=True, nogil=True)
def block_candidates(raw, scale, widths, chunk, causal, kpos, qpos):
    """:func:`row_candidates` of the rows of code blocks, their masks given by structure, not stored:
    row ``r`` of unscaled products ``raw`` ``[R, W]`` allows the entries ``j < widths[r]`` (its code's
    key count; 0 for an empty slot) and, when ``causal``, only the keys at positions
    ``kpos[r // chunk, j] <= qpos[r]``; each allowed entry is ``scale * raw[r, j]``, the float32
    product torch's ``mul_(scale)`` gives. Returns :func:`row_candidates`' tuple and ``allowed``
    int64 ``[R]``, the allowed entries per row."""
    r_count, w_max = raw.shape
    starts = np.zeros(r_count + 1, dtype=np.int64)
    allowed = np.zeros(r_count, dtype=np.int64)
    cols = np.empty(max(64, 8 * r_count), dtype=np.int32)
    z = np.empty(cols.shape[0], dtype=np.float32)
    used = 0
    for r in range(r_count):
        row, width, kp, qp = raw[r], widths[r], kpos[r // chunk], qpos[r]
        mx, count = _band_max(row, width, scale, causal, kp, qp)
        allowed[r] = count
        if count > 0:
            if used + w_max > cols.shape[0]:
                cols, z = _grow(cols, used, w_max), _grow(z, used, w_max)
            used = _fill_band(row, width, scale, causal, kp, qp, mx, cols, z, used)
        starts[r + 1] = used
    zs = np.empty(used, dtype=np.float32)
    mean = np.empty(used, dtype=np.float32)
    delta = np.empty(used, dtype=np.float32)
    for r in range(r_count):
        a, b = starts[r], starts[r + 1]
        zs[a:b] = np.sort(z[a:b])[::-1]
        _prefix_terms(zs[a:b], mean[a:b], delta[a:b])
    return starts, allowed == 0, cols[:used].copy(), z[:used].copy(), zs, mean, delta, allowed


@njit(cache=True, nogil=True)
def _row_tau(zs, mean, root, k_first, n):
    """``tau = tau_s`` of one row from its sorted candidates' prefix terms (``root = sqrt(delta)``),
    with ``entmax15``'s widening: the support is counted over the first ``k`` sorted entries,
    ``k = k_first, 2 k_first, ...`` (at most ``n``), while it fills them."""
    count = zs.shape[0]
    k = min(k_first, n)
    while True:
        support = 0
        for r in range(min(k, count)):
            if np.float32(mean[r] - root[r]) <= zs[r]:
                support += 1
        if support < k or k >= n:
            return np.float32(mean[support - 1] - root[support - 1])
        k = min(2 * k, n)


@njit(cache=True, nogil=True)
def support_rows(n, starts, cols, z, zs, mean, root, k_first):
    """The nonzeros of ``entmax15(scores, k=k_first)`` from :func:`row_candidates`' output and
    ``root = sqrt(delta)``: ``counts`` int64 ``[R]``, ``cols`` int32 and ``probs`` float32 ``[nnz]``,
    rows in order, columns increasing within a row."""
    r_count = starts.shape[0] - 1
    counts = np.zeros(r_count, dtype=np.int64)
    out_cols = np.empty(cols.shape[0], dtype=np.int32)
    probs = np.empty(cols.shape[0], dtype=np.float32)
    nnz = 0
    for r in range(r_count):
        a, b = starts[r], starts[r + 1]
        if a == b:
            continue
        tau = _row_tau(zs[a:b], mean[a:b], root[a:b], k_first, n)
        for c in range(a, b):
            d = np.float32(z[c] - tau)
            p = np.float32(d * d)
            if d > _ZERO and p > _ZERO:
                out_cols[nnz] = cols[c]
                probs[nnz] = p
                nnz += 1
                counts[r] += 1
    return counts, out_cols[:nnz].copy(), probs[:nnz].copy()


@njit(cache=True, nogil=True)
def dense_rows(out, starts, cols, z, zs, mean, root, k_first):
    """Write ``entmax15(scores[r], k=k_first)`` into the zeros of row ``r`` of ``out`` ``[A, B, n]``
    (any strides; row ``r`` is ``out[r // B, r % B]``) from :func:`row_candidates`' output and
    ``root = sqrt(delta)``; rows without candidates stay zero."""
    b_count, n = out.shape[1], out.shape[2]
    for r in range(starts.shape[0] - 1):
        a, b = starts[r], starts[r + 1]
        if a == b:
            continue
        tau = _row_tau(zs[a:b], mean[a:b], root[a:b], k_first, n)
        row = out[r // b_count, r % b_count]
        for c in range(a, b):
            d = np.float32(z[c] - tau)
            if d > _ZERO:
                row[cols[c]] = np.float32(d * d)


@njit(cache=True, nogil=True)
def support_times_values(counts, cols, probs, values, block, out):
    """``out[r] = sum_j p_rj v_j`` over the nonzeros of each row (:func:`support_rows`' ``counts``,
    ``cols``, ``probs``): row ``r`` of a block of ``[H, block]`` rows reads head ``r // block`` of
    ``values`` ``[H, n, Dv]`` and writes ``out`` ``[H * block, Dv]`` (float32 sums in column order)."""
    dv = values.shape[2]
    at = 0
    for r in range(counts.shape[0]):
        head = values[r // block]
        acc = out[r]
        acc[:] = _ZERO
        for e in range(at, at + counts[r]):
            p = probs[e]
            v = head[cols[e]]
            for c in range(dv):
                acc[c] += p * v[c]
        at += counts[r]


@njit(cache=True, nogil=True)
def support_times_keys(counts, cols, probs, keys, factor, values, out):
    """``out[r] = sum_e p_e v[keys[r // factor, cols_e]]`` over the nonzeros of each row
    (:func:`support_rows`' ``counts``, ``cols``, ``probs``): the entries of row ``r`` are the keys
    ``keys[r // factor]`` (flat rows of ``values`` ``[N, Dv]``; ``factor`` rows share a key row, as the
    rows of one chunk of code blocks do); ``out`` ``[R, Dv]`` (float32 sums in column order)."""
    dv = values.shape[1]
    at = 0
    for r in range(counts.shape[0]):
        key_row = keys[r // factor]
        acc = out[r]
        acc[:] = _ZERO
        for e in range(at, at + counts[r]):
            p = probs[e]
            v = values[key_row[cols[e]]]
            for c in range(dv):
                acc[c] += p * v[c]
        at += counts[r]


@njit(cache=True, nogil=True)
def support_times_heads(counts, cols, probs, heads, values, out):
    """``out[r] = sum_e p_e values[heads[r], cols_e]`` over the nonzeros of each row
    (:func:`support_rows`' ``counts``, ``cols``, ``probs``), row ``r`` of head ``heads[r]`` of
    ``values`` ``[H, n, Dv]``; ``out`` ``[R, Dv]`` (float32 sums in column order)."""
    dv = values.shape[2]
    at = 0
    for r in range(counts.shape[0]):
        head = values[heads[r]]
        acc = out[r]
        acc[:] = _ZERO
        for e in range(at, at + counts[r]):
            p = probs[e]
            v = head[cols[e]]
            for c in range(dv):
                acc[c] += p * v[c]
        at += counts[r]
