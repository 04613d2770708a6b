"""bench.report.front_stats and bench.report.claims: front readings, areas, bootstrap intervals and the
paper's claim table, on hand-built fronts with known answers and on random ones (hypothesis)."""

import math
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import BenchError
from bench.report import claims
from bench.report import front_stats as fs
from bench.report.pareto import pareto_mask
from bench.results import intervals

nan = math.nan
KNOWN_X, KNOWN_Y = [0.7, 0.85, 1.0], [0.9, 0.6, 0.0]

# ---------------------------------------------------------------- fronts


def test_front_points_sorts_and_drops_dominated_and_nan_points():
    x = [0.85, 0.7, 1.0, 0.8, nan, 0.95, 0.7]
    y = [0.6, 0.9, 0.0, 0.5, 1.0, nan, 0.9]  # (0.8, 0.5) is beaten by (0.85, 0.6); (0.7, 0.9) twice
    fx, fy = fs.front_points(x, y)
    assert fx.tolist() == KNOWN_X and fy.tolist() == KNOWN_Y


def test_front_points_of_nothing_is_empty():
    fx, fy = fs.front_points([nan, 0.5], [0.3, nan])
    assert fx.size == fy.size == 0
    assert np.isnan(fs.interpolate_on_front(fx, fy, [0.5])).all()
    assert math.isnan(fs.front_auc(fx, fy).auc) and fs.front_auc(fx, fy).covered == 0


def test_metric_front_reads_directions_from_the_metric_table():
    df = pd.DataFrame({"sparsity": [0.9, 0.8, 0.95], "mass": [0.5, 0.9, 0.2], "output_error": [0.1, 0.3, 0.2]})
    fx, fy = fs.metric_front(df, "sparsity", "mass")
    assert fx.tolist() == [0.8, 0.9, 0.95] and fy.tolist() == [0.9, 0.5, 0.2]
    fx, fy = fs.metric_front(df, "sparsity", "output_error")  # lower error is better: (0.8, 0.3) is beaten
    assert fx.tolist() == [0.9, 0.95] and fy.tolist() == [0.1, 0.2]


# ---------------------------------------------------------------- readings


def test_known_readings_between_and_at_front_points():
    r = fs.interpolate_on_front(KNOWN_X, KNOWN_Y, [0.8, 0.775, 0.925])
    assert r == pytest.approx([0.7, 0.75, 0.3], abs=1e-12)
    # exact at a front point, both ends included
    assert fs.interpolate_on_front(KNOWN_X, KNOWN_Y, [0.7, 0.85, 1.0]).tolist() == [0.9, 0.6, 0.0]


def test_readings_outside_the_front_are_nan():
    r = fs.interpolate_on_front(KNOWN_X, KNOWN_Y, [0.69, 1.0000001, 0.0])
    assert np.isnan(r).all()
    r = fs.interpolate_on_front([0.75, 0.85], [0.9, 0.6])  # default levels 0.8, 0.9, 0.95
    assert r[0] == pytest.approx(0.75, abs=1e-12) and np.isnan(r[1:]).all()


def test_a_one_point_front_reads_only_at_its_point():
    assert fs.interpolate_on_front([0.9], [0.4], [0.9]).tolist() == [0.4]
    assert np.isnan(fs.interpolate_on_front([0.9], [0.4], [0.8, 0.95])).all()


def test_a_point_under_the_line_but_not_dominated_is_on_the_front():
    # (0.8, 0.65) lies under the segment (0.7, 0.9)-(0.85, 0.6) but nothing dominates it: the front is
    # not a convex hull, and the reading at 0.8 is that point's recall.
    fx, fy = fs.front_points([0.7, 0.85, 1.0, 0.8], [0.9, 0.6, 0.0, 0.65])
    assert fx.tolist() == [0.7, 0.8, 0.85, 1.0]
    assert fs.interpolate_on_front(fx, fy, [0.8]).tolist() == [0.65]


