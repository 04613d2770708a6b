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
"""

from __future__ import annotations

import torch

from predictors.base import Param, Predictor
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


def threshold_blocks(p: torch.Tensor, tau: float) -> torch.Tensor:
    """Smallest prefix of blocks by decreasing ``p`` ``[..., M]`` whose cumulative sum reaches ``tau``.

    Ties go to the lower index (stable sort); zero-probability blocks are never kept. Returns bool
    ``[..., M]``.
    """
    val, order = p.sort(dim=-1, descending=True, stable=True)
    before = val.cumsum(-1) - val  # exclusive cumulative sum
    keep_sorted = (before < tau) & (val > 0)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


@register
class XAttention(Predictor):
    """XAttention: blocks ``b``, antidiagonal stride ``st``, cumulative threshold ``t``; nothing is fitted.

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
        Param("t", "t", float, 0.9, doc="cumulative probability threshold tau in (0, 1]"),
    )

    def check(self):
        super().check()
        b, st, t = self.values["b"], self.values["st"], self.values["t"]
        if b < 1 or st < 1 or b % st:
            raise PredictorError(f"{self.family}: need b >= 1, st >= 1 and b % st == 0, got b={b}, st={st}")
        if not 0.0 < t <= 1.0:
            raise PredictorError(f"{self.family}: threshold t must be in (0, 1], got {t}")

    def _predict(self, view, layer):
        b, st, tau = self.values["b"], self.values["st"], self.values["t"]
        s_count, nh, t, _ = view.q.shape
        m = -(-t // b)
        blocks = torch.zeros(s_count, nh, m, m, dtype=torch.bool)
        per = b // st  # groups per block
        for s in range(s_count):
            n = int(view.lengths[s])
            g = -(-n // st)
            mb = -(-n // b)
            for a in range(mb):
                u0, u1 = a * per, min(g, (a + 1) * per)
                scores, count = antidiagonal_scores(view.q[s], view.k[s], n, st, view.scale, view.causal, u0, u1)
                scores = scores.masked_fill(count == 0, float("-inf"))
                rows_ok = (count > 0).any(-1)  # [U]
                prob = torch.softmax(scores, dim=-1).nan_to_num(0.0) * rows_ok[:, None]
                pad = torch.zeros(nh, u1 - u0, mb * per)
                pad[..., :g] = prob
                pab = pad.view(nh, u1 - u0, mb, per).sum((1, 3)) / max(1, int(rows_ok.sum()))  # [H, mb]
                keep = threshold_blocks(pab, tau)
                if not bool(rows_ok.any()):
                    keep[:, a] = True
                blocks[s, :, a, :mb] = keep
        return BlockGraph(blocks, b)

    def _flops(self, n, d):
        return 2.0 * n * n * d / self.values["st"]
