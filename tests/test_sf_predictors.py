"""The Sparsefinder families (sf-dist, sf-quant, sf-kmeans), the batched k-means, and their sweeps."""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import predictors
from bench.data.synthetic import synthetic
from bench.evaluation.gold import compute_gold
from bench.evaluation.metrics import macro_average, score_layer
from predictors.data import AttentionData
from predictors.errors import PredictorError
from predictors.graphs import CodeGraph, DistanceGraph
from predictors.kmeans import assign, kmeans
from predictors.registry import family_class
from predictors.torch.sf_quantization import quantile_boundaries

FAST = settings(max_examples=12, deadline=None)
SWEEPS = Path(__file__).resolve().parents[1] / "predictors" / "sweeps"
FAMILIES = ("sf-dist", "sf-quant", "sf-kmeans")


def masks(graph, view):
    """The predicted mask of every sample, ``[H, n, n]`` each, restricted to valid (causal) pairs."""
    out = []
    for s in range(view.q.shape[0]):
        n = int(view.lengths[s])
        m = graph.block_mask(s, 0, n, n)
        if view.causal:
            m &= torch.ones(n, n, dtype=torch.bool).tril()
        out.append(m)
    return out


def scores(view, gold_layer, graph):
    res = macro_average(score_layer(view, gold_layer, graph))
    return {k: float(v.mean()) for k, v in res.items()}


def fitted(name, fit, gold, seed=0):
    return predictors.get(name, seed=seed).fit(fit, gold)


@pytest.fixture(scope="module")
def synth():
    data = synthetic(samples=7, layers=1, heads=3, length=45, dim=10, seed=61)
    fit, ev = data.split(0.6)
    return data, fit, ev, compute_gold(fit), compute_gold(ev)


# -- names ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [
    "sf-kmeans-r4-k16-top2-w11-g1", "sf-kmeans-r4-k16-top1", "sf-kmeans-r6-shared-k3-top3-g2",
    "sf-dist-r4-t2", "sf-dist-r4-t0.5", "sf-dist-r3-shared-cos-t0.25-w7", "sf-dist-r4-t1e+09",
    "sf-quant-r4-b8", "sf-quant-r5-tanh-b13-w3-g1", "sf-quant-r4-shared-b2",
])
def test_names_read_back(name):
    p = predictors.get(name)
    assert p.name == name
    family, values = predictors.parse_name(name)
    assert family == p.family and family_class(family)(**values).name == name


def test_names_encode_every_parameter():
    assert predictors.get("sf-dist", t=0.5, metric="cos", proj="shared").name == "sf-dist-r4-shared-cos-t0.5"
    assert predictors.get("sf-quant", b=7, mode="tanh").name == "sf-quant-r4-tanh-b7"
    assert predictors.get("sf-kmeans", k=12, top=2, r=8, w=11, g=1).name == "sf-kmeans-r8-k12-top2-w11-g1"
    # Defaults of string choices are left out of names but are still parameters.
    assert predictors.get("sf-kmeans-r4-k16-top2").values["proj"] == "sep"


@pytest.mark.parametrize("name, message", [
    ("sf-dist-r4-t-1", "cannot read"), ("sf-kmeans-r4-k4-top5", "top <= k"), ("sf-quant-r4-b0", "b must be >= 1"),
    ("sf-dist-r0-t1", "r must be >= 1"), ("sf-dist-r4-euclid-t1", "cannot read"),
])
def test_bad_names_are_errors(name, message):
    with pytest.raises(PredictorError, match=message):
        predictors.get(name)


def test_parameters_that_cannot_be_named_are_refused():
    with pytest.raises(PredictorError, match="contain '-'"):
        predictors.get("sf-dist", t=1e-5)
    with pytest.raises(PredictorError, match="t must be >= 0"):
        predictors.get("sf-dist", t=-1.0)


