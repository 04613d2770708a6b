"""Hashing predictors: random SimHash (torch and its FAISS binary-index twin) and HashAttention-style
learned bits. Known Hamming answers, twin parity of predicted pairs, monotonicity, training."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import predictors
from bench.config.sweeps import family_configs
from bench.data.synthetic import synthetic
from bench.evaluation.gold import compute_gold
from predictors.data import AttentionData
from predictors.errors import PredictorError
from predictors.torch import hashattn
from predictors.torch.simhash import HammingGraph, hamming, query_radii, sign_bits

FAST = settings(max_examples=12, deadline=None)


def bits(rows):
    return torch.tensor(rows, dtype=torch.bool)


@functools.cache
def synth(causal=False, seed=0, length=45, heads=2, layers=1, samples=3, dim=8):
    d = dataclasses.replace(synthetic(samples=samples, layers=layers, heads=heads, length=length, dim=dim,
                                      causal=causal, seed=seed), v=None)
    return d, compute_gold(d)


@functools.cache
def split(causal=False, seed=0):
    d = dataclasses.replace(synthetic(samples=6, layers=2, heads=2, length=45, dim=8, causal=causal, seed=seed),
                            v=None)
    fit, ev = d.split()
    return fit, compute_gold(fit), ev, compute_gold(ev)


def full_masks(graph, view, causal_mask=False):
    out = []
    for s, n in enumerate(view.lengths.tolist()):
        m = graph.block_mask(s, 0, n, n)
        if causal_mask and view.causal:
            m &= torch.ones(n, n, dtype=torch.bool).tril()
        out.append(m)
    return out


# -- Hamming known answers --------------------------------------------------------------------------------

def test_hamming_by_hand():
    q = bits([[1, 0, 1, 1], [0, 0, 0, 0]])
    k = bits([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]])
    assert hamming(q, k).tolist() == [[0, 3, 1], [3, 2, 4]]


def test_radii_with_top_keep_ties():
    # One sample, one head, one table, 4 tokens; distances of query i to keys j (K = 3):
    q = bits([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 1]])[None, None, :, None]
    k = bits([[0, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0]])[None, None, :, None]
    d = hamming(q[0, 0, :, 0], k[0, 0, :, 0])
    assert d.tolist() == [[1, 2, 3, 0], [2, 1, 0, 3], [2, 3, 2, 1], [1, 0, 1, 2]]
    lengths = torch.tensor([4])
    r = query_radii(q, k, lengths, causal=False, h=0, top=2)[0, 0, :, 0]
    assert r.tolist() == [1, 1, 2, 1]  # second smallest distances: query 2 has 1, 2, 2 -> 2 (tie kept)
    r = query_radii(q, k, lengths, causal=False, h=2, top=2)[0, 0, :, 0]
    assert r.tolist() == [2, 2, 2, 2]
    # Causal: query i ranks keys j <= i only; query 0 has a single key (distance 1).
    r = query_radii(q, k, lengths, causal=True, h=0, top=2)[0, 0, :, 0]
    assert r.tolist() == [1, 2, 2, 1]
    g = HammingGraph(q, k, query_radii(q, k, lengths, causal=False, h=0, top=2))
    m = g.block_mask(0, 0, 4, 4)[0]
    assert m[2].nonzero().flatten().tolist() == [0, 2, 3]  # distances 2, 2, 1: both tied keys are kept


@given(seed=st.integers(0, 10_000), n=st.integers(1, 30), nbits=st.integers(1, 9), top=st.integers(1, 12),
       h=st.integers(0, 3), block=st.integers(1, 9), causal=st.booleans())
@FAST
def test_radii_equal_the_sorted_rows(seed, n, nbits, top, h, block, causal):
    # Reference: sort every query's distances to its allowed keys and take the top-th (or the last).
    gen = torch.Generator().manual_seed(seed)
    q = torch.rand(1, 2, n + 2, 2, nbits, generator=gen) > 0.5  # two padding positions
    k = torch.rand(1, 2, n + 2, 2, nbits, generator=gen) > 0.5
    r = query_radii(q, k, torch.tensor([n]), causal=causal, h=h, top=top, block=block)
    assert r[0, :, n:].eq(h).all()
    for hd in range(2):
        for t in range(2):
            d = hamming(q[0, hd, :n, t], k[0, hd, :n, t])
            for i in range(n):
                row = (d[i, : i + 1] if causal else d[i]).sort().values
                assert int(r[0, hd, i, t]) == max(h, int(row[min(top, len(row)) - 1]))


def test_simhash_equal_codes_in_any_table():
    # Two tables of 2 bits, hand-made codes.
    q = bits([[[0, 1], [1, 1]], [[1, 0], [0, 0]]])[None, None]  # [1, 1, T=2, L=2, K=2]
    k = bits([[[0, 1], [0, 0]], [[1, 1], [1, 1]], [[0, 0], [0, 0]]])[None, None]  # 3 keys
    r = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    m = HammingGraph(q, k, r).block_mask(0, 0, 2, 3)[0]
    # Query 0: table 0 matches key 0, table 1 matches key 1. Query 1: table 1 matches keys 0 and 2.
    assert m.tolist() == [[True, True, False], [True, False, True]]


def test_sign_bits_by_hand():
    x = torch.tensor([[1.0, -2.0], [0.0, 0.0]])[None, None]  # [1, 1, 2, 2]
    proj = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])[None, None]  # [H=1, L=1, D=2, K=3]
    assert sign_bits(x, proj)[0, 0, :, 0].tolist() == [[True, False, False], [False, False, False]]
    bias = torch.tensor([[[0.5, 0.5, 0.5]]])
    assert sign_bits(x, proj, bias)[0, 0, 1, 0].tolist() == [True, True, True]


# -- SimHash -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_simhash_more_tables_radius_or_top_only_add_pairs(causal):
    data, gold = synth(causal, seed=3)
    view = data.layer(0)
    chain = [("simhash-b6-l1-h0-top0", "simhash-b6-l3-h0-top0"), ("simhash-b6-l2-h0-top0", "simhash-b6-l2-h1-top0"),
             ("simhash-b6-l2-h1-top0", "simhash-b6-l2-h2-top0"), ("simhash-b6-l2-h0-top2", "simhash-b6-l2-h0-top5"),
             ("simhash-b6-l2-h0-top0", "simhash-b6-l2-h0-top1")]
    for small, big in chain:
        a = full_masks(predictors.get(small, seed=4).fit(data, gold).predict(view, 0), view, True)
        b = full_masks(predictors.get(big, seed=4).fit(data, gold).predict(view, 0), view, True)
        assert all(bool((x <= y).all()) for x, y in zip(a, b)), (small, big)


def test_simhash_tables_are_prefixes_and_nothing_is_learned():
    data, gold = synth()
    a = predictors.get("simhash-b8-l2", seed=1).fit(data, gold)
    b = predictors.get("simhash-b8-l5", seed=1).fit(data, gold)
    assert torch.equal(a.proj, b.proj[:, :, :2]) and not a.learned
    assert a.flops(10, 4) == 4 * 10 * 4 * 8 * 2 + 10 * 10 * 2


def test_simhash_covers_everything_with_a_full_radius_and_self_pairs_of_equal_vectors():
    d = synth()[0]
    q = d.q.clone()
    data = dataclasses.replace(d, k=q)  # q == k: every query's own key has distance 0
    for name in ("simhash-b5-l1-h0-top0", "simhash-b5-l2-h5-top0"):
        g = predictors.get(name).fit(data, None).predict(data.layer(0), 0)
        for m in full_masks(g, data.layer(0)):
            assert bool(m.diagonal(dim1=1, dim2=2).all())
            if "h5" in name:
                assert bool(m.all())


# -- the FAISS twin ---------------------------------------------------------------------------------------

PARITY = ["simhash-b6-l3-h0-top0", "simhash-b8-l2-h1-top0", "simhash-b13-l2-h0-top4", "simhash-b5-l2-h2-top3",
          "simhash-b70-l1-h0-top0", "simhash-b3-l4-h0-top1"]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", PARITY)
def test_faiss_twin_predicts_the_same_pairs(name, causal):
    pytest.importorskip("faiss")
    fit, fg, ev, _ = split(causal, seed=5)
    a = predictors.get(name, seed=2).fit(fit, fg)
    b = predictors.get(name, backend="faiss", seed=2).fit(fit, fg)
    assert b.backend == "faiss" and b.name == a.name and torch.equal(a.proj, b.proj)
    for layer in range(2):
        view = ev.layer(layer)
        ga, gb = a.predict(view, layer), b.predict(view, layer)
        for s, n in enumerate(view.lengths.tolist()):
            for i0, i1 in ((0, n), (min(5, n - 1), min(17, n))):  # whole sample; a block not starting at 0
                assert torch.equal(ga.block_mask(s, i0, i1, n), gb.block_mask(s, i0, i1, n)), (layer, s)


@given(seed=st.integers(0, 10_000), n=st.integers(2, 40), nbits=st.integers(1, 12), tables=st.integers(1, 3),
       h=st.integers(0, 3), top=st.integers(0, 6), causal=st.booleans())
@FAST
def test_faiss_twin_parity_property(seed, n, nbits, tables, h, top, causal):
    pytest.importorskip("faiss")
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 1, 2, n, 4, generator=gen)
    k = torch.randn(2, 1, 2, n, 4, generator=gen)
    lengths = torch.tensor([n, max(2, n - 5)])
    data = AttentionData(q=q, k=k, lengths=lengths, causal=causal)
    params = dict(b=nbits, l=tables, h=h, top=top)
    ga = predictors.get("simhash", seed=seed, **params).fit(data, None).predict(data.layer(0), 0)
    gb = predictors.get("simhash", backend="faiss", seed=seed, **params).fit(data, None).predict(data.layer(0), 0)
    for x, y in zip(full_masks(ga, data.layer(0)), full_masks(gb, data.layer(0))):
        assert torch.equal(x, y)


def test_faiss_twin_refuses_the_gpu():
    with pytest.raises(PredictorError, match="no GPU binary index"):
        predictors.get("simhash", backend="faiss", device="cuda")


# -- HashAttention -----------------------------------------------------------------------------------------

def test_learned_bits_separate_gold_pairs_and_are_shared_across_selections():
    fit, fg, ev, eg = split(False, seed=6)
    p = predictors.get("hashattn-b16-h0-top4").fit(fit, fg)
    q = predictors.get("hashattn-b16-h3-top0").fit(fit, fg)
    assert p.wq is q.wq and p.learned
    # On the fit samples, gold pairs are closer in Hamming distance than other pairs, per head.
    view = fit.layer(0)
    g = p.predict(view, 0)
    gold, _ = fg.layers[0].block(0, 0, int(fit.lengths[0]), int(fit.lengths[0]))
    n = int(fit.lengths[0])
    d = hamming(g.q_bits[0, :, :n, 0], g.k_bits[0, :, :n, 0]).float()
    for h in range(2):
        assert d[h][gold[h]].mean() + 1.0 < d[h][~gold[h]].mean()


def test_training_lowers_the_loss(monkeypatch):
    fit, fg, _, _ = split(True, seed=7)
    trained = predictors.get("hashattn-b8-h0-top2").fit(fit, fg)
    monkeypatch.setattr(hashattn, "EPOCHS", 1)
    monkeypatch.setattr(hashattn, "_CACHE", {})
    short = predictors.get("hashattn-b8-h0-top2").fit(fit, fg)
    assert bool((trained.fit_loss < short.fit_loss).all())


@pytest.mark.parametrize("causal", [False, True])
def test_hashattn_larger_radius_or_top_only_adds_pairs(causal):
    fit, fg, ev, _ = split(causal, seed=8)
    view = ev.layer(1)
    masks = [full_masks(predictors.get(name).fit(fit, fg).predict(view, 1), view, True)
             for name in ("hashattn-b16-h0-top0", "hashattn-b16-h2-top0", "hashattn-b16-h2-top3",
                          "hashattn-b16-h2-top8")]
    for a, b in zip(masks, masks[1:]):
        assert all(bool((x <= y).all()) for x, y in zip(a, b))


def test_hashattn_top_keeps_at_least_top_past_keys():
    fit, fg, ev, _ = split(True, seed=9)
    view = ev.layer(0)
    g = predictors.get("hashattn-b16-h0-top5").fit(fit, fg).predict(view, 0)
    for m in full_masks(g, view, True):
        n = m.shape[-1]
        need = torch.minimum(torch.arange(n) + 1, torch.tensor(5))
        assert bool((m.sum(-1) >= need).all())


def test_hashattn_is_deterministic_per_seed(monkeypatch):
    fit, fg, _, _ = split(False, seed=10)
    monkeypatch.setattr(hashattn, "EPOCHS", 4)
    monkeypatch.setattr(hashattn, "_CACHE", {})
    a = predictors.get("hashattn-b8", seed=3).fit(fit, fg)
    hashattn._CACHE.clear()
    b = predictors.get("hashattn-b8", seed=3).fit(fit, fg)
    assert torch.equal(a.wq, b.wq) and torch.equal(a.ck, b.ck)


def test_hashattn_bits_are_shared_state_that_moves_between_processes(monkeypatch):
    """Every h, top and sp of one (b, seed) shares one training (one shared_fit key); the trained bits are
    entries of a predictors.memo table, so a process given them (a Ray task) trains nothing."""
    from predictors import memo

    keys = {predictors.get(n, seed=s).shared_fit() for n in ("hashattn-b8-h0-top2", "hashattn-b8-h2-top0",
                                                            "hashattn-b8-top0-sp0.9") for s in (1,)}
    assert keys == {("hashattn-bits", 8, 1)}
    assert predictors.get("hashattn-b8", seed=2).shared_fit() != predictors.get("hashattn-b16", seed=2).shared_fit()
    fit, fg, _, _ = split(False, seed=11)
    monkeypatch.setattr(hashattn, "EPOCHS", 2)
    before = memo.snapshot()
    trained = predictors.get("hashattn-b8-h0-top2", seed=5).fit(fit, fg)
    moved = memo.added_since(before)
    assert list(moved) == ["hashattn-bits"] and len(moved["hashattn-bits"]) == 1
    for key in moved["hashattn-bits"]:
        hashattn._CACHE.pop(key)  # as a fresh process: nothing trained here
    memo.install(moved)
    monkeypatch.setattr(hashattn, "train_layer", lambda *a, **k: pytest.fail("trained again"))
    given = predictors.get("hashattn-b8-h2-top0", seed=5).fit(fit, fg)
    assert torch.equal(given.wq, trained.wq) and torch.equal(given.cq, trained.cq)


# -- names, errors, sweeps ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["simhash-b8-l4-h0-top0", "simhash-b16-l2-h2-top8-w3-s1", "hashattn-b32-h4-top0",
                                  "hashattn-b16-h0-top8-g1"])
def test_names_read_back(name):
    assert predictors.get(name).name == name
    if name.startswith("simhash"):
        assert predictors.get(name, backend="faiss").name == name


@pytest.mark.parametrize("family, params, match", [
    ("simhash", {"b": 0}, "bits b"), ("simhash", {"l": 0}, "tables l"), ("hashattn", {"h": -1}, "radius h"),
    ("hashattn", {"top": -2}, "radius h and top"),
])
def test_parameter_errors(family, params, match):
    with pytest.raises(PredictorError, match=match):
        predictors.get(family, **params)


@pytest.mark.parametrize("family", ["simhash", "hashattn"])
def test_sweeps_keep_smoke_tiny(family):
    assert 1 <= len(family_configs(family, "smoke")) <= 2
    assert len(family_configs(family, "default")) > len(family_configs(family, "smoke"))
