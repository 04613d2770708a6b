"""Progress of long steps on the console: what runs, how many of how many, the time left.

A :class:`Step` (data preparation, training, gold, fitting) reports to the current :class:`Console`,
which has two modes:

* interactive (its stream is a terminal and ``CI`` is not set): one status line rewritten in place
  (carriage return, at most every :data:`REDRAW_SECONDS`), then one permanent line when the step ends;
* quiet (CI logs, pipes, files): nothing while a step runs, one line when it ends.

The default console writes to the current ``sys.stderr``. The benchmark suite installs its own
(:func:`use_console`): through pytest's terminal with output capture suspended, so a step running inside
a benchmark is seen, and with the sweep's position as the status line's prefix. Nothing here touches
the numbers a step computes: a step only counts and prints.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REDRAW_SECONDS = 0.2


def in_ci() -> bool:
    """``CI`` set to anything but empty, 0, false or no (what CI services export)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) of a duration, for status lines."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def duration(seconds: float) -> str:
    """A duration for permanent lines: ``0.8 s``, ``42 s``, ``3 min 20 s``, ``1 h 05 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass
class Console:
    """Where progress goes: ``write(text)`` and whether transient lines may be drawn (``interactive``).

    ``prefix`` is shown before every status (the suite's sweep position); :meth:`line` writes a permanent
    line (in place of a transient one) and draws the prefix again below it.
    """

    write: Callable[[str], None]
    interactive: bool
    width: int = 100
    prefix: str = ""
    _shown: bool = field(default=False, repr=False)

    def status(self, text: str = "") -> None:
        """Rewrite the transient line: ``prefix · text`` (interactive consoles only), at most ``width - 1``
        characters: a line too wide loses the end of the prefix first, so a long step's count and time
        left stay in sight on a narrow terminal."""
        if not self.interactive:
            return
        self.write("\r" + fit_line(self.prefix, text, self.width - 1) + "\x1b[K")
        self._shown = True

    def line(self, text: str) -> None:
        """A permanent line (replacing the transient one, which is drawn again below it)."""
        self.write(("\r\x1b[K" if self._shown else "") + text + "\n")
        self._shown = False
        if self.prefix:
            self.status()

    def clear(self) -> None:
        """Remove the transient line (before other output)."""
        if self._shown:
            self.write("\r\x1b[K")
            self._shown = False


MIN_PREFIX = 16  # characters of a shortened prefix worth showing (else the step's text alone)


def fit_line(prefix: str, text: str, width: int) -> str:
    """``prefix · text`` in at most ``width`` characters: the prefix is cut (ending in ``…``) before the
    text is; a prefix shorter than :data:`MIN_PREFIX` after the cut is left out, and a text that alone
    is too wide is cut at its end."""
    line = " · ".join(t for t in (prefix, text) if t)
    if len(line) <= width:
        return line
    if prefix and text:
        room = width - len(text) - len(" · ")
        if room >= MIN_PREFIX:
            return prefix[: room - 1] + "… · " + text
        line = text
    return line if len(line) <= width else line[: width - 1] + "…"


def stderr_console() -> Console:
    """A console on the current ``sys.stderr``: interactive on a terminal outside CI."""
    stream = sys.stderr

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    tty = bool(getattr(stream, "isatty", lambda: False)())
    return Console(write=write, interactive=tty and not in_ci(), width=shutil.get_terminal_size().columns)


_CURRENT: list[Console] = []


def console() -> Console:
    """The console installed with :func:`use_console`, else one on ``sys.stderr``."""
    return _CURRENT[-1] if _CURRENT else stderr_console()


def use_console(con: Console | None) -> None:
    """Install ``con`` as the console of every later step (``None``: back to ``sys.stderr``)."""
    _CURRENT.clear()
    if con is not None:
        _CURRENT.append(con)


class Step:
    """One long step: ``desc``, ``total`` units of work (``None``: unknown), shown while it runs.

    Use as a context manager and call :meth:`update` per unit done. Interactive: ``desc 40/128 samples
    [31%] 0:12, ~0:27 left``; when it ends, ``desc: 128 samples in 39 s`` stays. Quiet: only that last
    line. ``enabled=False`` shows nothing. A step shorter than ``quiet_below`` seconds leaves no line
    (fits of cheap predictors: their configuration's own line says enough).
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "", enabled: bool = True,
                 quiet_below: float = 0.0):
        self.desc, self.total, self.unit = desc, total, unit
        self.enabled, self.quiet_below = enabled, quiet_below
        self.done = 0
        self.note = ""
        self.start = time.perf_counter()
        self._drawn = -1.0
        self._console = console() if enabled else None
        self.seconds: float | None = None

    def __enter__(self) -> Step:
        self._draw(force=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    def update(self, n: int = 1, note: str | None = None) -> None:
        """``n`` more units done; ``note`` (e.g. the current loss) is shown after the count."""
        self.done += n
        if note is not None:
            self.note = note
        self._draw()

    def text(self) -> str:
        """The status text: count, share, elapsed and (when the total is known) the time left."""
        elapsed = time.perf_counter() - self.start
        parts = [self.desc]
        if self.total:
            share = self.done / self.total
            parts.append(f"{self.done}/{self.total} {self.unit}".rstrip() + f" [{share:4.0%}]")
            left = elapsed / self.done * (self.total - self.done) if self.done else None
            parts.append(clock(elapsed) + (f", ~{clock(left)} left" if left is not None else ""))
        else:
            parts.append(clock(elapsed))
        if self.note:
            parts.append(self.note)
        return " ".join(parts)

    def _draw(self, force: bool = False) -> None:
        if self._console is None or not self._console.interactive:
            return
        now = time.perf_counter()
        if force or now - self._drawn >= REDRAW_SECONDS:
            self._console.status(self.text())
            self._drawn = now

    def close(self, failed: bool = False) -> None:
        """End the step: its one permanent line (unless it was short, or disabled)."""
        if self.seconds is not None:
            return
        self.seconds = time.perf_counter() - self.start
        if self._console is None:
            return
        if self.seconds < self.quiet_below and not failed:
            self._console.status()  # back to the prefix alone
            return
        count = f"{self.done} {self.unit}".rstrip() if self.total else "done"
        tail = f" ({self.note})" if self.note else ""
        verb = "stopped after" if failed else "in"
        self._console.line(f"{self.desc}: {count} {verb} {duration(self.seconds)}{tail}")
