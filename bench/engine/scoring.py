"""``sparsebench score`` over many predictors: one after the other here, or as Ray tasks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from bench.engine.measure import Case, score_case


def score_cases(prep, cases: list[Case], show: Callable[[dict], None], engine: str = "serial",
                address: str | None = None, threads: int | None = None, seed: int = 0,
                show_progress: bool = True) -> tuple[list[dict], dict[Case, str]]:
    """Score every case on ``prep`` with :func:`bench.engine.measure.score_case` (fit on the fit samples,
    quality on the eval samples), serially or on Ray (``engine="ray"``, :func:`bench.engine.ray_engine.run_cases`;
    ``address``: a cluster to join). ``show(record)`` is called as each is ready (serial) or in order of
    ``cases`` once all are (ray).

    Returns
    -------
    ``(records, failed)``: the records in the order of ``cases``, and ``{case: why}`` for those whose task
    failed on Ray (serially an error is raised where it happens). Every case is scored with ``seed``.
    """
    cases = [replace(c, seed=seed) for c in cases]
    if engine != "ray":
        records = []
        for c in cases:
            records.append(score_case(prep, c))
            show(records[-1])
        return records, {}
    from bench.engine.ray_engine import run_cases
    from bench.engine.tasks import Settings

    done, failed = {}, {}
    run_cases({c.dataset: prep for c in cases}, cases, Settings(work="score", threads=threads),
              lambda c, r: done.__setitem__(c, r["record"]), failed.__setitem__, address=address,
              show_progress=show_progress)
    records = [done[c] for c in cases if c in done]
    for rec in records:
        show(rec)
    return records, failed
