"""The ceilings (oracle-thr, oracle-margin, oracle-topk): known answers, exact budgets, the ceiling
property, block invariance, names and sweeps."""

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
from bench.evaluation.metrics import score_layer
from predictors.data import AttentionData
from predictors.masking import valid_pair_count
from predictors.torch.oracle import NONE, rank_thresholds, sortable_keys, top_keys

FAST = settings(max_examples=15, deadline=None)
ORACLES = ("oracle-thr", "oracle-margin", "oracle-topk")


def score_matrix_data(z: torch.Tensor, causal: bool = False) -> AttentionData:
    """One sample, one layer, one head whose scaled scores are exactly ``z`` ``[n, n]`` (q = I, k = z^T)."""
    n = z.shape[0]
    q = torch.eye(n)[None, None, None]
    k = z.T.contiguous()[None, None, None]
    return AttentionData(q=q, k=k, lengths=torch.tensor([n]), causal=causal, scale=1.0)


@functools.cache
def synth(causal=False, seed=0, heads=2, length=37, samples=3):
    d = dataclasses.replace(synthetic(samples=samples, layers=1, heads=heads, length=length, dim=8,
                                      causal=causal, seed=seed), v=None)
    return d, compute_gold(d)


def predicted_pairs(name, data, gold=None, **params):
    p = predictors.get(name, **params).fit(data, gold if gold is not None else compute_gold(data))
    g = p.predict(data.layer(0), 0)
    n = int(data.lengths[0])
    m = g.block_mask(0, 0, n, n)[0]
    if data.causal:
        m &= torch.ones(n, n, dtype=torch.bool).tril()
    return {(int(i), int(j)) for i, j in m.nonzero().tolist()}


# -- known answers ---------------------------------------------------------------------------------------

Z = torch.tensor([[0.3, 2.0, -1.0, 0.7, 1.1],
                  [1.9, -0.4, 0.05, 3.0, -2.0],
                  [0.0, 0.6, 1.5, -0.9, 2.2],
                  [-1.2, 0.8, 0.45, 0.1, 1.7],
                  [2.6, -0.2, 0.9, 1.3, -0.5]])


def top_pairs(z, m, causal):
    cells = [(float(z[i, j]), i, j) for i in range(z.shape[0]) for j in range(z.shape[1]) if not causal or j <= i]
    return {(i, j) for _, i, j in sorted(cells, reverse=True)[:m]}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sp", [0.0, 0.5, 0.8, 0.84, 0.9, 1.0])
def test_threshold_keeps_the_top_pairs_by_score(causal, sp):
    data = score_matrix_data(Z, causal)
    m = round((1 - sp) * valid_pair_count(5, causal))
    assert predicted_pairs("oracle-thr", data, sp=sp) == top_pairs(Z, m, causal)