# -- known answers on hand-built data -----------------------------------------------------------------------
def two_clusters(lengths=(37, 30, 33, 29, 31), heads=2, dim=8, seed=71):
    """Queries and keys at +c or -c (per head), with tiny noise: attention stays inside a cluster."""
    g = torch.Generator().manual_seed(seed)
    s, t = len(lengths), max(lengths)
    centre = torch.nn.functional.normalize(torch.randn(heads, dim, generator=g), dim=-1) * 3.0
    side_q = torch.randint(2, (s, heads, t), generator=g) * 2 - 1
    side_k = torch.randint(2, (s, heads, t), generator=g) * 2 - 1
    q = side_q[..., None] * centre[None, :, None] + 0.02 * torch.randn(s, heads, t, dim, generator=g)
    k = side_k[..., None] * centre[None, :, None] + 0.02 * torch.randn(s, heads, t, dim, generator=g)
    data = AttentionData(q=q[:, None], k=k[:, None], lengths=torch.tensor(lengths), causal=False,
                         descriptor={"test": "two-clusters", "seed": seed})
    return data, side_q, side_k


def test_kmeans_with_two_clusters_predicts_exactly_the_within_cluster_pairs():
    data, side_q, side_k = two_clusters()
    fit, ev = data.split(0.4)
    gold_ev = compute_gold(ev)
    p = fitted("sf-kmeans-r4-shared-k2-top1", fit, compute_gold(fit), seed=3)
    view = ev.layer(0)
    graph = p.predict(view, 0)
    n_fit = fit.num_samples
    for s, m in enumerate(masks(graph, view)):
        n = int(view.lengths[s])
        within = side_q[n_fit + s, :, :n, None] == side_k[n_fit + s, :, None, :n]
        assert torch.equal(m, within)
        assert torch.equal(gold_ev.layers[0].block(s, 0, n, n)[0], within)  # the data is what it claims
    res = scores(view, gold_ev.layers[0], graph)
    assert res["recall"] == 1.0 and res["precision"] == 1.0 and res["exact"] == 1.0


@pytest.mark.parametrize("name", ["sf-dist-r4-shared-t0.001", "sf-dist-r4-shared-cos-t0.001",
                                  "sf-quant-r4-shared-b20", "sf-quant-r4-shared-tanh-b20",
                                  "sf-kmeans-r4-shared-k20-top1"])
def test_identical_queries_and_keys_always_predict_the_diagonal(name):
    g = torch.Generator().manual_seed(83)
    q = torch.randn(4, 1, 2, 41, 6, generator=g)
    data = AttentionData(q=q, k=q.clone(), lengths=torch.tensor([41, 39, 23, 34]), causal=True,
                         descriptor={"test": "identical", "seed": 83})
    fit, ev = data.split(0.5)
    p = fitted(name, fit, compute_gold(fit), seed=4)
    view = ev.layer(0)
    for m in masks(p.predict(view, 0), view):
        assert bool(m.diagonal(dim1=1, dim2=2).all())


def test_distance_extremes(synth):
    _, fit, ev, gold_fit, gold_ev = synth
    view = ev.layer(0)
    everything = scores(view, gold_ev.layers[0], fitted("sf-dist-r4-t1e+09", fit, gold_fit, seed=5).predict(view, 0))
    nothing = scores(view, gold_ev.layers[0], fitted("sf-dist-r4-t0", fit, gold_fit, seed=5).predict(view, 0))
    assert everything["recall"] == 1.0 and everything["sparsity"] == 0.0
    assert nothing["recall"] == 0.0 and nothing["sparsity"] == 1.0 and math.isnan(nothing["precision"])


def test_window_and_globals_are_added(synth):
    _, fit, ev, gold_fit, _ = synth
    view = ev.layer(0)
    base = masks(fitted("sf-dist-r4-t0", fit, gold_fit, seed=5).predict(view, 0), view)
    extra = masks(fitted("sf-dist-r4-t0-w3-g1", fit, gold_fit, seed=5).predict(view, 0), view)
    for b, e in zip(base, extra):
        assert not b.any() and bool(e.diagonal(dim1=1, dim2=2).all()) and bool(e[:, :, 0].all())


# -- invariants -----------------------------------------------------------------------------------------------
def subset(small, large):
    return all(bool((a & ~b).sum() == 0) for a, b in zip(small, large))


@FAST
@given(st.integers(0, 3000), st.integers(0, 3000), st.sampled_from(["l2", "cos"]))
def test_larger_threshold_predicts_a_superset(synth, i1, i2, metric):
    _, fit, ev, gold_fit, _ = synth
    scale = 100 if metric == "l2" else 1500  # cosine distances lie in [0, 2]
    t1, t2 = min(i1, i2) / scale, max(i1, i2) / scale
    view = ev.layer(0)
    lo = predictors.get("sf-dist", t=t1, metric=metric, seed=7).fit(fit, gold_fit)
    hi = predictors.get("sf-dist", t=t2, metric=metric, seed=7).fit(fit, gold_fit)
    assert lo.projections is hi.projections  # one training serves the whole sweep
    m_lo, m_hi = masks(lo.predict(view, 0), view), masks(hi.predict(view, 0), view)
    assert subset(m_lo, m_hi)
    if t1 == 0:
        assert not any(bool(m.any()) for m in m_lo)


