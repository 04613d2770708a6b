"""Assemble a run's records into ``results.csv`` (tidy) and ``summary.json``.

``results.csv`` has one row per dataset x backend x predictor configuration x layer x head, with the
per-head metrics and the configuration's timings; ``summary.json`` has one entry per configuration
(means, timings, FLOPs and the ratio of its prediction time to each dense reference measured in the
same run on the same eval samples), the dense and scaling records, and the environment.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.data.atomic import write_atomic
from bench.evaluation.metrics import METRICS
from bench.results.records import load_records, write_json_atomic


def _ratios(rec: dict, dense: dict) -> dict:
    out = {}
    for (dataset, method), d in dense.items():
        if dataset == rec["dataset"]:
            out[method] = rec["time"]["mean"] / d["time"]["mean"] if d["time"]["mean"] else math.nan
    return out


def summarise(run: Path) -> dict:
    preds = load_records(run, "predictor")
    dense = {(d["dataset"], d["method"]): d for d in load_records(run, "dense")}
    scaling = load_records(run, "scaling")
    entries = []
    for rec in preds:
        entries.append({
            "dataset": rec["dataset"], "backend": rec["backend"], "name": rec["name"], "family": rec["family"],
            "params": rec["params"], "mean": rec["mean"], "time": rec["time"], "fit_seconds": rec["fit_seconds"],
            "prediction_flops": rec["prediction_flops"], "attention_flops": rec["attention_flops"],
            "dense_flops": rec["dense_flops"], "gold_sparsity": rec.get("gold_sparsity"),
            "ratio_to_dense": _ratios(rec, dense), "dataset_descriptor": rec.get("dataset_descriptor"),
            "family_kind": rec.get("family_kind"),  # predictors.registry.KINDS; absent in older records
        })
    # Downstream runs and sparse execution (bench_downstream.py, bench_sparse_exec.py): records as written.
    downstream = load_records(run, "downstream")
    sparse_exec = load_records(run, "sparse_exec")
    sparse_goal = load_records(run, "sparse_exec_goal")
    env = preds[0]["environment"] if preds else next(
        (r["environment"] for r in downstream + sparse_exec + sparse_goal if r.get("environment")), {})
    return {"environment": env, "predictors": entries, "dense": list(dense.values()), "scaling": scaling,
            "twins": load_records(run, "twin"), "downstream": downstream, "sparse_exec": sparse_exec,
            "sparse_exec_goal": sparse_goal}


def tidy_rows(run: Path) -> list[dict]:
    rows = []
    for rec in load_records(run, "predictor"):
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
                rows.append(r)
    return rows


def write_summary(run: Path) -> list[Path]:
    import pandas as pd

    summary = summarise(run)
    paths = []
    out = run / "summary.json"
    write_json_atomic(out, summary)
    paths.append(out)
    rows = tidy_rows(run)
    if rows:
        csv = run / "results.csv"
        write_atomic(csv, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
        paths.append(csv)
    return paths
