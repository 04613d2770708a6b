"""The fair comparison of the report (bench.report: selection, fair, findings, facets, crossover tables,
integer formatting) on hand-built summaries with known fronts: selection on validation, readings and
intervals, the paper's claim, fallbacks for runs written before the records carried validation and
per-sample scores."""

import math

import numpy as np
import pandas as pd
import pytest

from bench.report import facets, fair, findings, outputs, selection
from bench.report.crossover import FORMULA_NOTE, crossover, crossover_cells, crossover_table, method_families
from bench.report.frames import configs_frame
from bench.report.series import family_kind, variant_of

OFFSETS = np.array([-0.02, 0.01, 0.02, -0.01])  # per-sample recall around the mean (sums to zero)


def entry(name, family, sp, rec, val=None, dataset="d", backend="torch", variant="bare", kind="learned",
          params=None, seed=0, per_sample=True, offsets=OFFSETS):
    """A predictor record as bench/suite writes it; ``val``: (sparsity, recall) on validation, None for
    an old-format record (no validation, no per-sample values, no variant or kind)."""
    e = {"dataset": dataset, "backend": backend, "name": name, "family": family, "params": params or {},
         "mean": {"sparsity": sp, "recall": rec, "mass": min(1.0, rec + 0.1)}}
    if val is None:
        return e
    e.update(variant=variant, kind=kind, seed=seed, split=[0.5, 0.25, 0.25],
             val={"mean": {"sparsity": val[0], "recall": val[1], "mass": min(1.0, val[1] + 0.1)},
                  "per_sample": {}, "samples": 4})
    if per_sample:
        e["per_sample"] = {"sparsity": [sp] * len(offsets), "recall": list(rec + offsets),
                           "mass": list(min(1.0, rec + 0.1) + offsets)}
    return e


# sf-dist: on validation t2 beats t3; on eval t3 beats t2. Selected on validation: t1 and t2.
SF_DIST = [entry("sf-dist-t1", "sf-dist", 0.85, 0.60, (0.85, 0.60)),
           entry("sf-dist-t2", "sf-dist", 0.95, 0.30, (0.95, 0.50)),
           entry("sf-dist-t3", "sf-dist", 0.95, 0.45, (0.95, 0.40))]
REFORMER = [entry("reformer-b4", "reformer", 0.75, 0.35, (0.75, 0.35), kind="hashing"),
            entry("reformer-b8", "reformer", 0.85, 0.25, (0.85, 0.25), kind="hashing")]
BASELINE = [entry(f"window-w{w}-g1", "window", sp, r, (sp, r), variant="helped", kind="fixed", params={"w": w, "g": 1})
            for w, sp, r in ((3, 0.95, 0.30), (11, 0.85, 0.45))]


def summary(*entries):
    return {"predictors": [e for group in entries for e in group]}


def test_selection_on_validation_reports_the_eval_numbers_of_the_validation_front():
    pts = selection.points_frame(summary(SF_DIST))
    sel = selection.select_on_validation(pts).set_index("key")
    assert sel["selected"].to_dict() == {"sf-dist-t1": True, "sf-dist-t2": True, "sf-dist-t3": False}
    assert set(sel["selected_on"]) == {"validation"}
    fronts, notes = fair.series_fronts(pts, n_boot=200)
    assert notes == []
    r = fair.front_readings(fronts, levels=[0.9]).set_index("statistic")
    # the reading at 0.9 joins the eval points of t1 (0.85, 0.60) and t2 (0.95, 0.30): 0.45
    # (choosing on eval would have joined t3 (0.95, 0.45) instead: 0.525)
    assert r.loc["at 0.9", "estimate"] == pytest.approx(0.45, abs=1e-12)
    assert r.loc["at 0.9", "lo"] < 0.45 < r.loc["at 0.9", "hi"] and r.loc["at 0.9", "hi"] - r.loc["at 0.9", "lo"] < 0.05
    assert r.loc["at 0.9", "front"] == "sf-dist-t1; sf-dist-t2"
    assert (r.loc["at 0.9", "selected"], r.loc["at 0.9", "configurations"]) == (2, 3)
    table = findings.level_table(fair.front_readings(fronts), "d", "bare")
    assert table.loc[0, "family"] == "sf-dist"
    assert table.loc[0, "sparsity 0.9"].startswith("0.450 [")
    assert table.loc[0, "selected"] == "2 of 3 on validation"
    assert table.loc[0, "sparsity 0.8"] == "–"  # the front starts at 0.85