@FAST
@given(st.integers(1, 7), st.integers(1, 4), st.sampled_from(["rank", "tanh"]), st.booleans())
def test_buckets_that_refine_predict_a_subset(synth, b, factor, mode, shared):
    _, fit, _, gold_fit, _ = synth
    view = fit.layer(0)  # on the fit samples the rank buckets are exactly the fitted ones
    proj = "shared" if shared else "sep"
    coarse = predictors.get("sf-quant", b=b, mode=mode, proj=proj, seed=8).fit(fit, gold_fit)
    fine = predictors.get("sf-quant", b=b * factor, mode=mode, proj=proj, seed=8).fit(fit, gold_fit)
    assert subset(masks(fine.predict(view, 0), view), masks(coarse.predict(view, 0), view))
    if b == 1:
        assert all(bool(m.all()) for m in masks(coarse.predict(view, 0), view))


def test_rank_buckets_hold_equal_counts(synth):
    _, fit, _, gold_fit, _ = synth
    from predictors.projections import projected_points

    p = predictors.get("sf-quant", b=6, seed=9).fit(fit, gold_fit)
    pts = projected_points(p.projections, fit, 0)  # [H, N, r]
    codes = p.codes(pts[None], 0)[0]  # [H, N, r]
    n = pts.shape[1]
    for h in range(pts.shape[0]):
        for c in range(pts.shape[2]):
            counts = torch.bincount(codes[h, :, c], minlength=6)
            assert bool(((counts - n / 6).abs() <= 2).all()), counts


