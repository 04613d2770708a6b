"""The Sparsefinder paper's baselines: window, BigBird, Longformer, fixed, Reformer, Routing.

Hand-built answers (pair counts worked out on paper), invariants, hypothesis properties, determinism,
names and sweeps. Lengths are deliberately not powers of two.
"""

import dataclasses
import functools
import math
import tomllib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import predictors
from bench.config.sweeps import family_configs
from bench.data.synthetic import synthetic
from bench.evaluation.gold import compute_gold
from bench.evaluation.metrics import score_layer
from predictors.errors import PredictorError
from predictors.torch.bigbird import random_keys
from predictors.torch.reformer import ReformerLSH
from predictors.torch.routing import balanced_codes

SWEEPS = Path(__file__).resolve().parents[1] / "predictors" / "sweeps"
BASELINES = ("window", "bigbird", "longformer", "fixed", "reformer", "routing")


def no_values(d):
    """The data without V: the metrics then skip the output error, which no test here reads."""
    return dataclasses.replace(d, v=None)


@functools.cache
def dataset(length=45, causal=False, seed=0, samples=1, layers=1, heads=1, ragged=False):
    """Synthetic data and its gold (cached: tests only read them)."""
    d = no_values(synthetic(samples=samples, layers=layers, heads=heads, length=length, dim=8, causal=causal,
                            seed=seed, ragged=ragged))
    return d, compute_gold(d)


@functools.cache
def split(length=45, causal=False, seed=0, layers=1, heads=2):
    """(fit, fit gold, eval, eval gold) of four ragged samples."""
    d = synthetic(samples=4, layers=layers, heads=heads, length=length, dim=8, causal=causal, seed=seed)
    fit, ev = no_values(d).split()
    return fit, compute_gold(fit), ev, compute_gold(ev)


def scored(name, data, gold, layer=0, seed=0, fit=None, fit_gold=None, **params):
    """Fit ``name`` on ``fit`` (default: ``data``) and score it on ``data``: metrics ``[S, H]``."""
    p = predictors.get(name, seed=seed, **params)
    p.fit(fit if fit is not None else data, fit_gold if fit_gold is not None else gold)
    return score_layer(data.layer(layer), gold.layers[layer], p.predict(data.layer(layer), layer), block=32)


def masks(graph, view):
    """Whole ``[H, n, n]`` mask of every sample (small n only: this is the test's reference)."""
    return [graph.block_mask(s, 0, int(n), int(n)) for s, n in enumerate(view.lengths)]


def fitted(name, data, gold, seed=0, **params):
    return predictors.get(name, seed=seed, **params).fit(data, gold)


# -- window: the known table --------------------------------------------------------------------------

@pytest.mark.parametrize("n, causal, w, expected", [
    (512, False, 1, 0.998047), (512, False, 3, 0.994148), (512, False, 11, 0.978630),
    (512, False, 25, 0.951767), (40, True, 3, 0.903659), (40, True, 11, 0.725610),
    (40, True, 27, 0.428049), (97, False, 5, 0.949091)])
def test_window_sparsity_table(n, causal, w, expected):
    data, gold = dataset(n, causal, seed=5)
    res = scored(f"window-w{w}", data, gold)
    assert res["sparsity"][0, 0].item() == pytest.approx(expected, abs=5e-7)


@pytest.mark.parametrize("n, causal", [(97, False), (130, True), (45, False)])
def test_window_wide_enough_recalls_everything(n, causal):
    data, gold = dataset(n, causal, seed=13, heads=2)
    res = scored("window", data, gold, w=2 * n - 1)
    assert torch.all(res["recall"] == 1) and torch.all(res["sparsity"] == 0)


# -- fixed pattern ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, stride, summary, causal, pairs", [
    # n = 10, l = 4: blocks {0..3} {4..7} {8, 9}. c = 1: summary columns j = 3, 7.
    (10, 4, 1, False, 48),  # blocks 16 + 16 + 4, plus columns 3 and 7 outside their block: 2 * 6
    (10, 4, 1, True, 31),   # causal blocks 10 + 10 + 3, column 3 for i = 4..9 (6), column 7 for i = 8, 9 (2)
    (10, 4, 0, False, 36),  # blocks only
    (10, 4, 4, False, 100),  # every column is a summary column
    # n = 7, l = 3: blocks {0, 1, 2} {3, 4, 5} {6}; c = 2: summary columns 1, 2, 4, 5 (4 * 7 = 28),
    # plus the other columns inside their block: j = 0 (3 rows), j = 3 (3 rows), j = 6 (1 row).
    (7, 3, 2, False, 35),
])
def test_fixed_pattern_pair_counts(n, stride, summary, causal, pairs):
    data, gold = dataset(n, causal, seed=21)
    res = scored(f"fixed-l{stride}-c{summary}", data, gold)
    assert res["pred_pairs"][0, 0].item() == pairs


