"""Every compact predicted graph, stored as tensors + a JSON spec and read back, gives identical masks.

Hand-built graphs on three samples of awkward lengths (97, 130, 45; T = 130), every block compared;
a completeness test makes a new graph class fail here until it has a case.
"""

import importlib
import json
import pkgutil

import pytest
import torch

import predictors
from bench.errors import BenchError
from bench.results.graph_store import graphs_path, read_graphs, write_graphs_atomic
from predictors.data import AttentionData, LayerView
from predictors.errors import PredictorError
from predictors.graph_state import graph_from_state, graph_to_state
from predictors.graphs import (
    BlockGraph,
    CodeGraph,
    DistanceGraph,
    FunctionGraph,
    GlobalGraph,
    KeyListGraph,
    PairGraph,
    PredictedGraph,
    UnionGraph,
    WindowGraph,
)
from predictors.torch.fixed import FixedRule
from predictors.torch.minference import VerticalSlashGraph
from predictors.torch.oracle import RankThresholdGraph, rank_cuts
from predictors.torch.quest import PageGraph
from predictors.torch.simhash import HammingGraph

LENGTHS = (97, 130, 45)
S, H, T, D = 3, 3, 130, 8


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def codes(r, c, seed):
    x = torch.randint(-1, c, (S, H, T, r), generator=gen(seed))
    return x


def qk(seed=5):
    return (torch.randn(S, H, T, D, generator=gen(seed)), torch.randn(S, H, T, D, generator=gen(seed + 1)))


def pair_graph():
    pairs = []
    for s, n in enumerate(LENGTHS):
        keep = torch.rand(H, n * n, generator=gen(s)) < 0.1
        pairs.append([keep[h].nonzero().flatten() for h in range(H)])
    return PairGraph(pairs, torch.tensor(LENGTHS))


def rank_graph(rank, causal):
    q, k = qk(11)
    view = LayerView(q=q, k=k, v=None, lengths=torch.tensor(LENGTHS), causal=causal, scale=0.3, alpha=1.5)
    thr, cuts = rank_cuts(view, torch.tensor([500, 900, 0]), rank)
    return RankThresholdGraph(q, k, thr, cuts, 0.3, 1.5, causal, rank)


