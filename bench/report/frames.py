"""A finished run's files as frames: configurations, per-head rows, scaling, environment, downstream
and sparse-execution records.

Everything the report shows is computed from these, from ``summary.json`` and ``results.csv`` only
(see :mod:`bench.results.summary`); nothing is measured again. A *configuration* is one predictor name
on one dataset and backend: a row of :func:`configs_frame`. Missing numbers are NaN throughout.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.evaluation.metrics import METRICS
from bench.report.series import BASELINE_SERIES, family_kind, series_label, variant_of


@dataclass
class Run:
    """A finished run, as frames. ``heads`` is empty when the run has no ``results.csv``."""

    path: Path
    summary: dict
    configs: pd.DataFrame
    heads: pd.DataFrame
    scaling: pd.DataFrame

    @property
    def datasets(self) -> list[str]:
        return sorted(self.configs["dataset"].unique()) if len(self.configs) else []


def load_run(run_dir: str | Path) -> Run:
    """Read ``summary.json`` (required) and ``results.csv`` (optional; or ``results.csv.gz``, as the
    committed reference keeps it) of a run folder."""
    path = Path(run_dir)
    sfile = path / "summary.json"
    if not sfile.is_file():
        raise BenchError(f"{path} has no summary.json: is it a run folder (reports/runs/NAME) of a finished run?")
    try:
        summary = json.loads(sfile.read_text())
    except json.JSONDecodeError as exc:
        raise BenchError(f"{sfile} is not valid JSON ({exc})") from None
    csv = next((f for f in (path / "results.csv", path / "results.csv.gz") if f.is_file()), None)
    heads = heads_frame(pd.read_csv(csv)) if csv is not None else heads_frame(pd.DataFrame())
    return Run(path=path, summary=summary, configs=configs_frame(summary), heads=heads,
               scaling=scaling_frame(summary))


def _num(v) -> float:
    return math.nan if v is None else float(v)


CONFIG_COLUMNS = ["dataset", "backend", "name", "family", "series", "baseline", "kind", "variant",
                  "variant_recorded", "seed", *METRICS, "gold_sparsity",
                  "predict_seconds", "fit_seconds", "prediction_flops", "attention_flops", "dense_flops",
                  "total_flops", "flops_ratio"]


def configs_frame(summary: dict) -> pd.DataFrame:
    """One row per configuration of ``summary["predictors"]``.

    Columns: ``dataset, backend, name, family, series, baseline`` (series is the window+sink baseline),
    ``kind``, ``variant`` and ``variant_recorded`` (:func:`bench.report.series.family_kind`,
    :func:`bench.report.series.variant_of`: recorded, or inferred for older runs), ``seed`` (NaN when
    none was recorded), the mean of every metric of :data:`bench.evaluation.metrics.METRICS`,
    ``gold_sparsity``, ``predict_seconds`` (mean prediction time of all eval layers), ``fit_seconds``,
    the FLOPs, ``total_flops`` (prediction plus attention on the predicted graph) and
    ``flops_ratio = total_flops / dense_flops``; then ``param_<key>`` for every parameter. Missing
    numbers are NaN.
    """
    rows = []
    for e in summary.get("predictors", []):
        mean = e.get("mean") or {}
        pred, att, dense = (_num(e.get(k)) for k in ("prediction_flops", "attention_flops", "dense_flops"))
        total = pred + att
        row = {"dataset": e["dataset"], "backend": e["backend"], "name": e["name"], "family": e["family"],
               "series": series_label(e["family"], e.get("params")),
               "kind": family_kind(e["family"], e.get("family_kind", e.get("kind"))),
               **dict(zip(("variant", "variant_recorded"), variant_of(e.get("params"), e.get("variant")))),
               "seed": _num(e.get("seed")),
               **{m: _num(mean.get(m)) for m in METRICS},
               "gold_sparsity": _num(e.get("gold_sparsity")),
               "predict_seconds": _num((e.get("time") or {}).get("mean")), "fit_seconds": _num(e.get("fit_seconds")),
               "prediction_flops": pred, "attention_flops": att, "dense_flops": dense, "total_flops": total,
               "flops_ratio": total / dense if dense and not math.isnan(dense) else math.nan}
        row["baseline"] = row["series"] == BASELINE_SERIES
        row.update({f"param_{k}": v for k, v in (e.get("params") or {}).items()})
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=CONFIG_COLUMNS)
    return pd.DataFrame(rows)


def heads_frame(results: pd.DataFrame) -> pd.DataFrame:
    """``results.csv`` (one row per configuration x layer x head) with a ``series`` column added."""
    df = results.copy()
    if df.empty:
        return pd.DataFrame(columns=["dataset", "backend", "name", "family", "series", "layer", "head"])
    g = df["param_g"] if "param_g" in df else pd.Series(0, index=df.index)
    s = df["param_s"] if "param_s" in df else pd.Series(0, index=df.index)
    df["series"] = [series_label(f, {"g": gv, "s": sv}) for f, gv, sv in zip(df["family"], g, s)]
    return df


def scaling_frame(summary: dict) -> pd.DataFrame:
    """The scaling records: ``n, backend, method, time_mean, time_min, flops`` (``backend == "dense"`` for
    the dense references), sorted by method, backend and n."""
    rows = [{"n": int(r["n"]), "backend": r["backend"], "method": r["method"],
             "time_mean": _num((r.get("time") or {}).get("mean")),
             "time_min": _num((r.get("time") or {}).get("min")), "flops": _num(r.get("flops"))}
            for r in summary.get("scaling", [])]
    if not rows:
        return pd.DataFrame(columns=["n", "backend", "method", "time_mean", "time_min", "flops"])
    return pd.DataFrame(rows).sort_values(["method", "backend", "n"], ignore_index=True)


def environment_rows(summary: dict) -> pd.DataFrame:
    """What ran the benchmark, as ``item, value`` rows: the recorded environment, the devices of the
    records, and per dataset its data descriptor (corpus hash included)."""
    rows = [{"item": k, "value": "" if v is None else str(v)}
            for k, v in sorted((summary.get("environment") or {}).items())]
    devices = sorted({r.get("device") for kind in ("dense", "scaling") for r in summary.get(kind, [])
                      if r.get("device")})
    rows.append({"item": "devices", "value": ", ".join(devices) if devices else "unknown"})
    seen = {}
    for e in summary.get("predictors", []):
        seen.setdefault(e["dataset"], e.get("dataset_descriptor"))
    for ds, desc in sorted(seen.items()):
        if not desc:
            rows.append({"item": f"data {ds}", "value": "no descriptor recorded"})
            continue
        for k, v in sorted(desc.items()):
            rows.append({"item": f"data {ds}: {k}", "value": v if isinstance(v, str) else json.dumps(v)})
    return pd.DataFrame(rows, columns=["item", "value"])


# ---------------------------------------------------------------- downstream effect and sparse execution


DOWNSTREAM_COLUMNS = ["dataset", "backend", "name", "family", "series", "metric", "higher_is_better", "value",
                      "reference", "delta", "sparsity", "support_sparsity", "empty_rows", "seconds", "fit_seconds",
                      "eval_samples"]


def downstream_frame(summary: dict) -> pd.DataFrame:
    """One row per downstream record (``summary["downstream"]``, ``bench/suite/bench_downstream.py``).

    Columns: ``dataset, backend, name, family, series`` (as :func:`bench.report.series.series_label`; the
    dense reference is family and series ``dense``), ``metric`` (``bpc`` or ``cosine``), ``higher_is_better``
    (recorded from :mod:`bench.evaluation.metric_table` when the record was written), ``value`` (the
    restricted model), ``reference`` (the dense-entmax model), ``delta = value - reference``, the effective
    ``sparsity`` and ``support_sparsity``, ``empty_rows``, ``seconds`` (mean time of the restricted run),
    ``fit_seconds``, ``eval_samples``; then ``cosine_to_softmax`` and ``reference_to_softmax`` where
    recorded, and ``param_<key>``. Sorted by dataset, series and sparsity.
    """
    rows = []
    for r in summary.get("downstream", []):
        row = {"dataset": r["dataset"], "backend": r.get("backend", "torch"), "name": r["name"],
               "family": r["family"], "series": series_label(r["family"], r.get("params")),
               "metric": r["metric"], "higher_is_better": bool(r["higher_is_better"]),
               **{k: _num(r.get(k)) for k in ("value", "reference", "delta", "sparsity", "support_sparsity",
                                              "empty_rows", "fit_seconds")},
               "seconds": _num((r.get("time") or {}).get("mean")),
               "eval_samples": _num(r.get("eval_samples"))}
        for k in ("cosine_to_softmax", "reference_to_softmax"):
            if k in r:
                row[k] = _num(r[k])
        row.update({f"param_{k}": v for k, v in (r.get("params") or {}).items()})
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=DOWNSTREAM_COLUMNS)
    return pd.DataFrame(rows).sort_values(["dataset", "series", "sparsity", "name"], ignore_index=True)


def sparse_exec_frame(summary: dict) -> pd.DataFrame:
    """The sparse-execution records (``summary["sparse_exec"]``) in the shape of :func:`scaling_frame`:
    ``n, backend`` (``dense`` for the references, ``sparse`` for prediction + sparse execution),
    ``method, time_mean, time_min``, plus ``sparsity`` (NaN for dense). :func:`bench.report.crossover.crossover`
    and :func:`bench.report.figures.plot_scaling` take it as it is."""
    rows = [{"n": int(r["n"]), "backend": r["backend"], "method": r["method"],
             "time_mean": _num((r.get("time") or {}).get("mean")), "time_min": _num((r.get("time") or {}).get("min")),
             "sparsity": _num(r.get("sparsity"))}
            for r in summary.get("sparse_exec", [])]
    if not rows:
        return pd.DataFrame(columns=["n", "backend", "method", "time_mean", "time_min", "sparsity"])
    return pd.DataFrame(rows).sort_values(["method", "backend", "n"], ignore_index=True)


GOAL_COLUMNS = ["method", "n", "reference", "speedup_min", "speedup_median", "recall_synthetic",
                "sparsity_synthetic", "efficiency_synthetic", "recall_minilm", "sparsity_minilm", "minilm_length",
                "speedup_minilm", "efficiency_minilm"]


def efficiency(speedup: float, sparsity: float) -> float:
    """Measured speed-up over the pair-count ideal ``1 / (1 - sparsity)`` (the speed-up of computing only
    the predicted pairs at the dense cost per pair): ``speedup * (1 - sparsity)``; 1 is the ideal."""
    return speedup * (1.0 - sparsity)


def sparse_goal_frame(summary: dict) -> pd.DataFrame:
    """The speed-goal records (``summary["sparse_exec_goal"]``), one row each: ``method, n, reference``,
    the speed-up of prediction + sparse execution over the dense reference (ratio of minimum and of
    median times, alternating rounds), its recall and sparsity on that synthetic data and on real MiniLM
    (``minilm_length`` tokens at most) and the speed-up measured there, and on both the efficiency
    (:func:`efficiency`: minimum-time speed-up times ``1 - sparsity``)."""
    rows = []
    for r in summary.get("sparse_exec_goal", []):
        syn, real = r.get("synthetic") or {}, r.get("minilm") or {}
        rows.append({"method": r["method"], "n": int(r["n"]), "reference": r.get("reference"),
                     "speedup_min": _num(r.get("speedup_min")), "speedup_median": _num(r.get("speedup_median")),
                     "recall_synthetic": _num(syn.get("recall")), "sparsity_synthetic": _num(syn.get("sparsity")),
                     "recall_minilm": _num(real.get("recall")), "sparsity_minilm": _num(real.get("sparsity")),
                     "minilm_length": _num(real.get("length")), "speedup_minilm": _num(real.get("speedup_min"))})
        rows[-1]["efficiency_synthetic"] = efficiency(rows[-1]["speedup_min"], rows[-1]["sparsity_synthetic"])
        rows[-1]["efficiency_minilm"] = efficiency(rows[-1]["speedup_minilm"], rows[-1]["sparsity_minilm"])
    return pd.DataFrame(rows, columns=GOAL_COLUMNS)


REAL_FRAME_COLUMNS = ["dataset", "method", "length", "n_mean", "n_max", "speedup_min", "speedup_median", "recall",
                      "sparsity", "efficiency", "mass", "output_error", "gold_sparsity", "recall_all_layers"]


def sparse_real_frame(summary: dict) -> pd.DataFrame:
    """The sparse-execution records on real heads (``summary["sparse_exec_real"]``, bench_sparse_real.py),
    one row per dataset, length and configuration: ``n_mean`` / ``n_max`` eval tokens, the speed-up over
    dense entmax (minimum and median times, alternating rounds), the quality of the timed layer and its
    :func:`efficiency`, and ``recall_all_layers`` (every layer's mean recall). Columns :data:`REAL_FRAME_COLUMNS`."""
    rows = []
    for r in summary.get("sparse_exec_real", []):
        row = {k: _num(r.get(k)) for k in ("n_mean", "n_max", "speedup_min", "speedup_median", "recall",
                                           "sparsity", "mass", "output_error", "gold_sparsity")}
        row.update(dataset=r["dataset"], method=r["method"], length=int(r["length"]),
                   recall_all_layers=_num((r.get("all_layers") or {}).get("recall")))
        row["efficiency"] = efficiency(row["speedup_min"], row["sparsity"])
        rows.append(row)
    frame = pd.DataFrame(rows, columns=REAL_FRAME_COLUMNS)
    return frame.sort_values(["dataset", "method", "length"], ignore_index=True)


GOLD_COLUMNS = ["n", "timed", "gold_seconds_min", "sdpa_seconds_min", "sdpa_ratio_min", "sdpa_ratio_median",
                "peak_mib", "result_mib", "working_mib", "dense_scores_mib", "gold_sparsity"]
MIB = float(1 << 20)


def gold_frame(summary: dict) -> pd.DataFrame:
    """The gold's speed and memory (bench_gold.py), one row per ``n``: a timed layer (``summary["gold"]``:
    minimum seconds of the gold and of SDPA on the same q, k, v, their ratios, peak memory growth) or an
    untimed one (``summary["gold_memory"]``: peak growth, the bytes of its result, the working memory
    between them, and one dense ``[12, n, n]`` float32 score tensor for scale), in MiB. Columns
    :data:`GOLD_COLUMNS`."""
    rows = []
    for r in summary.get("gold", []):
        rows.append({"n": int(r["n"]), "timed": True, "gold_seconds_min": _num((r.get("time") or {}).get("min")),
                     "sdpa_seconds_min": _num((r.get("sdpa_time") or {}).get("min")),
                     "sdpa_ratio_min": _num(r.get("sdpa_ratio_min")),
                     "sdpa_ratio_median": _num(r.get("sdpa_ratio_median")),
                     "peak_mib": _num(r.get("peak_bytes")) / MIB, "gold_sparsity": _num(r.get("gold_sparsity"))})
    for r in summary.get("gold_memory", []):
        rows.append({"n": int(r["n"]), "timed": False, "peak_mib": _num(r.get("peak_bytes")) / MIB,
                     "result_mib": _num(r.get("result_bytes")) / MIB,
                     "working_mib": _num(r.get("working_bytes")) / MIB,
                     "dense_scores_mib": _num(r.get("dense_scores_bytes")) / MIB,
                     "gold_sparsity": _num(r.get("gold_sparsity"))})
    return pd.DataFrame(rows, columns=GOLD_COLUMNS).sort_values(["n", "timed"], ignore_index=True)


TWIN_COLUMNS = ["dataset", "family", "name", "fit_ratio", "predict_ratio", "codes_equal_fraction",
                "fit_faiss_median", "fit_torch_median", "predict_faiss_median", "predict_torch_median"]


def twin_frame(summary: dict) -> pd.DataFrame:
    """The FAISS twins against their torch twins (``summary["twins"]``, bench_faiss_vs_torch.py), one row per
    dataset and configuration: the ratios of median times, FAISS over torch (below 1: FAISS is faster), for
    fitting and for predicting every eval layer, the share of identical codes, and the medians in seconds.
    Columns :data:`TWIN_COLUMNS`."""
    rows = []
    for r in summary.get("twins", []):
        row = {"dataset": r["dataset"], "family": r["family"], "name": r["name"],
               **{k: _num(r.get(k)) for k in ("fit_ratio", "predict_ratio", "codes_equal_fraction")}}
        for what in ("fit", "predict"):
            for backend in ("faiss", "torch"):
                row[f"{what}_{backend}_median"] = _num(((r.get(f"{what}_seconds") or {}).get(backend) or {})
                                                       .get("median"))
        rows.append(row)
    return pd.DataFrame(rows, columns=TWIN_COLUMNS).sort_values(["dataset", "family", "name"], ignore_index=True)
