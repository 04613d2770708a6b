"""The quality sweep on Ray (``--engine ray``), for real: a local instance and a cluster of two node
processes on 127.0.0.1 give the serial run's quality numbers and graphs bit for bit, a configuration that
raises is retried, then named while the others land, an interrupted driver loses no finished record, and
``sparsebench score`` scores many predictors as Ray tasks. Every Ray process a test starts is stopped by
the test, by its process ids (never ``ray stop``, which would stop other sessions' clusters too)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bench.evaluation.score import QUALITY_KEYS
from bench.results.records import read_record

pytest.importorskip("ray")  # the `ray` extra (tox's test environment installs it)

ROOT = Path(__file__).resolve().parents[1]
OUTER_CACHE = os.environ.get("SPARSEBENCH_CACHE")  # shared by the subprocesses: the smoke gold once
SUBSET = "window-w3,sf-kmeans-r4-k4-top1*,sf-dist-r4-sp0.9,seer-b16-top1*"  # two pieces of shared state
SHORT = "window-w3*,sf-dist-r4-sp0.9"  # three: the windows finish long before the projections are trained
SUITE = ["-m", "pytest", "-c", "bench/suite/pytest.ini", "bench/suite", "--profile", "smoke", "--backend", "torch",
         "--no-scaling", "-k", "bench_predictor", "-p", "no:cacheprovider"]
RAY_CLI = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]
PY_PATH = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])


@pytest.fixture
def short_tmp():
    """A short folder under /tmp for Ray's sessions (its socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="sbray-", dir="/tmp"))
    yield path
    stop_processes(path)
    shutil.rmtree(path, ignore_errors=True)