def cases() -> dict:
    q, k = qk()
    blocks = -(-T // 16)
    per_head = torch.tensor([[0, 50, -1], [96, -1, -1], [129, 44, 3]])
    return {
        "window": WindowGraph(7, H),
        "window-empty": WindowGraph(0, H),
        "globals": GlobalGraph((0, -1, 100), H),
        "globals-per-head": GlobalGraph((3,), H, rows=False, per_head=per_head, per_head_from_end=per_head.flip(0)),
        "globals-no-columns": GlobalGraph((), H, rows=False, per_head=torch.empty(H, 0, dtype=torch.int64)),
        "codes-matched": CodeGraph(codes(2, 5, 1), codes(2, 5, 2), 5, matched_rounds=True),
        "codes-sets": CodeGraph(codes(3, 4, 3), codes(3, 4, 4), 4, matched_rounds=False),
        "distance-l2": DistanceGraph(q[..., :3], k[..., :3], 2.5),
        "distance-cosine": DistanceGraph(q.half(), k.half(), 0.7, metric="cosine"),
        "keys": KeyListGraph(torch.randint(-1, T + 3, (S, H, T, 6), generator=gen(7))),
        "blocks": BlockGraph(torch.rand(S, H, blocks, blocks, generator=gen(8)) < 0.3, 16),
        "function": FunctionGraph(FixedRule(8, 2), H, name="fixed-l8-c2"),
        "pairs": pair_graph(),
        "vertical-slash": VerticalSlashGraph(torch.randint(-1, T, (S, H, 5), generator=gen(9)),
                                             torch.randint(-T + 1, T, (S, H, 4), generator=gen(10)),
                                             torch.rand(S, H, 4, generator=gen(12)) < 0.7),
        "rank-score": rank_graph("score", causal=False),
        "rank-margin": rank_graph("margin", causal=True),
        "hamming": HammingGraph(torch.rand(S, H, T, 2, 7, generator=gen(13)) < 0.5,
                                torch.rand(S, H, T, 2, 7, generator=gen(14)) < 0.5,
                                torch.randint(0, 3, (S, H, T, 2), generator=gen(15))),
        "pages": PageGraph(torch.randint(-1, 9, (S, H, T, 3), generator=gen(16)), 16),
        "union": WindowGraph(3, H) | GlobalGraph((0,), H) | CodeGraph(codes(1, 6, 17), codes(1, 6, 18), 6),
        "union-nested": UnionGraph([UnionGraph([WindowGraph(5, H), pair_graph()]), PageGraph(
            torch.randint(-1, 4, (S, H, T, 2), generator=gen(19)), 32)]),
    }


def assert_same_masks(a: PredictedGraph, b: PredictedGraph, block: int = 32) -> None:
    for s, n in enumerate(LENGTHS):
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            ma, mb = a.block_mask(s, i0, i1, n), b.block_mask(s, i0, i1, n)
            assert ma.shape == (H, i1 - i0, n) and torch.equal(ma, mb), (s, i0)


def through_json(graph, shared=None):
    tensors, spec = graph.to_state("g", shared=shared)
    assert all(k.startswith("g") for k in tensors)
    return graph_from_state(dict(tensors), json.loads(json.dumps(spec)), shared=shared)


@pytest.mark.parametrize("name", sorted(cases()))
def test_round_trip_gives_identical_masks_on_every_block(name):
    graph = cases()[name]
    back = through_json(graph)
    assert type(back) is type(graph)
    assert_same_masks(graph, back)
    assert_same_masks(graph, back, block=T)


def test_round_trip_restores_fields_exactly():
    g = cases()["globals-per-head"]
    back = through_json(g)
    assert back.positions == (3,) and back.rows is False
    assert torch.equal(back.per_head, g.per_head) and back.per_head.dtype == torch.int64
    d = through_json(cases()["distance-cosine"])
    assert d.q_proj.dtype == torch.float16 and d.threshold == 0.7 and d.metric == "cosine"
    f = through_json(cases()["function"])
    assert f.rule == FixedRule(8, 2) and f.name == "fixed-l8-c2"


def test_every_graph_class_has_a_case():
    for mod in pkgutil.walk_packages(predictors.__path__, "predictors."):
        importlib.import_module(mod.name)

    def subclasses(cls):  # the package's own: other test modules define helper graphs
        return {c for sub in cls.__subclasses__() for c in {sub} | subclasses(sub)
                if c.__module__.startswith("predictors.")}

    covered = {type(g) for g in cases().values()}
    assert subclasses(PredictedGraph) - covered == set()


def test_shared_tensors_are_named_not_copied():
    g = cases()["rank-score"]
    shared = {"q": g.q.clone(), "k": g.k.clone(), "v": None}
    tensors, spec = g.to_state("l0", shared=shared)
    assert spec["fields"]["q"] == {"shared": "q"} and spec["fields"]["k"] == {"shared": "k"}
    assert sorted(tensors) == ["l0.cuts", "l0.thresholds"]
    assert_same_masks(g, graph_from_state(tensors, spec, shared=shared))
    with pytest.raises(PredictorError, match="shared tensor 'q'"):
        graph_from_state(tensors, spec)


def test_unstorable_graphs_and_foreign_specs_are_refused():
    with pytest.raises(PredictorError, match="cannot store"):
        graph_to_state(FunctionGraph(lambda i, j: i >= j, H))
    spec = {"graph": "os:system", "fields": {}}
    with pytest.raises(PredictorError, match="only classes of predictors"):
        graph_from_state({}, spec)
    with pytest.raises(PredictorError, match="not a stored graph"):
        graph_from_state({}, {"graph": "predictors.torch.fixed:FixedRule", "fields": {"stride": 2, "summary": 1}})


def test_graphs_file_round_trip(tmp_path):
    q = torch.randn(S, 2, H, T, D, generator=gen(20))
    data = AttentionData(q=q, k=torch.randn(S, 2, H, T, D, generator=gen(21)), lengths=torch.tensor(LENGTHS),
                         causal=True)
    c = cases()
    view = data.layer(1)
    oracle = RankThresholdGraph(view.q, view.k, c["rank-score"].thresholds, c["rank-score"].cuts, 0.3, 1.5,
                                True, "score")
    graphs = [c["union-nested"], oracle | c["codes-sets"] | c["hamming"] | c["blocks"] | c["globals-no-columns"]]
    path = graphs_path(tmp_path / "records" / "predictor" / "x.json")
    write_graphs_atomic(path, graphs, data)
    assert path.name == "x.graphs.safetensors" and list(path.parent.iterdir()) == [path]
    back = read_graphs(path, data)
    for a, b in zip(graphs, back):
        assert_same_masks(a, b)
        # Narrowed integers and packed bits come back as the very tensors stored: dtype, shape, values.
        ta, sa = a.to_state("x")
        tb, sb = b.to_state("x")
        assert sa == sb and sorted(ta) == sorted(tb)
        assert all(ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]) for k in ta)
    # The eval Q/K of the ceiling are named, not copied; integers and bits are stored small (measured 5.1x).
    raw = sum(t.numel() * t.element_size() for layer, g in enumerate(graphs)
              for t in g.to_state("l", shared={"q": data.layer(layer).q, "k": data.layer(layer).k})[0].values())
    assert path.stat().st_size < raw / 4
    other = AttentionData(q=q + 1, k=data.k, lengths=data.lengths, causal=True)
    with pytest.raises(BenchError, match="other eval data"):
        read_graphs(path, other)
