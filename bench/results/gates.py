"""Regression gates: a run's summary against a committed baseline (``sparsebench compare``).

Quality: for every configuration in the baseline, each gated metric must not move in the wrong
direction by more than its tolerance (``higher_is_better`` says which direction is wrong). A
configuration of the baseline that is missing from the run fails too; new configurations are listed.

Speed: never absolute seconds. Each configuration's prediction time divided by the dense
``entmax15-topk`` time *measured in the same run* must stay below ``factor x`` the baseline's ratio,
or below ``floor`` (tiny ratios such as a window's are mostly timer noise).

The baseline file (JSON)::

    {"quality": {"recall": {"tolerance": 0.01, "higher_is_better": true}, ...},
     "speed": {"reference": "entmax15-topk", "factor": 5.0, "floor": 0.02},
     "entries": {"<dataset>--<backend>--<name>": {"recall": ..., "sparsity": ..., "exact": ...,
                                                  "ratio": ...}, ...}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.errors import BenchError
from bench.evaluation.metric_table import default_gates

DEFAULT_QUALITY = default_gates()  # bench.evaluation.metric_table: recall, sparsity, exact
DEFAULT_SPEED = {"reference": "entmax15-topk", "factor": 5.0, "floor": 0.02}


def entry_key(entry: dict) -> str:
    return f"{entry['dataset']}--{entry['backend']}--{entry['name']}"


def make_baseline(summary: dict, quality=None, speed=None) -> dict:
    """A baseline from a run summary: its gated means and its speed ratios."""
    quality = quality or DEFAULT_QUALITY
    speed = speed or DEFAULT_SPEED
    entries = {}
    for e in summary["predictors"]:
        row = {m: e["mean"][m] for m in quality}
        row["ratio"] = e["ratio_to_dense"].get(speed["reference"])
        entries[entry_key(e)] = row
    return {"quality": quality, "speed": speed, "entries": dict(sorted(entries.items()))}


def compare(summary: dict, baseline: dict, check_speed: bool = True) -> tuple[list[str], list[str]]:
    """Return ``(failures, notes)``; no failures means the gate passes."""
    failures, notes = [], []
    run = {entry_key(e): e for e in summary["predictors"]}
    speed = baseline.get("speed", DEFAULT_SPEED)
    for key, base in baseline["entries"].items():
        e = run.get(key)
        if e is None:
            failures.append(f"{key}: in the baseline but not in this run")
            continue
        for metric, rule in baseline["quality"].items():
            old, new = base.get(metric), e["mean"].get(metric)
            if old is None:
                continue
            if new is None or (isinstance(new, float) and math.isnan(new)):
                failures.append(f"{key}: {metric} is undefined (baseline {old:.4f})")
                continue
            drop = (old - new) if rule["higher_is_better"] else (new - old)
            if drop > rule["tolerance"]:
                failures.append(f"{key}: {metric} {new:.4f} vs baseline {old:.4f} "
                                f"(worse by {drop:.4f} > tolerance {rule['tolerance']})")
        if check_speed:
            ratio = e["ratio_to_dense"].get(speed["reference"])
            old = base.get("ratio")
            if ratio is None:
                notes.append(f"{key}: no {speed['reference']} time in this run, speed not checked")
            elif old is not None:
                limit = max(old * speed["factor"], speed["floor"])
                if ratio > limit:
                    failures.append(f"{key}: prediction takes {ratio:.4f} of {speed['reference']} "
                                    f"(baseline {old:.4f}, limit {limit:.4f})")
    for key in sorted(set(run) - set(baseline["entries"])):
        notes.append(f"{key}: new configuration, not in the baseline")
    return failures, notes


def load_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BenchError(f"{what} {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"{what} {path} is not valid JSON: {exc}") from None
