"""Regression gates: a run's summary against a committed baseline (``sparsebench compare``).

Quality: for every configuration in the baseline, each gated metric must not move in the wrong
direction by more than its tolerance (``higher_is_better`` says which direction is wrong, and must agree
with :mod:`bench.evaluation.metric_table`). A configuration of the baseline missing from the run fails
too; new configurations are listed.

Seeds and intervals as tolerances. A configuration's value is the mean over the seeds its baseline
entry lists (``seeds``; absent: seed 0 alone, the record ``<dataset>--<backend>--<name>``, exactly
what baselines made before seeds gated); a seed ``r > 0`` is the run's record ``...--seed<r>``
(:mod:`bench.results.seeds`), and a listed seed the run lacks fails like a missing configuration.
When the entry carries an interval for a metric (``intervals``: ``{metric: [lo, hi]}``, the 95%
percentile bootstrap interval of the configuration's mean over eval samples, and over seeds when
there are several: :func:`bench.results.intervals.mean_interval`), the run's value regresses only
when it is worse than the interval's far bound by more than the tolerance: below ``lo - tolerance``
for a higher-better metric, above ``hi + tolerance`` for a lower-better one. Without an interval the
rule is the one above, against the baseline's value. The interval is what the baseline's own data
could have given (other eval samples, other seeds): a change inside it is not told apart from
noise, so a gate with intervals catches less on deterministic configurations than one without
(``sparsebench compare --update --no-intervals`` makes a baseline without them).

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
                                                  "ratio": ...,
                                                  "seeds": [0, 1, 2],                  (optional)
                                                  "intervals": {"recall": [lo, hi]}},  (optional)
                 ...}}
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

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
from bench.results.intervals import mean_interval
from bench.results.seeds import config_key, entry_key, group_seeds, mean_over_seeds, seed_suffix

DEFAULT_QUALITY = default_gates()  # bench.evaluation.metric_table: recall, sparsity, exact
DEFAULT_SPEED = {"reference": "entmax15-topk", "factor": 5.0, "floor": 0.02}
N_BOOT, LEVEL = 1000, 0.95  # replicates and coverage of a baseline's intervals
__all__ = ["GateError", "checked_keys", "compare", "entry_key", "load_baseline", "make_baseline"]


def make_baseline(summary: dict, quality=None, speed=None, intervals: bool = True) -> dict:
    """A baseline from a run summary: its fingerprint, and per configuration its gated means and speed
    ratio (means over its seeds when it has several, listed in ``seeds``) and, with ``intervals``, the
    bootstrap interval of each gated mean where the summary has per-sample values (:func:`_intervals`).

    Refused (:class:`GateError`) when the summary has no fingerprint or no configuration, or when a gated
    mean or the speed ratio of a configuration is undefined: such a baseline would check nothing there.
    """
    quality = quality or DEFAULT_QUALITY
    speed = speed or DEFAULT_SPEED
    _run_entries(summary)
    entries = {}
    for key, by_seed in group_seeds(summary["predictors"]).items():
        runs = list(by_seed.values())
        row = {m: mean_over_seeds([e["mean"].get(m) for e in runs]) for m in quality}
        row["ratio"] = mean_over_seeds([(e.get("ratio_to_dense") or {}).get(speed["reference"]) for e in runs])
        if list(by_seed) != [0]:
            row["seeds"] = list(by_seed)
        bounds = _intervals(key, runs, quality) if intervals else {}
        if bounds:
            row["intervals"] = bounds
        entries[key] = row
    base = {"format": BASELINE_FORMAT, "fingerprint": summary["fingerprint"], "quality": quality,
            "speed": speed, "entries": dict(sorted(entries.items()))}
    check_baseline(base, "the baseline made from this run", hint="a configuration without a defined value "
                   "cannot be gated: fix the run, or leave the configuration out")
    return base


def _intervals(key: str, runs: list[dict], quality: dict) -> dict[str, list[float]]:
    """``{metric: [lo, hi]}``: per gated metric, the interval of the configuration's mean over eval samples
    and seeds (:func:`bench.results.intervals.mean_interval` of the ``[R, S]`` per-sample values of its
    ``R`` seeds, replicates drawn from ``crc32(key)``). A metric without per-sample values in every seed
    (an older run), with samples of unequal count, or with a NaN sample has none (its old tolerance)."""
    out = {}
    for metric in quality:
        rows = [(e.get("per_sample") or {}).get(metric) for e in runs]
        if any(not isinstance(r, list) or not r for r in rows) or len({len(r) for r in rows}) != 1:
            continue
        values = np.array([[math.nan if v is None else v for v in r] for r in rows], dtype=float)
        lo, hi = mean_interval(values, N_BOOT, seed=zlib.crc32(key.encode()), level=LEVEL)
        if math.isfinite(lo) and math.isfinite(hi):
            out[metric] = [lo, hi]
    return out


def _seed_keys(key: str, base: dict) -> list[str]:
    """The run's record keys a baseline entry gates: one per seed it lists (seed 0 alone when none)."""
    return [key + seed_suffix(s) for s in base.get("seeds", [0])]


