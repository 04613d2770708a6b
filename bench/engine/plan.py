"""Which configurations of a sweep share fitted state, and which one of them trains it.

Configurations of one dataset whose :meth:`predictors.base.Predictor.shared_fit` keys are equal (every
``sf-*`` family, ``reformer-proj`` and ``routing-proj`` at ``r = 4`` with separate maps share the
learned projections; the ``seer`` settings of one block size share the gate maps) need that state
trained once. :func:`plan` names, per ``(dataset, key)``, the first configuration (in sweep order)
that needs it: a distributed sweep fits that configuration once in a task of its own, keeps the
memo entries the fit trained (:mod:`predictors.memo`) in the object store, and gives them to every
configuration task of that key, which then trains nothing shared. Configurations whose fit shares
nothing (``None``) depend on no state.

:func:`chunks` cuts the configurations into tasks of a few (:func:`chunk_size`), of one dataset, one
piece of state and one timing class (ceilings are timed in one round, the others in the profile's), so
a task times the dense reference once per round for all of them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bench.engine.measure import Case
from bench.errors import BenchError

#: ``(dataset, shared_fit key)``: one piece of fitted state of one dataset.
StateKey = tuple
CHUNK_MAX = 8  # configurations per task at most: one reference timing serves them, one task holds their graphs
CHUNK_ENV = "SPARSEBENCH_RAY_CHUNK"  # configurations per task, instead of chunk_size's choice


def shared_fit_of(case: Case) -> tuple | None:
    """The :meth:`~predictors.base.Predictor.shared_fit` key of ``case``'s predictor (with its seed, as measured)."""
    import predictors

    return predictors.get(case.name, backend=case.backend, seed=case.seed).shared_fit()


@dataclass
class Plan:
    """``states``: each piece of shared state and the configuration whose fit trains it (in order of
    first need); ``needs``: each configuration's state key, or ``None``."""

    states: dict[StateKey, Case] = field(default_factory=dict)
    needs: dict[Case, StateKey | None] = field(default_factory=dict)
    ceilings: set[Case] = field(default_factory=set)

    def sharing(self, key: StateKey) -> list[Case]:
        """The configurations that use the state ``key``, in sweep order."""
        return [c for c, k in self.needs.items() if k == key]


def is_ceiling(case: Case) -> bool:
    """Whether ``case``'s family is a ceiling (timed in one round without warm-up)."""
    import predictors

    return predictors.get(case.name, backend=case.backend, seed=0).kind == "ceiling"


def plan(cases: Iterable[Case], shared_fit: Callable[[Case], tuple | None] = shared_fit_of,
         ceiling: Callable[[Case], bool] = is_ceiling) -> Plan:
    """The :class:`Plan` of ``cases`` (``shared_fit``: a case's key; ``ceiling``: whether it is timed as a
    ceiling; the predictor's own by default).

    A key is shared across families and backends (a FAISS twin fits the projections of its torch
    twin), never across datasets.
    """
    out = Plan()
    for case in cases:
        key = shared_fit(case)
        state = None if key is None else (case.dataset, key)
        out.needs[case] = state
        if ceiling(case):
            out.ceilings.add(case)
        if state is not None:
            out.states.setdefault(state, case)
    return out


def chunk_size(cases: int, workers: int) -> int:
    """Configurations per task: enough tasks for every worker to take about two (so none waits long for
    the last), at most :data:`CHUNK_MAX`; ``$SPARSEBENCH_RAY_CHUNK`` (a whole number >= 1) instead."""
    text = os.environ.get(CHUNK_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise BenchError(f"{CHUNK_ENV}={text!r}: expected a whole number >= 1 (configurations per Ray task)")
        return int(text)
    return max(1, min(CHUNK_MAX, math.ceil(cases / (2 * max(1, workers)))))


def chunks(p: Plan, size: int) -> list[list[Case]]:
    """The configurations of ``p`` in tasks of at most ``size``: consecutive in sweep order among those of
    one dataset, one piece of shared state and one timing class (:class:`Plan`'s ``ceilings``)."""
    groups: dict[tuple, list[Case]] = {}
    for case, state in p.needs.items():
        groups.setdefault((case.dataset, state, case in p.ceilings), []).append(case)
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]