def test_fixed_pattern_rule_by_hand():
    data, gold = dataset(10, False, seed=21)
    p = fitted("fixed-l4-c1", data, gold)
    m = masks(p.predict(data.layer(0), 0), data.layer(0))[0][0]
    assert m[5].nonzero().flatten().tolist() == [3, 4, 5, 6, 7]
    assert m[9].nonzero().flatten().tolist() == [3, 7, 8, 9]


# -- longformer ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, causal, pairs", [
    ("longformer-n2-w0", False, 36),  # m (2n - m) = 2 * 18
    ("longformer-n2-w3", False, 58),  # rows 0, 1: 10 each; row 2: 4; rows 3..8: 5 each; row 9: 4
    ("longformer-n2-w0", True, 19),   # (0,0), (1,0), (1,1), and columns 0, 1 for rows 2..9
    ("longformer-n2-w3", True, 34),   # row 0: 1, row 1: 2, row 2: 3, rows 3..9: 4 each
    ("longformer-n0-w0", False, 0),
    # Globals 0 and 9: rows 0, 9 full (20); row 1: {0, 1, 2, 9}, rows 2..7: {0, i-1, i, i+1, 9}, row 8: 4.
    ("longformer-n1-w3-g2", False, 58),
])
def test_longformer_pair_counts(name, causal, pairs):
    data, gold = dataset(10, causal, seed=2)
    assert scored(name, data, gold)["pred_pairs"][0, 0].item() == pairs


# -- bigbird ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal, pairs", [(False, 3 * 45), (True, 1 + 2 + 3 * 43)])
def test_bigbird_draws_exactly_r_distinct_valid_keys(causal, pairs):
    data, gold = dataset(45, causal, seed=31, heads=3)
    res = scored("bigbird-r3-w0-g0", data, gold, seed=4)
    # Causal: query i draws min(3, i + 1) keys, all j <= i, so nothing is lost to the causal mask.
    assert torch.all(res["pred_pairs"] == pairs)


def test_bigbird_random_keys_by_hand():
    keys = random_keys(torch.tensor([5, 3]), 2, 5, 4, causal=True, generator=torch.Generator().manual_seed(3))
    assert keys.shape == (2, 2, 5, 4)
    for s, n in enumerate((5, 3)):
        for h in range(2):
            for i in range(5):
                row = keys[s, h, i].tolist()
                if i >= n:
                    assert row == [-1] * 4
                    continue
                drawn = [j for j in row if j >= 0]
                assert len(drawn) == min(4, i + 1) and len(set(drawn)) == len(drawn)
                assert all(0 <= j <= i for j in drawn) and row[len(drawn):] == [-1] * (4 - len(drawn))


def test_bigbird_more_random_keys_extend_fewer():
    data, gold = dataset(97, False, seed=8, samples=2, heads=2, ragged=True)
    view = data.layer(0)
    graphs = {r: fitted("bigbird", data, gold, seed=6, r=r, w=0, g=0).predict(view, 0) for r in (1, 2, 5)}
    assert torch.equal(graphs[5].keys[..., :1], graphs[1].keys)
    assert torch.equal(graphs[5].keys[..., :2], graphs[2].keys)
    for few, many in ((1, 2), (2, 5)):
        for a, b in zip(masks(graphs[few], view), masks(graphs[many], view)):
            assert not (a & ~b).any()


