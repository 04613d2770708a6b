"""A SeerAttention-style learned block gate (Gao et al., 2024): pooled Q and K, a small map per head.

Tokens are cut into blocks of ``B`` (param ``b``). Per block ``a`` of a sample, the queries are pooled
by their mean and the keys by mean, max and min (concatenated, as in SeerAttention's AttnGate),
over the block's valid tokens:

    qbar_a = mean_{i in a} q_i                                   [D]
    kbar_b = [mean_{j in b} k_j ; max_{j in b} k_j ; min_{j in b} k_j]      [3 D]

and one linear map per layer and head (``W_q`` ``D x r``, ``W_k`` ``3D x r``, ``r = GATE_DIM``, no bias)
scores every pair of blocks; the gate is a softmax over the allowed key blocks of each query block
(all blocks of the sample, or ``b <= a`` when causal):

    G_ab = softmax_b( (qbar_a W_q) . (kbar_b W_k) / sqrt(r) ).

Fit (on the fit samples only): the target of a query block is its *block-pooled gold*, the share of
the gold attention mass of its rows falling in each key block,

    T_ab = (1 / |a|) sum_{i in a} sum_{j in b} p_ij          (sums to 1 over b),

and the maps minimise the KL divergence ``KL(T_a || G_a)`` averaged over the valid query blocks of the
fit samples, per head (heads are independent problems trained in one batch: Adam, ``STEPS`` full
batch steps, learning rate ``LR``, initial weights uniform in ``+-1/sqrt(fan_in)`` from a generator
seeded by the predictor seed and the layer). Training is memoised in-process per ``(data, b, seed)``,
so every selection setting of a sweep shares it.

Predict: a key block is kept for a query block when it is among its ``top`` largest gates (ties to
the lower block; ``top = 0``: none this way) or when its gate is at least ``t`` (``t = 0``: none this
way); at least one of the two must select. A larger ``top`` or a lower ``t`` never lowers recall.

Calibrated budget (param ``sp`` instead of ``t``): per layer and head, a gate threshold ``t_h`` found on
the fit samples, a block then kept when among the ``top`` largest gates or when ``G_ab > t_h``
(strict). ``t_h`` is the weighted quantile of ``-G_ab`` over the allowed blocks of every fit query block
(weight: the block's valid pairs; the ``top`` blocks count as always kept) that leaves the share ``sp``
of the valid fit pairs out (:func:`predictors.calibration.weighted_thresholds_below`, on ``-G``).
"""

from __future__ import annotations

import functools
import math

import torch

from predictors import memo
from predictors.base import Param, Predictor
from predictors.calibration import block_pair_counts, one_budget, weighted_thresholds_below
from predictors.errors import PredictorError
from predictors.graphs import BlockGraph
from predictors.registry import register

GATE_DIM = 16
STEPS = 100
LR = 1e-2
_CACHE: dict = memo.table("seer-gates")  # (data, b, seed) -> maps; predictors.memo moves entries


