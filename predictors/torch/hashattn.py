"""HashAttention-style learned bits (Desai et al., 2024): a trained map from ``D`` dims to ``K`` bits.

Per layer and head, two affine maps (queries: ``W_q, c_q``; keys: ``W_k, c_k``; ``D -> K``) give codes

    bits(q) = [q W_q + c_q > 0],        bits(k) = [k W_k + c_k > 0],

and pairs are chosen from Hamming distances exactly as for random SimHash with one table (see
:mod:`predictors.torch.simhash`): query ``i`` keeps the keys within distance ``max(h, d_top(i))``, its
``top`` nearest allowed keys with ties, or every key within radius ``h``.

Fit (fit samples only): the sign is relaxed to ``u = tanh(x W + c)`` and codes should agree on gold
pairs. With ``a_ij = u_q(i) . u_k(j) / K`` in ``[-1, 1]`` (``1 - 2 a`` is the relaxed Hamming distance
over ``K``), each allowed pair is a binary example, gold or not, with the logit ``alpha a_ij + beta``
(``alpha, beta`` per head, learned, used in training only) and the binary cross-entropy, weighted so
that each query's gold keys and its other allowed keys count one half each:

    loss_i = 1/2 mean_{j in G_i} BCE(1, .) + 1/2 mean_{j allowed, not in G_i} BCE(0, .)

averaged over the queries of a block of up to ``BLOCK`` queries of one sample (all heads at once,
each head its own problem): Adam, learning rate ``LR``, ``EPOCHS`` passes over the blocks in a seeded
random order, initial weights uniform in ``+-1/sqrt(D)`` (biases 0, ``alpha = 4``, ``beta = 0``).
Memory per step: ``[H, BLOCK, n]``. Training is memoised per ``(data, K, seed)`` in a
:mod:`predictors.memo` table (:meth:`HashAttention.shared_fit`), so a sweep over ``h``, ``top`` and
``sp`` trains once, on Ray too (one task trains the bits, the others receive them).

Calibrated budget (param ``sp`` instead of ``h``, with ``top = 0``): each layer and head gets its own
radius ``h_l`` (an integer, ``-1`` for none): with ``N_d`` the fit pairs at Hamming distance ``d``
(every valid pair of every fit sample; causal: ``j <= i``), ``h_l + 1`` is the threshold of
:func:`predictors.calibration.weighted_thresholds_below` on the values ``d = 0 .. K`` weighted by
``N_d``, so the pairs within the radius are as close as a whole radius allows to the share ``1 - sp``
of the valid fit pairs. A radius step moves a head's sparsity by ``N_d / N``: about 0.02-0.05 near
sparsity 0.9 on MiniLM's heads with 32 bits, so a head lands within half a step of ``sp`` and the mean
over heads close to it.
"""

from __future__ import annotations

import math

import torch

from predictors import memo
from predictors.base import Param, Predictor
from predictors.calibration import one_budget, weighted_thresholds_below
from predictors.errors import PredictorError
from predictors.masking import allowed_keys
from predictors.registry import register
from predictors.torch.seer import data_key
from predictors.torch.simhash import HAMMING_PARAMS, HammingGraph, check_hamming, hamming, query_radii, sign_bits

BLOCK = 128
EPOCHS = 60
LR = 1e-2
KEEP_TARGETS = 1 << 25  # pairs x heads of fit targets kept in memory across epochs (else rebuilt)
_CACHE: dict = memo.table("hashattn-bits")  # (data, K, seed) -> maps; predictors.memo moves entries


def _layer_seed(seed: int, layer: int) -> int:
    return (seed * 1_000_003 + 31 * layer + 11) % (2 ** 63)


