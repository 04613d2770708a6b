"""Which configurations of a sweep share fitted state, and which one of them trains it.

Configurations of one dataset whose :meth:`predictors.base.Predictor.shared_fit` keys are equal (every
``sf-*`` family, ``reformer-proj`` and ``routing-proj`` at ``r = 4`` with separate maps share the
learned projections; the ``seer`` settings of one block size share the gate maps) need that state
trained once. :func:`plan` names, per ``(dataset, key)``, the first configuration (in sweep order)
that needs it: a distributed sweep fits that configuration once in a task of its own, keeps the
memo entries the fit trained (:mod:`predictors.memo`) in the object store, and gives them to every
configuration task of that key, which then trains nothing shared. Configurations whose fit shares
nothing (``None``) depend on no state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bench.engine.measure import Case

#: ``(dataset, shared_fit key)``: one piece of fitted state of one dataset.
StateKey = tuple


def shared_fit_of(case: Case) -> tuple | None:
    """The :meth:`~predictors.base.Predictor.shared_fit` key of ``case``'s predictor (seed 0, as measured)."""
    import predictors

    return predictors.get(case.name, backend=case.backend, seed=0).shared_fit()


@dataclass
class Plan:
    """``states``: each piece of shared state and the configuration whose fit trains it (in order of
    first need); ``needs``: each configuration's state key, or ``None``."""

    states: dict[StateKey, Case] = field(default_factory=dict)
    needs: dict[Case, StateKey | None] = field(default_factory=dict)

    def sharing(self, key: StateKey) -> list[Case]:
        """The configurations that use the state ``key``, in sweep order."""
        return [c for c, k in self.needs.items() if k == key]


def plan(cases: Iterable[Case], shared_fit: Callable[[Case], tuple | None] = shared_fit_of) -> Plan:
    """The :class:`Plan` of ``cases`` (``shared_fit``: a case's key; the predictor's own by default).

    A key is shared across families and backends (a FAISS twin fits the projections of its torch
    twin), never across datasets.
    """
    out = Plan()
    for case in cases:
        key = shared_fit(case)
        state = None if key is None else (case.dataset, key)
        out.needs[case] = state
        if state is not None:
            out.states.setdefault(state, case)
    return out
