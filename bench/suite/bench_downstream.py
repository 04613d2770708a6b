"""Downstream effect: the model run with every attention layer restricted to a fitted predictor's graph.

For every dataset of the run that has a downstream task (``entmax-lm``: held-out bits per byte;
``minilm``: cosine of sentence embeddings to the dense-entmax model; see :mod:`bench.evaluation.downstream`) and
every predictor configuration of the profile's sweep that matches the profile's
``downstream_predictors`` glob(s) (and ``--predictors``, when given): fit on the fit samples
(outside the timed part), then time the whole restricted run on the held-out inputs (prediction on the
live Q/K of every layer, and restricted entmax attention) and record the metric, its dense reference
and the effective sparsity. One record per configuration (kind ``downstream``), plus one for the dense
reference of each dataset (name ``dense-entmax``, sparsity 0).

The held-out inputs extend the data's seeded draw to the profile's ``downstream_samples`` draws and
drop the fit samples (:func:`bench.evaluation.downstream.downstream_set`). Torch predictors only: the FAISS twins
predict the same graphs.
"""

from __future__ import annotations

import pytest

import predictors
from bench.data.sources import dataset_id
from bench.errors import BenchError
from bench.evaluation.downstream import METRICS, downstream_set, run_restricted, score_results
from bench.execution.timing import time_record
from bench.progress import Step

DENSE = "dense-entmax"


def downstream_cases(config) -> list[tuple[str, str]]:
    """``(dataset, predictor name or dense-entmax)`` of this session (see the module docstring)."""
    from bench.config.sweeps import filter_names, sweep_names

    state = config.sparsebench
    datasets = [d for d in state["datasets"] if d in METRICS]
    pattern = state["profile"].downstream_predictors
    names = sweep_names(state["profile_name"], pattern=pattern) if pattern else []
    names = filter_names(names, config.getoption("predictors"))
    return [(ds, name) for ds in datasets for name in [DENSE] + names]


def pytest_generate_tests(metafunc):
    if "downstream_case" in metafunc.fixturenames:
        try:
            cases = downstream_cases(metafunc.config)
        except BenchError as exc:
            raise pytest.UsageError(str(exc)) from None
        metafunc.parametrize("downstream_case", cases, ids=[f"{d}-{n}" for d, n in cases])


_SETS: dict = {}


def _dset(dataset, prep, config):
    if dataset not in _SETS:
        prof = config.sparsebench["profile"]
        _SETS[dataset] = downstream_set(prep, prof.downstream_samples, prof.data.corpus)
    return _SETS[dataset]


def bench_downstream(benchmark, downstream_case, prepared, bench_config, fresh_record, run_environment):
    dataset, name = downstream_case
    state = bench_config.sparsebench
    if bench_config.getoption("device") == "cuda":
        pytest.skip("the downstream runs are CPU-only (the models run on the CPU)")
    slot = fresh_record("downstream", f"{dataset_id(dataset)}--{name}", dataset=dataset)
    prep = prepared(dataset, bench_config)
    dset = _dset(dataset, prep, bench_config)
    if name == DENSE:
        predictor, family, params, fit_seconds = None, "dense", {}, 0.0
    else:
        with Step(f"fit {name}", quiet_below=5.0):  # on the console only when it takes a while
            predictor = predictors.get(name, seed=0).fit(prep.fit, prep.fit_gold)
        family, params, fit_seconds = predictor.family, dict(predictor.values), predictor.fit_seconds
    rounds = state["profile"].downstream_rounds
    results, hook = benchmark.pedantic(lambda: run_restricted(dset, predictor), rounds=rounds, iterations=1)
    res = {**score_results(dset, results), **hook.summary()}
    rec = {
        "kind": "downstream", "dataset": dataset, "name": name, "family": family, "backend": "torch",
        "params": params, **res, "fit_seconds": fit_seconds,
        "predict_seconds": hook.predict_seconds / max(1, rounds),
        "time": time_record(benchmark),
        "reference_seconds": dset.reference_seconds, "eval_samples": len(dset.samples), "eval_tokens": dset.tokens,
        "dataset_descriptor": dset.descriptor, "device": "cpu",
        "environment": run_environment,
    }
    benchmark.extra_info.update({
        "kind": "downstream", "dataset": dataset, "method": name, "family": family, "metric": res["metric"],
        "value": res["value"], "reference": res["reference"], "delta": res["delta"], "sparsity": res["sparsity"],
        "support_sparsity": res["support_sparsity"], "fit_seconds": fit_seconds,
    })
    slot.write(rec)

