"""Assemble a run's records into ``results.csv`` (tidy) and ``summary.json``.

``results.csv`` has one row per dataset x backend x predictor configuration x seed x layer x head, with
the per-head metrics and the configuration's timings; ``summary.json`` has one entry per predictor record
(a configuration, and one per seed of a randomised configuration, with its ``seed``: means, per-sample
values, timings, FLOPs and the ratio of its prediction time to each dense reference measured in the
same run on the same eval samples; the report and the gates group a configuration's seeds), the dense
and scaling records, the environment, and the run's ``fingerprint`` (what the gates check a baseline
against, :func:`fingerprint`).

Only verified records are summarised (:func:`bench.results.records.read_record`). A run with a refused
record has no summary: :func:`write_summary` removes the previous ``summary.json`` and ``results.csv``
(they would describe other numbers) and raises :class:`SummaryError` naming the bad files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.data.atomic import write_atomic
from bench.errors import BenchError
from bench.evaluation.metrics import METRICS
from bench.results.records import load_records, write_json_atomic
from bench.results.schema import RECORD_KINDS
from bench.results.seeds import entry_seed

SHOWN_BAD = 3  # bad records named in the one-line error; the rest are counted


class SummaryError(BenchError):
    """A run whose summary cannot be built: bad records remain, or its records disagree on the data."""


def _ratios(rec: dict, dense: dict) -> dict:
    """Prediction time over each dense reference's time on the same eval samples: the references timed
    beside it in its own task when it carries them (a Ray worker's: the same machine, the same moment;
    the run's dense records, timed on another machine, would make a ratio of two machines), else the
    run's dense records of its dataset."""
    own = rec["time"].get("reference")
    refs = own.items() if own else [(m, d["time"]) for (ds, m), d in dense.items() if ds == rec["dataset"]]
    return {m: rec["time"]["mean"] / t["mean"] if t["mean"] else math.nan for m, t in refs}


def load_run(run: Path) -> dict[str, list[dict]]:
    """Every verified record of ``run`` by kind; :class:`SummaryError` if any record is refused."""
    loaded = {kind: load_records(run, kind) for kind in RECORD_KINDS}
    bad = [err for ld in loaded.values() for err in ld.bad]
    if bad:
        shown = "; ".join(str(e) for e in bad[:SHOWN_BAD])
        more = f" (and {len(bad) - SHOWN_BAD} more)" if len(bad) > SHOWN_BAD else ""
        raise SummaryError(f"cannot summarise {run}: {len(bad)} bad record(s): {shown}{more}")
    return {kind: ld.records for kind, ld in loaded.items()}


def session_profiles(run: Path) -> list[str]:
    """The profiles named in the run's ``benchmark-*.json`` (pytest-benchmark's machine info, written
    by ``bench/suite/conftest.py`` before the summary at the end of each session)."""
    found = set()
    for path in sorted(Path(run).glob("benchmark-*.json")):
        try:
            info = json.loads(path.read_text()).get("machine_info", {}).get("sparsebench", {})
        except (OSError, ValueError, AttributeError):
            continue  # pytest-benchmark's file, not a record: an unreadable one only tells us nothing
        if isinstance(info, dict) and isinstance(info.get("profile"), str):
            found.add(info["profile"])
    return sorted(found)


def fingerprint(preds: list[dict], profile: str | None) -> dict:
    """What the numbers of a run depend on besides the code: the profile, and per dataset its descriptor
    (source, corpus name and SHA-256, data options, model; what the data cache keys on) and its split.

    Returns ``{"profile": str | None, "datasets": {dataset: {"descriptor": {...}, "fit_samples": int,
    "eval_samples": int}}}``. Predictor records of one dataset that disagree raise :class:`SummaryError`.
    """
    datasets: dict[str, dict] = {}
    for rec in preds:
        fp = {"descriptor": rec["dataset_descriptor"], "fit_samples": rec["fit_samples"],
              "eval_samples": rec["eval_samples"]}
        if "split" in rec:  # records before the validation split have neither
            fp.update(split=rec["split"], val_samples=rec.get("val_samples"))
        seen = datasets.setdefault(rec["dataset"], fp)
        if seen != fp:
            raise SummaryError(f"the records of dataset {rec['dataset']!r} come from different data (e.g. "
                               f"{rec['name']} on {rec['backend']}): the run mixes two configurations; "
                               "measure it again with --fresh")
    return {"profile": profile, "datasets": dict(sorted(datasets.items()))}


def _profile(run: Path, profile: str | None) -> str | None:
    if profile is not None:
        return profile
    found = session_profiles(run)
    if len(found) > 1:
        raise SummaryError(f"{run} holds sessions of several profiles ({', '.join(found)}): its records mix "
                           "them; measure it again with --fresh")
    return found[0] if found else None


def _entry(rec: dict, dense: dict) -> dict:
    return {
        "dataset": rec["dataset"], "backend": rec["backend"], "name": rec["name"], "family": rec["family"],
        "params": rec["params"], "mean": rec["mean"], "time": rec["time"], "fit_seconds": rec["fit_seconds"],
        "prediction_flops": rec["prediction_flops"], "attention_flops": rec["attention_flops"],
        "dense_flops": rec["dense_flops"], "gold_sparsity": rec.get("gold_sparsity"),
        "ratio_to_dense": _ratios(rec, dense), "dataset_descriptor": rec.get("dataset_descriptor"),
        "family_kind": rec.get("family_kind"),  # predictors.registry.KINDS; absent in older records
        # Selection on validation, intervals over eval samples (bench.report.selection, front_stats).
        **{k: rec[k] for k in ("per_sample", "val", "split", "variant", "seed") if k in rec},
    }


def summarise(run: Path, profile: str | None = None, records: dict | None = None) -> dict:
    """The summary of ``run`` (``records``: :func:`load_run`'s, read when not given); ``profile``: the
    suite's profile name, else the one its sessions' ``benchmark-*.json`` name (None when none does)."""
    records = load_run(run) if records is None else records
    preds = records["predictor"]
    dense = {(d["dataset"], d["method"]): d for d in records["dense"]}
    # Downstream runs and sparse execution (bench_downstream.py, bench_sparse_exec.py): records as written.
    downstream, sparse_exec, sparse_goal = records["downstream"], records["sparse_exec"], records["sparse_exec_goal"]
    env = preds[0]["environment"] if preds else next(
        (r["environment"] for r in downstream + sparse_exec + sparse_goal + records["gpu"] + records["gpu_twin"]
         if r.get("environment")), {})
    return {"environment": env, "fingerprint": fingerprint(preds, _profile(run, profile)),
            "predictors": [_entry(rec, dense) for rec in preds], "dense": list(dense.values()),
            "scaling": records["scaling"], "twins": records["twin"], "downstream": downstream,
            "sparse_exec": sparse_exec, "sparse_exec_goal": sparse_goal,
            "sparse_exec_real": records["sparse_exec_real"], "gold": records["gold"],
            "gold_memory": records["gold_memory"],
            "gpu": records["gpu"], "gpu_twins": records["gpu_twin"]}


def tidy_rows(run: Path, preds: list[dict] | None = None) -> list[dict]:
    """One row per predictor record (configuration and seed) x layer x head (``preds``: the verified
    predictor records)."""
    rows = []
    for rec in load_run(run)["predictor"] if preds is None else preds:
        per_head = rec["per_head"]
        for layer, row in enumerate(per_head["recall"]):
            for head in range(len(row)):
                r = {"dataset": rec["dataset"], "backend": rec["backend"], "name": rec["name"],
                     "family": rec["family"], "layer": layer, "head": head}
                r.update({f"param_{k}": v for k, v in rec["params"].items()})
                for m in METRICS + ("gold_sparsity", "block_sparsity"):
                    if m not in per_head:
                        continue
                    v = per_head[m][layer][head]
                    r[m] = math.nan if v is None else v
                r["predict_seconds_mean"] = rec["time"]["mean"]
                r["fit_seconds"] = rec["fit_seconds"]
                r["seed"] = entry_seed(rec)  # last: the columns of runs before seeds keep their places
                rows.append(r)
    return rows


def _remove_stale(run: Path) -> None:
    for name in ("summary.json", "results.csv"):
        (Path(run) / name).unlink(missing_ok=True)


def write_summary(run: Path, profile: str | None = None) -> list[Path]:
    """Write ``summary.json`` and (when there are predictor records) ``results.csv`` of ``run``.

    Raises :class:`SummaryError` (after removing the previous summary and table, so no stale summary
    outlives a refused record) when a record is refused or the records disagree on the data.
    """
    import pandas as pd

    try:
        records = load_run(run)
        summary = summarise(run, profile, records)
    except BenchError:
        _remove_stale(run)
        raise
    paths = []
    out = run / "summary.json"
    write_json_atomic(out, summary)
    paths.append(out)
    rows = tidy_rows(run, records["predictor"])
    if rows:
        csv = run / "results.csv"
        write_atomic(csv, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
        paths.append(csv)
    else:
        (run / "results.csv").unlink(missing_ok=True)  # from an earlier summary with predictor records
    return paths
