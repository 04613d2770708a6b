import warnings

import pytest
import torch
from entmax import entmax15, sparsemax

from bench.data.cache import entry_path
from bench.data.synthetic import synthetic
from bench.evaluation import prepared as sources
from bench.evaluation.gold import compute_gold


def dense_reference(data, layer, s, alpha_fn=entmax15):
    """Whole-matrix reference: entmax over valid (and past) keys, zero elsewhere."""
    n = int(data.lengths[s])
    view = data.layer(layer)
    scores = view.q[s, :, :n].double() @ view.k[s, :, :n].double().transpose(-1, -2) * data.scale
    if data.causal:
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -1e9)
    return alpha_fn(scores, dim=-1)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [7, 64, 500])
def test_gold_matches_dense_entmax(causal, block):
    d = synthetic(samples=3, layers=2, heads=3, length=45, dim=8, causal=causal, seed=11)
    gold = compute_gold(d, block=block)
    for layer in range(2):
        for s in range(3):
            n = int(d.lengths[s])
            mask, probs = gold.layers[layer].block(s, 0, n, n)
            ref = dense_reference(d, layer, s)
            assert torch.equal(mask, ref > 0)
            assert torch.allclose(probs.double(), ref, atol=1e-6)
            assert torch.allclose(probs.sum(-1), torch.ones(3, n), atol=1e-5)
    # padding rows have empty support
    assert gold.layers[0].counts[2, :, int(d.lengths[2]):].sum() == 0