def test_bigbird_keys_are_uniform():
    # n = 10 valid keys, r = 3 draws without replacement for each of 3000 * 10 queries: every key is
    # drawn with probability 3/10, and every position of the permutation prefix is uniform on its own.
    n, r, samples = 10, 3, 3000
    keys = random_keys(torch.full((samples,), n), 1, n, r, False, torch.Generator().manual_seed(17))
    queries = samples * n
    counts = torch.bincount(keys.flatten(), minlength=n).double()
    sd = math.sqrt(queries * 0.3 * 0.7)
    assert torch.all((counts - queries * 0.3).abs() < 5 * sd), counts
    for m in range(r):
        counts = torch.bincount(keys[..., m].flatten(), minlength=n).double()
        assert torch.all((counts - queries / n).abs() < 5 * math.sqrt(queries * 0.1 * 0.9)), (m, counts)
    # Padding rows (beyond n) draw nothing.
    padded = random_keys(torch.tensor([7]), 2, 12, r, False, torch.Generator().manual_seed(1))
    assert torch.all(padded[:, :, 7:] == -1) and torch.all(padded[:, :, :7] >= 0)


def test_bigbird_defaults_include_window_and_globals():
    p = predictors.get("bigbird")
    assert p.name == "bigbird-r3-w3-g2" and (p.w, p.g, p.r) == (3, 2, 3)
    assert predictors.get("bigbird-r2-w0-g0").name == "bigbird-r2-w0-g0"


def test_bigbird_seed_and_layer_change_the_keys():
    data, gold = dataset(45, False, seed=3, layers=2, heads=2)
    keys = lambda seed, layer: fitted("bigbird", data, gold, seed=seed).predict(data.layer(layer), layer).parts[0].keys
    assert torch.equal(keys(1, 0), keys(1, 0))
    assert not torch.equal(keys(1, 0), keys(2, 0))
    assert not torch.equal(keys(1, 0), keys(1, 1))


# -- reformer -----------------------------------------------------------------------------------------

def test_reformer_identical_q_and_k_share_buckets():
    d = synthetic(samples=3, layers=2, heads=3, length=97, dim=8, seed=41)
    d.k = d.q.clone()
    gold = compute_gold(d)
    for b, h in ((2, 1), (8, 2), (30, 4)):
        p = fitted("reformer", d, gold, seed=9, b=b, h=h)
        for layer in range(2):
            view = d.layer(layer)
            for m in masks(p.predict(view, layer), view):
                assert torch.all(m.diagonal(dim1=1, dim2=2))


def test_reformer_buckets_by_hand():
    # d = 2, b = 4, one round, R = identity: buckets argmax(x1, x2, -x1, -x2).
    x = torch.tensor([[1.0, 0.2], [0.1, 2.0], [-3.0, 0.5], [0.3, -0.4], [5.0, 0.0]])[None, None]  # [1, 1, 5, 2]
    rot = torch.eye(2)[None, None]  # [H=1, h=1, d=2, b/2=2]
    codes = ReformerLSH.buckets(x, rot, torch.tensor([4]))
    assert codes[0, 0, :, 0].tolist() == [0, 1, 2, 3, -1]  # the fifth token is padding


