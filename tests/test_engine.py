"""The engine stage without Ray running: which configurations share fitted state, moving that state
between processes, paired timing, the engine options' one-line errors, and ratios to the reference a
record carries (bench/engine, bench/results/summary.py)."""

from __future__ import annotations

import json
import socket

import pytest

from bench.engine import ray_engine
from bench.engine.measure import Case, per_head, rounds_of
from bench.engine.plan import chunk_size, chunks, plan
from bench.errors import BenchError
from bench.execution.timing import stats, time_together
from bench.results.records import read_record, record_path, write_json_atomic, write_record
from bench.results.summary import summarise
from predictors import memo

SF = ("projections", 4, False, 0)


def test_configurations_sharing_projections_or_gates_are_planned_together():
    names = ["window-w3", "sf-kmeans-r4-k4-top1", "sf-dist-r4-sp0.9", "reformer-proj-b8-h2", "reformer-raw-b8-h2",
             "routing-proj-k8", "sf-kmeans-r2-k4-top1", "sf-kmeans-r4-shared-k4-top1", "seer-b32-top1",
             "seer-b32-top2", "seer-b64-top1"]
    cases = [Case(ds, "torch", n) for ds in ("minilm", "entmax-lm") for n in names]
    cases.append(Case("minilm", "faiss", "sf-kmeans-r4-k4-top2"))  # a FAISS twin fits its torch twin's maps
    p = plan(cases)
    m = {n: Case("minilm", "torch", n) for n in names}
    assert p.states == {
        ("minilm", SF): m["sf-kmeans-r4-k4-top1"], ("minilm", ("projections", 2, False, 0)): m["sf-kmeans-r2-k4-top1"],
        ("minilm", ("projections", 4, True, 0)): m["sf-kmeans-r4-shared-k4-top1"],
        ("minilm", ("seer-gates", 32, 0)): m["seer-b32-top1"], ("minilm", ("seer-gates", 64, 0)): m["seer-b64-top1"],
        **{("entmax-lm", k): Case("entmax-lm", "torch", c.name) for (ds, k), c in list(p.states.items())
           if ds == "minilm"}}
    assert [c.name for c in p.sharing(("minilm", SF))] == [
        "sf-kmeans-r4-k4-top1", "sf-dist-r4-sp0.9", "reformer-proj-b8-h2", "routing-proj-k8", "sf-kmeans-r4-k4-top2"]
    assert p.sharing(("minilm", SF))[-1].backend == "faiss"
    assert p.needs[m["window-w3"]] is None and p.needs[m["reformer-raw-b8-h2"]] is None
    assert p.needs[Case("entmax-lm", "torch", "seer-b32-top2")] == ("entmax-lm", ("seer-gates", 32, 0))
    assert len(p.needs) == len(cases) and p.ceilings == set()
    assert plan([Case("minilm", "torch", "oracle-topk")]).ceilings == {Case("minilm", "torch", "oracle-topk")}


def test_a_plan_keeps_sweep_order_and_takes_any_key_function():
    cases = [Case("d", "torch", n) for n in ("b", "a", "c", "d")]
    p = plan(cases, shared_fit=lambda c: {"a": 1, "b": 1, "d": 2}.get(c.name), ceiling=lambda c: c.name == "c")
    assert p.states == {("d", 1): cases[0], ("d", 2): cases[3]}
    assert list(p.needs) == cases and p.needs[cases[2]] is None and p.ceilings == {cases[2]}


def test_memo_entries_move_between_processes():
    table = memo.table("test-engine")
    table.clear()
    table["old"] = 1
    before = memo.snapshot()
    table["new"] = 2
    memo.table("test-engine-2")["x"] = 3
    added = memo.added_since(before)
    assert added == {"test-engine": {"new": 2}, "test-engine-2": {"x": 3}}
    table.clear()
    memo.table("test-engine-2").clear()
    memo.install(added)  # as a worker does before its fits
    assert memo.table("test-engine") == {"new": 2} and memo.table("test-engine-2") == {"x": 3}
    memo.table("test-engine").clear()
    memo.table("test-engine-2").clear()


def test_the_projection_memo_is_a_memo_table():
    from predictors import projections

    assert projections._CACHE is memo.table("projections")


