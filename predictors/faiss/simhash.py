"""FAISS twin of random SimHash (:mod:`predictors.torch.simhash`): the same codes, searched with
FAISS binary indexes.

Fit is the torch twin's own (the same Gaussian matrices from the same generator), and so are the
codes. Per sample, head and table the ``n`` key codes, packed into bytes (``K`` bits padded with zeros
to a multiple of 8, identically for queries and keys, so distances are unchanged), go into

* ``IndexBinaryHash`` (the codes themselves as bucket keys, no flips) when ``h = 0`` and ``top = 0``:
  a range search of radius 1 (FAISS keeps distances ``< radius``) returns exactly the keys whose code
  equals the query's, the "same bucket" rule;
* ``IndexBinaryFlat`` otherwise: for ``top > 0`` a k-NN search gives ``d_top(i)``, the ``top``-th smallest
  distance to the query's allowed keys (causal: an ``IDSelectorRange(0, i1)`` per block of queries
  ``[i0, i1)`` and ``k + i1 - 1 - i0`` neighbours, of which at least ``k`` are past keys of every query of
  the block; the future ones are dropped); then a range search of radius ``max(h, d_top(i)) + 1``
  returns every key within ``max(h, d_top(i))``, ties included, whatever order FAISS gives equal
  distances.

The pairs (union over tables) are stored per sample and head as sorted ``i * n + j`` in a
:class:`PairGraph`. The rule is the torch twin's, on the same integer distances, so the predicted pairs
are identical (the tests compare them). FAISS has no GPU binary range search, so ``device="cuda"`` is
refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from predictors.errors import PredictorError
from predictors.faiss.common import FaissTwin, faiss_threads
from predictors.graphs import PredictedGraph
from predictors.registry import register
from predictors.torch.simhash import SimHash

CAUSAL_BLOCK = 64


@dataclass
class PairGraph(PredictedGraph):
    """Explicit pairs: ``pairs[s][h]`` is a sorted int64 tensor of ``i * n_s + j``; ``lengths`` ``[S]``."""

    pairs: list
    lengths: torch.Tensor

    def block_mask(self, s, i0, i1, n):
        if n != int(self.lengths[s]):
            raise ValueError(f"PairGraph of sample {s} holds n={int(self.lengths[s])} tokens, asked for n={n}")
        nh = len(self.pairs[s])
        out = torch.zeros(nh, i1 - i0, n, dtype=torch.bool)
        for h, keys in enumerate(self.pairs[s]):
            lo, hi = torch.searchsorted(keys, torch.tensor([i0 * n, i1 * n])).tolist()
            sel = keys[lo:hi]
            out[h, sel // n - i0, sel % n] = True
        return out


def pack(bits: torch.Tensor) -> np.ndarray:
    """Bool codes ``[..., K]`` as uint8 ``[..., ceil(K / 8)]`` (zero padding bits)."""
    return np.packbits(bits.numpy(), axis=-1, bitorder="little")


def top_distances(faiss, index, q: np.ndarray, n: int, top: int, causal: bool) -> np.ndarray:
    """``d_top(i)`` for the queries ``q`` ``[n, bytes]`` against the ``n`` keys in ``index``: int64 ``[n]``."""
    if not causal:
        dist, _ = index.search(q, min(top, n))
        return dist[:, -1].astype(np.int64)
    out = np.empty(n, dtype=np.int64)
    for i0 in range(0, n, CAUSAL_BLOCK):
        i1 = min(n, i0 + CAUSAL_BLOCK)
        kk = min(top + i1 - 1 - i0, i1)
        params = faiss.SearchParameters(sel=faiss.IDSelectorRange(0, i1))
        dist, ids = index.search(q[i0:i1], kk, params=params)
        rows = np.arange(i0, i1)[:, None]
        past = (ids >= 0) & (ids <= rows)
        need = np.minimum(top, rows[:, 0] + 1)  # the query has i + 1 past keys
        rank = np.cumsum(past, axis=1)
        pos = np.argmax(past & (rank == need[:, None]), axis=1)  # first past neighbour of rank `need`
        out[i0:i1] = dist[np.arange(i1 - i0), pos]
    return out


def range_pairs(index, q: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` with ``distance <= radii[i]``: one range search per distinct radius."""
    rows, cols = [], []
    for r in np.unique(radii):
        sel = np.nonzero(radii == r)[0]
        lims, _, ids = index.range_search(np.ascontiguousarray(q[sel]), int(r) + 1)
        rows.append(np.repeat(sel, np.diff(lims).astype(np.int64)))
        cols.append(ids.astype(np.int64))
    return np.concatenate(rows), np.concatenate(cols)


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
        qp, kp = pack(qb), pack(kb)  # [S, H, T, L, bytes]
        dbits = qp.shape[-1] * 8
        s_count, nh, _, nl, _ = qp.shape
        pairs = []
        with faiss_threads() as faiss:
            for s in range(s_count):
                n = int(view.lengths[s])
                per_head = []
                for hd in range(nh):
                    found = []
                    for t in range(nl):
                        q = np.ascontiguousarray(qp[s, hd, :n, t])
                        k = np.ascontiguousarray(kp[s, hd, :n, t])
                        if h == 0 and top == 0:
                            index = faiss.IndexBinaryHash(dbits, min(dbits, 64))
                            index.add(k)
                            lims, _, ids = index.range_search(q, 1)
                            rows = np.repeat(np.arange(n), np.diff(lims).astype(np.int64))
                            cols = ids.astype(np.int64)
                        else:
                            index = faiss.IndexBinaryFlat(dbits)
                            index.add(k)
                            radii = np.full(n, h, dtype=np.int64)
                            if top > 0:
                                radii = np.maximum(radii, top_distances(faiss, index, q, n, top, view.causal))
                            rows, cols = range_pairs(index, q, radii)
                        found.append(torch.from_numpy(rows * n + cols))
                    per_head.append(torch.unique(torch.cat(found)))  # sorted
                pairs.append(per_head)
        return PairGraph(pairs, view.lengths.cpu().clone())
