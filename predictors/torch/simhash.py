"""Random SimHash (Charikar, 2002) over ``L`` tables of ``K`` bits, and the Hamming graph it shares
with the learned bits of :mod:`predictors.torch.hashattn`.

Per layer, head and table ``l``, a Gaussian matrix ``R_l`` (``D x K``, drawn in :meth:`SimHash.fit` from
the predictor seed; nothing is read from the data) gives every query and key the code

    c_l(x) = [x . R_l[:, 1] > 0, ..., x . R_l[:, K] > 0]           (K bits; the same R for q and k),

so the Hamming distance of two codes estimates their angle. With ``H_l(i, j)`` the Hamming distance of
``c_l(q_i)`` and ``c_l(k_j)``, a pair is predicted when, for some table ``l``,

    H_l(i, j) <= r_l(i),     r_l(i) = max(h, d_top_l(i)),

where ``h`` is the Hamming radius (``h = 0``: equal codes, the classic "same bucket in any table") and
``d_top_l(i)`` is the ``top``-th smallest distance from query ``i`` to its allowed keys (all valid
keys, or ``j <= i`` when causal; all of them when fewer than ``top``), so the ``top`` nearest keys are
kept *with every key tied with the last one* (``top = 0``: no such term). Keeping ties makes the rule
depend on distances only, not on how a search orders equal distances, which is what lets the FAISS
twin (:mod:`predictors.faiss.simhash`) give the very same pairs. A larger ``h``, ``top`` or ``L`` (same
seed: table ``l`` does not depend on ``L``) never removes a pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from predictors.base import Param, Predictor
from predictors.errors import PredictorError
from predictors.graphs import PredictedGraph
from predictors.registry import register

BLOCK = 256


def hamming(qb: torch.Tensor, kb: torch.Tensor) -> torch.Tensor:
    """Hamming distances of bit codes ``qb`` ``[..., B, K]`` and ``kb`` ``[..., n, K]`` (bool): int64 ``[..., B, n]``.

    Computed as ``(K - s_q . s_k) / 2`` with signs ``s = 2 bit - 1``: exact in float32 for ``K < 2^24``.
    """
    k = qb.shape[-1]
    sq, sk = qb.float() * 2 - 1, kb.float() * 2 - 1
    return ((k - torch.matmul(sq, sk.transpose(-1, -2))) / 2).round().long()


def query_radii(q_bits: torch.Tensor, k_bits: torch.Tensor, lengths: torch.Tensor, causal: bool,
                h: int, top: int, block: int = BLOCK) -> torch.Tensor:
    """``r_l(i) = max(h, d_top_l(i))`` of the module docstring: int64 ``[S, H, T, L]`` (``h`` on padding).

    ``q_bits``, ``k_bits``: bool ``[S, H, T, L, K]``. With signs ``s = 2 bit - 1`` the Hamming distance is
    ``(K - s_q . s_k) / 2``, so the ``top`` nearest keys are the ``top`` largest dot products: one partial
    selection (``topk``) per block of queries, on float32 products (exact integers for ``K < 2^24``), over
    the keys ``j < i1`` only when causal (the later ones are never allowed in the block).
    """
    s_count, nh, t, nl, nbits = q_bits.shape
    radii = torch.full((s_count, nh, t, nl), h, dtype=torch.int64)
    if top <= 0:
        return radii
    for s in range(s_count):
        n = int(lengths[s])
        sq, sk = q_bits[s, :, :n].float() * 2 - 1, k_bits[s, :, :n].float() * 2 - 1  # [H, n, L, K]
        for t in range(nl):
            keys_t = sk[:, :, t].transpose(-1, -2).contiguous()  # [H, K, n]
            for i0 in range(0, n, block):
                i1 = min(n, i0 + block)
                radii[s, :, i0:i1, t] = _block_radii(sq[:, i0:i1, t], keys_t, i0, causal, top, nbits).clamp(min=h)
    return radii


def _block_radii(q_signs: torch.Tensor, key_signs: torch.Tensor, i0: int, causal: bool, top: int,
                 nbits: int) -> torch.Tensor:
    """``d_top(i)`` of the queries ``i0 .. i0 + B - 1``: ``q_signs`` ``[H, B, K]``, ``key_signs`` ``[H, K, n]``
    (signs); int64 ``[H, B]``. A query with fewer than ``top`` allowed keys takes its farthest one."""
    b = q_signs.shape[1]
    i1 = i0 + b
    cols = i1 if causal else key_signs.shape[-1]
    dots = torch.matmul(q_signs, key_signs[..., :cols])  # [H, B, cols]
    if causal:
        future = torch.arange(cols)[None, :] > torch.arange(i0, i1)[:, None]
        dots.masked_fill_(future, -float(nbits) - 1)
        allowed = torch.arange(i0, i1) + 1
    else:
        allowed = torch.full((b,), cols)
    best = dots.topk(min(top, cols), dim=-1).values  # [H, B, top], largest products = nearest codes
    rank = torch.clamp(allowed, max=top) - 1
    kth = best.gather(2, rank[None, :, None].expand(best.shape[0], -1, 1)).squeeze(2)
    return ((nbits - kth) / 2).round().long()


@dataclass
class HammingGraph(PredictedGraph):
    """Pairs within a per-query Hamming radius in some table.

    ``q_bits``, ``k_bits``: bool ``[S, H, T, L, K]``; ``radii``: int64 ``[S, H, T, L]``. A pair ``(i, j)``
    is predicted when ``hamming(q_bits[s, h, i, l], k_bits[s, h, j, l]) <= radii[s, h, i, l]`` for some ``l``.
    """

    q_bits: torch.Tensor
    k_bits: torch.Tensor
    radii: torch.Tensor

    def block_mask(self, s, i0, i1, n):
        nh = self.q_bits.shape[1]
        out = torch.zeros(nh, i1 - i0, n, dtype=torch.bool)
        for t in range(self.q_bits.shape[3]):
            d = hamming(self.q_bits[s, :, i0:i1, t], self.k_bits[s, :, :n, t])
            out |= d <= self.radii[s, :, i0:i1, t, None]
        return out


HAMMING_PARAMS = (
    Param("h", "h", int, 0, doc="Hamming radius: keys within distance <= h (0: equal codes)"),
    Param("top", "top", int, 0, doc="also the top nearest keys by Hamming distance, ties kept (0: none)"),
)


def check_hamming(family: str, values: dict) -> None:
    if values["b"] < 1:
        raise PredictorError(f"{family}: bits b must be >= 1, got {values['b']}")
    if values["h"] < 0 or values["top"] < 0:
        raise PredictorError(f"{family}: radius h and top must be >= 0, got h={values['h']}, top={values['top']}")


def sign_bits(x: torch.Tensor, proj: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Bits ``x . R + c > 0`` of ``x`` ``[S, H, T, D]`` under ``proj`` ``[H, L, D, K]`` (and ``bias``
    ``[H, L, K]``): bool ``[S, H, T, L, K]``."""
    y = torch.einsum("shtd,hldk->shtlk", x.float(), proj.float())
    if bias is not None:
        y = y + bias[None, :, None]
    return y > 0


