"""Attention on a CUDA GPU as the GPU benchmark times it (``bench/suite/bench_gpu.py``, ``--profile gpu``).

One sample of ``H`` heads: ``q``, ``k``, ``v`` ``[H, n, D]`` on the GPU, in the dtype of the method
(:func:`method_dtypes`). The methods (:data:`GPU_DENSE`):

* ``softmax-sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` in float16 / bfloat16 (the
  fused flash kernels a model runs), ``P V`` included: the everyday dense attention.
* ``entmax15``: dense torch entmax attention, ``P = entmax15(scale Q K^T)`` with the library's sort-based
  ``entmax.entmax15`` (full sort), then ``P V``, :data:`BLOCK` queries at a time so memory is
  ``O(H x BLOCK x n)`` at any n. Causal: a block scores only the keys up to its last query (the
  later ones cannot be seen; the earlier ones of the block's later queries are masked to probability 0
  by :func:`predictors.masking.mask_scores`). Float32: the sort-based threshold (cumulative sums of
  sorted scores) loses the support in half precision.
* ``adasplash``: ``adasplash(q, k, v, alpha=1.5, is_causal=causal)`` (the ``adasplash`` package,
  AdaSplash-2 for causal alpha = 1.5: exact entmax attention in Triton that skips null blocks), float16 /
  bfloat16; today's fastest exact entmax attention. Its scale is ``1/sqrt(D)`` (it takes none), and ``n``
  must be a power of two from 64 (no padding mask). Its first call compiles and autotunes for minutes.
* ``gold``: the suite's gold graph on the GPU, :func:`bench.evaluation.gold.layer_gold` on a GPU view
  (float32, the exact support kernel of :mod:`predictors.entmax`); timed by the benchmark itself (an
  evaluation-stage function, so not here).

Predicted sparse execution (:func:`bench.execution.sparse_exec.sparse_entmax_attention`) computes in
float32 too. Every time is taken after :func:`bench.execution.timing.sync`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from predictors.masking import allowed_keys, block_scores, mask_scores

GPU_DENSE = ("softmax-sdpa", "entmax15", "adasplash", "gold")
# Methods timed in the profile's half-precision dtypes; every other one in float32, for the reason here.
HALF_METHODS = ("softmax-sdpa", "adasplash")
FLOAT32_WHY = {
    "entmax15": "the sort-based entmax15 threshold needs float32 (cumulative sums of sorted scores)",
    "gold": "the gold support is exact in float32, as on the CPU",
    "sparse": "sparse execution gathers and scores in float32",
}
BLOCK = 1024  # queries per block of the dense entmax15 (2 GiB of float32 scores at n = 32768, 16 heads)
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def method_dtypes(method: str, dtypes) -> tuple[str, ...]:
    """The dtypes ``method`` is timed in: the profile's ``dtypes`` for :data:`HALF_METHODS`, else float32."""
    return tuple(dtypes) if method in HALF_METHODS else ("float32",)


def adasplash_problem() -> str | None:
    """Why AdaSplash cannot run here, or ``None`` when it can."""
    if not torch.cuda.is_available():
        return "AdaSplash needs a CUDA device (Triton kernels); torch sees none"
    try:
        import adasplash  # noqa: F401
    except ImportError as exc:
        return (f"the adasplash package is not importable ({exc}); bench/suite/gpu_prepare.sh puts its wheel "
                "in .device/b and bench/suite/gpu_run.sh installs it")
    return None


def entmax15_blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
                     block: int = BLOCK) -> torch.Tensor:
    """Dense ``entmax15(scale Q K^T) V`` of one sample, ``block`` queries at a time (module docstring).

    ``q``, ``k`` ``[H, n, D]``, ``v`` ``[H, n, Dv]``, any float dtype and device. Returns float32
    ``[H, n, Dv]``.
    """
    from entmax import entmax15

    h, n = q.shape[0], q.shape[1]
    vf = v.float()
    out = torch.empty(h, n, v.shape[-1], dtype=torch.float32, device=q.device)
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        m = i1 if causal else n  # keys after the block's last query: never visible
        scores = block_scores(q[:, i0:i1], k[:, :m], scale)
        if causal:
            scores = mask_scores(scores, allowed_keys(i0, i1, m, True, device=q.device))
        out[:, i0:i1] = torch.matmul(entmax15(scores, dim=-1), vf[:, :m])
    return out


def dense_gpu_attention(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                        scale: float) -> torch.Tensor:
    """Attention of one sample by ``method`` (``softmax-sdpa``, ``entmax15`` or ``adasplash``; not ``gold``).

    ``q``, ``k``, ``v`` ``[H, n, D]`` in the method's dtype. Returns ``[H, n, D]``: float32 for
    ``entmax15``, the inputs' dtype otherwise.
    """
    if method == "softmax-sdpa":
        return F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=causal, scale=scale)[0]
    if method == "entmax15":
        return entmax15_blocked(q, k, v, causal, scale)
    if method == "adasplash":
        if not math.isclose(scale, 1.0 / math.sqrt(q.shape[-1]), rel_tol=1e-6):
            raise BenchError(f"adasplash scales by 1/sqrt(D) = {1 / math.sqrt(q.shape[-1]):.6g}, not {scale:.6g}")
        from adasplash import adasplash

        return adasplash(q[None].contiguous(), k[None].contiguous(), v[None].contiguous(), alpha=1.5,
                         is_causal=causal)[0]
    raise BenchError(f"unknown GPU attention method {method!r}; known: {', '.join(GPU_DENSE[:3])} (and gold)")


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` (Frobenius, float32); NaN when ``ref`` is zero."""
    ref = ref.float()
    norm = float(torch.linalg.vector_norm(ref))
    return float(torch.linalg.vector_norm(out.float() - ref)) / norm if norm > 0 else math.nan


class CudaPeak:
    """Peak CUDA memory allocated between :meth:`start` and :meth:`stop` beyond what was allocated at
    :meth:`start` (bytes; ``None`` off CUDA): around a benchmark's rounds, the peak of one call, since each
    call frees what it allocated."""

    def __init__(self, device: str):
        self.device, self.base = device, 0

    def start(self) -> CudaPeak:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        return self

    def stop(self) -> int | None:
        if self.device != "cuda":
            return None
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - self.base)
