"""``sparsebench rescore``: a run's metrics recomputed from its stored graphs, bit-identical, or named
and repaired with ``--write``; bad input is one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import predictors
from bench.cli import main
from bench.evaluation.prepared import prepare
from bench.evaluation.score import score_fitted
from bench.results.graph_store import graphs_path, write_graphs_atomic
from bench.results.records import read_record, record_path, write_json_atomic, write_record
from bench.results.rescore import rescore_run
from bench.results.summary import write_summary

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("window-w3-g1", "routing-raw-k4-s1", "xattention-b8-st4-t0.5")  # xattention: tile sparsity too


def make_run(run: Path, names=NAMES) -> Path:
    """A run folder with one record and graphs file per predictor, written as bench_predictors.py does."""
    prep = prepare("synthetic", samples=4, length=40)
    for name in names:
        predictor = predictors.get(name, seed=0).fit(prep.fit, prep.fit_gold)
        graphs = [predictor.predict(prep.eval.layer(layer), layer) for layer in range(prep.eval.num_layers)]
        rec = score_fitted(prep, predictor, graphs=graphs)
        rec.update({"kind": "predictor", "dataset": "synthetic", "dataset_descriptor": prep.data.descriptor,
                    "eval_samples": prep.eval.num_samples, "fit_samples": prep.fit.num_samples,
                    "layers": prep.eval.num_layers, "heads": prep.eval.num_heads, "time": {"mean": 0.01},
                    "environment": {}})
        path = record_path(run, "predictor", f"synthetic--torch--{name}")
        write_graphs_atomic(graphs_path(path), graphs, prep.eval)
        write_json_atomic(path, rec)
    write_summary(run)
    return run


def tamper(path: Path) -> dict:
    """Nudge two stored numbers of a record, as a scoring bug would (a valid record with a fresh checksum:
    a hand edit is refused on read, see tests/test_records.py); returns the record as it was."""
    rec = json.loads(path.read_text())
    bad = read_record(path)
    bad["mean"]["recall"] += 1e-12
    bad["per_head"]["sparsity"][1][2] = 0.5
    write_record(path, bad)
    return rec


def test_rescore_is_bit_identical_then_names_and_repairs_a_tampered_metric(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    result = rescore_run(run)
    assert result.ok and len(result.same) == len(NAMES) and not result.differ
    path = record_path(run, "predictor", "synthetic--torch--xattention-b8-st4-t0.5")
    assert "block_sparsity" in json.loads(path.read_text())["per_head"]
    csv_before = (run / "results.csv").read_text()
    original = tamper(path)
    write_summary(run)
    assert (run / "results.csv").read_text() != csv_before
    capsys.readouterr()
    assert main(["rescore", str(run), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS: synthetic--torch--xattention-b8-st4-t0.5: mean.recall, per_head.sparsity[1][2]" in out
    assert f"FAILED: {len(NAMES)} predictor records" in out and "2 bit-identical, 1 differ" in out
    assert main(["rescore", str(run), "--write"]) == 0
    assert "rewritten: synthetic--torch--xattention-b8-st4-t0.5" in capsys.readouterr().out
    assert json.loads(path.read_text()) == original
    assert (run / "results.csv").read_text() == csv_before
    summary = json.loads((run / "summary.json").read_text())
    assert [e["mean"]["recall"] for e in summary["predictors"] if e["name"] == "xattention-b8-st4-t0.5"] == \
        [original["mean"]["recall"]]
    assert main(["rescore", str(run)]) == 0


def test_records_without_graphs_or_with_other_data_are_named(tmp_path, capsys):
    run = make_run(tmp_path / "run", names=NAMES[:2])
    graphs_path(record_path(run, "predictor", "synthetic--torch--window-w3-g1")).unlink()
    path = record_path(run, "predictor", "synthetic--torch--routing-raw-k4-s1")
    rec = read_record(path)
    rec["dataset_descriptor"]["seed"] = 1
    write_record(path, rec)  # a valid record of other data (a hand edit would fail its checksum first)
    assert main(["rescore", str(run), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "no graphs file: synthetic--torch--window-w3-g1" in out
    assert "FAILED: synthetic--torch--routing-raw-k4-s1: " in out and "other eval data" in out


def test_bad_run_folders_are_one_line(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for arg, message in [(tmp_path / "nope", "no such run folder"), (tmp_path / "plain", "is not a run folder"),
                         (tmp_path / "file.txt", "is not a run folder")]:
        assert main(["rescore", str(arg)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.slow
def test_smoke_benchmark_rescores_bit_identical(tmp_path, capsys):
    env = {**os.environ, "SPARSEBENCH_REPORTS": str(tmp_path), "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    cmd = [sys.executable, "-m", "pytest", "-c", "bench/suite/pytest.ini", "bench/suite/bench_predictors.py",
           "--profile", "smoke", "--run", "rs", "--predictors", "window-w3*,sf-kmeans*", "--no-scaling", "-q"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "runs" / "rs"
    records = sorted((run / "records" / "predictor").glob("*.json"))
    assert len(records) >= 4 and all(graphs_path(p).is_file() for p in records)
    assert main(["rescore", str(run), "--quiet"]) == 0
    assert f"{len(records)} bit-identical, 0 differ" in capsys.readouterr().out
    csv_before = (run / "results.csv").read_text()
    original = tamper(records[-1])
    assert main(["rescore", str(run), "--quiet"]) == 1
    assert f"DIFFERS: {records[-1].stem}: mean.recall" in capsys.readouterr().out
    assert main(["rescore", str(run), "--write", "--quiet"]) == 0
    assert json.loads(records[-1].read_text()) == original and (run / "results.csv").read_text() == csv_before
