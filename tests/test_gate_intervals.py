"""Gates with seeds and intervals, on hand-built summaries with known answers: a configuration's value is
the mean over the seeds its baseline entry lists; a baseline interval widens the tolerance to its far bound
(inside passes, outside fails); without an interval the old tolerance holds; baselines made before seeds
and intervals (reports/baselines/smoke.json) gate as they did."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.results.gates import GateError, compare, load_baseline, make_baseline
from bench.results.intervals import mean_interval

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT = {"profile": "smoke", "datasets": {"d": {"descriptor": {"source": "synthetic"}, "fit_samples": 4,
                                                      "eval_samples": 4}}}
TOL = 0.01  # the default tolerance of recall, sparsity and exact (bench.evaluation.metric_table)


def entry(name, recall, per_sample=None, seed=None, sparsity=0.5, exact=0.25, ratio=0.001):
    """A summary entry as bench.results.summary writes it (the parts the gates read)."""
    e = {"dataset": "d", "backend": "torch", "name": name, "family": name.split("-")[0],
         "mean": {"recall": recall, "sparsity": sparsity, "exact": exact}, "ratio_to_dense": {"entmax15-topk": ratio}}
    if per_sample is not None:
        e["per_sample"] = {"recall": list(per_sample), "sparsity": [sparsity] * len(per_sample),
                           "exact": [exact] * len(per_sample)}
    if seed is not None:
        e["seed"] = seed
    return e


def summary(*entries):
    return {"predictors": list(entries), "fingerprint": copy.deepcopy(FINGERPRINT)}


def with_recall(s: dict, values: dict) -> dict:
    """``s`` with the recall mean of some entries (``{(name, seed): recall}``) replaced."""
    out = copy.deepcopy(s)
    for e in out["predictors"]:
        key = (e["name"], e.get("seed", 0))
        if key in values:
            e["mean"]["recall"] = values[key]
    return out


# window: deterministic, one record; its per-sample recall spans [0.5, 0.75] over 2 samples.
# reformer: randomised, seeds 0 and 1, every sample alike within a seed (0.5 and 0.75): only seeds vary.
RUN = summary(entry("window-w3", 0.625, [0.5, 0.75]),
              entry("reformer-b4", 0.5, [0.5, 0.5], seed=0), entry("reformer-b4", 0.75, [0.75, 0.75], seed=1))


def test_mean_interval_known_answers():
    assert mean_interval([[0.5, 0.5, 0.5, 0.5]]) == (0.5, 0.5)
    # two samples: a quarter of the replicates draw the first twice, a quarter the second twice
    assert mean_interval([[0.0, 1.0]]) == (0.0, 1.0)
    # every sample alike, seeds apart: resampling seeds gives the spread that averaging them would hide
    assert mean_interval([[0.0, 0.0], [1.0, 1.0]]) == (0.0, 1.0)
    assert all(math.isnan(v) for v in mean_interval([[0.5, math.nan]]))
    rng = np.random.default_rng(3)
    v = rng.random((3, 16))
    lo, hi = mean_interval(v, seed=7)
    assert (lo, hi) == mean_interval(v, seed=7) and lo < v.mean() < hi
    with pytest.raises(ValueError, match=r"\[R, S\]"):
        mean_interval([0.5, 0.5])


def test_the_baseline_holds_means_over_seeds_their_seeds_and_intervals():
    base = make_baseline(RUN)
    window, reformer = base["entries"]["d--torch--window-w3"], base["entries"]["d--torch--reformer-b4"]
    assert set(base["entries"]) == {"d--torch--window-w3", "d--torch--reformer-b4"}  # one entry per configuration
    assert "seeds" not in window and window["recall"] == 0.625 and window["intervals"]["recall"] == [0.5, 0.75]
    assert reformer["seeds"] == [0, 1] and reformer["recall"] == 0.625 and reformer["ratio"] == 0.001
    assert reformer["intervals"] == {"recall": [0.5, 0.75], "sparsity": [0.5, 0.5], "exact": [0.25, 0.25]}
    assert compare(RUN, base) == ([], [])
    plain = make_baseline(RUN, intervals=False)
    assert not any("intervals" in e for e in plain["entries"].values())
    assert plain["entries"]["d--torch--reformer-b4"]["seeds"] == [0, 1]


def test_inside_the_interval_passes_outside_fails_without_one_the_old_tolerance():
    base = make_baseline(RUN)
    plain = make_baseline(RUN, intervals=False)
    inside = with_recall(RUN, {("window-w3", 0): 0.5 - TOL + 0.001})  # lo 0.5 minus less than the tolerance
    assert compare(inside, base)[0] == []
    fails, _ = compare(inside, plain)  # 0.116 below the value itself: the old rule bites
    assert fails == ["d--torch--window-w3: recall 0.4910 vs baseline 0.6250 (worse by 0.1340 > tolerance 0.01)"]
    outside = with_recall(RUN, {("window-w3", 0): 0.5 - TOL - 0.001})
    assert compare(outside, base)[0] == [
        "d--torch--window-w3: recall 0.4890 vs baseline 0.6250 [0.5000, 0.7500] (below its lower bound by 0.0110 > "
        "tolerance 0.01)"]
    # the mean over seeds is what is gated: seed 1 drops, seed 0 rises as much, the mean stays
    swapped = with_recall(RUN, {("reformer-b4", 0): 0.75, ("reformer-b4", 1): 0.5})
    assert compare(swapped, plain)[0] == []
    both = with_recall(RUN, {("reformer-b4", 0): 0.4, ("reformer-b4", 1): 0.4})  # mean 0.4 < 0.5 - 0.01
    assert compare(both, base)[0] == [
        "d--torch--reformer-b4 (mean of seeds 0, 1): recall 0.4000 vs baseline 0.6250 [0.5000, 0.7500] (below its "
        "lower bound by 0.1000 > tolerance 0.01)"]


def test_a_lower_better_metric_fails_above_the_upper_bound():
    quality = {"output_error": {"tolerance": 0.01, "higher_is_better": False}}
    run = summary(entry("window-w3", 0.6, [0.5, 0.7]))
    run["predictors"][0]["mean"]["output_error"] = 0.2
    run["predictors"][0]["per_sample"]["output_error"] = [0.1, 0.3]
    base = make_baseline(run, quality=quality)
    assert base["entries"]["d--torch--window-w3"]["intervals"] == {"output_error": [0.1, 0.3]}
    for error, failed in ((0.3 + TOL - 0.001, False), (0.3 + TOL + 0.001, True)):
        worse = copy.deepcopy(run)
        worse["predictors"][0]["mean"]["output_error"] = error
        fails, _ = compare(worse, base)
        assert bool(fails) == failed and (not failed or "above its upper bound by 0.0110" in fails[0])


def test_seeds_missing_from_the_run_fail_and_seeds_not_gated_are_noted():
    base = make_baseline(RUN)
    seed0 = summary(*RUN["predictors"][:2])  # the run lost reformer's seed 1
    fails, notes = compare(seed0, base)
    assert fails == ["d--torch--reformer-b4: seed(s) 1 in the baseline but not in this run"] and notes == []
    old = make_baseline(summary(*RUN["predictors"][:2]))  # a baseline of seed 0 alone, as before seeds existed
    assert "seeds" not in old["entries"]["d--torch--reformer-b4"]
    fails, notes = compare(RUN, old)  # seed 0 is gated as before, seed 1 is only listed
    assert fails == [] and notes == ["d--torch--reformer-b4--seed1: a seed the baseline does not gate"]


def test_a_malformed_seed_in_the_run_is_bad_input():
    bad = copy.deepcopy(RUN)
    bad["predictors"][2]["seed"] = "1"
    with pytest.raises(GateError, match=r"predictors\[2\] has seed \"1\", not an integer >= 0"):
        compare(bad, make_baseline(RUN))


def test_no_per_sample_values_means_no_intervals():
    run = summary(entry("window-w3", 0.625), entry("window-w5", 0.7, [0.6, math.nan]))
    base = make_baseline(run)
    assert "intervals" not in base["entries"]["d--torch--window-w3"]  # an older run: no per-sample values
    # a NaN sample: no recall interval (the old tolerance); its other metrics have theirs
    assert base["entries"]["d--torch--window-w5"]["intervals"] == {"sparsity": [0.5, 0.5], "exact": [0.25, 0.25]}


@pytest.mark.parametrize("how, match", [
    (lambda e: e.update(intervals={"recall": [0.7, 0.5]}), r"intervals.recall is \[0.7, 0.5\]: lo > hi"),
    (lambda e: e.update(intervals={"recall": [0.5]}), r"intervals.recall is \[0.5\], not \[lo, hi\]"),
    (lambda e: e.update(intervals={"recal": [0.5, 0.6]}), "intervals.recal: not a gated metric"),
    (lambda e: e.update(intervals={"recall": [0.5, 1.5]}), r"a bound is 1.5, outside \[0, 1\]"),
    (lambda e: e.update(intervals={"recall": [None, 0.6]}), "a bound is null"),
    (lambda e: e.update(intervals=[0.5, 0.6]), "intervals is not an object"),
    (lambda e: e.update(seeds=[]), r"seeds is \[\], not a non-empty list of integers >= 0"),
    (lambda e: e.update(seeds=[0, 0]), r"seeds lists a seed twice: \[0, 0\]"),
    (lambda e: e.update(seed=[0]), "unknown field 'seed'"),
])
def test_malformed_seeds_and_intervals_are_bad_input(tmp_path, capsys, how, match):
    base = make_baseline(RUN)
    how(base["entries"]["d--torch--window-w3"])
    with pytest.raises(GateError, match=match):
        compare(RUN, base)
    path = tmp_path / "b.json"
    path.write_text(json.dumps(base))
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(RUN))
    assert main(["compare", str(run), "--baseline", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_the_command_writes_intervals_unless_told_not_to(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(RUN))
    b = tmp_path / "b.json"
    assert main(["compare", str(run), "--baseline", str(b), "--update"]) == 0
    assert "(2 configurations, 2 with intervals)" in capsys.readouterr().out
    assert main(["compare", str(run), "--baseline", str(b)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("0 regression(s); 2 with the baseline's intervals as tolerances")
    assert main(["compare", str(run), "--baseline", str(b), "--update", "--no-intervals"]) == 0
    assert "(2 configurations, 0 with intervals)" in capsys.readouterr().out
    assert not any("intervals" in e for e in load_baseline(b)["entries"].values())
    assert main(["compare", str(run), "--baseline", str(b), "--no-intervals"]) == 2
    assert "--no-intervals says how --update writes a baseline" in capsys.readouterr().err


def test_the_committed_smoke_baseline_still_reads_and_gates_seed_zero():
    base = load_baseline(ROOT / "reports" / "baselines" / "smoke.json")
    assert not any(k in e for e in base["entries"].values() for k in ("seeds", "intervals"))
    # A run with its values and an extra seed of one configuration passes, the seed listed as not gated.
    entries = []
    for key, e in base["entries"].items():
        dataset, backend, name = key.split("--")
        entries.append({"dataset": dataset, "backend": backend, "name": name, "family": name.split("-")[0],
                        "mean": {m: e[m] for m in base["quality"]}, "ratio_to_dense": {"entmax15-topk": e["ratio"]}})
    extra = {**copy.deepcopy(entries[0]), "seed": 1}
    extra["mean"]["recall"] = 0.0  # seed 1 is not gated by a baseline without seeds
    run = {"predictors": entries + [extra], "fingerprint": base["fingerprint"]}
    fails, notes = compare(run, base)
    assert fails == [] and notes == [f"{next(iter(base['entries']))}--seed1: a seed the baseline does not gate"]
    entries[0]["mean"]["recall"] -= 0.011  # the old tolerance, unchanged
    assert len(compare(run, base)[0]) == 1
