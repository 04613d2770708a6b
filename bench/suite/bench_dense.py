"""Dense references on the same eval samples as the predictors, in the same run (see bench.execution.dense)."""

from __future__ import annotations

from bench.data.sources import dataset_id
from bench.execution.dense import dense_layer
from bench.execution.timing import sync, time_record, to_device


def bench_dense(benchmark, dense_case, prepared, bench_config, fresh_record):
    dataset, method = dense_case
    state = bench_config.sparsebench
    slot = fresh_record("dense", f"{dataset_id(dataset)}--{method}", dataset=dataset)
    prep = prepared(dataset, bench_config)
    device = bench_config.getoption("device")
    views = [to_device(prep.eval.layer(layer), device) for layer in range(prep.eval.num_layers)]

    def run():
        for view in views:
            dense_layer(view, method)
        sync(device)

    # Bisection is an order of magnitude slower than the sort-based entmax15 and needs no warm-up to be
    # seen as the slowest reference: one round keeps the default profile within its time budget.
    slow = method == "entmax-bisect"
    benchmark.pedantic(run, rounds=1 if slow else state["profile"].rounds, warmup_rounds=0 if slow else 1,
                       iterations=1)
    timing = time_record(benchmark)
    heads = prep.eval.num_layers * prep.eval.num_heads
    rec = {"kind": "dense", "dataset": dataset, "method": method, "device": device,
           "time": {**timing, "per_head_mean": timing["mean"] / heads}}
    benchmark.extra_info.update({"kind": "dense", "dataset": dataset, "method": method, "device": device})
    slot.write(rec)