def test_a_dominated_point_changes_no_reading():
    levels = [0.7, 0.8, 0.9, 0.95]
    x, y = np.array([[0.7, 0.85, 1.0, 0.8]]), np.array([[0.9, 0.6, 0.0, 0.55]])  # (0.85, 0.6) beats (0.8, 0.55)
    clean = fs.interpolate_on_front(KNOWN_X, KNOWN_Y, levels)
    np.testing.assert_array_equal(fs.interpolate_batch(x, y, levels)[0], clean)
    np.testing.assert_array_equal(fs.interpolate_on_front(*fs.front_points(x[0], y[0]), levels), clean)


def test_a_front_must_be_strictly_increasing_in_x():
    with pytest.raises(ValueError, match="strictly increasing"):
        fs.interpolate_on_front([0.9, 0.8], [0.1, 0.5])
    with pytest.raises(ValueError, match="one length"):
        fs.front_auc([0.8, 0.9], [0.5])


# ---------------------------------------------------------------- areas


def test_area_of_a_known_front():
    # [0.8, 0.85]: from 0.7 to 0.6, area 0.05 * 0.65; [0.85, 0.99]: from 0.6 to 0.04, area 0.14 * 0.32
    a = fs.front_auc(KNOWN_X, KNOWN_Y, 0.8, 0.99)
    assert a.auc == pytest.approx((0.05 * 0.65 + 0.14 * 0.32) / 0.19, abs=1e-12) and a.covered == pytest.approx(1)


def test_area_over_the_covered_part_only():
    a = fs.front_auc([0.8, 0.9], [1.0, 0.5], 0.8, 1.0)  # covers [0.8, 0.9] of [0.8, 1.0]
    assert a.auc == pytest.approx(0.75, abs=1e-12) and a.covered == pytest.approx(0.5, abs=1e-12)
    a = fs.front_auc([0.5, 0.9], [1.0, 0.6], 0.8, 1.0)  # starts before lo: y(0.8) = 0.7, mean 0.65
    assert a.auc == pytest.approx(0.65, abs=1e-12) and a.covered == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("fx, fy", [([0.5, 0.7], [0.9, 0.8]), ([0.9], [0.5]), ([0.6, 0.8], [0.9, 0.4])])
def test_area_of_a_front_that_misses_the_window_is_nan(fx, fy):
    a = fs.front_auc(fx, fy, 0.8, 0.99)  # before it, one point inside, touching lo only
    assert math.isnan(a.auc) and a.covered == 0


def test_area_needs_a_window():
    with pytest.raises(ValueError, match="lo < hi"):
        fs.front_auc(KNOWN_X, KNOWN_Y, 0.9, 0.9)


# ---------------------------------------------------------------- properties of fronts, readings and areas

coord = st.one_of(st.floats(0, 1), st.just(nan), st.sampled_from([0.8, 0.9, 0.95]))
rows = st.integers(1, 4).flatmap(lambda b: st.integers(1, 7).flatmap(
    lambda k: st.tuples(*[st.lists(st.tuples(coord, coord), min_size=k, max_size=k) for _ in range(b)])))


def _arrays(rows_):
    return (np.array([[p[0] for p in r] for r in rows_], dtype=float),
            np.array([[p[1] for p in r] for r in rows_], dtype=float))


@settings(max_examples=200, deadline=None)
@given(rows)
def test_batched_fronts_are_the_single_fronts(rows_):
    x, y = _arrays(rows_)
    mask = fs.front_mask_batch(x, y)
    levels = [0.0, 0.3, 0.8, 0.9, 0.95, 1.0]
    reads = fs.interpolate_batch(x, y, levels)
    aucs, covs = fs.auc_batch(x, y, 0.5, 0.99)
    for b in range(len(x)):
        assert mask[b].tolist() == pareto_mask(x[b], y[b]).tolist()
        fx, fy = fs.front_points(x[b], y[b])
        np.testing.assert_array_equal(reads[b], fs.interpolate_on_front(fx, fy, levels))
        a = fs.front_auc(fx, fy, 0.5, 0.99)
        np.testing.assert_array_equal([aucs[b], covs[b]], [a.auc, a.covered])


