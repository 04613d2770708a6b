"""Speed of the gold graph: one layer of MiniLM-shaped heads (12 heads, d = 32) at the profile's
``gold_n`` tokens, exact 1.5-entmax support with partial sort, in query blocks (bench/gold.py).
The goal on a 2-core machine is one such layer at n = 4096 in at most 3 s."""

from __future__ import annotations

from bench.evaluation.gold import layer_gold
from bench.evaluation.speed_data import minilm_shaped
from bench.execution.timing import time_record


def pytest_generate_tests(metafunc):
    if "gold_n" in metafunc.fixturenames:
        ns = list(metafunc.config.sparsebench["profile"].gold_n)
        metafunc.parametrize("gold_n", ns, ids=[f"n{n}" for n in ns])


def bench_gold_layer(benchmark, gold_n, bench_config, fresh_record):
    state = bench_config.sparsebench
    slot = fresh_record("gold", f"n{gold_n}")
    view = minilm_shaped(1, gold_n, seed=3, ragged=False).layer(0)
    gold = benchmark.pedantic(layer_gold, args=(view,), rounds=state["profile"].rounds, warmup_rounds=0,
                              iterations=1)
    sparsity = gold.sparsity().mean().item()
    benchmark.extra_info.update({"kind": "gold", "n": gold_n, "heads": 12, "gold_sparsity": sparsity})
    slot.write({"kind": "gold", "n": gold_n, "heads": 12, "head_dim": 32, "gold_sparsity": sparsity,
                             "time": time_record(benchmark)})
