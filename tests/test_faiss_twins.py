"""FAISS twins (predictors/faiss): names, errors, threads, k-means parity, code parity, MiniLM agreement.

The twins must give the torch twins' codes. Where both compute the same float expression with
different kernels, only near-ties can differ; these tests assert exact equality of every code on their
seeded data (lengths 97, 130 and 45, never powers of two) and on real MiniLM heads, and bound the
disagreement by the tie margin on hypothesis-drawn data. GPU cases skip cleanly without one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import predictors
from bench.config.sweeps import PROFILES, family_configs
from bench.data.synthetic import synthetic
from bench.evaluation.gold import compute_gold
from predictors.errors import PredictorError
from predictors.faiss.common import FaissDeviceError, FaissMissingError
from predictors.graphs import CodeGraph, UnionGraph
from predictors.registry import families, parse_name

try:
    import faiss
except ImportError:  # the tests that need it skip; the import-isolation ones still run
    faiss = None

needs_faiss = pytest.mark.skipif(faiss is None, reason="faiss is not installed (pip install faiss-cpu)")
FAST = settings(max_examples=25, deadline=None)
ROOT = Path(__file__).resolve().parents[1]


def gpu_ready() -> bool:
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and torch.cuda.is_available() \
        and faiss.get_num_gpus() > 0


needs_gpu = pytest.mark.skipif(not gpu_ready(), reason="needs faiss-gpu and a CUDA device")


def twins(name, seed=0, **kw):
    return predictors.get(name, seed=seed), predictors.get(name, backend="faiss", seed=seed, **kw)


@functools.cache
def split(length, seed=0, layers=2, heads=3, dim=8):
    """(fit, fit gold, eval) of four ragged synthetic samples, without V."""
    d = dataclasses.replace(synthetic(samples=4, layers=layers, heads=heads, length=length, dim=dim, seed=seed),
                            v=None)
    fit, ev = d.split()
    return fit, compute_gold(fit), ev


def code_graph(graph):
    """The family's own CodeGraph (the first part when window, globals or sinks were ORed in)."""
    return graph.parts[0] if isinstance(graph, UnionGraph) else graph


def assert_same_graphs(a, b, ev):
    for layer in range(ev.num_layers):
        view = ev.layer(layer)
        ga, gb = code_graph(a.predict(view, layer)), code_graph(b.predict(view, layer))
        assert isinstance(ga, CodeGraph) and isinstance(gb, CodeGraph)
        assert (ga.num_codes, ga.matched_rounds) == (gb.num_codes, gb.matched_rounds)
        for x, y in ((ga.q_codes, gb.q_codes), (ga.k_codes, gb.k_codes)):
            assert x.shape == y.shape and x.dtype == y.dtype
            assert torch.equal(x, y), f"layer {layer}: {int((x != y).sum())} of {x.numel()} codes differ"


