"""FAISS twins against their torch twins on one device, at the GPU benchmark's lengths (``--profile gpu``).

For a configuration of ``gpu_twins`` at length ``n`` (:func:`twin_measure`), both twins are fitted once
on the CPU fit set (:func:`bench.evaluation.gpu_cases.fitted`; the FAISS twin's index on ``device``),
then on :func:`bench.evaluation.gpu_cases.device_view`:

* **predict**: each twin predicts the layer on ``device`` ``rounds`` times, alternating, every call
  followed by :func:`bench.execution.timing.sync`; ``predict_ratio`` is the ratio of medians, FAISS over
  torch (below 1: FAISS is faster); ``codes_equal_fraction`` the share of identical codes (query and
  key codes of the family's own graph, on the CPU);
* **fit**: for ``sf-kmeans`` (k-means), the family's own fitting at length ``n``: k-means of the
  ``2 n`` projected queries and keys of every head (``k`` clusters, its Lloyd iterations), by
  :func:`predictors.kmeans.kmeans` on ``device`` and by :func:`predictors.faiss.common.faiss_kmeans`
  (``device`` index; one process-wide ``StandardGpuResources``,
  :func:`predictors.faiss.common.gpu_resources`), with the largest centroid difference; for the
  others (LSH draws its rotations, nothing FAISS does), the fit on the fit set.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench.evaluation.gpu_cases import device_view, fitted
from bench.execution.timing import sync

FIT_ROUNDS = 3


def twin_cases(prof) -> list[tuple[int, str]]:
    """``(n, name)`` of every configuration of ``gpu_twins`` at every ``gpu_n``."""
    return [(n, name) for name in prof.gpu_twins for n in prof.gpu_n]


def faiss_gpu_problem() -> str | None:
    """Why the FAISS twins cannot use a GPU here (no faiss, a CPU build, no CUDA device), or ``None``."""
    from predictors.errors import PredictorError
    from predictors.faiss.common import gpu_problem

    try:
        return gpu_problem()
    except PredictorError as exc:  # faiss is not importable
        return str(exc)


def faiss_predict_call(n: int, name: str, prof, device: str):
    """One prediction of the FAISS twin of ``name`` at ``n`` on ``device``, synchronised (to time)."""
    shape = (prof.gpu_heads, prof.gpu_head_dim, prof.gpu_causal)
    twin = fitted(name, *shape, backend="faiss", faiss_device=device)
    view = device_view(n, *shape, "float32", device)

    def call():
        graph = twin.predict(view, 0)
        sync(device)
        return graph
    return call


def _alternate(calls: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of ``rounds`` calls of each of ``calls`` (name -> function), alternating the order each round
    (after one untimed call of each)."""
    for f in calls.values():
        f()
    times = {k: [] for k in calls}
    names = list(calls)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def own_codes(graph) -> tuple[torch.Tensor, torch.Tensor]:
    """The family's own query and key codes of a predicted graph (its first part when extras were ORed in)."""
    from predictors.graphs import UnionGraph

    graph = graph.parts[0] if isinstance(graph, UnionGraph) else graph
    return graph.q_codes.cpu(), graph.k_codes.cpu()


def equal_fraction(a, b) -> float:
    """Share of identical codes between two predicted graphs of the same family."""
    same = total = 0
    for x, y in zip(own_codes(a), own_codes(b)):
        total += x.numel()
        same += int((x == y).sum()) if x.shape == y.shape else 0
    return same / total if total else float("nan")


def _stats(seconds: dict) -> dict:
    return {b: {"median": statistics.median(t), "min": min(t)} for b, t in seconds.items()}


def kmeans_at_n(torch_twin, view, device: str, rounds: int) -> tuple[dict, float]:
    """Seconds of k-means of the ``2 n`` projected points of each head, torch on ``device`` against FAISS
    with a ``device`` index, and the largest difference of their centroids."""
    from predictors.faiss.common import faiss_kmeans
    from predictors.kmeans import kmeans
    from predictors.torch.sf_clustering import KMEANS_ITERS

    qp, kp = torch_twin.project(view, 0)
    x = torch.cat([qp[0], kp[0]], dim=1).contiguous()  # [H, 2n, r]
    k = torch_twin.values["k"]
    out = {}

    def run_torch():
        out["torch"] = kmeans(x, k, iters=KMEANS_ITERS, seed=0)
        sync(device)

    def run_faiss():
        out["faiss"] = faiss_kmeans(x, k, KMEANS_ITERS, seed=0, device=device)[0]

    times = _alternate({"torch": run_torch, "faiss": run_faiss}, rounds)
    diff = float((out["torch"].cpu() - out["faiss"]).abs().max())
    return times, diff


def twin_measure(n: int, name: str, prof, device: str, rounds: int) -> dict:
    """The record fields of one twin case (module docstring); ``device`` is where torch runs and where
    the FAISS index lives."""
    shape = (prof.gpu_heads, prof.gpu_head_dim, prof.gpu_causal)
    torch_twin = fitted(name, *shape)
    faiss_twin = fitted(name, *shape, backend="faiss", faiss_device=device)
    view = device_view(n, *shape, "float32", device)
    graphs = {}

    def predict(backend, twin):
        def call():
            graphs[backend] = twin.predict(view, 0)
            sync(device)
        return call

    predict_t = _alternate({"torch": predict("torch", torch_twin), "faiss": predict("faiss", faiss_twin)}, rounds)
    rec = {"n": n, "name": name, "family": faiss_twin.family, "heads": prof.gpu_heads, "rounds": rounds,
           "predict_seconds": _stats(predict_t),
           "codes_equal_fraction": equal_fraction(graphs["torch"], graphs["faiss"])}
    if faiss_twin.family == "sf-kmeans":
        fit_t, diff = kmeans_at_n(torch_twin, view, device, min(rounds, FIT_ROUNDS))
        rec.update(fit_what=f"k-means of the {2 * n} projected queries and keys per head", centroid_max_diff=diff)
    else:
        fits = {"torch": lambda: fitted.__wrapped__(name, *shape),
                "faiss": lambda: fitted.__wrapped__(name, *shape, backend="faiss", faiss_device=device)}
        fit_t = _alternate(fits, min(rounds, FIT_ROUNDS))
        rec["fit_what"] = "the fit on the 4 fit samples (nothing in it depends on n)"
    med = {k: {b: statistics.median(t) for b, t in v.items()} for k, v in (("fit", fit_t), ("predict", predict_t))}
    rec.update(fit_seconds=_stats(fit_t), fit_ratio=med["fit"]["faiss"] / med["fit"]["torch"],
               predict_ratio=med["predict"]["faiss"] / med["predict"]["torch"])
    return rec
