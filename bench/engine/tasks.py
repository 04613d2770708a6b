"""What a Ray worker runs: the fit of a piece of shared state, and the measurement of a few configurations.

The functions here are plain functions; :mod:`bench.engine.ray_engine` makes them Ray tasks. Every task
pins its threads first (the session's torch threads, faiss 1: :func:`bench.env.configure_threads`), so a
worker computes exactly what the serial benchmark computes, bit for bit. A dataset's
:class:`~bench.evaluation.prepared.Prepared` arrives as an object reference in a one-element list (so
Ray does not resolve it for every task) and is read from the object store once per worker process.
"""

from __future__ import annotations

import functools
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from bench.engine.measure import Case, measure_together, score_case
from bench.results.gates import DEFAULT_SPEED

KEEP_PREPARED = 2  # datasets a worker process keeps read (a sweep goes dataset by dataset)
_PREPARED: dict = {}


@dataclass(frozen=True)
class Settings:
    """What every task of a sweep is told: ``work`` (``measure``: the benchmark's record and graphs;
    ``score``: ``sparsebench score``'s record), the session's torch ``threads``, timed ``rounds``,
    ``device`` and the dense ``reference`` timed beside every prediction (each case carries its seed)."""

    work: str = "measure"
    threads: int | None = None
    rounds: int = 1
    device: str = "cpu"
    reference: str = DEFAULT_SPEED["reference"]  # the dense reference the speed gate divides by


def prepared_of(box: list):
    """The dataset of ``box`` (``[ObjectRef]``), read from the object store once per worker process."""
    import ray

    key = box[0].hex()
    if key not in _PREPARED:
        while len(_PREPARED) >= KEEP_PREPARED:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = ray.get(box[0])
    return _PREPARED[key]


def where() -> dict:
    """The machine a task runs on: ``host`` (its hostname) and ``node_id`` (Ray's node id)."""
    import ray

    return {"host": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id()}


@functools.cache
def code() -> str:
    """The code version this worker process runs (:func:`bench.results.run_folder.code_version`)."""
    from bench.results.run_folder import code_version

    return code_version()


def code_path() -> str:
    """Where this process imports ``bench`` from (a checkout, or an installed package)."""
    import bench

    return str(Path(bench.__file__).resolve().parent)


def fit_state(box: list, case: Case, settings: Settings) -> dict:
    """Fit ``case``'s predictor and return the memo entries its fit trained (:mod:`predictors.memo`):
    the shared state of :mod:`bench.engine.plan`, with ``seconds`` and the machine."""
    import predictors
    from bench.env import configure_threads
    from predictors import memo

    configure_threads(settings.threads)
    prep = prepared_of(box)
    before = memo.snapshot()
    start = time.perf_counter()
    predictors.get(case.name, backend=case.backend, seed=case.seed).fit(prep.fit, prep.fit_gold)
    return {"entries": memo.added_since(before), "seconds": time.perf_counter() - start, **where()}


def run_chunk(box: list, cases: list[Case], state: dict | None, settings: Settings) -> list[dict]:
    """Measure ``cases`` (``settings.work``; one dataset, one piece of shared state, one timing class:
    :func:`bench.engine.plan.chunks`) with the shared ``state`` installed (``None``: none needed).

    Returns one ``{"record", "graphs", "code", "code_path", "host", "node_id", "seconds"}`` per case, in order: the
    record (its fingerprint is the driver's to add), the graphs' compact state
    (:func:`bench.results.graph_store.graphs_state`; ``None`` for ``score``), the code version the
    worker ran, where, and the task's seconds.
    """
    from bench.env import configure_threads, environment
    from predictors import memo

    start = time.perf_counter()
    threads = configure_threads(settings.threads)
    prep = prepared_of(box)
    if state is not None:
        memo.install(state["entries"])
    here = where()
    if settings.work == "score":
        done = [(score_case(prep, c), None) for c in cases]
    else:
        from bench.results.graph_store import graphs_state

        measured = measure_together(prep, cases, rounds=settings.rounds, device=settings.device,
                                    reference=settings.reference, where=here,
                                    environment={**environment(), **threads})
        done = [(m.record, graphs_state(m.graphs, prep.eval)) for m in measured]
    seconds = time.perf_counter() - start
    return [{"record": r, "graphs": g, "code": code(), "code_path": code_path(), "seconds": seconds, **here}
            for r, g in done]
