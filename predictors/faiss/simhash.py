"""FAISS twin of random SimHash (:mod:`predictors.torch.simhash`): the same codes, the same Hamming
graph, the ``top`` nearest codes searched with a FAISS binary index.

Fit is the torch twin's own (the same Gaussian matrices from the same generator), and so are the
codes. The graph is the torch twin's :class:`~predictors.torch.simhash.HammingGraph` (pairs within a
per-query radius ``r_l(i) = max(h, d_top_l(i))`` in some table), so both twins predict the very same
pairs and cost the same to read. What FAISS computes is ``d_top_l(i)``, the ``top``-th smallest Hamming
distance from query ``i`` to its allowed keys, where the torch twin sorts every row of distances: per
sample, head and table the ``n`` key codes, packed into bytes (``K`` bits padded with zeros to a
multiple of 8, identically for queries and keys, so distances are unchanged), go into an
``IndexBinaryFlat`` and one k-NN search of ``top`` neighbours gives it (causal: the keys are added by
blocks of :data:`CAUSAL_BLOCK`, and the queries of block ``[i0, i1)`` search the keys ``j < i1`` for
``top + i1 - 1 - i0`` neighbours, of which at least ``top`` are past keys of each; the future ones are
dropped). With ``top = 0``
there is nothing to search: the radius is ``h`` for every query and both twins do the same work.

An earlier version listed every pair by range searches (``IndexBinaryHash`` for equal codes); at
n = 4096 that was 264x slower than the torch twin's lazy graph (reference run of 2026-12-01), for the
same pairs. :class:`predictors.graphs.PairGraph` (explicit pairs) is kept for graphs stored then.
FAISS has no GPU binary index with this search, so ``device="cuda"`` is refused.
"""

from __future__ import annotations

import numpy as np
import torch

from predictors.errors import PredictorError
from predictors.faiss.common import FaissTwin, faiss_threads
from predictors.graphs import PairGraph  # noqa: F401  (graphs stored by earlier runs name it here)
from predictors.registry import register
from predictors.torch.simhash import HammingGraph, SimHash

# Queries per causal search: k = top + 15 neighbours keeps the k-NN heap small (64 was 2.5x slower at n = 4096).
CAUSAL_BLOCK = 16


def pack(bits: torch.Tensor) -> np.ndarray:
    """Bool codes ``[..., K]`` as uint8 ``[..., ceil(K / 8)]`` (zero padding bits)."""
    return np.packbits(bits.numpy(), axis=-1, bitorder="little")


def top_distances(faiss, index, q: np.ndarray, keys: np.ndarray, top: int, causal: bool) -> np.ndarray:
    """``d_top(i)`` for the queries ``q`` ``[n, bytes]`` against the keys ``keys`` ``[n, bytes]``, added to the
    empty ``index``: int64 ``[n]``.

    Causal: the keys are added block by block, so the search of queries ``[i0, i1)`` sees the keys
    ``j < i1`` only, and ``top + i1 - 1 - i0`` neighbours hold at least ``top`` past keys of every query of
    the block (the future ones, ``i < j < i1``, are dropped).
    """
    n = len(q)
    if not causal:
        index.add(keys)
        dist, _ = index.search(q, min(top, n))
        return dist[:, -1].astype(np.int64)
    out = np.empty(n, dtype=np.int64)
    for i0 in range(0, n, CAUSAL_BLOCK):
        i1 = min(n, i0 + CAUSAL_BLOCK)
        index.add(keys[i0:i1])
        dist, ids = index.search(q[i0:i1], min(top + i1 - 1 - i0, i1))
        rows = np.arange(i0, i1)[:, None]
        past = (ids >= 0) & (ids <= rows)
        need = np.minimum(top, rows[:, 0] + 1)  # the query has i + 1 past keys
        rank = np.cumsum(past, axis=1)
        pos = np.argmax(past & (rank == need[:, None]), axis=1)  # first past neighbour of rank `need`
        out[i0:i1] = dist[np.arange(i1 - i0), pos]
    return out


@register
class FaissSimHash(FaissTwin, SimHash):
    """SimHash searched with FAISS binary indexes; see the module docstring and :class:`SimHash`."""

    def __init__(self, seed: int = 0, *, device: str = "cpu", **values):
        if device == "cuda":
            raise PredictorError(f"{self.family}: FAISS has no GPU binary index with range search; use device='cpu'")
        super().__init__(seed=seed, device=device, **values)

    def _predict(self, view, layer):
        qb, kb = self.bits(view, layer)
        h, top = self.values["h"], self.values["top"]
        s_count, nh, t_len, nl, _ = qb.shape
        radii = torch.full((s_count, nh, t_len, nl), h, dtype=torch.int64)
        if top > 0:
            qp, kp = pack(qb), pack(kb)  # [S, H, T, L, bytes]
            with faiss_threads() as faiss:
                index = faiss.IndexBinaryFlat(qp.shape[-1] * 8)
                for s in range(s_count):
                    n = int(view.lengths[s])
                    for hd in range(nh):
                        for t in range(nl):
                            index.reset()
                            q = np.ascontiguousarray(qp[s, hd, :n, t])
                            k = np.ascontiguousarray(kp[s, hd, :n, t])
                            d_top = torch.from_numpy(top_distances(faiss, index, q, k, top, view.causal))
                            radii[s, hd, :n, t] = d_top.clamp(min=h)
        return HammingGraph(qb, kb, radii)