def test_stats_match_pytest_benchmark():
    s = stats([3.0, 1.0, 2.0])
    assert s == {"mean": 2.0, "median": 2.0, "min": 1.0, "stddev": 1.0, "rounds": 3}
    assert stats([0.5])["stddev"] == 0.0  # pytest-benchmark's: 0 for one round


def test_timing_together_alternates_runs_and_reference_after_warmup():
    calls = []
    runs = [lambda: calls.append("a"), lambda: calls.append("b")]
    mine, ref = time_together(runs, lambda: calls.append("r"), rounds=3, warmup=1)
    assert calls == ["a", "b", "r"] * 4  # one warm-up round, then three timed rounds
    assert [m["rounds"] for m in mine] == [3, 3] and ref["rounds"] == 3 and min(m["min"] for m in mine) >= 0


def test_chunks_keep_dataset_state_and_timing_class_apart():
    cases = [Case(ds, "torch", n) for ds in ("x", "y") for n in ("a1", "a2", "a3", "n1", "c1", "n2", "n3")]
    p = plan(cases, shared_fit=lambda c: "A" if c.name.startswith("a") else None,
             ceiling=lambda c: c.name.startswith("c"))
    got = [[f"{c.dataset}:{c.name}" for c in chunk] for chunk in chunks(p, 2)]
    assert got == [["x:a1", "x:a2"], ["x:a3"], ["x:n1", "x:n2"], ["x:n3"], ["x:c1"],
                   ["y:a1", "y:a2"], ["y:a3"], ["y:n1", "y:n2"], ["y:n3"], ["y:c1"]]
    assert sorted(c for chunk in chunks(p, 8) for c in chunk) == sorted(cases)


def test_chunk_size_gives_every_worker_about_two_tasks(monkeypatch):
    monkeypatch.delenv("SPARSEBENCH_RAY_CHUNK", raising=False)
    assert [chunk_size(n, 2) for n in (1, 4, 6, 68, 400)] == [1, 1, 2, 8, 8]
    assert chunk_size(400, 64) == 4 and chunk_size(3, 0) == 2
    monkeypatch.setenv("SPARSEBENCH_RAY_CHUNK", "3")
    assert chunk_size(400, 64) == 3
    monkeypatch.setenv("SPARSEBENCH_RAY_CHUNK", "0")
    with pytest.raises(BenchError, match="SPARSEBENCH_RAY_CHUNK='0': expected a whole number >= 1"):
        chunk_size(4, 2)


def test_per_head_times_reach_the_references():
    t = per_head({"mean": 1.2, "reference": {"entmax15-topk": {"mean": 2.4}}}, heads=12)
    assert t["per_head_mean"] == pytest.approx(0.1)
    assert t["reference"]["entmax15-topk"]["per_head_mean"] == pytest.approx(0.2)


def test_ceilings_are_timed_once():
    import predictors

    assert rounds_of(predictors.get("oracle-topk"), 5) == (1, 0)
    assert rounds_of(predictors.get("window-w3"), 5) == (5, 1)


def test_case_ids_are_the_suite_ids():
    c = Case("file:/x/my.safetensors", "torch", "window-w3")
    assert c.rid == "file-my--torch--window-w3" and c.label() == "file:/x/my.safetensors-torch-window-w3"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("engine", "address", "device", "match"), [
    ("serial", "auto", "cpu", "--address auto needs --engine ray"),
    ("ray", "nohost", "cpu", "expected auto or HOST:PORT"),
    ("ray", "host:99999", "cpu", "expected auto or HOST:PORT"),
    ("ray", None, "cuda", "--device cuda is for the serial engine"),
])
def test_engine_options_that_cannot_work_are_one_line(engine, address, device, match, monkeypatch):
    monkeypatch.setattr(ray_engine, "available", lambda: True)
    with pytest.raises(BenchError, match=match) as info:
        ray_engine.check_engine(engine, address, device)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("option", "profile", "device", "cores", "installed", "want"), [
    ("serial", "ray", "cpu", 2, True, ("serial", None)),  # --engine always wins
    ("ray", "serial", "cpu", 1, True, ("ray", None)),
    (None, "serial", "cpu", 2, True, ("serial", None)),  # smoke: serial
    (None, "ray", "cpu", 2, True, ("ray", None)),  # default and full on this machine
    (None, "ray", "cpu", 1, True, ("serial", "the profile's engine is ray, but 1 usable core: serial")),
    (None, "ray", "cpu", 2, False, ("serial", "the profile's engine is ray, but ray is not installed: serial")),
    (None, "ray", "cuda", 2, True, ("serial", "the profile's engine is ray, but --device cuda runs serially: serial")),
])
def test_the_profile_chooses_the_engine_unless_told_and_says_why_not(option, profile, device, cores, installed,
                                                                     want, monkeypatch):
    monkeypatch.setattr(ray_engine, "available", lambda: installed)
    assert ray_engine.choose_engine(option, profile, device, cores=cores) == want


