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
