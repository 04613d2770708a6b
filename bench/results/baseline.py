"""The schema of a gate baseline and its fingerprint check (the gates themselves: :mod:`bench.results.gates`).

A baseline is refused (:class:`GateError`, exit status 2) unless it has ``format`` 1, a ``fingerprint``,
a ``quality`` object whose metric names are rows of :mod:`bench.evaluation.metric_table` with the table's
direction and a finite tolerance >= 0, a ``speed`` object (reference name, factor > 0, floor >= 0) and at
least one entry, each holding exactly the gated metrics and ``ratio``, every one a finite number within
its metric's range (:data:`bench.results.schema.RANGES`), and optionally ``seeds`` (distinct integers
>= 0: the seeds whose mean the entry holds) and ``intervals`` (``{metric: [lo, hi]}`` for gated metrics,
finite, within the metric's range, ``lo <= hi``). NaN, infinities and null are refused: a check against
NaN never fails, so it would silently check nothing.
"""

from __future__ import annotations

import difflib
import json
import math

from bench.errors import BenchError
from bench.evaluation.metric_table import METRIC_TABLE
from bench.results.schema import RANGES, SLACK

BASELINE_FORMAT = 1
SHOWN = 5  # problems named in one error line; the rest are counted
REMAKE = "sparsebench compare RUN --baseline FILE --update"


class GateError(BenchError):
    """A gate that cannot mean anything: a malformed baseline, another run's baseline, nothing to check."""


def raise_problems(head: str, problems: list[str], hint: str | None = None) -> None:
    """Raise one :class:`GateError` line naming the first problems, if there are any."""
    if problems:
        more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        tail = f"; {hint}" if hint else ""
        raise GateError(f"{head}: {'; '.join(problems[:SHOWN])}{more}{tail}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v) -> str | None:
    """Why ``v`` is not a finite number (None when it is)."""
    if v is None:
        return "is null (NaN or missing): a check against it would never fail"
    if not _is_number(v):
        return f"is {json.dumps(v)}, not a number"
    if not math.isfinite(v):
        return f"is {v}: a check against it would never fail"
    return None


def value_problem(metric: str, v) -> str | None:
    """Why ``v`` is not a possible value of ``metric`` (finite, within its range; ``ratio``, the speed
    ratio to the reference, is >= 0), None when it is."""
    if p := _finite(v):
        return p
    lo, hi = RANGES.get(metric, (0.0, math.inf) if metric == "ratio" else (-math.inf, math.inf))
    # The slack of the records' ranges: a float32 share of 1 + 1e-7 is possible, 7.5 is not.
    return None if lo - SLACK <= v <= hi + SLACK else f"is {v!r}, outside [{lo:g}, {hi:g}]"


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _quality_problems(quality) -> list[str]:
    if not isinstance(quality, dict):
        return ["'quality' is not an object of metric: rule"]
    out = []
    for metric, rule in quality.items():
        if metric not in METRIC_TABLE:
            out.append(f"quality: unknown metric {metric!r}{_suggest(metric, METRIC_TABLE)}")
            continue
        if not isinstance(rule, dict) or set(rule) != {"tolerance", "higher_is_better"}:
            out.append(f"quality.{metric} must be exactly {{\"tolerance\": ..., \"higher_is_better\": ...}}")
            continue
        if p := _finite(rule["tolerance"]):
            out.append(f"quality.{metric}.tolerance {p}")
        elif rule["tolerance"] < 0:
            out.append(f"quality.{metric}.tolerance is negative ({rule['tolerance']})")
        if rule["higher_is_better"] is not METRIC_TABLE[metric].higher_is_better:
            out.append(f"quality.{metric}.higher_is_better is {json.dumps(rule['higher_is_better'])}, but "
                       f"bench/evaluation/metric_table.py says {json.dumps(METRIC_TABLE[metric].higher_is_better)}")
    return out


def _speed_problems(speed) -> list[str]:
    if not isinstance(speed, dict) or set(speed) != {"reference", "factor", "floor"}:
        return ["'speed' must be exactly {\"reference\": ..., \"factor\": ..., \"floor\": ...}"]
    out = [] if isinstance(speed["reference"], str) else ["speed.reference is not a method name"]
    for k, least in (("factor", 0.0), ("floor", 0.0)):
        if p := _finite(speed[k]):
            out.append(f"speed.{k} {p}")
        elif speed[k] < least or (k == "factor" and speed[k] == 0):
            out.append(f"speed.{k} is {speed[k]}, must be {'> 0' if k == 'factor' else '>= 0'}")
    return out


OPTIONAL_FIELDS = ("seeds", "intervals")  # of an entry: what a baseline made from a run with seeds may add


def _seeds_problems(key: str, seeds) -> list[str]:
    ok = isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                   for s in seeds)
    if not ok:
        return [f"entries[{key!r}].seeds is {json.dumps(seeds)}, not a non-empty list of integers >= 0"]
    return [f"entries[{key!r}].seeds lists a seed twice: {seeds}"] if len(set(seeds)) != len(seeds) else []


