"""What a valid result record holds: required fields and their types per record kind, and metric ranges.

Every benchmark module of ``bench/suite`` writes records of one kind (``records/<kind>/<id>.json``);
the schema below lists, per kind, the fields that the summary, the report and the gates read (required)
and the other fields the suite writes (optional, type-checked when present). Fields not listed are
allowed: records grow, and a reader ignores what it does not know.

Ranges (:data:`RANGES`): wherever a field named after a share (recall, sparsity, precision, exact, mass,
gold and tile sparsity, ...) holds a number or nested lists of numbers, each must lie in [0, 1]; errors,
times and FLOPs must be >= 0. ``null`` stands for NaN (undefined, e.g. recall of a head with no gold pair)
and is allowed wherever the type says ``number?``. Names and directions of metrics come from
:mod:`bench.evaluation.metric_table`; a test checks that every metric of that table has a range here.
"""

from __future__ import annotations

import math

from bench.evaluation.metric_table import METRIC_TABLE

# Shares are computed in float32 on some paths (e.g. sparse execution statistics): allow its rounding
# past the bounds, not more (7.5 or -3 is an edited or broken record, 1 + 1e-7 is float32).
SLACK = 1e-6
SHARE = (0.0, 1.0)
NONNEG = (0.0, math.inf)

RANGES: dict[str, tuple[float, float]] = {
    **{m: SHARE for m in ("recall", "sparsity", "precision", "exact", "mass", "gold_sparsity", "block_sparsity",
                          "support_sparsity", "effective_sparsity", "empty_rows", "codes_equal_fraction",
                          "per_layer_sparsity", "per_layer_support_sparsity")},
    **{m: NONNEG for m in ("output_error", "flops_ratio", "total_flops", "predict_seconds", "bpc",
                           "fit_seconds", "score_seconds", "reference_seconds", "prediction_flops",
                           "attention_flops", "dense_flops", "flops", "dense_seconds", "sparse_seconds",
                           "speedup_min", "speedup_median", "fit_ratio", "predict_ratio", "gold_pairs",
                           "pred_pairs", "valid_pairs", "sdpa_ratio_min", "sdpa_ratio_median", "peak_bytes",
                           "compile_seconds", "centroid_max_diff", "result_bytes", "working_bytes",
                           "dense_scores_bytes", "efficiency_min", "seconds")},
}
# Timing statistics (bench.execution.timing.time_record): seconds, never negative. A predictor's timing
# also names who timed it (engine serial or ray) and where (host, and on Ray the node id), and one timed
# on a Ray worker carries the dense references timed beside it in the same task ({method: timing}).
TIMING = {"mean": "number?", "median": "number?", "min": "number?", "stddev": "number?",
          "per_head_mean": "number?", "rounds": "int", "engine": "str", "host": "str", "node_id": "str",
          "reference": "object"}
# Free-form objects: descriptors, versions and predictor parameters are not metric fields.
OPAQUE = ("dataset_descriptor", "environment", "params")

