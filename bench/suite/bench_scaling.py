"""How cost grows with n: predictors and dense references on MiniLM-shaped synthetic heads.

One layer of 12 heads, head dim 32, one sample of ``n`` tokens, for every ``n`` of the profile's
``scaling_n``. Predictors are fitted once on short synthetic samples of the same shape (what they
learn does not depend on ``n``) and timed predicting at each ``n``; dense references are timed on the
same tensors.
"""

from __future__ import annotations

import predictors
from bench.evaluation.flops import attention_flops
from bench.evaluation.speed_data import DIM, HEADS, fit_set, scaling_view
from bench.execution.dense import dense_layer
from bench.execution.timing import sync, time_record, to_device


def bench_scaling(benchmark, scaling_case, bench_config, fresh_record):
    n, backend, method = scaling_case
    state = bench_config.sparsebench
    slot = fresh_record("scaling", f"n{n}--{backend}--{method}")
    device = bench_config.getoption("device")
    view = scaling_view(n)
    rounds = state["profile"].rounds
    if backend == "dense":
        view = to_device(view, device)

        def run():
            dense_layer(view, method)
            sync(device)
        flops = attention_flops(n * n, DIM) * HEADS
    else:
        predictor = predictors.get(method, backend=backend, seed=0).fit(*fit_set())

        def run():
            predictor.predict(view, 0)
            sync(device)
        flops = predictor.flops(n, DIM) * HEADS
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    rec = {"kind": "scaling", "n": n, "backend": backend, "method": method, "device": device, "heads": HEADS,
           "head_dim": DIM, "flops": flops, "time": time_record(benchmark)}
    benchmark.extra_info.update({"kind": "scaling", "n": n, "backend": backend, "method": method,
                                 "device": device, "flops": flops})
    slot.write(rec)
