"""Sparse execution: attention computed on the predicted graph only, against dense attention, over n.

Two benchmarks on MiniLM-shaped synthetic heads (one layer, 12 heads, head dim 32, bidirectional: the
data of the scaling sweep, :func:`bench.evaluation.speed_data.scaling_view`), predictors fitted once on four
short samples drawn with the same seed (``bench.evaluation.speed_data.fit_set(VIEW_SEED)``: the same cluster
centres and head rotations, other tokens; what a predictor learns does not depend on n, and it must
come from the data it is timed on for its recall there to mean anything):

* ``bench_sparse_exec``, for every ``n`` of the profile's ``sparse_exec_n``: each dense reference of
  ``sparse_exec_dense`` (:func:`bench.execution.dense.dense_attention`, ``P V`` included; each only up to
  its ``sparse_exec_dense_max``, when given), and each predictor of ``sparse_exec_predictors`` timed as *prediction
  plus* :func:`bench.execution.sparse_exec.sparse_entmax_attention` (the same output as dense restricted
  attention, never an ``n x n`` tensor). Records kind ``sparse_exec``; the report reads from them
  the crossover length from which predicted sparse execution beats dense ``entmax15-topk``.
* ``bench_sparse_exec_goal``: the profile's ``sparse_exec_goal`` configuration at
  ``sparse_exec_goal_n``, timed in alternation with dense ``entmax15-topk`` (scores plus exact entmax15
  with partial sort, the fastest exact dense computation here) in the same test, so the speed-up is a
  ratio measured in one run; with the configuration's recall, sparsity and output error on that very
  data, and its recall and sparsity on real MiniLM attention at ``sparse_exec_goal_length`` tokens
  (fitted on the MiniLM fit samples), with the speed-up there too. Record kind ``sparse_exec_goal``.

CPU only: with ``--device cuda`` both skip; the GPU comparison with AdaSplash is ``bench_gpu.py``
(``--profile gpu --device cuda``, on a lent GPU).
"""

from __future__ import annotations

import functools
import math
import statistics
import time

import pytest

import predictors
from bench.evaluation.real_speed import REFERENCE, layer_quality, real_layer_speed
from bench.evaluation.speed_data import DIM, HEADS, VIEW_SEED, fit_set, scaling_view
from bench.execution.dense import dense_attention
from bench.execution.exec_stats import ExecStats
from bench.execution.plan import sparse_plan
from bench.execution.sparse_exec import sparse_entmax_attention
from bench.execution.timing import time_record


def pytest_generate_tests(metafunc):
    prof = metafunc.config.sparsebench["profile"]
    if "sparse_exec_case" in metafunc.fixturenames:
        cases = []
        for n in prof.sparse_exec_n:
            limit = prof.sparse_exec_dense_max
            cases += [(n, "dense", m) for m in prof.sparse_exec_dense if n <= limit.get(m, n)]
            cases += [(n, "sparse", p) for p in prof.sparse_exec_predictors]
        metafunc.parametrize("sparse_exec_case", cases, ids=[f"n{n}-{b}-{m}" for n, b, m in cases])
    if "sparse_goal_case" in metafunc.fixturenames:
        goal = prof.sparse_exec_goal
        cases = [(int(prof.sparse_exec_goal_n), goal)] if goal else []
        metafunc.parametrize("sparse_goal_case", cases, ids=[f"n{n}-{m}" for n, m in cases])


@functools.lru_cache(maxsize=8)
def fitted(name: str):
    return predictors.get(name, seed=0).fit(*fit_set(VIEW_SEED))


def _skip_cuda(config):
    if config.getoption("device") == "cuda":
        pytest.skip("sparse execution is benchmarked on the CPU here; on a GPU, against AdaSplash: "
                    "bench_gpu.py (--profile gpu)")


def bench_sparse_exec(benchmark, sparse_exec_case, bench_config, fresh_record, run_environment):
    n, backend, method = sparse_exec_case
    _skip_cuda(bench_config)
    state = bench_config.sparsebench
    slot = fresh_record("sparse_exec", f"n{n}--{backend}--{method}")
    view = scaling_view(n)
    q, k, v = view.q, view.k, view.v
    rounds = state["profile"].rounds
    extra = {}
    if backend == "dense":
        def run():
            return dense_attention(q[0], k[0], v[0], view.causal, view.scale, method)
    else:
        predictor = fitted(method)

        def run():
            graph = predictor.predict(view, 0)
            return sparse_entmax_attention(q, k, v, view.lengths, view.causal, view.scale, graph)

        st = ExecStats.zeros(1, HEADS)
        start = time.perf_counter()
        graph = predictor.predict(view, 0)
        extra["predict_seconds"] = time.perf_counter() - start
        plan = sparse_plan(graph)
        if not plan.supported:  # said so, never timed on the masked reference instead
            pytest.skip(f"{method}: {plan.reason}")
        sparse_entmax_attention(q, k, v, view.lengths, view.causal, view.scale, graph, stats=st)
        extra.update(sparsity=st.sparsity.mean().item(), support_sparsity=st.support_sparsity.mean().item())
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    rec = {"kind": "sparse_exec", "n": n, "backend": backend, "method": method, "device": "cpu", "heads": HEADS,
           "head_dim": DIM, "causal": view.causal, "time": time_record(benchmark), **extra,
           "environment": run_environment}
    benchmark.extra_info.update({"kind": "sparse_exec", "n": n, "backend": backend, "method": method, **extra})
    slot.write(rec)


