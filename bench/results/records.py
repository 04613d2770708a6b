"""Durable results of a benchmark run: one JSON record per configuration, verified on every read.

A run lives in ``reports/runs/<run>/``: ``records/<kind>/<id>.json`` (one per finished configuration,
written atomically, so an interrupted run keeps every finished result and never a truncated one),
``benchmark-<session>.json`` (pytest-benchmark's own output), and, assembled from the records at the
end of every session, ``results.csv`` (one row per configuration x layer x head) and ``summary.json``
(one entry per configuration: means, timings, ratios to the dense references, environment, fingerprint).

Integrity: :func:`write_record` stores, in the record's field ``checksum``, ``"sha256:" +`` the SHA-256
of the canonical JSON (sorted keys, no spaces, NaN as null) of every other field. :func:`read_record`
refuses, with a :class:`RecordError` naming the file and the problem, a record that is empty, truncated
(not JSON), has no checksum, fails it, or breaks the schema of its kind (:mod:`bench.results.schema`:
required fields, types, metric ranges). A record without a checksum was written before records had one
(or by hand): it is refused as "written by an older version; measure it again", never trusted.
The committed reference (``reports/reference``) holds no records, only ``summary.json`` and
``results.csv``, which the report reads directly: it is not affected.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

from bench.data.atomic import write_atomic
from bench.errors import BenchError
from bench.results.schema import RECORD_KINDS, record_problems

CHECKSUM = "checksum"
REMEDY = "measure it again (delete the file, or run with --fresh)"


class RecordError(BenchError):
    """A result record that cannot be trusted: ``path`` and ``problem`` say which and why."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"result record {path} {problem}; {REMEDY}")


class Loaded(NamedTuple):
    """The records of one kind of a run: ``records`` (verified, in file-name order) and ``bad`` (one
    :class:`RecordError` per refused file, its ``path`` to measure again)."""

    records: list[dict]
    bad: list[RecordError]


def reports_root() -> Path:
    """``$SPARSEBENCH_REPORTS``, else ``reports/`` under the current folder (the project root in tox)."""
    return Path(os.environ.get("SPARSEBENCH_REPORTS") or Path.cwd() / "reports")


def run_dir(run: str) -> Path:
    return reports_root() / "runs" / run


def record_path(run: Path, kind: str, rid: str) -> Path:
    return run / "records" / kind / f"{rid}.json"


def _record_kind(path: Path) -> str | None:
    """The kind of a path ``<run>/records/<kind>/<id>.json``, else None."""
    path = Path(path)
    if path.parent.parent.name == "records" and path.parent.name in RECORD_KINDS:
        return path.parent.name
    return None


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON (NaN and infinities as null) through a temporary file and a rename.

    A record path (``<run>/records/<kind>/<id>.json``) is written by :func:`write_record` (schema checked,
    checksum added), so every record carries its checksum whichever of the two its writer calls.
    """
    if _record_kind(path) is not None and isinstance(obj, dict):
        write_record(path, obj)
        return
    _write_atomic(Path(path), json_safe(obj))


def _write_atomic(path: Path, obj) -> None:
    """``obj`` (already strict JSON) in ``path``, written whole or not at all."""
    def dump(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, allow_nan=False)

    write_atomic(path, dump)


def json_safe(obj):
    """``obj`` with every NaN and infinity replaced by None, in nested dicts, lists and tuples."""
    # Strict JSON has no NaN: undefined numbers are stored as null and read back as NaN.
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def record_checksum(content: dict) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``content`` (its field ``checksum`` left out)."""
    body = {k: v for k, v in content.items() if k != CHECKSUM}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _problem(rec, kind: str) -> str | None:
    """The schema problems of ``rec`` as one phrase (the first three), None when it is valid."""
    problems = record_problems(rec, kind)
    if not problems:
        return None
    more = f" (and {len(problems) - 3} more problems)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def write_record(path: Path, record: dict) -> Path:
    """Check ``record`` against the schema of its kind, add its checksum and write it atomically.

    The kind is the folder's (``records/<kind>/``), else the record's field ``kind``. A record that a
    reader would refuse is never written: :class:`RecordError` (a bug in the benchmark that made it).
    """
    path = Path(path)
    # The JSON round trip makes the checked and hashed content exactly what a reader will parse.
    content = json.loads(json.dumps(json_safe({k: v for k, v in record.items() if k != CHECKSUM}),
                                    allow_nan=False))
    kind = _record_kind(path) or content.get("kind")
    if problem := _problem(content, kind):
        raise RecordError(path, f"was not written: it {problem}")
    content[CHECKSUM] = record_checksum(content)
    _write_atomic(path, content)
    return path


def _refuse_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def read_record(path: Path, kind: str | None = None) -> dict:
    """The verified record at ``path`` (``kind``: its folder's, else its field ``kind``), without its
    checksum field; :class:`RecordError` naming the file and the problem otherwise."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecordError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        raise RecordError(path, "is empty")
    try:
        rec = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError is a ValueError; so is a NaN or Infinity constant
        raise RecordError(path, f"is corrupt (truncated or not JSON: {exc})") from None
    if not isinstance(rec, dict):
        raise RecordError(path, "is corrupt (not a JSON object)")
    stored = rec.pop(CHECKSUM, None)
    if stored is None:
        raise RecordError(path, "has no checksum: written by an older version of sparsebench (or by hand)")
    if stored != record_checksum(rec):
        raise RecordError(path, "fails its checksum: edited or damaged after it was written")
    kind = kind or _record_kind(path) or rec.get("kind")
    if problem := _problem(rec, kind):
        raise RecordError(path, problem)
    return rec


def load_records(run: Path, kind: str) -> Loaded:
    """Every record of ``kind`` in ``run``: ``Loaded(records, bad)``, the verified ones and a
    :class:`RecordError` for each refused file (its ``.path`` is the configuration to measure again)."""
    if kind not in RECORD_KINDS:
        raise BenchError(f"unknown record kind {kind!r} (known: {', '.join(RECORD_KINDS)})")
    good, bad = [], []
    for path in sorted((Path(run) / "records" / kind).glob("*.json")):
        try:
            good.append(read_record(path, kind))
        except RecordError as exc:
            bad.append(exc)
    return Loaded(good, bad)