@st.composite
def fronts(draw):
    xs = sorted(set(draw(st.lists(st.floats(0, 1), min_size=1, max_size=8))))
    ys = sorted(draw(st.lists(st.floats(0, 1), min_size=len(xs), max_size=len(xs))), reverse=True)
    return np.array(xs), np.array(ys)


@settings(max_examples=200, deadline=None)
@given(fronts(), st.lists(st.floats(0, 1), min_size=1, max_size=10))
def test_readings_are_monotone_and_inside_the_front(front, levels):
    fx, fy = front
    levels = np.sort(levels)
    r = fs.interpolate_on_front(fx, fy, levels)
    inside = (levels >= fx[0]) & (levels <= fx[-1])
    assert np.isnan(r[~inside]).all() and np.isfinite(r[inside]).all()
    ri = r[inside]
    assert np.all(np.diff(ri) <= 1e-12) and np.all((ri >= fy.min() - 1e-12) & (ri <= fy.max() + 1e-12))
    np.testing.assert_allclose(ri, np.interp(levels[inside], fx, fy), atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(fronts(), st.floats(0, 0.9), st.floats(0.01, 0.5))
def test_area_is_a_mean_of_the_front(front, lo, width):
    fx, fy = front
    hi = lo + width
    a = fs.front_auc(fx, fy, lo, hi)
    assert 0 <= a.covered <= 1 + 1e-12
    if a.covered == 0:
        assert math.isnan(a.auc)
    else:  # a mean of a monotone line over C lies between its values at the ends of C
        ends = fs.interpolate_on_front(fx, fy, [max(lo, fx[0]), min(hi, fx[-1])])
        assert ends[1] - 1e-9 <= a.auc <= ends[0] + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1), st.floats(0.05, 0.6))
def test_area_of_a_line_is_its_value_at_the_middle(c, slope, x0):
    fx = np.array([x0, x0 + 0.2, 1.0])
    fy = c - slope * fx
    a = fs.front_auc(fx, fy, 0.7, 0.95)
    lo = max(0.7, x0)
    assert a.auc == pytest.approx(c - slope * (lo + 0.95) / 2, abs=1e-9)
    assert a.covered == pytest.approx((0.95 - lo) / 0.25, abs=1e-9)


# ---------------------------------------------------------------- bootstrap


