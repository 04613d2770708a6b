"""Speed of the gold graph: one layer of MiniLM-shaped heads (12 heads, d = 32) at the profile's
``gold_n`` tokens, exact 1.5-entmax support (bench/evaluation/gold.py), next to softmax attention.

Before each timed round of the gold layer, ``torch.nn.functional.scaled_dot_product_attention``
(SDPA, :func:`bench.execution.dense.dense_attention` ``softmax-sdpa``) runs on the same ``q``, ``k``,
``v`` and is timed too (``sdpa_time``), in this process: the record's ``sdpa_ratio_min`` and
``sdpa_ratio_median`` (gold seconds over SDPA seconds) compare like with like on whatever machine
runs it; the goal is a ratio of at most 2 at n = 4096. One more, untimed, gold layer measures the
peak growth of resident memory (:func:`bench.execution.memory.peak_growth`): ``peak_bytes``.

``bench_gold_memory``, at the profile's ``gold_memory_n`` (longer inputs, untimed beyond one call): one gold
layer's peak memory growth next to the bytes of its result (``result_bytes``: the CSR counts, columns and
probabilities, which grow with the support) and of one ``[12, n, n]`` float32 score tensor
(``dense_scores_bytes``, what a dense computation would hold): the working memory,
``peak_bytes - result_bytes``, stays O(block x n). Record kind ``gold_memory``."""

from __future__ import annotations

import math
import statistics
import time

from bench.evaluation.gold import layer_gold
from bench.evaluation.speed_data import DIM, HEADS, minilm_shaped
from bench.execution.dense import dense_attention
from bench.execution.memory import peak_growth
from bench.execution.timing import time_record


def pytest_generate_tests(metafunc):
    prof = metafunc.config.sparsebench["profile"]
    for key, ns in (("gold_n", prof.gold_n), ("gold_memory_n", prof.gold_memory_n)):
        if key in metafunc.fixturenames:
            metafunc.parametrize(key, list(ns), ids=[f"n{n}" for n in ns])


def _stats(seconds: list[float]) -> dict:
    """Timing statistics of ``seconds`` in the shape of :func:`bench.execution.timing.time_record`."""
    nan = float("nan")
    return {"mean": statistics.fmean(seconds) if seconds else nan,
            "median": statistics.median(seconds) if seconds else nan, "min": min(seconds, default=nan),
            "stddev": statistics.stdev(seconds) if len(seconds) > 1 else 0.0, "rounds": len(seconds)}


def _ratio(a: float, b: float) -> float | None:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else None


def bench_gold_layer(benchmark, gold_n, bench_config, fresh_record):
    state = bench_config.sparsebench
    slot = fresh_record("gold", f"n{gold_n}")
    view = minilm_shaped(1, gold_n, seed=3, ragged=False).layer(0)
    q, k, v = view.q[0], view.k[0], view.v[0]
    sdpa_seconds: list[float] = []

    def sdpa_round():  # pedantic's untimed setup: SDPA before each timed gold round, timed here
        start = time.perf_counter()
        dense_attention(q, k, v, view.causal, view.scale, "softmax-sdpa")
        sdpa_seconds.append(time.perf_counter() - start)

    dense_attention(q, k, v, view.causal, view.scale, "softmax-sdpa")  # warm-up: a gold layer is long enough cold
    benchmark.pedantic(layer_gold, args=(view,), setup=sdpa_round, rounds=state["profile"].rounds,
                       warmup_rounds=0, iterations=1)
    gold, peak, how = peak_growth(lambda: layer_gold(view))
    t, ts = time_record(benchmark), _stats(sdpa_seconds)
    sparsity = gold.sparsity().mean().item()
    ratio = {"sdpa_ratio_min": _ratio(t["min"], ts["min"]), "sdpa_ratio_median": _ratio(t["median"], ts["median"])}
    benchmark.extra_info.update({"kind": "gold", "n": gold_n, "heads": HEADS, "gold_sparsity": sparsity,
                                 "peak_bytes": peak, **ratio})
    slot.write({"kind": "gold", "n": gold_n, "heads": HEADS, "head_dim": DIM, "gold_sparsity": sparsity,
                "time": t, "sdpa_time": ts, **ratio, "peak_bytes": peak, "peak_how": how})


def bench_gold_memory(gold_memory_n, bench_config, fresh_record):
    n = gold_memory_n
    slot = fresh_record("gold_memory", f"n{n}")
    view = minilm_shaped(1, n, seed=3, ragged=False).layer(0)
    start = time.perf_counter()
    gold, peak, how = peak_growth(lambda: layer_gold(view))
    seconds = time.perf_counter() - start
    held = gold.nbytes()
    slot.write({"kind": "gold_memory", "n": n, "heads": HEADS, "head_dim": DIM, "seconds": seconds,
                "gold_sparsity": gold.sparsity().mean().item(), "peak_bytes": peak, "peak_how": how,
                "result_bytes": held, "working_bytes": max(0, peak - held),
                "dense_scores_bytes": HEADS * n * n * 4})
