"""The report's GPU section: a GPU run folder (``--profile gpu``, ``reports/gpu/`` once unpacked) as tables
and sentences, above all from which length predicted sparse execution beats AdaSplash.

Read from the GPU run's ``summary.json`` only (records ``gpu`` and ``gpu_twin``,
``bench/suite/bench_gpu.py``). :func:`against_adasplash` puts, at each ``n``, AdaSplash's fastest
dtype (the strongest exact reference) against each predictor's prediction plus sparse execution and
hands them to :func:`bench.report.crossover.crossover` with AdaSplash as the reference: the crossover is
the smallest measured ``n`` from which the predictor is faster at that and every larger measured ``n``.
:func:`gpu_section` says it in words, or that there is no GPU run yet.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.report.crossover import crossover

REFERENCE = "adasplash"
GPU_COLUMNS = ["n", "backend", "method", "dtype", "time_mean", "time_min", "sparsity", "output_error",
               "compile_seconds", "device_name"]
TWIN_COLUMNS = ["n", "name", "family", "fit_ratio", "predict_ratio", "codes_equal_fraction", "centroid_max_diff",
                "fit_what", "device_name"]
NO_RUN = ("No GPU run yet: `{path}` holds no `summary.json`. README.md, \"On a lent GPU\", says how to make one "
          "(`bench/suite/gpu_run.sh` in one call on a lent GPU, its archive unpacked into `reports/`).")


def _num(v) -> float:
    return math.nan if v is None else float(v)


def gpu_frame(summary: dict) -> pd.DataFrame:
    """One row per ``gpu`` record: :data:`GPU_COLUMNS`, sorted by method, dtype and n (NaN where unrecorded)."""
    rows = [{"n": int(r["n"]), "backend": r["backend"], "method": r["method"], "dtype": r["dtype"],
             "time_mean": _num((r.get("time") or {}).get("mean")), "time_min": _num((r.get("time") or {}).get("min")),
             **{k: _num(r.get(k)) for k in ("sparsity", "output_error", "compile_seconds")},
             "device_name": r.get("device_name", "")} for r in summary.get("gpu", [])]
    if not rows:
        return pd.DataFrame(columns=GPU_COLUMNS)
    return pd.DataFrame(rows, columns=GPU_COLUMNS).sort_values(["method", "dtype", "n"], ignore_index=True)


def twin_frame(summary: dict) -> pd.DataFrame:
    """One row per ``gpu_twin`` record: :data:`TWIN_COLUMNS`, sorted by name and n."""
    rows = [{"n": int(r["n"]), "name": r["name"], "family": r["family"],
             **{k: _num(r.get(k)) for k in ("fit_ratio", "predict_ratio", "codes_equal_fraction", "centroid_max_diff")},
             "fit_what": r.get("fit_what", ""), "device_name": r.get("device_name", "")}
            for r in summary.get("gpu_twins", [])]
    if not rows:
        return pd.DataFrame(columns=TWIN_COLUMNS)
    return pd.DataFrame(rows, columns=TWIN_COLUMNS).sort_values(["name", "n"], ignore_index=True)


def adasplash_best(frame: pd.DataFrame) -> pd.DataFrame:
    """At each ``n``, AdaSplash's fastest dtype: ``n, dtype, time_mean`` (empty without AdaSplash records)."""
    ada = frame[(frame["method"] == REFERENCE) & frame["time_mean"].notna()]
    if not len(ada):
        return pd.DataFrame(columns=["n", "dtype", "time_mean"])
    best = ada.loc[ada.groupby("n")["time_mean"].idxmin()]
    return best[["n", "dtype", "time_mean"]].sort_values("n", ignore_index=True)


