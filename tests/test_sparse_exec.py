"""bench.execution.sparse_exec: restricted entmax attention, masked (reference) and sparse (no n x n tensor).

Hand-built cases with known answers for the reference; the sparse execution against it on awkward
lengths (97, 130), causal and bidirectional, ragged samples, every part type and their unions, real
predictors' graphs, random graphs (hypothesis); dense references against each other; a CUDA case that
skips on the CPU.
"""

from __future__ import annotations

import math

import pytest
import torch
from entmax import entmax15
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import predictors
from bench.data.entmax_lm import entmax_attention
from bench.data.synthetic import synthetic
from bench.errors import BenchError
from bench.evaluation.prepared import gold_for
from bench.execution.dense import DENSE_METHODS, dense_attention
from bench.execution.exec_stats import ExecStats
from bench.execution.masked import masked_entmax_attention
from bench.execution.plan import STRATEGIES, SparsePlan, Unsupported, UnsupportedGraph, sparse_plan, supports
from bench.execution.row_entmax import entmax15_rows
from bench.execution.sparse_exec import graph_attention, sparse_entmax_attention
from predictors.entmax import row_entmax
from predictors.graphs import BlockGraph, CodeGraph, DistanceGraph, GlobalGraph, KeyListGraph, UnionGraph, WindowGraph

ATOL = 2e-5


