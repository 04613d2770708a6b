"""Hostile baselines and runs for ``sparsebench compare``: every gate that cannot mean anything is refused
with exit status 2 and a line naming the problem; a real regression is exit status 1."""

import copy
import json

import pytest

import predictors
from bench.cli import main
from bench.evaluation.prepared import prepare
from bench.evaluation.score import score_predictor
from bench.results.gates import GateError, compare, make_baseline

CORPUS = {"corpus": "fortunes", "corpus_sha256": "3b" * 32}


@pytest.fixture(scope="module")
def summary():
    """A run summary as bench.results.summary writes it (the parts the gates read), two configurations."""
    prep = prepare("synthetic", samples=4, length=60, use_cache=False)
    entries = []
    for name in ("window-w5", "window-w9-g1"):
        rec = score_predictor(prep, predictors.get(name))
        entries.append({"dataset": "synthetic", "backend": "torch", "name": name, "family": rec["family"],
                        "mean": rec["mean"], "ratio_to_dense": {"entmax15-topk": 0.001}})
    descriptor = {**prep.data.descriptor, **CORPUS}  # as a text source's descriptor
    return {"predictors": entries, "fingerprint": {"profile": "smoke", "datasets": {"synthetic": {
        "descriptor": descriptor, "fit_samples": prep.fit.num_samples, "eval_samples": prep.eval.num_samples}}}}


def gate(tmp_path, summary, baseline, *extra) -> int:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "summary.json").write_text(json.dumps(summary))
    path = tmp_path / "baseline.json"
    path.write_text(baseline if isinstance(baseline, str) else json.dumps(baseline))
    return main(["compare", str(run), "--baseline", str(path), *extra])


