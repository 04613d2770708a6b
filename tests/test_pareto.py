"""bench.report (series, frames, pareto, heads, crossover) on hand-built points with known answers: fronts,
matched-sparsity tables, ties, NaNs, lower-is-better metrics, per-head grids and scaling crossovers."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.errors import BenchError
from bench.evaluation.metric_table import higher_is_better
from bench.report import pareto
from bench.report.crossover import crossover, crossover_sentences
from bench.report.frames import CONFIG_COLUMNS, configs_frame, environment_rows, heads_frame, load_run, scaling_frame
from bench.report.heads import (
    choose_config,
    densest_heads,
    gold_sparsity_matrix,
    hardest_heads,
    head_matrix,
    heads_sentence,
)
from bench.report.series import is_ceiling, series_label

nan = math.nan


def cfg(name, sparsity, recall, series=None, backend="torch", dataset="d", **extra):
    fam = extra.pop("family", (series or name.split("-")[0]).split("+")[0])
    return {"dataset": dataset, "backend": backend, "name": name, "family": fam, "series": series or fam,
            "sparsity": sparsity, "recall": recall, **extra}


# ---------------------------------------------------------------- fronts


def test_front_of_a_known_set():
    x = [0.5, 0.6, 0.55, 0.9, 0.4, nan, 0.95]
    y = [0.9, 0.8, 0.7, 0.2, 0.9, 0.99, nan]
    # (0.55, 0.7) is beaten by (0.6, 0.8); (0.4, 0.9) by (0.5, 0.9) (same y, lower x); NaNs take no part.
    assert pareto.pareto_mask(x, y).tolist() == [True, True, False, True, False, False, False]


def test_nan_points_dominate_nothing():
    # Without the NaN point the ones it would beat stay on the front.
    assert pareto.pareto_mask([0.1, nan, 0.2], [0.1, 1.0, 0.05]).tolist() == [True, False, True]


def test_ties_duplicates_stay_together():
    x = [0.5, 0.5, 0.3, 0.3]
    y = [0.8, 0.8, 0.7, 0.7]
    # Identical front points are both on it; identical dominated points are both off it.
    assert pareto.pareto_mask(x, y).tolist() == [True, True, False, False]
    # Same x, different y: only the higher y; same y, different x: only the higher x.
    assert pareto.pareto_mask([0.5, 0.5], [0.8, 0.6]).tolist() == [True, False]
    assert pareto.pareto_mask([0.5, 0.6], [0.8, 0.8]).tolist() == [False, True]


def test_lower_is_better_metric():
    sparsity = [0.5, 0.6, 0.55, 0.7, 0.9]
    error = [0.1, 0.3, 0.4, 0.2, 0.9]
    # Lower error is better: (0.6, 0.3) is beaten by (0.7, 0.2); (0.55, 0.4) by (0.6, 0.3) and (0.7, 0.2).
    got = pareto.pareto_mask(sparsity, error, x_higher=True, y_higher=False)
    assert got.tolist() == [True, False, False, True, True]
    df = pd.DataFrame({"name": list("abcde"), "sparsity": sparsity, "output_error": error})
    front = pareto.pareto_front(df, "sparsity", "output_error")
    assert front["name"].tolist() == ["a", "d", "e"]  # sorted by sparsity


def test_mask_agrees_with_brute_force_on_random_points():
    rng = np.random.default_rng(7)
    for n in (1, 2, 37, 1500):  # 1500 > one block of the chunked loop
        x, y = rng.integers(0, 9, n).astype(float), rng.integers(0, 9, n).astype(float)
        x[rng.random(n) < 0.05] = nan
        got = pareto.pareto_mask(x, y, x_higher=True, y_higher=False)
        want = [np.isfinite(x[i]) and np.isfinite(y[i]) and not any(
            x[j] >= x[i] and y[j] <= y[i] and (x[j] > x[i] or y[j] < y[i]) for j in range(n)) for i in range(n)]
        assert got.tolist() == want


def test_fronts_keep_torch_and_faiss_twins_apart():
    df = pd.DataFrame([cfg("sf-kmeans-a", 0.9, 0.5), cfg("sf-kmeans-b", 0.8, 0.4),
                       cfg("sf-kmeans-a", 0.85, 0.45, backend="faiss"), cfg("sf-kmeans-b", 0.8, 0.6, backend="faiss")])
    f = pareto.fronts(df, "sparsity", "recall")
    got = sorted(zip(f["backend"], f["name"]))
    # torch b is beaten by torch a; the faiss points do not compete with torch ones.
    assert got == [("faiss", "sf-kmeans-a"), ("faiss", "sf-kmeans-b"), ("torch", "sf-kmeans-a")]


def test_unknown_metric_is_an_error():
    with pytest.raises(BenchError, match="unknown metric 'speed'"):
        higher_is_better("speed")
    assert higher_is_better("output_error") is False and higher_is_better("flops_ratio") is False


# ---------------------------------------------------------------- matched-sparsity tables


def table_points():
    return pd.DataFrame([
        cfg("sf-kmeans-a", 0.97, 0.30, "sf-kmeans"),
        cfg("sf-kmeans-b", 0.92, 0.60, "sf-kmeans"),
        cfg("sf-kmeans-c", 0.85, 0.80, "sf-kmeans"),
        cfg("sf-kmeans-d", 0.95, nan, "sf-kmeans"),      # NaN recall: never chosen
        cfg("window-w3-g1", 0.9 - 1e-12, 0.50, "window+sink"),  # float noise under 0.9 still counts
        cfg("window-w5-g1", 0.89, 0.70, "window+sink"),        # genuinely under 0.9
        cfg("window-w3", 0.96, 0.20, "window"),
        cfg("window-w1", 0.96, 0.20, "window"),                # tie in both: first name wins
    ])


def test_best_at_levels_known_answers():
    best = pareto.best_at_levels(table_points(), "sparsity", "recall", [0.8, 0.9, 0.95])
    got = {(r.series, r.level): (r.value, r.name) for r in best.itertuples()}
    assert got[("sf-kmeans", 0.8)] == (0.80, "sf-kmeans-c")
    assert got[("sf-kmeans", 0.9)] == (0.60, "sf-kmeans-b")
    assert got[("sf-kmeans", 0.95)] == (0.30, "sf-kmeans-a")
    assert got[("window+sink", 0.8)] == (0.70, "window-w5-g1")
    assert got[("window+sink", 0.9)] == (0.50, "window-w3-g1")
    assert math.isnan(got[("window+sink", 0.95)][0]) and pd.isna(got[("window+sink", 0.95)][1])
    assert got[("window", 0.95)] == (0.20, "window-w1")
    assert len(best) == 3 * 3  # every group at every level, reached or not


def test_best_at_levels_tie_goes_to_the_sparser():
    df = pd.DataFrame([cfg("w-a", 0.91, 0.5, "w"), cfg("w-b", 0.93, 0.5, "w")])
    row = pareto.best_at_levels(df, levels=[0.9]).iloc[0]
    assert (row["name"], row["at"]) == ("w-b", 0.93)


def test_best_at_levels_lower_is_better_y_and_x():
    df = pd.DataFrame([cfg("a", 0.95, 0.5, "s", output_error=0.30, flops_ratio=0.05),
                       cfg("b", 0.92, 0.7, "s", output_error=0.10, flops_ratio=0.2),
                       cfg("c", 0.80, 0.9, "s", output_error=nan, flops_ratio=0.5)])
    err = pareto.best_at_levels(df, "sparsity", "output_error", [0.8, 0.95])
    assert err["name"].tolist() == ["b", "a"] and err["value"].tolist() == [0.10, 0.30]
    # flops_ratio is better low: level 0.25 means flops_ratio <= 0.25.
    cost = pareto.best_at_levels(df, "flops_ratio", "recall", [0.25, 0.01])
    assert cost["name"].iloc[0] == "b" and pd.isna(cost["name"].iloc[1])


def test_matched_table_and_best_series():
    best = pareto.best_at_levels(table_points(), levels=[0.8, 0.9, 0.95])
    wide = pareto.matched_table(best)
    assert wide.loc[("d", "sf-kmeans", "torch"), 0.9] == 0.60
    assert pareto.matched_table(best, column="name").loc[("d", "window", "torch"), 0.95] == "window-w1"
    win = pareto.best_series(best, 0.9)
    assert win[["series", "name", "value", "baseline", "ties"]].values.tolist() == \
        [["sf-kmeans", "sf-kmeans-b", 0.60, 0.50, 1]]
    (line,) = pareto.best_series_sentences(win, 0.9)
    assert line.startswith("d: best recall at sparsity >= 0.9 is 0.600, by sf-kmeans (sf-kmeans-b, torch)")
    assert "baseline reaches 0.500" in line


def test_best_series_ties_and_nothing_reached():
    df = pd.DataFrame([cfg("a-1", 0.95, 0.5, "a"), cfg("b-1", 0.96, 0.5, "b"),
                       cfg("a-1", 0.5, 0.9, "a", dataset="e")])
    win = pareto.best_series(pareto.best_at_levels(df, levels=[0.9]), 0.9)
    assert win[win["dataset"] == "d"]["series"].tolist() == ["a", "b"]
    assert (win[win["dataset"] == "d"]["ties"] == 2).all()
    e = win[win["dataset"] == "e"].iloc[0]
    assert pd.isna(e["series"]) and math.isnan(e["value"])
    lines = pareto.best_series_sentences(win, 0.9)
    assert "by a (a-1, torch) and b (b-1, torch)" in lines[0]
    assert lines[1] == "e: no cheap configuration reaches sparsity >= 0.9."


# ---------------------------------------------------------------- reading a summary


def test_series_labels():
    assert series_label("window", {"w": 3, "g": 1}) == "window+sink"
    assert series_label("window", {"w": 3, "g": 0}) == "window"
    assert series_label("window", {"w": 3}) == "window"
    assert series_label("window", {"g": nan}) == "window"
    assert series_label("window", {"g": 2}) == "window+g2"
    assert series_label("bigbird", {"g": 1}) == "bigbird"


def test_configs_frame_numbers_only():
    summary = {"predictors": [{
        "dataset": "d", "backend": "faiss", "name": "window-w3-g1", "family": "window", "params": {"w": 3, "g": 1},
        "mean": {"recall": 0.5, "sparsity": 0.9, "output_error": None}, "time": {"mean": 0.01},
        "fit_seconds": 0.0, "prediction_flops": 10.0, "attention_flops": 30.0, "dense_flops": 400.0,
        "gold_sparsity": None}]}
    row = configs_frame(summary).iloc[0]
    assert row["series"] == "window+sink" and bool(row["baseline"])
    assert row["total_flops"] == 40.0 and row["flops_ratio"] == 0.1
    assert math.isnan(row["output_error"]) and math.isnan(row["mass"]) and math.isnan(row["gold_sparsity"])
    assert row["param_w"] == 3 and row["predict_seconds"] == 0.01
    assert list(configs_frame({}).columns) == CONFIG_COLUMNS


def test_load_run_needs_a_summary(tmp_path):
    with pytest.raises(BenchError, match="no summary.json"):
        load_run(tmp_path)
    (tmp_path / "summary.json").write_text("{")
    with pytest.raises(BenchError, match="not valid JSON"):
        load_run(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"predictors": [], "scaling": []}))
    run = load_run(tmp_path)  # no results.csv: empty per-head frame, not an error
    assert run.heads.empty and run.configs.empty and run.scaling.empty and run.datasets == []


def test_load_run_reads_a_gzipped_results_csv(tmp_path):
    # The committed reference keeps its per-head table compressed: the same rows as the plain file.
    import gzip

    (tmp_path / "summary.json").write_text(json.dumps({"predictors": [], "scaling": []}))
    text = "dataset,backend,name,family,layer,head,recall,sparsity\nd,torch,window-w3,window,0,1,0.5,0.9\n"
    (tmp_path / "results.csv.gz").write_bytes(gzip.compress(text.encode()))
    heads = load_run(tmp_path).heads
    assert len(heads) == 1 and heads.iloc[0]["recall"] == 0.5 and heads.iloc[0]["head"] == 1


def test_environment_rows_name_the_corpus_hash_and_devices():
    summary = {"environment": {"torch": "2.13.0+cpu", "faiss": None},
               "dense": [{"device": "cpu"}], "scaling": [{"device": "cuda"}],
               "predictors": [{"dataset": "d", "dataset_descriptor": {"corpus_sha256": "ab12", "samples": 8}},
                              {"dataset": "e", "dataset_descriptor": None}]}
    rows = dict(environment_rows(summary).values.tolist())
    assert rows["torch"] == "2.13.0+cpu" and rows["faiss"] == ""
    assert rows["devices"] == "cpu, cuda"
    assert rows["data d: corpus_sha256"] == "ab12" and rows["data d: samples"] == "8"
    assert rows["data e"] == "no descriptor recorded"


# ---------------------------------------------------------------- per head


def head_rows(gold=True):
    # 2 layers x 2 heads, two configurations. Head (1, 0) is the densest and the hardest for "good".
    rows = []
    gold_sp = {(0, 0): 0.9, (0, 1): 0.95, (1, 0): 0.6, (1, 1): 0.8}
    recall = {"good": {(0, 0): 0.9, (0, 1): 0.8, (1, 0): 0.2, (1, 1): 0.2}, "bad": {k: 0.1 for k in gold_sp}}
    for name in ("good", "bad"):
        for (layer, head), g in gold_sp.items():
            r, sp = recall[name][(layer, head)], 0.9
            # precision consistent with the gold density: (1 - sp) * prec / r = 1 - g
            prec = (1 - g) * r / (1 - sp)
            row = {"dataset": "d", "backend": "torch", "name": name, "family": name, "layer": layer, "head": head,
                   "recall": r, "sparsity": sp, "precision": prec}
            if gold:
                row["gold_sparsity"] = g
            rows.append(row)
    return heads_frame(pd.DataFrame(rows))


def test_gold_matrix_recorded_and_estimated_agree():
    rec, src = gold_sparsity_matrix(head_rows(gold=True), "d")
    est, src2 = gold_sparsity_matrix(head_rows(gold=False), "d")
    assert (src, src2) == ("recorded", "estimated")
    np.testing.assert_allclose(rec.to_numpy(), [[0.9, 0.95], [0.6, 0.8]])
    np.testing.assert_allclose(est.to_numpy(), rec.to_numpy())


def test_estimated_gold_skips_zero_recall():
    df = head_rows(gold=False)
    df.loc[(df["layer"] == 0) & (df["head"] == 0), "recall"] = 0.0
    est, _ = gold_sparsity_matrix(df, "d")
    assert math.isnan(est.loc[0, 0]) and est.loc[1, 0] == pytest.approx(0.6)


def test_head_matrix_of_one_configuration():
    grid = head_matrix(head_rows(), "recall", "d", "good", "torch")
    assert grid.shape == (2, 2) and grid.loc[0, 1] == 0.8
    with pytest.raises(BenchError, match="no per-head rows"):
        head_matrix(head_rows(), "recall", "d", "nope")
    with pytest.raises(BenchError, match="no column"):
        head_matrix(head_rows(), "mass", "d")


def test_hardest_and_densest_heads():
    hard = hardest_heads(head_rows(), "d", "good", "torch", k=3)
    # Recall ties (0.2, 0.2) are broken by the denser gold graph first.
    assert hard["head"].tolist() == ["L1H0", "L1H1", "L0H1"]
    assert hard["gold_density"].tolist() == pytest.approx([0.4, 0.2, 0.05])
    assert hard["density_rank"].tolist() == [1, 2, 4]
    dense = densest_heads(head_rows(), "d", k=2)
    assert dense["head"].tolist() == ["L1H0", "L1H1"]
    text = heads_sentence("d", "good (torch)", hard, dense, k=1)
    assert text == ("d: the hardest heads for good (torch) are L1H0 (recall 0.200, gold density 0.400); "
                    "the densest gold graphs are at L1H0 (0.400).")


def test_choose_config():
    df = pd.DataFrame([cfg("a", 0.95, 0.3, backend="faiss"), cfg("a", 0.95, 0.3), cfg("b", 0.91, 0.6),
                       cfg("c", 0.5, 0.9)])
    assert choose_config(df, "d")["name"] == "b"
    named = choose_config(df, "d", "a")
    assert (named["name"], named["backend"]) == ("a", "torch")  # torch before its faiss twin
    assert choose_config(df, "d", level=0.99)["name"] == "a"  # none reaches: the sparsest
    assert choose_config(df, "other") is None
    with pytest.raises(BenchError, match="no configuration 'zz'"):
        choose_config(df, "d", "zz")


# ---------------------------------------------------------------- scaling


def scaling_rows(times: dict) -> pd.DataFrame:
    summary = {"scaling": [{"n": n, "backend": b, "method": m, "time": {"mean": t}}
                           for (b, m), series in times.items() for n, t in series.items()]}
    return scaling_frame(summary)


def test_crossover_known_answers():
    ref = {128: 1.0, 256: 2.0, 512: 4.0, 1024: 8.0}
    s = scaling_rows({
        ("dense", "entmax15-topk"): ref,
        ("dense", "softmax-sdpa"): {128: 0.001, 256: 0.001, 512: 0.001, 1024: 0.001},
        ("torch", "late"): {128: 1.5, 256: 2.0, 512: 3.0, 1024: 4.0},       # tie at 256 is not cheaper
        ("torch", "flip"): {128: 0.5, 256: 3.0, 512: 1.0, 1024: 1.0},       # cheaper, not, then cheaper
        ("torch", "never"): {128: 2.0, 256: 4.0, 512: 8.0, 1024: 16.0},
        ("torch", "always"): {128: 0.1, 256: 0.1, 512: 0.1, 1024: 0.1},
        ("faiss", "always"): {128: 0.2, 256: 0.2, 512: 0.2, 2048: 0.2},    # 2048: no reference there
    })
    got = crossover(s, "entmax15-topk").set_index(["backend", "method"])
    assert got.loc[("torch", "late"), "crossover_n"] == 512
    assert got.loc[("torch", "flip"), "crossover_n"] == 512
    assert math.isnan(got.loc[("torch", "never"), "crossover_n"])
    assert got.loc[("torch", "never"), "verdict"] == "not cheaper up to n = 1024"
    assert got.loc[("torch", "always"), "crossover_n"] == 128 and got.loc[("torch", "always"), "always"]
    assert got.loc[("torch", "always"), "speedup_at_max"] == pytest.approx(80.0)
    assert got.loc[("faiss", "always"), "n_max"] == 512  # only n timed for both count
    assert got.loc[("torch", "late"), "verdict"] == "cheaper from n = 512"
    lines = dict(zip(got.index, crossover_sentences(got.reset_index(), "entmax15-topk")))
    assert lines[("torch", "late")] == ("late (torch): cheaper from n = 512 than dense entmax15-topk "
                                        "(2x faster at n = 1024).")
    assert lines[("torch", "never")].endswith("(2x slower at n = 1024).")


def test_crossover_without_the_reference():
    s = scaling_rows({("dense", "softmax-sdpa"): {128: 1.0}, ("torch", "a"): {128: 0.5}})
    row = crossover(s, "entmax15-topk").iloc[0]
    assert math.isnan(row["crossover_n"]) and row["verdict"] == "entmax15-topk not timed at the same n"


def test_learned_sink_series_and_ceiling_prefix():
    assert series_label("window", {"w": 3, "s": 2}) == "window+learned-sink"
    assert series_label("window", {"w": 3, "g": 1, "s": 1}) == "window+sink+learned-sink"
    assert series_label("window", {"w": 3, "g": 0, "s": nan}) == "window"
    assert series_label("sf-kmeans", {"s": 1}) == "sf-kmeans"
    # The reports recognise ceilings by name: every registered ceiling must follow the convention.
    from predictors.registry import families, family_class

    ceilings = sorted(f for f in families() if family_class(f).kind == "ceiling")
    assert ceilings == ["oracle-margin", "oracle-thr", "oracle-topk"]
    assert all(is_ceiling(f) for f in ceilings)
    assert not any(is_ceiling(f) for f in families() if f not in ceilings)


def test_best_series_excludes_ceilings_and_states_the_gap():
    df = pd.DataFrame([cfg("oracle-margin-sp0.9", 0.9, 0.98, "oracle-margin"),
                       cfg("oracle-thr-sp0.9", 0.9, 0.90, "oracle-thr"),
                       cfg("sf-kmeans-b", 0.92, 0.60, "sf-kmeans"), cfg("window-w1-g1", 0.91, 0.50, "window+sink"),
                       cfg("oracle-margin-sp0.9", 0.9, 0.97, "oracle-margin", dataset="e")])
    win = pareto.best_series(pareto.best_at_levels(df, levels=[0.9]), 0.9)
    d = win[win["dataset"] == "d"].iloc[0]
    assert (d["series"], d["value"], d["baseline"], d["ceiling"], d["ceiling_series"]) == \
        ("sf-kmeans", 0.60, 0.50, 0.98, "oracle-margin")
    e = win[win["dataset"] == "e"].iloc[0]
    assert pd.isna(e["series"]) and e["ceiling"] == 0.97
    lines = pareto.best_series_sentences(win, 0.9)
    assert lines[0].endswith("The ceiling (oracle-margin, not cheap) reaches 0.980, a gap of 0.380.")
    assert lines[1] == ("e: no cheap configuration reaches sparsity >= 0.9. "
                        "The ceiling (oracle-margin, not cheap) reaches 0.970.")
    # The per-head view picks the best cheap configuration, never the ceiling.
    assert choose_config(df, "d")["name"] == "sf-kmeans-b"