def data(s=3, h=2, t=97, d=8, dv=5, seed=0, ragged=True, qscale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(s, h, t, d, generator=g) * qscale
    k = torch.randn(s, h, t, d, generator=g)
    v = torch.randn(s, h, t, dv, generator=g)
    lengths = torch.tensor([t - 29 * i if ragged else t for i in range(s)]).clamp(min=2)
    return q, k, v, lengths


def codes(s, h, t, r, c, seed, none=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1 if none else 0, c, (s, h, t, r), generator=g)


def graphs(s, h, t, seed=0):
    """Every part type and union the sparse execution knows, for samples of up to t tokens."""
    cg = lambda r, c, matched, sd: CodeGraph(codes(s, h, t, r, c, sd), codes(s, h, t, r, c, sd + 1), c, matched)
    gen = torch.Generator().manual_seed(seed + 7)
    keys = torch.randint(-1, t + 3, (s, h, t, 4), generator=gen)  # -1, out-of-range and repeats included
    glob = GlobalGraph((0, -1), h, per_head=torch.tensor([[3, -1], [7, 2]])[:h],
                       per_head_from_end=torch.tensor([[1, -1], [0, 4]])[:h])
    return {
        "code-top1": cg(1, 6, False, seed),
        "code-top2": cg(2, 5, False, seed),
        "code-top3-many": cg(3, 70, False, seed),  # more than 63 codes: two bit words
        "code-rounds": cg(3, 4, True, seed),
        # Balanced routing keeps a token in a varying number of clusters: query and key widths differ.
        "code-uneven": CodeGraph(codes(s, h, t, 1, 5, seed), codes(s, h, t, 3, 5, seed + 1), 5, False),
        "code-uneven2": CodeGraph(codes(s, h, t, 3, 6, seed), codes(s, h, t, 2, 6, seed + 1), 6, False),
        "window": WindowGraph(5, h),
        "globals": glob,
        "sinks-only": GlobalGraph((), h, rows=False, per_head=torch.tensor([[0, 5], [1, -1]])[:h]),
        "keys": KeyListGraph(keys),
        "union": cg(1, 6, False, seed) | WindowGraph(3, h) | glob | KeyListGraph(keys),
        "union-top2": cg(2, 4, False, seed) | WindowGraph(7, h) | GlobalGraph((0,), h),
        "two-code-graphs": cg(1, 3, False, seed) | cg(2, 4, True, seed + 5) | WindowGraph(3, h),
        "empty": WindowGraph(0, h),
    }


def check_equal(q, k, v, lengths, causal, graph, alpha=1.5, chunk=8, scale=0.5):
    s_count, h = q.shape[:2]
    st_m, st_s = ExecStats.zeros(s_count, h), ExecStats.zeros(s_count, h)
    ref = masked_entmax_attention(q, k, v, lengths, causal, scale, graph, alpha, stats=st_m)
    out = sparse_entmax_attention(q, k, v, lengths, causal, scale, graph, alpha, chunk=chunk, stats=st_s)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= ATOL
    for name in ("pred_pairs", "valid_pairs", "empty_rows", "valid_rows"):
        assert torch.equal(getattr(st_m, name), getattr(st_s, name)), name
    # Supports agree up to entries at the threshold's float noise.
    assert (st_m.support_pairs - st_s.support_pairs).abs().max() <= 2
    return ref, st_m


# ---------------------------------------------------------------- the reference, hand-built


@pytest.mark.parametrize("causal", [False, True])
def test_full_graph_is_dense_entmax_attention(causal):
    q, k, v, lengths = data(t=45)
    out = masked_entmax_attention(q, k, v, lengths, causal, 0.5, None)
    for s, n in enumerate(lengths.tolist()):
        if causal:
            want = entmax_attention(q[s:s + 1, :, :n], k[s:s + 1, :, :n], v[s:s + 1, :, :n], torch.tensor([n]), 0.5)[0]
        else:
            want = entmax15(0.5 * q[s, :, :n] @ k[s, :, :n].transpose(-1, -2), dim=-1) @ v[s, :, :n]
        assert torch.allclose(out[s, :, :n], want, atol=1e-5)
        assert torch.all(out[s, :, n:] == 0)  # padding rows are zero


@pytest.mark.parametrize("causal", [False, True])
def test_self_only_window_returns_the_values(causal):
    q, k, v, lengths = data(t=33)
    for fn in (masked_entmax_attention, sparse_entmax_attention):
        out = fn(q, k, v, lengths, causal, 0.5, WindowGraph(1, 2))
        for s, n in enumerate(lengths.tolist()):
            assert torch.allclose(out[s, :, :n], v[s, :, :n], atol=1e-6)


def test_queries_without_keys_get_zero_output_and_are_counted():
    q, k, v, lengths = data(s=1, h=1, t=20, ragged=False)
    qc = torch.zeros(1, 1, 20, 1, dtype=torch.long)
    qc[0, 0, :5] = 1  # code 1: no key has it
    g = CodeGraph(qc, torch.zeros(1, 1, 20, 1, dtype=torch.long), 2)
    for fn in (masked_entmax_attention, sparse_entmax_attention):
        st = ExecStats.zeros(1, 1)
        out = fn(q, k, v, lengths, False, 0.5, g, stats=st)
        assert out[0, 0, :5].abs().max() == 0 and out[0, 0, 5:].abs().min() > 0
        assert st.empty_rows.item() == 5 and st.pred_pairs.item() == 15 * 20 and st.valid_rows.item() == 20
    st = ExecStats.zeros(1, 1)
    assert masked_entmax_attention(q, k, v, lengths, True, 0.5, WindowGraph(0, 1), stats=st).abs().max() == 0
    assert st.sparsity.item() == 1.0 and st.empty_rows.item() == 20


@pytest.mark.parametrize("matched", [False, True])
def test_several_codes_and_no_shared_code_anywhere_give_zero_rows(matched):
    # Three codes per query, none held by any key (queries 0-2, keys 3-5): the code-candidates path has no
    # candidate in any row; every row is empty and its output 0, as in the reference.
    q, k, v, lengths = data(s=1, h=2, t=2, ragged=False)
    qc = torch.tensor([0, 1, 2]).expand(1, 2, 2, 3)
    g = CodeGraph(qc, qc + 3, 6, matched)
    for fn in (masked_entmax_attention, sparse_entmax_attention):
        st = ExecStats.zeros(1, 2)
        out = fn(q, k, v, lengths, False, 0.5, g, stats=st)
        assert out.abs().max() == 0 and st.empty_rows.sum().item() == 4 and st.pred_pairs.sum().item() == 0


def test_restricted_probabilities_are_entmax_over_exactly_the_predicted_pairs():
    # One query, keys {0, 2} predicted: the output is entmax15 over those two scores only.
    q, k, v, lengths = data(s=1, h=1, t=4, ragged=False)
    keys = torch.full((1, 1, 4, 2), -1, dtype=torch.long)
    keys[0, 0, 1] = torch.tensor([0, 2])
    out = masked_entmax_attention(q, k, v, lengths, False, 1.0, KeyListGraph(keys))
    p = entmax15(torch.stack([q[0, 0, 1] @ k[0, 0, 0], q[0, 0, 1] @ k[0, 0, 2]]), dim=-1)
    assert torch.allclose(out[0, 0, 1], p[0] * v[0, 0, 0] + p[1] * v[0, 0, 2], atol=1e-6)
    assert out[0, 0, [0, 2, 3]].abs().max() == 0


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(1, 30), m=st.integers(1, 300), spread=st.sampled_from([1e-3, 0.1, 1.0, 10.0, 100.0]),
       keep=st.floats(0.0, 1.0), ties=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_fast_entmax_rows_equal_the_library(rows, m, spread, keep, ties, seed):
    """The sparse execution's own 1.5-entmax (candidates only, widened for unsure rows), which the output
    error of bench.evaluation.metrics uses too: bit for bit row_entmax (entmax15's sort-based formula on the
    masked row), ties included; and close to the library's entmax15 on the allowed entries."""
    from entmax import entmax15

    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, m, generator=g) * spread
    if ties:
        scores = scores.round()
    allowed = torch.rand(rows, m, generator=g) < keep
    want = row_entmax(scores, allowed)
    got = entmax15_rows(scores.clone(), allowed)
    assert torch.equal(got, want)
    some = allowed.any(-1)
    library = entmax15(scores[some].masked_fill(~allowed[some], float("-inf")), dim=-1)
    assert torch.allclose(got[some], library, atol=1e-6)
    assert torch.all(got[~allowed] == 0) and torch.all(got[~allowed.any(-1)] == 0)
    assert torch.allclose(got.sum(-1)[allowed.any(-1)], torch.ones(int(allowed.any(-1).sum())), atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 40), m=st.integers(2, 400), spread=st.sampled_from([1e-3, 0.1, 1.0, 3.0, 30.0]),
       keep=st.floats(0.0, 1.0), ties=st.booleans(), k=st.sampled_from([1, 4, 16, 32]),
       seed=st.integers(0, 2**31 - 1))