_RECORD = {"kind": "str"}
REQUIRED: dict[str, dict[str, str]] = {
    "predictor": {**_RECORD, "dataset": "str", "backend": "str", "name": "str", "family": "str",
                  "params": "object", "mean": "metrics", "per_head": "per_head", "time": "timing",
                  "fit_seconds": "number", "prediction_flops": "number", "attention_flops": "number",
                  "dense_flops": "number", "dataset_descriptor": "object", "environment": "object",
                  "eval_samples": "int", "fit_samples": "int"},
    "dense": {**_RECORD, "dataset": "str", "method": "str", "time": "timing"},
    "scaling": {**_RECORD, "n": "int", "backend": "str", "method": "str", "time": "timing"},
    "gold": {**_RECORD, "n": "int", "gold_sparsity": "number?", "time": "timing"},
    "twin": {**_RECORD, "dataset": "str", "name": "str", "family": "str", "fit_ratio": "number?",
             "predict_ratio": "number?", "codes_equal_fraction": "number?"},
    "downstream": {**_RECORD, "dataset": "str", "name": "str", "family": "str", "metric": "str",
                   "higher_is_better": "bool", "value": "number?", "reference": "number?", "delta": "number?",
                   "sparsity": "number?"},
    "sparse_exec": {**_RECORD, "n": "int", "backend": "str", "method": "str", "time": "timing"},
    "sparse_exec_goal": {**_RECORD, "n": "int", "method": "str", "reference": "str", "speedup_min": "number?",
                         "speedup_median": "number?", "synthetic": "object", "minilm": "object"},
    # bench_gold.py at gold_memory_n: one untimed gold layer's peak memory and the bytes of its result.
    "gold_memory": {**_RECORD, "n": "int", "peak_bytes": "int", "result_bytes": "int", "dense_scores_bytes": "int"},
    # bench_sparse_real.py: prediction + sparse execution against dense entmax on one layer of real heads.
    "sparse_exec_real": {**_RECORD, "dataset": "str", "length": "int", "method": "str", "reference": "str",
                         "n_mean": "number", "speedup_min": "number?", "speedup_median": "number?",
                         "recall": "number?", "sparsity": "number?"},
    # bench_gpu.py (--profile gpu): attention timed on a CUDA GPU, and FAISS-GPU twins against torch on it.
    "gpu": {**_RECORD, "n": "int", "backend": "str", "method": "str", "dtype": "str", "time": "timing",
            "device_name": "str"},
    "gpu_twin": {**_RECORD, "n": "int", "name": "str", "family": "str", "predict_ratio": "number?",
                 "codes_equal_fraction": "number?", "device_name": "str"},
}
OPTIONAL: dict[str, dict[str, str]] = {
    "predictor": {"gold_sparsity": "number?", "device": "str", "layers": "int", "heads": "int",
                  "predict_seconds": "number?", "score_seconds": "number", "seed": "int"},
    "dense": {"device": "str"},
    "scaling": {"device": "str", "heads": "int", "head_dim": "int", "flops": "number"},
    "gold": {"heads": "int", "head_dim": "int", "sdpa_time": "timing", "sdpa_ratio_min": "number?",
             "sdpa_ratio_median": "number?", "peak_bytes": "int", "peak_how": "str"},
    "twin": {"params": "object", "device": "str", "heads": "int", "environment": "object",
             "fit_seconds": "object", "predict_seconds": "object"},
    "downstream": {"backend": "str", "params": "object", "support_sparsity": "number?", "time": "timing",
                   "fit_seconds": "number", "predict_seconds": "number?", "eval_samples": "int",
                   "dataset_descriptor": "object", "environment": "object", "per_sample": "numbers"},
    "sparse_exec": {"device": "str", "heads": "int", "head_dim": "int", "causal": "bool",
                    "sparsity": "number?", "support_sparsity": "number?", "predict_seconds": "number?",
                    "environment": "object"},
    "sparse_exec_goal": {"device": "str", "heads": "int", "rounds": "int", "dense_seconds": "numbers",
                         "sparse_seconds": "numbers", "efficiency_min": "number?", "environment": "object"},
    "gold_memory": {"heads": "int", "head_dim": "int", "seconds": "number", "gold_sparsity": "number?",
                    "peak_how": "str", "working_bytes": "int"},
    "sparse_exec_real": {"layer": "int", "n_min": "int", "n_max": "int", "eval_samples": "int", "rounds": "int",
                         "dense_seconds": "numbers", "sparse_seconds": "numbers", "efficiency_min": "number?",
                         "mass": "number?", "output_error": "number?", "gold_sparsity": "number?",
                         "all_layers": "object", "fit_seconds": "number", "device": "str", "heads": "int",
                         "dataset_descriptor": "object", "environment": "object"},
    "gpu": {"device": "str", "heads": "int", "head_dim": "int", "causal": "bool", "sparsity": "number?",
            "support_sparsity": "number?", "predict_seconds": "number?", "output_error": "number?",
            "compile_seconds": "number?", "peak_bytes": "int", "gold_sparsity": "number?", "environment": "object"},
    "gpu_twin": {"fit_ratio": "number?", "fit_seconds": "object", "predict_seconds": "object", "heads": "int",
                 "centroid_max_diff": "number?", "rounds": "int", "fit_what": "str", "environment": "object"},
}
RECORD_KINDS: tuple[str, ...] = tuple(REQUIRED)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_problem(v, typ: str) -> str | None:
    """Why ``v`` is not of schema type ``typ`` (None when it is)."""
    ok = {"str": lambda: isinstance(v, str), "bool": lambda: isinstance(v, bool),
          "int": lambda: isinstance(v, int) and not isinstance(v, bool), "number": lambda: _is_number(v),
          "number?": lambda: v is None or _is_number(v),
          "object": lambda: isinstance(v, dict), "metrics": lambda: isinstance(v, dict),
          "per_head": lambda: isinstance(v, dict), "timing": lambda: isinstance(v, dict),
          "numbers": lambda: isinstance(v, list) and all(x is None or _is_number(x) for x in v)}[typ]
    if ok():
        return None
    want = {"str": "a string", "bool": "true or false", "int": "an integer", "number": "a number",
            "number?": "a number or null", "numbers": "a list of numbers"}.get(typ, "an object")
    return f"is {_describe(v)}, expected {want}"


def _describe(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (dict, list)):
        return "an object" if isinstance(v, dict) else "a list"
    return repr(v) if not isinstance(v, str) else f"the string {v!r}"


