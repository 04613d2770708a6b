"""XAttention (Xu et al., 2025): block-sparse attention chosen from strided antidiagonal scores.

Tokens are cut into blocks of ``B`` (param ``b``) and, inside them, groups of ``S`` (param ``st``,
``B % S == 0``). For query group ``u`` (queries ``uS .. uS+S-1``) and key group ``v`` the *antidiagonal
score* is the mean of the scaled scores on the antidiagonal of their ``S x S`` tile,

    A_uv = (1 / S) * sum_{o = 0}^{S-1} z_{uS + S-1-o, vS + o},        z_ij = scale * q_i . k_j,

where a term whose query or key is past the sample's end, or (causal) whose key is after its query,
counts as absent (adds 0). Every ``B x B`` block is covered by ``(B/S)^2`` such tiles, whose
antidiagonals, taken together, form the strided antidiagonals of the block (stride ``S``), touching
every row and every column of it once per tile row and column. Then, as in the reference
implementation,

    P_u = softmax_v(A_u.)                  over the key groups v with at least one present term,
    P_ab = mean_{u in block a} sum_{v in block b} P_uv      (a probability over key blocks b),

and each query block ``a`` keeps the smallest set of key blocks, taken by decreasing ``P_ab`` (ties to
the lower block index), whose cumulative probability reaches ``t`` (param ``t`` = tau, in (0, 1]);
blocks of probability 0 are never needed. A lower ``t`` keeps a prefix of the same order, so it never
raises recall. A query block without any present term (a causal sample shorter than ``S / 2``) keeps
its diagonal block.

The output is a :class:`~predictors.graphs.BlockGraph`: a kept block covers all its valid pairs, and
``BlockGraph.block_sparsity`` reports the share of tiles skipped. Memory: one query block at a time,
``[H, B/S, n/S]``.

Calibrated budget (param ``sp`` instead of ``t``). Block ``b`` of query block ``a`` is kept exactly when
its *entry value*, the probability of the blocks before it in the order,

    c_ab = sum { P_ab' : b' before b in the decreasing order of P_a. }      (0 for the first block),

is below ``t`` (and ``P_ab > 0``). So the kept pairs at threshold ``t`` are those of the tiles with
``c_ab < t``, and the threshold of each layer and head is the weighted quantile of the entry values of
its fit tiles (every query block of every fit sample; weight: the tile's valid pairs; tiles of
probability 0 never count, a forced diagonal tile always does) that leaves the share ``sp`` of its
valid fit pairs out (:func:`predictors.calibration.weighted_thresholds_below`). Tiles are kept or left
out whole and tied entry values together (every first block has ``c = 0``), so the fit sparsity is
``sp`` to within the pairs of the tiles at the threshold. The threshold may exceed 1 (every tile of
positive probability) or be 0 (only forced tiles).
"""

from __future__ import annotations

import torch

from predictors.base import Param, Predictor
from predictors.calibration import block_pair_counts, one_budget, weighted_thresholds_below
from predictors.errors import PredictorError
from predictors.graphs import BlockGraph
from predictors.registry import register


