"""Calibrated budgets: a target sparsity becomes each head's own threshold, on the fit samples only
(sf-dist, xattention, seer, hashattn)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import predictors
from bench.data.synthetic import synthetic
from bench.evaluation.gold import compute_gold
from predictors.calibration import block_pair_counts, thresholds_below, valid_pair_values, weighted_thresholds_below
from predictors.errors import PredictorError
from predictors.torch.xattention import entry_values, threshold_blocks

SCALES = torch.tensor([0.1, 1.0, 3.0, 10.0])  # 100x between the smallest and the largest head


def scaled_heads(samples: int, seed: int, causal: bool = False, scales: torch.Tensor = SCALES, length: int = 48):
    """Synthetic data whose heads' queries and keys are scaled by ``scales`` (distance scales differ 100x)."""
    d = synthetic(samples=samples, layers=2, heads=4, length=length, dim=8, seed=seed, ragged=False, causal=causal)
    s = scales[None, None, :, None, None]
    return replace(d, q=d.q * s, k=d.k * s, scale=0.25)


def test_thresholds_leave_exactly_the_target_share_without_ties():
    values = torch.tensor([[5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0]])
    t = thresholds_below(values, 0.7)  # k = 3 pairs kept: 1, 2, 3 are below 4
    assert t.tolist() == [4.0]
    assert (values < t[:, None]).sum().item() == 3
    assert thresholds_below(values, 0.0).tolist() == [float("inf")]  # every pair predicted
    assert (values < thresholds_below(values, 1.0)[:, None]).sum().item() == 0  # none predicted