# -- import isolation and errors ----------------------------------------------------------------------------
@pytest.mark.slow
def test_importing_predictors_and_building_twins_does_not_import_faiss():
    code = ("import sys, predictors, predictors.faiss.common, predictors.faiss.routing, "
            "predictors.faiss.reformer, predictors.faiss.sf_clustering\n"
            "for n in ('routing-raw-k8', 'reformer-raw-b8-h2', 'sf-kmeans-r4-k16-top2'):\n"
            "    predictors.get(n, backend='faiss')\n"
            "assert 'faiss' not in sys.modules, 'faiss was imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_missing_faiss_is_an_error_naming_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    fit, gold, _ = split(45)
    p = predictors.get("routing-raw-k3", backend="faiss")
    with pytest.raises(FaissMissingError, match="pip install faiss-cpu") as err:
        p.fit(fit, gold)
    assert isinstance(err.value, PredictorError)


@pytest.mark.skipif(gpu_ready(), reason="this machine has a usable GPU")
@needs_faiss
@pytest.mark.parametrize("name", ["routing-raw-k8", "reformer-raw-b8-h2", "sf-kmeans-r4-k4-top1"])
def test_cuda_without_gpu_support_is_a_clear_error(name):
    with pytest.raises(FaissDeviceError, match="device='cuda' is not available: .*(faiss|CUDA)"):
        predictors.get(name, backend="faiss", device="cuda")


def test_unknown_device_is_refused():
    with pytest.raises(PredictorError, match="unknown device 'tpu'"):
        predictors.get("routing-raw-k8", backend="faiss", device="tpu")


# -- names and parameters -------------------------------------------------------------------------------------
def sweep_names():
    names = set()
    for family in families("faiss"):  # every registered twin (predictors/faiss/)
        for profile in PROFILES:
            names |= {predictors.get(family, **cfg).name for cfg in family_configs(family, profile)}
    return sorted(names)


@pytest.mark.parametrize("name", sweep_names())
def test_twins_share_family_parameters_and_names(name):
    torch_twin, faiss_twin = twins(name)
    assert faiss_twin.name == torch_twin.name == name
    assert faiss_twin.family == torch_twin.family
    assert faiss_twin.all_params() == torch_twin.all_params()
    assert faiss_twin.values == torch_twin.values
    assert (torch_twin.backend, faiss_twin.backend) == ("torch", "faiss")
    assert parse_name(name, backend="faiss") == parse_name(name)
    assert faiss_twin.flops(97, 32) == torch_twin.flops(97, 32)


def test_device_is_a_keyword_not_a_name_parameter():
    p = predictors.get("routing-raw-k8", backend="faiss", device="cpu")
    assert p.name == "routing-raw-k8" and p.device == "cpu" and "device" not in p.values
    with pytest.raises(TypeError):
        type(p)(0, "cpu")  # keyword only


# -- threads --------------------------------------------------------------------------------------------------
@needs_faiss
def test_thread_pinning_is_scoped_and_restored():
    from predictors.faiss.common import faiss_threads

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        with faiss_threads():
            assert faiss.omp_get_max_threads() == 1
        assert faiss.omp_get_max_threads() == 2
        with pytest.raises(RuntimeError):
            with faiss_threads(1):
                raise RuntimeError("boom")
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)


# -- k-means --------------------------------------------------------------------------------------------------
@needs_faiss
@pytest.mark.parametrize("n, r, k, seed", [(97, 4, 5, 0), (130, 3, 8, 1), (45, 7, 3, 2), (130, 32, 4, 3)])
def test_faiss_kmeans_reproduces_the_torch_kmeans(n, r, k, seed):
    from predictors.faiss.common import faiss_kmeans
    from predictors.kmeans import assign, kmeans

    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(3, n, r, generator=g) + 3.0 * torch.randn(3, 1, r, generator=g) * (torch.arange(n) % 3)[:, None]
    expected = kmeans(x, k, iters=25, seed=seed)
    got, info = faiss_kmeans(x, k, 25, seed)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(assign(x, got, min(2, k)), assign(x, expected, min(2, k)))
    assert bool((info.iterations <= 25).all()) and int(info.empty_fixes.sum()) == 0


@needs_faiss
def test_faiss_kmeans_draws_the_same_seeds_from_a_shared_generator():
    from predictors.faiss.common import faiss_kmeans
    from predictors.kmeans import kmeans

    xs = [torch.randn(2, 61, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for x in xs:  # layer after layer, one generator: the streams must stay in step
        assert torch.allclose(faiss_kmeans(x, 4, 25, g1)[0], kmeans(x, 4, iters=25, seed=g2), atol=1e-5)


def lloyd_reference(x, c, iters):
    """Plain Lloyd in float64 with the torch rule: an empty cluster keeps its centroid."""
    x, c = x.double(), c.double().clone()
    for _ in range(iters):
        lab = torch.cdist(x, c).argmin(-1)
        for j in range(c.shape[0]):
            if bool((lab == j).any()):
                c[j] = x[lab == j].mean(0)
    return c


@needs_faiss
def test_an_empty_cluster_keeps_its_centroid_as_in_the_torch_kmeans():
    from predictors.faiss.common import _clustering_run, faiss_kmeans, flat_index

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(40, 2, generator=g), torch.randn(57, 2, generator=g) + 8.0])[None]
    init = torch.tensor([[[0.0, 0.0], [8.0, 8.0], [100.0, -100.0]]])  # the third one never gets a point
    got, info = faiss_kmeans(x, 3, 10, seed=0, init=init)
    assert torch.equal(got[0, 2], init[0, 2]) and int(info.empty_fixes[0]) >= 1
    assert torch.allclose(got[0], lloyd_reference(x[0], init[0], 10).float(), atol=1e-5)
    # Plain FAISS would have split a cluster to refill the empty one.
    plain, split = _clustering_run(faiss, x[0].numpy(), init[0].numpy(), 10, flat_index("l2", 2))
    assert split == 0 and not np.array_equal(plain[2], init[0, 2].numpy())


