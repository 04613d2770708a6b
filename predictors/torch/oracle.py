"""Ceilings, not predictors: oracles that read the exact scores ``Q K^T`` at prediction time.

They cost as much as dense attention scores (FLOPs per head: ``2 n^2 d``), so they are *not* cheap
and never a candidate method; they draw the best curve a score-based predictor could reach, to
put every other family's recall in perspective. Every family here is named ``oracle-...`` and has
the kind ``"ceiling"`` (:data:`predictors.registry.KINDS`).

* ``oracle-thr-sp<s>`` (:class:`OracleThreshold`): per sample and head, the ``m = round((1 - s) V)``
  valid pairs with the largest scaled scores ``z_ij = scale * q_i . k_j`` (``V`` valid pairs: ``n^2``,
  or ``n (n + 1) / 2`` causal). One threshold per sample and head, ties at it taken in row-major order
  up to the budget: the sparsity is ``s`` to within one pair (the rounding of ``m``).
* ``oracle-margin-sp<s>`` (:class:`OracleMargin`): the same budget ``m``, ranking pairs by their
  entmax *margin* instead of the raw score: with ``tau_i`` the alpha-entmax threshold of row ``i``,

      v_ij = p_ij^(alpha - 1) = (alpha - 1) z_ij - tau_i        for gold pairs (p_ij > 0),
      v_ij = min((alpha - 1) z_ij - tau_i, 0)                    otherwise,

  so every gold pair ranks above every other pair and gold pairs rank by probability. It keeps
  ``min(m, |G|)`` gold pairs, the most any graph with ``m`` pairs can hold, and among those the most
  probable: its recall and mass at sparsity ``s`` are upper bounds for *every* predictor. The raw-score
  threshold is not such a bound (rows with flat high scores take the budget of peaked rows).
* ``oracle-topk-k<k>`` (:class:`OracleTopK`): the ``k`` allowed keys with the largest scores of each
  query (all of them when fewer); per row, ranking by score or by margin is the same.

The thresholds are found without ``n x n`` tensors over all heads: scores are computed one block of
queries at a time and an exact radix select (three passes of per-head histograms, 11 + 11 + 10 bits, over
the 32-bit order-preserving integer image of the float32 values) finds the ``m``-th largest value per head, and
one more pass where its ties stop (:func:`rank_cuts`); :meth:`RankThresholdGraph.block_mask` recomputes the
values of the asked block and compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from predictors.base import Param, Predictor
from predictors.entmax import entmax_probs
from predictors.errors import PredictorError
from predictors.graphs import KeyListGraph, PredictedGraph
from predictors.masking import allowed_keys, block_scores, mask_scores, valid_pair_count
from predictors.registry import register

BLOCK = 256  # query rows per block when computing scores
RANKS = ("score", "margin")
NONE = 1 << 32  # threshold key above every value: predicts nothing
KEEP_VALUES = 1 << 23  # per sample, keep the H x n x n int64 keys (64 MiB) rather than recompute them


def sortable_keys(x: torch.Tensor) -> torch.Tensor:
    """Order-preserving map of float32 values to int64 keys in ``[0, 2^32)``.

    ``a < b`` iff ``key(a) < key(b)``, and ``a == b`` iff ``key(a) == key(b)``, for finite floats (adding
    ``+0.0`` first turns ``-0.0`` into ``+0.0``).
    """
    bits = (x.float() + 0.0).contiguous().view(torch.int32).long()
    return torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF) + (1 << 31)


def pair_values(q: torch.Tensor, k: torch.Tensor, scale: float, alpha: float, allowed: torch.Tensor,
                rank: str) -> torch.Tensor:
    """The ranking values of one block: float32 ``[H, B, n]`` for ``q`` ``[H, B, D]``, ``k`` ``[H, n, D]``.

    ``rank="score"``: ``z = scale * q k^T``. ``rank="margin"``: the entmax margin of the module docstring,
    with alpha-entmax over the ``allowed`` ``[B, n]`` keys of each row.
    """
    z = block_scores(q, k, scale)
    if rank == "score":
        return z
    p = entmax_probs(mask_scores(z, allowed), alpha)
    a1 = alpha - 1.0
    top_p, top_j = p.max(-1, keepdim=True)
    tau = a1 * z.gather(-1, top_j) - top_p.pow(a1)  # [H, B, 1], exact at the most probable key
    gold_v = p.pow(a1).clamp(min=torch.finfo(torch.float32).tiny)
    return torch.where(p > 0, gold_v, (a1 * z - tau).clamp(max=0.0))


RADIX_WIDTHS = (11, 11, 10)  # bits of the 32-bit keys resolved by each histogram pass


def _bucket_from_top(hist: torch.Tensor, need: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For histograms ``[H, W]`` and counts ``need`` ``[H]`` (>= 1, <= total): the highest bucket ``b``
    with ``#(>= b) >= need``, and how many of the ``need`` largest fall in ``b``."""
    above_incl = hist.flip(-1).cumsum(-1).flip(-1)  # [H, W]: count of values in buckets >= b
    reach = above_incl >= need[:, None]
    b = (reach.long() * torch.arange(hist.shape[-1])).amax(-1)  # the last bucket that still reaches
    strictly_above = above_incl.gather(1, b[:, None]).squeeze(1) - hist.gather(1, b[:, None]).squeeze(1)
    return b, need - strictly_above