def test_area_and_coverage_of_the_reported_front():
    pts = selection.points_frame(summary(SF_DIST))
    fronts, _ = fair.series_fronts(pts, n_boot=50)
    area = fair.front_readings(fronts, window=(0.8, 0.99)).set_index("statistic").loc["area 0.8-0.99"]
    # covered part [0.85, 0.95] of [0.8, 0.99]; the front is a line from 0.60 to 0.30: mean 0.45
    assert area["covered"] == pytest.approx(0.10 / 0.19)
    assert area["estimate"] == pytest.approx(0.45)
    assert findings.interval_cell(area["estimate"], area["lo"], area["hi"], area["covered"]).endswith("over 53%")


def test_mass_fronts_are_selected_and_read_alike():
    pts = selection.points_frame(summary(SF_DIST))
    fronts, _ = fair.series_fronts(pts, "mass", n_boot=50)
    r = fair.front_readings(fronts, levels=[0.9]).set_index("statistic")
    assert r.loc["at 0.9", "metric"] == "mass" and r.loc["at 0.9", "estimate"] == pytest.approx(0.55)
    with pytest.raises(Exception, match="higher-better"):
        fair.series_fronts(pts, "output_error")


def test_reference_series_are_pooled_into_every_variant():
    helped = [entry("sf-dist-t1-w3-g1", "sf-dist", 0.85, 0.70, (0.85, 0.70), variant="helped",
                    params={"w": 3, "g": 1})]
    pts = selection.points_frame(summary(SF_DIST, BASELINE, helped))
    assert selection.variants_of(pts, "d") == ["bare", "helped"]
    fronts, _ = fair.series_fronts(pts, n_boot=50)
    got = {(f.variant, f.series) for f in fronts}
    assert {("bare", "window+sink"), ("helped", "window+sink"), ("bare", "sf-dist"), ("helped", "sf-dist")} <= got
    r = fair.front_readings(fronts, levels=[0.9])
    base = r[(r["series"] == "window+sink") & (r["statistic"] == "at 0.9")]
    assert base["estimate"].tolist() == pytest.approx([0.375, 0.375]) and base["reference"].all()
    assert findings.level_table(r, "d", "helped")["family"].tolist() == ["sf-dist", "window+sink (baseline)"]


def test_claim_verdict_row():
    pts = selection.points_frame(summary(SF_DIST, REFORMER))
    t = fair.claim_table(pts, levels=[0.8, 0.9], n_boot=300).set_index("level")
    # sf-dist at 0.8: its front starts at 0.85, so nothing; reformer reads 0.30 there
    assert pd.isna(t.loc[0.8, "sf_family"]) and t.loc[0.8, "verdict"] == "not measured"
    t = fair.claim_table(pts, levels=[0.85], n_boot=300).iloc[0]
    assert (t["sf_family"], t["baseline_family"], t["verdict"]) == ("sf-dist", "reformer", "holds")
    assert t["sf_recall"] == pytest.approx(0.60) and t["baseline_recall"] == pytest.approx(0.25)
    assert t["missing"] == "sf-quant, sf-kmeans, routing, bigbird, longformer"
    cells = findings.claim_cells(pd.DataFrame([t]))
    assert cells.iloc[0]["best Sparsefinder"].startswith("sf-dist 0.600 [")
    assert cells.iloc[0]["best baseline"].startswith("reformer 0.250 [")
    assert cells.iloc[0]["verdict"] == "holds"
    assert findings.claim_summary(pd.DataFrame([t])) == [
        "d, bare: holds (1 of 1 levels) (not in this variant: sf-quant, sf-kmeans, routing, bigbird, longformer)."]


