"""On a CUDA GPU (``pytest -m gpu``; each test skips without one, saying why): the FAISS-GPU twins give the
torch twins' codes with both on the GPU, their k-means agree, and the paths the GPU benchmark times
(``bench/suite/bench_gpu.py``) agree with the CPU.

``bench/suite/gpu_run.sh`` runs these first on a lent GPU machine. AdaSplash is not tested here: its first
call compiles for minutes; the benchmark records its output error against dense entmax15 instead
(``output_error`` of its records).
"""

from __future__ import annotations

import pytest
import torch

import predictors
from bench.data.synthetic import synthetic
from bench.evaluation.gold import compute_gold, layer_gold
from bench.evaluation.gpu_twins import faiss_gpu_problem, kmeans_at_n, own_codes
from bench.execution.gpu_attention import CudaPeak, dense_gpu_attention, entmax15_blocked, relative_error
from bench.execution.sparse_exec import sparse_entmax_attention
from bench.execution.timing import to_device

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the GPU paths are "
                                                                       "not exercised")


def _faiss_gpu_reason() -> str:
    return faiss_gpu_problem() or ""


needs_faiss_gpu = pytest.mark.skipif(bool(_faiss_gpu_reason()), reason=f"FAISS-GPU: {_faiss_gpu_reason()}")


def split(length=97, seed=97, layers=2, heads=3, dim=8, causal=False):
    """(fit, fit gold, eval) of four ragged synthetic samples (lengths 97, 90, 83, 76: no powers of two)."""
    d = synthetic(samples=4, layers=layers, heads=heads, length=length, dim=dim, seed=seed, causal=causal)
    fit, ev = d.split()
    return fit, compute_gold(fit), ev


@needs_faiss_gpu
@pytest.mark.parametrize("name", ["sf-kmeans-r4-k5-top2", "sf-kmeans-r4-k8-top1", "routing-raw-k3",
                                  "reformer-raw-b6-h3"])
def test_faiss_gpu_twins_give_the_torch_gpu_twins_codes(name):
    fit, gold, ev = split()
    torch_twin = predictors.get(name, seed=3).fit(fit, gold)
    faiss_twin = predictors.get(name, backend="faiss", seed=3, device="cuda").fit(fit, gold)
    if hasattr(torch_twin, "centroids"):
        assert torch.allclose(faiss_twin.centroids, torch_twin.centroids, atol=1e-4)
    for layer in range(ev.num_layers):
        view = to_device(ev.layer(layer), "cuda")
        a, b = own_codes(torch_twin.predict(view, layer)), own_codes(faiss_twin.predict(view, layer))
        for x, y in zip(a, b):
            assert x.shape == y.shape and torch.equal(x, y), \
                f"{name} layer {layer}: {int((x != y).sum())} of {x.numel()} codes differ"


@needs_faiss_gpu
def test_kmeans_on_the_gpu_agrees_with_faiss_gpu():
    fit, gold, ev = split(length=130, dim=16)
    twin = predictors.get("sf-kmeans-r4-k8-top1", seed=0).fit(fit, gold)
    view = to_device(ev.layer(0), "cuda")  # k-means of the first eval sample's projected queries and keys
    times, diff = kmeans_at_n(twin, view, "cuda", rounds=1)
    assert diff < 1e-4 and len(times["torch"]) == len(times["faiss"]) == 1


@needs_cuda
@pytest.mark.parametrize("causal", [False, True])
def test_gold_on_the_gpu_is_the_cpu_gold(causal):
    view = synthetic(samples=2, layers=1, heads=3, length=130, dim=16, seed=5, causal=causal).layer(0)
    cpu, gpu = layer_gold(view), layer_gold(to_device(view, "cuda"))
    # GPU products round differently: a key at the support's edge may flip, nothing more.
    assert (gpu.counts == cpu.counts).float().mean() > 0.995
    assert abs(int(gpu.counts.sum()) - int(cpu.counts.sum())) <= 0.005 * int(cpu.counts.sum())


@needs_cuda
@pytest.mark.parametrize("causal", [False, True])
def test_dense_entmax15_on_the_gpu_matches_the_cpu(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 130, 32, generator=g) for _ in range(3))
    cpu = entmax15_blocked(q, k, v, causal, 0.3, block=48)
    gpu = entmax15_blocked(q.cuda(), k.cuda(), v.cuda(), causal, 0.3, block=48)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sdpa_in_half_precision_is_close_to_float32(dtype):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(16, 1024, 64, generator=g).cuda() for _ in range(3))
    ref = dense_gpu_attention("softmax-sdpa", q, k, v, True, 0.125)
    half = dense_gpu_attention("softmax-sdpa", q.to(dtype), k.to(dtype), v.to(dtype), True, 0.125)
    assert half.dtype == dtype and relative_error(half, ref) < 1e-2


@needs_cuda
def test_sparse_execution_of_a_gpu_prediction_matches_the_cpu():
    fit, gold, ev = split(length=130, dim=16, causal=True)
    p = predictors.get("sf-kmeans-r4-k4-top1", seed=0).fit(fit, gold)
    view = ev.layer(0)
    gview = to_device(view, "cuda")
    graph_cpu, graph_gpu = p.predict(view, 0), p.predict(gview, 0)
    for x, y in zip(own_codes(graph_cpu), own_codes(graph_gpu)):
        assert torch.equal(x, y)
    cpu = sparse_entmax_attention(view.q, view.k, view.v, view.lengths, True, view.scale, graph_cpu)
    gpu = sparse_entmax_attention(gview.q, gview.k, gview.v, view.lengths, True, view.scale, graph_gpu)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)


@needs_cuda
def test_cuda_peak_counts_what_a_call_allocates():
    peak = CudaPeak("cuda").start()
    x = torch.empty(1 << 20, dtype=torch.float32, device="cuda")  # 4 MiB
    del x
    assert peak.stop() >= 4 << 20
