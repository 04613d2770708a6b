"""Sparse execution on real heads (bench/evaluation/real_speed.py, bench_sparse_real.py) and the gold's
memory at long n (bench_gold.py): the measurement on known graphs, the report's frames and crossover on
hand-built records, the committed profiles' lengths."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
import torch

import predictors
from bench.config.profiles import load_profile
from bench.evaluation.prepared import prepare
from bench.evaluation.real_speed import layer_quality, real_layer_speed, timed_layer_quality
from bench.evaluation.score import score_fitted
from bench.execution.plan import UnsupportedGraph
from bench.report.crossover import cheaper_from, real_crossover, real_crossover_sentences
from bench.report.frames import gold_frame, sparse_real_frame
from bench.results.records import record_path, write_json_atomic
from bench.results.schema import record_problems
from bench.results.summary import summarise
from predictors.graphs import BlockGraph

TWINS = [{"kind": "twin", "dataset": "lm", "name": "km", "family": "sf-kmeans", "fit_ratio": 0.5, "predict_ratio": 1.2,
          "codes_equal_fraction": 1.0}]
PROFILES = Path(__file__).resolve().parents[1] / "bench" / "suite" / "profiles.toml"


@pytest.fixture(scope="module")
def prep():
    return prepare("synthetic", samples=8, length=48, use_cache=False)  # 4 eval samples of 24 to 48 tokens


def band_pairs(n: int, half: int) -> int:
    """Pairs of a bidirectional band of ``half`` keys either side on ``n`` tokens, counted by hand."""
    return sum(min(n, i + half + 1) - max(0, i - half) for i in range(n))


def timed(prep, name: str, rounds: int):
    """What bench_sparse_real.py records of ``name`` on ``prep``: the timing, and the timed layer's quality."""
    predictor = predictors.get(name).fit(prep.fit, prep.fit_gold)
    speed = real_layer_speed(prep, predictor, rounds=rounds)
    return speed, timed_layer_quality(prep, score_fitted(prep, predictor), speed), predictor


def test_a_window_covering_every_key_finds_every_pair_at_no_sparsity(prep):
    speed, q, _ = timed(prep, "window-w999", rounds=2)
    assert speed["layer"] == prep.eval.num_layers // 2
    assert q["recall"] == 1.0 and q["mass"] == pytest.approx(1.0) and q["sparsity"] == 0.0
    assert q["output_error"] == pytest.approx(0.0, abs=1e-6)
    assert len(speed["dense_seconds"]) == len(speed["sparse_seconds"]) == 2
    assert speed["speedup_min"] == min(speed["dense_seconds"]) / min(speed["sparse_seconds"])
    assert q["efficiency_min"] == speed["speedup_min"]  # nothing left out: the ideal is 1x


def test_a_narrow_window_has_the_sparsity_of_its_band(prep):
    speed, q, predictor = timed(prep, "window-w5", rounds=1)
    lengths = prep.eval.lengths.tolist()
    assert speed["eval_lengths"] == lengths and speed["n_max"] == max(lengths) and speed["n_min"] == min(lengths)
    assert speed["n_mean"] == pytest.approx(sum(lengths) / len(lengths))
    want = sum(1 - band_pairs(n, 2) / (n * n) for n in lengths) / len(lengths)  # per sample, then the mean
    assert q["sparsity"] == pytest.approx(want, rel=1e-6) and 0 < q["recall"] < 1
    assert q["efficiency_min"] == pytest.approx(speed["speedup_min"] * (1 - want), rel=1e-6)
    gold = prep.eval_gold.layers[speed["layer"]]
    assert q["gold_sparsity"] == pytest.approx(gold.sparsity().mean().item())
    # Read from score_fitted's per-head rows, the layer's quality is bit for bit what scoring it alone gives.
    view = prep.eval.layer(speed["layer"])
    alone = layer_quality(view, gold, predictor.predict(view, speed["layer"]))
    assert all(q[m] == alone[m] for m in alone)


