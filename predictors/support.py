"""The gold support a predictor may fit on: the exact alpha-entmax support of every layer and head, with
its probabilities, stored sparsely (CSR over rows ``(s, h, i)``).

``bench.evaluation.gold`` computes it; predictors read it in ``fit`` (hinge-loss positives, sinks,
learned gates) and never see the eval part's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerGold:
    """Gold attention of one layer in CSR form.

    Attributes
    ----------
    counts : int64 ``[S, H, T]``, support size of each row ``(s, h, i)``; 0 for padding rows
    cols : int32 ``[nnz]``, key index of each support entry, rows in ``(s, h, i)`` order
    probs : float32 ``[nnz]``, the entmax probability of each entry
    lengths : int64 ``[S]``
    causal : bool
    """

    counts: torch.Tensor
    cols: torch.Tensor
    probs: torch.Tensor
    lengths: torch.Tensor
    causal: bool

    def __post_init__(self):
        self.rowptr = torch.zeros(self.counts.numel() + 1, dtype=torch.int64)
        torch.cumsum(self.counts.flatten(), 0, out=self.rowptr[1:])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.counts.shape)

    def nbytes(self) -> int:
        """Bytes held by the gold's tensors: counts, row pointers, columns and probabilities."""
        return sum(t.numel() * t.element_size() for t in (self.counts, self.rowptr, self.cols, self.probs))

    def block(self, s: int, i0: int, i1: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask and probabilities of rows ``i0 <= i < i1`` of sample ``s``, all heads.

        Returns
        -------
        mask : bool ``[H, i1 - i0, n]`` and probs : float32 ``[H, i1 - i0, n]``
        """
        _, nh, t = self.counts.shape
        b = i1 - i0
        mask = torch.zeros(nh * b, n, dtype=torch.bool)
        probs = torch.zeros(nh * b, n, dtype=torch.float32)
        # CSR rows (s, h, i) for every head at once: row r = h * b + (i - i0) of the block.
        first = (s * nh + torch.arange(nh)[:, None]) * t + torch.arange(i0, i1)[None, :]  # [H, B]
        starts = self.rowptr[first.flatten()]
        cnt = self.counts[s, :, i0:i1].flatten()
        rows = torch.repeat_interleave(torch.arange(nh * b), cnt)
        within = torch.arange(rows.numel()) - torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
        src = starts[rows] + within
        cols = self.cols[src].long()
        mask[rows, cols] = True
        probs[rows, cols] = self.probs[src]
        return mask.view(nh, b, n), probs.view(nh, b, n)

    def sparsity(self) -> torch.Tensor:
        """Gold sparsity per sample and head, ``[S, H]``: 1 - |support| / |valid pairs|."""
        n = self.lengths.double()
        valid = n * (n + 1) / 2 if self.causal else n * n
        return 1.0 - self.counts.sum(-1).double() / valid[:, None]

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.counts": self.counts, f"{prefix}.cols": self.cols, f"{prefix}.probs": self.probs}


@dataclass
class Gold:
    """Gold attention of every layer of a dataset, and how long it took."""

    layers: list[LayerGold]
    seconds: float
    bisect_iters: int | None

    def sparsity(self) -> torch.Tensor:
        """Mean gold sparsity over samples, per layer and head: ``[L, H]``."""
        return torch.stack([g.sparsity().mean(0) for g in self.layers])