def test_old_format_entries_fall_back_with_visible_notes():
    old = [entry("sf-dist-t1", "sf-dist", 0.85, 0.60), entry("sf-dist-t2", "sf-dist", 0.95, 0.30),
           entry("reformer-b4", "reformer", 0.75, 0.35), entry("reformer-b8", "reformer", 0.85, 0.25),
           entry("window-w3-g1", "window", 0.95, 0.30, params={"w": 3, "g": 1})]
    pts = selection.points_frame(summary(old))
    sel = selection.select_on_validation(pts)
    assert set(sel["selected_on"]) == {"eval"}
    assert selection.selection_notes(sel) == ["d: selected on eval: this run has no validation scores (every series)."]
    (note,) = selection.variant_notes(pts)
    assert note.startswith("variant inferred from the parameters") and note.endswith("(every record).")
    assert selection.variant_notes(selection.points_frame(summary(SF_DIST))) == []
    fronts, front_notes = fair.series_fronts(pts, n_boot=50)
    assert front_notes == ["d: no intervals: this run has no per-sample scores (estimates only)."]
    r = fair.front_readings(fronts, levels=[0.9])
    row = r[(r["series"] == "sf-dist") & (r["statistic"] == "at 0.9")].iloc[0]
    assert row["estimate"] == pytest.approx(0.45) and math.isnan(row["lo"]) and math.isnan(row["hi"])
    assert row["intervals"] == "none" and row["selected_on"] == "eval"
    assert findings.interval_cell(row["estimate"], row["lo"], row["hi"]) == "0.450"
    claim = fair.claim_table(pts, levels=[0.85], n_boot=50).iloc[0]
    assert claim["verdict"] == "not measured: no per-sample scores" and claim["sf_recall"] == pytest.approx(0.60)
    assert math.isnan(claim["sf_lo"])


def test_a_series_without_validation_scores_is_named():
    mixed = SF_DIST + [entry("reformer-b4", "reformer", 0.75, 0.35), entry("reformer-b8", "reformer", 0.85, 0.25)]
    pts = selection.points_frame(summary(mixed))
    sel = selection.select_on_validation(pts)
    assert sel.groupby("series")["selected_on"].first().to_dict() == {"reformer": "eval", "sf-dist": "validation"}
    assert selection.selection_notes(sel)[0] == (
        "d: selected on eval: this run has no validation scores for reformer.")
    # mass has no validation means for sf-dist-t1 alone: that fallback is named, reformer's said once
    mixed[0] = {**mixed[0], "val": {"mean": {"sparsity": 0.85, "recall": 0.60}}}
    pts = selection.points_frame(summary(mixed))
    sels = {y: selection.select_on_validation(pts, y) for y in ("recall", "mass")}
    assert selection.all_selection_notes(sels) == [
        "d: selected on eval: this run has no validation scores for reformer.",
        "d: selected on eval: this run has no validation scores (every series) (mass fronts)."]
    _, notes = fair.series_fronts(pts, n_boot=20)  # reformer has no per-sample values: the dataset has no intervals
    assert notes == ["d: no intervals: this run has no per-sample scores (estimates only)."]


def test_seeds_are_resampled_and_averaged():
    seeded = [entry(f"reformer-b{b}", "reformer", sp, r + 0.01 * s, (sp, r), seed=s, kind="hashing")
              for b, sp, r in ((4, 0.75, 0.35), (8, 0.85, 0.25)) for s in (0, 1)]
    pts = selection.points_frame(summary(seeded))
    conf = selection.config_means(pts)
    assert conf["seeds"].tolist() == [2, 2] and conf["eval_recall"].tolist() == pytest.approx([0.355, 0.255])
    fronts, notes = fair.series_fronts(pts, n_boot=100)
    assert notes == [] and fronts[0].reps.shape == (100, 2, 2)
    r = fair.front_readings(fronts, levels=[0.8]).iloc[0]
    assert r["estimate"] == pytest.approx(0.305) and r["lo"] < r["estimate"] < r["hi"]


def test_twins_are_configurations_of_one_front():
    twins = [entry("sf-kmeans-k8", "sf-kmeans", 0.90, 0.60, (0.90, 0.60)),
             entry("sf-kmeans-k8", "sf-kmeans", 0.92, 0.62, (0.92, 0.62), backend="faiss")]
    pts = selection.points_frame(summary(twins))
    assert pts["key"].tolist() == ["sf-kmeans-k8", "sf-kmeans-k8 (faiss)"]
    fronts, _ = fair.series_fronts(pts, n_boot=20)
    assert fronts[0].front[2] == ["sf-kmeans-k8 (faiss)"]  # the twin dominates on eval


def test_front_band_is_pointwise_and_nan_where_the_front_does_not_reach():
    pts = selection.points_frame(summary(SF_DIST))
    fronts, _ = fair.series_fronts(pts, n_boot=200)
    est, lo, hi = fair.front_band(fronts[0], [0.8, 0.9, 0.99])
    assert math.isnan(est[0]) and math.isnan(est[2]) and est[1] == pytest.approx(0.45)
    assert lo[1] <= est[1] <= hi[1] and np.isnan(lo[[0, 2]]).all()


