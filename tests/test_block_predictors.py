"""Block-level predictors (XAttention, SeerAttention-style gate, Quest) and MInference vertical-slash:
hand-computed answers, loop references on lengths that do not divide the block size, invariants,
block sparsity, names and sweeps."""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import predictors
from bench.config.sweeps import family_configs
from bench.data.synthetic import synthetic
from bench.evaluation.gold import compute_gold
from bench.evaluation.metrics import score_layer
from predictors.data import AttentionData
from predictors.errors import PredictorError
from predictors.graphs import BlockGraph, WindowGraph, block_sparsity
from predictors.torch import seer
from predictors.torch.minference import VerticalSlashGraph, vertical_slash
from predictors.torch.quest import PageGraph, page_bounds, top_pages, upper_bounds
from predictors.torch.xattention import antidiagonal_scores, threshold_blocks

FAST = settings(max_examples=15, deadline=None)
FAMILIES = ("xattention", "minference", "seer", "quest")


def make_data(q, k, causal=False, scale=1.0, lengths=None):
    """One layer from ``q``, ``k`` ``[S, H, T, D]``."""
    s, _, t, _ = q.shape
    lengths = torch.full((s,), t) if lengths is None else torch.tensor(lengths)
    return AttentionData(q=q[:, None].float(), k=k[:, None].float(), lengths=lengths, causal=causal, scale=scale)


@functools.cache
def synth(causal=False, seed=0, length=45, heads=2, samples=3):
    d = dataclasses.replace(synthetic(samples=samples, layers=1, heads=heads, length=length, dim=8, causal=causal,
                                      seed=seed), v=None)
    return d, compute_gold(d)


@functools.cache
def split(causal=False, seed=0, length=45):
    d = dataclasses.replace(synthetic(samples=6, layers=1, heads=2, length=length, dim=8, causal=causal, seed=seed),
                            v=None)
    fit, ev = d.split()
    return fit, compute_gold(fit), ev, compute_gold(ev)


def full_masks(graph, view):
    out = []
    for s, n in enumerate(view.lengths.tolist()):
        m = graph.block_mask(s, 0, n, n)
        if view.causal:
            m &= torch.ones(n, n, dtype=torch.bool).tril()
        out.append(m)
    return out