def bench_sparse_exec_goal(benchmark, sparse_goal_case, bench_config, fresh_record, run_environment):
    n, name = sparse_goal_case
    _skip_cuda(bench_config)
    state = bench_config.sparsebench
    prof = state["profile"]
    slot = fresh_record("sparse_exec_goal", f"n{n}--{name}")
    view = scaling_view(n)
    q, k, v = view.q, view.k, view.v
    predictor = fitted(name)
    rounds = prof.rounds
    times = {"dense": [], "sparse": []}

    def dense():
        return dense_attention(q[0], k[0], v[0], view.causal, view.scale, REFERENCE)

    def sparse():
        return sparse_entmax_attention(q, k, v, view.lengths, view.causal, view.scale, predictor.predict(view, 0))

    def one_round():
        for key, f in (("dense", dense), ("sparse", sparse)):
            start = time.perf_counter()
            f()
            times[key].append(time.perf_counter() - start)

    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=1, iterations=1)
    td, ts = times["dense"][-rounds:], times["sparse"][-rounds:]
    # Quality on the timing data itself: its exact gold graph (one dense pass, not timed).
    from bench.evaluation.gold import layer_gold

    synthetic = layer_quality(view, layer_gold(view), predictor.predict(view, 0))
    # The same configuration on real MiniLM attention, fitted on MiniLM's fit samples.
    real = _real_minilm(name, prof.sparse_exec_goal_length, prof.sparse_exec_goal_samples, rounds)
    rec = {"kind": "sparse_exec_goal", "n": n, "method": name, "reference": REFERENCE, "device": "cpu",
           "heads": HEADS, "head_dim": DIM, "rounds": rounds,
           "dense_seconds": td, "sparse_seconds": ts,
           "speedup_min": min(td) / min(ts), "speedup_median": statistics.median(td) / statistics.median(ts),
           "synthetic": synthetic, "minilm": real, "environment": run_environment}
    # Efficiency: the speed-up over the pair-count ideal 1 / (1 - sparsity) (bench.report.frames.efficiency).
    rec["efficiency_min"] = rec["speedup_min"] * (1 - synthetic["sparsity"])
    benchmark.extra_info.update({"kind": "sparse_exec_goal", "n": n, "method": name,
                                 "speedup_min": rec["speedup_min"], "speedup_median": rec["speedup_median"],
                                 "efficiency_min": rec["efficiency_min"],
                                 "recall_synthetic": synthetic["recall"],
                                 "recall_minilm": real.get("recall", math.nan)})
    slot.write(rec)


def _real_minilm(name: str, length: int, samples: int, rounds: int) -> dict:
    """Recall, sparsity and speed-up of ``name`` on real MiniLM attention (``samples`` texts of at most
    ``length`` tokens, half of them to fit on); an empty dict when MiniLM is not installed."""
    from bench.errors import DataError
    from bench.evaluation.prepared import prepare
    from bench.evaluation.score import score_fitted

    try:
        prep = prepare("minilm", samples=samples, length=length, show_progress=True)
    except DataError as exc:
        return {"error": str(exc)}
    predictor = predictors.get(name, seed=0).fit(prep.fit, prep.fit_gold)
    rec = score_fitted(prep, predictor)
    # Speed on one real layer (the middle one), all eval samples, prediction included.
    speed = real_layer_speed(prep, predictor, rounds, REFERENCE)
    return {"length": length, "samples": samples, "eval_lengths": speed["eval_lengths"],
            "recall": rec["mean"]["recall"], "sparsity": rec["mean"]["sparsity"], "mass": rec["mean"]["mass"],
            "output_error": rec["mean"]["output_error"], "gold_sparsity": prep.eval_gold.sparsity().mean().item(),
            **{k: speed[k] for k in ("layer", "dense_seconds", "sparse_seconds", "speedup_min")}}
