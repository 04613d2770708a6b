"""Thread pinning and the environment record kept with every result.

faiss and torch each start an OpenMP pool; on a 2-core machine, unpinned faiss threads made k-means
15-70x slower (measured while planning), and torch's own pool did the same to the many small
per-block operations of scoring: one default-profile MiniLM configuration took 50 s to score with 2
torch threads on a busy 2-core machine and 1.6 s with 1 (measured here). So the suite pins
deliberately, never at import time: torch gets ``torch_threads`` (default 1; ``--threads N`` to
change it, for predictors and dense references alike, so time ratios stay fair), faiss gets
``faiss_threads`` (default 1: the work is many small per-head problems).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

from bench.errors import BenchError

# Torch threads a session may ask for: at least one, and no more than any machine here has cores.
THREADS_RANGE = (1, 64)


def check_threads(threads: int | None) -> int:
    """``threads`` (``None``: the default 1) if it is in :data:`THREADS_RANGE`, else a BenchError."""
    if threads is None:
        return 1
    low, high = THREADS_RANGE
    if isinstance(threads, bool) or not isinstance(threads, int) or not low <= threads <= high:
        raise BenchError(f"--threads must be a whole number in {low}..{high}, got {threads!r}")
    return threads


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def configure_threads(torch_threads: int | None = None, faiss_threads: int = 1) -> dict:
    """Pin torch and (if installed) faiss thread pools; return what was set (a BenchError for a thread
    count outside :data:`THREADS_RANGE`)."""
    import torch

    torch_threads = check_threads(torch_threads)
    torch.set_num_threads(torch_threads)
    out = {"torch_threads": torch_threads, "faiss_threads": None}
    try:
        import faiss
    except ImportError:
        return out
    faiss.omp_set_num_threads(faiss_threads)
    out["faiss_threads"] = faiss_threads
    return out


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere :func:`platform.processor`, possibly empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment() -> dict:
    """Versions, device and threads: recorded beside every result."""
    import torch

    import bench

    env = {"python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "cpu_cores": usable_cores(), "torch": torch.__version__,
           "torch_threads": torch.get_num_threads(), "sparsefinder_bench": bench.__version__,
           "cuda_available": torch.cuda.is_available(),
           "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor(),
           # Float results of trained models and fits depend on the CPU's kernels (MKL and ATen pick them by
           # instruction set): the same code and seed give other bits on another CPU (README: Reproducibility).
           "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for mod in ("entmax", "faiss", "safetensors", "numpy", "numba"):
        try:
            m = __import__(mod)
            env[mod] = getattr(m, "__version__", "unknown")
        except ImportError:
            env[mod] = None
    if env["faiss"]:
        import faiss

        env["faiss_threads"] = faiss.omp_get_max_threads()
    return env
