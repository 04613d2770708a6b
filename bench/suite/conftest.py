"""pytest-benchmark configuration of the suite: options, parametrisation, records, summary.

Run it with ``pytest -c bench/suite/pytest.ini bench/suite`` (``tox -e bench`` does). Options:

    --dataset D[,D...]   registry names or file:PATH (default: the profile's datasets)
    --profile P          smoke | default | full | gpu (default: default; gpu needs --device cuda)
    --predictors GLOB    only predictor names matching the glob(s), comma separated
    --backend B          torch | faiss | all (default: all installed)
    --seeds S[,S...]     seeds of the randomised configurations (default: the profile's ``seeds``)
    --device D           cpu | cuda (cuda must exist: no silent fallback)
    --run NAME           results go to reports/runs/NAME (default: the profile name)
    --fresh              discard the run's earlier records instead of resuming
    --no-scaling         skip the scaling sweep
    --engine E           serial | ray: the predictor configurations as Ray tasks (bench.suite_engine); default:
                         the profile's engine (default and full: ray on a CPU run with >= 2 cores and Ray
                         installed, else serial, saying why; smoke: serial)
    --address A          with --engine ray: join the Ray cluster at auto or HOST:PORT (default: start Ray here)
    --show-benchmark-table  print pytest-benchmark's table too (hidden: the closing summary says where
                         its JSON went)

Finished configurations are kept as records; a second session with the same run name reuses them
(``resumed``).

What every benchmark module shares lives here: ``config.sparsebench`` (the typed profile,
:class:`bench.config.profiles.Profile`; the run folder; the datasets of the session; the threads), and
the fixtures ``prepared`` (data and gold, once per session), ``fresh_record`` (a record's path, or a skip
when this run already measured it), ``run_environment`` (versions and threads, stored with records) and
``engine`` (who measures the predictor configurations: :mod:`bench.suite_engine`).
What the console shows (progress, the closing summary) is :mod:`bench.suite_console`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench.errors import BenchError

PROFILE_FILE = Path(__file__).with_name("profiles.toml")


def pytest_addoption(parser):
    g = parser.getgroup("sparsebench")
    g.addoption("--dataset", default=None,
                help="dataset(s), comma separated: minilm, entmax-lm, minilm-entmax, synthetic, file:PATH")
    g.addoption("--profile", default="default", choices=("smoke", "default", "full", "gpu"))
    g.addoption("--predictors", default=None, help="glob(s) over predictor names, comma separated")
    g.addoption("--backend", default="all", choices=("torch", "faiss", "all"))
    g.addoption("--seeds", default=None, help="seeds of the randomised configurations, comma separated "
                "(default: the profile's; the others run with seed 0)")
    g.addoption("--device", default="cpu", choices=("cpu", "cuda"))
    g.addoption("--run", default=None, help="run name (results under reports/runs/NAME)")
    g.addoption("--fresh", action="store_true", help="discard earlier records of this run")
    g.addoption("--no-scaling", action="store_true", help="skip the scaling sweep")
    g.addoption("--threads", type=int, default=None, help="torch threads (default 1, see bench/env.py)")
    g.addoption("--split", default=None, help="fit,val,eval fractions of the samples (default 0.5,0.25,0.25)")
    g.addoption("--engine", default=None, choices=("serial", "ray"),
                help="who measures the predictor configurations: serial here, or ray (tasks on Ray)")
    g.addoption("--address", default=None,
                help="--engine ray: join the Ray cluster at auto or HOST:PORT (default: start Ray here)")
    g.addoption("--show-benchmark-table", action="store_true",
                help="also print pytest-benchmark's table of timings (its JSON is written either way)")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_configure(config):
    if getattr(config.option, "help", False):
        return
    try:
        config.sparsebench = _session(config)
    except BenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    if not config.getoption("benchmark_json", None):
        config.option.benchmark_json = config.sparsebench["run"] / f"benchmark-{time.strftime('%Y%m%dT%H%M%S')}.json"
    # pytest-benchmark's own switch: no table (hundreds of rows), the JSON still written.
    if not config.getoption("show_benchmark_table"):
        config.option.benchmark_quiet = True
    from bench.suite_console import register

    register(config)


def _session(config) -> dict:
    """The session's state: typed profile, datasets, run folder (locked, emptied with --fresh, its manifest
    checked), threads and fingerprint. Every bad option is a BenchError here, before any work."""
    from bench.config.profiles import load_profile, seeds_option
    from bench.data.cache import cache_root
    from bench.env import check_threads, configure_threads
    from bench.results import records, run_folder

    check_threads(config.getoption("threads"))  # before the run folder is touched
    from bench.engine.ray_engine import check_engine, choose_engine

    profile = config.getoption("profile")
    prof = load_profile(PROFILE_FILE, profile)
    engine, engine_why = choose_engine(config.getoption("engine"), prof.engine, config.getoption("device"))
    check_engine(engine, config.getoption("address"), config.getoption("device"))
    if config.getoption("device") == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BenchError("--device cuda asked for, but torch sees no CUDA device here")
    if prof.device is not None and config.getoption("device") != prof.device:
        raise BenchError(f"--profile {profile} runs on the GPU: it needs --device {prof.device}")
    seeds = seeds_option(config.getoption("seeds"), prof)
    opt = config.getoption("dataset")
    datasets = [d.strip() for d in opt.split(",")] if opt else list(prof.datasets)
    _check_datasets(datasets)
    split = _split(config.getoption("split"))
    run = records.run_dir(config.getoption("run") or _default_run(profile, datasets))
    run_folder.writable(run, "run folder")
    run_folder.writable(cache_root(), "cache folder")
    lock = run_folder.RunLock(run)
    lock.acquire()
    config.add_cleanup(lock.release)
    if config.getoption("fresh"):
        run_folder.empty_run_folder(run)
    manifest = {"profile": profile, "data": prof.data.options(), "split": list(split),
                "device": config.getoption("device")}
    run_folder.check_manifest(run, manifest)
    return {"profile": prof, "profile_name": profile, "run": run, "datasets": datasets, "split": split,
            "threads": configure_threads(config.getoption("threads")),
            "fingerprint": {**manifest, "code": run_folder.code_version()},
            "seeds": seeds, "resumed": 0, "measured": [], "remeasured": [],
            "engine": engine, "engine_why": engine_why}


def _check_datasets(datasets: list[str]) -> None:
    from bench.data.sources import known_sources

    for d in datasets:
        if d.startswith("file:"):
            path = Path(d[5:])
            if not path.is_file() or not os.access(path, os.R_OK):
                raise BenchError(f"--dataset {d}: no readable file {path}")
        elif d not in known_sources():
            raise BenchError(f"unknown dataset {d!r}; known: {', '.join(known_sources())}, file:PATH")


def _split(text: str | None) -> tuple[float, float, float]:
    from predictors.data import DEFAULT_SPLIT, check_split

    return DEFAULT_SPLIT if text is None else check_split(text.split(","))


def _default_run(profile: str, datasets: list[str]) -> str:
    """The profile's name, or for file datasets a folder named after the files (never merged into the
    profile's own run): :func:`bench.results.run_folder.default_run_name`, which the report shares."""
    from bench.results.run_folder import default_run_name

    return default_run_name(profile, datasets)