def train_layer(view, layer_gold, bits: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Train one layer's maps: ``wq, wk`` ``[H, D, K]``, ``cq, ck`` ``[H, K]`` and the last epoch's mean
    loss per head ``[H]`` (see the module docstring)."""
    s_count, nh, _, d = view.q.shape
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(d)
    wq = ((torch.rand(nh, d, bits, generator=gen) * 2 - 1) * bound).requires_grad_()
    wk = ((torch.rand(nh, d, bits, generator=gen) * 2 - 1) * bound).requires_grad_()
    cq = torch.zeros(nh, bits, requires_grad=True)
    ck = torch.zeros(nh, bits, requires_grad=True)
    alpha = torch.full((nh,), 4.0, requires_grad=True)
    beta = torch.zeros(nh, requires_grad=True)
    opt = torch.optim.Adam([wq, wk, cq, ck, alpha, beta], lr=LR)
    chunks = [(s, i0, min(int(n), i0 + BLOCK)) for s, n in enumerate(view.lengths.tolist())
              for i0 in range(0, int(n), BLOCK)]
    # The targets of every block are kept between epochs when they are small, else rebuilt each time.
    keep = nh * sum((i1 - i0) * int(view.lengths[s]) for s, i0, i1 in chunks) <= KEEP_TARGETS
    targets: dict = {}

    def target(c):
        if c in targets:
            return targets[c]
        s, i0, i1 = chunks[c]
        n = int(view.lengths[s])
        gold, _ = layer_gold.block(s, i0, i1, n)  # [H, B, n]
        i = torch.arange(i0, i1)[:, None]
        allowed = (torch.arange(n)[None, :] <= i) if view.causal else torch.ones(i1 - i0, n, dtype=torch.bool)
        neg = allowed & ~gold
        weight = (gold / gold.sum(-1, keepdim=True).clamp(min=1) + neg / neg.sum(-1, keepdim=True).clamp(min=1)) * 0.5
        out = (gold.float(), weight)
        if keep:
            targets[c] = out
        return out

    last = torch.zeros(nh, dtype=torch.float64)
    for _epoch in range(EPOCHS):
        last.zero_()
        for c in torch.randperm(len(chunks), generator=gen).tolist():
            s, i0, i1 = chunks[c]
            n = int(view.lengths[s])
            gold, weight = target(c)
            uq = torch.tanh(torch.matmul(view.q[s, :, i0:i1].float(), wq) + cq[:, None])
            uk = torch.tanh(torch.matmul(view.k[s, :, :n].float(), wk) + ck[:, None])
            logit = alpha[:, None, None] * torch.matmul(uq, uk.transpose(1, 2)) / bits + beta[:, None, None]
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, gold, reduction="none")
            per_head = (bce * weight).sum((1, 2)) / (i1 - i0)
            opt.zero_grad()
            per_head.sum().backward()
            opt.step()
            last += per_head.detach().double() * (i1 - i0)
    last /= float(view.lengths.sum())
    return wq.detach(), wk.detach(), cq.detach(), ck.detach(), last


def fit_hash(data, gold, bits: int, seed: int) -> tuple[torch.Tensor, ...]:
    """The maps of every layer: ``wq, wk`` ``[L, H, D, K]``, ``cq, ck`` ``[L, H, K]``, losses ``[L, H]``."""
    key = (data_key(data), bits, seed)
    if key not in _CACHE:
        parts = [train_layer(data.layer(li), gold.layers[li], bits, _layer_seed(seed, li))
                 for li in range(data.num_layers)]
        _CACHE[key] = tuple(torch.stack([p[m] for p in parts]) for m in range(5))
    return _CACHE[key]


@register
class HashAttention(Predictor):
    """Learned ``K``-bit codes (``b``), Hamming radius ``h`` and ``top`` nearest keys per query; or, with
    ``sp`` instead of ``h`` (and ``top = 0``), a radius per layer and head calibrated on the fit samples
    (``hashattn-b32-top0-sp0.9``).

    FLOPs per head, one sample of ``n`` tokens, head dim ``d``: the codes, ``2 * 2 n d K``; comparing
    codes, one XOR and popcount per pair, ``n^2``; the ``top`` selection is not counted.
    """

    kind = "learned"
    family = "hashattn"
    learned = True
    randomised = True  # seeded initialisation and block order of the training
    params = (
        Param("b", "b", int, 32, doc="bits per code"),
        Param("h", "h", int, None, doc="Hamming radius: keys within distance <= h (0: equal codes; the default "
              "when sp is not given)"),
        HAMMING_PARAMS[1],
        Param("sp", "sp", float, None, doc="target sparsity: a radius per layer and head calibrated on the fit "
              "samples (with top = 0)"),
    )

    def check(self):
        super().check()
        if one_budget(self.family, self.values, "h", 0) and self.values["top"] != 0:
            raise PredictorError(f"{self.family}: sp calibrates the radius alone; give top=0 with it, "
                                 f"got top={self.values['top']}")
        check_hamming(self.family, {**self.values, "h": self.values["h"] or 0})

    def shared_fit(self):
        return ("hashattn-bits", self.values["b"], self.seed)  # every h, top and sp of one bit count

    def _fit(self, data, gold):
        self.wq, self.wk, self.cq, self.ck, self.fit_loss = fit_hash(data, gold, self.values["b"], self.seed)
        self.radii = None
        if self.values["sp"] is not None:
            bits = self.values["b"]
            values = torch.arange(bits + 1, dtype=torch.float32)[None].expand(data.num_heads, -1)
            cuts = [weighted_thresholds_below(values, self._distance_counts(data.layer(li), li), self.values["sp"])
                    for li in range(data.num_layers)]
            self.radii = (torch.stack(cuts).clamp(max=bits + 1) - 1).long()  # [L, H]; +inf: every pair

    def _bits(self, view, layer) -> tuple[torch.Tensor, torch.Tensor]:
        qb = sign_bits(view.q.cpu(), self.wq[layer][:, None], self.cq[layer][:, None])
        kb = sign_bits(view.k.cpu(), self.wk[layer][:, None], self.ck[layer][:, None])
        return qb, kb

    def _distance_counts(self, view, layer) -> torch.Tensor:
        """``N_d`` of the module docstring: valid pairs at each Hamming distance, float64 ``[H, K + 1]``."""
        qb, kb = self._bits(view, layer)
        nh, bits = qb.shape[1], self.values["b"]
        counts = torch.zeros(nh, bits + 1, dtype=torch.float64)
        for s, n in enumerate(view.lengths.tolist()):
            for i0 in range(0, n, BLOCK):
                i1 = min(n, i0 + BLOCK)
                d = hamming(qb[s, :, i0:i1, 0], kb[s, :, :n, 0])  # [H, B, n]
                d = d.masked_fill(~allowed_keys(i0, i1, n, view.causal), bits + 1)  # out of range: dropped
                offset = torch.arange(nh)[:, None] * (bits + 2)
                counts += torch.bincount((d.view(nh, -1) + offset).flatten(), minlength=nh * (bits + 2)
                                         ).view(nh, bits + 2)[:, :bits + 1].double()
        return counts

    def _predict(self, view, layer):
        nh, d = view.q.shape[1], view.q.shape[-1]
        self.check_fitted(layer, nh, *self.wq.shape[:2], d, self.wq.shape[2])
        qb, kb = self._bits(view, layer)
        if self.radii is not None:
            radii = self.radii[layer][None, :, None, None].expand(qb.shape[0], -1, qb.shape[2], 1).clone()
        else:
            radii = query_radii(qb, kb, view.lengths.cpu(), view.causal, self.values["h"], self.values["top"])
        return HammingGraph(qb, kb, radii)

    def _flops(self, n, d):
        return 4.0 * n * d * self.values["b"] + float(n) * n