def test_the_committed_profiles_run_default_and_full_on_ray_and_smoke_serially():
    from pathlib import Path

    from bench.config.profiles import load_profiles

    profiles = Path(__file__).resolve().parents[1] / "bench" / "suite" / "profiles.toml"
    engines = {name: p.engine for name, p in load_profiles(profiles).items()}
    assert engines == {"smoke": "serial", "default": "ray", "full": "ray", "gpu": "serial"}


def test_an_unknown_profile_engine_is_one_line(tmp_path):
    from bench.config.profiles import load_profile

    path = tmp_path / "p.toml"
    path.write_text("\n".join(["[tiny]", "datasets = []", "data = {}", "rounds = 1", "dense = []", "scaling_n = []",
                               "scaling_dense = []", 'engine = "dask"', ""]))
    with pytest.raises(BenchError, match="profile 'tiny': key 'engine' must be one of serial, ray, got 'dask'"):
        load_profile(path, "tiny")


def test_the_console_says_which_engine_a_profile_chose():
    from types import SimpleNamespace

    from bench.suite_console import engine_choice_line

    def config(engine, why=None, option=None):
        return SimpleNamespace(sparsebench={"engine": engine, "engine_why": why}, getoption=lambda name: option)

    assert engine_choice_line(config("ray")).startswith("engine: ray (the profile's; --engine serial")
    assert engine_choice_line(config("ray", option="ray")) is None  # asked for: nothing to explain
    assert engine_choice_line(config("serial")) is None
    why = "the profile's engine is ray, but 1 usable core: serial"
    assert engine_choice_line(config("serial", why)) == f"engine: serial ({why})"


def test_an_address_where_nothing_listens_is_named(monkeypatch):
    monkeypatch.setattr(ray_engine, "available", lambda: True)
    port = _closed_port()
    with pytest.raises(BenchError, match=f"--address 127.0.0.1:{port}: no Ray head answers there"):
        ray_engine.check_engine("ray", f"127.0.0.1:{port}")


def test_ray_missing_says_what_to_install(monkeypatch):
    monkeypatch.setattr(ray_engine, "available", lambda: False)
    with pytest.raises(BenchError) as info:
        ray_engine.check_engine("ray", None)
    assert str(info.value) == "--engine ray needs the 'ray' package: pip install 'sparsefinder-bench[ray]'"
    ray_engine.check_engine("serial", None)  # the serial engine needs nothing