def group_vectors(x: torch.Tensor, n: int, stride: int, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate each group of ``stride`` tokens of ``x`` ``[H, T, D]`` into one vector.

    Group ``u`` is ``[x_{uS + S-1}, ..., x_{uS}]`` when ``reverse`` (queries, so that slot ``o`` of a
    query group meets slot ``o`` of a key group on the antidiagonal), else ``[x_{uS}, ..., x_{uS + S-1}]``.
    Tokens at ``>= n`` are zeros. Returns ``[H, G, S * D]`` with ``G = ceil(n / S)`` and the presence
    mask ``[G, S]`` of the slots.
    """
    h, _, d = x.shape
    g = -(-n // stride)
    pad = torch.zeros(h, g * stride, d, dtype=torch.float32)
    pad[:, :n] = x[:, :n].float()
    present = torch.arange(g * stride) < n
    pad, present = pad.view(h, g, stride, d), present.view(g, stride)
    if reverse:
        pad, present = pad.flip(2), present.flip(1)
    return pad.reshape(h, g, stride * d), present


def antidiagonal_scores(q: torch.Tensor, k: torch.Tensor, n: int, stride: int, scale: float, causal: bool,
                        u0: int = 0, u1: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``A_uv`` of the module docstring for query groups ``u0 <= u < u1``, all key groups.

    ``q``, ``k``: ``[H, T, D]`` of one sample. Returns ``A`` float32 ``[H, u1 - u0, G]`` and the number of
    present terms ``count`` int64 ``[u1 - u0, G]`` (``A`` is 0 where ``count`` is 0).
    """
    qg, qp = group_vectors(q, n, stride, reverse=True)
    kg, kp = group_vectors(k, n, stride, reverse=False)
    g = qg.shape[1]
    u1 = g if u1 is None else u1
    qg, qp = qg[:, u0:u1], qp[u0:u1]
    a = torch.matmul(qg, kg.transpose(1, 2)) * (scale / stride)
    count = (qp.long() @ kp.long().T)  # [U, G]
    if causal:
        u = torch.arange(u0, u1)[:, None]
        v = torch.arange(g)[None, :]
        a = a.masked_fill(v > u, 0.0)
        count = count.masked_fill(v > u, 0)
        # Diagonal tiles: slot o pairs query uS+S-1-o with key uS+o, which is past iff o <= S-1-o.
        o = torch.arange(stride)
        keep = (o <= stride - 1 - o)  # [S]
        d = qg.shape[-1] // stride
        rows = torch.arange(u1 - u0)
        diag_k = kg[:, u0:u1].view(kg.shape[0], u1 - u0, stride, d)
        diag_q = qg.view(qg.shape[0], u1 - u0, stride, d)
        terms = (diag_q * diag_k).sum(-1) * keep  # [H, U, S]
        a[:, rows, rows + u0] = terms.sum(-1) * (scale / stride)
        count[rows, rows + u0] = (qp & kp[u0:u1] & keep).sum(-1)
    return a, count


def threshold_blocks(p: torch.Tensor, tau) -> torch.Tensor:
    """Smallest prefix of blocks by decreasing ``p`` ``[..., M]`` whose cumulative sum reaches ``tau``.

    ``tau``: a number, or a tensor broadcasting against ``[..., 1]`` (one threshold per head). Ties go to
    the lower index (stable sort); zero-probability blocks are never kept. Returns bool ``[..., M]``.
    """
    val, order = p.sort(dim=-1, descending=True, stable=True)
    before = val.cumsum(-1) - val  # exclusive cumulative sum
    keep_sorted = (before < tau) & (val > 0)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


@register
class XAttention(Predictor):
    """XAttention: blocks ``b``, antidiagonal stride ``st``, and one budget: cumulative threshold ``t``
    (nothing is fitted) or target sparsity ``sp`` (a threshold per layer and head, calibrated on the fit
    samples: ``xattention-b8-st4-sp0.9``).

    FLOPs per head, one sample of ``n`` tokens, head dim ``d``: the antidiagonal scores are a product of
    ``(n/S) x (S d)`` by ``(S d) x (n/S)``, ``2 n^2 d / S``; the softmax, block sums and sort are
    ``O((n/S)^2)`` and not counted.
    """

    block_param = "b"

    kind = "block"
    family = "xattention"
    params = (
        Param("b", "b", int, 64, doc="block size B (tokens per block side)"),
        Param("st", "st", int, 8, doc="antidiagonal stride S (B % S == 0)"),
        Param("t", "t", float, None, doc="cumulative probability threshold tau in (0, 1] (default 0.9 when sp "
              "is not given)"),
        Param("sp", "sp", float, None, doc="target sparsity: per-head thresholds calibrated on the fit samples"),
    )

    def __init__(self, seed: int = 0, **values):
        super().__init__(seed=seed, **values)
        self.learned = self.learned or self.values["sp"] is not None  # sp reads the fit samples' Q and K
        self.thresholds = None  # [L, H] calibrated thresholds, after fit() with sp

    def check(self):
        super().check()
        b, st = self.values["b"], self.values["st"]
        if b < 1 or st < 1 or b % st:
            raise PredictorError(f"{self.family}: need b >= 1, st >= 1 and b % st == 0, got b={b}, st={st}")
        if one_budget(self.family, self.values, "t", 0.9):
            return
        t = self.values["t"]
        if not 0.0 < t <= 1.0:
            raise PredictorError(f"{self.family}: threshold t must be in (0, 1], got {t}")

    def _fit(self, data, gold):
        if self.values["sp"] is None:
            return
        b, st = self.values["b"], self.values["st"]
        rows = []
        for layer in range(data.num_layers):
            view = data.layer(layer)
            values, weights = [], []
            for s in range(data.num_samples):
                pairs = block_pair_counts(int(view.lengths[s]), b, view.causal)  # [mb, mb]
                for a, pab, present in query_block_probs(view, s, b, st):
                    values.append(entry_values(pab, a, present))
                    weights.append(pairs[a])
            rows.append(weighted_thresholds_below(torch.cat(values, 1), torch.cat(weights), self.values["sp"]))
        self.thresholds = torch.stack(rows)  # [L, H]

    def _predict(self, view, layer):
        b = self.values["b"]
        s_count, nh, t, _ = view.q.shape
        if self.values["sp"] is not None:
            self.check_fitted(layer, nh, *self.thresholds.shape)
            tau = self.thresholds[layer][:, None]  # [H, 1]
        else:
            tau = self.values["t"]
        m = -(-t // b)
        blocks = torch.zeros(s_count, nh, m, m, dtype=torch.bool)
        for s in range(s_count):
            mb = -(-int(view.lengths[s]) // b)
            for a, pab, present in query_block_probs(view, s, b, self.values["st"]):
                keep = threshold_blocks(pab, tau)
                if not present:
                    keep[:, a] = True
                blocks[s, :, a, :mb] = keep
        return BlockGraph(blocks, b)

    def _flops(self, n, d):
        return 2.0 * n * n * d / self.values["st"]


def query_block_probs(view, s: int, block: int, stride: int):
    """``P_ab`` of the module docstring for each query block ``a`` of sample ``s`` of ``view``.

    Yields ``(a, P_a, present)``: ``P_a`` float32 ``[H, mb]`` over the sample's ``mb = ceil(n / B)`` key
    blocks, and whether query block ``a`` has any present term (when not, it keeps its diagonal block).
    """
    nh = view.q.shape[1]
    n = int(view.lengths[s])
    g, mb, per = -(-n // stride), -(-n // block), block // stride  # groups, blocks, groups per block
    for a in range(mb):
        u0, u1 = a * per, min(g, (a + 1) * per)
        scores, count = antidiagonal_scores(view.q[s], view.k[s], n, stride, view.scale, view.causal, u0, u1)
        scores = scores.masked_fill(count == 0, float("-inf"))
        rows_ok = (count > 0).any(-1)  # [U]
        prob = torch.softmax(scores, dim=-1).nan_to_num(0.0) * rows_ok[:, None]
        pad = torch.zeros(nh, u1 - u0, mb * per)
        pad[..., :g] = prob
        pab = pad.view(nh, u1 - u0, mb, per).sum((1, 3)) / max(1, int(rows_ok.sum()))  # [H, mb]
        yield a, pab, bool(rows_ok.any())


def entry_values(pab: torch.Tensor, a: int, present: bool) -> torch.Tensor:
    """Entry values ``c_ab`` of one query block's ``P_a`` ``[H, mb]`` (module docstring): ``+inf`` for
    blocks of probability 0 (never kept), ``-inf`` for the forced diagonal of a block without terms."""
    val, order = pab.sort(dim=-1, descending=True, stable=True)
    before = (val.cumsum(-1) - val).masked_fill(val <= 0, float("inf"))  # as in threshold_blocks
    out = torch.empty_like(before).scatter_(-1, order, before)
    if not present:
        out[:, a] = float("-inf")
    return out
