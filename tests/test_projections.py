"""Learned projections: negative sampling, the hinge loss, training, determinism, caching, the split."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import predictors.projections as pj
from bench.data.synthetic import synthetic
from bench.evaluation.gold import compute_gold
from bench.evaluation.metrics import macro_average, score_layer
from predictors.data import AttentionData
from predictors.errors import PredictorError
from predictors.graphs import DistanceGraph
from predictors.negatives import sample_negatives, sample_negatives_csr
from predictors.projections import (
    Projections,
    cached_projections,
    clear_projection_cache,
    fit_projections,
    hinge_loss,
    projected_points,
)

FAST = settings(max_examples=30, deadline=None)


def check_draw(rows, cols, gold, allowed, num):
    """Every drawn pair is allowed and non-gold, no row repeats a key, and each row has its count."""
    cand = allowed & ~gold
    assert rows.dtype == cols.dtype == torch.long
    assert bool(torch.all(rows[1:] >= rows[:-1])), "pairs must come ordered by row"
    if rows.numel():
        assert bool(cand[rows, cols].all())
    pairs = rows * (gold.shape[1] + 1) + cols
    assert pairs.unique().numel() == pairs.numel(), "a row drew the same key twice"
    got = torch.bincount(rows, minlength=gold.shape[0])
    assert torch.equal(got, torch.minimum(num, cand.sum(-1)))


@st.composite
def prefix_rows(draw):
    """Rows with a prefix of allowed keys, a gold subset of it, and a wanted count."""
    n = draw(st.integers(1, 23))
    nrows = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    g = torch.Generator().manual_seed(seed)
    limit = torch.randint(1, n + 1, (nrows,), generator=g)
    allowed = torch.arange(n)[None, :] < limit[:, None]
    density = draw(st.sampled_from([0.05, 0.3, 0.7, 1.0]))
    gold = (torch.rand(nrows, n, generator=g) < density) & allowed
    num = torch.randint(0, n + 1, (nrows,), generator=g)
    if draw(st.booleans()):
        num = gold.sum(-1)  # what training asks for: |N_i| = |P_i|
    return limit, allowed, gold, num, seed


@FAST
@given(prefix_rows())
def test_dense_sampler_draws_only_valid_nongold_distinct_keys(case):
    _, allowed, gold, num, seed = case
    rows, cols = sample_negatives(gold, allowed, num, torch.Generator().manual_seed(seed))
    check_draw(rows, cols, gold, allowed, num)


@FAST
@given(prefix_rows())
def test_csr_sampler_draws_only_valid_nongold_distinct_keys(case):
    limit, allowed, gold, num, seed = case
    pr, pc = gold.nonzero(as_tuple=True)
    perm = torch.randperm(pr.numel(), generator=torch.Generator().manual_seed(seed))  # any pair order works
    rows, cols = sample_negatives_csr(limit, pr[perm], pc[perm], num, torch.Generator().manual_seed(seed))
    check_draw(rows, cols, gold, allowed, num)


def test_dense_sampler_with_arbitrary_masks():
    # Allowed keys need not be a prefix for the dense sampler (holes, padding in the middle).
    g = torch.Generator().manual_seed(4)
    allowed = torch.rand(13, 29, generator=g) < 0.6
    gold = allowed & (torch.rand(13, 29, generator=g) < 0.3)
    num = gold.sum(-1) + 2
    rows, cols = sample_negatives(gold, allowed, num, g)
    check_draw(rows, cols, gold, allowed, num)


@pytest.mark.parametrize("take", [3, 5])  # 3 of 7: the rejection path; 5 of 7: the dense fallback
def test_samplers_are_uniform(take):
    # One row shape repeated 3001 times: keys 0..10 allowed, 1, 4, 6, 9 gold -> 7 candidates.
    reps, n = 3001, 11
    limit = torch.full((reps,), n)
    gold = torch.zeros(reps, n, dtype=torch.bool)
    gold[:, [1, 4, 6, 9]] = True
    allowed = torch.ones(reps, n, dtype=torch.bool)
    num = torch.full((reps,), take)
    pr, pc = gold.nonzero(as_tuple=True)
    expect = reps * take / 7
    sd = math.sqrt(reps * (take / 7) * (1 - take / 7))
    for _, cols in (sample_negatives(gold, allowed, num, torch.Generator().manual_seed(31)),
                    sample_negatives_csr(limit, pr, pc, num, torch.Generator().manual_seed(37))):
        freq = torch.bincount(cols, minlength=n)
        assert freq[[1, 4, 6, 9]].sum() == 0
        cand = freq[[0, 2, 3, 5, 7, 8, 10]].double()
        assert cand.sum() == reps * take
        assert bool(((cand - expect).abs() < 5 * sd).all()), cand


def test_csr_sampler_takes_all_candidates_when_too_few():
    # Row 0: 5 allowed, 3 gold, wants 3 -> exactly the 2 others. Row 1: all 4 allowed keys gold -> none.
    limit = torch.tensor([5, 4])
    pr = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    pc = torch.tensor([0, 2, 4, 0, 1, 2, 3])
    rows, cols = sample_negatives_csr(limit, pr, pc, torch.tensor([3, 4]), torch.Generator().manual_seed(5))
    assert rows.tolist() == [0, 0] and sorted(cols.tolist()) == [1, 3]


def record_training(monkeypatch):
    """Record every hinge batch (s_b, i_b) and the negatives drawn for it during training."""
    calls = []
    orig_hinge, orig_sampler = pj._LayerBatches.hinge, pj.sample_negatives_csr

    def hinge(self, s_b, i_b, *args, **kw):
        calls.append({"layer_gold": self.lg, "s": s_b.clone(), "i": i_b.clone()})
        return orig_hinge(self, s_b, i_b, *args, **kw)

    def sampler(*args):
        rows, cols = orig_sampler(*args)
        calls[-1]["neg"] = (rows.clone(), cols.clone())
        return rows, cols

    monkeypatch.setattr(pj._LayerBatches, "hinge", hinge)
    monkeypatch.setattr(pj, "sample_negatives_csr", sampler)
    return calls


@pytest.mark.parametrize("causal", [True, False])
def test_training_negatives_are_never_future_padded_or_gold(monkeypatch, causal):
    data = synthetic(samples=4, layers=1, heads=3, kv_heads=1, length=43, dim=8, seed=17, causal=causal)
    gold = compute_gold(data)
    calls = record_training(monkeypatch)
    fit_projections(data, gold, epochs=1, batch_queries=29)
    assert calls and sum(c["neg"][0].numel() for c in calls) > 0
    t = data.max_len
    dense = torch.zeros(4, 3, t, t, dtype=torch.bool)  # gold [S, H, T, T], from the gold's own blocks
    for s in range(4):
        n = int(data.lengths[s])
        dense[s, :, :n, :n] = gold.layers[0].block(s, 0, n, n)[0]
    for c in calls:
        b = c["s"].numel()
        rows, cols = c["neg"]
        h, s, i = rows // b, c["s"][rows % b], c["i"][rows % b]
        assert bool((cols < data.lengths[s]).all()), "a padded key was drawn"
        if causal:
            assert bool((cols <= i).all()), "a future key was drawn"
        assert not bool(dense[s, h, i, cols].any()), "a gold key was drawn as a negative"


def test_hinge_matches_a_loop_reference(monkeypatch):
    data = synthetic(samples=3, layers=1, heads=2, length=19, dim=6, seed=41, causal=True)
    gold = compute_gold(data)
    proj = fit_projections(data, gold, r=3, epochs=1, seed=2, batch_queries=7)
    calls = record_training(monkeypatch)
    per_head = hinge_loss(proj, data, gold, 0, seed=9, batch_queries=11)
    view, lg = data.layer(0), gold.layers[0]
    wq, wk = proj.wq[0].double(), proj.wk[0].double()
    total = torch.zeros(2, dtype=torch.float64)
    for c in calls:
        b = c["s"].numel()
        rows, cols = c["neg"]
        for r in range(2 * b):
            h, s, i = r // b, int(c["s"][r % b]), int(c["i"][r % b])
            mask, _ = lg.block(s, i, i + 1, int(data.lengths[s]))
            q = view.q[s, h, i].double() @ wq[h]
            keys = lambda js, s=s, h=h: view.k[s, h, js].double() @ wk[h]
            pos = float(((q - keys(mask[h, 0].nonzero().flatten())) ** 2).sum())
            neg = float(((q - keys(cols[rows == r])) ** 2).sum())
            total[h] += max(0.0, 1.0 + pos - neg)
    torch.testing.assert_close(per_head, total / int(data.lengths.sum()), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def fit_eval():
    data = synthetic(samples=9, layers=1, heads=3, length=71, dim=12, seed=23)
    fit, ev = data.split(0.6)
    return data, fit, ev, compute_gold(fit), compute_gold(ev)


def test_training_lowers_the_hinge_loss(fit_eval):
    _, fit, _, gold, _ = fit_eval
    proj = fit_projections(fit, gold, seed=3, batch_queries=16)
    assert proj.losses.shape == (1, 3, 3)
    assert bool((proj.losses[..., -1] < proj.losses[..., 0]).all())
    start = fit_projections(fit, gold, seed=3, epochs=0)  # the same initial maps, untrained
    assert bool((hinge_loss(proj, fit, gold, 0, seed=1) < 0.7 * hinge_loss(start, fit, gold, 0, seed=1)).all())
    assert proj.seconds > 0 and math.isfinite(proj.seconds)


def recall_at_density(proj, view, gold_layer, density):
    """Recall and sparsity of sf-dist with the threshold that keeps ``density`` of the valid pairs."""
    qp, kp = proj.apply(view, 0)
    d = []
    for s in range(view.q.shape[0]):
        n = int(view.lengths[s])
        d.append(torch.cdist(qp[s, :, :n], kp[s, :, :n]).pow(2).flatten())
    t = float(torch.quantile(torch.cat(d), density))
    res = macro_average(score_layer(view, gold_layer, DistanceGraph(qp, kp, t)))
    return float(res["recall"].mean()), float(res["sparsity"].mean())


def test_trained_projections_beat_random_ones_at_matched_sparsity(fit_eval):
    _, fit, ev, gold_fit, gold_ev = fit_eval
    view = ev.layer(0)
    # A few hundred queries make few steps: a larger step size lets 3 epochs converge.
    trained = fit_projections(fit, gold_fit, seed=5, batch_queries=16, lr=1e-2)
    random = fit_projections(fit, gold_fit, seed=5, epochs=0)  # the same maps before training
    rec_t, sp_t = recall_at_density(trained, view, gold_ev.layers[0], 0.2)
    rec_r, sp_r = recall_at_density(random, view, gold_ev.layers[0], 0.2)
    assert abs(sp_t - sp_r) < 0.02 and abs(sp_t - 0.8) < 0.03
    assert rec_t > rec_r + 0.2, (rec_t, rec_r)


def test_same_seed_gives_bit_identical_projections(fit_eval):
    _, fit, _, gold, _ = fit_eval
    a = fit_projections(fit, gold, seed=13, epochs=2)
    b = fit_projections(fit, gold, seed=13, epochs=2)
    c = fit_projections(fit, gold, seed=14, epochs=2)
    assert torch.equal(a.wq, b.wq) and torch.equal(a.wk, b.wk) and torch.equal(a.losses, b.losses)
    assert not torch.equal(a.wq, c.wq)


def test_shared_projections_use_one_map(fit_eval):
    _, fit, _, gold, _ = fit_eval
    p = fit_projections(fit, gold, r=5, shared=True, seed=8, epochs=1)
    assert p.wq is p.wk and p.wq.shape == (1, 3, 12, 5)
    view = fit.layer(0)
    qp, kp = p.apply(replace(view, k=view.q), 0)
    assert torch.equal(qp, kp)


def test_apply_shapes_padding_and_grouped_heads():
    data = synthetic(samples=3, layers=2, heads=4, kv_heads=2, length=37, dim=10, seed=29)
    data.q[1, :, :, int(data.lengths[1]):] = float("nan")  # padding may hold anything
    gold = compute_gold(data)
    p = fit_projections(data, gold, r=3, epochs=1)
    qp, kp = p.apply(data.layer(1), 1)
    assert qp.shape == kp.shape == (3, 4, 37, 3)
    assert bool(torch.isfinite(qp).all()) and bool((qp[1, :, int(data.lengths[1]):] == 0).all())
    # Query heads 0 and 1 read the same key head but have their own key maps.
    v = data.layer(1)
    torch.testing.assert_close(kp[0, 1], v.k[0, 1] @ p.wk[1, 1])
    assert projected_points(p, data, 0).shape == (4, 2 * int(data.lengths.sum()), 3)
    with pytest.raises(PredictorError, match="layers 0..1"):
        p.apply(v, 2)
    with pytest.raises(PredictorError, match="H=4"):
        p.apply(v.heads([0, 1]), 1)


def test_fitting_on_the_fit_part_never_sees_the_eval_part(fit_eval):
    data, fit, _, gold, _ = fit_eval
    n_fit = fit.num_samples
    changed = replace(data, q=data.q.clone(), k=data.k.clone())
    changed.q[n_fit:] = torch.randn_like(changed.q[n_fit:]) * 100
    changed.k[n_fit:] = -changed.k[n_fit:]
    fit2, ev2 = changed.split(0.6)
    assert torch.equal(fit2.q, fit.q) and not torch.equal(ev2.q, data.split(0.6)[1].q)
    a = fit_projections(fit, gold, seed=6, epochs=1)
    b = fit_projections(fit2, compute_gold(fit2), seed=6, epochs=1)
    assert torch.equal(a.wq, b.wq) and torch.equal(a.wk, b.wk)
    # The gold of other samples (here: all of them) is refused, not silently used.
    with pytest.raises(PredictorError, match="same .fit. samples"):
        fit_projections(fit, compute_gold(data), epochs=1)


def test_cached_projections_train_once_per_key(monkeypatch, fit_eval):
    _, fit, _, gold, _ = fit_eval
    clear_projection_cache()
    trained = []
    orig = pj.fit_projections
    monkeypatch.setattr(pj, "fit_projections", lambda *a, **kw: trained.append(kw) or orig(*a, **kw))
    a = cached_projections(fit, gold, r=4, shared=False, seed=19)
    assert cached_projections(fit, gold, r=4, shared=False, seed=19) is a
    b = cached_projections(fit, gold, r=4, shared=True, seed=19)
    c = cached_projections(fit, gold, r=4, shared=False, seed=20)
    assert len(trained) == 3 and b is not a and c is not a and b.shared and not a.shared
    # Data without a descriptor is keyed by its tensors: different tensors never share an entry.
    bare = AttentionData(q=fit.q, k=fit.k, lengths=fit.lengths, causal=False)
    other = AttentionData(q=fit.q * 2, k=fit.k, lengths=fit.lengths, causal=False)
    assert cached_projections(bare, gold, seed=19) is not cached_projections(other, compute_gold(other), seed=19)
    assert len(trained) == 5
    clear_projection_cache()


def test_bad_arguments_are_named():
    data = synthetic(samples=2, layers=1, heads=1, length=9, dim=4, seed=3)
    gold = compute_gold(data)
    with pytest.raises(PredictorError, match="r >= 1"):
        fit_projections(data, gold, r=0)
    assert isinstance(fit_projections(data, gold, epochs=0), Projections)