def test_raw_score_threshold_is_not_a_ceiling_but_the_margin_is():
    # Row 0 is peaked (10 vs 7: entmax-1.5 keeps only key 0), row 1 flat (1.2 vs 1.0: both keys).
    # Gold: (0, 0), (1, 0), (1, 1). With 3 pairs, raw scores take (0, 0), (0, 1), (1, 0): 2 of 3.
    z = torch.tensor([[10.0, 7.0], [1.2, 1.0]])
    data = score_matrix_data(z)
    gold = compute_gold(data)
    assert gold.layers[0].counts[0, 0].tolist() == [1, 2]
    assert predicted_pairs("oracle-thr", data, gold, sp=0.25) == {(0, 0), (0, 1), (1, 0)}
    assert predicted_pairs("oracle-margin", data, gold, sp=0.25) == {(0, 0), (1, 0), (1, 1)}
    # With two pairs, the margin keeps the two most probable gold pairs.
    p = predictors.get("oracle-margin-sp0.5").fit(data, gold)
    res = score_layer(data.layer(0), gold.layers[0], p.predict(data.layer(0), 0))
    assert res["hit_pairs"].item() == 2 and res["mass"].item() == pytest.approx(
        (1.0 + max(gold.layers[0].probs[1:].tolist())) / 2, abs=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_topk_keeps_the_best_allowed_keys_of_each_query(causal):
    data = score_matrix_data(Z, causal)
    got = predicted_pairs("oracle-topk-k2", data)
    expected = set()
    for i in range(5):
        row = [(float(Z[i, j]), j) for j in range(5) if not causal or j <= i]
        expected |= {(i, j) for _, j in sorted(row, reverse=True)[:2]}
    assert got == expected
    if causal:  # query 0 has one allowed key: one pair, the -1 padding adds nothing
        keys = top_keys(data.layer(0), 2)
        assert keys[0, 0, 0].tolist() == [0, -1]


def test_threshold_keys_of_the_extremes():
    data = score_matrix_data(Z)
    thr = rank_thresholds(data.layer(0), torch.tensor([0]), "score")
    assert thr.item() == NONE
    thr = rank_thresholds(data.layer(0), torch.tensor([25]), "score")
    assert thr.item() == 0
    thr = rank_thresholds(data.layer(0), torch.tensor([1]), "score")
    assert thr.item() == sortable_keys(torch.tensor(3.0)).item()


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=2, max_size=40))
@FAST
def test_sortable_keys_preserve_order(values):
    x = torch.tensor(values, dtype=torch.float32)
    keys = sortable_keys(x)
    assert bool(((keys >= 0) & (keys < 2 ** 32)).all())
    assert torch.equal(keys[:, None] < keys[None, :], x[:, None] < x[None, :])
    assert torch.equal(keys[:, None] == keys[None, :], x[:, None] == x[None, :])


# -- budgets: the requested sparsity within one pair ------------------------------------------------------

@given(sp=st.floats(0.0, 1.0).filter(lambda x: "-" not in f"{x:g}"),  # a budget a name can carry
       causal=st.booleans(), seed=st.integers(0, 3),
       rank=st.sampled_from(["oracle-thr", "oracle-margin"]))
@FAST
def test_threshold_oracles_reach_the_requested_sparsity_within_one_pair(sp, causal, seed, rank):
    data, gold = synth(causal, seed)
    p = predictors.get(rank, sp=sp).fit(data, gold)
    res = score_layer(data.layer(0), gold.layers[0], p.predict(data.layer(0), 0), block=16)
    for s, n in enumerate(data.lengths.tolist()):
        target = round((1 - sp) * valid_pair_count(n, causal))
        assert torch.all((res["pred_pairs"][s] - target).abs() <= 1), (res["pred_pairs"][s], target)


def test_thresholds_do_not_depend_on_the_query_block():
    data, _ = synth(True, 1, heads=3, length=45)
    view = data.layer(0)
    m = torch.tensor([100, 300, 17])
    for rank in ("score", "margin"):
        assert torch.equal(rank_thresholds(view, m, rank, block=7), rank_thresholds(view, m, rank, block=256))


def test_thresholds_with_kept_and_recomputed_values_agree(monkeypatch):
    import predictors.torch.oracle as oracle

    data, _ = synth(False, 1, heads=3, length=45)
    view = data.layer(0)
    m = torch.tensor([100, 300, 17])
    kept = {rank: rank_thresholds(view, m, rank, block=8) for rank in ("score", "margin")}
    monkeypatch.setattr(oracle, "KEEP_VALUES", 0)  # recompute the values in every pass
    for rank in ("score", "margin"):
        assert torch.equal(rank_thresholds(view, m, rank, block=8), kept[rank])


# -- the ceiling property --------------------------------------------------------------------------------

COMPETITORS = ["window-w5", "window-w3-g2", "bigbird-r2", "fixed-l8-c2", "quest-query-b8-k2",
               "xattention-b8-st4-t0.7", "minference-lq8-v3-sl3", "simhash-b6-l3-h0-top0",
               "reformer-raw-b4-h2", "oracle-thr-sp0.85", "oracle-topk-k4"]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", COMPETITORS)
