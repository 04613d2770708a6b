"""Regression gates: a run's summary against a committed baseline (``sparsebench compare``).

Quality: for every configuration in the baseline, each gated metric must not move in the wrong
direction by more than its tolerance (``higher_is_better`` says which direction is wrong, and must agree
with :mod:`bench.evaluation.metric_table`). A configuration of the baseline missing from the run fails
too; new configurations are listed.

Speed: never absolute seconds. Each configuration's prediction time divided by the dense
``entmax15-topk`` time *measured in the same run* must stay below ``factor x`` the baseline's ratio,
or below ``floor`` (tiny ratios such as a window's are mostly timer noise).

A gate only means something if it checks what it claims to: a baseline is schema-checked
(:func:`check_baseline`: known metric names, finite numbers, no NaN or null), carries the
``fingerprint`` of the run it was made from (profile, and per dataset its descriptor: source, corpus
name and SHA-256, data options, model; and its fit/eval split; see :func:`bench.results.summary.fingerprint`),
and is refused with what differs when the run's fingerprint is not the same. A gate that would check no
configuration, a gated metric the run lacks and a run without the speed reference are refused as well.
Every refusal is a :class:`GateError` (bad input, exit status 2), distinct from a regression (exit 1).

The baseline file (JSON)::

    {"format": 1,
     "fingerprint": {"profile": "smoke", "datasets": {"minilm": {"descriptor": {...}, "fit_samples": 4,
                                                                "eval_samples": 4}}},
     "quality": {"recall": {"tolerance": 0.01, "higher_is_better": true}, ...},
     "speed": {"reference": "entmax15-topk", "factor": 5.0, "floor": 0.02},
     "entries": {"<dataset>--<backend>--<name>": {"recall": ..., "sparsity": ..., "exact": ...,
                                                  "ratio": ...}, ...}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.evaluation.metric_table import default_gates
from bench.results.baseline import (
    BASELINE_FORMAT,
    GateError,
    check_baseline,
    fingerprint_differences,
    fingerprint_problems,
    raise_problems,
    value_problem,
)

DEFAULT_QUALITY = default_gates()  # bench.evaluation.metric_table: recall, sparsity, exact
DEFAULT_SPEED = {"reference": "entmax15-topk", "factor": 5.0, "floor": 0.02}
__all__ = ["GateError", "checked_keys", "compare", "load_baseline", "make_baseline"]


def entry_key(entry: dict) -> str:
    return f"{entry['dataset']}--{entry['backend']}--{entry['name']}"


def make_baseline(summary: dict, quality=None, speed=None) -> dict:
    """A baseline from a run summary: its fingerprint, its gated means and its speed ratios.

    Refused (:class:`GateError`) when the summary has no fingerprint or no configuration, or when a gated
    mean or the speed ratio of a configuration is undefined: such a baseline would check nothing there.
    """
    quality = quality or DEFAULT_QUALITY
    speed = speed or DEFAULT_SPEED
    _run_entries(summary)
    entries = {}
    for e in summary["predictors"]:
        row = {m: e["mean"].get(m) for m in quality}
        row["ratio"] = (e.get("ratio_to_dense") or {}).get(speed["reference"])
        entries[entry_key(e)] = row
    base = {"format": BASELINE_FORMAT, "fingerprint": summary["fingerprint"], "quality": quality,
            "speed": speed, "entries": dict(sorted(entries.items()))}
    check_baseline(base, "the baseline made from this run", hint="a configuration without a defined value "
                   "cannot be gated: fix the run, or leave the configuration out")
    return base


def _run_entries(summary) -> dict[str, dict]:
    """The run's configurations by key; :class:`GateError` for a summary the gates cannot read."""
    if not isinstance(summary, dict) or not isinstance(summary.get("predictors"), list):
        raise GateError("the run summary has no list 'predictors': is it a summary.json of sparsebench?")
    if not isinstance(summary.get("fingerprint"), dict):
        raise GateError("the run summary has no fingerprint: it was written by an older version of sparsebench; "
                        "rebuild it (run the suite again on that run: it resumes and summarises)")
    out = {}
    for i, e in enumerate(summary["predictors"]):
        ok = isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("dataset", "backend", "name"))
        if not ok or not isinstance(e.get("mean"), dict) or not isinstance(e.get("ratio_to_dense", {}), dict):
            raise GateError(f"the run summary's predictors[{i}] is malformed (needs dataset, backend, name, mean)")
        out[entry_key(e)] = e
    return out