def test_reformer_antipodal_vectors_get_opposite_buckets():
    x = torch.randn(2, 3, 45, 8, generator=torch.Generator().manual_seed(2))
    rot = torch.randn(3, 2, 8, 5, generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([45, 45])
    a, b = ReformerLSH.buckets(x, rot, lengths), ReformerLSH.buckets(-x, rot, lengths)
    assert torch.equal(b, (a + 5) % 10)
    assert torch.equal(ReformerLSH.buckets(3.5 * x, rot, lengths), a)  # scale does not change buckets


def test_reformer_more_rounds_never_lower_recall():
    fit, fit_gold, ev, ev_gold = split(97, False, seed=12, heads=3)
    few, many = fitted("reformer-raw-b8-h2", fit, fit_gold, seed=3), fitted("reformer-raw-b8-h4", fit, fit_gold, seed=3)
    assert torch.equal(many.rotations[:, :, :2], few.rotations)
    view = ev.layer(0)
    g_few, g_many = few.predict(view, 0), many.predict(view, 0)
    for a, b in zip(masks(g_few, view), masks(g_many, view)):
        assert not (a & ~b).any()
    r_few = score_layer(view, ev_gold.layers[0], g_few)["recall"]
    r_many = score_layer(view, ev_gold.layers[0], g_many)["recall"]
    assert torch.all(r_many >= r_few) and torch.any(r_many > r_few)


def test_reformer_codes_and_rotations():
    fit, fit_gold, ev, _ = split(130, True, seed=5, layers=2)
    p = fitted("reformer-raw-b6-h3", fit, fit_gold, seed=1)
    assert p.rotations.shape == (2, 2, 3, 8, 3)  # [L, H, h, d, b/2]
    g = p.predict(ev.layer(1), 1)
    for codes in (g.q_codes, g.k_codes):
        assert codes.shape == (2, 2, ev.max_len, 3) and codes.dtype == torch.int64
        for s, n in enumerate(ev.lengths.tolist()):
            assert codes[s, :, :n].min() >= 0 and codes[s, :, :n].max() < 6
            assert torch.all(codes[s, :, n:] == -1)


# -- routing ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [3, 8, 20])
def test_routing_clusters_are_balanced(k):
    # Ceil: every cluster keeps exactly min(n, ceil(n / k)) = ceil(n / k) queries and as many keys.
    fit, fit_gold, ev, _ = split(130, False, seed=19, heads=3)
    p = fitted("routing", fit, fit_gold, seed=2, k=k)
    g = p.predict(ev.layer(0), 0)
    for codes in (g.q_codes, g.k_codes):
        for s, n in enumerate(ev.lengths.tolist()):  # 116 and 109 tokens
            member = torch.stack([(codes[s, :, :n] == c).any(-1) for c in range(k)], 1)  # [H, k, n]
            assert torch.all(member.sum(-1) == math.ceil(n / k))
            assert torch.all(codes[s, :, n:] == -1)


def test_routing_keeps_the_tokens_closest_to_each_centroid():
    x = torch.nn.functional.normalize(torch.randn(2, 3, 45, 4, generator=torch.Generator().manual_seed(4)), dim=-1)
    mu = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(5))
    lengths = torch.tensor([45, 30])
    codes = balanced_codes(x, mu, lengths)
    for s, n in enumerate((45, 30)):
        for h in range(3):
            for c in range(5):
                dist = (x[s, h, :n] - mu[h, c]).norm(dim=-1)
                member = (codes[s, h, :n] == c).any(-1)
                assert int(member.sum()) == math.ceil(n / 5)
                assert dist[member].max() <= dist[~member].min()


def test_routing_by_hand():
    # Two centroids on the axes; 4 unit tokens; ceil(4 / 2) = 2 per cluster.
    x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])[None, None]
    mu = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    codes = balanced_codes(x, mu, torch.tensor([4]))
    # Cluster 0 keeps tokens 0, 1; cluster 1 keeps 2 (1.0) and 1 (0.6); token 3 is kept by none.
    assert codes[0, 0].tolist() == [[0, -1], [0, 1], [1, -1], [-1, -1]]


def test_routing_one_cluster_is_dense():
    fit, fit_gold, ev, ev_gold = split(45, False, seed=3)
    res = scored("routing-raw-k1", ev, ev_gold, fit=fit, fit_gold=fit_gold)
    assert torch.all(res["sparsity"] == 0) and torch.all(res["recall"] == 1)


def test_routing_more_clusters_than_points_is_an_error():
    data, gold = dataset(5, False, seed=1)
    with pytest.raises(PredictorError, match="clusters"):
        fitted("routing-raw-k20", data, gold)


# -- flops --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, flops", [
    ("window-w11", 0), ("bigbird-r5-w3-g2", 0), ("longformer-n4-w3", 0), ("fixed-l16-c2", 0),
    ("reformer-raw-b8-h2", 2 * 2 * 100 * 16 * 4 * 2),
    ("reformer-proj-b8-h2", 2 * (2 * 100 * 16 * 4 + 2 * 100 * 4 * 4 * 2)),
    ("routing-raw-k8", 2 * (2 * 100 * 16 * 8 + 100 * 8)),
    ("routing-proj-k8", 2 * (2 * 100 * 16 * 4 + 2 * 100 * 4 * 8 + 100 * 8)),
])
def test_flops(name, flops):
    assert predictors.get(name).flops(100, 16) == flops


# -- names, errors, sweeps ----------------------------------------------------------------------------

NAMES = ["window-w11", "window", "bigbird-r3-w3-g2", "bigbird-r1-w0-g0", "longformer-n2-w3",
         "longformer-n16-w27-g1", "fixed-l16-c2", "fixed-l8-c1-w3", "reformer-raw-b8-h2",
         "reformer-proj-b30-h4-w5", "routing-raw-k8", "routing-raw-k8-w11", "routing-proj-k20-g2"]