def _run_entries(summary) -> dict[str, dict]:
    """The run's records by key (:func:`bench.results.seeds.entry_key`: the configuration, and
    ``--seed<r>`` for a seed ``r > 0``); :class:`GateError` for a summary the gates cannot read."""
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
        seed = e.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise GateError(f"the run summary's predictors[{i}] has seed {json.dumps(seed)}, not an integer >= 0")
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
    """The baseline's configurations that are in the run with every seed they list: what the gate checks."""
    return _present(_run_entries(summary), baseline)


def _present(run: dict, baseline: dict) -> list[str]:
    return [k for k, b in baseline["entries"].items() if all(s in run for s in _seed_keys(k, b))]


def _preflight(summary: dict, baseline: dict, check_speed: bool) -> tuple[dict, list[str]]:
    """Refuse (:class:`GateError`) every gate that cannot mean anything; return the run's entries and
    the configurations to check."""
    check_baseline(baseline)
    run = _run_entries(summary)
    raise_problems("the run summary's fingerprint is malformed", fingerprint_problems(summary["fingerprint"]))
    differ = fingerprint_differences(baseline["fingerprint"], summary["fingerprint"])
    raise_problems("the baseline was made for another run (profile, data or split differ; make a baseline "
                   "from a matching run with --update)", differ)
    keys = _present(run, baseline)
    if not keys:
        raise GateError(f"the gate checks no configuration: none of the baseline's {len(baseline['entries'])} "
                        "configurations is in this run")
    if not baseline["quality"] and not check_speed:
        raise GateError("the gate checks nothing: the baseline gates no quality metric and speed is off")
    records = [s for k in keys for s in _seed_keys(k, baseline["entries"][k])]
    raise_problems("the run cannot be gated", _run_problems(run, baseline, records, check_speed))
    return run, keys


def compare(summary: dict, baseline: dict, check_speed: bool = True) -> tuple[list[str], list[str]]:
    """Return ``(failures, notes)``; no failures means the gate passes. :class:`GateError` when the gate
    cannot mean anything (see :func:`_preflight`)."""
    run, _ = _preflight(summary, baseline, check_speed)
    failures, notes, gated = [], [], set()
    speed = baseline["speed"]
    for key, base in baseline["entries"].items():
        keys = _seed_keys(key, base)
        gated.update(keys)
        lost = [s for s, k in zip(base.get("seeds", [0]), keys) if k not in run]
        if len(lost) == len(keys):
            failures.append(f"{key}: in the baseline but not in this run")
            continue
        if lost:
            failures.append(f"{key}: seed(s) {', '.join(map(str, lost))} in the baseline but not in this run")
            continue
        runs = [run[k] for k in keys]
        label = key if len(keys) == 1 else f"{key} (mean of seeds {', '.join(map(str, base['seeds']))})"
        for metric, rule in baseline["quality"].items():
            new = mean_over_seeds([e["mean"][metric] for e in runs])
            failures += _quality_failure(label, metric, rule, base, new)
        if check_speed:
            ratio = mean_over_seeds([e["ratio_to_dense"][speed["reference"]] for e in runs])
            old = base["ratio"]
            limit = max(old * speed["factor"], speed["floor"])
            if ratio > limit:
                failures.append(f"{label}: prediction takes {ratio:.4f} of {speed['reference']} "
                                f"(baseline {old:.4f}, limit {limit:.4f})")
    for key in sorted(set(run) - gated):
        known = config_key(run[key]) in baseline["entries"]
        notes.append(f"{key}: " + ("a seed the baseline does not gate" if known
                                   else "new configuration, not in the baseline"))
    return failures, notes


def _quality_failure(label: str, metric: str, rule: dict, base: dict, new: float) -> list[str]:
    """The failure line of one gated metric (none when it holds): worse than the baseline's value, or
    with an interval worse than its far bound, by more than the tolerance (module docstring)."""
    old, tolerance = base[metric], rule["tolerance"]
    if _undefined(new):  # NaN in the run: the configuration lost its quality, a regression
        return [f"{label}: {metric} is undefined (baseline {old:.4f})"]
    interval = (base.get("intervals") or {}).get(metric)
    higher = rule["higher_is_better"]
    if interval is None:
        drop = (old - new) if higher else (new - old)
        return [f"{label}: {metric} {new:.4f} vs baseline {old:.4f} (worse by {drop:.4f} > tolerance {tolerance})"
                ] if drop > tolerance else []
    lo, hi = interval
    drop = (lo - new) if higher else (new - hi)
    side = "below its lower" if higher else "above its upper"
    return [f"{label}: {metric} {new:.4f} vs baseline {old:.4f} [{lo:.4f}, {hi:.4f}] ({side} bound by "
            f"{drop:.4f} > tolerance {tolerance})"] if drop > tolerance else []


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