def test_quantile_boundaries_match_torch_quantile():
    x = torch.randn(3, 4, 101, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    for b in (2, 5, 7):
        levels = torch.arange(1, b, dtype=torch.float64) / b
        want = torch.quantile(x, levels, dim=-1).permute(1, 2, 0)
        torch.testing.assert_close(quantile_boundaries(x, b), want)


@FAST
@given(st.integers(2, 9), st.data())
def test_more_centroids_per_point_predict_a_superset(synth, k, data):
    _, fit, ev, gold_fit, _ = synth
    top1 = data.draw(st.integers(1, k))
    top2 = data.draw(st.integers(top1, k))
    view = ev.layer(0)
    a = predictors.get("sf-kmeans", k=k, top=top1, seed=10).fit(fit, gold_fit)
    b = predictors.get("sf-kmeans", k=k, top=top2, seed=10).fit(fit, gold_fit)
    assert torch.equal(a.centroids, b.centroids)
    assert subset(masks(a.predict(view, 0), view), masks(b.predict(view, 0), view))
    if top2 == k:
        assert all(bool(m.all()) for m in masks(b.predict(view, 0), view))


# -- fitting: the split, determinism, compact graphs, flops ---------------------------------------------------
@pytest.mark.parametrize("name", ["sf-dist-r4-t2", "sf-quant-r4-b5", "sf-kmeans-r4-k5-top2"])
def test_fitted_state_ignores_the_eval_samples(synth, name):
    data, fit, _, gold_fit, _ = synth
    n_fit = fit.num_samples
    q, k = data.q.clone(), data.k.clone()
    q[n_fit:], k[n_fit:] = torch.randn_like(q[n_fit:]) * 50, k[n_fit:].flip(-2)
    # A new descriptor, so the projections are trained again rather than taken from the cache.
    changed = replace(data, q=q, k=k, descriptor={**data.descriptor, "perturbed_eval": True})
    fit2, _ = changed.split(0.6)
    a = fitted(name, fit, gold_fit, seed=11)
    b = fitted(name, fit2, compute_gold(fit2), seed=11)
    assert a.projections is not b.projections and a.learned
    assert torch.equal(a.projections.wq, b.projections.wq) and torch.equal(a.projections.wk, b.projections.wk)
    for attr in ("boundaries", "centroids"):
        if getattr(a, attr, None) is not None:
            assert torch.equal(getattr(a, attr), getattr(b, attr))


def test_same_seed_same_centroids_and_boundaries(synth):
    _, fit, _, gold_fit, _ = synth
    from predictors.projections import clear_projection_cache

    a = predictors.get("sf-kmeans-r4-k6-top1", seed=12).fit(fit, gold_fit)
    q = predictors.get("sf-quant-r4-b6", seed=12).fit(fit, gold_fit)
    clear_projection_cache()  # the second fit trains again from scratch
    b = predictors.get("sf-kmeans-r4-k6-top1", seed=12).fit(fit, gold_fit)
    r = predictors.get("sf-quant-r4-b6", seed=12).fit(fit, gold_fit)
    assert a.projections is not b.projections
    assert torch.equal(a.centroids, b.centroids) and torch.equal(q.boundaries, r.boundaries)
    c = predictors.get("sf-kmeans-r4-k6-top1", seed=13).fit(fit, gold_fit)
    assert not torch.equal(a.centroids, c.centroids)


def test_more_clusters_than_fit_points_is_an_error():
    data = synthetic(samples=3, layers=1, heads=2, length=5, dim=4, seed=97, ragged=False)
    fit, _ = data.split(0.4)
    with pytest.raises(PredictorError, match="sf-kmeans-r4-k11-top1: kmeans: k=11 clusters but group 0 has only 10"):
        fitted("sf-kmeans-r4-k11-top1", fit, compute_gold(fit))


def test_predict_before_fit_is_an_error(synth):
    with pytest.raises(PredictorError, match="call fit"):
        predictors.get("sf-dist-r4-t1").predict(synth[2].layer(0), 0)


@pytest.mark.parametrize("name, kind", [("sf-dist-r3-t2", DistanceGraph), ("sf-quant-r3-b4", CodeGraph),
                                        ("sf-kmeans-r3-k4-top2", CodeGraph)])
def test_graphs_are_compact_on_causal_grouped_head_data(name, kind):
    data = synthetic(samples=5, layers=2, heads=4, kv_heads=2, length=53, dim=8, seed=91, causal=True)
    fit, ev = data.split(0.6)
    gold_ev = compute_gold(ev)
    p = fitted(name, fit, compute_gold(fit), seed=14)
    for layer in range(2):
        view = ev.layer(layer)
        graph = p.predict(view, layer)
        assert isinstance(graph, kind)
        s, h, t = view.q.shape[:3]
        for f in fields(graph):
            v = getattr(graph, f.name)
            if isinstance(v, torch.Tensor):
                assert v.shape[:3] == (s, h, t) and v.shape[3] <= 3  # O(T) per head, never T x T
        res = scores(view, gold_ev.layers[layer], graph)
        assert 0.0 <= res["recall"] <= 1.0 and 0.0 <= res["sparsity"] <= 1.0


def test_flops_follow_the_documented_formulas():
    n, d = 97, 24
    assert predictors.get("sf-dist-r4-t2").flops(n, d) == 4 * n * d * 4 + n * n * (3 * 4 + 1)
    assert predictors.get("sf-dist-r4-cos-t2").flops(n, d) == 4 * n * d * 4 + 6 * n * 4 + n * n * (2 * 4 + 1)
    assert predictors.get("sf-quant-r4-b6").flops(n, d) == 4 * n * d * 4 + 2 * n * 4 * 3 + 4 * n * n
    assert predictors.get("sf-quant-r4-tanh-b6").flops(n, d) == 4 * n * d * 4 + 2 * n * 4 * 4 + 4 * n * n
    assert predictors.get("sf-kmeans-r4-k12-top2").flops(n, d) == (4 * n * d * 4 + 4 * n * 12 * 4 + 2 * n * 12 * 2
                                                                   + 4 * n * n)
    for fam in FAMILIES:
        p = predictors.get(fam)
        assert 0 < p.flops(n, d) < p.flops(n + 1, d)


# -- k-means ---------------------------------------------------------------------------------------------------
def test_kmeans_finds_well_separated_clusters():
    g = torch.Generator().manual_seed(15)
    centres = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    sizes = (17, 23, 31)
    pts = torch.cat([centres[c] + torch.randn(sz, 2, generator=g) for c, sz in enumerate(sizes)])
    x = torch.stack([pts, pts + 5.0, -pts])  # three groups, solved together
    c = kmeans(x, 3, seed=1)
    assert c.shape == (3, 3, 2)
    bounds = torch.tensor([0, 17, 40, 71])
    means = torch.stack([x[:, bounds[i]:bounds[i + 1]].mean(1) for i in range(3)], 1)  # [G, 3, 2]
    for gi in range(3):
        got = sorted(c[gi].tolist())
        want = sorted(means[gi].tolist())
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want))