def pool_blocks(x: torch.Tensor, lengths: torch.Tensor, block: int, keys: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Block pooling of ``x`` ``[S, H, T, D]`` over valid tokens.

    Returns the pooled features ``[S, H, M, D]`` (queries: mean) or ``[S, H, M, 3D]`` (keys: mean, max,
    min), ``M = ceil(T / B)``, zeros for empty blocks, and the block validity ``[S, M]``.
    """
    s_count, h, t, d = x.shape
    m = -(-t // block)
    valid = torch.arange(m * block)[None, :] < lengths[:, None]  # [S, M*B]
    pad = torch.zeros(s_count, h, m * block, d)
    pad[:, :, :t] = x.float()
    pad = pad.masked_fill(~valid[:, None, :, None], 0.0).view(s_count, h, m, block, d)
    vb = valid.view(s_count, m, block)
    cnt = vb.sum(-1)  # [S, M]
    mean = pad.sum(3) / cnt.clamp(min=1)[:, None, :, None]
    if not keys:
        return mean, cnt > 0
    vmask = vb[:, None, :, :, None]
    mx = pad.masked_fill(~vmask, float("-inf")).amax(3)
    mn = pad.masked_fill(~vmask, float("inf")).amin(3)
    empty = (cnt == 0)[:, None, :, None]
    mx, mn = mx.masked_fill(empty, 0.0), mn.masked_fill(empty, 0.0)
    return torch.cat([mean, mx, mn], dim=-1), cnt > 0


def allowed_blocks(lengths: torch.Tensor, m: int, block: int, causal: bool) -> torch.Tensor:
    """Allowed (query block, key block) pairs: bool ``[S, M, M]`` (valid blocks; ``b <= a`` if causal)."""
    nb = -(-lengths // block)  # [S]
    idx = torch.arange(m)
    ok = (idx[None, :, None] < nb[:, None, None]) & (idx[None, None, :] < nb[:, None, None])
    if causal:
        ok &= idx[None, None, :] <= idx[None, :, None]
    return ok


def pooled_gold(layer_gold, block: int) -> torch.Tensor:
    """``T_ab`` of the module docstring for one layer's gold: float32 ``[S, H, M, M]`` (zero rows for
    empty query blocks)."""
    s_count, nh, t = layer_gold.counts.shape
    m = -(-t // block)
    row = torch.repeat_interleave(torch.arange(s_count * nh * t), layer_gold.counts.flatten())
    sh, i = row // t, row % t
    tile = (sh * m + i // block) * m + layer_gold.cols.long() // block
    mass = torch.bincount(tile, weights=layer_gold.probs.double(), minlength=s_count * nh * m * m)
    rows = (torch.arange(m)[None, :] * block)
    rows = (layer_gold.lengths[:, None] - rows).clamp(min=0, max=block)  # valid rows per query block [S, M]
    mass = mass.view(s_count, nh, m, m) / rows.clamp(min=1)[:, None, :, None]
    return mass.float()


def gate_logits(qbar, kbar, wq, wk) -> torch.Tensor:
    """``(qbar W_q) . (kbar W_k) / sqrt(r)``: ``[S, H, M, M]``."""
    qr = torch.matmul(qbar, wq[None])
    kr = torch.matmul(kbar, wk[None])
    return torch.matmul(qr, kr.transpose(-1, -2)) / math.sqrt(wq.shape[-1])


def gate_kl(qbar, kbar, wq, wk, allowed, target, ent, rows, per_rows) -> torch.Tensor:
    """Mean KL per head ``[H]`` between the block-pooled gold ``target`` ``[S, H, M, M]`` and the softmax
    of the gate logits over the ``allowed`` key blocks, over the valid query blocks ``rows`` ``[S, H, M]``
    (``ent = sum T log T``, constant in the maps; ``per_rows``: valid query blocks per head)."""
    logp = torch.log_softmax(gate_logits(qbar, kbar, wq, wk).masked_fill(~allowed, float("-inf")), -1)
    cross = -(target * logp.masked_fill(~allowed, 0.0)).sum(-1)  # [S, H, M]
    return ((ent + cross) * rows).sum((0, 2)) / per_rows


def data_key(data) -> str:
    """An in-process memo key of a dataset: its descriptor, or a digest of its tensors without one."""
    from predictors.fingerprint import descriptor_key, tensor_digest

    if data.descriptor:
        return "d:" + descriptor_key(data.descriptor)
    return "t:" + tensor_digest({"q": data.q, "k": data.k, "lengths": data.lengths,
                                 "causal": torch.tensor(data.causal)})


def fit_gates(data, gold, block: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train the gate maps of every layer: ``wq`` ``[L, H, D, r]``, ``wk`` ``[L, H, 3D, r]`` and the final
    mean KL per head ``[L, H]`` (memoised per ``(data, block, seed)``)."""
    key = (data_key(data), block, seed)
    if key in _CACHE:
        return _CACHE[key]
    wqs, wks, losses = [], [], []
    for layer in range(data.num_layers):
        view = data.layer(layer)
        qbar, valid = pool_blocks(view.q, data.lengths, block, keys=False)
        kbar, _ = pool_blocks(view.k, data.lengths, block, keys=True)
        target = pooled_gold(gold.layers[layer], block)
        m = qbar.shape[2]
        allowed = allowed_blocks(data.lengths, m, block, data.causal)[:, None]  # [S, 1, M, M]
        rows = valid[:, None, :].expand(-1, data.num_heads, -1)  # [S, H, M]
        gen = torch.Generator().manual_seed((seed * 1_000_003 + 17 * layer + 5) % (2 ** 63))
        d = qbar.shape[-1]
        wq = ((torch.rand(data.num_heads, d, GATE_DIM, generator=gen) * 2 - 1) / math.sqrt(d)).requires_grad_()
        wk = ((torch.rand(data.num_heads, 3 * d, GATE_DIM, generator=gen) * 2 - 1) / math.sqrt(3 * d)
              ).requires_grad_()
        opt = torch.optim.Adam([wq, wk], lr=LR)
        ent = (target * target.clamp(min=1e-30).log()).sum(-1)  # sum T log T, constant in the maps
        per_rows = rows.sum((0, 2)).clamp(min=1)  # [H]

        kl = functools.partial(gate_kl, qbar, kbar, wq, wk, allowed, target, ent, rows, per_rows)
        for _ in range(STEPS):
            opt.zero_grad()
            kl().sum().backward()
            opt.step()
        with torch.no_grad():
            losses.append(kl())
        wqs.append(wq.detach())
        wks.append(wk.detach())
    _CACHE[key] = (torch.stack(wqs), torch.stack(wks), torch.stack(losses))
    return _CACHE[key]


def select_blocks(gate: torch.Tensor, allowed: torch.Tensor, top: int, t: float) -> torch.Tensor:
    """Blocks kept: among the ``top`` largest gates (stable: ties to the lower block) or gate >= ``t > 0``.

    ``gate`` ``[..., M]`` (0 where not allowed), ``allowed`` bool, broadcastable. Returns bool ``[..., M]``.
    """
    keep = torch.zeros(gate.shape, dtype=torch.bool)
    if top > 0:
        masked = gate.masked_fill(~allowed, -1.0)
        order = masked.sort(dim=-1, descending=True, stable=True).indices[..., :top]
        keep.scatter_(-1, order, True)
    if t > 0:
        keep |= gate >= t
    return keep & allowed