def tiles_of(graph: BlockGraph, s: int, n: int) -> torch.Tensor:
    m = -(-n // graph.block_size)
    return graph.blocks[s][:, :m, :m]


# -- BlockGraph block sparsity ----------------------------------------------------------------------------

def test_block_sparsity_known_answer():
    # n = 10, B = 4: 3 x 3 tiles; causal: the 6 tiles on or below the diagonal.
    tiles = torch.zeros(1, 2, 3, 3, dtype=torch.bool)
    tiles[0, 0, 0, 0] = tiles[0, 0, 2, 1] = tiles[0, 0, 0, 2] = True  # (0, 2) is above the diagonal
    tiles[0, 1] = True
    g = BlockGraph(tiles, 4)
    assert g.block_sparsity(torch.tensor([10]), causal=False).tolist() == [[1 - 3 / 9, 0.0]]
    assert g.block_sparsity(torch.tensor([10]), causal=True).tolist() == [[1 - 2 / 6, 0.0]]
    # The generic tile count from block_mask agrees, whatever the query block.
    for qb in (4, 8, 256):
        assert torch.equal(block_sparsity(g, torch.tensor([10]), True, 4, query_block=qb),
                           g.block_sparsity(torch.tensor([10]), True))


def test_generic_block_sparsity_of_a_window():
    # Width 3 on n = 10, B = 4: the tridiagonal band touches tiles (0,0), (0,1), (1,0), (1,1), (1,2),
    # (2,1), (2,2): 7 of 9.
    got = block_sparsity(WindowGraph(3, 1), torch.tensor([10]), False, 4)
    assert got.tolist() == [[pytest.approx(2 / 9)]]


def test_a_kept_block_covers_all_its_valid_pairs():
    data, gold = synth(causal=True, length=45)
    tiles = torch.zeros(3, 2, 6, 6, dtype=torch.bool)
    tiles[:, :, 2, 1] = True  # one full tile below the diagonal: 8 x 8 = 64 pairs
    tiles[:, :, 5, 5] = True  # the last diagonal tile: rows/cols 40..n-1, causal half
    res = score_layer(data.layer(0), gold.layers[0], BlockGraph(tiles, 8))
    for s, n in enumerate(data.lengths.tolist()):
        r = max(0, n - 40)
        assert torch.all(res["pred_pairs"][s] == 64 + r * (r + 1) // 2)


# -- XAttention -------------------------------------------------------------------------------------------

def test_antidiagonal_scores_by_hand():
    # D = 1, S = 2, q = [1, 2, 3, 4, 5], k = [1, 10, 100, 1000, 10000], scale 1.
    q = torch.tensor([1.0, 2, 3, 4, 5])[None, :, None]
    k = torch.tensor([1.0, 10, 100, 1000, 10000])[None, :, None]
    a, count = antidiagonal_scores(q, k, 5, 2, 1.0, causal=False)
    # A_uv = (q_{2u+1} k_{2v} + q_{2u} k_{2v+1}) / 2, absent terms (index 5) count 0.
    expected = [[(2 * 1 + 1 * 10) / 2, (2 * 100 + 1 * 1000) / 2, (2 * 10000 + 0) / 2],
                [(4 * 1 + 3 * 10) / 2, (4 * 100 + 3 * 1000) / 2, (4 * 10000) / 2],
                [(0 + 5 * 10) / 2, (5 * 1000) / 2, 0.0]]
    assert a[0].tolist() == expected
    assert count.tolist() == [[2, 2, 1], [2, 2, 1], [1, 1, 0]]
    a, count = antidiagonal_scores(q, k, 5, 2, 1.0, causal=True)
    # Causal: nothing above the diagonal; diagonal tiles keep slot 0 only (query 2u+1, key 2u).
    assert a[0].tolist() == [[2 / 2, 0, 0], [(4 + 30) / 2, 400 / 2, 0], [50 / 2, 5000 / 2, 0]]
    assert count.tolist() == [[1, 0, 0], [2, 1, 0], [1, 1, 0]]
    # A slice of query groups is the same rows.
    a1, c1 = antidiagonal_scores(q, k, 5, 2, 1.0, causal=True, u0=1, u1=3)
    assert torch.equal(a1, a[:, 1:3]) and torch.equal(c1, count[1:3])


def test_threshold_blocks_by_hand():
    p = torch.tensor([0.3, 0.5, 0.0, 0.2])
    assert threshold_blocks(p, 0.5).tolist() == [False, True, False, False]
    assert threshold_blocks(p, 0.6).tolist() == [True, True, False, False]
    assert threshold_blocks(p, 0.85).tolist() == [True, True, False, True]
    assert threshold_blocks(p, 1.0).tolist() == [True, True, False, True]  # never a zero block
    # Ties: the lower block first.
    assert threshold_blocks(torch.tensor([0.25, 0.25, 0.5]), 0.7).tolist() == [True, False, True]


def xattention_reference(q, k, n, b, stride, tau, scale, causal):
    """Loops over pairs, straight from the module docstring: bool ``[m, m]`` for one head."""
    g = -(-n // stride)
    a = torch.zeros(g, g, dtype=torch.float64)
    c = torch.zeros(g, g, dtype=torch.int64)
    for u in range(g):
        for v in range(g):
            for o in range(stride):
                i, j = u * stride + stride - 1 - o, v * stride + o
                if i < n and j < n and (not causal or j <= i):
                    a[u, v] += scale * float(q[i] @ k[j]) / stride
                    c[u, v] += 1
    m = -(-n // b)
    per = b // stride
    out = torch.zeros(m, m, dtype=torch.bool)
    for blk in range(m):
        pab = torch.zeros(m, dtype=torch.float64)
        rows = 0
        for u in range(blk * per, min(g, (blk + 1) * per)):
            ok = c[u] > 0
            if not ok.any():
                continue
            rows += 1
            p = torch.softmax(a[u].masked_fill(~ok, -math.inf), 0)
            for v in range(g):
                pab[v // per] += p[v]
        if rows == 0:
            out[blk, blk] = True
            continue
        pab /= rows
        order = sorted(range(m), key=lambda x: (-float(pab[x]), x))
        total = 0.0
        for x in order:
            if total < tau and pab[x] > 0:
                out[blk, x] = True
            total += float(pab[x])
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("b, stride, tau", [(8, 4, 0.9), (16, 4, 0.6), (8, 2, 0.3), (4, 4, 0.95)])
def test_xattention_matches_the_loop_reference(causal, b, stride, tau):
    data, _ = synth(causal, seed=4, length=45)
    view = data.layer(0)
    p = predictors.get("xattention", b=b, st=stride, t=tau).fit(data, None)
    graph = p.predict(view, 0)
    for s, n in enumerate(view.lengths.tolist()):
        for h in range(view.q.shape[1]):
            ref = xattention_reference(view.q[s, h].double(), view.k[s, h].double(), n, b, stride, tau,
                                       view.scale, causal)
            # Probabilities tied to within float rounding could order differently; there are none here.
            assert torch.equal(tiles_of(graph, s, n)[h], ref), (s, h)


@pytest.mark.parametrize("causal", [False, True])
def test_lower_tau_never_raises_recall(causal):
    data, gold = synth(causal, seed=5)
    view = data.layer(0)
    prev = None
    for tau in (0.99, 0.9, 0.7, 0.4, 0.1):
        g = predictors.get("xattention", b=8, st=4, t=tau).fit(data, gold).predict(view, 0)
        res = score_layer(view, gold.layers[0], g)
        if prev is not None:
            assert bool((g.blocks <= prev[0].blocks).all())
            assert bool((res["recall"] <= prev[1]["recall"] + 1e-12).all())
        prev = (g, res)


def test_xattention_causal_keeps_no_block_above_the_diagonal_and_reports_block_sparsity():
    data, gold = synth(True, seed=6)
    g = predictors.get("xattention-b8-st4-t0.9").fit(data, gold).predict(data.layer(0), 0)
    assert not bool(torch.triu(g.blocks, diagonal=1).any())
    bs = g.block_sparsity(data.lengths, True)
    assert bs.shape == (3, 2) and bool(((bs >= 0) & (bs < 1)).all())


def test_xattention_short_causal_sample_keeps_its_diagonal_block():
    # n = 2 causal with S = 8: no antidiagonal term lies at or below the diagonal.
    q = torch.randn(1, 1, 2, 4)
    data = make_data(q, q.clone(), causal=True)
    g = predictors.get("xattention-b8-st8-t0.9").fit(data, None).predict(data.layer(0), 0)
    assert g.blocks[0, 0].tolist() == [[True]]


# -- MInference vertical-slash --------------------------------------------------------------------------

def test_vertical_slash_by_hand():
    # Last two queries (i = 3, 4) of n = 5 over keys 0..4.
    prob = torch.tensor([[[0.125, 0.5, 0.0, 0.375, 0.0],
                          [0.0, 0.5, 0.125, 0.0, 0.375]]])  # dyadic: sums are exact
    cols, offs, valid = vertical_slash(prob, torch.tensor([3, 4]), 5, v=2, sl=3)
    # vertical = [0.125, 1, 0.125, 0.375, 0.375] -> column 1, then 3 (tied with 4: the lower column).
    assert cols.tolist() == [[1, 3]]
    # slash by offset i - j: i=3: 3: .125, 2: .5, 0: .375; i=4: 3: .5, 2: .125, 0: .375
    # -> 0: .75, 2: .625, 3: .625 (tie: the lower offset first).
    assert offs.tolist() == [[0, 2, 3]] and valid.all()
    cols, offs, valid = vertical_slash(prob, torch.tensor([3, 4]), 5, v=7, sl=10)
    assert cols[0, 5:].tolist() == [-1, -1] and valid.sum() == 9


def test_vertical_slash_graph_by_hand():
    g = VerticalSlashGraph(columns=torch.tensor([[[1, -1]]]), offsets=torch.tensor([[[0, 2, -1]]]),
                           offset_valid=torch.tensor([[[True, True, False]]]))
    m = g.block_mask(0, 1, 5, 5)[0]
    expected = {(i, j) for i in range(1, 5) for j in range(5) if j == 1 or i - j in (0, 2)}
    assert {(i + 1, j) for i, j in m.nonzero().tolist()} == expected


@pytest.mark.parametrize("causal", [False, True])
def test_minference_more_lines_only_add_pairs(causal):
    data, gold = synth(causal, seed=7)
    masks = [full_masks(predictors.get("minference", lq=16, v=v, sl=sl).fit(data, gold).predict(data.layer(0), 0),
                        data.layer(0)) for v, sl in ((2, 2), (4, 2), (4, 6))]
    for a, b in zip(masks, masks[1:]):
        assert all(bool((x <= y).all()) for x, y in zip(a, b))


def test_minference_picks_the_planted_column_and_diagonal():
    # Keys at position 3 match every query, and each query matches the key one step back.
    n, d = 23, 8
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(n, d, generator=gen) * 0.1
    k = torch.randn(n, d, generator=gen) * 0.1
    q[:, 0] = 5.0
    k[3, 0] = 5.0
    data = make_data(q[None, None], k[None, None], causal=True)
    g = predictors.get("minference-lq8-v1-sl0").fit(data, None).predict(data.layer(0), 0)
    assert g.columns[0, 0].tolist() == [3]
    q2, k2 = torch.zeros(n, n), torch.eye(n) * 6.0
    q2[torch.arange(1, n), torch.arange(n - 1)] = 1.0  # q_i . k_{i-1} = 6
    data = make_data(q2[None, None], k2[None, None], causal=True)
    g = predictors.get("minference-lq8-v0-sl1").fit(data, None).predict(data.layer(0), 0)
    assert g.offsets[0, 0].tolist() == [1]


# -- Quest ------------------------------------------------------------------------------------------------

def test_quest_upper_bound_is_exact_when_one_key_dominates():
    q = torch.tensor([[[2.0, -1.0, 0.5]]])  # [H, 1, D]
    page = torch.tensor([[1.0, -3.0, 2.0],   # the dominating key: max where q > 0, min where q < 0
                         [0.5, 1.0, -1.0],
                         [-2.0, 0.0, 1.0]])
    kmin, kmax = page_bounds(page[None], 3, 3)
    ub = upper_bounds(q, kmin, kmax, scale=1.0)
    assert ub.item() == pytest.approx((q[0, 0] @ page.T).max().item()) == 6.0
    # Without the dominating key the bound is loose but still above every score.
    kmin, kmax = page_bounds(page[1:][None], 2, 2)
    ub = upper_bounds(q, kmin, kmax, scale=1.0)
    assert ub.item() == pytest.approx(2 * 0.5 - 1 * 0.0 + 0.5 * 1.0) and ub.item() > (q[0, 0] @ page[1:].T).max()


@given(st.integers(0, 10_000), st.integers(2, 30), st.integers(1, 8))
@FAST
def test_quest_bound_is_above_every_score_of_its_page(seed, n, page):
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 5, 4, generator=gen), torch.randn(2, n, 4, generator=gen)
    kmin, kmax = page_bounds(k, n, page)
    ub = upper_bounds(q, kmin, kmax, scale=0.5)
    z = 0.5 * q @ k.transpose(1, 2)
    pad = torch.full((2, 5, -(-n // page) * page), -math.inf)
    pad[..., :n] = z
    assert bool((ub >= pad.view(2, 5, -1, page).amax(-1) - 1e-5).all())


def test_quest_pages_by_hand():
    # n = 7, pages of 3: {0,1,2}, {3,4,5}, {6}. D = 1, q > 0 for query 0 and < 0 for query 1.
    k = torch.tensor([1.0, 5.0, 2.0, -4.0, 0.0, 3.0, -1.0])[None, :, None]
    q = torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0])[None, :, None]
    data = make_data(q[None], k[None])
    g = predictors.get("quest-query-b3-k1").fit(data, None).predict(data.layer(0), 0)
    assert g.pages[0, 0, :2].tolist() == [[0], [1]]  # max 5 (page 0); for q < 0: -min = 4 (page 1)
    m = g.block_mask(0, 0, 2, 7)[0]
    assert m[0].nonzero().flatten().tolist() == [0, 1, 2] and m[1].nonzero().flatten().tolist() == [3, 4, 5]
    # Causal: query 1 may only use page 0.
    data = make_data(q[None], k[None], causal=True)
    g = predictors.get("quest-query-b3-k2").fit(data, None).predict(data.layer(0), 0)
    assert g.pages[0, 0, 1].tolist() == [0, -1] and g.pages[0, 0, 6].tolist() == [0, 1]


def test_top_pages_ties_and_padding():
    scores = torch.tensor([[[1.0, 3.0, 3.0, 0.0]]])
    allowed = torch.tensor([[True, True, True, False]])
    assert top_pages(scores, allowed, 2).tolist() == [[[1, 2]]]
    assert top_pages(scores, allowed, 4).tolist() == [[[1, 2, 0, -1]]]


def test_page_graph_by_hand():
    g = PageGraph(torch.tensor([[[[2, -1], [0, 1]]]]), 2)
    m = g.block_mask(0, 0, 2, 5)[0]
    assert m.tolist() == [[False, False, False, False, True], [True, True, True, True, False]]


@pytest.mark.parametrize("per", ["query", "block"])
@pytest.mark.parametrize("causal", [False, True])
def test_quest_more_pages_only_add_pairs(per, causal):
    data, gold = synth(causal, seed=9)
    masks = [full_masks(predictors.get("quest", per=per, b=8, k=k).fit(data, gold).predict(data.layer(0), 0),
                        data.layer(0)) for k in (1, 2, 4)]
    for a, b in zip(masks, masks[1:]):
        assert all(bool((x <= y).all()) for x, y in zip(a, b))


def test_quest_block_tiles_bound_the_whole_tile():
    data, _ = synth(True, seed=10)
    g = predictors.get("quest-block-b8-k2").fit(data, None).predict(data.layer(0), 0)
    assert isinstance(g, BlockGraph) and not bool(torch.triu(g.blocks, diagonal=1).any())
    # Each query block keeps min(k, allowed pages) tiles.
    for s, n in enumerate(data.lengths.tolist()):
        t = tiles_of(g, s, n)
        assert t.sum(-1).tolist() == [[min(2, a + 1) for a in range(t.shape[1])]] * 2


# -- Seer gate --------------------------------------------------------------------------------------------

def test_pool_blocks_by_hand():
    x = torch.arange(10.0).view(1, 1, 5, 2)  # tokens (0,1), (2,3), (4,5), (6,7), (8,9)
    mean, ok = seer.pool_blocks(x, torch.tensor([5]), 2, keys=False)
    assert mean[0, 0].tolist() == [[1.0, 2.0], [5.0, 6.0], [8.0, 9.0]] and ok.tolist() == [[True, True, True]]
    feats, _ = seer.pool_blocks(x, torch.tensor([3]), 2, keys=True)
    # Block 1 holds only token 2 (length 3): mean = max = min = (4, 5); block 2 is empty: zeros.
    assert feats[0, 0, 1].tolist() == [4.0, 5.0, 4.0, 5.0, 4.0, 5.0]
    assert feats[0, 0, 2].tolist() == [0.0] * 6


def test_pooled_gold_rows_are_distributions_over_key_blocks():
    fit, fg, _, _ = split(True)
    t = seer.pooled_gold(fg.layers[0], 8)
    for s, n in enumerate(fit.lengths.tolist()):
        m = -(-n // 8)
        assert torch.allclose(t[s, :, :m].sum(-1), torch.ones(2, m), atol=1e-5)
        assert not bool(torch.triu(t[s, :, :m, :m], diagonal=1).any())  # causal: no mass above


def test_select_blocks_by_hand():
    gate = torch.tensor([[0.1, 0.5, 0.15, 0.25]])
    allowed = torch.tensor([[True, True, True, False]])
    assert seer.select_blocks(gate, allowed, 1, 0.0).tolist() == [[False, True, False, False]]
    assert seer.select_blocks(gate, allowed, 2, 0.0).tolist() == [[False, True, True, False]]
    assert seer.select_blocks(gate, allowed, 0, 0.12).tolist() == [[False, True, True, False]]
    assert seer.select_blocks(gate, allowed, 1, 0.12).tolist() == [[False, True, True, False]]


def test_seer_training_lowers_the_kl_and_is_shared_across_selections(monkeypatch):
    fit, fg, ev, eg = split(False, seed=1)
    p = predictors.get("seer-b8-top1-t0").fit(fit, fg)
    q = predictors.get("seer-b8-top0-t0.2").fit(fit, fg)
    assert p.wq is q.wq  # one training for both
    monkeypatch.setattr(seer, "STEPS", 0)
    monkeypatch.setattr(seer, "_CACHE", {})
    untrained = predictors.get("seer-b8-top1-t0").fit(fit, fg)
    assert bool((p.fit_kl < untrained.fit_kl).all())
    assert p.learned and p.flops(64, 8) > 0


@pytest.mark.parametrize("causal", [False, True])
def test_seer_more_blocks_never_lower_recall(causal):
    fit, fg, ev, eg = split(causal, seed=2)
    view = ev.layer(0)
    prev = None
    for top in (1, 2, 3):
        g = predictors.get("seer", b=8, top=top).fit(fit, fg).predict(view, 0)
        if causal:
            assert not bool(torch.triu(g.blocks, diagonal=1).any())
        res = score_layer(view, eg.layers[0], g)
        if prev is not None:
            assert bool((prev[0].blocks <= g.blocks).all())
            assert bool((res["recall"] >= prev[1]["recall"] - 1e-12).all())
        prev = (g, res)
    lo = predictors.get("seer", b=8, t=0.3).fit(fit, fg).predict(view, 0)
    hi = predictors.get("seer", b=8, t=0.1).fit(fit, fg).predict(view, 0)
    assert bool((lo.blocks <= hi.blocks).all())


# -- names, errors, sweeps ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["xattention-b64-st8-t0.9", "xattention-b16-st4-t0.5-w3-s2",
                                  "minference-lq64-v8-sl16", "minference-lq16-v0-sl4-g1",
                                  "seer-b16-top2-t0", "seer-b64-top0-t0.05-s1", "quest-query-b16-k2",
                                  "quest-block-b8-k4-w3"])
def test_names_read_back(name):
    assert predictors.get(name).name == name


@pytest.mark.parametrize("family, params, match", [
    ("xattention", {"b": 12, "st": 8}, "b % st"), ("xattention", {"t": 0.0}, "threshold t"),
    ("seer", {"top": 0, "t": 0.0}, "select blocks"), ("quest", {"k": 0}, "pages k"),
    ("minference", {"lq": 0}, "lq must be >= 1"), ("minference", {"v": -1}, "v must be >= 0"),
])
def test_parameter_errors(family, params, match):
    with pytest.raises(PredictorError, match=match):
        predictors.get(family, **params)


@pytest.mark.parametrize("family", FAMILIES)
def test_sweeps_keep_smoke_tiny(family):
    assert 1 <= len(family_configs(family, "smoke")) <= 2
    assert len(family_configs(family, "default")) > len(family_configs(family, "smoke"))