class BlockPredictor:
    """A stand-in whose graph sparse execution cannot run (blocks of 16)."""

    def predict(self, view, layer):
        s, h, t = view.q.shape[:3]
        nb = -(-t // 16)
        return BlockGraph(torch.ones(s, h, nb, nb, dtype=torch.bool), 16)


def test_a_graph_sparse_execution_cannot_run_is_refused_untimed(prep):
    with pytest.raises(UnsupportedGraph, match="not BlockGraph"):
        real_layer_speed(prep, BlockPredictor(), rounds=1)


def test_cheaper_from_is_the_start_of_the_last_run_of_wins():
    assert cheaper_from([64, 128, 256], [False, True, True]) == (128, False)
    assert cheaper_from([64, 128, 256], [True, False, True]) == (256, False)
    assert cheaper_from([64, 128, 256], [True, True, True]) == (64, True)
    cross, always = cheaper_from([64, 128, 256], [True, True, False])
    assert math.isnan(cross) and not always


def real_record(dataset, length, method, speedup, recall=0.8, sparsity=0.9, n_mean=None):
    return {"kind": "sparse_exec_real", "dataset": dataset, "length": length, "method": method,
            "reference": "entmax15-topk", "n_mean": n_mean or 0.75 * length, "n_max": length,
            "speedup_min": speedup, "speedup_median": speedup, "recall": recall, "sparsity": sparsity,
            "mass": 0.9, "output_error": 0.1, "gold_sparsity": 0.95, "all_layers": {"recall": recall - 0.1}}


REAL = [real_record("lm", 64, "km", 0.5), real_record("lm", 128, "km", 1.2), real_record("lm", 256, "km", 2.0, 0.7),
        real_record("lm", 64, "win", 0.9), real_record("lm", 256, "win", 0.95, 0.3, 0.97),
        real_record("enc", 512, "km", 1.5, 0.6, 0.8, n_mean=380.0), real_record("enc", 128, "km", 1.1)]


def test_the_crossover_on_real_heads_from_hand_built_records():
    frame = sparse_real_frame({"sparse_exec_real": REAL})
    assert list(frame["length"][frame["dataset"] == "lm"]) == [64, 128, 256, 64, 256]  # by method, then length
    row = frame[(frame["dataset"] == "lm") & (frame["method"] == "km") & (frame["length"] == 256)].iloc[0]
    assert row["efficiency"] == pytest.approx(2.0 * (1 - 0.9)) and row["recall_all_layers"] == pytest.approx(0.6)
    table = real_crossover(frame).set_index(["dataset", "method"])
    assert table.loc[("lm", "km"), "crossover_length"] == 128 and not table.loc[("lm", "km"), "always"]
    assert table.loc[("lm", "km"), "recall_at_max"] == 0.7 and table.loc[("lm", "km"), "speedup_at_max"] == 2.0
    assert math.isnan(table.loc[("lm", "win"), "crossover_length"])
    assert table.loc[("enc", "km"), "always"] and table.loc[("enc", "km"), "crossover_length"] == 128
    lines = real_crossover_sentences(real_crossover(frame))
    assert lines[0] == ("enc, km: faster at every measured length (from L = 128) than dense entmax15-topk (1.50x "
                        "faster at L = 512, 380 tokens on average, at recall 0.600 and sparsity 0.800: efficiency "
                        "0.30).")
    assert lines[2].startswith("lm, win: not faster up to L = 256 than dense entmax15-topk (1.05x slower at L = 256")
    assert sparse_real_frame({}).empty and real_crossover(sparse_real_frame({})).empty


GOLD = [{"kind": "gold", "n": 1024, "gold_sparsity": 0.9, "time": {"min": 0.3}, "sdpa_time": {"min": 0.1},
         "sdpa_ratio_min": 3.0, "sdpa_ratio_median": 2.5, "peak_bytes": 25 << 20}]
GOLD_MEMORY = [{"kind": "gold_memory", "n": 8192, "peak_bytes": 300 << 20, "result_bytes": 200 << 20,
                "working_bytes": 100 << 20, "dense_scores_bytes": 12 * 8192 * 8192 * 4, "gold_sparsity": 0.96}]


def test_the_gold_table_joins_timed_and_memory_rows():
    g = gold_frame({"gold": GOLD, "gold_memory": GOLD_MEMORY})
    assert list(g["n"]) == [1024, 8192] and list(g["timed"]) == [True, False]
    assert g.loc[0, "sdpa_ratio_min"] == 3.0 and g.loc[0, "peak_mib"] == 25.0
    assert g.loc[1, "working_mib"] == 100.0 and g.loc[1, "dense_scores_mib"] == 3072.0
    assert math.isnan(g.loc[1, "sdpa_ratio_min"]) and gold_frame({}).empty


def test_the_new_records_verify_and_reach_the_summary(tmp_path):
    run = tmp_path / "run"
    for r in REAL[:2]:
        assert record_problems(r, "sparse_exec_real") == []
        write_json_atomic(record_path(run, "sparse_exec_real", f"{r['dataset']}--L{r['length']}--{r['method']}"), r)
    assert record_problems(GOLD_MEMORY[0], "gold_memory") == []
    write_json_atomic(record_path(run, "gold_memory", "n8192"), GOLD_MEMORY[0])
    s = summarise(run)
    assert sorted(r["length"] for r in s["sparse_exec_real"]) == [64, 128] and s["gold_memory"][0]["n"] == 8192
    bad = {**REAL[0], "recall": 1.5}
    assert any("recall" in p for p in record_problems(bad, "sparse_exec_real"))
    assert any("result_bytes" in p for p in record_problems({k: v for k, v in GOLD_MEMORY[0].items()
                                                           if k != "result_bytes"}, "gold_memory"))


def test_the_gold_counts_the_bytes_of_every_tensor():
    from bench.evaluation.gold import layer_gold
    from bench.evaluation.speed_data import minilm_shaped

    gold = layer_gold(minilm_shaped(1, 64, seed=3, ragged=False).layer(0))
    nnz = int(gold.counts.sum())
    # counts int64 [1, 12, 64], row pointers int64 [12 * 64 + 1], columns int32 and probabilities float32 [nnz]
    assert gold.nbytes() == 8 * 12 * 64 + 8 * (12 * 64 + 1) + 4 * nnz + 4 * nnz


@pytest.mark.parametrize("name", ["smoke", "default", "full"])
def test_the_committed_real_lengths_fit_the_models(name):
    from bench.data.entmax_lm_model import EntmaxLMConfig
    from bench.data.entmax_lm_windows import MIN_SAMPLE_LEN
    from bench.data.minilm import MAX_POSITIONS

    prof = load_profile(PROFILES, name)
    limits = {"minilm": (2, MAX_POSITIONS), "minilm-entmax": (2, MAX_POSITIONS),
              "entmax-lm": (MIN_SAMPLE_LEN, EntmaxLMConfig().context)}
    assert prof.sparse_exec_real_lengths, "every CPU profile measures sparse execution on real heads"
    assert set(prof.sparse_exec_real_lengths) <= set(limits)
    for ds, lengths in prof.sparse_exec_real_lengths.items():
        lo, hi = limits[ds]
        assert list(lengths) == sorted(set(lengths)) and all(lo <= n <= hi for n in lengths), (ds, lengths)
    # the default profile's samples split into at least 4 eval samples, and its gold memory lengths are long
    raw = tomllib.loads(PROFILES.read_text())
    assert raw["default"]["gold_memory_n"] == [8192, 16384] and raw["default"]["sparse_exec_real_samples"] >= 16


@pytest.mark.slow
def test_the_report_shows_real_heads_and_the_gold(tmp_path):
    import json

    from bench.report import render as report

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"environment": {}, "predictors": [], "dense": [], "scaling": [],
                                                  "sparse_exec_real": REAL, "gold": GOLD,
                                                  "gold_memory": GOLD_MEMORY, "twins": TWINS}))
    names = {p.name for p in report.render(run)}
    assert {"sparse-exec-real.csv", "sparse-exec-real-crossover.csv", "gold-speed.csv", "twins.csv"} <= names
    readme = (run / "report" / "README.md").read_text()
    assert "lm, km: faster from L = 128 than dense entmax15-topk (2.00x faster at L = 256" in readme
    assert "n = 1024: gold / SDPA 3.00 (medians 2.50), peak memory 25 MiB" in readme
    assert ("n = 8192 (untimed): peak memory 300 MiB, of which the gold itself 200 MiB, working memory 100 MiB; "
            "one dense score tensor would be 3072 MiB") in readme
    assert "**FAISS twins** (FAISS time over torch time, medians, alternating):" in readme
    assert "every ratio at most 1.5 (0.50 to 1.20): FAISS keeps up with torch" in readme