def against_adasplash(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`bench.report.crossover.crossover` of every predictor's sparse execution against AdaSplash's
    fastest dtype at each ``n`` (columns as there; ``speedup_at_max`` = AdaSplash time / predictor time)."""
    best = adasplash_best(frame)
    ref = pd.DataFrame({"n": best["n"], "backend": "dense", "method": REFERENCE, "time_mean": best["time_mean"]})
    sparse = frame[frame["backend"] == "sparse"][["n", "backend", "method", "time_mean"]]
    return crossover(pd.concat([ref, sparse], ignore_index=True), REFERENCE)


def _times(v: float) -> str:
    return f"{v:,.0f}x" if v >= 100 else f"{v:.3g}x"


def crossover_sentence(row, frame: pd.DataFrame) -> str:
    """One predictor's answer: from which ``n`` it beats AdaSplash, or that it does not up to the largest
    measured ``n``, with the ratio there and its sparsity and output error (at the largest ``n`` with one)."""
    name = row["method"]
    what = f"{name}: predicted sparse execution (prediction included)"
    if pd.isna(row["n_max"]):
        return f"{name}: AdaSplash and its sparse execution were not timed at a common n."
    n_max, ratio = int(row["n_max"]), float(row["speedup_at_max"])
    at_max = (f"{_times(ratio)} faster than AdaSplash at n = {n_max}" if ratio >= 1
              else f"AdaSplash {_times(1 / ratio)} faster at n = {n_max}")
    if math.isnan(row["crossover_n"]):
        head = f"{what} does not beat AdaSplash up to n = {n_max}"
    elif row["always"]:
        head = f"{what} beats AdaSplash at every measured n (from n = {int(row['crossover_n'])})"
    else:
        head = f"{what} beats AdaSplash from n = {int(row['crossover_n'])}"
    rows = frame[(frame["backend"] == "sparse") & (frame["method"] == name)]
    quality = ""
    if len(rows):
        sp = rows.loc[rows["n"].idxmax(), "sparsity"]
        err = rows.dropna(subset=["output_error"])
        quality = "" if math.isnan(sp) else f"; sparsity {sp:.3f} at n = {n_max}"
        if len(err):
            last = err.loc[err["n"].idxmax()]
            quality += f", output error {last['output_error']:.3g} against dense entmax15 at n = {int(last['n'])}"
    return f"{head} ({at_max}{quality})."


def time_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Milliseconds per call: one row per ``n``, one column per ``method (dtype)``."""
    if not len(frame):
        return pd.DataFrame(columns=["n"])
    df = frame.assign(what=frame["method"] + " (" + frame["dtype"] + ")", ms=frame["time_mean"] * 1e3)
    table = df.pivot_table(index="n", columns="what", values="ms", aggfunc="first", sort=False)
    order = list(dict.fromkeys(df["what"]))
    return table[order].reset_index().rename_axis(columns=None)


@dataclass
class GpuSection:
    """What the report shows of a GPU run: ``markdown`` (the section), ``findings`` (for the first page),
    ``tables`` (name -> (frame, title), for CSV files) and ``frame`` (:func:`gpu_frame`)."""

    markdown: str
    findings: list[str] = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    frame: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=GPU_COLUMNS))


def gpu_section(run_dir: str | Path) -> GpuSection:
    """The GPU section of the report from the GPU run folder ``run_dir`` (no ``summary.json``: no GPU run yet)."""
    from bench.report.outputs import markdown_table, shown_path

    path = Path(run_dir)
    if not (path / "summary.json").is_file():
        return GpuSection(NO_RUN.format(path=shown_path(path)))
    summary = json.loads((path / "summary.json").read_text())
    frame, twins = gpu_frame(summary), twin_frame(summary)
    names = sorted({d for d in frame["device_name"].tolist() + twins["device_name"].tolist() if d})
    lines = [f"GPU run `{shown_path(path)}` on {', '.join(names) or 'an unnamed device'}: {len(frame)} attention "
             f"records, {len(twins)} twin records (one causal sample; times are means per call, in ms)."]
    findings, tables = [], {"gpu-times": (frame, "every GPU attention record (seconds per call)")}
    cross = against_adasplash(frame) if len(frame) else pd.DataFrame()
    if len(cross) and (frame["method"] == REFERENCE).any():
        sentences = [crossover_sentence(r, frame) for _, r in cross.iterrows()]
        text = ("**Predicted sparse execution against AdaSplash on the GPU** (AdaSplash's fastest dtype at each n):"
                "\n\n" + "\n".join(f"- {s}" for s in sentences))
        findings.append(text)
        lines += ["", text]
        tables["gpu-crossover-adasplash"] = (cross, "from which n sparse execution beats AdaSplash")
    elif len(frame):
        lines += ["", "No crossover: this run has no AdaSplash or no sparse-execution records."]
    if len(frame):
        lines += ["", "Time per call (ms):", "", markdown_table(time_table(frame))]
    if len(twins):
        tables["gpu-twins"] = (twins, "FAISS-GPU twins against torch twins on the GPU")
        shown = twins[["n", "name", "fit_ratio", "predict_ratio", "codes_equal_fraction", "centroid_max_diff"]]
        lines += ["", "FAISS-GPU twins against torch on the GPU (ratios of medians, FAISS over torch: below 1, "
                  "FAISS is faster):", "", markdown_table(shown)]
    return GpuSection("\n".join(lines), findings, tables, frame)


def gpu_plot_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`gpu_frame` in the shape :func:`bench.report.figures.plot_scaling` draws: the dense methods
    and the gold as ``backend = "dense"`` named ``method (dtype)``, sparse execution as it is."""
    dense = frame["backend"] != "sparse"
    method = frame["method"].where(~dense, frame["method"] + " (" + frame["dtype"] + ")")
    return pd.DataFrame({"n": frame["n"], "backend": frame["backend"].where(~dense, "dense"), "method": method,
                         "time_mean": frame["time_mean"], "time_min": frame["time_min"]})
