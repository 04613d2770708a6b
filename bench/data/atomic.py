"""Files written whole or not at all: a temporary file beside the target, then one rename.

Every durable file of the suite (cache entries, external data files, result records, ``summary.json``,
``results.csv``) goes through :func:`write_atomic`, so an interrupted run never leaves a truncated file:
``os.replace`` within one folder is atomic on POSIX, and the temporary file is removed on failure.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.errors import BenchError


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Create ``path`` (and its folder) from ``write(tmp)``, which writes the whole content to ``tmp``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def writable(folder: Path, what: str) -> None:
    """A :class:`~bench.errors.BenchError` unless a file can be created in ``folder`` (made if missing): checked
    before any work, so a read-only folder is named at once rather than after minutes of measuring."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe = Path(folder) / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"{what} {folder} is not writable ({exc.strerror or exc})") from None