def test_candidate_values_give_topks_threshold_bit_for_bit(rows, m, spread, keep, ties, k, seed):
    """top_values keeps only the entries at or above CANDIDATE_FLOOR: the threshold and the support count
    of the sort-based formula are those of topk's values, the same floats (torch.equal)."""
    from bench.execution.row_entmax import CANDIDATE_FLOOR, top_values
    from predictors.entmax import threshold15
    from predictors.masking import MASK_GAP

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, m, generator=g) * spread
    if ties:
        x = x.round()
    x = torch.where(torch.rand(rows, m, generator=g) < keep, x, -MASK_GAP)  # banned, as the blocks give them
    z = (x - x.amax(-1, keepdim=True)) / 2
    k = min(k, m - 1)
    want, got = z.topk(k, dim=-1).values, top_values(z, k)
    for a, b in zip(threshold15(want), threshold15(got)):
        assert torch.equal(a, b)
    real = want >= CANDIDATE_FLOOR
    assert torch.equal(got[real], want[real]) and torch.all(got[~real] == -MASK_GAP / 2)


def test_rows_of_padding_are_not_widened(monkeypatch):
    """A row with no allowed entry (a padding slot of a code block) looks like a full support: it is
    all zeros and never sorted again."""
    import predictors.entmax
    from bench.execution import row_entmax as rows_module

    monkeypatch.setattr(predictors.entmax, "COMPILED", False)  # the PyTorch path (the kernel never sorts rows)
    calls = []
    real = rows_module.top_values
    monkeypatch.setattr(rows_module, "top_values", lambda z, k: calls.append(z.shape[0]) or real(z, k))
    scores = torch.randn(6, 200, generator=torch.Generator().manual_seed(0)) * 10  # small supports: no real widening
    allowed = torch.ones(6, 200, dtype=torch.bool)
    allowed[[1, 4]] = False
    p = entmax15_rows(scores.clone(), allowed)
    assert calls == [6] and torch.all(p[[1, 4]] == 0)
    assert torch.allclose(p[[0, 2, 3, 5]], row_entmax(scores, allowed)[[0, 2, 3, 5]], atol=1e-6)


