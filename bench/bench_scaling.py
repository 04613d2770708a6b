"""How cost grows with n: predictors and dense references on MiniLM-shaped synthetic heads.

One layer of 12 heads, head dim 32, one sample of ``n`` tokens, for every ``n`` of the profile's
``scaling_n``. Predictors are fitted once on short synthetic samples of the same shape (what they
learn does not depend on ``n``) and timed predicting at each ``n``; dense references are timed on the
same tensors.
"""

from __future__ import annotations

import functools

import pytest

import predictors
from bench.cases import sync, time_record, to_device
from bench.data.sources import gold_for
from bench.data.synthetic import synthetic
from bench.dense import dense_layer
from bench.flops import attention_flops
from bench.records import record_path, write_json_atomic

HEADS, DIM = 12, 32
VIEW_SEED = 2  # the seed of scaling_view's distribution


def minilm_shaped(samples: int, length: int, seed: int, ragged: bool = True):
    """Synthetic data of MiniLM's attention shape, shared by the speed benchmarks: one layer of 12 heads
    of dimension 32, sharpness 3 (:func:`bench.data.synthetic.synthetic`)."""
    return synthetic(samples=samples, layers=1, heads=HEADS, length=length, dim=DIM, seed=seed, sharpness=3.0,
                     ragged=ragged)


@functools.lru_cache(maxsize=2)
def fit_set(seed: int = 1):
    """Four samples of 256 tokens and their gold. The scaling sweep only times, and fits on seed 1;
    ``seed=VIEW_SEED`` draws from the distribution of :func:`scaling_view` (the same cluster centres and
    head rotations, other tokens), for recalls measured on it."""
    data = minilm_shaped(4, 256, seed)
    return data, gold_for(data)


@functools.lru_cache(maxsize=2)
def scaling_view(n: int):
    return minilm_shaped(1, n, VIEW_SEED, ragged=False).layer(0)


def bench_scaling(benchmark, scaling_case, bench_config):
    n, backend, method = scaling_case
    state = bench_config.sparsebench
    path = record_path(state["run"], "scaling", f"n{n}--{backend}--{method}")
    if path.exists():
        pytest.skip("already measured in this run (resumed); use --fresh to measure again")
    device = bench_config.getoption("device")
    view = scaling_view(n)
    rounds = state["profile"]["rounds"]
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
    write_json_atomic(path, rec)