def _backends(config) -> list[str]:
    opt = config.getoption("backend")
    if opt == "all":
        return ["torch", "faiss"] if faiss_available() else ["torch"]
    return [opt]


def pytest_generate_tests(metafunc):
    from bench.config.sweeps import PAPER_HELPER, filter_names, scaling_names, seeded_names, sweep_names
    from bench.results.seeds import seed_suffix
    from predictors.registry import family_of

    config = metafunc.config
    prof = config.sparsebench["profile"]
    pattern = config.getoption("predictors")
    if "predictor_case" in metafunc.fixturenames:
        cases = []
        # No datasets (the gpu profile): no sweep to read, and the sweep files have no table for it.
        for backend in _backends(config) if config.sparsebench["datasets"] else ():
            try:
                # The paper's helper for every family that is not a pattern or a bound (torch only: a FAISS
                # twin gives the same graphs, timed bare against its torch twin).
                helpers = (PAPER_HELPER,) if prof.paper_helper and backend == "torch" else ()
                names = sweep_names(config.sparsebench["profile_name"], pattern=pattern, backend=backend,
                                    helpers=helpers)
            except BenchError as exc:
                raise pytest.UsageError(str(exc)) from None
            # A randomised configuration once per seed (seed last in the case), the others with seed 0.
            seeded = seeded_names(names, config.sparsebench["seeds"], backend)
            cases += [(ds, backend, n, s) for ds in config.sparsebench["datasets"] for n, s in seeded]
        metafunc.parametrize("predictor_case", cases, ids=[f"{d}-{b}-{n}{seed_suffix(s, '-')}" for d, b, n, s in cases])
    if "dense_case" in metafunc.fixturenames:
        cases = [(ds, m) for ds in config.sparsebench["datasets"] for m in prof.dense]
        metafunc.parametrize("dense_case", cases, ids=[f"{d}-{m}" for d, m in cases])
    if "scaling_case" in metafunc.fixturenames:
        if config.getoption("no_scaling") or not prof.scaling_n:
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
            from bench.suite_console import prepare_timed

            try:
                _PREPARED[dataset] = prepare_timed(config, dataset, lambda: prepare(
                    dataset, split=config.sparsebench["split"], show_progress=True, **opts))
            except BenchError as exc:
                raise pytest.UsageError(f"dataset {dataset}: {exc}") from None
        return _PREPARED[dataset]

    return get