@register
class SimHash(Predictor):
    """Random SimHash: ``L`` tables (``l``) of ``K`` bits (``b``), Hamming radius ``h`` and ``top`` keys.

    FLOPs per head, one sample of ``n`` tokens, head dim ``d``: the codes of queries and keys,
    ``2 * 2 n d K L``; comparing codes, one XOR and popcount per pair and table, ``n^2 L`` (codes of
    ``K <= 64`` bits fit one word); the ``top`` selection is not counted.
    """

    kind = "hashing"
    family = "simhash"
    randomised = True  # random hyperplanes
    params = (
        Param("b", "b", int, 8, doc="bits per table"),
        Param("l", "l", int, 4, doc="tables, OR-ed"),
    ) + HAMMING_PARAMS

    def __init__(self, seed: int = 0, **values):
        super().__init__(seed=seed, **values)
        self.proj = None  # [Layers, H, L, D, K]

    def check(self):
        super().check()
        check_hamming(self.family, self.values)
        if self.values["l"] < 1:
            raise PredictorError(f"{self.family}: tables l must be >= 1, got {self.values['l']}")

    def _fit(self, data, gold):
        gen = torch.Generator().manual_seed(self.seed)
        shape = (data.num_layers, data.num_heads, data.head_dim, self.values["b"])
        # One draw per table, in order: table l is the same for every L.
        self.proj = torch.stack([torch.randn(shape, generator=gen) for _ in range(self.values["l"])], dim=2)

    def bits(self, view, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes of the queries and keys of one layer: bool ``[S, H, T, L, K]`` each."""
        nh, d = view.q.shape[1], view.q.shape[-1]
        self.check_fitted(layer, nh, *self.proj.shape[:2], d, self.proj.shape[3])
        return sign_bits(view.q.cpu(), self.proj[layer]), sign_bits(view.k.cpu(), self.proj[layer])

    def _predict(self, view, layer):
        qb, kb = self.bits(view, layer)
        radii = query_radii(qb, kb, view.lengths.cpu(), view.causal, self.values["h"], self.values["top"])
        return HammingGraph(qb, kb, radii)

    def _flops(self, n, d):
        k, nl = self.values["b"], self.values["l"]
        return 4.0 * n * d * k * nl + float(n) * n * nl