@needs_faiss
def test_as_many_points_as_clusters_keeps_the_seeds():
    from predictors.faiss.common import faiss_kmeans
    from predictors.kmeans import kmeans

    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(faiss_kmeans(x, 5, 25, 7)[0], kmeans(x, 5, iters=25, seed=7))
    with pytest.raises(ValueError, match="fewer than k"):
        faiss_kmeans(x, 6, 25, 7)


# -- the twins' codes ---------------------------------------------------------------------------------------------
PARITY_NAMES = ["routing-raw-k3", "routing-proj-k4", "reformer-raw-b6-h3", "reformer-proj-b4-h2",
                "sf-kmeans-r4-k5-top2", "sf-kmeans-r3-shared-k3-top1-w3-g1"]


@needs_faiss
@pytest.mark.parametrize("length", [97, 130, 45])
@pytest.mark.parametrize("name", PARITY_NAMES)
def test_twins_give_identical_codes(name, length):
    fit, gold, ev = split(length, seed=length)
    torch_twin, faiss_twin = twins(name, seed=3)
    torch_twin.fit(fit, gold)
    faiss_twin.fit(fit, gold)
    if hasattr(torch_twin, "centroids"):
        assert torch.allclose(faiss_twin.centroids, torch_twin.centroids, atol=1e-5)
        assert all(int(i.empty_fixes.sum()) == 0 for i in faiss_twin.kmeans_info)
    else:
        assert torch.equal(faiss_twin.rotations, torch_twin.rotations)
    assert_same_graphs(torch_twin, faiss_twin, ev)


@needs_faiss
def test_unfitted_and_mismatched_use_are_errors():
    fit, gold, ev = split(45)
    p = predictors.get("routing-raw-k3", backend="faiss")
    with pytest.raises(PredictorError, match="call fit"):
        p.predict(ev.layer(0), 0)
    p.fit(fit, gold)
    with pytest.raises(PredictorError, match="fitted for 2 layers x 3 heads"):
        p.predict(ev.layer(0), 5)
    with pytest.raises(PredictorError, match="fewer than k"):
        predictors.get("routing-raw-k400", backend="faiss").fit(fit, gold)


@needs_faiss
@FAST
@given(seed=st.integers(0, 2 ** 31 - 1), t=st.integers(2, 70), d=st.integers(2, 12),
       half=st.integers(1, 6), rounds=st.integers(1, 3))
def test_reformer_buckets_agree_up_to_ties(seed, t, d, half, rounds):
    from predictors.faiss.reformer import faiss_buckets
    from predictors.torch.reformer import ReformerLSH

    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(2, 2, t, d, generator=g), dim=-1)
    rot = torch.randn(2, rounds, d, half, generator=g)
    lengths = torch.tensor([t, max(1, t - 5)])
    expected = ReformerLSH.buckets(x, rot, lengths)
    got = faiss_buckets([x], rot, lengths)[0]
    # Where they differ, the top two signed projections must be tied to within float rounding.
    proj = torch.einsum("shtd,hrdc->shtrc", x, rot)
    top2 = torch.cat([proj, -proj], dim=-1).topk(2, dim=-1).values
    tied = (top2[..., 0] - top2[..., 1]) <= 1e-5
    assert bool(((got == expected) | tied).all())


