"""Every predictor configuration of the sweep, on every dataset: prediction time and quality.

Fitting (projections, centroids, rotations) happens once, outside the timed part, and is recorded as
``fit_seconds``. The timed call predicts the compact graphs of every layer of the eval samples.
Ceilings (families of kind ``ceiling``, which read the dense scores) are timed in one round without warm-up.
Quality is then scored per layer and head (``bench.evaluation.score.score_fitted``) and stored, numbers only, in
the benchmark's ``extra_info`` and in the run's record for this configuration; the scored graphs are
kept beside the record (``<id>.graphs.safetensors``) for ``sparsebench rescore``. A randomised configuration
runs once per seed of the profile (``bench.config.sweeps.seeded_names``; the record id of seed ``r > 0``
ends in ``--seed<r>``: ``bench.results.seeds.record_id``), the others with seed 0.

The measurement is :func:`bench.engine.measure.measure_predictor`, the code path a Ray task runs too:
with ``--engine ray`` the ``engine`` fixture has measured every configuration on Ray before the first
of them gets here, and each one only reports what became of it (measured by Ray, or failed there).
"""

from __future__ import annotations

from bench.engine.measure import Case, extra_info, measure_predictor, pedantic_timer
from bench.results.graph_store import graphs_path, write_graphs_atomic


def bench_predictor(benchmark, predictor_case, prepared, bench_config, fresh_record, run_environment, engine):
    case = Case(*predictor_case)
    engine.settle(case)  # --engine ray: skips (measured there) or fails (naming the error); serial: nothing
    slot = fresh_record("predictor", case.rid, dataset=case.dataset)
    prep = prepared(case.dataset, bench_config)
    measured = measure_predictor(prep, case, rounds=bench_config.sparsebench["profile"].rounds,
                                 device=bench_config.getoption("device"), timer=pedantic_timer(benchmark),
                                 environment=run_environment)
    benchmark.extra_info.update(extra_info(measured.record))
    # The graphs first: a record never names a missing graphs file (sparsebench rescore reads both).
    write_graphs_atomic(graphs_path(slot.path), measured.graphs, prep.eval)
    slot.write(measured.record)