def rank_thresholds(view, m: torch.Tensor, rank: str, block: int = BLOCK) -> torch.Tensor:
    """Per sample and head, the key of the ``m[s]``-th largest value among valid pairs: int64 ``[S, H]``
    (the first result of :func:`rank_cuts`)."""
    return rank_cuts(view, m, rank, block)[0]


def rank_cuts(view, m: torch.Tensor, rank: str, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample and head, the key of the ``m[s]``-th largest value among valid pairs, and where its
    ties stop: two int64 ``[S, H]``.

    The pairs kept are those with ``key > threshold``, plus those with ``key == threshold`` whose
    row-major index ``i n + j`` is below the cut: exactly ``m[s]`` pairs, ties included (entmax gives
    many exactly equal values, such as probability 1 on a row's only key). ``m[s] = 0`` gives
    :data:`NONE` (nothing passes); ``m[s] >= V_s`` gives 0 and a cut of ``n^2`` (everything passes).

    An exact radix select (:func:`_radix_select`): each pass recomputes the values block by block and
    histograms the next :data:`RADIX_WIDTHS` bits of the keys that share the prefix found so far, per
    head, then keeps the bucket holding the ``m``-th largest; one more pass finds the cut among its ties
    (:func:`_tie_cut`). Memory ``O(H x block x n)``; the values are computed once and kept when
    ``H n^2 <= KEEP_VALUES`` (:class:`_SampleKeys`).
    """
    s_count, nh = view.q.shape[:2]
    out = torch.empty(s_count, nh, dtype=torch.int64)
    cuts = torch.zeros(s_count, nh, dtype=torch.int64)
    for s in range(s_count):
        n = int(view.lengths[s])
        ms = int(m[s])
        if ms <= 0:
            out[s] = NONE
            continue
        if ms >= valid_pair_count(n, view.causal):
            out[s], cuts[s] = 0, n * n
            continue
        keys = _SampleKeys(view, s, rank, block)
        out[s], need = _radix_select(keys, nh, ms)
        cuts[s] = _tie_cut(keys, out[s], need)
    return out, cuts


class _SampleKeys:
    """The sortable keys of one sample's pairs, one block of ``B`` queries at a time: iterating gives
    ``(i0, allowed, keys)`` per block (bool ``[B, n]``, int64 ``[H, B, n]``), kept in memory when
    ``H n^2 <= KEEP_VALUES`` (small enough to compute once for every pass instead of once per pass)."""

    def __init__(self, view, s: int, rank: str, block: int):
        self.view, self.s, self.rank, self.block = view, s, rank, block
        self.n = int(view.lengths[s])
        self.k = view.k[s, :, :self.n]
        self.starts = range(0, self.n, block)
        small = view.q.shape[1] * self.n * self.n <= KEEP_VALUES
        self.kept = [self._compute(i0) for i0 in self.starts] if small else None

    def _compute(self, i0: int):
        v, i1 = self.view, min(self.n, i0 + self.block)
        allowed = allowed_keys(i0, i1, self.n, v.causal)
        return allowed, sortable_keys(pair_values(v.q[self.s, :, i0:i1], self.k, v.scale, v.alpha, allowed, self.rank))

    def __iter__(self):
        for b, i0 in enumerate(self.starts):
            allowed, keys = self.kept[b] if self.kept is not None else self._compute(i0)
            yield i0, allowed, keys


def _radix_select(sample_keys: _SampleKeys, nh: int, ms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The key of the ``ms``-th largest allowed value per head (int64 ``[H]``) and how many of the ``ms``
    largest equal it (int64 ``[H]``), by one histogram pass per width of :data:`RADIX_WIDTHS`."""
    heads = torch.arange(nh)[:, None, None]
    need = torch.full((nh,), ms, dtype=torch.int64)
    prefix = torch.zeros(nh, dtype=torch.int64)
    known = 0
    for width in RADIX_WIDTHS:
        shift = 32 - known - width
        buckets = 1 << width
        hist = torch.zeros(nh * buckets, dtype=torch.int64)
        for _, allowed, keys in sample_keys:
            sel = allowed & ((keys >> (shift + width)) == prefix[:, None, None])
            digit = heads * buckets + ((keys >> shift) & (buckets - 1))
            hist += torch.bincount(digit[sel], minlength=nh * buckets)
        b, need = _bucket_from_top(hist.view(nh, buckets), need)
        prefix = (prefix << width) | b
        known += width
    return prefix, need


def _tie_cut(sample_keys: _SampleKeys, threshold: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
    """Per head, the row-major pair index just past the ``need``-th allowed pair equal to ``threshold``
    (int64 ``[H]``; ``n^2`` when the ties end in no block): those pairs complete the ``m`` largest."""
    nh, n = threshold.numel(), sample_keys.n
    seen = torch.zeros(nh, dtype=torch.int64)
    cut = torch.full((nh,), n * n, dtype=torch.int64)
    for i0, allowed, keys in sample_keys:
        ties = (allowed & (keys == threshold[:, None, None])).flatten(1)  # [H, B n], row-major
        count = seen[:, None] + ties.cumsum(1)
        last = ties & (count == need[:, None])  # the need-th tie of each head, if in this block
        found = last.any(1) & (seen < need)
        cut[found] = i0 * n + last[found].long().argmax(1) + 1
        seen += ties.sum(1)
    return cut


@dataclass
class RankThresholdGraph(PredictedGraph):
    """Pairs whose ranking value reaches a per-sample, per-head threshold (recomputed per block).

    ``q``, ``k``: ``[S, H, T, D]``; ``thresholds``: int64 ``[S, H]`` keys of :func:`sortable_keys`.
    """

    q: torch.Tensor
    k: torch.Tensor
    thresholds: torch.Tensor
    cuts: torch.Tensor
    scale: float
    alpha: float
    causal: bool
    rank: str

    def block_mask(self, s, i0, i1, n):
        allowed = allowed_keys(i0, i1, n, self.causal)
        v = pair_values(self.q[s, :, i0:i1], self.k[s, :, :n], self.scale, self.alpha, allowed, self.rank)
        keys, thr = sortable_keys(v), self.thresholds[s][:, None, None]
        flat = torch.arange(i0 * n, i1 * n).view(1, i1 - i0, n)  # row-major pair index i n + j
        return (keys > thr) | ((keys == thr) & (flat < self.cuts[s][:, None, None]))


class _Oracle(Predictor):
    """Common part of the ceilings: not learned, cost of the dense scores."""

    kind = "ceiling"
    learned = False

    def _flops(self, n, d):
        return 2.0 * n * n * d


@register
class OracleThreshold(_Oracle):
    """Top ``(1 - sp)`` share of valid pairs by raw score, per sample and head; a ceiling (not cheap).

    FLOPs per head: ``2 n^2 d``, the dense scores (the select adds ``O(n^2)`` comparisons, not counted).
    """

    family = "oracle-thr"
    rank = "score"
    params = (Param("sp", "sp", float, 0.9, doc="target sparsity: keep round((1 - sp) V) valid pairs"),)

    def check(self):
        super().check()
        if not 0.0 <= self.values["sp"] <= 1.0:
            raise PredictorError(f"{self.family}: target sparsity sp must be in [0, 1], got {self.values['sp']}")

    def budget(self, view) -> torch.Tensor:
        """Pairs kept per sample: ``round((1 - sp) V_s)``, int64 ``[S]``."""
        return torch.tensor([round((1.0 - self.values["sp"]) * valid_pair_count(int(n), view.causal))
                             for n in view.lengths], dtype=torch.int64)

    def _predict(self, view, layer):
        thr, cuts = rank_cuts(view, self.budget(view), self.rank)
        return RankThresholdGraph(view.q, view.k, thr, cuts, view.scale, view.alpha, view.causal, self.rank)


@register
class OracleMargin(OracleThreshold):
    """Top ``(1 - sp)`` share of valid pairs by entmax margin: gold pairs first, by probability.

    The ceiling of recall and mass at sparsity ``sp`` for any predictor (see the module docstring).
    FLOPs per head: ``2 n^2 d`` (the entmax thresholds, ``O(n^2)`` more, are not counted).
    """

    family = "oracle-margin"
    rank = "margin"


@register
class OracleTopK(_Oracle):
    """The ``k`` best-scoring allowed keys of every query; a ceiling (not cheap).

    FLOPs per head: ``2 n^2 d``, the dense scores.
    """

    family = "oracle-topk"
    params = (Param("k", "k", int, 8, doc="keys per query"),)

    def check(self):
        super().check()
        if self.values["k"] < 1:
            raise PredictorError(f"{self.family}: keys per query k must be >= 1, got {self.values['k']}")

    def _predict(self, view, layer):
        return KeyListGraph(top_keys(view, self.values["k"]))


def top_keys(view, k: int, block: int = BLOCK) -> torch.Tensor:
    """The ``k`` allowed keys with the largest scores per query: int64 ``[S, H, T, k]``, ``-1`` padded
    (rows with fewer than ``k`` allowed keys, padding rows)."""
    s_count, nh, t, _ = view.q.shape
    out = torch.full((s_count, nh, t, k), -1, dtype=torch.int64)
    for s in range(s_count):
        n = int(view.lengths[s])
        kk = view.k[s, :, :n]
        width = min(k, n)
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            allowed = allowed_keys(i0, i1, n, view.causal)
            z = block_scores(view.q[s, :, i0:i1], kk, view.scale).masked_fill(~allowed, float("-inf"))
            val, idx = z.topk(width, dim=-1)
            out[s, :, i0:i1, :width] = torch.where(torch.isfinite(val), idx, -1)
    return out