def _interval_problems(key: str, intervals, quality) -> list[str]:
    """``intervals`` is ``{metric: [lo, hi]}`` over gated metrics (any metric when ``quality`` is None)."""
    if not isinstance(intervals, dict):
        return [f"entries[{key!r}].intervals is not an object of metric: [lo, hi]"]
    out = []
    for metric, bounds in intervals.items():
        where = f"entries[{key!r}].intervals.{metric}"
        if quality is not None and metric not in quality:
            out.append(f"{where}: not a gated metric{_suggest(metric, quality)}")
        elif not isinstance(bounds, list) or len(bounds) != 2:
            out.append(f"{where} is {json.dumps(bounds)}, not [lo, hi]")
        elif problems := [p for v in bounds if (p := value_problem(metric, v))]:
            out.append(f"{where}: a bound {problems[0]}")
        elif bounds[0] > bounds[1]:
            out.append(f"{where} is [{bounds[0]}, {bounds[1]}]: lo > hi")
    return out


def _entry_problems(entries, quality) -> list[str]:
    """Entries hold exactly the gated metrics and ``ratio``, each a possible value, and may hold
    :data:`OPTIONAL_FIELDS` (``quality`` None: the gated metrics are unknown, only the values are checked)."""
    if not isinstance(entries, dict):
        return ["'entries' is not an object of configuration: values"]
    if not entries:
        return ["'entries' is empty: the gate would check no configuration"]
    out = []
    for key, row in entries.items():
        if not isinstance(row, dict):
            out.append(f"entries[{key!r}] is not an object")
            continue
        names = (set(row) - set(OPTIONAL_FIELDS)) if quality is None else (set(quality) | {"ratio"})
        for name in sorted(set(row) - names - set(OPTIONAL_FIELDS)):
            out.append(f"entries[{key!r}]: unknown field {name!r}{_suggest(name, names | set(OPTIONAL_FIELDS))}")
        out += [f"entries[{key!r}] lacks {name!r}" for name in sorted(names - set(row))]
        for name in sorted(set(row) & names):
            if p := value_problem(name, row[name]):
                out.append(f"entries[{key!r}].{name} {p}")
        if "seeds" in row:
            out += _seeds_problems(key, row["seeds"])
        if "intervals" in row:
            out += _interval_problems(key, row["intervals"], quality)
    return out


def fingerprint_problems(fp) -> list[str]:
    if not isinstance(fp, dict) or set(fp) != {"profile", "datasets"}:
        return ["'fingerprint' must be exactly {\"profile\": ..., \"datasets\": ...}"]
    out = [] if fp["profile"] is None or isinstance(fp["profile"], str) else ["fingerprint.profile is not a name"]
    if not isinstance(fp["datasets"], dict) or not all(isinstance(v, dict) for v in fp["datasets"].values()):
        out.append("fingerprint.datasets is not an object of dataset: fingerprint")
    return out


def check_baseline(base, where: str = "the baseline", hint: str | None = None) -> None:
    """Raise :class:`GateError` naming every way ``base`` breaks the baseline schema (module docstring)."""
    if not isinstance(base, dict):
        raise GateError(f"{where} is not a JSON object")
    missing = [k for k in ("format", "fingerprint") if k not in base]
    if missing:
        raise GateError(f"{where} has no {' and no '.join(repr(k) for k in missing)}: made by an older version "
                        f"of sparsebench; make it again from a fresh run ({REMAKE})")
    if base["format"] != BASELINE_FORMAT:
        raise GateError(f"{where} has format {json.dumps(base['format'])}; this sparsebench reads format "
                        f"{BASELINE_FORMAT}")
    unknown = sorted(set(base) - {"format", "fingerprint", "quality", "speed", "entries"})
    problems = [f"unknown field {k!r}" for k in unknown]
    problems += [f"no {k!r}" for k in ("quality", "speed", "entries") if k not in base]
    if not problems:
        quality = _quality_problems(base["quality"])
        problems = fingerprint_problems(base["fingerprint"]) + quality + _speed_problems(base["speed"])
        # Entries are read against the gated metrics: with a misspelt one, every entry would be "wrong".
        problems += _entry_problems(base["entries"], None if quality else base["quality"])
    raise_problems(f"{where} is malformed", problems, hint)


def _flatten(obj, prefix: str) -> dict:
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def fingerprint_differences(base: dict, run: dict) -> list[str]:
    """One phrase per field where the baseline's fingerprint and the run's differ (empty: they match)."""
    out = []
    b_sets, r_sets = set(base.get("datasets") or {}), set(run.get("datasets") or {})
    if b_sets != r_sets:
        out.append(f"datasets: baseline {sorted(b_sets)}, run {sorted(r_sets)}")
    fb = _flatten({"profile": base.get("profile"), "datasets": {d: base["datasets"][d] for d in b_sets & r_sets}}, "")
    fr = _flatten({"profile": run.get("profile"), "datasets": {d: run["datasets"][d] for d in b_sets & r_sets}}, "")
    missing = object()
    for k in sorted(set(fb) | set(fr)):
        old, new = fb.get(k, missing), fr.get(k, missing)
        if old != new:
            show = lambda v: "absent" if v is missing else json.dumps(v)
            out.append(f"{k}: baseline {show(old)}, run {show(new)}")
    return out
