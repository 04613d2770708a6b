"""The benchmark suite with two seeds (the smoke profile runs one): a randomised configuration is measured
once per seed, a deterministic one once; seed 0 keeps its record id and its numbers, seed 1 adds
``--seed1``; the summary and the gates group the seeds of a configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results.gates import compare, make_baseline
from bench.results.records import read_record

ROOT = Path(__file__).resolve().parents[1]
SUITE = ["-m", "pytest", "-c", "bench/suite/pytest.ini", "bench/suite", "--profile", "smoke", "--dataset", "synthetic",
         "--backend", "torch", "--predictors", "window-w3,reformer-raw-b4-h2", "--no-scaling",
         "-k", "bench_predictor or bench_dense", "-q", "-p", "no:cacheprovider"]


def suite(tmp_path: Path, run: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARSEBENCH_REPORTS": str(tmp_path / "reports"),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, *SUITE, "--run", run, *extra], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_two_seeds_run_randomised_configurations_twice_and_keep_the_ids_of_seed_zero(tmp_path):
    one, two = suite(tmp_path, "one"), suite(tmp_path, "two", "--seeds", "0,1")
    assert one.returncode == 0 and two.returncode == 0, one.stdout[-2000:] + two.stdout[-2000:]
    assert "5 passed" in one.stdout and "6 passed" in two.stdout  # 3 dense references (the speed gate's)
    folders = {r: tmp_path / "reports" / "runs" / r / "records" / "predictor" for r in ("one", "two")}
    ids = {r: sorted(p.name.removesuffix(".json") for p in f.glob("*.json")) for r, f in folders.items()}
    assert ids["one"] == ["synthetic--torch--reformer-raw-b4-h2", "synthetic--torch--window-w3"]
    assert ids["two"] == ["synthetic--torch--reformer-raw-b4-h2", "synthetic--torch--reformer-raw-b4-h2--seed1",
                          "synthetic--torch--window-w3"]
    recs = {(r, i): read_record(folders[r] / f"{i}.json", "predictor") for r in ids for i in ids[r]}
    for i in ids["one"]:  # seed 0: the same numbers whether or not other seeds ran
        a, b = recs[("one", i)], recs[("two", i)]
        assert a["seed"] == b["seed"] == 0
        assert json.dumps([a[k] for k in ("mean", "per_sample", "per_head", "val")]) == \
            json.dumps([b[k] for k in ("mean", "per_sample", "per_head", "val")])
    other, first = (recs[("two", f"synthetic--torch--reformer-raw-b4-h2{s}")] for s in ("--seed1", ""))
    assert other["seed"] == 1 and other["per_sample"] != first["per_sample"]
    summary = json.loads((tmp_path / "reports" / "runs" / "two" / "summary.json").read_text())
    assert sorted((e["name"], e["seed"]) for e in summary["predictors"]) == [
        ("reformer-raw-b4-h2", 0), ("reformer-raw-b4-h2", 1), ("window-w3", 0)]
    base = make_baseline(summary)
    assert base["entries"]["synthetic--torch--reformer-raw-b4-h2"]["seeds"] == [0, 1]
    assert "seeds" not in base["entries"]["synthetic--torch--window-w3"]
    assert compare(summary, base) == ([], [])


@pytest.mark.slow  # a pytest subprocess: about 8 s here
def test_bad_seeds_are_one_line_before_any_work(tmp_path):
    out = suite(tmp_path, "bad", "--seeds", "1,2")
    assert out.returncode == 4 and "--seeds must hold seed 0" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "reports" / "runs" / "bad" / "records").exists()
