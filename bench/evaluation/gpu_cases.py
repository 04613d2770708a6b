"""What the GPU benchmark (``bench/suite/bench_gpu.py``, ``--profile gpu``) measures, one case at a time.

A case is ``(n, backend, method, dtype)`` on :func:`bench.evaluation.speed_data.gpu_view` (one causal
sample of ``gpu_heads`` heads of dimension ``gpu_head_dim`` at length ``n``):

* ``backend = "dense"``: a method of :data:`bench.execution.gpu_attention.GPU_DENSE` other than the gold
  (``softmax-sdpa``, ``entmax15``, ``adasplash``), in each of its dtypes
  (:func:`bench.execution.gpu_attention.method_dtypes`);
* ``backend = "gold"``: the suite's gold graph of the layer (:func:`bench.evaluation.gold.layer_gold`);
* ``backend = "sparse"``: a configuration of ``gpu_predictors``, fitted once on the CPU
  (:func:`bench.evaluation.speed_data.gpu_fit_set`), timed as its prediction on the device plus
  :func:`bench.execution.sparse_exec.sparse_entmax_attention` on the predicted graph.

:func:`attention_case` returns the call to time and, untimed, what the record says besides the time
(sparsity, prediction time, output error against dense ``entmax15`` up to ``gpu_quality_n``). Twins
(:mod:`bench.evaluation.gpu_twins`) time a FAISS twin against its torch twin on the same device.
Everything takes ``device``, so the CPU tests run the same code on the CPU (AdaSplash and FAISS-GPU
aside).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch

import predictors
from bench.evaluation.speed_data import gpu_fit_set, gpu_view
from bench.execution.exec_stats import ExecStats
from bench.execution.gpu_attention import (
    DTYPES,
    FLOAT32_WHY,
    dense_gpu_attention,
    entmax15_blocked,
    method_dtypes,
    relative_error,
)
from bench.execution.plan import UnsupportedGraph, sparse_plan
from bench.execution.sparse_exec import sparse_entmax_attention
from bench.execution.timing import sync


def gpu_cases(prof) -> list[tuple[int, str, str, str]]:
    """Every ``(n, backend, method, dtype)`` of a profile: each dense method (in ``gpu_dense`` order) in
    each of its dtypes at every ``n`` up to ``gpu_dense_max[method]`` (a method's dtype runs all its
    lengths before the next dtype: AdaSplash compiles once per dtype), then every predictor at every ``n``."""
    cases = []
    for method in prof.gpu_dense:
        backend = "gold" if method == "gold" else "dense"
        for dtype in method_dtypes(method, prof.gpu_dtypes):
            cases += [(n, backend, method, dtype) for n in prof.gpu_n if n <= prof.gpu_dense_max.get(method, n)]
    cases += [(n, "sparse", name, "float32") for name in prof.gpu_predictors for n in prof.gpu_n]
    return cases


def case_id(case) -> str:
    n, backend, method, dtype = case
    return f"n{n}-{backend}-{method}-{dtype}"


@functools.lru_cache(maxsize=4)
def device_view(n: int, heads: int, dim: int, causal: bool, dtype: str, device: str):
    """:func:`gpu_view` with ``q``, ``k``, ``v`` on ``device`` in ``dtype`` (kept for the next case)."""
    view = gpu_view(n, heads, dim, causal)
    dt = DTYPES[dtype]
    move = lambda t: t.to(device=device, dtype=dt).contiguous()
    from dataclasses import replace

    return replace(view, q=move(view.q), k=move(view.k), v=move(view.v))


@functools.lru_cache(maxsize=8)
def fitted(name: str, heads: int, dim: int, causal: bool, backend: str = "torch", faiss_device: str = "cpu"):
    """``name`` fitted (seed 0) on :func:`gpu_fit_set`, on the CPU; a FAISS twin's index on ``faiss_device``."""
    kw = {"backend": "faiss", "device": faiss_device} if backend == "faiss" else {}
    return predictors.get(name, seed=0, **kw).fit(*gpu_fit_set(heads, dim, causal))


def _shape(prof) -> tuple[int, int, bool]:
    return prof.gpu_heads, prof.gpu_head_dim, prof.gpu_causal


def reference(prof, n: int, device: str, dtype: str = "float32") -> torch.Tensor:
    """Dense ``entmax15`` attention (float32) of the inputs of ``dtype`` at ``n``: ``[H, n, D]``."""
    v = device_view(n, *_shape(prof), dtype, device)
    return entmax15_blocked(v.q[0], v.k[0], v.v[0], v.causal, v.scale)


def attention_case(case, prof, device: str) -> tuple[Callable, Callable[[], dict]]:
    """``(run, extras)`` of a case: ``run()`` computes it once and waits for the device (the timed call);
    ``extras()`` (untimed, after the timing) the record's other fields, from the last call's result."""
    n, backend, method, dtype = case
    view = device_view(n, *_shape(prof), dtype, device)
    if backend == "sparse":
        return _sparse_case(method, view, prof, device)
    last = {}
    if backend == "gold":
        from bench.evaluation.gold import layer_gold

        def run():
            last["out"] = layer_gold(view)
            sync(device)

        def extras():
            return {"gold_sparsity": float(last["out"].sparsity().mean()), "float32_why": FLOAT32_WHY["gold"]}
        return run, extras

    def run():
        last["out"] = dense_gpu_attention(method, view.q[0], view.k[0], view.v[0], view.causal, view.scale)
        sync(device)

    def extras():
        out = {"float32_why": FLOAT32_WHY["entmax15"]} if method == "entmax15" else {}
        if method == "adasplash" and n <= prof.gpu_quality_n:
            out["output_error"] = relative_error(last["out"], reference(prof, n, device, dtype))
        return out
    return run, extras


def _sparse_case(name: str, view, prof, device: str):
    """Prediction on the device plus sparse execution of ``name`` (see :func:`attention_case`)."""
    predictor = fitted(name, *_shape(prof))
    n = view.q.shape[2]
    plan = sparse_plan(predictor.predict(view, 0))
    if not plan.supported:
        raise UnsupportedGraph(f"{name}: {plan.reason}")

    def predict():
        graph = predictor.predict(view, 0)
        sync(device)
        return graph

    def run(stats=None):
        out = sparse_entmax_attention(view.q, view.k, view.v, view.lengths, view.causal, view.scale, predict(),
                                      stats=stats)
        sync(device)
        return out

    def extras():
        st = ExecStats.zeros(1, view.q.shape[1])
        out = run(stats=st)  # one more call: the timed ones count nothing
        start = time.perf_counter()
        predict()
        rec = {"sparsity": st.sparsity.mean().item(), "support_sparsity": st.support_sparsity.mean().item(),
               "predict_seconds": time.perf_counter() - start, "float32_why": FLOAT32_WHY["sparse"]}
        if n <= prof.gpu_quality_n:
            rec["output_error"] = relative_error(out[0], reference(prof, n, device))
        return rec
    return run, extras


_WARM: dict = {}


def warm_adasplash(prof, dtype: str, device: str) -> float:
    """Seconds of AdaSplash's first call in ``dtype`` in this process, at ``gpu_warmup_n`` (untimed by the
    benchmark: Triton compiles and autotunes its kernels then, for minutes on a fresh machine)."""
    if dtype not in _WARM:
        view = device_view(prof.gpu_warmup_n, *_shape(prof), dtype, device)
        start = time.perf_counter()
        dense_gpu_attention("adasplash", view.q[0], view.k[0], view.v[0], view.causal, view.scale)
        sync(device)
        _WARM[dtype] = time.perf_counter() - start
    return _WARM[dtype]