@pytest.fixture(scope="session")
def bench_config(pytestconfig):
    return pytestconfig


@pytest.fixture
def fresh_record(bench_config, prepared):
    """``fresh_record(kind, rid, dataset=None)`` -> the :class:`~bench.results.run_folder.RecordSlot` of this
    run's record ``kind``/``rid``; skips the test when that record verifies and carries the same
    fingerprint (the session's settings and code, and the dataset's descriptor: corpus or file hash,
    data options, split), so a resumed run measures every configuration once and never reuses a
    record of something else."""
    from bench.suite_console import RESUMED

    state = bench_config.sparsebench

    def slot_or_skip(kind: str, rid: str, dataset: str | None = None):
        reuse, slot = record_slot(bench_config, prepared, kind, rid, dataset)
        if reuse:
            state["resumed"] += 1
            pytest.skip(RESUMED)
        (state["remeasured"] if slot.reason != "new" else state["measured"]).append(f"{kind}/{rid}: {slot.reason}")
        return slot

    return slot_or_skip


def record_slot(config, prepared, kind: str, rid: str, dataset: str | None = None):
    """``(fresh, slot)``: whether this run's record ``kind``/``rid`` verifies and carries this session's
    fingerprint (with the dataset's descriptor), and its :class:`~bench.results.run_folder.RecordSlot`."""
    from bench.results.records import record_path
    from bench.results.run_folder import record_fingerprint, reuse_or_slot

    state = config.sparsebench
    identity = {"kind": kind, "id": rid}
    if dataset is not None:
        identity["data"] = prepared(dataset, config).data.descriptor
    fingerprint = record_fingerprint(state["fingerprint"], identity)
    return reuse_or_slot(record_path(state["run"], kind, rid), fingerprint, kind)


@pytest.fixture(scope="session")
def engine(request, bench_config, prepared):
    """Who measures the predictor configurations (``--engine``, :mod:`bench.suite_engine`): ``settle(case)``
    is nothing for the serial engine; with ``ray`` its first call measures every selected configuration on
    Ray, and each call then skips its case as measured there, fails it with Ray's error, or lets it resume."""
    from bench.suite_engine import make_engine

    return make_engine(bench_config, request.session.items,
                       lambda kind, rid, ds: record_slot(bench_config, prepared, kind, rid, ds),
                       lambda ds: prepared(ds, bench_config))


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
    start = time.perf_counter()
    try:
        paths = write_summary(config.sparsebench["run"], profile=config.sparsebench["profile_name"])
        config.sparsebench["summary_seconds"] = time.perf_counter() - start
    except BenchError as exc:  # a record that cannot be trusted: no summary, and the session fails
        config.sparsebench["summary_error"] = str(exc)
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
        return
    config.sparsebench["summary_paths"] = paths


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not hasattr(config, "sparsebench"):
        return
    tr = terminalreporter
    if "summary_error" in config.sparsebench:
        tr.write_line(f"sparsebench: could not summarise: {config.sparsebench['summary_error']}", red=True)
        return
    from bench.suite_console import summary_lines

    tr.write_sep("=", "sparsebench results")
    for line in summary_lines(config, config.sparsebench):
        tr.write_line(line)
