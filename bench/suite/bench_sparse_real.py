"""Sparse execution on real heads: from which length predicted sparse execution beats dense attention on
the queries and keys of real models, and at which recall.

For every dataset of the run with an entry in the profile's ``sparse_exec_real_lengths`` and every length
``L`` there, the dataset is drawn again with ``sparse_exec_real_samples`` samples of at most ``L`` tokens
(its own sampling: MiniLM texts of ``L / 2`` to ``L`` tokens, entmax-lm windows ending at paragraph ends;
the run's other data options and split). Every configuration of ``sparse_exec_predictors`` is fitted on
the fit part and timed on the eval part's middle layer by
:func:`bench.evaluation.real_speed.real_layer_speed`: prediction plus sparse execution, in alternation
with dense ``entmax15-topk`` (the fastest exact dense entmax here, ``P V`` included), every eval sample
at its own length. The configurations are fixed (no knob is chosen, so the validation part is unused).

Record kind ``sparse_exec_real``, one per (dataset, length, configuration): ``n_mean`` (mean eval tokens),
``speedup_min`` and ``speedup_median``, ``efficiency_min`` (speed-up times ``1 - sparsity``), and the
quality of the timed layer (``recall``, ``sparsity``, ``mass``, ``output_error``, ``gold_sparsity``), with
every layer's under ``all_layers``. The report's crossover on real heads reads them
(:func:`bench.report.crossover.real_crossover`). CPU only: with ``--device cuda`` they skip.
"""

from __future__ import annotations

import functools
import time

import pytest

import predictors
from bench.errors import BenchError
from bench.evaluation.real_speed import REFERENCE, real_layer_speed, timed_layer_quality
from bench.execution.plan import UnsupportedGraph


def pytest_generate_tests(metafunc):
    if "sparse_real_case" not in metafunc.fixturenames:
        return
    state = metafunc.config.sparsebench
    prof = state["profile"]
    lengths = prof.sparse_exec_real_lengths
    cases = [(ds, int(n), name) for ds in state["datasets"] for n in lengths.get(ds, ())
             for name in prof.sparse_exec_predictors]
    metafunc.parametrize("sparse_real_case", cases, ids=[f"{d}-L{n}-{m}" for d, n, m in cases])


@functools.lru_cache(maxsize=2)
def real_data(dataset: str, length: int, samples: int, options: tuple, split: tuple):
    """The :class:`~bench.evaluation.prepared.Prepared` data of ``dataset`` at ``length`` (cached on disk
    and here); a :class:`pytest.UsageError` naming the problem when the source refuses the options."""
    from bench.evaluation.prepared import prepare

    try:
        return prepare(dataset, split=split, show_progress=True, **dict(options), samples=samples, length=length)
    except BenchError as exc:
        raise pytest.UsageError(f"sparse_exec_real_lengths: dataset {dataset} at length {length}: {exc}") from None


@functools.lru_cache(maxsize=4)
def fitted(name: str, dataset: str, length: int, samples: int, options: tuple, split: tuple):
    """``(predictor, fit_seconds)``: configuration ``name`` (seed 0) fitted on the fit part of :func:`real_data`."""
    prep = real_data(dataset, length, samples, options, split)
    start = time.perf_counter()
    predictor = predictors.get(name, seed=0).fit(prep.fit, prep.fit_gold)
    return predictor, time.perf_counter() - start


def bench_sparse_exec_real(sparse_real_case, bench_config, fresh_record, run_environment):
    dataset, length, name = sparse_real_case
    if bench_config.getoption("device") == "cuda":
        pytest.skip("sparse execution on real heads is benchmarked on the CPU")
    state = bench_config.sparsebench
    prof = state["profile"]
    slot = fresh_record("sparse_exec_real", f"{dataset}--L{length}--{name}", dataset)
    opts = {k: v for k, v in prof.data.options().items() if k not in ("samples", "length")}
    key = (dataset, length, prof.sparse_exec_real_samples, tuple(sorted(opts.items())), tuple(state["split"]))
    prep = real_data(*key)
    predictor, fit_seconds = fitted(name, *key)
    try:
        speed = real_layer_speed(prep, predictor, prof.rounds, REFERENCE)
    except UnsupportedGraph as exc:  # said so, never timed on the masked reference instead
        pytest.skip(f"{name}: {exc}")
    from bench.evaluation.score import score_fitted

    scored = score_fitted(prep, predictor)  # every layer; the timed one's quality is read from it
    every, quality = scored["mean"], timed_layer_quality(prep, scored, speed)
    slot.write({"kind": "sparse_exec_real", "dataset": dataset, "length": length, "method": name,
                "reference": REFERENCE, "device": "cpu", "heads": prep.eval.num_heads,
                "eval_samples": prep.eval.num_samples, "rounds": prof.rounds, **speed, **quality,
                "all_layers": {m: every[m] for m in ("recall", "sparsity", "mass", "output_error")},
                "fit_seconds": fit_seconds, "dataset_descriptor": prep.data.descriptor,
                "environment": run_environment})
