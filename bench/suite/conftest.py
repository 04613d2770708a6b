"""pytest-benchmark configuration of the suite: options, parametrisation, records, summary.

Run it with ``pytest -c bench/suite/pytest.ini bench/suite`` (``tox -e bench`` does). Options:

    --dataset D[,D...]   registry names or file:PATH (default: the profile's datasets)
    --profile P          smoke | default | full (default: default)
    --predictors GLOB    only predictor names matching the glob(s), comma separated
    --backend B          torch | faiss | all (default: all installed)
    --device D           cpu | cuda (cuda must exist: no silent fallback)
    --run NAME           results go to reports/runs/NAME (default: the profile name)
    --fresh              discard the run's earlier records instead of resuming
    --no-scaling         skip the scaling sweep

Finished configurations are kept as records; a second session with the same run name skips them.

What every benchmark module shares lives here: ``config.sparsebench`` (the typed profile,
:class:`bench.config.profiles.Profile`; the run folder; the datasets of the session; the threads), and
the fixtures ``prepared`` (data and gold, once per session), ``fresh_record`` (a record's path, or a skip
when this run already measured it) and ``run_environment`` (versions and threads, stored with records).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from bench.errors import BenchError

PROFILE_FILE = Path(__file__).with_name("profiles.toml")


def pytest_addoption(parser):
    g = parser.getgroup("sparsebench")
    g.addoption("--dataset", default=None, help="dataset(s), comma separated: minilm, entmax-lm, synthetic, file:PATH")
    g.addoption("--profile", default="default", choices=("smoke", "default", "full"))
    g.addoption("--predictors", default=None, help="glob(s) over predictor names, comma separated")
    g.addoption("--backend", default="all", choices=("torch", "faiss", "all"))
    g.addoption("--device", default="cpu", choices=("cpu", "cuda"))
    g.addoption("--run", default=None, help="run name (results under reports/runs/NAME)")
    g.addoption("--fresh", action="store_true", help="discard earlier records of this run")
    g.addoption("--no-scaling", action="store_true", help="skip the scaling sweep")
    g.addoption("--threads", type=int, default=None, help="torch threads (default 1, see bench/env.py)")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_configure(config):
    from bench.config.profiles import load_profile
    from bench.env import configure_threads
    from bench.results import records

    if config.getoption("device") == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError("--device cuda asked for, but torch sees no CUDA device here")
    profile = config.getoption("profile")
    try:
        prof = load_profile(PROFILE_FILE, profile)
    except BenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    run = records.run_dir(config.getoption("run") or profile)
    if config.getoption("fresh") and run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    opt = config.getoption("dataset")
    datasets = [d.strip() for d in opt.split(",")] if opt else list(prof.datasets)
    config.sparsebench = {"profile": prof, "profile_name": profile, "run": run, "datasets": datasets,
                          "threads": configure_threads(config.getoption("threads"))}
    if not config.getoption("benchmark_json", None):
        config.option.benchmark_json = run / f"benchmark-{time.strftime('%Y%m%dT%H%M%S')}.json"


def _backends(config) -> list[str]:
    opt = config.getoption("backend")
    if opt == "all":
        return ["torch", "faiss"] if faiss_available() else ["torch"]
    return [opt]


def pytest_generate_tests(metafunc):
    from bench.config.sweeps import filter_names, scaling_names, sweep_names
    from predictors.registry import family_of

    config = metafunc.config
    prof = config.sparsebench["profile"]
    pattern = config.getoption("predictors")
    if "predictor_case" in metafunc.fixturenames:
        cases = []
        for backend in _backends(config):
            try:
                names = sweep_names(config.sparsebench["profile_name"], pattern=pattern, backend=backend)
            except BenchError as exc:
                raise pytest.UsageError(str(exc)) from None
            cases += [(ds, backend, n) for ds in config.sparsebench["datasets"] for n in names]
        metafunc.parametrize("predictor_case", cases, ids=[f"{d}-{b}-{n}" for d, b, n in cases])
    if "dense_case" in metafunc.fixturenames:
        cases = [(ds, m) for ds in config.sparsebench["datasets"] for m in prof.dense]
        metafunc.parametrize("dense_case", cases, ids=[f"{d}-{m}" for d, m in cases])
    if "scaling_case" in metafunc.fixturenames:
        if config.getoption("no_scaling"):
            cases = []
        else:
            try:
                preds = filter_names(scaling_names(prof.name, prof.scaling_predictors), pattern)
            except BenchError as exc:
                raise pytest.UsageError(str(exc)) from None
            limit = prof.scaling_dense_max
            cases = [(n, "dense", m) for n in prof.scaling_n for m in prof.scaling_dense
                     if n <= limit.get(m, n)]
            # Only some families have FAISS twins.
            cases += [(n, b, p) for n in prof.scaling_n for b in _backends(config) for p in preds
                      if family_of(p, b) is not None]
        metafunc.parametrize("scaling_case", cases, ids=[f"n{n}-{b}-{m}" for n, b, m in cases])


_PREPARED: dict = {}


@pytest.fixture(scope="session")
def prepared():
    """``prepared(dataset)`` -> bench.evaluation.prepared.Prepared, loaded once per session."""
    from bench.evaluation.prepared import prepare

    def get(dataset: str, config):
        if dataset not in _PREPARED:
            data = config.sparsebench["profile"].data
            opts = {} if dataset.startswith("file:") else data.options()
            if dataset == "synthetic":
                opts = {"samples": data.samples, "length": data.length}
            try:
                _PREPARED[dataset] = prepare(dataset, show_progress=True, **opts)
            except BenchError as exc:
                raise pytest.UsageError(f"dataset {dataset}: {exc}") from None
        return _PREPARED[dataset]

    return get


@pytest.fixture(scope="session")
def bench_config(pytestconfig):
    return pytestconfig


@pytest.fixture
def fresh_record(bench_config):
    """``fresh_record(kind, rid)`` -> the path of this run's record ``kind``/``rid``; skips the test when
    the record exists (a resumed run measures every configuration once)."""
    from bench.results.records import record_path

    def path_or_skip(kind: str, rid: str) -> Path:
        path = record_path(bench_config.sparsebench["run"], kind, rid)
        if path.exists():
            pytest.skip("already measured in this run (resumed); use --fresh to measure again")
        return path

    return path_or_skip


def _environment(config) -> dict:
    from bench.env import environment

    return {**environment(), **config.sparsebench["threads"]}


@pytest.fixture
def run_environment(bench_config) -> dict:
    """Versions, device and the session's pinned threads, stored in every record beside the numbers."""
    return _environment(bench_config)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["sparsebench"] = {**_environment(config), "profile": config.sparsebench["profile_name"]}


def pytest_sessionfinish(session, exitstatus):
    from bench.results.summary import write_summary

    config = session.config
    if not hasattr(config, "sparsebench"):
        return
    try:
        paths = write_summary(config.sparsebench["run"])
    except BenchError as exc:  # a corrupt record: say which, keep the others
        config.sparsebench["summary_error"] = str(exc)
        return
    config.sparsebench["summary_paths"] = paths


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not hasattr(config, "sparsebench"):
        return
    tr = terminalreporter
    if "summary_error" in config.sparsebench:
        tr.write_line(f"sparsebench: could not summarise: {config.sparsebench['summary_error']}", red=True)
        return
    tr.write_sep("=", "sparsebench results")
    tr.write_line(f"run folder: {config.sparsebench['run']}")
    for p in config.sparsebench.get("summary_paths", []):
        tr.write_line(f"  {p}")
