"""The benchmark suite's console: progress as the suite goes, and its closing summary.

``bench/suite/conftest.py`` registers :class:`SuiteConsole` as a pytest plugin. While the suite runs:

* one status line, ``[ 37/526] predictors minilm-torch-sf-dist-r4-sp0.9 · 3:12 elapsed, ~41:20 left``
  (configurations done of all, the time since the first one, and the time left from the mean time of
  the configurations measured so far times those still to run, one-time data preparation left out);
  long steps inside a configuration (data preparation, training, gold, fitting:
  :class:`bench.progress.Step`) show after it;
* one permanent line per finished phase (module), per failure and per long step;
* in CI logs (``CI`` set, or stdout not a terminal) no carriage returns: one line per configuration.

Everything is written through pytest's terminal with output capture suspended, so it is seen while a
benchmark runs. pytest's own dots are left out (they said nothing about what ran), and configurations
reused from earlier sessions count as ``resumed``, not ``skipped``. The closing summary
(:func:`summary_lines`) replaces pytest-benchmark's table (hidden unless ``--show-benchmark-table``;
its JSON is still written).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from bench.progress import Console, clock, duration, in_ci, use_console

#: The skip reason of a configuration this run already measured (bench/suite/conftest.py's fresh_record).
RESUMED = "already measured in this run (resumed); use --fresh to measure again"

#: Benchmark module -> phase of the closing summary, in the order it lists them.
PHASES = {"bench_predictors": "predictors", "bench_dense": "dense", "bench_scaling": "scaling",
          "bench_downstream": "downstream", "bench_sparse_exec": "sparse execution",
          "bench_sparse_real": "sparse execution, real heads", "bench_gold": "gold speed and memory",
          "bench_faiss_vs_torch": "FAISS vs torch"}
DATA = "data preparation"
RAY = "predictors on ray"  # --engine ray: the sweep's tasks, before the predictor tests report them
SUMMARY = "summary"
PHASE_ORDER = (DATA, RAY, *PHASES.values(), SUMMARY)


def phase_of(location: str) -> str:
    """The phase of a test location (``bench_dense.py`` -> ``dense``)."""
    stem = Path(location).stem
    return PHASES.get(stem, stem)


def case_name(nodeid: str) -> str:
    """The configuration of a node id: its parameter id, else the function name."""
    tail = nodeid.rsplit("::", 1)[-1]
    return tail[tail.index("[") + 1 : -1] if tail.endswith("]") and "[" in tail else tail


def is_resumed(report) -> bool:
    return _skipped_for(report, RESUMED)


def is_engine_measured(report) -> bool:
    """A configuration measured by a Ray task of this session (:data:`bench.suite_engine.RAY_MEASURED`)."""
    from bench.suite_engine import RAY_MEASURED

    return _skipped_for(report, RAY_MEASURED)


def _skipped_for(report, reason: str) -> bool:
    longrepr = getattr(report, "longrepr", None)
    return bool(report.skipped and isinstance(longrepr, tuple) and reason in str(longrepr[-1]))


def corpus_line(config) -> str | None:
    """``corpus fortunes-bsd (minilm, entmax-lm): 2,155,174 characters, sha256 0d13...``: the text the
    session's text datasets read, named and hashed as every record and baseline stores it; None when no
    selected dataset reads a corpus, or when it cannot be read (preparing the data names the problem)."""
    from bench.data.corpora import load_corpus
    from bench.errors import BenchError

    state = getattr(config, "sparsebench", None) or {}
    texts = [d for d in state.get("datasets", ()) if not d.startswith("file:") and d != "synthetic"]
    if not texts:
        return None
    try:
        corpus = load_corpus(state["profile"].data.corpus)
    except BenchError:
        return None
    return (f"corpus {corpus.name} ({', '.join(texts)}): {len(corpus.text):,} characters, "
            f"sha256 {corpus.sha256}")


def engine_choice_line(config) -> str | None:
    """``engine: ray (the profile's; --engine serial measures here, one configuration at a time)``, or
    ``engine: serial (the profile's engine is ray, but 1 usable core: serial)``: who measures the predictor
    configurations and, when the profile's choice was not taken, why; None for a serial session that asked
    for nothing else (the serial engine is the plain case)."""
    state = getattr(config, "sparsebench", None) or {}
    engine, why = state.get("engine"), state.get("engine_why")
    if why:
        return f"engine: {engine} ({why})"
    if engine == "ray" and config.getoption("engine") is None:
        return "engine: ray (the profile's; --engine serial measures here, one configuration at a time)"
    return None


def short_path(path: Path) -> str:
    """``path`` relative to the current folder when inside it (what a reader types next)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class SuiteConsole:
    """Progress and phase times of one benchmark session (see the module docstring)."""

    def __init__(self, config):
        self.config = config
        self.tr = None  # pytest's terminal reporter, known from the session's start
        self.capman = config.pluginmanager.getplugin("capturemanager")
        tty = bool(getattr(sys.__stdout__, "isatty", lambda: False)())
        self.console = Console(write=self._write, interactive=tty and not in_ci())
        self.total = 0
        self.done = 0
        self.start: float | None = None
        self.outcomes: Counter = Counter()
        self.phase_seconds: dict[str, float] = defaultdict(float)
        self.phase_counts: dict[str, Counter] = defaultdict(Counter)
        self.measured_seconds: list[float] = []
        self.one_time = 0.0  # seconds of data preparation so far (left out of the per-configuration mean)
        self._item: dict = {}
        self._phase: str | None = None

    # -- output ---------------------------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        # Capture suspended, sys.stdout is the terminal's stream again (the one pytest's reporter writes
        # to). Written directly, not through the reporter, which would keep every status in its line.
        guard = self.capman.global_and_fixture_disabled() if self.capman else contextlib.nullcontext()
        with guard:
            stream = sys.stdout if self.tr is not None else sys.__stderr__
            stream.write(text)
            stream.flush()

    def counter(self, n: int) -> str:
        """``[  3/96]``: the ``n``-th configuration of all."""
        return f"[{n:>{len(str(self.total))}}/{self.total}]"

    def timing(self) -> str:
        """``0:12 elapsed, ~3:40 left``: the estimate is the mean time of the configurations measured so
        far (data preparation left out) times those still to run; none before the first is measured."""
        if self.start is None:
            return "starting"
        text = f"{clock(time.perf_counter() - self.start)} elapsed"
        if self.measured_seconds:
            mean = sum(self.measured_seconds) / len(self.measured_seconds)
            text += f", ~{clock(mean * (self.total - self.done))} left"
        return text

    # -- pytest hooks -----------------------------------------------------------------------------------------
    def pytest_sessionstart(self, session):
        self.tr = self.config.pluginmanager.getplugin("terminalreporter")
        if self.tr is not None:
            self.console.width = shutil.get_terminal_size().columns
            if self.config.get_verbosity() <= 0:
                self.tr.showfspath = False  # no module names with dots after them: the status line says more

    def pytest_unconfigure(self, config):
        use_console(None)

    def pytest_collection_finish(self, session):
        self.total = len(session.items)
        per = Counter(phase_of(item.location[0]) for item in session.items)
        parts = ", ".join(f"{per[p]} {p}" for p in PHASE_ORDER if per.get(p))
        self.console.line(f"sparsebench: {self.total} configurations ({parts})")
        for line in (corpus_line(self.config), engine_choice_line(self.config)):
            if line:
                self.console.line(line)

    def pytest_runtest_logstart(self, nodeid, location):
        if self.start is None:
            self.start = time.perf_counter()
        phase = phase_of(location[0])
        if phase != self._phase:
            self._end_phase()
            self._phase = phase
        self._item = {"seconds": 0.0, "one_time": self.one_time, "outcome": None}
        self.console.prefix = f"{self.counter(self.done + 1)} {phase} {case_name(nodeid)} · {self.timing()}"
        self.console.status()

    def pytest_runtest_logreport(self, report):
        self._item["seconds"] = self._item.get("seconds", 0.0) + report.duration
        if report.failed:
            self._item["outcome"] = "failed"
        elif report.skipped and self._item.get("outcome") is None:
            self._item["outcome"] = ("resumed" if is_resumed(report) else "measured" if is_engine_measured(report)
                                     else "skipped")
        elif report.when == "call" and report.passed and self._item.get("outcome") is None:
            self._item["outcome"] = "measured"

    def pytest_runtest_logfinish(self, nodeid, location):
        phase = phase_of(location[0])
        outcome = self._item.get("outcome") or "skipped"
        spent = max(0.0, self._item.get("seconds", 0.0) - (self.one_time - self._item.get("one_time", 0.0)))
        self.done += 1
        self.outcomes[outcome] += 1
        self.phase_seconds[phase] += spent
        self.phase_counts[phase][outcome] += 1
        if outcome in ("measured", "failed"):
            self.measured_seconds.append(spent)
        what = f"{phase} {case_name(nodeid)}"
        if outcome == "failed" or not self.console.interactive:
            self.console.prefix = ""
            self.console.line(f"{self.counter(self.done)} {what}: {outcome} in {duration(spent)} ({self.timing()})")
        else:
            self.console.prefix = f"{self.counter(self.done)} {what}: {outcome} · {self.timing()}"
            self.console.status()

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report, config):
        res = yield
        if not res:
            return res
        category, letter, word = res
        if is_resumed(report):
            category, letter, word = "resumed", "r", "RESUMED"
        elif is_engine_measured(report):
            category, letter, word = "measured by ray", "m", "MEASURED BY RAY"
        if config.get_verbosity() <= 0:
            letter, word = "", ""  # the status line says it (pytest's dots said nothing about what ran)
        return category, letter, word

    def pytest_sessionfinish(self, session, exitstatus):
        self._end_phase()
        self.console.prefix = ""
        self.console.clear()

    # -- phases -----------------------------------------------------------------------------------------------
    def _end_phase(self) -> None:
        if self._phase is None:
            return
        counts = self.phase_counts[self._phase]
        said = ", ".join(f"{counts[o]} {o}" for o in ("measured", "resumed", "skipped", "failed") if counts[o])
        prefix, self.console.prefix = self.console.prefix, ""
        n = sum(counts.values())
        self.console.line(f"{self._phase}: {n} configuration{'s' if n != 1 else ''} in "
                          f"{duration(self.phase_seconds[self._phase])} ({said or 'none run'})")
        self.console.prefix = prefix
        self._phase = None

    @contextlib.contextmanager
    def data_step(self, dataset: str):
        """Time a dataset's preparation (a one-time cost: not part of any configuration's time)."""
        with self.one_time_step(DATA):
            yield

    @contextlib.contextmanager
    def one_time_step(self, phase: str):
        """Time a step of the session that is no configuration's own (data preparation, the Ray sweep):
        counted under ``phase``, left out of the time of the test it runs in."""
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.one_time += seconds
            self.phase_seconds[phase] += seconds


def plugin(config) -> SuiteConsole | None:
    return config.pluginmanager.get_plugin("sparsebench-console")


def register(config) -> SuiteConsole:
    """Register the console plugin of this session (once)."""
    found = plugin(config)
    if found is None:
        found = SuiteConsole(config)
        config.pluginmanager.register(found, "sparsebench-console")
        use_console(found.console)
    return found


def prepare_timed(config, dataset: str, build):
    """``build()`` (a dataset's :class:`~bench.evaluation.prepared.Prepared`), counted as data preparation
    and announced in one line: samples of each part, where the gold came from, how long it took."""
    con = plugin(config)
    start = time.perf_counter()
    with con.data_step(dataset) if con else contextlib.nullcontext():
        prep = build()
    cached = sum(prep.gold_from_cache)
    gold = ("gold read from the cache" if cached == 3 else "gold computed" if cached == 0
            else f"gold of {3 - cached} parts computed, {cached} read from the cache")
    parts = f"fit {prep.fit.num_samples}, val {prep.val.num_samples}, eval {prep.eval.num_samples}"
    line = (f"data {dataset} ready in {duration(time.perf_counter() - start)}: {prep.data.num_samples} samples "
            f"({parts}), {gold}")
    if con is not None:
        prefix, con.console.prefix = con.console.prefix, ""
        con.console.line(line)
        con.console.prefix = prefix
        con.console.status()
    return prep


def summary_lines(config, state: dict) -> list[str]:
    """The closing summary's lines after its title: run folder, configurations, time per phase, outputs
    and the report that ``tox -e bench`` renders next (``python -m bench.report --bench-args``)."""
    con = plugin(config)
    outcomes = con.outcomes if con else Counter()
    run = Path(state["run"])
    lines = [f"run folder: {short_path(run)}",
             f"configurations: {len(state['measured'])} measured, {state['resumed']} resumed (same "
             f"fingerprint), {len(state['remeasured'])} measured again; {outcomes['failed']} failed, "
             f"{outcomes['skipped']} skipped"]
    if state.get("engine_line"):
        lines.append(state["engine_line"])
    lines += [f"  {line}" for line in state["remeasured"][:10]]
    if len(state["remeasured"]) > 10:
        lines.append(f"  ... and {len(state['remeasured']) - 10} more")
    if con is not None:
        seconds = {**con.phase_seconds, SUMMARY: state.get("summary_seconds", 0.0)}
        shown = [p for p in PHASE_ORDER if p in seconds and (seconds[p] > 0 or p in con.phase_counts)]
        lines.append(f"time per phase ({duration(sum(seconds[p] for p in shown))} in all):")
        width = max((len(p) for p in shown), default=0)
        lines += [f"  {p:<{width}} {duration(seconds[p]):>12}" for p in shown]
    lines.append("written:")
    lines += [f"  {short_path(p)}" for p in state.get("summary_paths", [])]
    bench_json = config.getoption("benchmark_json", None)
    if bench_json:
        lines.append(f"  {short_path(Path(str(bench_json)))} (pytest-benchmark's timings; "
                     "--show-benchmark-table prints its table)")
    html = short_path(run / "report" / "report.html")
    lines.append(f"report: {html} (tox -e bench renders it next; again: tox -e report -- {short_path(run)})")
    return lines