def test_margin_oracle_recall_and_mass_beat_any_predictor_at_its_sparsity(name, causal):
    data, gold = synth(causal, seed=2, heads=1, length=41, samples=1)
    view, lg = data.layer(0), gold.layers[0]
    other = score_layer(view, lg, predictors.get(name).fit(data, gold).predict(view, 0))
    pred, valid = other["pred_pairs"].item(), other["valid_pairs"].item()
    oracle = predictors.get("oracle-margin", sp=1 - pred / valid).fit(data, gold)
    best = score_layer(view, lg, oracle.predict(view, 0))
    assert abs(best["pred_pairs"].item() - pred) <= 1
    # Exactly min(m, |G|) gold pairs: the most any graph of m pairs can hold.
    assert best["hit_pairs"].item() == min(best["pred_pairs"].item(), best["gold_pairs"].item())
    slack = 1.0 / best["gold_pairs"].item() if best["pred_pairs"].item() < pred else 0.0
    assert best["recall"].item() >= other["recall"].item() - slack - 1e-12
    if best["pred_pairs"].item() >= pred:
        assert best["mass"].item() >= other["mass"].item() - 1e-5


@pytest.mark.parametrize("rank", ["oracle-thr", "oracle-margin"])
def test_lower_target_sparsity_keeps_a_superset(rank):
    data, gold = synth(False, 3)
    n = int(data.lengths[0])
    masks = [predictors.get(rank, sp=sp).fit(data, gold).predict(data.layer(0), 0).block_mask(0, 0, n, n)
             for sp in (0.95, 0.9, 0.7)]
    assert bool((masks[0] <= masks[1]).all()) and bool((masks[1] <= masks[2]).all())


def test_higher_topk_keeps_a_superset():
    data, gold = synth(True, 3)
    n = int(data.lengths[0])
    a, b = (predictors.get("oracle-topk", k=k).fit(data, gold).predict(data.layer(0), 0).block_mask(0, 0, n, n)
            for k in (3, 6))
    assert bool((a <= b).all())


# -- labels, names, sweeps -------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ORACLES)
def test_oracles_are_labelled_ceilings_with_dense_cost(family):
    p = predictors.get(family)
    assert p.family.startswith("oracle-") and p.kind == "ceiling" and p.learned is False
    assert p.flops(100, 32) == 2.0 * 100 * 100 * 32


@pytest.mark.parametrize("name", ["oracle-thr-sp0.9", "oracle-margin-sp0.95", "oracle-topk-k8",
                                  "oracle-thr-sp0.9-w3-s2", "oracle-topk-k1-g1"])
def test_oracle_names_read_back(name):
    assert predictors.get(name).name == name


def test_oracle_parameter_errors():
    from predictors.errors import PredictorError

    with pytest.raises(PredictorError, match="sparsity"):
        predictors.get("oracle-thr", sp=1.5)
    with pytest.raises(PredictorError, match="k must be >= 1"):
        predictors.get("oracle-topk", k=0)


@pytest.mark.parametrize("family", ORACLES)
def test_oracle_sweeps_keep_smoke_tiny(family):
    assert 1 <= len(family_configs(family, "smoke")) <= 2
    assert len(family_configs(family, "default")) > len(family_configs(family, "smoke"))


def test_tied_values_are_cut_to_the_exact_budget():
    # Causal entmax puts probability exactly 1 on many rows' only key: the margin values tie at the
    # threshold, and the oracle must still keep exactly m pairs (found by hypothesis in CI).
    sp = 0.984375
    data, gold = synth(True, 0)
    p = predictors.get("oracle-margin", sp=sp).fit(data, gold)
    res = score_layer(data.layer(0), gold.layers[0], p.predict(data.layer(0), 0), block=16)
    want = [round((1 - sp) * valid_pair_count(n, True)) for n in data.lengths.tolist()]
    assert res["pred_pairs"].tolist() == [[w] * res["pred_pairs"].shape[1] for w in want]
