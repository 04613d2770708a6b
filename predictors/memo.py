"""In-process memos of fitted state that configurations of a sweep share (projections, gate maps).

A family whose fit trains something that other configurations reuse (the Sparsefinder projections of
``(data, r, shared, seed)``, the gate maps of ``seer`` per ``(data, b, seed)``) keeps it in a memo
table of this module (:func:`table`) and names it with :meth:`predictors.base.Predictor.shared_fit`.
In one process the second configuration finds the state trained by the first. A distributed sweep
moves it between processes: :func:`snapshot` before a fit, :func:`added_since` after it (the entries
that fit trained), and :func:`install` in another process before its fits, which then train nothing.
Entries are treated as read-only by every caller.
"""

from __future__ import annotations

_TABLES: dict[str, dict] = {}


def table(namespace: str) -> dict:
    """The memo table ``namespace`` (one dict per process, created on first use)."""
    return _TABLES.setdefault(namespace, {})


def snapshot() -> dict[str, frozenset]:
    """The keys of every table now: what :func:`added_since` compares with."""
    return {ns: frozenset(t) for ns, t in _TABLES.items()}


def added_since(before: dict[str, frozenset]) -> dict[str, dict]:
    """The entries added to any table since ``before`` (a :func:`snapshot`), ``{namespace: {key: value}}``."""
    out = {}
    for ns, t in _TABLES.items():
        new = {k: v for k, v in t.items() if k not in before.get(ns, frozenset())}
        if new:
            out[ns] = new
    return out


def install(entries: dict[str, dict]) -> None:
    """Add ``entries`` (an :func:`added_since` of another process) to this process's tables."""
    for ns, new in entries.items():
        table(ns).update(new)