def test_valid_pairs_are_the_causal_triangle():
    d = synthetic(samples=2, layers=1, heads=2, length=5, dim=4, ragged=True, causal=True)  # lengths 5, 2
    vals = valid_pair_values(d, lambda s, n: torch.zeros(2, n, n))
    assert vals.shape == (2, 5 * 6 // 2 + 2 * 3 // 2)


@pytest.mark.parametrize("causal", [False, True])
def test_calibrated_distance_lands_on_target_for_every_head(causal):
    fit, ev = scaled_heads(24, seed=3, causal=causal).split(0.5)  # one distribution, split by sample
    absolute = predictors.get("sf-dist-r2-t2").fit(fit, compute_gold(fit))
    calibrated = predictors.get("sf-dist-r2-sp0.9").fit(fit, compute_gold(fit))
    assert calibrated.name == "sf-dist-r2-sp0.9"
    spread = []
    for layer in range(2):
        for pred, check in ((calibrated, True), (absolute, False)):
            graph = pred.predict(ev.layer(layer), layer)
            per_head = torch.stack([_sparsity(graph, ev, s) for s in range(ev.num_samples)]).mean(0)
            if check:
                assert torch.all((per_head - 0.9).abs() <= 0.02), per_head
            else:
                spread.append(float(per_head.max() - per_head.min()))
    assert max(spread) > 0.2  # one absolute threshold is far off on some head: the test can tell


def per_head_sparsity(pred, data, layer):
    """Mean over ``data``'s samples of each head's sparsity under ``pred``: ``[H]``."""
    graph = pred.predict(data.layer(layer), layer)
    return torch.stack([_sparsity(graph, data, s) for s in range(data.num_samples)]).mean(0)


def _sparsity(graph, data, s):
    n = int(data.lengths[s])
    mask = graph.block_mask(s, 0, n, n)
    valid = n * (n + 1) / 2 if data.causal else n * n
    if data.causal:
        mask = mask & torch.ones(n, n, dtype=torch.bool).tril()
    return 1.0 - mask.sum((-1, -2)).double() / valid


def test_one_budget_only_and_in_range():
    with pytest.raises(PredictorError, match="not both"):
        predictors.get("sf-dist-r4-t1-sp0.9")
    with pytest.raises(PredictorError, match=r"sp must be in \[0, 1\]"):
        predictors.get("sf-dist-r4-sp1.5")
    assert predictors.get("sf-dist-r4").name == "sf-dist-r4-t2"  # the absolute default, as before


# -- the weighted quantile of block and integer budgets ---------------------------------------------------

def test_weighted_thresholds_by_hand():
    values = torch.tensor([[3.0, 1.0, 2.0, 2.0, 4.0]])
    weights = torch.tensor([1.0, 1.0, 2.0, 4.0, 2.0])  # W = 10; kept below 1, 2, 3, 4, inf: 0, 1, 7, 8, 10
    assert weighted_thresholds_below(values, weights, 0.9).tolist() == [2.0]  # kept 1, the closest to 1
    assert weighted_thresholds_below(values, weights, 0.5).tolist() == [3.0]  # kept 7 (2 from 5; 1 is 4 away)
    assert weighted_thresholds_below(values, weights, 0.35).tolist() == [3.0]  # 6.5: 7 is closer than 8
    assert weighted_thresholds_below(values, weights, 0.25).tolist() == [3.0]  # 7.5: 7 and 8 tie; the sparser
    assert weighted_thresholds_below(values, weights, 0.0).tolist() == [float("inf")]
    # -inf is always kept (the threshold never falls below it), +inf never; rows are heads.
    values = torch.tensor([[float("-inf"), 1.0, float("inf")], [5.0, 6.0, 7.0]])
    weights = torch.tensor([[3.0, 1.0, 6.0], [1.0, 1.0, 1.0]])
    assert weighted_thresholds_below(values, weights, 1.0).tolist() == [1.0, 5.0]  # kept 3 (forced), 0
    assert weighted_thresholds_below(values, weights, 0.0).tolist() == [float("inf")] * 2  # 4 of 10, 3 of 3
    # Unit weights without ties: the rule of thresholds_below.
    plain = torch.tensor([[5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0]])
    assert torch.equal(weighted_thresholds_below(plain, torch.ones(10), 0.7), thresholds_below(plain, 0.7))


def test_block_pair_counts_by_hand():
    full = block_pair_counts(5, 2, causal=False)  # rows and columns of 2, 2, 1 tokens
    assert full.tolist() == [[4.0, 4.0, 2.0], [4.0, 4.0, 2.0], [2.0, 2.0, 1.0]] and full.sum() == 25
    tri = block_pair_counts(5, 2, causal=True)
    assert tri.tolist() == [[3.0, 0.0, 0.0], [4.0, 3.0, 0.0], [2.0, 2.0, 1.0]] and tri.sum() == 15


def test_xattention_entry_values_decide_the_kept_blocks():
    pab = torch.tensor([[0.5, 0.2, 0.3, 0.0], [0.25, 0.25, 0.5, 0.0]])
    c = entry_values(pab, 0, present=True)
    assert torch.allclose(c, torch.tensor([[0.0, 0.8, 0.5, float("inf")], [0.5, 0.75, 0.0, float("inf")]]))
    for tau in (1e-6, 0.5, 0.6, 0.75, 0.8, 0.81, 1.0, 2.0):
        assert torch.equal(threshold_blocks(pab, tau), c < tau)  # kept exactly when the entry value is below tau
    assert entry_values(torch.zeros(1, 3), 1, present=False).tolist() == [[float("inf"), float("-inf"), float("inf")]]


def _pooled(pred, data):
    """Pooled sparsity per layer and head of ``pred`` on ``data`` (all valid pairs of all samples): ``[L, H]``."""
    out = []
    for layer in range(data.num_layers):
        graph = pred.predict(data.layer(layer), layer)
        kept = sum(_kept(graph, data, s) for s in range(data.num_samples))
        valid = sum(_valid(data, s) for s in range(data.num_samples))
        out.append(1.0 - kept / valid)
    return torch.stack(out)


def _kept(graph, data, s):
    n = int(data.lengths[s])
    mask = graph.block_mask(s, 0, n, n)
    if data.causal:
        mask = mask & torch.ones(n, n, dtype=torch.bool).tril()
    return mask.sum((-1, -2)).double()


def _valid(data, s):
    n = int(data.lengths[s])
    return n * (n + 1) / 2 if data.causal else n * n


@pytest.mark.parametrize("causal", [False, True])
def test_xattention_calibration_is_the_closest_cumulative_threshold(causal):
    data = scaled_heads(3, seed=5, causal=causal, scales=SCALES.sqrt(), length=37)  # 37: a partial last block
    cal = predictors.get("xattention-b4-st2-sp0.8").fit(data, None)
    assert cal.name == "xattention-b4-st2-sp0.8" and cal.learned and cal.thresholds.shape == (2, 4)
    got = _pooled(cal, data)
    # Every cumulative threshold a name can hold on a fine grid: none is closer to 0.8 on any head.
    best = torch.full((2, 4), float("inf"), dtype=torch.float64)
    for tau in torch.linspace(0.04, 1.0, 25).tolist():
        best = torch.minimum(best, (_pooled(predictors.get("xattention", b=4, st=2, t=tau).fit(data, None), data)
                                    - 0.8).abs())
    assert bool(((got - 0.8).abs() <= best + 1e-12).all()), (got, best)


@pytest.mark.parametrize("causal", [False, True])
def test_calibrated_xattention_lands_on_target_for_every_head(causal):
    # Queries and keys scaled by sqrt(SCALES): the score scales of the heads differ 100x.
    fit, ev = scaled_heads(24, seed=3, causal=causal, scales=SCALES.sqrt(), length=96).split(0.5)
    cal = predictors.get("xattention-b4-st2-sp0.9").fit(fit, None)
    absolute = predictors.get("xattention-b4-st2-t0.5").fit(fit, None)
    for layer in range(2):
        assert torch.all((per_head_sparsity(cal, ev, layer) - 0.9).abs() <= 0.02)
    spread = per_head_sparsity(absolute, ev, 0)
    assert float(spread.max() - spread.min()) > 0.2  # one absolute threshold is far off on some head


@pytest.mark.parametrize("causal", [False, True])
def test_calibrated_seer_lands_on_target_for_every_head(causal):
    fit, ev = scaled_heads(24, seed=3, causal=causal, scales=SCALES.sqrt(), length=96).split(0.5)
    gold = compute_gold(fit)
    cal = predictors.get("seer-b4-top0-sp0.9").fit(fit, gold)
    assert cal.name == "seer-b4-top0-sp0.9"
    for layer in range(2):
        assert torch.all((per_head_sparsity(cal, ev, layer) - 0.9).abs() <= 0.02)
    absolute = per_head_sparsity(predictors.get("seer-b4-top0-t0.05").fit(fit, gold), ev, 0)
    assert float((absolute - 0.9).abs().max()) > 0.1  # one absolute gate threshold misses the target
    # The rank part stays: with top = 1 every query block keeps its largest gate, and the target holds.
    top1 = predictors.get("seer-b4-top1-sp0.9").fit(fit, gold)
    graph = top1.predict(ev.layer(0), 0)
    assert bool(graph.blocks.any(-1)[:, :, : -(-96 // 4)].all())
    assert torch.all((per_head_sparsity(top1, ev, 0) - 0.9).abs() <= 0.02)


def test_seer_calibration_is_exact_on_its_fit_samples():
    data = scaled_heads(3, seed=6, causal=True, scales=SCALES.sqrt(), length=37)
    cal = predictors.get("seer-b4-top0-sp0.7").fit(data, compute_gold(data))
    got = _pooled(cal, data)
    # Tiles are kept whole: the fit sparsity is sp to within one tile's pairs (b^2 = 16) of the pooled valid pairs.
    valid = sum(_valid(data, s) for s in range(data.num_samples))
    assert bool(((got - 0.7).abs() <= 16 / valid).all()), got


def test_hashattn_radius_is_the_closest_whole_radius():
    data = scaled_heads(3, seed=7, causal=False, scales=torch.tensor([1.0, 4.64, 21.5, 100.0]), length=29)
    gold = compute_gold(data)
    cal = predictors.get("hashattn-b16-top0-sp0.85").fit(data, gold)
    assert cal.radii.shape == (2, 4) and cal.name == "hashattn-b16-top0-sp0.85"
    got = _pooled(cal, data)
    by_radius = torch.stack([_pooled(predictors.get("hashattn", b=16, h=r, top=0).fit(data, gold), data)
                             for r in range(17)])  # [R, L, H]; the maps are trained once (memoised)
    best = (by_radius - 0.85).abs().min(0).values
    assert torch.allclose((got - 0.85).abs(), best)
    for layer in range(2):
        for head in range(4):
            r = int(cal.radii[layer, head])
            assert 0 <= r <= 16 and got[layer, head] == by_radius[r, layer, head]


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True])
def test_calibrated_hashattn_lands_on_target_for_every_head(causal):
    # Scales 1 to 100: much smaller ones make a head's gold dense and its learned codes constant (every pair
    # at one distance), which no radius can split. 128 bits: a radius step moves a head's sparsity by < 0.02.
    scales = torch.tensor([1.0, 4.64, 21.5, 100.0])
    fit, ev = scaled_heads(24, seed=3, causal=causal, scales=scales).split(0.5)
    gold = compute_gold(fit)
    cal = predictors.get("hashattn-b128-top0-sp0.9").fit(fit, gold)
    for layer in range(2):
        assert torch.all((per_head_sparsity(cal, ev, layer) - 0.9).abs() <= 0.02)
    absolute = per_head_sparsity(predictors.get("hashattn-b128-h40-top0").fit(fit, gold), ev, 1)
    assert float(absolute.max() - absolute.min()) > 0.1


@pytest.mark.parametrize("name, match", [
    ("xattention-b8-st4-t0.5-sp0.9", "xattention: give one budget, t .absolute. or sp .calibrated., not both"),
    ("xattention-b8-st4-sp1.5", r"sp must be in \[0, 1\]"), ("seer-b8-top1-t0.1-sp0.9", "not both"),
    ("seer-b8-top0-sp1.01", r"sp must be in \[0, 1\]"), ("hashattn-b32-h4-top0-sp0.9", "h .absolute. or sp"),
    ("hashattn-b32-top4-sp0.9", "give top=0 with it"),
])
def test_calibrated_budgets_exclude_the_absolute_knob(name, match):
    with pytest.raises(PredictorError, match=match):
        predictors.get(name)


def test_absolute_defaults_and_names_are_unchanged():
    assert predictors.get("xattention-b8-st4").name == "xattention-b8-st4-t0.9"
    assert predictors.get("seer-b8").name == "seer-b8-top1-t0"
    assert predictors.get("hashattn-b32").name == "hashattn-b32-h0-top0"
    assert not predictors.get("xattention-b8-st4-t0.5").learned
    for name in ("xattention-b8-st4-sp0.9", "seer-b8-top0-sp0.95", "hashattn-b32-top0-sp0.8"):
        assert predictors.get(name).name == name
    with pytest.raises(PredictorError, match="select blocks"):
        predictors.get("seer-b8-top0-t0")
