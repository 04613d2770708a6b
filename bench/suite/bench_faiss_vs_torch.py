"""FAISS twins against their torch twins: time ratios and code parity, measured in the same session.

For the profile's ``twin_predictors`` (every sweep configuration of the families with a FAISS twin in
the registry, ``predictors.registry.families("faiss")``, when the profile lists none; filtered by
``--predictors``) on every dataset of the profile:

* both twins are fitted once untimed (which trains the shared learned projections, cached in-process),
  then fitted ``FIT_ROUNDS`` more times each, alternating, so ``fit`` times compare the family's own
  fitting (k-means, rotations) and not the projections;
* both predict every layer of the eval samples ``rounds`` times, alternating (so load on a shared
  machine hits both alike); ratios are of medians, FAISS over torch (below 1: FAISS is faster);
* pytest-benchmark times the FAISS twin's prediction (``benchmark.pedantic``); the ratios and the
  fraction of identical codes (of identical predicted mask entries for a twin without codes, SimHash's)
  go to ``extra_info`` and to one record per configuration
  (``records/twin/<dataset>--<name>.json`` in the run folder).

The grid does not depend on what is installed: without faiss (or with ``--backend torch``) every case
is skipped, saying why.
"""

from __future__ import annotations

import statistics
import time

import pytest

import predictors
from bench.data.sources import dataset_id
from bench.execution.timing import sync

FIT_ROUNDS = 3
MIN_PREDICT_ROUNDS = 7


def pytest_generate_tests(metafunc):
    if "twin_case" not in metafunc.fixturenames:
        return
    from bench.config.sweeps import filter_names, sweep_names
    from predictors.registry import families

    config = metafunc.config
    profile = config.sparsebench["profile_name"]
    pattern = config.getoption("predictors")
    listed = config.sparsebench["profile"].twin_predictors
    if not config.sparsebench["datasets"]:  # the gpu profile: its twins are timed by bench_gpu.py
        names = []
    elif listed is None:  # the full profile compares every configuration of the twin families
        names = sweep_names(profile, families=families("faiss"), pattern=pattern)
    else:
        names = filter_names(listed, pattern)
    cases = [(d, n) for d in config.sparsebench["datasets"] for n in names]
    metafunc.parametrize("twin_case", cases, ids=[f"{d}-{n}" for d, n in cases])


def _faiss_missing() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return True
    return False


def _compared(graph, view):
    """What is compared between twins: the family's own codes (``q_codes``, ``k_codes``), or, for a twin
    returning explicit pairs instead of codes (SimHash's), the predicted mask of every sample."""
    from predictors.graphs import UnionGraph

    graph = graph.parts[0] if isinstance(graph, UnionGraph) else graph
    if hasattr(graph, "q_codes"):
        return graph.q_codes, graph.k_codes
    return tuple(graph.block_mask(s, 0, int(n), int(n)) for s, n in enumerate(view.lengths))


def _equal_fraction(graphs_a, graphs_b, views) -> float:
    same = total = 0
    for ga, gb, view in zip(graphs_a, graphs_b, views):
        for x, y in zip(_compared(ga, view), _compared(gb, view)):
            total += x.numel()
            if x.shape == y.shape:
                same += int((x == y).sum())
    return same / total if total else float("nan")


def bench_twin_ratio(benchmark, twin_case, prepared, bench_config, fresh_record, run_environment):
    dataset, name = twin_case
    if bench_config.getoption("backend") == "torch":
        pytest.skip("--backend torch: the FAISS twins are not measured")
    if _faiss_missing():
        pytest.skip("faiss is not installed (pip install faiss-cpu): no FAISS twin to compare")
    state = bench_config.sparsebench
    slot = fresh_record("twin", f"{dataset_id(dataset)}--{name}", dataset=dataset)
    device = bench_config.getoption("device")
    prep = prepared(dataset, bench_config)
    views = [prep.eval.layer(layer) for layer in range(prep.eval.num_layers)]
    make = {"torch": lambda: predictors.get(name, seed=0),
            "faiss": lambda: predictors.get(name, backend="faiss", seed=0, device=device)}
    fitted = {b: make[b]().fit(prep.fit, prep.fit_gold) for b in ("torch", "faiss")}  # untimed warm-up

    fit_times = {"torch": [], "faiss": []}
    for i in range(FIT_ROUNDS):
        for b in (("torch", "faiss") if i % 2 == 0 else ("faiss", "torch")):
            fit_times[b].append(make[b]().fit(prep.fit, prep.fit_gold).fit_seconds)

    def predict_all(backend):
        graphs = [fitted[backend].predict(view, layer) for layer, view in enumerate(views)]
        sync(device)
        return graphs

    rounds = max(MIN_PREDICT_ROUNDS, state["profile"].rounds)
    predict_times = {"torch": [], "faiss": []}
    for i in range(rounds):
        for b in (("torch", "faiss") if i % 2 == 0 else ("faiss", "torch")):
            start = time.perf_counter()
            predict_all(b)
            predict_times[b].append(time.perf_counter() - start)

    graphs_faiss = benchmark.pedantic(predict_all, args=("faiss",), rounds=state["profile"].rounds,
                                      warmup_rounds=1, iterations=1)
    equal = _equal_fraction(predict_all("torch"), graphs_faiss, views)
    med = {k: {b: statistics.median(v[b]) for b in v} for k, v in (("fit", fit_times), ("predict", predict_times))}
    heads = prep.eval.num_layers * prep.eval.num_heads
    rec = {
        "kind": "twin", "dataset": dataset, "name": name, "family": fitted["faiss"].family,
        "params": dict(fitted["faiss"].values), "device": device, "heads": heads,
        "fit_rounds": FIT_ROUNDS, "predict_rounds": rounds,
        "fit_seconds": {b: {"median": med["fit"][b], "min": min(fit_times[b])} for b in fit_times},
        "predict_seconds": {b: {"median": med["predict"][b], "min": min(predict_times[b])} for b in predict_times},
        "fit_ratio": med["fit"]["faiss"] / med["fit"]["torch"],
        "predict_ratio": med["predict"]["faiss"] / med["predict"]["torch"],
        "codes_equal_fraction": equal,
        "environment": run_environment,
    }
    benchmark.extra_info.update({
        "kind": "twin", "dataset": dataset, "method": name, "family": rec["family"], "backend": "faiss",
        "device": device, "fit_ratio": rec["fit_ratio"], "predict_ratio": rec["predict_ratio"],
        "torch_predict_median": med["predict"]["torch"], "faiss_predict_median": med["predict"]["faiss"],
        "torch_fit_median": med["fit"]["torch"], "faiss_fit_median": med["fit"]["faiss"],
        "codes_equal_fraction": equal,
    })
    slot.write(rec)
