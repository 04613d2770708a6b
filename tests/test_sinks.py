"""Learned attention sinks (the common ``s``): known answers on hand-built gold, greedy optimality,
composition with every family, fit-only reading, names, and the per-head columns of GlobalGraph."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import predictors
from bench.config.sweeps import sweep_names
from bench.data.synthetic import synthetic
from bench.evaluation.gold import compute_gold
from bench.evaluation.metrics import score_layer
from predictors.errors import PredictorError
from predictors.graphs import GlobalGraph
from predictors.sinks import fit_layer_sinks, fit_sinks, key_hits
from predictors.support import LayerGold

FAST = settings(max_examples=20, deadline=None)


def hand_gold(rows: dict, lengths: list[int], heads: int, causal: bool = False) -> LayerGold:
    """LayerGold from ``{(s, h, i): [keys]}`` (uniform probabilities per row)."""
    s_count, t = len(lengths), max(lengths)
    counts = torch.zeros(s_count, heads, t, dtype=torch.int64)
    cols, probs = [], []
    for s in range(s_count):
        for h in range(heads):
            for i in range(lengths[s]):
                keys = sorted(set(rows.get((s, h, i), [i])))  # default: the diagonal
                counts[s, h, i] = len(keys)
                cols += keys
                probs += [1.0 / len(keys)] * len(keys)
    return LayerGold(counts=counts, cols=torch.tensor(cols, dtype=torch.int32), probs=torch.tensor(probs),
                     lengths=torch.tensor(lengths), causal=causal)


def test_key_hits_count_queries_per_key_from_both_ends():
    lg = hand_gold({(0, 0, i): [0, 4] for i in range(5)} | {(1, 0, i): [i, 2] for i in range(3)}, [5, 3], 1)
    start, end = key_hits(lg)
    assert start[0, 0].tolist() == [5, 0, 0, 0, 5] and end[0, 0].tolist() == [5, 0, 0, 0, 5]
    # Sample 1 (n = 3): rows 0, 1, 2 see {0, 2}, {1, 2}, {2}.
    assert start[1, 0, :3].tolist() == [1, 1, 3] and end[1, 0, :3].tolist() == [3, 1, 1]


def test_sinks_known_answer_first_last_and_a_middle_token():
    # Lengths 6 and 4. Head 0: every query sees the first and the last token. Head 1: every query sees
    # token 2, and in sample 0 also token 3; head 2 only its diagonal.
    rows = {}
    for s, n in enumerate([6, 4]):
        for i in range(n):
            rows[(s, 0, i)] = [0, n - 1, i]
            rows[(s, 1, i)] = [2, 3] if s == 0 else [2]
    lg = hand_gold(rows, [6, 4], 3)
    pos, valid, share = fit_layer_sinks(lg, 2)
    assert pos[0].tolist() == [0, -1] and valid[0].all()
    assert share[0].tolist() == [1.0, 1.0]
    # Head 1: token 2 is seen by all 10 queries; then token 3 by the 6 queries of sample 0, named
    # equally well by start 3 and by end -3 (token 3 of sample 0, token 1 of sample 1): start first.
    assert pos[1, 0].item() == 2 and share[1, 0].item() == 1.0
    assert pos[1, 1].item() == 3 and share[1, 1].item() == pytest.approx(0.6)
    # Head 2: the diagonal gives every position one query of ten; ties go to start 0 first.
    assert pos[2, 0].item() == 0 and share[2, 0].item() == pytest.approx(0.2)


def test_equal_length_samples_never_take_the_same_token_twice():
    # n = 5 in both samples: start 4 and end -1 are the same token; every query sees tokens 4 and 1.
    rows = {(s, 0, i): [1, 4] for s in range(2) for i in range(5)}
    pos, valid, share = fit_layer_sinks(hand_gold(rows, [5, 5], 1), 3)
    assert pos[0, :2].tolist() == [1, 4]  # start 1, start 4 (never also end -1, the same token)
    assert valid[0, :2].all() and share[0, :2].tolist() == [1.0, 1.0]
    # No third token receives any attention: the slot stays empty rather than repeating a token.
    assert not valid[0, 2] and share[0, 2] == 0


def test_ragged_samples_pick_the_last_token_from_the_end():
    # Lengths 7, 5, 4: every query sees its sample's last token ([SEP]).
    lengths = [7, 5, 4]
    rows = {(s, 0, i): [i, n - 1] for s, n in enumerate(lengths) for i in range(n)}
    pos, valid, share = fit_layer_sinks(hand_gold(rows, lengths, 1), 1)
    assert pos.tolist() == [[-1]] and share.item() == 1.0


@given(st.integers(0, 10_000), st.integers(1, 3), st.booleans())
@FAST
def test_greedy_sinks_take_the_best_step_and_are_optimal_for_equal_lengths(seed, count, ragged):
    gen = torch.Generator().manual_seed(seed)
    lengths = [int(x) for x in torch.randint(3, 7, (2,), generator=gen)]
    if not ragged:
        lengths = [lengths[0]] * 2
    rows = {}
    for s, n in enumerate(lengths):
        for i in range(n):
            keys = (torch.rand(n, generator=gen) < 0.35).nonzero().flatten().tolist()
            rows[(s, 0, i)] = keys or [i]
    lg = hand_gold(rows, lengths, 1)
    gold_sets = [{(i, j) for (ss, _, i), keys in rows.items() if ss == s for j in keys} for s in range(2)]

    def covered(cands):
        total = 0
        for s, n in enumerate(lengths):
            toks = {p if p >= 0 else n + p for p in cands if -n <= p < n}
            total += sum(1 for i, j in gold_sets[s] if j in toks)
        return total

    pos, valid, share = fit_layer_sinks(lg, count)
    chosen = [int(p) for p, ok in zip(pos[0], valid[0]) if ok]
    cands = list(range(max(lengths))) + [-e for e in range(1, max(lengths) + 1)]
    queries = sum(lengths)
    for m in range(len(chosen)):  # every step adds the most any candidate could add
        gain = covered(chosen[:m + 1]) - covered(chosen[:m])
        assert gain == max(covered(chosen[:m] + [c]) for c in cands) - covered(chosen[:m])
        assert share[0, m].item() == pytest.approx(gain / queries)
    best = max(covered(c) for c in itertools.combinations(cands, count))
    if not ragged:
        assert covered(chosen) == best
    else:
        assert covered(chosen) >= (1 - 1 / math.e) * best


# -- the GlobalGraph columns ------------------------------------------------------------------------------

def test_global_graph_per_head_columns_from_the_end():
    g = GlobalGraph((), 2, rows=False, per_head=torch.tensor([[1], [-1]]),
                    per_head_from_end=torch.tensor([[0], [2]]))
    m = g.block_mask(0, 0, 3, 5)
    assert m[0].nonzero().tolist() == [[i, j] for i in range(3) for j in (1, 4)]
    assert m[1].nonzero().tolist() == [[i, 2] for i in range(3)]
    # Beyond the sample: dropped.
    assert not GlobalGraph((), 1, rows=False, per_head_from_end=torch.tensor([[5]])).block_mask(0, 0, 2, 5).any()


# -- in predictors -----------------------------------------------------------------------------------------

@functools.cache
def planted(causal=False):
    """Synthetic data whose keys at the *last* position attract every query of head 0 (a [SEP] sink)."""
    d = synthetic(samples=6, layers=1, heads=2, length=33, dim=8, causal=causal, seed=8)
    k = d.k.clone()
    for s, n in enumerate(d.lengths.tolist()):
        k[s, 0, 0, n - 1] = d.q[s, 0, 0, :n].mean(0) * 4.0
    d = dataclasses.replace(d, k=k, v=None)
    fit, ev = d.split()
    return fit, compute_gold(fit), ev, compute_gold(ev)


def test_learned_sinks_find_the_planted_last_token_and_beat_the_fixed_first_token():
    fit, fg, ev, eg = planted()
    p = predictors.get("window-w3-s1").fit(fit, fg)
    assert p.sinks.positions[0, 0, 0].item() == -1 and p.sinks.share[0, 0, 0].item() > 0.5
    score = lambda name: score_layer(ev.layer(0), eg.layers[0],
                                     predictors.get(name).fit(fit, fg).predict(ev.layer(0), 0))
    with_sink, first = score("window-w3-s1"), score("window-w3-g1")
    assert with_sink["recall"][:, 0].mean() > first["recall"][:, 0].mean() + 0.1


FAMILIES = ["window-w3", "fixed-l8-c1", "bigbird-r1", "longformer-n1", "quest-query-b8-k1",
            "xattention-b8-st4-t0.5", "minference-lq8-v2-sl2", "simhash-b6-l2-h0-top0",
            "oracle-topk-k2", "seer-b8-top1-t0", "hashattn-b8-h0-top2", "reformer-raw-b4-h1"]


@pytest.mark.parametrize("name", FAMILIES)
def test_sinks_compose_with_every_family_as_extra_columns(name):
    fit, fg, ev, _ = planted(causal=True)
    base = predictors.get(name).fit(fit, fg)
    with_s = predictors.get(name, s=2).fit(fit, fg)
    assert with_s.name.endswith("-s2") and predictors.get(with_s.name).values["s"] == 2
    assert with_s.learned
    view = ev.layer(0)
    g0, g1 = base.predict(view, 0), with_s.predict(view, 0)
    cols = with_s.sinks.graph(0, 2)
    for s, n in enumerate(ev.lengths.tolist()):
        a, b = g0.block_mask(s, 0, n, n), g1.block_mask(s, 0, n, n)
        assert torch.equal(b, a | cols.block_mask(s, 0, n, n))


def test_sinks_are_read_from_the_fit_gold_only():
    fit, fg, ev, eg = planted()
    p = predictors.get("window-s1").fit(fit, fg)
    q = predictors.get("window-s1").fit(ev, eg)
    assert torch.equal(p.sinks.positions, fit_sinks(fg, 1).positions)
    assert torch.equal(q.sinks.positions, fit_sinks(eg, 1).positions)
    before = p.sinks.positions.clone()
    p.predict(ev.layer(0), 0)
    assert torch.equal(p.sinks.positions, before)


def test_default_names_are_unchanged_and_sinks_validate():
    assert predictors.get("window-w3").name == "window-w3"
    assert predictors.get("bigbird").name == "bigbird-r3-w3-g2"
    assert not predictors.get("window-w3").learned
    assert all("-s0" not in n for n in sweep_names("default"))
    with pytest.raises(PredictorError, match="sink count s must be >= 0"):
        predictors.get("window", s=-1)
    with pytest.raises(PredictorError, match="layers"):
        fit, fg, ev, _ = planted()
        predictors.get("window-s1").fit(fit, fg).predict(ev.layer(0).heads([0]), 0)


def test_sinks_fit_every_layer_and_head():
    d = dataclasses.replace(synthetic(samples=3, layers=2, heads=3, length=20, dim=4, seed=3), v=None)
    s = fit_sinks(compute_gold(d), 2)
    assert s.positions.shape == s.valid.shape == s.share.shape == (2, 3, 2)
    assert bool((s.share[..., 0] >= s.share[..., 1]).all())