def test_kmeans_errors_name_the_problem():
    with pytest.raises(ValueError, match="k=6 clusters but group 0 has only 5 points"):
        kmeans(torch.randn(2, 5, 3), 6)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 3:] = False
    with pytest.raises(ValueError, match="group 1 has only 3 points"):
        kmeans(torch.randn(2, 9, 3), 4, valid=valid)
    with pytest.raises(ValueError, match="unknown init"):
        kmeans(torch.randn(1, 9, 3), 2, init="forgy")


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_kmeans_is_deterministic_and_ignores_invalid_points(init):
    g = torch.Generator().manual_seed(16)
    x = torch.randn(3, 57, 4, generator=g)
    valid = torch.rand(3, 57, generator=g) < 0.7
    a = kmeans(x, 5, seed=21, init=init, valid=valid)
    b = kmeans(x, 5, seed=torch.Generator().manual_seed(21), init=init, valid=valid)
    junk = x.masked_fill(~valid[..., None], float("inf"))
    c = kmeans(junk, 5, seed=21, init=init, valid=valid)
    assert torch.equal(a, b) and torch.equal(a, c) and bool(torch.isfinite(a).all())
    assert not torch.equal(a, kmeans(x, 5, seed=22, init=init, valid=valid))


@FAST
@given(st.integers(1, 3), st.integers(5, 41), st.integers(1, 5), st.integers(0, 10 ** 6))
def test_kmeans_ends_at_a_fixed_point(groups, n, k, seed):
    x = torch.randn(groups, n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    c = kmeans(x, k, iters=200, seed=seed)
    labels = assign(x, c)[..., 0]
    for gi in range(groups):
        for j in range(k):
            members = x[gi, labels[gi] == j]
            if len(members):
                torch.testing.assert_close(c[gi, j], members.mean(0))


def test_assign_orders_centroids_by_distance():
    x = torch.tensor([[[0.0], [2.9], [10.0]]])
    c = torch.tensor([[[0.0], [3.0], [9.0]]])
    assert assign(x, c, 3).tolist() == [[[0, 1, 2], [1, 0, 2], [2, 1, 0]]]
    assert torch.equal(assign(x, c, 1)[..., 0], assign(x, c, 2)[..., 0])


# -- sweeps ----------------------------------------------------------------------------------------------------
def points(grid):
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


@pytest.mark.parametrize("family", FAMILIES)
def test_sweep_files_are_valid_cartesian_grids(family):
    sweep = tomllib.loads((SWEEPS / f"{family}.toml").read_text())
    assert set(sweep) == {"smoke", "default", "full", "scaling"}  # [scaling]: bench_scaling's point
    cls = family_class(family)
    keys = {p.key for p in cls.all_params()}
    sizes = {}
    for profile in ("smoke", "default", "full"):
        grids = sweep[profile]["grids"] if "grids" in sweep[profile] else [sweep[profile]["grid"]]
        pts = []
        for grid in grids:
            assert set(grid) <= keys and all(isinstance(v, list) and v for v in grid.values())
            pts += points(grid)
        sizes[profile] = len(pts)
        names = [cls(**pt).name for pt in pts]
        assert len(set(names)) == len(names)
        assert all(predictors.get(nm).name == nm for nm in names)
    assert 2 <= sizes["smoke"] <= 3 and 4 <= sizes["default"] <= 10 and sizes["full"] > sizes["default"]
    full = sweep["full"]["grids"] if "grids" in sweep["full"] else [sweep["full"]["grid"]]
    if family == "sf-dist":
        # The paper's absolute grid stays in full beside the calibrated budgets; default is calibrated.
        assert full[0]["t"] == [x / 2 for x in range(1, 11)] + [6.0, 7.0, 8.0, 9.0, 10.0]
        assert "sp" in full[1] and set(sweep["default"]["grid"]) == {"r", "sp"}
    elif family == "sf-quant":
        assert full[0]["b"] == list(range(2, 21))
    else:
        full = full[0]
        assert full["k"] == [2, 4, 8, 12, 16, 20] and full["top"] == [1, 2]