@register
class SeerGate(Predictor):
    """Learned block gate: blocks of ``b``, keep the ``top`` gates or gates ``>= t`` per query block, or
    with ``sp`` instead of ``t`` gates above a per-head threshold calibrated on the fit samples
    (``seer-b8-top0-sp0.9``).

    FLOPs per head, one sample of ``n`` tokens, ``M = ceil(n / B)`` blocks, ``r = GATE_DIM``: pooling,
    ``n d`` (queries) + ``3 n d`` (keys); the maps, ``2 M d r + 2 M 3d r``; the gate scores ``2 M^2 r``.
    The softmax and the selection (``O(M^2)``) are not counted; training is fit, not prediction.
    """

    block_param = "b"

    kind = "block"
    family = "seer"
    learned = True
    randomised = True  # seeded initialisation of the gate maps
    params = (
        Param("b", "b", int, 64, doc="block size B"),
        Param("top", "top", int, 1, doc="key blocks kept per query block by rank (0: none by rank)"),
        Param("t", "t", float, None, doc="gate probability threshold (0: none by threshold; default 0 when sp "
              "is not given)"),
        Param("sp", "sp", float, None, doc="target sparsity: per-head gate thresholds calibrated on the fit "
              "samples"),
    )

    def check(self):
        super().check()
        b, top, t, sp = self.values["b"], self.values["top"], self.values["t"], self.values["sp"]
        one_budget(self.family, self.values, "t", 0.0)
        t = 0.0 if self.values["t"] is None else self.values["t"]
        if b < 1 or top < 0 or not 0.0 <= t <= 1.0:
            raise PredictorError(f"{self.family}: need b >= 1, top >= 0 and 0 <= t <= 1, got b={b}, top={top}, t={t}")
        if top == 0 and t == 0.0 and sp is None:
            raise PredictorError(f"{self.family}: select blocks by rank (top > 0) or by gate (t > 0), or both")

    def shared_fit(self):
        return ("seer-gates", self.values["b"], self.seed)  # every selection setting of one block size

    def _fit(self, data, gold):
        self.wq, self.wk, self.fit_kl = fit_gates(data, gold, self.values["b"], self.seed)
        self.thresholds = None
        if self.values["sp"] is not None:
            self.thresholds = torch.stack([self._calibrate(data.layer(li), li) for li in range(data.num_layers)])

    def _gates(self, view, layer) -> tuple[torch.Tensor, torch.Tensor]:
        """The gates ``G`` ``[S, H, M, M]`` of one layer's samples and the allowed blocks ``[S, 1, M, M]``."""
        b = self.values["b"]
        lengths = view.lengths.cpu()
        qbar, _ = pool_blocks(view.q.cpu(), lengths, b, keys=False)
        kbar, _ = pool_blocks(view.k.cpu(), lengths, b, keys=True)
        m = qbar.shape[2]
        allowed = allowed_blocks(lengths, m, b, view.causal)[:, None]
        logits = gate_logits(qbar, kbar, self.wq[layer], self.wk[layer]).masked_fill(~allowed, float("-inf"))
        return torch.softmax(logits, -1).nan_to_num(0.0), allowed  # empty query blocks: all zero

    def _calibrate(self, view, layer) -> torch.Tensor:
        """The calibrated thresholds ``[H]`` of one layer, on the negated gates (module docstring)."""
        b = self.values["b"]
        gate, allowed = self._gates(view, layer)
        s_count, nh, m, _ = gate.shape
        ranked = select_blocks(gate, allowed, self.values["top"], 0.0)
        values = (-gate).masked_fill(ranked, float("-inf")).masked_fill(~allowed, float("inf"))
        weights = torch.zeros(s_count, m, m, dtype=torch.float64)
        for s, n in enumerate(view.lengths.tolist()):
            mb = -(-int(n) // b)
            weights[s, :mb, :mb] = block_pair_counts(int(n), b, view.causal)
        values = values.transpose(0, 1).reshape(nh, -1)  # [H, S * M * M]
        return weighted_thresholds_below(values, weights.reshape(-1), self.values["sp"])

    def _predict(self, view, layer):
        nh = view.q.shape[1]
        self.check_fitted(layer, nh, *self.wq.shape[:2], view.q.shape[-1], self.wq.shape[2])
        gate, allowed = self._gates(view, layer)
        if self.values["sp"] is None:
            keep = select_blocks(gate, allowed, self.values["top"], self.values["t"])
        else:
            cut = self.thresholds[layer][None, :, None, None]  # [1, H, 1, 1], on -G
            keep = select_blocks(gate, allowed, self.values["top"], 0.0) | ((-gate < cut) & allowed)
        return BlockGraph(keep, self.values["b"])

    def _flops(self, n, d):
        m = -(-n // self.values["b"])
        r = GATE_DIM
        return 4.0 * n * d + 2.0 * m * d * r + 6.0 * m * d * r + 2.0 * m * m * r