@pytest.mark.parametrize("name", NAMES)
def test_names_round_trip(name):
    p = predictors.get(name)
    assert p.name == name
    family, values = predictors.parse_name(name)
    assert family == name.split("-")[0]
    q = predictors.get(family, **values)
    assert q.name == name and q.values == p.values


@pytest.mark.parametrize("family", BASELINES)
def test_default_names_round_trip(family):
    name = predictors.get(family).name
    assert predictors.get(name).name == name


@pytest.mark.parametrize("name, params", [
    ("reformer", {"b": 7}), ("reformer", {"b": 0}), ("reformer", {"h": 0}), ("reformer", {"space": "pca"}),
    ("routing", {"k": 0}), ("fixed", {"l": 4, "c": 5}), ("fixed", {"l": 0}), ("bigbird", {"r": -1}),
    ("longformer", {"n": -2}), ("bigbird", {"g": 3})])
def test_bad_parameters(name, params):
    with pytest.raises(PredictorError):
        predictors.get(name, **params)


def test_predict_before_fit_and_wrong_heads():
    fit, fit_gold, ev, _ = split(45, False, seed=1)
    for name in ("reformer", "routing"):
        with pytest.raises(PredictorError, match="fit"):
            predictors.get(name).predict(ev.layer(0), 0)
        p = fitted(name, fit, fit_gold)
        with pytest.raises(PredictorError, match="heads"):
            p.predict(ev.layer(0).heads([0]), 0)
        with pytest.raises(PredictorError, match="layer"):
            p.predict(ev.layer(0), 3)


@pytest.mark.parametrize("family", BASELINES)
def test_sweeps_build_valid_predictors(family):
    text = (SWEEPS / f"{family}.toml").read_text()
    assert text.startswith("#") and "cartesian product" in text
    assert set(tomllib.loads(text)) == {"smoke", "default", "full", "scaling"}  # [scaling]: bench_scaling's point
    sizes = {}
    for profile in ("smoke", "default", "full"):
        configs = family_configs(family, profile)
        names = [predictors.get(family, **c).name for c in configs]
        assert len(set(names)) == len(names)
        assert all(predictors.get(n).name == n for n in names)
        sizes[profile] = len(configs)
    # The window baseline is swept without sinks, with fixed sinks (g = 1, 2) and with learned ones (s = 1, 2).
    x = 2 if family == "window" else 1
    y = 5 if family == "window" else 1
    assert 2 <= sizes["smoke"] <= 3 * x and 5 <= sizes["default"] <= 7 * y and sizes["full"] > sizes["default"]


def test_sweeps_hold_the_paper_grid():
    windows = [0] + list(range(1, 28, 2))
    full = lambda family: tomllib.loads((SWEEPS / f"{family}.toml").read_text())["full"]["grid"]
    window = tomllib.loads((SWEEPS / "window.toml").read_text())["full"]["grids"]
    assert window[0]["w"] == windows and window[0]["g"] == [0, 1, 2] and window[1]["w"] == windows
    assert full("reformer")["b"] == list(range(2, 31, 2)) and full("reformer")["h"] == [1, 2, 3, 4]
    assert full("routing")["k"] == list(range(2, 21))
    assert full("bigbird")["r"] == [1, 2, 3, 4, 5]
    assert full("reformer")["space"] == full("routing")["space"] == ["raw", "proj"]


# -- determinism --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bigbird-r4-w3-g2", "longformer-n3-w5", "fixed-l8-c2", "reformer-raw-b10-h3",
                                  "routing-raw-k6-w3"])
def test_same_seed_same_graph_and_other_seed_other_graph(name):
    fit, fit_gold, ev, _ = split(97, True, seed=27, layers=2, heads=2)
    view = ev.layer(1)
    a = masks(fitted(name, fit, fit_gold, seed=11).predict(view, 1), view)
    b = masks(fitted(name, fit, fit_gold, seed=11).predict(view, 1), view)
    c = masks(fitted(name, fit, fit_gold, seed=12).predict(view, 1), view)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    random = name.split("-")[0] in ("bigbird", "reformer", "routing")
    assert any(not torch.equal(x, y) for x, y in zip(a, c)) == random