@needs_faiss
@FAST
@given(seed=st.integers(0, 2 ** 31 - 1), t=st.integers(1, 40), k=st.integers(1, 7))
def test_membership_codes_match_the_torch_layout(seed, t, k):
    from predictors.faiss.routing import membership_codes

    member = torch.rand(2, 3, t, k, generator=torch.Generator().manual_seed(seed)) < 0.4
    width = max(1, int(member.sum(-1).max()))
    ref = torch.where(member, torch.arange(k), k).sort(dim=-1).values[..., :width]
    assert torch.equal(membership_codes(member.numpy()), torch.where(ref < k, ref, -1))


@needs_faiss
def test_routing_keeps_exactly_ceil_n_over_k_tokens_per_cluster():
    from predictors.faiss.routing import balanced_codes_faiss

    g = torch.Generator().manual_seed(4)
    x = torch.nn.functional.normalize(torch.randn(2, 3, 45, 6, generator=g), dim=-1)
    mu = torch.randn(3, 4, 6, generator=g)
    lengths = torch.tensor([45, 38])
    codes = balanced_codes_faiss(x, mu, lengths)
    for s, n in enumerate(lengths.tolist()):
        assert bool((codes[s, :, n:] == -1).all())
        for c in range(4):
            kept = (codes[s, :, :n] == c).any(-1).sum(-1)  # [H]
            assert kept.tolist() == [math.ceil(n / 4)] * 3


# -- real data: MiniLM ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    from bench.evaluation.prepared import prepare

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARSEBENCH_CACHE", str(tmp_path_factory.mktemp("minilm-cache")))
        return prepare("minilm", samples=4, length=64)


@needs_faiss
@pytest.mark.parametrize("name", ["routing-raw-k4", "routing-proj-k8", "reformer-raw-b8-h2", "sf-kmeans-r4-k4-top2"])
def test_twins_agree_on_minilm_per_head(minilm, name):
    from bench.evaluation.score import score_predictor

    torch_twin, faiss_twin = twins(name)
    a, b = score_predictor(minilm, torch_twin), score_predictor(minilm, faiss_twin)
    assert b["backend"] == "faiss" and a["name"] == b["name"]
    for metric in ("recall", "sparsity"):
        diff = np.abs(np.array(a["per_head"][metric], dtype=float) - np.array(b["per_head"][metric], dtype=float))
        assert diff.shape == (6, 12) and np.nanmax(diff) <= 0.005, f"{metric}: max per-head gap {np.nanmax(diff)}"
    assert_same_graphs(torch_twin, faiss_twin, minilm.eval)  # in fact identical


# -- GPU --------------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", ["routing-raw-k3", "reformer-raw-b6-h3", "sf-kmeans-r4-k5-top2"])
def test_gpu_twins_give_the_cpu_codes(name):
    from predictors.faiss.common import flat_index, gpu_resources

    fit, gold, ev = split(97, seed=97)
    cpu = predictors.get(name, backend="faiss", seed=3).fit(fit, gold)
    gpu = predictors.get(name, backend="faiss", seed=3, device="cuda").fit(fit, gold)
    if hasattr(cpu, "centroids"):
        assert torch.allclose(gpu.centroids, cpu.centroids, atol=1e-4)
    # One process-wide resources object, one index per (metric, dim), reused.
    assert gpu_resources() is gpu_resources()
    assert flat_index("l2", 4, "cuda") is flat_index("l2", 4, "cuda")
    for layer in range(ev.num_layers):
        a, b = cpu.predict(ev.layer(layer), layer), gpu.predict(ev.layer(layer), layer)
        for x, y in ((a.q_codes, b.q_codes), (a.k_codes, b.k_codes)):
            # GPU kernels round differently: only near-ties may differ.
            assert x.shape == y.shape and (x == y).float().mean() > 0.99
