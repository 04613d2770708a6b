"""Exact alpha-entmax over rows of scores: the kernels shared by the gold graph, the dense references,
the score oracles and attention restricted to a predicted graph.

For alpha = 1.5, :func:`entmax15_support` computes exactly what ``entmax.entmax15(x, dim=-1, k=k)``
computes, in fewer passes over the row. ``entmax15`` shifts and halves the whole row
(``z = (x - max x) / 2``), partially sorts it (the ``k`` largest ``z``), takes the threshold ``tau``
from those, and forms ``p = max(z - tau, 0)^2`` over the whole row: five passes over ``n`` entries
besides the partial sort. Here the partial sort runs on the raw row (``(x - max x) / 2`` is monotone
and elementwise, so the sorted ``z`` are the same floats; :func:`largest`: ``topk``, or for long rows
a search of the groups of entries with the largest maxima), the threshold comes from the same formula
on the same ``k`` floats (:func:`threshold15`), and the probabilities are formed for those ``k``
entries only. That is the whole support when the ``k``-th largest entry has probability 0 (every
entry outside the ``k`` is at most that one, and ``max(z - tau, 0)^2`` is monotone in ``z``); the
rows where it is not (their support fills the ``k``, or, never seen, the ``k``-th entry is positive
although the support is smaller) are redone exactly as ``entmax15`` does: the rows whose support
fills ``k`` again with ``2 k`` entries (until the full sort), the others over the whole row with
their threshold. Real supports are small (a few to a few tens of keys), so a small first ``k``,
:data:`PARTIAL_K`, is the fastest exact choice (measured at n = 2048-4096 on synthetic heads: k = 16
took half the time of k = 0.1 n, a quarter of the full sort's). Other alphas use ``entmax_bisect``
with :data:`BISECT_ITERS` iterations.

On the CPU (float32, no autograd: :func:`uses_kernel`) the same floats come from a compiled kernel,
:mod:`predictors.entmax15_kernel` (numba): per row its maximum, the candidates ``z >= -1.001``, their
sort and the threshold with the library's widening of the partial sort, in two passes over the row
instead of a partial sort and several passes (:func:`support_counts`, :func:`dense_into`, and
:func:`support_values` for ``P V`` over the support). The PyTorch path above serves other devices
and dtypes, and the tests hold the two to the same bits.
"""

from __future__ import annotations

import numpy as np
import torch
from entmax import entmax_bisect

from predictors.masking import mask_scores

PARTIAL_K = 16
BISECT_ITERS = 50


def partial_k(n: int) -> int:
    """First partial-sort width of exact ``entmax15`` over rows of ``n`` entries (doubled where needed)."""
    return min(n, PARTIAL_K)


