"""Durable results of a benchmark run: one JSON record per configuration, and the tidy table.

A run lives in ``reports/runs/<run>/``: ``records/<kind>/<id>.json`` (one per finished configuration,
written atomically, so an interrupted run keeps every finished result and never a truncated one),
``benchmark-<session>.json`` (pytest-benchmark's own output), and, assembled from the records at the
end of every session, ``results.csv`` (one row per configuration x layer x head) and ``summary.json``
(one entry per configuration: means, timings, ratios to the dense references, environment).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from bench.errors import BenchError


def reports_root() -> Path:
    """``$SPARSEBENCH_REPORTS``, else ``reports/`` under the current folder (the project root in tox)."""
    return Path(os.environ.get("SPARSEBENCH_REPORTS") or Path.cwd() / "reports")


def run_dir(run: str) -> Path:
    return reports_root() / "runs" / run


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(nan_to_none(obj), f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def nan_to_none(obj):
    """``obj`` with every NaN or infinite float as ``None``: strict JSON has no NaN, so undefined numbers
    are stored as null (and read back as NaN)."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


def record_path(run: Path, kind: str, rid: str) -> Path:
    return run / "records" / kind / f"{rid}.json"


def load_records(run: Path, kind: str) -> list[dict]:
    """Every finished record of ``kind`` in ``run``; an unreadable one is an error naming the file."""
    out = []
    for path in sorted((run / "records" / kind).glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise BenchError(f"result record {path} is corrupt ({exc}); delete it to re-run it") from None
    return out
