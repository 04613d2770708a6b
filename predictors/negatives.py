"""Negative keys for the hinge loss of the learned projections (:mod:`predictors.projections`).

For a query ``i`` with gold keys ``P_i``, the negatives are a uniform random subset, without
replacement, of ``min(|P_i|, #candidates)`` of its *candidates*: valid keys (never padding; for causal
data never a future key) outside the gold support. :func:`sample_negatives` draws them from dense
``[R, n]`` masks; :func:`sample_negatives_csr` draws the same distribution from the gold's CSR pairs, with
no ``[R, n]`` tensor, which is what training uses.
"""

from __future__ import annotations

import torch


def sample_negatives(gold: torch.Tensor, allowed: torch.Tensor, num: torch.Tensor,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw, for each row, ``min(num, #candidates)`` distinct keys uniformly among the candidates.

    The candidates of row ``i`` are the keys ``j`` with ``allowed[i, j] and not gold[i, j]``: valid,
    past (when causal) and outside the gold support. A uniform random subset of size ``c`` is the ``c``
    smallest of iid uniform keys, which is how it is drawn, for all rows at once.

    Parameters
    ----------
    gold, allowed : bool ``[R, n]``
    num : int64 ``[R]``, how many negatives each row wants (``|P_i|``)
    generator : CPU generator the draws come from

    Returns
    -------
    rows, cols : int64 ``[M]``, the drawn pairs, ordered by row (then by draw order)
    """
    if gold.shape != allowed.shape or gold.ndim != 2 or num.shape != gold.shape[:1]:
        raise ValueError(f"sample_negatives: gold {tuple(gold.shape)}, allowed {tuple(allowed.shape)} and "
                         f"num {tuple(num.shape)} must be [R, n], [R, n] and [R]")
    dev = gold.device
    cand = allowed & ~gold
    take = torch.minimum(num.to(dev), cand.sum(-1))
    kmax = int(take.max()) if take.numel() else 0
    if kmax == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty
    keys = torch.rand(gold.shape, generator=generator).to(dev).masked_fill_(~cand, 2.0)
    # Every row has at least take[row] candidates (keys < 1), so the chosen ones are never masked keys.
    idx = keys.topk(kmax, dim=-1, largest=False, sorted=True).indices
    keep = torch.arange(kmax, device=dev)[None, :] < take[:, None]
    rows = torch.arange(gold.shape[0], device=dev)[:, None].expand(-1, kmax)[keep]
    return rows, idx[keep]


def sample_negatives_csr(limit: torch.Tensor, pos_rows: torch.Tensor, pos_cols: torch.Tensor,
                         num: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_negatives` for rows whose allowed keys are a prefix, without ``[R, n]`` tensors.

    Row ``i`` may see keys ``0 <= j < limit[i]`` (valid, and past when causal: always a prefix); its
    gold keys are the pairs ``(pos_rows, pos_cols)``. Same distribution as :func:`sample_negatives`:
    ``min(num, limit - |gold|)`` distinct non-gold allowed keys, uniformly.

    How: a row with ``c`` negatives among ``M = limit - |gold|`` candidates draws ``2 c + 8`` iid ranks
    in ``[0, M)`` and keeps its first ``c`` distinct ones (a uniform ``c``-subset, :func:`_distinct_ranks`);
    rank ``u`` is the ``u``-th non-gold key, ``u + #{t : g_t - t <= u}`` for the sorted gold keys ``g_t``
    (:func:`_rank_keys`). Rows with ``2 c > M``, and the rare rows whose draws hold fewer than ``c``
    distinct ranks, are drawn again with the dense method (:func:`_dense_negatives`); either way each
    row's subset is uniform. Cost ``O(|gold| log |gold|)``.
    """
    nrows = limit.numel()
    if nrows == 0:
        return limit.new_zeros(0), limit.new_zeros(0)
    big = int(limit.max()) + 1
    pos_key = pos_rows * big + pos_cols
    if not bool((pos_key[1:] >= pos_key[:-1]).all()):  # CSR order already is (row, key) order
        order = pos_key.argsort()
        pos_rows, pos_cols = pos_rows[order], pos_cols[order]
    p = torch.bincount(pos_rows, minlength=nrows)
    cand = limit - p
    if bool((cand < 0).any()):
        raise ValueError("sample_negatives_csr: a row has more gold keys than allowed keys")
    c = torch.minimum(num.to(limit.device), cand)
    sparse = (c > 0) & (2 * c <= cand)
    sr = sparse.nonzero().flatten()
    rows_s, u, enough = _distinct_ranks(sr, c, cand, big, generator)
    cols_s = _rank_keys(rows_s, u, pos_rows, pos_cols, p, big)
    dense = ((c > 0) & ~sparse).clone()
    dense[sr[~enough]] = True
    dr = dense.nonzero().flatten()
    if dr.numel():
        rows_d, cols_d = _dense_negatives(dr, limit, pos_rows, pos_cols, c, generator)
        rows_s, cols_s = torch.cat([rows_s, rows_d]), torch.cat([cols_s, cols_d])
        order = rows_s.argsort(stable=True)
        rows_s, cols_s = rows_s[order], cols_s[order]
    return rows_s, cols_s


def _distinct_ranks(sr: torch.Tensor, c: torch.Tensor, cand: torch.Tensor, big: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the rows ``sr`` (int64 ``[R']``), ``2 c + 8`` iid ranks in ``[0, cand)`` each, of which the first
    ``c`` distinct ones in draw order are kept.

    Returns the kept ``(rows, ranks)`` (int64 ``[M]``, by row, then draw order) and, per row of ``sr``,
    whether its draws held ``c`` distinct ranks (bool ``[R']``; the others keep none and are redrawn).
    """
    dev = c.device
    draws = 2 * c[sr] + 8
    d_row = torch.repeat_interleave(sr, draws)
    u = (torch.rand(d_row.numel(), generator=generator, dtype=torch.float64).to(dev) * cand[d_row]).long()
    u = torch.minimum(u, cand[d_row] - 1)
    # First occurrence of each rank in draw order: a stable sort keeps equal keys in draw order.
    key = d_row * big + u
    srt = key.argsort(stable=True)
    first_sorted = torch.ones_like(key, dtype=torch.bool)
    first_sorted[1:] = key[srt][1:] != key[srt][:-1]
    first = torch.empty_like(first_sorted)
    first[srt] = first_sorted
    cum = torch.cumsum(first.long(), 0)
    seg_start = torch.cumsum(draws, 0) - draws
    seg_end = seg_start + draws - 1
    before = (cum - first.long())[seg_start]
    rank = cum - torch.repeat_interleave(before, draws)  # distinct ranks so far, this draw included
    enough = (cum[seg_end] - before) >= c[sr]
    keep = first & (rank <= c[d_row]) & torch.repeat_interleave(enough, draws)
    return d_row[keep], u[keep], enough


def _rank_keys(rows: torch.Tensor, u: torch.Tensor, pos_rows: torch.Tensor, pos_cols: torch.Tensor,
               p: torch.Tensor, big: int) -> torch.Tensor:
    """The key of rank ``u`` among the non-gold keys of each row: ``u`` plus the gold keys below it.

    ``pos_rows``, ``pos_cols``: the gold pairs sorted by (row, key); ``p``: gold keys per row.
    """
    row_start = torch.cumsum(p, 0) - p
    adj = pos_cols - (torch.arange(pos_rows.numel(), device=p.device) - row_start[pos_rows])
    below = torch.searchsorted(pos_rows * big + adj, rows * big + u, right=True) - row_start[rows]
    return u + below


def _dense_negatives(dr: torch.Tensor, limit: torch.Tensor, pos_rows: torch.Tensor, pos_cols: torch.Tensor,
                     c: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_negatives` on the rows ``dr`` only, with ``[len(dr), max limit]`` masks: (rows, keys)."""
    dev = limit.device
    n = int(limit[dr].max())
    local = torch.full((limit.numel(),), -1, dtype=torch.long, device=dev)
    local[dr] = torch.arange(dr.numel(), device=dev)
    sel = local[pos_rows] >= 0
    gold = torch.zeros(dr.numel(), n, dtype=torch.bool, device=dev)
    gold[local[pos_rows[sel]], pos_cols[sel]] = True
    allowed = torch.arange(n, device=dev)[None, :] < limit[dr][:, None]
    rows_d, cols_d = sample_negatives(gold, allowed, c[dr], generator)
    return dr[rows_d], cols_d