def threshold15(xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1.5-entmax threshold ``tau`` ``[R, 1]`` of rows ``xs`` ``[R, m]``, already shifted, halved
    (``x = (s - max s) / 2``) and sorted in decreasing order (all of a row, or its largest entries):
    ``sum_j max(x_j - tau, 0)^2 = 1``, by the exact sort-based formula of :mod:`entmax` (Peters et al.,
    2019), the same float operations in the same order; and the support size ``[R, 1]``, which equals
    ``m`` when the given entries may not hold all of it."""
    rho = torch.arange(1, xs.shape[-1] + 1, device=xs.device, dtype=xs.dtype)
    mean = xs.cumsum(-1) / rho
    mean_sq = (xs * xs).cumsum(-1) / rho
    delta = (1 - rho * (mean_sq - mean * mean)) / rho
    tau = mean - delta.clamp(min=0).sqrt()
    support = (tau <= xs).sum(-1, keepdim=True)
    return tau.gather(-1, (support - 1).clamp(min=0)), support


def entmax15_support(scores: torch.Tensor, k: int | None = PARTIAL_K, work: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The nonzeros of ``entmax15(scores, dim=-1, k=k)`` for ``scores`` ``[R, n]`` (already masked).

    Bit for bit the entries and values ``entmax15`` gives (module docstring); ``k=None`` or
    ``k >= n`` sorts fully, as ``entmax15`` does. ``work``: a reusable buffer for :func:`largest`.

    Returns
    -------
    rows, cols : int64 ``[nnz]``, in row-major order (columns increasing within a row)
    probs : ``[nnz]``, the probabilities, in ``scores``' dtype
    """
    r, n = scores.shape
    if r == 0 or n == 0:
        return (torch.zeros(0, dtype=torch.int64, device=scores.device),) * 2 + (scores.new_zeros(0),)
    if uses_kernel(scores):
        counts, cols, probs = support_counts(scores, k)
        return torch.repeat_interleave(torch.arange(r), counts), cols.long(), probs
    p, idx, redone = _largest_probs(scores, k, work)
    key, order = torch.where(p > 0, idx, n).sort(dim=-1)  # n: after every column, i.e. dropped
    keep = key < n
    rows, cols, probs = keep.nonzero()[:, 0], key[keep], p.gather(-1, order)[keep]
    if not redone:
        return rows, cols, probs
    rows, cols, probs = (torch.cat([x, *(pt[j] for pt in redone)]) for j, x in enumerate((rows, cols, probs)))
    order = (rows * n + cols).argsort()
    return rows[order], cols[order], probs[order]


#: Whether the compiled kernel serves float32 CPU scores (the tests switch it off to check the
#: PyTorch path, which runs everywhere else, against it).
COMPILED = True


def uses_kernel(scores: torch.Tensor) -> bool:
    """Whether the compiled kernel (:mod:`predictors.entmax15_kernel`) serves ``scores``: float32 on the
    CPU, no autograd, :data:`COMPILED`. Elsewhere (a GPU, other dtypes) the PyTorch path of the same
    floats runs."""
    return (COMPILED and scores.device.type == "cpu" and scores.dtype == torch.float32
            and not scores.requires_grad)


def _kernel_rows(scores: torch.Tensor, allowed: torch.Tensor | None = None):
    """:func:`predictors.entmax15_kernel.row_candidates` of ``scores`` ``[R, n]`` (over ``allowed``
    ``[R, n]`` when given), with ``root = sqrt(delta)`` taken by torch: the library's float32 root,
    which is not always the correctly rounded one (the kernel's module docstring)."""
    from predictors import entmax15_kernel as kernel

    x = scores.detach().contiguous().numpy()
    mask = np.zeros((1, 0), dtype=np.bool_) if allowed is None else allowed.expand_as(scores).contiguous().numpy()
    starts, empty, cols, z, zs, mean, delta = kernel.row_candidates(x, mask, allowed is not None)
    root = torch.from_numpy(delta).sqrt().numpy()
    return kernel, starts, empty, (cols, z, zs, mean, root)


def support_counts(scores: torch.Tensor, k: int | None = PARTIAL_K, allowed: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The nonzeros of ``entmax15(scores, dim=-1, k=k)`` for float32 CPU ``scores`` ``[R, n]`` (already
    masked), by the compiled kernel: ``counts`` int64 ``[R]``, ``cols`` int32 and ``probs`` float32
    ``[nnz]``, rows in order, columns increasing within a row (:func:`entmax15_support`'s entries).
    With ``allowed`` ``[R, n]``: over the allowed entries of each row (:func:`dense_into`'s rows)."""
    r, n = scores.shape
    kernel, starts, _, parts = _kernel_rows(scores, allowed)
    counts, cols, probs = kernel.support_rows(n, starts, *parts, n if k is None else k)
    return torch.from_numpy(counts), torch.from_numpy(cols), torch.from_numpy(probs)


def support_values(counts: torch.Tensor, cols: torch.Tensor, probs: torch.Tensor, values: torch.Tensor,
                   block: int) -> torch.Tensor:
    """The attention output ``P V`` of a block of rows from their nonzeros (:func:`support_counts`
    of scores ``[H, block, n]`` viewed as ``[H block, n]``): row ``r`` is ``sum_j p_rj v_j`` over head
    ``r // block`` of ``values`` ``[H, n, Dv]``, by the compiled kernel. Returns float32
    ``[H block, Dv]``: ``P V`` without the product over the zeros of ``P``."""
    from predictors import entmax15_kernel as kernel

    v = values.detach().float().contiguous()
    out = torch.empty(counts.shape[0], v.shape[-1])
    kernel.support_times_values(counts.numpy(), cols.numpy(), probs.numpy(), v.numpy(), block, out.numpy())
    return out


def restricted_output(scores: torch.Tensor, allowed: torch.Tensor, heads: torch.Tensor,
                      values: torch.Tensor) -> torch.Tensor:
    """``entmax15`` of each row of float32 CPU ``scores`` ``[R, n]`` over its ``allowed`` entries
    (:func:`dense_into`'s probabilities; rows without any allowed entry give zeros), times the values
    of its head: row ``r`` is ``sum_j p_rj values[heads[r], j]`` (``values`` ``[H, n, Dv]``), over the
    support only, by the compiled kernel; float32 ``[R, Dv]``."""
    from predictors import entmax15_kernel as kernel

    counts, cols, probs = support_counts(scores, partial_k(scores.shape[-1]), allowed)
    v = values.detach().float().contiguous()
    out = torch.empty(counts.shape[0], v.shape[-1])
    kernel.support_times_heads(counts.numpy(), cols.numpy(), probs.numpy(), heads.contiguous().numpy(),
                               v.numpy(), out.numpy())
    return out


def band_support(raw: torch.Tensor, scale: float, widths: torch.Tensor, chunk: int, causal: bool,
                 kpos: torch.Tensor | None, qpos: torch.Tensor, k: int):
    """The nonzeros of 1.5-entmax over rows of code blocks whose masks are given by structure
    (:func:`predictors.entmax15_kernel.block_candidates`: row ``r`` of the unscaled products ``raw``
    ``[R, W]`` allows its first ``widths[r]`` entries and, when ``causal``, the keys at positions
    ``kpos[r // chunk, j] <= qpos[r]``), each entry ``scale * raw``; ``k``: the first partial-sort
    width. The same floats as :func:`support_counts` over the scaled block with those entries allowed.

    Returns ``counts`` int64 ``[R]``, ``cols`` int32 and ``probs`` float32 ``[nnz]``, and ``allowed``
    int64 ``[R]`` (allowed entries per row)."""
    from predictors import entmax15_kernel as kernel

    nch = max(1, raw.shape[0] // chunk)
    kp = kpos.contiguous().numpy() if causal else np.zeros((nch, 0), dtype=np.int64)
    *parts, delta, allowed = kernel.block_candidates(raw.detach().contiguous().numpy(), np.float32(scale),
                                                     widths.contiguous().numpy(), chunk, causal, kp,
                                                     qpos.contiguous().numpy())
    starts, _, cols, z, zs, mean = parts
    root = torch.from_numpy(delta).sqrt().numpy()  # torch's root: the library's floats
    counts, cols, probs = kernel.support_rows(raw.shape[1], starts, cols, z, zs, mean, root, k)
    return torch.from_numpy(counts), torch.from_numpy(cols), torch.from_numpy(probs), torch.from_numpy(allowed)


def keyed_values(counts: torch.Tensor, cols: torch.Tensor, probs: torch.Tensor, keys: torch.Tensor,
                 factor: int, values: torch.Tensor) -> torch.Tensor:
    """``P V`` of rows whose entries are gathered keys, from their nonzeros (:func:`support_counts`):
    row ``r`` is ``sum_e p_e values[keys[r // factor, col_e]]`` (``keys`` int64 ``[R / factor, m]``, flat
    rows of ``values`` ``[N, Dv]``), by the compiled kernel; float32 ``[R, Dv]``."""
    from predictors import entmax15_kernel as kernel

    v = values.detach().float().contiguous()
    out = torch.empty(counts.shape[0], v.shape[-1])
    kernel.support_times_keys(counts.numpy(), cols.numpy(), probs.numpy(), keys.contiguous().numpy(), factor,
                              v.numpy(), out.numpy())
    return out


def dense_into(out: torch.Tensor, scores: torch.Tensor, k: int | None = PARTIAL_K,
               allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Write ``entmax15(scores, dim=-1, k=k)`` of float32 CPU ``scores`` ``[R, n]`` into ``out``
    (zeros, ``[A, B, n]`` with ``A B = R``, any strides; ``out`` may be ``scores`` itself, zeroed after
    it is read), by the compiled kernel. With ``allowed`` ``[R, n]``: over the allowed entries only,
    the rows without any left all zero (the sparse execution's rows). Returns ``out``."""
    n = scores.shape[-1]
    kernel, starts, _, parts = _kernel_rows(scores, allowed)
    if out.data_ptr() == scores.data_ptr():
        out.zero_()
    kernel.dense_rows(out.numpy(), starts, *parts, n if k is None else k)
    return out


def _largest_probs(scores: torch.Tensor, k: int | None, work: torch.Tensor | None = None):
    """``entmax15``'s probabilities of the ``k`` largest entries of each row of ``scores`` ``[R, n]``:
    ``p`` and their columns ``idx`` ``[R, k]``, and the rows redone in full (module docstring), a list of
    ``(rows, cols, probs)`` (their ``p`` is zeroed)."""
    n = scores.shape[-1]
    k = n if k is None else min(k, n)
    vals, idx = largest(scores, k, work) if k < n else scores.sort(dim=-1, descending=True)
    z = vals.sub_(vals[:, :1].clone()).div_(2)  # entmax15's (x - max x) / 2, in sorted order
    tau, support = threshold15(z)
    p = z.sub_(tau).clamp_(min=0).square_()
    redone = []
    if k < n:
        wide = support[:, 0] == k
        late = (p[:, -1] > 0) & ~wide  # the k-th entry is in the support: so may entries outside be
        for redo, part in ((wide, _widened), (late, _whole_rows)):
            if redo.any():
                at = redo.nonzero()[:, 0]
                p[at] = 0.0
                sub_rows, cols, probs = part(scores[at], tau[at], k)
                redone.append((at[sub_rows], cols, probs))
    return p, idx, redone


def largest(scores: torch.Tensor, k: int, work: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of each row of ``scores`` ``[R, n]`` (``k < n``): values ``[R, k]`` in
    decreasing order, the same floats as ``scores.topk(k)``'s, and their columns ``[R, k]``.

    ``topk`` runs a partial sort over every entry. Where ``n >= 128 k``, the row is split into
    ``m = n // w`` groups of ``w = n // (64 k)`` entries (group ``c``: columns ``c, c + m, ...``; the
    ``n mod w`` last columns are no group's and always kept), and only the ``k`` groups with the largest
    maxima are searched: an entry ``y`` of a group left out has ``k`` other entries ``>= y``, the
    maxima of the groups kept, so the ``k`` largest values of the row are all among the kept entries,
    ties included. A maximum over ``w`` slices and partial sorts of ``m >= 64 k`` (``topk``'s fast
    path) and ``k w`` entries replace the partial sort of ``n`` (a tenth off the gold at n = 4096).
    ``work``: float buffer of at least ``R m`` elements for the group maxima (else allocated).
    """
    r, n = scores.shape
    w = n // (64 * k)
    if w < 2:
        return scores.topk(k, dim=-1)
    m = n // w
    need = r * m
    work = scores.new_empty(need) if work is None or work.numel() < need else work
    group_max = torch.maximum(scores[:, :m], scores[:, m: 2 * m], out=work[:need].view(r, m))
    for i in range(2, w):  # w slices: faster than a reduction over a strided dimension
        torch.maximum(group_max, scores[:, i * m: (i + 1) * m], out=group_max)
    kept = group_max.topk(k, dim=-1).indices
    cols = (kept[:, :, None] + m * torch.arange(w, device=scores.device)).view(r, k * w)
    if m * w < n:
        cols = torch.cat([cols, torch.arange(m * w, n, device=scores.device).expand(r, -1)], dim=-1)
    vals, at = scores.gather(-1, cols).topk(k, dim=-1)
    return vals, cols.gather(-1, at)


def _widened(scores: torch.Tensor, tau: torch.Tensor, k: int):
    """Rows whose support filled ``k``: ``entmax15`` starts again from their ``2 k`` largest."""
    return entmax15_support(scores, 2 * k)


def _whole_rows(scores: torch.Tensor, tau: torch.Tensor, k: int):
    """Rows whose threshold ``tau`` ``[R, 1]`` is known: ``max(z - tau, 0)^2`` over the whole row, as
    ``entmax15`` forms it."""
    z = (scores - scores.amax(-1, keepdim=True)) / 2
    p = (z - tau).clamp_(min=0).square_()
    nz = p > 0
    at = nz.nonzero()
    return at[:, 0], at[:, 1], p[nz]


def entmax15_dense(scores: torch.Tensor, k: int | None = PARTIAL_K, out: torch.Tensor | None = None,
                   work: torch.Tensor | None = None) -> torch.Tensor:
    """``entmax15(scores, dim=-1, k=k)`` bit for bit, for ``scores`` ``[..., n]`` (already masked), from
    :func:`entmax15_support`'s probabilities scattered into zeros: ``out`` when given (zeros of
    ``scores``' shape, any strides; a block of a larger output), else a new tensor. ``work``: a
    reusable buffer for :func:`largest`."""
    n = scores.shape[-1]
    flat = scores.reshape(-1, n)
    if out is None:
        out = torch.zeros_like(scores)
    if out.numel() == 0:
        return out
    rows3 = _rows3(out) if uses_kernel(scores) else None
    if rows3 is not None:
        dense_into(rows3, flat, k)
        return out
    p, idx, redone = _largest_probs(flat, k, work)
    lead = scores.shape[:-1]
    # Distinct columns within a row; the zeros written are zeros already.
    out.scatter_(-1, idx.view(*lead, -1), p.view(*lead, -1))
    for rows, cols, probs in redone:
        out[(*torch.unravel_index(rows, lead), cols)] = probs
    return out


def _rows3(out: torch.Tensor) -> torch.Tensor | None:
    """``out`` ``[..., B, n]`` as a view ``[A, B, n]`` (its rows in order) for the kernel, or ``None``
    where its strides allow no such view (the PyTorch path runs then)."""
    if out.dim() < 2:
        return out.view(1, 1, -1)
    try:
        return out.view(-1, *out.shape[-2:])
    except RuntimeError:
        return None


def entmax_probs(scores: torch.Tensor, alpha: float, topk: int | None = None) -> torch.Tensor:
    """alpha-entmax over the last dimension of (already masked) float32 ``scores``: for alpha = 1.5
    ``entmax15(scores, k=topk)`` (:func:`entmax15_dense`; ``None``: full sort), else bisection."""
    if alpha == 1.5:
        return entmax15_dense(scores, topk)
    return entmax_bisect(scores, alpha=alpha, dim=-1, n_iter=BISECT_ITERS)


def row_entmax(scores: torch.Tensor, allowed: torch.Tensor, alpha: float = 1.5,
               topk: bool = True) -> torch.Tensor:
    """alpha-entmax of each row of ``scores`` ``[..., m]`` over its ``allowed`` entries only.

    Disallowed entries get (row max - :data:`predictors.masking.MASK_GAP`) and probability exactly 0; a row
    with no allowed entry is all zeros. For alpha = 1.5 exactly ``entmax15`` (:func:`entmax15_dense`), with
    a partial sort of :func:`partial_k` ``(m)`` entries when ``topk`` (exact: it widens the
    sort until the support fits), the same rule as the dense reference; otherwise ``entmax_bisect``.
    """
    if scores.shape[-1] == 0:
        return scores.new_zeros(scores.shape)
    masked = mask_scores(scores, allowed)
    if alpha == 1.5:
        m = scores.shape[-1]
        p = entmax15_dense(masked, partial_k(m) if topk else None)
    else:
        p = entmax_bisect(masked, alpha=alpha, dim=-1, n_iter=BISECT_ITERS)
    return p.masked_fill_(~allowed, 0.0)
