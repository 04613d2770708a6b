"""README.md's "Adding a predictor family" works as written: its toy family module and sweep, copied out
of the document into a temporary folder, are found through SPARSEBENCH_FAMILIES, listed, scored and run
by the smoke benchmark."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "README.md"


def guide_files() -> dict[str, str]:
    """The fenced code blocks of the guide whose first line is ``# FILENAME: ...``, by file name."""
    blocks = re.findall(r"```(?:python|toml)\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return {m.group(1): block for block in blocks if (m := re.match(r"# (\S+\.(?:py|toml)):", block))}


def test_the_guide_holds_the_module_and_its_sweep():
    files = guide_files()
    assert set(files) == {"toy_family.py", "toy.toml"}
    assert "@register" in files["toy_family.py"] and "[scaling]" in files["toy.toml"]


@pytest.mark.slow
def test_a_family_of_ones_own_is_listed_scored_and_benchmarked(tmp_path):
    for name, text in guide_files().items():
        (tmp_path / name).write_text(text)
    reports = tmp_path / "reports"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
           "SPARSEBENCH_FAMILIES": "toy_family", "SPARSEBENCH_REPORTS": str(reports)}

    def run(*args):
        out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout

    listed = run("-m", "bench.cli", "list")
    assert "toy [fixed]: Every ``k``-th key column for every query; nothing is fitted." in listed
    assert "    e.g. toy-k4" in listed
    scored = json.loads(run("-m", "bench.cli", "score", "--dataset", "synthetic", "--predictor", "toy-k4-w3",
                            "--samples", "4", "--json"))
    assert scored[0]["name"] == "toy-k4-w3" and scored[0]["family"] == "toy"
    assert 0.0 < scored[0]["mean"]["recall"] <= 1.0 and 0.0 < scored[0]["mean"]["sparsity"] < 1.0
    # The smoke benchmark, restricted to the toy family's predictor cases on the quick synthetic data.
    bench = run("-m", "pytest", "-c", "bench/suite/pytest.ini", "bench/suite", "--profile", "smoke",
                "--predictors", "toy*", "--run", "toy", "--no-scaling", "--dataset", "synthetic",
                "--backend", "torch", "-k", "bench_predictor", "-q")
    assert re.search(r"\b2 passed\b", bench), bench[-2000:]
    summary = json.loads((reports / "runs" / "toy" / "summary.json").read_text())
    got = sorted((e["name"], e["family"], e["family_kind"]) for e in summary["predictors"])
    assert got == [("toy-k2-w3", "toy", "fixed"), ("toy-k8-w3", "toy", "fixed")]
    assert (reports / "runs" / "toy" / "results.csv").read_text().count("toy-k8-w3") > 0