def default_sigint() -> None:
    """In the child: SIGINT as a terminal delivers it (a background job of a script inherits it ignored,
    and then Python never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def env_for(reports: Path, cache: Path, ray_tmp: Path, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": PY_PATH, "SPARSEBENCH_REPORTS": str(reports),
            "SPARSEBENCH_CACHE": OUTER_CACHE or str(cache), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "RAY_TMPDIR": str(ray_tmp), **extra}


def suite(env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *SUITE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def records(run: Path) -> dict[str, dict]:
    return {p.stem: read_record(p, "predictor") for p in sorted((run / "records" / "predictor").glob("*.json"))}


def processes_with(marker: str) -> list[int]:
    """Process ids whose command line names ``marker`` (a test's own Ray folder: only its processes)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(d.name))
    return out


def stop_processes(folder: Path) -> None:
    for pid in processes_with(str(folder)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def graphs_file(run: Path, rid: str) -> tuple[dict, dict]:
    """A record's stored graphs: ``(metadata, {name: (dtype, shape, values)})``. Compared as content, not
    bytes: safetensors writes its metadata keys in an order that differs from process to process."""
    from safetensors import safe_open

    with safe_open(str(run / "records" / "predictor" / f"{rid}.graphs.safetensors"), framework="pt") as f:
        return f.metadata(), {k: (str(t.dtype), tuple(t.shape), t.flatten().tolist())
                              for k in f.keys() for t in [f.get_tensor(k)]}


def quality(rec: dict) -> dict:
    return {k: rec[k] for k in (*QUALITY_KEYS, "val", "prediction_flops", "name", "params")}


@pytest.mark.slow
def test_ray_gives_the_serial_quality_bit_for_bit(tmp_path, short_tmp):
    reports = tmp_path / "reports"
    env = env_for(reports, tmp_path / "cache", short_tmp)
    serial = suite(env, "--predictors", SUBSET, "--run", "serial", "--engine", "serial")
    assert serial.returncode == 0, serial.stdout[-3000:] + serial.stderr[-3000:]
    on_ray = suite(env, "--predictors", SUBSET, "--run", "ray", "--engine", "ray")
    assert on_ray.returncode == 0, on_ray.stdout[-3000:] + on_ray.stderr[-3000:]
    assert re.search(r"\b6 measured by ray\b", on_ray.stdout), on_ray.stdout[-2000:]
    assert "configurations: 6 measured, 0 resumed" in on_ray.stdout
    assert not processes_with(str(short_tmp)), "the local Ray instance outlived its sweep"
    a, b = records(reports / "runs" / "serial"), records(reports / "runs" / "ray")
    assert sorted(a) == sorted(b) and len(a) == 6
    for rid in a:
        assert quality(a[rid]) == quality(b[rid]), rid
        assert graphs_file(reports / "runs" / "serial", rid) == graphs_file(reports / "runs" / "ray", rid), rid
        ta, tb = a[rid]["time"], b[rid]["time"]
        assert ta["engine"] == "serial" and ta["host"] == socket.gethostname() and "reference" not in ta
        assert tb["engine"] == "ray" and tb["host"] == socket.gethostname()
        assert re.fullmatch("[0-9a-f]{56}", tb["node_id"])
        assert tb["rounds"] == tb["reference"]["entmax15-topk"]["rounds"] == 2  # the smoke profile's rounds
    summary = json.loads((reports / "runs" / "ray" / "summary.json").read_text())
    for e in summary["predictors"]:
        ref = b[f"minilm--torch--{e['name']}"]["time"]
        assert e["ratio_to_dense"] == {"entmax15-topk": ref["mean"] / ref["reference"]["entmax15-topk"]["mean"]}
    again = suite(env, "--predictors", SUBSET, "--run", "ray", "--engine", "ray")  # resume: nothing to run
    assert again.returncode == 0 and re.search(r"\b6 resumed\b", again.stdout), again.stdout[-2000:]
    assert "engine: ray" not in again.stdout  # nothing left to measure: Ray is not even started


@pytest.mark.slow
def test_the_default_profile_runs_on_ray_unless_told_otherwise(tmp_path, short_tmp):
    """No --engine: the default profile's engine (ray, on this machine of two cores), said on the console;
    --engine serial measures here; smoke (SUITE's profile) stays serial without a word about engines."""
    reports = tmp_path / "reports"
    env = env_for(reports, tmp_path / "cache", short_tmp)
    chosen = suite(env, "--profile", "default", "--dataset", "minilm", "--predictors", "window-w3", "--run", "chosen")
    assert chosen.returncode == 0, chosen.stdout[-3000:] + chosen.stderr[-3000:]
    assert "engine: ray (the profile's; --engine serial measures here" in chosen.stdout
    assert re.search(r"\b1 measured by ray\b", chosen.stdout), chosen.stdout[-2000:]
    assert read_record(reports / "runs" / "chosen" / "records" / "predictor" / "minilm--torch--window-w3.json",
                       "predictor")["time"]["engine"] == "ray"
    told = suite(env, "--profile", "default", "--dataset", "minilm", "--predictors", "window-w3", "--run", "told",
                 "--engine", "serial")
    assert told.returncode == 0 and "engine:" not in told.stdout, told.stdout[-2000:]
    smoke = suite(env, "--predictors", "window-w3", "--run", "smoke")
    assert smoke.returncode == 0 and "engine:" not in smoke.stdout, smoke.stdout[-2000:]
    assert not processes_with(str(short_tmp)), "the local Ray instance outlived its sweep"


BOOM = '''
import os

from predictors.base import Param, Predictor
from predictors.registry import register


@register
class Boom(Predictor):
    """Fails to fit at k = 2 (counting its attempts in $BOOM_LOG); the common window otherwise."""

    family = "boom"
    kind = "fixed"
    params = (Param("k", "k", int, 2),)

    def _fit(self, data, gold):
        if self.values["k"] == 2:
            with open(os.environ["BOOM_LOG"], "a") as f:
                f.write("attempt\\n")
            raise RuntimeError("boom at k=2")

    def _predict(self, view, layer):
        return None
'''
BOOM_SWEEP = "\n".join(f"[{p}]\ngrid = {{ k = [2, 8], w = [3] }}\n" for p in ("smoke", "default", "full"))


@pytest.mark.slow
def test_a_failing_configuration_is_retried_then_named_and_the_others_land(tmp_path, short_tmp):
    (tmp_path / "fam").mkdir()
    (tmp_path / "fam" / "boom_family.py").write_text(BOOM)
    (tmp_path / "fam" / "boom.toml").write_text(BOOM_SWEEP + "\n[scaling]\nk = 8\n")
    log = tmp_path / "boom.log"
    # Both configurations in one task: it fails, is split, and the one at fault is retried, then named.
    env = env_for(tmp_path / "reports", tmp_path / "cache", short_tmp, SPARSEBENCH_FAMILIES="boom_family",
                  BOOM_LOG=str(log), PYTHONPATH=os.pathsep.join([str(tmp_path / "fam"), PY_PATH]),
                  SPARSEBENCH_RAY_CHUNK="2")
    done = suite(env, "--predictors", "boom*", "--dataset", "synthetic", "--run", "boom", "--engine", "ray")
    out = done.stdout
    assert done.returncode == 1, out[-3000:] + done.stderr[-3000:]
    assert "ray: synthetic-torch-boom-k2-w3 failed: RuntimeError: boom at k=2" in out
    assert "synthetic-torch-boom-k2-w3: failed on ray: RuntimeError: boom at k=2" in out
    assert "configurations: 2 measured" in out and "1 failed" in out
    # The task of both, then the task of boom-k2 alone and Ray's retry of it (RETRIES) before giving up.
    assert log.read_text() == "attempt\n" * 3
    assert "engine: ray, 2 workers (CPUs) on 1 node, 2 configurations a task (local)" in out
    assert sorted(records(tmp_path / "reports" / "runs" / "boom")) == ["synthetic--torch--boom-k8-w3"]


@pytest.mark.slow
def test_an_interrupted_ray_sweep_loses_no_finished_record(tmp_path, short_tmp):
    reports = tmp_path / "reports"
    env = env_for(reports, tmp_path / "cache", short_tmp)
    run = reports / "runs" / "int"
    proc = subprocess.Popen([sys.executable, *SUITE, "--predictors", SHORT, "--run", "int", "--engine", "ray"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=default_sigint)
    folder = run / "records" / "predictor"
    deadline = time.monotonic() + 600
    while not list(folder.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted:\n" + proc.communicate()[0]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    # The session ends with pytest's INTERRUPTED (2); within the whole test suite Ray's shutdown sometimes
    # ends the driver with status 1 instead, its output stopping right after the sweep's step says it
    # stopped (2 of 3 full runs on 2026-12-01): what this test is about, the finished records and Ray's
    # processes, is checked below either way.
    assert proc.returncode in (pytest.ExitCode.INTERRUPTED, 1), out[-3000:]
    assert proc.returncode == pytest.ExitCode.INTERRUPTED or " stopped after " in out, out[-3000:]
    kept = records(run)  # every record left verifies (written whole or not at all)
    assert 1 <= len(kept) < 3, out[-2000:]
    for rid in kept:
        assert (folder / f"{rid}.graphs.safetensors").is_file()  # never a record without its graphs
    deadline = time.monotonic() + 30
    while processes_with(str(short_tmp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_with(str(short_tmp)), "Ray outlived the interrupted driver"
    resumed = suite(env, "--predictors", SHORT, "--run", "int", "--engine", "ray")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"configurations: {3 - len(kept)} measured, {len(kept)} resumed" in resumed.stdout
    after = records(run)
    assert len(after) == 3 and all(quality(after[r]) == quality(kept[r]) for r in kept)


@pytest.mark.slow
def test_score_runs_many_predictors_as_ray_tasks(tmp_path, short_tmp):
    env = env_for(tmp_path / "reports", tmp_path / "cache", short_tmp)
    cmd = [sys.executable, "-m", "bench.cli", "score", "--dataset", "synthetic", "--samples", "6", "--json",
           "--predictor", "window-w3", "--predictor", "sf-kmeans-r4-k4-top1", "--predictor", "sf-dist-r4-sp0.9"]
    serial = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    on_ray = subprocess.run([*cmd, "--engine", "ray"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert serial.returncode == 0 and on_ray.returncode == 0, serial.stderr[-2000:] + on_ray.stderr[-2000:]
    a, b = json.loads(serial.stdout), json.loads(on_ray.stdout)
    assert [r["name"] for r in b] == ["window-w3", "sf-kmeans-r4-k4-top1", "sf-dist-r4-sp0.9"]  # --predictor order
    assert [{k: r[k] for k in QUALITY_KEYS} for r in a] == [{k: r[k] for k in QUALITY_KEYS} for r in b]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(path: Path, text: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while text not in (path.read_text() if path.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, f"{path}:\n" + path.read_text()[-3000:]
        time.sleep(0.2)


@contextlib.contextmanager
def two_node_cluster(folder: Path, env: dict):
    """A Ray head on 127.0.0.1 and one more node, one CPU each, with their own token (``env`` names the
    test's folder as ``RAY_TMPDIR``); yields the head's address and the environment that reaches it.
    Stopped by their process groups (SIGTERM, then SIGKILL after a bounded wait) and any process left
    under ``folder``."""
    port = free_port()
    env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block"]
    nodes = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(folder / f"{name}.log", "w")  # noqa: SIM115 - the node writes it until it stops
        nodes.append(subprocess.Popen([*RAY_CLI, "start", *args, *common], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        return nodes[-1]

    try:
        # Its session folder goes under $RAY_TMPDIR (the test's folder), where --address auto looks too.
        head = start("head", "--head", "--port", str(port), "--include-dashboard=false")
        wait_for(folder / "head.log", "Ray runtime started", head)
        worker = start("worker", "--address", f"127.0.0.1:{port}")
        wait_for(folder / "worker.log", "Ray runtime started", worker)
        yield f"127.0.0.1:{port}", env
    finally:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            for p in nodes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)
            for p in nodes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=wait)
        stop_processes(folder)


@pytest.mark.slow
def test_the_sweep_runs_on_a_cluster_joined_by_address(tmp_path, short_tmp):
    reports = tmp_path / "reports"
    with two_node_cluster(short_tmp, env_for(reports, tmp_path / "cache", short_tmp)) as (address, env):
        done = suite(env, "--predictors", SHORT, "--run", "cl", "--engine", "ray",
                     "--address", address)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        scored = subprocess.run([sys.executable, "-m", "bench.cli", "score", "--dataset", "synthetic", "--samples", "6",
                                 "--predictor", "window-w3", "--predictor", "sf-dist-r4-sp0.9", "--engine", "ray",
                                 "--address", "auto"], cwd=ROOT, env=env, capture_output=True, text=True)
        assert scored.returncode == 0, scored.stderr[-3000:]
    assert not processes_with(str(short_tmp)), "a node of the test cluster outlived it"
    assert scored.stdout.count("\n== ") == 2 and "== sf-dist-r4-sp0.9 on synthetic" in scored.stdout
    assert f"engine: ray, 2 workers (CPUs) on 2 nodes at {address}" in done.stdout
    assert re.search(r"\b3 measured by ray\b", done.stdout), done.stdout[-2000:]
    got = records(reports / "runs" / "cl")
    assert sorted(got) == ["minilm--torch--sf-dist-r4-sp0.9", "minilm--torch--window-w3",
                           "minilm--torch--window-w3-g1"]
    for rec in got.values():
        assert rec["time"]["engine"] == "ray" and re.fullmatch("[0-9a-f]{56}", rec["time"]["node_id"])
        assert 0 < rec["mean"]["recall"] <= 1 and rec["time"]["reference"]["entmax15-topk"]["mean"] > 0


@pytest.mark.slow
def test_no_cluster_to_join_is_one_line(tmp_path, short_tmp):
    env = env_for(tmp_path / "reports", tmp_path / "cache", short_tmp)  # $RAY_TMPDIR names no cluster
    done = suite(env, "--predictors", "window-w3", "--run", "none", "--engine", "ray", "--address", "auto")
    out = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR and "Traceback" not in out, out[-3000:]
    assert re.search(r"sparsebench: could not join the Ray cluster at auto: ConnectionError: .*", out), out[-3000:]
    assert not list((tmp_path / "reports" / "runs" / "none").glob("records/predictor/*.json"))
