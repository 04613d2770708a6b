import json

import pytest

import predictors
from bench.cli import main
from bench.evaluation.prepared import prepare
from bench.evaluation.score import score_predictor
from bench.results.gates import compare, make_baseline


def summary_of(prep, names, ratio=0.001, dataset="synthetic", profile="smoke"):
    entries = []
    for name in names:
        rec = score_predictor(prep, predictors.get(name))
        entries.append({"dataset": dataset, "backend": "torch", "name": name, "family": rec["family"],
                        "mean": rec["mean"], "ratio_to_dense": {"entmax15-topk": ratio}})
    # As bench.results.summary.fingerprint writes it: what the numbers depend on besides the code.
    fingerprint = {"profile": profile, "datasets": {dataset: {
        "descriptor": prep.data.descriptor, "fit_samples": prep.fit.num_samples,
        "eval_samples": prep.eval.num_samples}}}
    return {"predictors": entries, "fingerprint": fingerprint}


@pytest.fixture(scope="module")
def prep():
    return prepare("synthetic", samples=4, length=60, use_cache=False)


def test_identical_run_passes(prep):
    s = summary_of(prep, ["window-w5", "window-w9-g1"])
    failures, notes = compare(s, make_baseline(s))
    assert failures == [] and notes == []


def test_perturbed_predictor_fails_the_quality_gate(prep):
    base = make_baseline(summary_of(prep, ["window-w9"]))
    # The "same" configuration now predicts a narrower window: recall drops, the gate must bite.
    worse = summary_of(prep, ["window-w5"])
    worse["predictors"][0]["name"] = "window-w9"
    failures, _ = compare(worse, base)
    assert any("window-w9: recall" in f and "worse by" in f for f in failures)
    assert not any("sparsity" in f for f in failures)  # sparsity went up: not a regression


def test_lower_is_better_direction(prep):
    s = summary_of(prep, ["window-w5"])
    base = make_baseline(s, quality={"output_error": {"tolerance": 0.01, "higher_is_better": False}})
    s["predictors"][0]["mean"]["output_error"] += 0.05
    failures, _ = compare(s, base)
    assert len(failures) == 1 and "output_error" in failures[0]


def test_speed_gate_uses_ratios_with_factor_and_floor(prep):
    base = make_baseline(summary_of(prep, ["window-w5"], ratio=0.05))
    ok = summary_of(prep, ["window-w5"], ratio=0.2)  # 4x slower relative to dense: within factor 5
    assert compare(ok, base)[0] == []
    slow = summary_of(prep, ["window-w5"], ratio=0.3)  # 6x
    assert "prediction takes 0.3000" in compare(slow, base)[0][0]
    assert compare(slow, base, check_speed=False)[0] == []
    tiny = make_baseline(summary_of(prep, ["window-w5"], ratio=1e-6))
    assert compare(summary_of(prep, ["window-w5"], ratio=0.015), tiny)[0] == []  # under the floor


def test_missing_and_new_configurations(prep):
    # window-w9 is in both: the gate checks one configuration (one checking none is refused: test_gates).
    base = make_baseline(summary_of(prep, ["window-w5", "window-w9"]))
    failures, notes = compare(summary_of(prep, ["window-w7", "window-w9"]), base)
    assert failures == ["synthetic--torch--window-w5: in the baseline but not in this run"]
    assert notes == ["synthetic--torch--window-w7: new configuration, not in the baseline"]


def test_compare_command(prep, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    s = summary_of(prep, ["window-w9"])
    (run / "summary.json").write_text(json.dumps(s))
    assert main(["compare", str(run), "--baseline", str(tmp_path / "b.json"), "--update"]) == 0
    assert main(["compare", str(run), "--baseline", str(tmp_path / "b.json")]) == 0
    s["predictors"][0]["mean"]["recall"] -= 0.1
    (run / "summary.json").write_text(json.dumps(s))
    assert main(["compare", str(run), "--baseline", str(tmp_path / "b.json")]) == 1
    assert "FAIL: synthetic--torch--window-w9: recall" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "nope"), "--baseline", str(tmp_path / "b.json")]) == 2


@pytest.mark.parametrize("name", ["sf-kmeans-r4-k4-top1", "oracle-margin-sp0.9", "window-w3-s1"])
def test_scoring_given_graphs_equals_scoring_fresh_predictions(prep, name):
    from bench.evaluation.score import score_fitted

    p = predictors.get(name).fit(prep.fit, prep.fit_gold)
    graphs = [p.predict(prep.eval.layer(layer), layer) for layer in range(prep.eval.num_layers)]
    given, fresh = score_fitted(prep, p, graphs=graphs), score_fitted(prep, p)
    assert given["per_head"] == fresh["per_head"] and given["pred_pairs"] == fresh["pred_pairs"]
    assert given["predict_seconds"] == 0.0 < fresh["predict_seconds"]
