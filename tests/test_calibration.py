"""Calibrated budgets: a target sparsity becomes each head's own threshold, on the fit samples only."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import predictors
from bench.data.synthetic import synthetic
from bench.evaluation.gold import compute_gold
from predictors.calibration import thresholds_below, valid_pair_values
from predictors.errors import PredictorError

SCALES = torch.tensor([0.1, 1.0, 3.0, 10.0])  # 100x between the smallest and the largest head


def scaled_heads(samples: int, seed: int, causal: bool = False):
    """Synthetic data whose heads' queries and keys are scaled by :data:`SCALES` (distance scales differ 100x)."""
    d = synthetic(samples=samples, layers=2, heads=4, length=48, dim=8, seed=seed, ragged=False, causal=causal)
    s = SCALES[None, None, :, None, None]
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
