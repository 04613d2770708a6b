"""The benchmark suite's engines: how ``bench_predictors.py``'s configurations get measured.

* ``serial`` (the default): each test measures its configuration itself, timed by pytest-benchmark.
* ``ray`` (``--engine ray [--address auto|HOST:PORT]``): the session fixture ``engine`` runs, before the
  first predictor test, every selected predictor configuration whose record is not fresh as a Ray
  task (:func:`bench.engine.ray_engine.run_cases`), writing each record (graphs first, then the JSON,
  both atomically, through the run's :class:`~bench.results.run_folder.RecordSlot`) as its task
  finishes. Each test then only reports it: skipped as :data:`RAY_MEASURED` (counted as measured),
  failed with the task's error, or resumed when its record was fresh before the session. A Ray that
  cannot be started or joined ends the session with one line (never a fallback to the serial engine).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from bench.engine.measure import Case
from bench.errors import BenchError
from bench.progress import console

#: The skip reason of a configuration measured by a Ray task of this session.
RAY_MEASURED = "measured by ray"


class SerialEngine:
    """Each configuration is measured by its own test."""

    name = "serial"

    def settle(self, case: Case) -> None:
        """Nothing: the test measures ``case``."""


class RayEngine:
    """The configurations of the session's predictor tests, measured on Ray at the first :meth:`settle`.

    ``slot(kind, rid, dataset)`` -> ``(fresh, slot)``: the run's record slot (conftest's ``record_slot``);
    ``prepared(dataset)``: the dataset's Prepared; ``cases``: every selected predictor configuration.
    """

    name = "ray"

    def __init__(self, config, cases: list[Case], slot: Callable, prepared: Callable):
        self.config, self.cases, self.slot, self.prepared = config, cases, slot, prepared
        self.outcomes: dict[str, tuple[str, str]] = {}  # rid -> ("measured", where) | ("failed", why)
        self.ran = False

    def settle(self, case: Case) -> None:
        """Skip ``case`` as measured by Ray, fail it with Ray's error, or (fresh before) let it resume."""
        if not self.ran:
            self.ran = True
            try:
                self.run()
            except BenchError as exc:  # Ray could not start or be joined: one line, and the session ends
                pytest.exit(f"sparsebench: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
        outcome, text = self.outcomes.get(case.rid, (None, ""))
        if outcome == "failed":
            pytest.fail(f"{case.label()}: failed on ray: {text}", pytrace=False)
        if outcome == "measured":
            pytest.skip(f"{RAY_MEASURED} ({text})")

    def run(self) -> None:
        """Measure every selected configuration whose record is not fresh (module docstring)."""
        from bench.engine.ray_engine import run_cases
        from bench.engine.tasks import Settings

        state = self.config.sparsebench
        slots = {}
        for case in self.cases:
            fresh, slot = self.slot("predictor", case.rid, case.dataset)
            if not fresh:
                slots[case] = slot
                (state["remeasured"] if slot.reason != "new" else state["measured"]).append(
                    f"predictor/{case.rid}: {slot.reason}")
        if not slots:
            return
        preps = {ds: self.prepared(ds) for ds in dict.fromkeys(c.dataset for c in slots)}
        settings = Settings(work="measure", threads=state["threads"]["torch_threads"],
                            rounds=state["profile"].rounds, device=self.config.getoption("device"))
        address = self.config.getoption("address")

        def started(line: str) -> None:
            state["engine_line"] = f"engine: ray, {line}" + (f" at {address}" if address else " (local)")
            _say(state["engine_line"] + f": {len(slots)} configurations")

        from bench.suite_console import RAY, plugin

        con = plugin(self.config)
        with con.one_time_step(RAY) if con else contextlib.nullcontext():
            run_cases(preps, list(slots), settings, lambda c, r: self._write(c, r, slots[c]), self._failed,
                      address=address, on_start=started)

    def _write(self, case: Case, result: dict, slot) -> None:
        from bench.results.graph_store import graphs_path, write_graph_state_atomic

        # The graphs first: a record never names a missing graphs file (sparsebench rescore reads both).
        write_graph_state_atomic(graphs_path(slot.path), result["graphs"])
        slot.write(result["record"])
        self.outcomes[case.rid] = ("measured", f"on {result['host']}, node {result['node_id'][:12]}")

    def _failed(self, case: Case, why: str) -> None:
        self.outcomes[case.rid] = ("failed", why)
        _say(f"ray: {case.label()} failed: {why}")


def _say(line: str) -> None:
    con = console()
    prefix, con.prefix = con.prefix, ""
    con.line(line)
    con.prefix = prefix


def make_engine(config, items, slot: Callable, prepared: Callable):
    """The session's engine (``--engine``, else the profile's: ``config.sparsebench["engine"]``) over the
    predictor configurations of ``items``."""
    if config.sparsebench["engine"] != "ray":
        return SerialEngine()
    cases = [Case(*item.callspec.params["predictor_case"]) for item in items
             if hasattr(item, "callspec") and "predictor_case" in item.callspec.params]
    return RayEngine(config, cases, slot, prepared)