def test_score_refuses_engine_options_before_any_work(monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setattr(ray_engine, "available", lambda: False)
    assert main(["score", "--dataset", "synthetic", "--predictor", "window-w3", "--engine", "ray"]) == 2
    assert capsys.readouterr().err == ("sparsebench: error: --engine ray needs the 'ray' package: pip install "
                                       "'sparsefinder-bench[ray]'\n")
    assert main(["score", "--dataset", "synthetic", "--predictor", "window-w3", "--address", "auto"]) == 2
    assert "--address auto needs --engine ray" in capsys.readouterr().err


def test_workers_get_this_checkout_and_pinned_openmp(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("SPARSEBENCH_FAMILIES", "toy_family")
    local = ray_engine.runtime_env(None)
    env = local["env_vars"]
    assert env["OMP_NUM_THREADS"] == "1" and env["SPARSEBENCH_FAMILIES"] == "toy_family"
    root = str(ray_engine.Path(ray_engine.__file__).resolve().parents[2])
    assert env["PYTHONPATH"].split(":") == [root, "/elsewhere"] and "py_modules" not in local
    cluster = ray_engine.runtime_env("auto")  # a cluster gets the packages themselves
    assert [p.rsplit("/", 1)[-1] for p in cluster["py_modules"]] == ["bench", "predictors"]


def _rec(time: dict) -> dict:
    from test_records import predictor_rec

    return predictor_rec(time=time)


def test_ratios_use_the_reference_timed_in_the_same_task(tmp_path):
    from test_records import dense_rec

    write_json_atomic(record_path(tmp_path, "dense", "b"), dense_rec())  # 0.5 s, timed elsewhere
    write_json_atomic(record_path(tmp_path, "predictor", "serial"), _rec({"mean": 0.01}))
    ray_time = {"mean": 0.01, "engine": "ray", "host": "node-a", "node_id": "ab" * 28,
                "reference": {"entmax15-topk": {"mean": 0.04, "rounds": 2}}}
    write_json_atomic(record_path(tmp_path, "predictor", "ray"), _rec(ray_time) | {"name": "window-w5"})
    ratios = {e["name"]: e["ratio_to_dense"] for e in summarise(tmp_path)["predictors"]}
    assert ratios == {"window-w3": {"entmax15-topk": pytest.approx(0.02)},
                      "window-w5": {"entmax15-topk": pytest.approx(0.25)}}


def test_a_worker_timing_is_checked_like_any_timing(tmp_path):
    good = {"mean": 0.01, "engine": "ray", "host": "h", "node_id": "n",
            "reference": {"entmax15-topk": {"mean": 0.04, "rounds": 2}}}
    write_record(record_path(tmp_path, "predictor", "a"), _rec(good))
    assert read_record(record_path(tmp_path, "predictor", "a"))["time"]["host"] == "h"
    for bad, match in [({"reference": {"entmax15-topk": {"mean": -1.0}}}, "time.reference.entmax15-topk.mean"),
                       ({"reference": {"entmax15-topk": 3}}, "time.reference.entmax15-topk"),
                       ({"host": 7}, "time.host")]:
        with pytest.raises(BenchError, match=match.replace(".", "\\.") + ".* was not written|was not written.*"
                           + match.replace(".", "\\.")):
            write_record(record_path(tmp_path, "predictor", "b"), _rec({**good, **bad}))  # refused, never written
    assert not record_path(tmp_path, "predictor", "b").exists()
    assert json.loads(record_path(tmp_path, "predictor", "a").read_text())["time"]["engine"] == "ray"


@pytest.mark.slow
def test_the_suite_refuses_engine_options_before_any_work(tmp_path):
    import os
    import subprocess
    import sys

    root = ray_engine.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "SPARSEBENCH_REPORTS": str(tmp_path)}
    base = [sys.executable, "-m", "pytest", "-c", "bench/suite/pytest.ini", "bench/suite", "--profile", "smoke",
            "--no-scaling", "--collect-only", "-q", "--run", "x"]
    port = _closed_port()
    for extra, message in ((["--address", "auto"], "--address auto needs --engine ray"),
                           (["--engine", "ray", "--address", f"127.0.0.1:{port}"],
                            f"--address 127.0.0.1:{port}: no Ray head answers there")):
        if extra[0] == "--engine" and not ray_engine.available():
            message = "--engine ray needs the 'ray' package"
        p = subprocess.run(base + extra, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        out = p.stdout + p.stderr
        assert p.returncode == pytest.ExitCode.USAGE_ERROR and "Traceback" not in out, out
        assert message in out
        assert not (tmp_path / "runs" / "x").exists()  # refused before the run folder was made


def test_a_worker_on_other_code_is_named_with_where_each_side_imports_it():
    from bench.engine.ray_engine import code_mismatch
    from bench.engine.tasks import code_path

    here = code_path()
    same_place = code_mismatch({"host": "vm", "code": "aaaa", "code_path": here}, "bbbb")
    assert same_place == (f"the worker on vm runs code version aaaa from {here}, the driver bbbb from {here}: "
                          "give every node this checkout")
    elsewhere = code_mismatch({"host": "vm", "code": "aaaa", "code_path": "/site-packages/bench"}, "bbbb")
    assert "from /site-packages/bench, the driver bbbb from " + here in elsewhere
    assert "a stale build/ folder in the checkout goes into the wheel tox installs" in elsewhere