def test_grouped_query_heads():
    d = no_values(synthetic(samples=4, layers=1, heads=4, kv_heads=2, length=45, dim=8, seed=9))
    fit, ev = d.split()
    fg, eg = compute_gold(fit), compute_gold(ev)
    for name in ("reformer-raw-b4-h2", "routing-raw-k4", "bigbird"):
        res = scored(name, ev, eg, fit=fit, fit_gold=fg)
        assert res["recall"].shape == (2, 4) and torch.all((res["recall"] >= 0) & (res["recall"] <= 1))


# -- the learned projection space ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["reformer-proj-b4-h2", "routing-proj-k4"])
def test_projection_space(name):
    pytest.importorskip("predictors.projections")
    fit, fit_gold, ev, ev_gold = split(45, False, seed=33)
    p = fitted(name, fit, fit_gold, seed=5)
    assert p.learned and p.projections is not None
    view = ev.layer(0)
    g = p.predict(view, 0)
    assert g.q_codes.shape[:3] == (2, 2, ev.max_len)
    res = score_layer(view, ev_gold.layers[0], g)
    assert torch.all((res["recall"] >= 0) & (res["recall"] <= 1))
    again = fitted(name, fit, fit_gold, seed=5).predict(view, 0)
    assert torch.equal(again.q_codes, g.q_codes) and torch.equal(again.k_codes, g.k_codes)


def test_raw_reformer_is_not_learned():
    assert not predictors.get("reformer-raw-b4-h1").learned
    assert predictors.get("reformer-proj-b4-h1").learned and predictors.get("routing").learned


# -- properties ---------------------------------------------------------------------------------------

FAMILY_PARAMS = {
    "bigbird": st.fixed_dictionaries({"r": st.integers(0, 6), "w": st.integers(0, 7), "g": st.integers(0, 2)}),
    "longformer": st.fixed_dictionaries({"n": st.integers(0, 5), "w": st.integers(0, 7)}),
    "fixed": st.integers(1, 12).flatmap(lambda stride: st.fixed_dictionaries(
        {"l": st.just(stride), "c": st.integers(0, stride), "w": st.integers(0, 7)})),
    "reformer": st.fixed_dictionaries({"b": st.integers(1, 8).map(lambda b: 2 * b), "h": st.integers(1, 3),
                                       "w": st.integers(0, 7)}),
    "routing": st.fixed_dictionaries({"k": st.integers(1, 9), "w": st.integers(0, 7)}),
    "window": st.fixed_dictionaries({"w": st.integers(0, 30), "g": st.integers(0, 2)}),
}


@settings(max_examples=30, deadline=None)
@given(family=st.sampled_from(sorted(FAMILY_PARAMS)), data=st.data(), length=st.sampled_from([23, 45, 61]),
       causal=st.booleans(), seed=st.integers(0, 2 ** 31 - 1), extra=st.integers(1, 9))
def test_recall_sparsity_bounds_and_window_monotone(family, data, length, causal, seed, extra):
    params = data.draw(FAMILY_PARAMS[family])
    fit, fit_gold, ev, ev_gold = split(length, causal, seed=length % 3)
    base = scored(family, ev, ev_gold, seed=seed, fit=fit, fit_gold=fit_gold, **params)
    for m in ("recall", "sparsity"):
        assert torch.all((base[m] >= 0) & (base[m] <= 1)), m
    wider = scored(family, ev, ev_gold, seed=seed, fit=fit, fit_gold=fit_gold, **{**params, "w": params["w"] + extra})
    assert torch.all(wider["recall"] >= base["recall"])
    assert torch.all(wider["sparsity"] <= base["sparsity"])


def test_long_sequence_prediction_stays_linear():
    # 20011 tokens: an n x n float tensor would be 1.6 GB; the codes and key lists are O(n) per head.
    n = 20011
    long = no_values(synthetic(samples=1, layers=1, heads=2, length=n, dim=8, ragged=False, seed=23))
    small, small_gold = split(45, False, seed=2)[:2]
    view = long.layer(0)
    for name in ("reformer-raw-b8-h2", "routing-raw-k16", "bigbird-r3-w0-g0"):
        graph = fitted(name, small, small_gold).predict(view, 0)
        codes = [graph.q_codes, graph.k_codes] if hasattr(graph, "q_codes") else [graph.keys]
        assert all(c.shape[:3] == (1, 2, n) and c.shape[3] <= 16 for c in codes)
        assert graph.block_mask(0, n - 5, n, n).shape == (2, 5, n)
