"""What a restricted attention computation attended to (:class:`ExecStats`), and the check of its inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.errors import BenchError


@dataclass
class ExecStats:
    """What a restricted computation attended to, per sample and head (float64 ``[S, H]`` each).

    ``pred_pairs``: predicted pairs that are valid (``|P & allowed|``); ``valid_pairs``: all valid pairs
    (n^2 or n(n+1)/2); ``support_pairs``: pairs with non-zero probability; ``empty_rows``: valid queries
    with no predicted key; ``valid_rows``: valid queries (n).
    """

    pred_pairs: torch.Tensor
    valid_pairs: torch.Tensor
    support_pairs: torch.Tensor
    empty_rows: torch.Tensor
    valid_rows: torch.Tensor

    @classmethod
    def zeros(cls, s: int, h: int) -> ExecStats:
        z = lambda: torch.zeros(s, h, dtype=torch.float64)
        return cls(z(), z(), z(), z(), z())

    @property
    def sparsity(self) -> torch.Tensor:
        """``1 - pred_pairs / valid_pairs``, ``[S, H]``: the share of valid pairs never computed."""
        return 1.0 - self.pred_pairs / self.valid_pairs

    @property
    def support_sparsity(self) -> torch.Tensor:
        """``1 - support_pairs / valid_pairs``, ``[S, H]``: the sparsity of the restricted attention itself."""
        return 1.0 - self.support_pairs / self.valid_pairs

    def add_valid(self, s: int, n: int, causal: bool) -> None:
        """Count sample ``s``'s valid pairs and rows (``n`` tokens), once per call of a computation."""
        self.valid_pairs[s] += float(n * (n + 1) // 2 if causal else n * n)
        self.valid_rows[s] += float(n)


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor) -> None:
    """Raise :class:`BenchError` unless ``q``, ``k``, ``v`` are ``[S, H, T, D]`` (``v``: ``Dv``) and
    ``lengths`` ``[S]`` lies in ``1..T``."""
    if q.ndim != 4 or k.shape[:3] != q.shape[:3] or v.shape[:3] != q.shape[:3] or k.shape[-1] != q.shape[-1]:
        raise BenchError(f"q, k, v must be [S, H, T, D] with matching S, H, T, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if lengths.shape != q.shape[:1] or int(lengths.min()) < 1 or int(lengths.max()) > q.shape[2]:
        raise BenchError(f"lengths must be [S={q.shape[0]}] with values in 1..{q.shape[2]}, got {lengths.tolist()}")
