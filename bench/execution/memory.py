"""Peak memory of one call, for the benchmarks that report it (the gold graph at large ``n``).

torch's CPU allocator keeps no statistics (``torch.cuda.max_memory_allocated`` is CUDA only) and
``tracemalloc`` sees only Python's allocator, not tensor storage, so the peak is measured as growth of
the resident set: on Linux its high-water mark (``VmHWM``) is reset first (``/proc/self/clear_refs``,
value 5) and read after the call; freed heap memory is handed back to the system before
(``malloc_trim``), so what earlier calls left cached is not reused unseen. Elsewhere the growth of
``ru_maxrss`` is reported, a lower bound (it cannot be reset, so a call below an earlier peak reads 0).
"""

from __future__ import annotations

import ctypes
import resource
import sys
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    """``field`` (``VmRSS``, ``VmHWM``) of this process in KiB, or None where /proc is missing."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim() -> None:
    """Return freed heap memory to the system (glibc only; elsewhere nothing)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def peak_growth(fn) -> tuple[object, int, str]:
    """Run ``fn()``; return its result, the peak growth of resident memory during the call in bytes,
    and how it was measured (``"vmhwm"`` or ``"maxrss"``, module docstring)."""
    _trim()
    if _reset_hwm():
        base = _status_kib("VmRSS")
        out = fn()
        return out, max(0, _status_kib("VmHWM") - base) * 1024, "vmhwm"
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = fn()
    return out, max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * unit, "maxrss"
