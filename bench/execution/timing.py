"""Small helpers shared by the benchmark modules."""

from __future__ import annotations

from dataclasses import replace


def sync(device: str) -> None:
    """Wait for queued CUDA work, so a timed call measures the work and not its launch."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def to_device(view, device: str):
    if device == "cpu":
        return view
    move = lambda t: None if t is None else t.to(device)
    return replace(view, q=move(view.q), k=move(view.k), v=move(view.v))


def time_record(benchmark) -> dict:
    """Timing statistics of the benchmark's rounds (NaN under ``--benchmark-disable``: nothing was timed)."""
    nan = float("nan")
    if benchmark.stats is None:
        return {"mean": nan, "median": nan, "min": nan, "stddev": nan, "rounds": 0}
    s = benchmark.stats.stats
    return {"mean": s.mean, "median": s.median, "min": s.min, "stddev": s.stddev, "rounds": s.rounds}


def stats(seconds: list[float]) -> dict:
    """Timing statistics of timed rounds, as :func:`time_record` reports pytest-benchmark's: ``mean``,
    ``median``, ``min``, ``stddev`` (the sample standard deviation, 0 for one round) and ``rounds``."""
    import statistics

    return {"mean": statistics.fmean(seconds), "median": statistics.median(seconds), "min": min(seconds),
            "stddev": statistics.stdev(seconds) if len(seconds) > 1 else 0.0, "rounds": len(seconds)}


def timed_rounds(fns: list, rounds: int, warmup: int, device: str = "cpu") -> list[list[float]]:
    """Seconds of every ``fn()`` of ``fns`` timed in alternation: ``warmup`` untimed rounds, then ``rounds``
    timed rounds, each calling every function once in order. One list per function, in round order."""
    import time

    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            sync(device)
            out.append(time.perf_counter() - start)
    return times


def time_together(runs: list, reference, rounds: int, warmup: int, device: str = "cpu") -> tuple[list[dict], dict]:
    """Time every ``run()`` of ``runs`` and ``reference()`` in alternation (:func:`timed_rounds`: ``warmup``
    untimed rounds, then ``rounds`` timed rounds, each round calling every run once in order, then the
    reference once). Returns the :func:`stats` of each run and of the reference.

    Alternating keeps the runs and the reference under the same conditions (a neighbour's load,
    frequency scaling, cache state) as they change during a measurement, so a ratio to the reference is
    fair where absolute times are not: on a shared worker of a distributed sweep. One reference round
    per round serves all ``runs`` (a task measuring several configurations pays for one reference).
    """
    times = timed_rounds([*runs, reference], rounds, warmup, device)
    return [stats(t) for t in times[:-1]], stats(times[-1])