def _undefined(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _run_problems(run: dict, base: dict, keys: list[str], check_speed: bool) -> list[str]:
    """Metrics and speed references the gate needs and the run lacks, or run values that are impossible."""
    out = []
    reference = base["speed"]["reference"]
    for key in keys:
        mean = run[key]["mean"]
        for metric in base["quality"]:
            if metric not in mean:
                out.append(f"{key}: the run has no metric {metric!r}")
            elif not _undefined(mean[metric]) and (p := value_problem(metric, mean[metric])):
                out.append(f"{key}: the run's {metric} {p}")
        ratio = (run[key].get("ratio_to_dense") or {}).get(reference)
        if check_speed and (_undefined(ratio) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio)):
            out.append(f"{key}: the run has no {reference} time to check its speed against (use --no-speed "
                       "to check quality only)")
    return out


def checked_keys(summary: dict, baseline: dict) -> list[str]:
    """The baseline's configurations that are in the run: what the gate checks."""
    run = _run_entries(summary)
    return [k for k in baseline["entries"] if k in run]


def _preflight(summary: dict, baseline: dict, check_speed: bool) -> tuple[dict, list[str]]:
    """Refuse (:class:`GateError`) every gate that cannot mean anything; return the run's entries and
    the configurations to check."""
    check_baseline(baseline)
    run = _run_entries(summary)
    raise_problems("the run summary's fingerprint is malformed", fingerprint_problems(summary["fingerprint"]))
    differ = fingerprint_differences(baseline["fingerprint"], summary["fingerprint"])
    raise_problems("the baseline was made for another run (profile, data or split differ; make a baseline "
                   "from a matching run with --update)", differ)
    keys = [k for k in baseline["entries"] if k in run]
    if not keys:
        raise GateError(f"the gate checks no configuration: none of the baseline's {len(baseline['entries'])} "
                        "configurations is in this run")
    if not baseline["quality"] and not check_speed:
        raise GateError("the gate checks nothing: the baseline gates no quality metric and speed is off")
    raise_problems("the run cannot be gated", _run_problems(run, baseline, keys, check_speed))
    return run, keys


def compare(summary: dict, baseline: dict, check_speed: bool = True) -> tuple[list[str], list[str]]:
    """Return ``(failures, notes)``; no failures means the gate passes. :class:`GateError` when the gate
    cannot mean anything (see :func:`_preflight`)."""
    run, _ = _preflight(summary, baseline, check_speed)
    failures, notes = [], []
    speed = baseline["speed"]
    for key, base in baseline["entries"].items():
        if key not in run:
            failures.append(f"{key}: in the baseline but not in this run")
            continue
        e = run[key]
        for metric, rule in baseline["quality"].items():
            old, new = base[metric], e["mean"][metric]
            if _undefined(new):  # NaN in the run: the configuration lost its quality, a regression
                failures.append(f"{key}: {metric} is undefined (baseline {old:.4f})")
                continue
            drop = (old - new) if rule["higher_is_better"] else (new - old)
            if drop > rule["tolerance"]:
                failures.append(f"{key}: {metric} {new:.4f} vs baseline {old:.4f} "
                                f"(worse by {drop:.4f} > tolerance {rule['tolerance']})")
        if check_speed:
            ratio, old = e["ratio_to_dense"][speed["reference"]], base["ratio"]
            limit = max(old * speed["factor"], speed["floor"])
            if ratio > limit:
                failures.append(f"{key}: prediction takes {ratio:.4f} of {speed['reference']} "
                                f"(baseline {old:.4f}, limit {limit:.4f})")
    for key in sorted(set(run) - set(baseline["entries"])):
        notes.append(f"{key}: new configuration, not in the baseline")
    return failures, notes


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number strict JSON allows (a gate needs finite numbers)")


def load_json(path: Path, what: str, strict: bool = True) -> dict:
    """The JSON at ``path`` (:class:`GateError` naming the file when it cannot be read). ``strict``:
    NaN and Infinity are refused (a baseline); a run summary may hold NaN (an undefined metric, which
    the gate reports as a regression)."""
    try:
        return json.loads(Path(path).read_text(), **({"parse_constant": _refuse_constant} if strict else {}))
    except FileNotFoundError:
        raise GateError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise GateError(f"{what} {path} is a folder, not a JSON file") from None
    except UnicodeDecodeError as exc:
        raise GateError(f"{what} {path} is not text: {exc}") from None
    except ValueError as exc:  # JSONDecodeError included
        raise GateError(f"{what} {path} is not valid JSON: {exc}") from None


def load_baseline(path: Path) -> dict:
    """A baseline file, parsed strictly and schema-checked (:func:`check_baseline`)."""
    base = load_json(path, "baseline")
    check_baseline(base, f"baseline {path}")
    return base