def test_blocking_does_not_change_the_gold():
    d = synthetic(samples=2, layers=1, heads=2, length=97, dim=8, seed=3)
    a, b = compute_gold(d, block=13), compute_gold(d, block=256)
    for x, y in zip(a.layers[0].state("a").values(), b.layers[0].state("a").values()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("causal", [False, True])
def test_gold_blocks_of_rows_tile_the_whole_sample(causal):
    d = synthetic(samples=3, layers=1, heads=3, length=45, dim=8, causal=causal, seed=13)
    gold = compute_gold(d).layers[0]
    for s in range(3):
        n = int(d.lengths[s])
        mask, probs = gold.block(s, 0, n, n)
        for i0, i1 in [(0, 1), (5, 17), (n - 3, n)]:
            m, p = gold.block(s, i0, i1, n)
            assert torch.equal(m, mask[:, i0:i1]) and torch.equal(p, probs[:, i0:i1])


def test_other_alpha_uses_bisection():
    d = synthetic(samples=2, layers=1, heads=2, length=33, dim=8, seed=5)
    d.alpha = 2.0
    gold = compute_gold(d)
    assert gold.bisect_iters == 50
    n = int(d.lengths[0])
    mask, probs = gold.layers[0].block(0, 0, n, n)
    ref = dense_reference(d, 0, 0, alpha_fn=sparsemax)
    assert torch.allclose(probs.double(), ref, atol=1e-4)
    # bisection may keep near-zero entries that sparsemax drops only at the boundary
    assert (mask != (ref > 0)).float().mean() < 0.01


def test_sparsity_counts_valid_pairs():
    d = synthetic(samples=2, layers=1, heads=1, length=20, dim=4, causal=True, ragged=False)
    gold = compute_gold(d)
    counts = gold.layers[0].counts.sum(-1).double()
    assert torch.allclose(gold.layers[0].sparsity(), 1 - counts / 210)


def test_gold_cache_round_trip_and_corruption(isolated_cache):
    d = synthetic(samples=2, layers=2, heads=2, length=30, dim=4)
    g1 = sources.gold_for(d)
    path = entry_path("gold", sources.gold_descriptor(d, 256))
    assert path.exists()
    g2 = sources.gold_for(d)
    assert torch.equal(g1.layers[1].probs, g2.layers[1].probs)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="rebuilding"):
        g3 = sources.gold_for(d)
    assert torch.equal(g1.layers[1].cols, g3.layers[1].cols)
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable"):
        sources.gold_for(d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sources.gold_for(d)  # rebuilt entry is good again


def test_gold_key_changes_with_the_data():
    a = synthetic(samples=2, layers=1, heads=2, length=30, dim=4, seed=1)
    b = synthetic(samples=2, layers=1, heads=2, length=30, dim=4, seed=1)
    b.q[0, 0, 0, 0, 0] += 1.0
    assert sources.gold_descriptor(a, 256) != sources.gold_descriptor(b, 256)


# -- masks exact at any scale --------------------------------------------------------------------------------
def _no_future_keys(gold) -> bool:
    for lg in gold.layers:
        rows = lg.counts.flatten()  # rows (s, h, i) in order, i < T
        t = lg.counts.shape[-1]
        i = torch.arange(t).repeat(lg.counts.shape[0] * lg.counts.shape[1])
        if bool((lg.cols.long() > torch.repeat_interleave(i, rows)).any()):
            return False
    return True


@pytest.mark.parametrize("factor", [1.0, 1e3, 3e5, 1e6, 1e9, 1e15])
def test_causal_gold_has_no_future_key_at_any_scale(factor):
    from dataclasses import replace

    d = synthetic(samples=3, layers=2, heads=3, length=45, dim=8, causal=True, seed=11)
    big = replace(d, q=d.q * factor, k=d.k * factor)  # factor 1e6: scores of about 1e12
    scores = big.layer(0).q[0].float() @ big.layer(0).k[0].float().transpose(-1, -2) * big.scale
    gold = compute_gold(big)
    assert _no_future_keys(gold), f"future keys in the gold at |scores| up to {scores.abs().max():.3g}"
    for lg in gold.layers:  # every row still sums to one over its past keys
        sums = torch.zeros(lg.counts.numel()).index_add_(0, torch.repeat_interleave(
            torch.arange(lg.counts.numel()), lg.counts.flatten()), lg.probs.float())
        valid = (torch.arange(lg.counts.shape[-1]) < lg.lengths[:, None, None]).expand_as(lg.counts).flatten()
        assert torch.allclose(sums[valid], torch.ones(int(valid.sum())), atol=1e-4)


def test_masked_scores_sit_below_their_row_at_any_scale():
    from predictors.masking import MASK_GAP, mask_scores

    allowed = torch.tensor([[True, True, False], [True, False, False]])
    for m in (1.0, -3.0, 1e4, 1e12, -1e12, 3e38, -3.4e38):
        s = torch.tensor([[m, m, m], [m, 0.0, 0.0]], dtype=torch.float32)
        out = mask_scores(s, allowed)
        assert bool(torch.isfinite(out).all())
        assert bool((out[~allowed] < s.max() - 2).all()) or m == -3.4e38, m  # 1 / (alpha - 1) = 2 below
    ordinary = torch.randn(2, 5, 7) * 50
    allowed = torch.rand(2, 5, 7) > 0.3
    row_max = ordinary.masked_fill(~allowed, float("-inf")).amax(-1, keepdim=True)
    want = torch.where(allowed, ordinary, torch.where(row_max.isinf(), 0.0, row_max) - MASK_GAP)
    assert torch.equal(mask_scores(ordinary, allowed), want)  # the old constant gap, bit for bit


def test_scores_that_overflow_float32_are_refused_naming_the_layer():
    from dataclasses import replace

    from bench.errors import DataError

    d = synthetic(samples=3, layers=2, heads=3, length=45, dim=8, causal=True, seed=11)
    q, k = d.q.clone(), d.k.clone()
    q[1, 1, 2], k[1, 1, 2] = 1e20, 1e20  # finite, but scale * q.k = 8 * 1e40 / sqrt(8) overflows float32
    with pytest.raises(DataError, match=r"not finite in float32 .* in layer 1, sample 1, head 2, query 0"):
        compute_gold(replace(d, q=q, k=k))


def test_the_finite_bound_skips_the_check_only_where_no_score_can_overflow():
    from bench.evaluation.gold import FINITE_BOUND, scores_stay_finite

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 5, 8, generator=g), torch.randn(2, 7, 8, generator=g)
    assert scores_stay_finite(q, k, 8 ** -0.5)
    big = k.clone()
    big[1, 3] = 1e19  # |k_j| ~ 2.8e19, |q_i| ~ 3: the bound 8e19 * 3 / sqrt(8) is fine ...
    assert scores_stay_finite(q, big, 8 ** -0.5)
    big[1, 3] = 1e37  # ... this one is not, although the product may still fit
    assert not scores_stay_finite(q, big, 8 ** -0.5)
    nan = q.clone()
    nan[0, 0, 0] = float("nan")
    assert not scores_stay_finite(nan, k, 1.0) and not scores_stay_finite(q, torch.full_like(k, float("inf")), 1.0)
    assert scores_stay_finite(q[:, :0], k, 1.0)  # no queries: nothing to overflow
    # Right at the bound: the largest row norms times the scale.
    q1, k1 = torch.full((1, 1, 1), 1e18), torch.full((1, 1, 1), 1e18)
    assert scores_stay_finite(q1, k1, FINITE_BOUND / 1e36 * 0.99)
    assert not scores_stay_finite(q1, k1, FINITE_BOUND / 1e36 * 1.01)  # 1e18 is 0.99999998e18 in float32