def refused(capsys, *matches: str) -> str:
    """The one error line of a refused gate, which names every one of ``matches``; nothing on stdout."""
    out, err = capsys.readouterr()
    assert err.startswith("sparsebench: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert all(m in err for m in matches), err
    assert "FAIL" not in out and "passed" not in out
    return err


def test_the_same_run_passes_and_one_perturbed_number_fails(tmp_path, summary, capsys):
    base = make_baseline(summary)
    assert base["fingerprint"] == summary["fingerprint"] and base["format"] == 1
    assert gate(tmp_path, summary, base) == 0
    assert "passed: 2 of 2 configurations (recall, sparsity, exact, speed)" in capsys.readouterr().out
    worse = copy.deepcopy(summary)
    worse["predictors"][1]["mean"]["exact"] -= 0.03
    assert gate(tmp_path, worse, base) == 1
    assert "FAIL: synthetic--torch--window-w9-g1: exact" in capsys.readouterr().out


def _edit(base, how):
    b = copy.deepcopy(base)
    key = next(iter(b["entries"]))
    {"empty": lambda: b.update(entries={}),
     "misspelt-quality": lambda: b["quality"].update(recal=b["quality"].pop("recall")),
     "misspelt-entry": lambda: b["entries"][key].update(recal=b["entries"][key].pop("recall")),
     "null": lambda: b["entries"][key].update(recall=None),
     "entries-list": lambda: b.update(entries=[1, 2]),
     "tolerance-string": lambda: b["quality"]["recall"].update(tolerance="0.01"),
     "tolerance-negative": lambda: b["quality"]["recall"].update(tolerance=-1),
     "direction-flipped": lambda: b["quality"]["recall"].update(higher_is_better=False),
     "factor-zero": lambda: b["speed"].update(factor=0),
     "impossible-recall": lambda: b["entries"][key].update(recall=7.5),
     "negative-ratio": lambda: b["entries"][key].update(ratio=-0.5),
     "old-format": lambda: (b.pop("format"), b.pop("fingerprint")),
     "newer-format": lambda: b.update(format=2),
     "unknown-field": lambda: b.update(extra=1),
     "fingerprint-list": lambda: b.update(fingerprint=[]),
     }[how]()
    return b


BAD_BASELINES = [
    ("empty", "'entries' is empty: the gate would check no configuration"),
    ("misspelt-quality", "quality: unknown metric 'recal' (did you mean 'recall'?)"),
    ("misspelt-entry", "unknown field 'recal' (did you mean 'recall'?)"),
    ("null", ".recall is null (NaN or missing): a check against it would never fail"),
    ("entries-list", "'entries' is not an object"),
    ("tolerance-string", 'quality.recall.tolerance is "0.01", not a number'),
    ("tolerance-negative", "quality.recall.tolerance is negative (-1)"),
    ("direction-flipped", "quality.recall.higher_is_better is false, but bench/evaluation/metric_table.py says true"),
    ("factor-zero", "speed.factor is 0, must be > 0"),
    ("impossible-recall", ".recall is 7.5, outside [0, 1]"),
    ("negative-ratio", ".ratio is -0.5, outside [0, inf]"),
    ("old-format", "has no 'format' and no 'fingerprint': made by an older version"),
    ("newer-format", "has format 2; this sparsebench reads format 1"),
    ("unknown-field", "unknown field 'extra'"),
    ("fingerprint-list", "'fingerprint' must be exactly"),
]


@pytest.mark.parametrize("how,match", BAD_BASELINES, ids=[b[0] for b in BAD_BASELINES])
def test_malformed_baselines_are_bad_input(tmp_path, summary, capsys, how, match):
    assert gate(tmp_path, summary, _edit(make_baseline(summary), how)) == 2
    refused(capsys, match)


@pytest.mark.parametrize("text,match", [
    ("", "is not valid JSON"), ('{"entries": ', "is not valid JSON"), ("[1, 2]", "is not a JSON object"),
    ("{}", "has no 'format' and no 'fingerprint'")])
def test_unreadable_baselines_are_bad_input(tmp_path, summary, capsys, text, match):
    assert gate(tmp_path, summary, text) == 2
    refused(capsys, match)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_in_a_baseline_is_an_error(tmp_path, summary, capsys, constant):
    text = json.dumps(make_baseline(summary))
    key = next(iter(make_baseline(summary)["entries"]))
    edited = json.loads(text)
    edited["entries"][key]["recall"] = "@"
    assert gate(tmp_path, summary, json.dumps(edited).replace('"@"', constant)) == 2
    refused(capsys, f"is not valid JSON: {constant} is not a number strict JSON allows")
    with pytest.raises(GateError, match="recall is nan: a check against it would never fail"):
        compare(summary, {**edited, "entries": {key: {**edited["entries"][key], "recall": float("nan")}}})


def _other(summary, how):
    s = copy.deepcopy(summary)
    ds = s["fingerprint"]["datasets"]["synthetic"]
    {"profile": lambda: s["fingerprint"].update(profile="default"),
     "corpus": lambda: ds["descriptor"].update(corpus="kjv", corpus_sha256="5e" * 32),
     "options": lambda: ds["descriptor"].update(length=128),
     "split": lambda: ds.update(fit_samples=3, eval_samples=5),
     "dataset": lambda: s["fingerprint"].update(datasets={"minilm": ds}),
     }[how]()
    return s


OTHER_RUNS = [
    ("profile", 'profile: baseline "default", run "smoke"'),
    ("corpus", 'datasets.synthetic.descriptor.corpus: baseline "kjv", run "fortunes"'),
    ("options", "datasets.synthetic.descriptor.length: baseline 128, run 60"),
    ("split", "datasets.synthetic.eval_samples: baseline 5, run 1"),
    ("dataset", "datasets: baseline ['minilm'], run ['synthetic']"),
]


@pytest.mark.parametrize("how,match", OTHER_RUNS, ids=[o[0] for o in OTHER_RUNS])
def test_a_baseline_of_another_run_is_refused_with_what_differs(tmp_path, summary, capsys, how, match):
    assert gate(tmp_path, summary, make_baseline(_other(summary, how))) == 2
    refused(capsys, "the baseline was made for another run", match)


def test_corpus_hash_alone_differs(tmp_path, summary, capsys):
    other = _other(summary, "corpus")
    other["fingerprint"]["datasets"]["synthetic"]["descriptor"]["corpus"] = "fortunes"
    assert gate(tmp_path, summary, make_baseline(other)) == 2
    refused(capsys, "datasets.synthetic.descriptor.corpus_sha256: baseline \"5e5e")


def test_a_gate_checking_no_configuration_fails(tmp_path, summary, capsys):
    base = make_baseline(summary)
    base["entries"] = {k.replace("window", "windo"): v for k, v in base["entries"].items()}
    assert gate(tmp_path, summary, base) == 2
    refused(capsys, "the gate checks no configuration: none of the baseline's 2 configurations is in this run")
    base = make_baseline(summary)
    base["quality"], base["entries"] = {}, {k: {"ratio": v["ratio"]} for k, v in base["entries"].items()}
    assert gate(tmp_path, summary, base, "--no-speed") == 2
    refused(capsys, "the gate checks nothing: the baseline gates no quality metric and speed is off")


def test_a_metric_the_run_lacks_is_bad_input(tmp_path, summary, capsys):
    s = copy.deepcopy(summary)
    base = make_baseline(s, quality={"mass": {"tolerance": 0.01, "higher_is_better": True}})
    for e in s["predictors"]:
        del e["mean"]["mass"]
    assert gate(tmp_path, s, base) == 2
    refused(capsys, "the run cannot be gated: synthetic--torch--window-w5: the run has no metric 'mass'")


def test_a_run_without_the_speed_reference(tmp_path, summary, capsys):
    base = make_baseline(summary)
    s = copy.deepcopy(summary)
    for e in s["predictors"]:
        e["ratio_to_dense"] = {}
    assert gate(tmp_path, s, base) == 2
    refused(capsys, "the run has no entmax15-topk time to check its speed against (use --no-speed")
    assert gate(tmp_path, s, base, "--no-speed") == 0


def test_impossible_or_old_run_summaries_are_bad_input(tmp_path, summary, capsys):
    base = make_baseline(summary)
    s = copy.deepcopy(summary)
    s["predictors"][0]["mean"]["recall"] = 7.5
    assert gate(tmp_path, s, base) == 2
    refused(capsys, "synthetic--torch--window-w5: the run's recall is 7.5, outside [0, 1]")
    del s["fingerprint"]
    assert gate(tmp_path, s, base) == 2
    refused(capsys, "the run summary has no fingerprint: it was written by an older version")
    assert gate(tmp_path, {"predictors": {}}, base) == 2
    refused(capsys, "the run summary has no list 'predictors'")


def test_update_refuses_a_baseline_that_would_check_nothing(tmp_path, summary, capsys):
    s = copy.deepcopy(summary)
    s["predictors"][0]["mean"]["exact"] = None  # NaN in the run
    assert gate(tmp_path, s, "{}", "--update") == 2
    refused(capsys, "the baseline made from this run is malformed: entries['synthetic--torch--window-w5'].exact "
                    "is null")
    del s["fingerprint"]
    assert gate(tmp_path, s, "{}", "--update") == 2
    refused(capsys, "the run summary has no fingerprint")


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "0  the gate passed" in out and "1  a regression" in out and "2  bad input or usage" in out