@pytest.mark.parametrize("name", list(graphs(2, 2, 8)))
@pytest.mark.parametrize("causal", [False, True])
def test_kernel_path_is_the_product_path(monkeypatch, name, causal):
    """On the CPU a row block's P V is taken over the support only (the compiled kernel); elsewhere the
    probabilities multiply the gathered values. Both give the same attention and the same counts."""
    import predictors.entmax

    q, k, v, lengths = data(t=60, seed=11)
    graph = graphs(3, 2, 60, seed=11)[name]
    st_kernel, st_torch = ExecStats.zeros(3, 2), ExecStats.zeros(3, 2)
    got = sparse_entmax_attention(q, k, v, lengths, causal, 0.5, graph, chunk=8, stats=st_kernel)
    monkeypatch.setattr(predictors.entmax, "COMPILED", False)
    want = sparse_entmax_attention(q, k, v, lengths, causal, 0.5, graph, chunk=8, stats=st_torch)
    assert (got - want).abs().max() <= 1e-6
    for field in ("pred_pairs", "valid_pairs", "empty_rows", "valid_rows", "support_pairs"):
        assert torch.equal(getattr(st_kernel, field), getattr(st_torch, field)), field


@pytest.mark.parametrize("piece", [1, 300])
def test_row_blocks_cut_into_pieces_give_the_same_attention(monkeypatch, piece):
    """Groups of code blocks cut into pieces of at most `piece` entries (one chunk at least, each padded
    to its own widest code): the same restricted attention and counts as the masked reference."""
    from bench.execution import code_blocks

    monkeypatch.setattr(code_blocks, "MAX_PIECE", piece)
    q, k, v, lengths = data(t=130, seed=6)
    for name in ("code-top1", "union"):
        check_equal(q, k, v, lengths, False, graphs(3, 2, 130, seed=6)[name])
    table = code_blocks.CodeTable(graphs(3, 2, 130, seed=6)["code-top1"], 0, 130, q.device)
    rows = torch.arange(2 * 130)
    qf, kf = q[0, :, :130].reshape(260, -1), k[0, :, :130].reshape(260, -1)
    blocks = code_blocks.CodeBlocks(table, rows, qf, kf, v[0, :, :130].reshape(260, -1), 130, 0.5, False, 8, 1.25)
    for g in blocks.groups:
        assert g.nch == 1 or g.nch * g.chunk * g.w <= piece
        assert g.w == int(table.kcnt[g.chunk_code].max())


# ---------------------------------------------------------------- sparse == masked


@pytest.mark.parametrize("t", [97, 130])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", list(graphs(1, 2, 8)))
def test_sparse_equals_masked(name, causal, t):
    q, k, v, lengths = data(t=t, seed=t)
    check_equal(q, k, v, lengths, causal, graphs(3, 2, t, seed=t)[name])


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunk_size_does_not_change_the_result(chunk):
    q, k, v, lengths = data(t=97, seed=3)
    check_equal(q, k, v, lengths, True, graphs(3, 2, 97, seed=3)["union-top2"], chunk=chunk)


def test_widened_candidates_when_the_support_is_large():
    # Nearly equal scores: supports span most keys, beyond the partial sort's first guess.
    q, k, v, lengths = data(t=130, seed=4, qscale=1e-3)
    _, st = check_equal(q, k, v, lengths, False, graphs(3, 2, 130, seed=4)["union-top2"])
    assert st.support_pairs.sum() > 0.9 * st.pred_pairs.sum()


@pytest.mark.parametrize("name", ["code-top1", "union", "keys", "globals"])
def test_other_alpha(name):
    q, k, v, lengths = data(t=60, seed=5)
    check_equal(q, k, v, lengths, True, graphs(3, 2, 60, seed=5)[name], alpha=1.3)