def _numbers(v):
    """Every number in ``v`` (a number, or nested lists of numbers); None (NaN) is skipped."""
    if isinstance(v, list):
        for x in v:
            yield from _numbers(x)
    elif _is_number(v):
        yield v


def range_problems(obj, prefix: str = "") -> list[str]:
    """Every field of ``obj`` (walked recursively, descriptors and parameters left out) whose name has a
    range in :data:`RANGES` and which holds a number outside it (or a non-finite number)."""
    out = []
    if not isinstance(obj, dict):
        return out
    for key, v in obj.items():
        where = f"{prefix}{key}"
        if key in OPAQUE:
            continue
        if isinstance(v, dict):
            out += range_problems(v, where + ".")
            continue
        lo, hi = RANGES.get(key, (-math.inf, math.inf))
        for x in _numbers(v):
            if not math.isfinite(x):
                out.append(f"field '{where}' is {x!r}, not a finite number")
            elif x < lo - SLACK or x > hi + SLACK:
                out.append(f"field '{where}' is {x!r}, outside [{lo:g}, {hi:g}]")
                break
    return out


def _shape(matrix) -> tuple[int, int] | None:
    """``(rows, cols)`` of a list of equally long lists of numbers or nulls, else None."""
    if not isinstance(matrix, list) or not all(isinstance(r, list) for r in matrix):
        return None
    if len({len(r) for r in matrix}) > 1 or not all(x is None or _is_number(x) for r in matrix for x in r):
        return None
    return len(matrix), len(matrix[0]) if matrix else 0


def _predictor_problems(rec: dict) -> list[str]:
    """Metric names and per-head matrices of a predictor record: ``per_head[m]`` is ``[layers][heads]``."""
    out = []
    for m, v in rec["mean"].items():
        if m not in METRIC_TABLE:
            out.append(f"field 'mean.{m}' is not a metric of bench/evaluation/metric_table.py")
        elif _type_problem(v, "number?"):
            out.append(f"field 'mean.{m}' {_type_problem(v, 'number?')}")
    out += [f"field 'mean' misses '{m}'" for m in ("recall", "sparsity") if m not in rec["mean"]]
    if "recall" not in rec["per_head"]:
        return out + ["field 'per_head' misses 'recall'"]
    want = _shape(rec["per_head"]["recall"])
    if "layers" in rec and "heads" in rec and want is not None:
        want = want if want == (rec["layers"], rec["heads"]) else None
        if want is None:
            out.append(f"field 'per_head.recall' is not {rec['layers']} layers x {rec['heads']} heads")
    for m, v in rec["per_head"].items():
        if _shape(v) is None or (want is not None and _shape(v) != want):
            out.append(f"field 'per_head.{m}' is not a layers x heads table of numbers like per_head.recall")
    return out


def _timing_problems(timing: dict, where: str) -> list[str]:
    """A timing object (``bench.execution.timing.time_record``): typed statistics, seconds >= 0."""
    out = [] if "mean" in timing else [f"field '{where}' misses 'mean'"]
    for k, typ in TIMING.items():
        if k not in timing:
            continue
        if p := _type_problem(timing[k], typ):
            out.append(f"field '{where}.{k}' {p}")
        elif k == "reference":
            for method, t in timing[k].items():
                out += (_timing_problems(t, f"{where}.reference.{method}") if isinstance(t, dict)
                        else [f"field '{where}.reference.{method}' is {_describe(t)}, expected an object"])
        elif _is_number(timing[k]) and not (0 <= timing[k] < math.inf):
            out.append(f"field '{where}.{k}' is {timing[k]!r}, outside [0, inf)")
    return out


def record_problems(rec, kind: str) -> list[str]:
    """Every way ``rec`` (a parsed record) breaks the schema of ``kind``; an empty list when it is valid."""
    if kind not in REQUIRED:
        return [f"has unknown kind {kind!r} (known: {', '.join(RECORD_KINDS)})"]
    if not isinstance(rec, dict):
        return [f"is {_describe(rec)}, not a JSON object"]
    if rec.get("kind") != kind:
        return [f"is not a {kind!r} record (its field 'kind' is {_describe(rec.get('kind'))})"]
    out = [f"misses required field '{f}'" for f in REQUIRED[kind] if f not in rec]
    fields = {**OPTIONAL[kind], **REQUIRED[kind]}
    for f, typ in fields.items():
        if f in rec and (p := _type_problem(rec[f], typ)):
            out.append(f"field '{f}' {p}")
    if out:  # the checks below read the fields' contents: only once their types are right
        return out
    for f in (f for f, typ in fields.items() if typ == "timing" and f in rec):
        out += _timing_problems(rec[f], f)
    if kind == "predictor":
        out += _predictor_problems(rec)
    return out + range_problems({k: v for k, v in rec.items() if fields.get(k) != "timing"})