def test_interval_cells():
    assert findings.interval_cell(0.5234, 0.4912, 0.5567) == "0.523 [0.49, 0.56]"
    assert findings.interval_cell(0.5234, math.nan, 0.5567) == "0.523 [–, 0.56]"
    assert findings.interval_cell(math.nan, math.nan, math.nan) == "–"
    assert findings.interval_cell(0.61, 0.58, 0.64, 0.75) == "0.610 [0.58, 0.64] over 75%"


def test_kinds_and_variants_recorded_or_inferred():
    assert family_kind("sf-kmeans") == "learned" and family_kind("oracle-topk") == "ceiling"
    assert family_kind("mine", "block") == "block" and family_kind("mine") == "unknown"
    assert variant_of({"w": 3, "g": 1}) == ("helped", False)
    assert variant_of({"w": 1, "g": 1}) == ("bare", False) and variant_of({"w": 11}) == ("bare", False)
    assert variant_of({}, "helped") == ("helped", True)
    row = configs_frame(summary(SF_DIST[:1])).iloc[0]
    assert (row["kind"], row["variant"], row["variant_recorded"], row["seed"]) == ("learned", "bare", True, 0)


# ---------------------------------------------------------------- figures


def test_facets_and_styles():
    assert [facets.facet_of(s) for s in ("sf-dist", "bigbird", "quest", "mine", "window+g2", "fixed",
                                         "window+sink", "oracle-topk")] == [0, 0, 1, 1, 2, 2, None, None]
    series = ["sf-dist", "sf-quant", "sf-kmeans", "reformer", "routing", "bigbird", "longformer", "xattention",
              "minference", "seer", "quest", "hashattn", "simhash", "window", "window+g2", "window+learned-sink",
              "fixed", "window+sink", "oracle-topk", "oracle-thr", "oracle-margin"]
    styles = facets.facet_styles(series)
    for i in range(3):
        mine = [styles[s] for s in series if facets.facet_of(s) in (i, None)]
        assert len({c for c, _ in mine}) == len(mine) and len({m for _, m in mine}) == len(mine)
    assert styles["window+sink"] == facets.BASELINE_STYLE
    # styles come from the run's series, so a family keeps its style in every figure of a report
    assert facets.facet_styles(series[:7])["bigbird"] == styles["bigbird"]


