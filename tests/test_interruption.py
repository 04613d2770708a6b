"""A benchmark run interrupted (SIGINT, as by Ctrl-C; SIGKILL, as by the OOM killer or a lost machine) and
resumed ends with the records of an uninterrupted run: none lost, none twice, the same numbers bit for
bit, and no stale lock in the way (after SIGKILL the lock file stays, but the kernel released its lock).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.evaluation.score import QUALITY_KEYS
from bench.results.records import read_record

ROOT = Path(__file__).resolve().parents[1]
# The cache of the session that runs the tests (tests/conftest.py gives every test its own, empty one):
# the benchmark subprocesses share it so that the gold of the smoke data is computed at most once.
OUTER_CACHE = os.environ.get("SPARSEBENCH_CACHE")
SUITE = ["-m", "pytest", "-c", "bench/suite/pytest.ini", "bench/suite", "--profile", "smoke",
         "--predictors", "window*,sf-kmeans*", "--no-scaling", "-k", "bench_predictor", "-q"]


def default_sigint() -> None:
    """In the child: Ctrl-C as a terminal delivers it. A background job of a shell without job control
    (``cmd &`` in a script, as CI may start the tests) inherits SIGINT ignored, and Python then never
    raises KeyboardInterrupt: the interruption under test would not happen."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(run: str, reports: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARSEBENCH_REPORTS": str(reports), "SPARSEBENCH_CACHE": str(cache),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, *SUITE, "--run", run], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def records(folder: Path) -> dict[str, dict]:
    """Every predictor record of a run folder, verified on read (a torn or tampered one fails here)."""
    return {p.stem: read_record(p, "predictor") for p in sorted((folder / "records" / "predictor").glob("*.json"))}


def interrupt(run: str, reports: Path, cache: Path, sig: signal.Signals) -> int:
    """Start a run and send it ``sig`` once it has written its first record; the records left."""
    proc = start(run, reports, cache)
    folder = reports / "runs" / run / "records" / "predictor"
    deadline = time.monotonic() + 600
    while not list(folder.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted:\n" + finish(proc)[1]
    proc.send_signal(sig)
    code, out = finish(proc)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else pytest.ExitCode.INTERRUPTED), out
    return len(records(reports / "runs" / run))


def same_graphs(a: Path, b: Path) -> bool:
    """The same stored graphs: metadata and every tensor (not the bytes: safetensors writes the metadata
    table in the order of a hash map, which differs from process to process)."""
    from safetensors import safe_open

    opened = [safe_open(str(p), framework="pt") for p in (a, b)]
    (ma, ta), (mb, tb) = [(f.metadata(), {k: f.get_tensor(k) for k in f.keys()}) for f in opened]
    return ma == mb and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


# What differs between two measurements of the same configuration: times, and the machine's state.
TIMES = ("time", "predict_seconds", "fit_seconds", "score_seconds", "environment", "checksum")


def numbers(recs: dict[str, dict]) -> dict[str, dict]:
    """Every field of every record but its times (quality numbers, validation scores, flops, fingerprint)."""
    assert all(k in rec for rec in recs.values() for k in QUALITY_KEYS)
    return {rid: {k: v for k, v in rec.items() if k not in TIMES} for rid, rec in recs.items()}


@pytest.mark.slow
def test_interrupted_runs_resume_to_the_records_of_an_uninterrupted_run(tmp_path):
    cache = Path(OUTER_CACHE) if OUTER_CACHE else tmp_path / "cache"
    reports = tmp_path / "reports"
    code, out = finish(start("whole", reports, cache))
    assert code == 0, out
    whole = records(reports / "runs" / "whole")
    assert len(whole) >= 8, sorted(whole)

    for run, sig in (("sigint", signal.SIGINT), ("sigkill", signal.SIGKILL)):
        left = interrupt(run, reports, cache, sig)
        assert 0 < left < len(whole), (run, left)
        lock = reports / "runs" / run / ".lock"
        if sig == signal.SIGKILL:  # no clean-up ran: the lock file (and its owner note) stay, unlocked
            assert lock.exists()
        code, out = finish(start(run, reports, cache))
        assert code == 0 and "in use by another run" not in out, out
        assert f"{len(whole) - left} measured, {left} resumed" in out, out
        resumed = records(reports / "runs" / run)
        assert sorted(resumed) == sorted(whole), run  # none lost, none twice (one file per configuration)
        assert numbers(resumed) == numbers(whole), run  # bit for bit (JSON keeps every float exactly)
        for rid in whole:  # and the stored graphs
            stored = [reports / "runs" / r / "records" / "predictor" / f"{rid}.graphs.safetensors"
                      for r in (run, "whole")]
            assert same_graphs(*stored), (run, rid)
        summary = json.loads((reports / "runs" / run / "summary.json").read_text())
        keys = [(e["dataset"], e["backend"], e["name"]) for e in summary["predictors"]]
        assert len(keys) == len(set(keys)) == len(whole), run
