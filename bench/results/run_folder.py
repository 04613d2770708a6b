"""A run folder one writer at a time, whose records are reused only when they come from the same thing.

* :class:`RunLock`: a lock file (``<run>/.lock``, :mod:`filelock`) held for a whole session; a second
  session on the same folder is refused with the holder's process id, host and start time, and
  ``--fresh`` empties a folder only once its lock is held.
* :func:`check_manifest`: the folder remembers what it is a run of (``run.json``: profile, data options,
  split); a session of anything else is refused unless it starts afresh.
* :func:`record_fingerprint` and :class:`RecordSlot`: every record carries the SHA-256 of what produced
  it (the session's profile, data options, split, device and code version, plus the record's own
  identity: dataset descriptor with its corpus or file hash, predictor name, backend ...). Resume
  reuses a record only when its fingerprint matches and it verifies on read; otherwise the
  configuration is measured again, and the session says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.data.atomic import writable  # noqa: F401  (the suite checks its folders with it)
from bench.errors import BenchError
from bench.results.records import RecordError, read_record, write_json_atomic

MANIFEST = "run.json"
LOCK = ".lock"
OWNER = ".lock.owner"


def code_version() -> str:
    """SHA-256 (first 16 hex digits) over the Python sources of ``bench`` and ``predictors``: the code that
    produced a number (any change measures again rather than trusting an old record)."""
    import bench
    import predictors

    h = hashlib.sha256()
    for package in (bench, predictors):
        root = Path(package.__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root.parent).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def default_run_name(profile: str, datasets) -> str:
    """The run folder's name when ``--run`` is not given: the profile's name, or for file datasets a name
    made of the files' ids (``file-<stem>``, joined by ``-``), never merged into the profile's own run."""
    from bench.data.sources import dataset_id

    files = [dataset_id(d) for d in datasets if d.startswith("file:")]
    return "-".join(files) if files else profile


def canonical_digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def record_fingerprint(session: dict, identity: dict) -> str:
    """``sha256:<hex>`` of the session's fingerprint and a record's identity (both JSON-able dicts)."""
    return "sha256:" + canonical_digest({"session": session, "record": identity})


class RunLock:
    """The lock of one run folder, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, run: Path):
        from filelock import FileLock

        self.run = Path(run)
        self._lock = FileLock(str(self.run / LOCK))

    def acquire(self) -> None:
        """Take the lock at once, or a :class:`BenchError` naming who holds it."""
        from filelock import Timeout

        self.run.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise BenchError(f"run folder {self.run} is in use by another run ({self._owner()}); wait for it "
                             "to finish or choose another --run") from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (self.run / OWNER).write_text(json.dumps(owner))

    def _owner(self) -> str:
        try:
            o = json.loads((self.run / OWNER).read_text())
            return f"process {o['pid']} on {o['host']} since {o['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def release(self) -> None:
        if self._lock.is_locked:
            (self.run / OWNER).unlink(missing_ok=True)
            self._lock.release()


def empty_run_folder(run: Path) -> None:
    """Remove everything in ``run`` but its lock (``--fresh``; the caller holds the lock)."""
    import shutil

    for entry in Path(run).iterdir():
        if entry.name in (LOCK, OWNER):
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def check_manifest(run: Path, manifest: dict) -> None:
    """Write ``run.json`` for a new folder; refuse a folder that holds a run of something else."""
    path = Path(run) / MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            raise BenchError(f"{path} is unreadable; start the run again with --fresh") from None
        differs = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
        if differs:
            what = "; ".join(f"{k}: {old.get(k)!r} there, {manifest.get(k)!r} now" for k in differs)
            raise BenchError(f"run folder {run} holds a run of other settings ({what}); use --fresh to start it "
                             "again, or another --run")
        return
    write_json_atomic(path, manifest)


@dataclass
class RecordSlot:
    """Where one configuration's record goes, and the fingerprint it must carry.

    ``reason``: why the configuration is measured (``new``, or why an existing record was not reused).
    """

    path: Path
    fingerprint: str
    reason: str = "new"
    extra: dict = field(default_factory=dict)

    def write(self, record: dict) -> None:
        write_json_atomic(self.path, {**record, "fingerprint": self.fingerprint})


def reuse_or_slot(path: Path, fingerprint: str, kind: str) -> tuple[bool, RecordSlot]:
    """``(True, slot)`` when ``path`` holds a verified record with this fingerprint (resume it), else
    ``(False, slot)`` with the reason it is measured again."""
    slot = RecordSlot(Path(path), fingerprint)
    if not slot.path.exists():
        return False, slot
    try:
        rec = read_record(slot.path, kind)
    except RecordError as exc:
        slot.reason = f"re-measured: {exc.problem}"
        return False, slot
    if rec.get("fingerprint") != fingerprint:
        slot.reason = "re-measured: its fingerprint differs (other data, settings or code)"
        return False, slot
    return True, slot