def test_facet_figure_draws_every_panel(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    pts = selection.points_frame(summary(SF_DIST, REFORMER, BASELINE))
    fronts, _ = fair.series_fronts(pts, n_boot=50)
    curves = facets.front_curves(fronts, selection.select_on_validation(pts), "d", "bare")
    assert {c.series for c in curves} == {"sf-dist", "reformer", "window+sink"}
    fig = facets.plot_front_facets(curves, facets.facet_styles(pts["series"]), "recall", "d", xlim=(0.8, 1.0),
                                   levels=[0.9])
    axes = fig.axes
    assert len(axes) == 3 and all(ax.get_xlim() == (0.8, 1.0) for ax in axes)
    assert axes[1].get_title() == "today's families (none in this run)"
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels == ["sf-dist", "reformer", "window+sink (baseline)"]
    assert [t.get_text() for t in axes[2].get_legend().get_texts()] == ["window+sink (baseline)"]
    fig.savefig(tmp_path / "f.png")


# ---------------------------------------------------------------- crossover table and integers


def scaling_rows(method, backend, times):
    return [{"n": n, "backend": backend, "method": method, "time_mean": t, "time_min": t, "flops": 1.0}
            for n, t in times.items()]


def test_crossover_table_lists_formula_patterns_apart():
    dense = {128: 0.001, 256: 0.004, 512: 0.016}
    s = pd.DataFrame(scaling_rows("entmax15-topk", "dense", dense)
                     + scaling_rows("sf-kmeans-k8", "torch", {128: 0.002, 256: 0.003, 512: 0.004})
                     + scaling_rows("window-w11-g1", "torch", {n: 1e-8 for n in dense})
                     + scaling_rows("longformer-n2-w11", "torch", {n: 1e-8 for n in dense})
                     + scaling_rows("bigbird-r3-w3-g2", "torch", {n: 1e-5 for n in dense}))
    configs = configs_frame(summary([entry("sf-kmeans-k8", "sf-kmeans", 0.9, 0.5, (0.9, 0.5)),
                                     entry("window-w11-g1", "window", 0.9, 0.5, (0.9, 0.5), kind="fixed")]))
    families = method_families(configs)
    table, formula = crossover_table(crossover(s), families)
    assert table["configuration"].tolist() == ["bigbird-r3-w3-g2", "sf-kmeans-k8"]  # bigbird draws: timed
    assert table["crossover_n"].tolist() == [128, 256] and str(table["crossover_n"].dtype) == "Int64"
    assert formula["configuration"].tolist() == ["longformer-n2-w11", "window-w11-g1"]
    assert set(formula["note"]) == {FORMULA_NOTE}
    cells = crossover_cells(table)
    assert cells.iloc[1].tolist() == ["sf-kmeans", "sf-kmeans-k8", "torch", "256", "4x faster at n = 512"]
    assert cells.iloc[0, 3] == "128 (every measured n)"
    md = outputs.markdown_table(cells)
    assert "window" not in md and "longformer" not in md
    assert "| 1,600x faster at n = 512 |" in md  # never an exponent
    kept, none = crossover_table(crossover(s), families, formula_apart=False)
    assert len(kept) == 4 and none.empty


def test_integers_print_as_integers(tmp_path):
    df = pd.DataFrame({"param_k": [16.0, math.nan], "n_max": [4096.0, 512.0], "recall": [1.0, 1.0],
                       "time_mean": [2.0, 3.0], "name": ["a", "b"]})
    assert outputs.markdown_table(df) == ("| param_k | n_max | recall | time_mean | name |\n|---|---|---|---|---|\n"
                                          "| 16 | 4096 | 1.000 | 2.000 | a |\n| – | 512 | 1.000 | 3.000 | b |")
    out = outputs.Outputs(tmp_path)
    out.table(df, "t")
    assert (tmp_path / "tables" / "t.csv").read_text().splitlines()[1] == "16,4096,1.0,2.0,a"
    assert outputs.as_integers(pd.DataFrame({"x": [0.5, 2.0]}))["x"].dtype.kind == "f"


def test_uneven_seeds_give_estimates_and_say_why():
    uneven = [entry("sf-dist-t1", "sf-dist", 0.85, 0.60, (0.85, 0.60), seed=s) for s in (0, 1)]
    uneven += [entry("sf-dist-t2", "sf-dist", 0.95, 0.30, (0.95, 0.50)), *REFORMER]
    pts = selection.points_frame(summary(uneven))
    fronts, notes = fair.series_fronts(pts, n_boot=20)
    assert len(notes) == 1 and notes[0].startswith("d: no intervals for recall (") and "seeds, samples" in notes[0]
    r = fair.front_readings(fronts, levels=[0.9])
    row = r[r["series"] == "sf-dist"].iloc[0]
    assert row["estimate"] == pytest.approx(0.45) and math.isnan(row["lo"])
    claim = fair.claim_table(pts, levels=[0.85], n_boot=20).iloc[0]
    assert claim["verdict"] == "not measured: no intervals" and claim["sf_recall"] == pytest.approx(0.60)


def test_the_report_says_which_families_resample_seeds():
    seeded = [entry(f"reformer-b{b}", "reformer", sp, r + 0.01 * s, (sp, r), seed=s, kind="hashing")
              for b, sp, r in ((4, 0.75, 0.35), (8, 0.85, 0.25)) for s in (0, 1, 2)]
    pts = selection.points_frame(summary(seeded, SF_DIST))
    fronts, notes = fair.series_fronts(pts, n_boot=50)
    assert notes == [] and {f.series: f.seeds for f in fronts} == {"reformer": 3, "sf-dist": 1}
    readings = fair.front_readings(fronts, levels=[0.8])
    assert dict(zip(readings["series"], readings["seeds"])) == {"reformer": 3, "sf-dist": 1}
    table = findings.level_table(readings, "d", "bare")
    assert sorted(table["family"]) == ["reformer (3 seeds)", "sf-dist"]
    assert findings.interval_words(readings) == (
        "Intervals: 95% percentile bootstrap over eval samples (paired: the same draws for every family); for the "
        "randomised families run with 3 seeds per configuration (reformer), over eval samples and seeds jointly, "
        "their estimate the mean over seeds.")
    one = fair.front_readings(fair.series_fronts(selection.points_frame(summary(SF_DIST)), n_boot=20)[0])
    assert findings.interval_words(one).endswith("; every family ran with one seed.")
    # the estimate is the mean over seeds: reformer-b4 reads 0.35 + 0.01 * mean(0, 1, 2) at its sparsity 0.75
    r = fair.front_readings(fronts, levels=[0.75])
    assert r[r["series"] == "reformer"]["estimate"].iloc[0] == pytest.approx(0.36, abs=1e-12)