def family(k=6, s=16, noise=0.02, seed=1):
    """``k`` configurations on a line recall = 1.3 - sparsity, noisy per eval sample."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(k):
        sp = 0.75 + 0.04 * i + rng.normal(0, noise / 2, s)
        out[f"c{i}"] = np.column_stack([sp, 1.3 - sp + rng.normal(0, noise, s)])
    return out


def test_bootstrap_is_deterministic_and_contains_its_estimate():
    per = family()
    a = fs.bootstrap_interval(per, fs.recall_at(0.9), n_boot=500, seed=3)
    b = fs.bootstrap_interval(per, fs.recall_at(0.9), n_boot=500, seed=3)
    assert a == b  # bit for bit
    assert a.lo < a.estimate < a.hi and a.hi - a.lo < 0.05
    assert fs.bootstrap_interval(per, fs.recall_at(0.9), n_boot=500, seed=4) != a


def test_bootstrap_estimate_is_the_reading_of_the_full_sample_front():
    per = family()
    means = np.array([np.ascontiguousarray(v.T).mean(axis=-1) for v in per.values()])  # per metric, in order
    want = fs.interpolate_on_front(*fs.front_points(means[:, 0], means[:, 1]), [0.85])[0]
    assert fs.bootstrap_interval(per, fs.recall_at(0.85), n_boot=10).estimate == want
    area = fs.front_auc(*fs.front_points(means[:, 0], means[:, 1]), 0.8, 0.9).auc
    assert fs.bootstrap_interval(per, fs.auc_between(0.8, 0.9), n_boot=10).estimate == pytest.approx(area, abs=1e-12)


def test_identical_samples_give_a_zero_width_interval():
    per = {k: np.repeat(v[:1], 16, axis=0) for k, v in family().items()}
    iv = fs.bootstrap_interval(per, fs.recall_at(0.9), n_boot=200)
    assert iv.lo == iv.estimate == iv.hi


def test_a_level_the_family_rarely_reaches_is_not_measured():
    per = {"only": np.column_stack([np.r_[np.full(8, 0.89), np.full(8, 0.91)], np.full(16, 0.5)])}
    iv = fs.bootstrap_interval(per, fs.recall_at(0.9), n_boot=400)
    assert iv.estimate == 0.5 or math.isnan(iv.estimate)  # a one-point front at mean sparsity 0.9
    assert math.isnan(iv.lo)  # about half the replicates fall short of 0.9


def test_one_seed_is_the_plain_bootstrap_bit_for_bit():
    per = family()
    plain = fs.bootstrap_interval(per, fs.recall_at(0.9), n_boot=300, seed=7)
    assert fs.bootstrap_interval_seeds({k: v[None] for k, v in per.items()}, fs.recall_at(0.9),
                                       n_boot=300, seed=7) == plain


def test_seed_spread_widens_the_interval():
    # Every eval sample alike, seeds apart: averaging seeds would give a zero-width interval.
    base = {k: np.repeat(v[:1], 16, axis=0) for k, v in family().items()}
    per_seed = {k: np.stack([v + [0, d] for d in (-0.03, 0.0, 0.03)]) for k, v in base.items()}
    averaged = fs.bootstrap_interval({k: v.mean(axis=0) for k, v in per_seed.items()}, fs.recall_at(0.9))
    pooled = fs.bootstrap_interval_seeds(per_seed, fs.recall_at(0.9))
    assert averaged.hi - averaged.lo == 0 and pooled.hi - pooled.lo > 0.01
    assert pooled.estimate == pytest.approx(averaged.estimate, abs=1e-12)


def test_replicate_means_do_not_depend_on_the_gather_size(monkeypatch):
    values = np.random.default_rng(0).random((5, 2, 3, 16))
    rng = np.random.default_rng(1)
    samples, seeds = rng.integers(0, 16, (50, 16)), rng.integers(0, 3, (50, 3))
    once = fs.replicate_means(values, samples, seeds)
    monkeypatch.setattr(intervals, "_GATHER_ELEMENTS", 7)  # one replicate at a time (where the code lives)
    np.testing.assert_array_equal(fs.replicate_means(values, samples, seeds), once)
    full = fs.replicate_means(values, np.arange(16)[None])[0]
    np.testing.assert_array_equal(full, values.mean(axis=-1).mean(axis=-1))
    assert once[0, 2, 1] == pytest.approx(values[2, 1][seeds[0]][:, samples[0]].mean(), abs=1e-12)


def test_percentile_interval_orders_nan_below_every_number():
    r = np.arange(100.0)
    assert fs.percentile_interval(r) == tuple(np.quantile(r, [(1 - 0.95) / 2, (1 + 0.95) / 2]))
    r[:2] = nan  # 2 of 100 missing: the 2.5% quantile still reads numbers only
    assert fs.percentile_interval(r) == pytest.approx((2.475, 96.525))
    r[:3] = nan
    lo, hi = fs.percentile_interval(r)
    assert math.isnan(lo) and hi == pytest.approx(96.525)
    assert all(math.isnan(v) for v in fs.percentile_interval([nan] * 5))
    with pytest.raises(ValueError, match="level"):
        fs.percentile_interval(r, 1.0)


def test_bootstrap_input_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\[S, 2\]"):
        fs.bootstrap_interval({"a": np.zeros((16, 2)), "b": np.zeros((15, 2))}, fs.recall_at(0.9))
    with pytest.raises(ValueError, match=r"\[R, S, 2\]"):
        fs.bootstrap_interval_seeds({"a": np.zeros((16, 2))}, fs.recall_at(0.9))
    with pytest.raises(ValueError, match="no configurations"):
        fs.bootstrap_interval({}, fs.recall_at(0.9))


def test_bootstrap_is_fast_enough():
    per = family(k=20, s=16)
    fs.bootstrap_interval(per, fs.recall_at(0.9), n_boot=10)  # warm up imports
    t = time.perf_counter()
    fs.bootstrap_interval(per, fs.recall_at(0.9), n_boot=1000)
    assert time.perf_counter() - t < 2.0


# ---------------------------------------------------------------- verdicts


@pytest.mark.parametrize("a, b, verdict", [
    ((0.8, 0.75, 0.85), (0.6, 0.55, 0.7), "holds"),
    ((0.6, 0.55, 0.7), (0.8, 0.75, 0.85), "does not hold"),
    ((0.8, 0.7, 0.85), (0.75, 0.65, 0.72), "within noise"),
    ((0.8, 0.7, 0.85), (0.6, 0.5, 0.7), "within noise"),  # touching intervals overlap
    ((0.8, nan, 0.85), (0.6, 0.55, 0.7), "not measured"),
    ((0.8, 0.75, 0.85), (nan, nan, nan), "not measured"),
])
def test_claim_verdicts(a, b, verdict):
    assert fs.claim_verdict(a, b) == verdict


# ---------------------------------------------------------------- the paper's claim table


def claim_frame(offsets, datasets=("d",), s=16, seed=0):
    """Families on lines recall = 1.2 + offset - sparsity, 5 configurations at sparsity 0.75 ... 0.95."""
    rng = np.random.default_rng(seed)
    rows = []
    for ds in datasets:
        for (variant, fam), off in offsets.items():
            for k in range(5):
                sp = np.clip(0.75 + 0.05 * k + rng.normal(0, 0.005, s), 0, 1)
                rows.append(dict(dataset=ds, family=fam, variant=variant, name=f"{fam}-{k}", sparsity=sp,
                                 recall=np.clip(1.2 + off - sp + rng.normal(0, 0.01, s), 0, 1)))
    return pd.DataFrame(rows)


OFFSETS = {("bare", "sf-dist"): 0.1, ("bare", "sf-quant"): 0.05, ("bare", "reformer"): -0.1,
           ("bare", "bigbird"): -0.2, ("helped", "sf-kmeans"): -0.1, ("helped", "longformer"): 0.1,
           ("helped", "routing"): -0.099}


def test_claim_table_verdicts_and_winners():
    t = claims.paper_claim_table(claim_frame(OFFSETS), levels=[0.8, 0.9, 0.99], n_boot=300)
    assert list(t.columns) == claims.CLAIM_COLUMNS and len(t) == 6
    bare = t[t["variant"] == "bare"].set_index("level")
    assert (bare.loc[[0.8, 0.9], "sf_family"] == "sf-dist").all()
    assert (bare.loc[[0.8, 0.9], "baseline_family"] == "reformer").all()
    assert (bare.loc[[0.8, 0.9], "verdict"] == "holds").all()
    assert bare.loc[0.8, "sf_lo"] < bare.loc[0.8, "sf_recall"] < bare.loc[0.8, "sf_hi"]
    assert bare.loc[0.8, "missing"] == "sf-kmeans, routing, longformer"
    assert bare.loc[0.99, "verdict"] == "not measured" and pd.isna(bare.loc[0.99, "sf_family"])
    helped = t[t["variant"] == "helped"].set_index("level")
    assert (helped.loc[[0.8, 0.9], "baseline_family"] == "longformer").all()
    assert (helped.loc[[0.8, 0.9], "verdict"] == "does not hold").all()


def test_claim_table_within_noise_and_determinism():
    offsets = {("bare", "sf-quant"): 0.0, ("bare", "routing"): 0.002}
    df = claim_frame(offsets)
    t = claims.paper_claim_table(df, levels=[0.85], n_boot=300)
    assert t["verdict"].tolist() == ["within noise"]
    pd.testing.assert_frame_equal(claims.paper_claim_table(df, levels=[0.85], n_boot=300), t)


def test_best_of_one_family_is_that_family():
    offsets = {("bare", "sf-dist"): 0.1, ("bare", "bigbird"): 0.0}
    df = claim_frame(offsets)
    t = claims.paper_claim_table(df, levels=[0.8, 0.9], n_boot=200).set_index("level")
    fam = claims.family_intervals(df, levels=[0.8, 0.9], n_boot=200).set_index(["family", "level"])
    for lv in (0.8, 0.9):
        nums = ["estimate", "lo", "hi"]
        assert tuple(t.loc[lv, ["sf_recall", "sf_lo", "sf_hi"]]) == tuple(fam.loc[("sf-dist", lv), nums])
        assert tuple(t.loc[lv, ["baseline_recall", "baseline_lo", "baseline_hi"]]) == tuple(
            fam.loc[("bigbird", lv), nums])


def test_claim_table_of_one_dataset_ignores_the_others():
    alone = claims.paper_claim_table(claim_frame(OFFSETS, datasets=("a",)), n_boot=100)
    both = claims.paper_claim_table(pd.concat([claim_frame(OFFSETS, datasets=("a",)),
                                               claim_frame(OFFSETS, datasets=("b",), seed=5)]), n_boot=100)
    pd.testing.assert_frame_equal(both[both["dataset"] == "a"].reset_index(drop=True), alone)


def test_claim_table_with_seeds():
    df = claim_frame({("bare", "sf-dist"): 0.1, ("bare", "reformer"): -0.1})
    seeded = pd.concat([df.assign(seed=0), df.assign(seed=1, recall=[r - 0.01 for r in df["recall"]])])
    t = claims.paper_claim_table(seeded, levels=[0.85], n_boot=200)
    assert t["verdict"].tolist() == ["holds"]
    plain = claims.paper_claim_table(df.assign(recall=[r - 0.005 for r in df["recall"]]), levels=[0.85], n_boot=200)
    assert t["sf_recall"].iloc[0] == pytest.approx(plain["sf_recall"].iloc[0], abs=1e-12)
    uneven = pd.concat([seeded, df.iloc[:1].assign(seed=2)])
    with pytest.raises(BenchError, match="seeds, samples"):
        claims.paper_claim_table(uneven)


def test_claim_table_input_errors_are_one_line():
    df = claim_frame({("bare", "sf-dist"): 0.0, ("bare", "reformer"): 0.0})
    with pytest.raises(BenchError, match="missing: recall"):
        claims.paper_claim_table(df.drop(columns="recall"))
    with pytest.raises(BenchError, match="appears 2 times"):
        claims.paper_claim_table(pd.concat([df, df.iloc[:1]]))
    short = df.copy()
    short["sparsity"] = [v[:8] for v in short["sparsity"]]
    with pytest.raises(BenchError, match="one length"):
        claims.paper_claim_table(short)
    other = df.copy()
    other.loc[other["family"] == "reformer", "sparsity"] = other.loc[other["family"] == "reformer", "sparsity"].map(
        lambda v: v[:8])
    other.loc[other["family"] == "reformer", "recall"] = other.loc[other["family"] == "reformer", "recall"].map(
        lambda v: v[:8])
    with pytest.raises(BenchError, match="numbers of eval samples"):
        claims.paper_claim_table(other)