@pytest.mark.parametrize("name", ["code-top2", "code-rounds", "union-top2", "two-code-graphs"])
def test_several_codes_per_query_need_alpha_15(name):
    # Their exact threshold is 1.5-entmax's: at another alpha the plan says so, and sparse execution
    # raises instead of computing the masked reference behind the caller's back.
    q, k, v, lengths = data(t=60, seed=5)
    graph = graphs(3, 2, 60, seed=5)[name]
    assert sparse_plan(graph).strategy == "code-candidates"
    plan = sparse_plan(graph, alpha=1.3)
    assert isinstance(plan, Unsupported) and not plan.supported and not supports(graph, alpha=1.3)
    assert plan.graph_type == "CodeGraph" and "CodeGraph" in plan.reason and "alpha = 1.3" in plan.reason
    with pytest.raises(UnsupportedGraph, match="needs alpha = 1.5"):
        sparse_entmax_attention(q, k, v, lengths, True, 0.5, graph, alpha=1.3)
    # The caller may still ask for the reference, explicitly.
    auto = graph_attention(q, k, v, lengths, True, 0.5, graph, alpha=1.3)
    assert torch.equal(auto, masked_entmax_attention(q, k, v, lengths, True, 0.5, graph, alpha=1.3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.integers(2, 40), r=st.integers(1, 3), c=st.integers(1, 9), matched=st.booleans(), causal=st.booleans(),
       w=st.integers(0, 6), glob=st.booleans(), chunk=st.integers(1, 9), seed=st.integers(0, 2**31 - 1))
def test_sparse_equals_masked_on_random_graphs(t, r, c, matched, causal, w, glob, chunk, seed):
    s, h = 2, 3
    q, k, v, lengths = data(s=s, h=h, t=t, seed=seed % 1000, ragged=False)
    lengths[1] = max(2, t // 2)
    g = CodeGraph(codes(s, h, t, r, c, seed), codes(s, h, t, r, c, seed + 1), c, matched) | WindowGraph(w, h)
    if glob:
        g = g | GlobalGraph((-1,), h, rows=bool(seed % 2))
    check_equal(q, k, v, lengths, causal, g, chunk=chunk)


@pytest.mark.parametrize("name,causal", [("sf-kmeans-r4-k4-top1-w3-g1", False), ("sf-kmeans-r4-k4-top2", True),
                                         ("routing-raw-k4", False), ("routing-raw-k3", True),
                                         ("reformer-raw-b4-h2", True),
                                         ("bigbird-r2-w3-g2", False), ("longformer-n2-w3", True),
                                         ("sf-quant-r4-b4", False), ("window-w5-g1-s2", True)])
def test_real_predictor_graphs(name, causal):
    data_ = synthetic(samples=4, layers=1, heads=3, length=97, dim=8, causal=causal, seed=2)
    fit, ev = data_.split()
    p = predictors.get(name, seed=0).fit(fit, gold_for(fit))
    view = ev.layer(0)
    graph = p.predict(view, 0)
    assert supports(graph)
    check_equal(view.q, view.k, view.v, view.lengths, causal, graph, scale=view.scale)


# ---------------------------------------------------------------- what sparse execution never builds


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("graph", ["window", "code"])
def test_no_n_by_n_tensor(graph):
    n, h = 1024, 2
    q, k, v, lengths = data(s=1, h=h, t=n, ragged=False)
    g = (WindowGraph(9, h) | GlobalGraph((0,), h) if graph == "window"
         else CodeGraph(codes(1, h, n, 1, 32, 0, none=False), codes(1, h, n, 1, 32, 1, none=False), 32))
    with LargestTensor() as mode:
        sparse_entmax_attention(q, k, v, lengths, False, 0.5, g)
    assert mode.largest < n * n / 4  # one n x n score tensor of one head would be n * n
    with LargestTensor() as mode:
        masked_entmax_attention(q, k, v, lengths, False, 0.5, g)
    assert mode.largest >= h * 256 * n  # the reference does build query blocks of full rows


# ---------------------------------------------------------------- errors, dispatch, dense references


def test_unsupported_graphs_and_dispatch():
    q, k, v, lengths = data(s=1, h=2, t=30)
    dist = DistanceGraph(torch.randn(1, 2, 30, 2), torch.randn(1, 2, 30, 2), 1.0)
    blocks = BlockGraph(torch.ones(1, 2, 2, 2, dtype=torch.bool), 16)
    for g in (dist, blocks, UnionGraph([WindowGraph(3, 2), dist])):
        assert not supports(g)
        plan = sparse_plan(g)
        assert isinstance(plan, Unsupported) and not plan.supported
        assert plan.graph_type in ("DistanceGraph", "BlockGraph") and plan.graph_type in plan.reason
        with pytest.raises(UnsupportedGraph, match="not (DistanceGraph|BlockGraph)"):
            sparse_entmax_attention(q, k, v, lengths, False, 0.5, g)
        auto = graph_attention(q, k, v, lengths, False, 0.5, g)
        assert torch.equal(auto, masked_entmax_attention(q, k, v, lengths, False, 0.5, g))
    with pytest.raises(BenchError, match="unknown method"):
        graph_attention(q, k, v, lengths, False, 0.5, dist, method="fast")
    with pytest.raises(BenchError, match="graph has 3 heads"):
        sparse_entmax_attention(q, k, v, lengths, False, 0.5, WindowGraph(3, 3))
    with pytest.raises(BenchError, match="lengths must be"):
        masked_entmax_attention(q, k, v, torch.tensor([31]), False, 0.5, None)


def test_the_plan_is_explicit_for_every_graph():
    # Each supported graph maps to one named strategy; an unsupported one to a reason naming its type.
    want = {"window": "rows", "globals": "rows", "sinks-only": "rows", "keys": "rows", "empty": "rows",
            "code-top1": "code-blocks", "union": "code-blocks", "code-uneven": "code-blocks"}
    for name, graph in graphs(1, 2, 8).items():
        plan = sparse_plan(graph)
        assert isinstance(plan, SparsePlan) and plan.supported and plan.strategy in STRATEGIES, name
        assert plan.strategy == want.get(name, "code-candidates"), name
    blocks = BlockGraph(torch.ones(1, 2, 1, 1, dtype=torch.bool), 8)
    nested = UnionGraph([WindowGraph(3, 2), UnionGraph([GlobalGraph((0,), 2), blocks])])
    plan = sparse_plan(nested)
    assert not plan.supported and plan.graph_type == "BlockGraph"
    assert plan.reason == ("sparse execution supports CodeGraph, KeyListGraph, WindowGraph, GlobalGraph and their "
                           "unions, not BlockGraph (a part of a UnionGraph)")


@pytest.mark.parametrize("causal", [False, True])
def test_dense_references_agree(causal):
    q, k, v, _ = data(s=1, h=3, t=130, ragged=False)
    out = {m: dense_attention(q[0], k[0], v[0], causal, 0.3, m) for m in DENSE_METHODS}
    ref = masked_entmax_attention(q, k, v, torch.tensor([130]), causal, 0.3, None)[0]
    for m in ("entmax15-topk", "entmax15-sort"):
        assert torch.allclose(out[m], ref, atol=1e-5)
    assert torch.allclose(out["entmax-bisect"], ref, atol=1e-3)
    scores = 0.3 * q[0] @ k[0].transpose(-1, -2)
    if causal:
        scores = scores.masked_fill(torch.ones(130, 130, dtype=torch.bool).triu(1), -math.inf)
    soft = torch.softmax(scores, -1) @ v[0]
    assert torch.allclose(out["softmax-sdpa"], soft, atol=1e-5)
    with pytest.raises(BenchError, match="unknown dense method"):
        dense_attention(q[0], k[0], v[0], causal, 0.3, "flash")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the GPU path is not exercised")
def test_cuda_matches_cpu():  # pragma: no cover - CPU-only CI
    q, k, v, lengths = data(t=130)
    g = graphs(3, 2, 130)["union"]
    cpu = sparse_entmax_attention(q, k, v, lengths, True, 0.5, g)
    gpu = sparse_entmax_attention(q.cuda(), k.cuda(), v.cuda(), lengths, True, 0.5, g)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
