"""Every predictor configuration of the sweep, on every dataset: prediction time and quality.

Fitting (projections, centroids, rotations) happens once, outside the timed part, and is recorded as
``fit_seconds``. The timed call predicts the compact graphs of every layer of the eval samples.
Ceilings (families of kind ``ceiling``, which read the dense scores) are timed in one round without warm-up.
Quality is then scored per layer and head (``bench.evaluation.score.score_fitted``) and stored, numbers only, in
the benchmark's ``extra_info`` and in the run's record for this configuration; the scored graphs are
kept beside the record (``<id>.graphs.safetensors``) for ``sparsebench rescore``. A randomised configuration
runs once per seed of the profile (``bench.config.sweeps.seeded_names``; the record id of seed ``r > 0``
ends in ``--seed<r>``: ``bench.results.seeds.record_id``), the others with seed 0.
"""

from __future__ import annotations

import predictors
from bench.data.sources import dataset_id
from bench.evaluation.score import score_fitted
from bench.execution.timing import sync, time_record
from bench.progress import Step
from bench.results.graph_store import graphs_path, write_graphs_atomic
from bench.results.seeds import record_id

LONG_FIT = 5.0  # seconds: a fit at least this long leaves a line on the console


def bench_predictor(benchmark, predictor_case, prepared, bench_config, fresh_record, run_environment):
    dataset, backend, name, seed = predictor_case
    state = bench_config.sparsebench
    slot = fresh_record("predictor", record_id(dataset_id(dataset), backend, name, seed), dataset=dataset)
    prep = prepared(dataset, bench_config)
    predictor = predictors.get(name, backend=backend, seed=seed)
    with Step(f"fit {name}", quiet_below=LONG_FIT):  # on the console only when it takes a while
        predictor.fit(prep.fit, prep.fit_gold)
    views = [prep.eval.layer(layer) for layer in range(prep.eval.num_layers)]
    device = bench_config.getoption("device")

    last = {}

    def predict_all_layers():
        graphs = [predictor.predict(view, layer) for layer, view in enumerate(views)]
        sync(device)
        last["graphs"] = graphs  # scored below: the timed prediction is not repeated
        return graphs

    # A ceiling reads the dense scores: its time says nothing a reader compares, so one round suffices.
    ceiling = predictor.kind == "ceiling"
    rounds = 1 if ceiling else state["profile"].rounds
    benchmark.pedantic(predict_all_layers, rounds=rounds, warmup_rounds=0 if ceiling else 1, iterations=1)
    rec = score_fitted(prep, predictor, graphs=last["graphs"])
    # Configurations are chosen on the validation samples and reported on the eval samples.
    val = score_fitted(prep, predictor, part="val")
    rec["val"] = {"mean": val["mean"], "per_sample": val["per_sample"], "samples": prep.val.num_samples}
    timing = time_record(benchmark)
    rec["predict_seconds"] = timing["mean"]
    heads = prep.eval.num_layers * prep.eval.num_heads
    rec.update({
        "kind": "predictor", "dataset": dataset, "dataset_descriptor": prep.data.descriptor,
        "device": device, "eval_samples": prep.eval.num_samples, "fit_samples": prep.fit.num_samples,
        "split": list(prep.split), "val_samples": prep.val.num_samples, "variant": predictor.variant,
        "layers": prep.eval.num_layers, "heads": prep.eval.num_heads, "family_kind": predictor.kind,
        "time": {**timing, "per_head_mean": timing["mean"] / heads},
        "gold_sparsity": prep.eval_gold.sparsity().mean().item(),
        "environment": run_environment,
    })
    benchmark.extra_info.update({
        "kind": "predictor", "dataset": dataset, "method": name, "family": rec["family"], "backend": backend,
        "device": device, "seed": seed, **{f"param_{k}": v for k, v in rec["params"].items()},
        **rec["mean"], "prediction_flops": rec["prediction_flops"], "attention_flops": rec["attention_flops"],
        "dense_flops": rec["dense_flops"], "fit_seconds": rec["fit_seconds"],
    })
    # The graphs first: a record never names a missing graphs file (sparsebench rescore reads both).
    write_graphs_atomic(graphs_path(slot.path), last["graphs"], prep.eval)
    slot.write(rec)
