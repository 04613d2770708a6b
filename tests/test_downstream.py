"""bench.evaluation.downstream: models run with restricted attention; the records, summary and report tables of the
downstream and sparse-execution benchmarks (bench.report.frames, .pareto and .crossover, bench.results.summary,
the report section)."""

from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest
import torch

import predictors
from bench.data import entmax_lm as elm
from bench.data.corpora import Corpus
from bench.errors import DataError
from bench.evaluation.downstream import RestrictedAttention, downstream_set, evaluate, run_restricted, score_results
from bench.evaluation.prepared import prepare
from bench.report import pareto
from bench.report.crossover import crossover, sparse_goal_sentences
from bench.report.frames import downstream_frame, sparse_exec_frame, sparse_goal_frame
from bench.results.records import record_path, write_json_atomic
from bench.results.summary import summarise

# No length warm-up (schedule=()): the tiny model trains on full windows, whatever the schedule format.
TINY = elm.EntmaxLMConfig(layers=2, heads=2, width=32, context=64, mlp_ratio=2, lr=1e-2, schedule=())
WORDS = "the cat sat on a mat and then it ran to the red door where an old dog slept in warm sun".split()


def _text(paragraphs=300, seed=0):
    rng = random.Random(seed)
    return "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))).capitalize() + "."
                       for _ in range(paragraphs)) + "\n"


@pytest.fixture(scope="module")
def corpus():
    return Corpus(name="t", text=_text())


@pytest.fixture(scope="module")
def lm_cached(corpus, tmp_path_factory):
    """The tiny model's data, prepared once for the module in its own cache folder."""
    folder = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("SPARSEBENCH_CACHE", str(folder))
    try:
        prep = prepare("entmax-lm", corpus=corpus, config=TINY, steps=20, batch=8, samples=6, length=48)
    finally:
        mp.undo()
    return prep, folder


@pytest.fixture
def lm_prep(lm_cached, monkeypatch):
    # After the per-test cache of conftest.py: point at the module's cache, so the model is not retrained.
    prep, folder = lm_cached
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(folder))
    return prep


# ---------------------------------------------------------------- the hook


def test_dense_hook_reproduces_the_entmax_lm():
    torch.manual_seed(0)
    model = elm.EntmaxLM(TINY)
    model.reset_parameters(torch.Generator().manual_seed(1))
    model.eval()
    x = torch.randint(256, (3, 40))
    lengths = torch.tensor([40, 31, 7])
    with torch.no_grad():
        want = model(x, lengths=lengths)
        hook = RestrictedAttention(None, causal=True, scale=model.scale)
        got = model(x, lengths=lengths, attention=hook)
        # A window wider than the sequence predicts every pair: the same model again.
        wide = predictors.get("window-w200").fit(None, None)
        hook_w = RestrictedAttention(wide, causal=True, scale=model.scale)
        got_w = model(x, lengths=lengths, attention=hook_w)
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(got[i, :n], want[i, :n], atol=1e-4)
        assert torch.allclose(got_w[i, :n], want[i, :n], atol=1e-4)
    assert hook.summary()["sparsity"] == 0.0 and hook_w.summary()["sparsity"] == 0.0
    assert sorted(hook.stats) == [0, 1]


def test_effective_sparsity_of_a_window_is_counted_exactly():
    model = elm.EntmaxLM(TINY).eval()
    lengths = torch.tensor([40, 9])
    x = torch.randint(256, (2, 40))
    hook = RestrictedAttention(predictors.get("window-w5").fit(None, None), causal=True, scale=model.scale)
    with torch.no_grad():
        model(x, lengths=lengths, attention=hook)

    def expected(n):  # causal window: keys i-2..i
        pairs = sum(min(i + 1, 3) for i in range(n))
        return 1 - pairs / (n * (n + 1) / 2)

    s = hook.summary()
    assert s["sparsity"] == pytest.approx((expected(40) + expected(9)) / 2)
    assert s["per_layer_sparsity"] == pytest.approx([s["sparsity"]] * 2)
    assert s["empty_rows"] == 0.0 and 0 < s["support_sparsity"] and s["support_sparsity"] >= s["sparsity"]


class Spy:
    """A predictor stand-in that records the views it is asked about and predicts a window of 3."""

    def __init__(self):
        self.views = []

    def predict(self, view, layer):
        from predictors.graphs import WindowGraph

        self.views.append((layer, view))
        return WindowGraph(3, view.q.shape[1])


def test_predictions_use_the_live_queries_and_keys_of_the_restricted_model():
    model = elm.EntmaxLM(TINY).eval()
    model.reset_parameters(torch.Generator().manual_seed(2))
    x = torch.randint(256, (2, 30))
    lengths = torch.tensor([30, 20])
    spy = Spy()
    with torch.no_grad():
        _, cap = model(x, lengths=lengths, capture=True)
        model(x, lengths=lengths, attention=RestrictedAttention(spy, causal=True, scale=model.scale))
    assert [layer for layer, _ in spy.views] == [0, 1]
    first, second = spy.views[0][1], spy.views[1][1]
    assert torch.equal(first.lengths, lengths) and first.causal and first.scale == model.scale
    # Layer 0 sees the embeddings, as the dense model; layer 1 sees what the restricted layer 0 made.
    assert torch.allclose(first.q, cap["q"][:, 0], atol=1e-6)
    assert not torch.allclose(second.q[0, :, :30], cap["q"][0, 1, :, :30], atol=1e-3)


def test_minilm_mask_is_read_as_lengths():
    from bench.data.minilm import load_minilm, tokenize

    model = load_minilm()
    ids, mask = tokenize(["A cat sits on the mat.", "A much longer sentence about a dog in the rain."], 32)
    dense = RestrictedAttention(None, causal=False, scale=1 / math.sqrt(32))
    e1 = model.embed(ids, mask, attention=dense)
    # Each text alone (no padding) gives the same embedding: padding never leaks in.
    for i in range(2):
        n = int(mask[i].sum())
        hook = RestrictedAttention(None, False, 1 / math.sqrt(32))
        alone = model.embed(ids[i:i + 1, :n], mask[i:i + 1, :n], attention=hook)
        assert torch.allclose(alone[0], e1[i], atol=1e-5)
    assert dense.stats[0][0].valid_rows[:, 0].tolist() == mask.sum(1).double().tolist()


# ---------------------------------------------------------------- held-out sets and evaluation


@pytest.mark.slow
def test_entmax_lm_set_is_held_out_and_the_dense_run_is_the_reference(lm_prep, corpus):
    dset = downstream_set(lm_prep, samples=10, corpus=corpus)
    fit = lm_prep.fit.descriptor["samples"]
    assert dset.metric == "bpc" and dset.samples == [i for i in range(10) if i not in fit]
    _, heldout = elm.split_corpus(corpus)
    windows = elm.sample_windows(heldout, 10, 48, lm_prep.data.descriptor["seed"])
    fit_bytes = {windows[i] for i in fit}
    seen = [bytes(x[: int(n)].tolist()) for xb, lb in dset.batches for x, n in zip(xb, lb)]
    assert len(seen) == len(dset.samples) and not fit_bytes & set(seen)
    # The reference bpc is the model's own loss on those windows.
    nats = sum(r[0] for r in dset.reference)
    count = sum(r[1] for r in dset.reference)
    assert count == sum(len(w) - 1 for w in seen)
    res = evaluate(dset, None)
    assert res["value"] == pytest.approx(nats / count / math.log(2), rel=1e-5)
    assert res["delta"] == pytest.approx(0.0, abs=1e-5) and res["sparsity"] == 0.0
    assert not res["higher_is_better"]


@pytest.mark.slow
def test_restricted_entmax_lm_run_records_its_sparsity(lm_prep, corpus):
    dset = downstream_set(lm_prep, samples=8, corpus=corpus)
    p = predictors.get("window-w3").fit(lm_prep.fit, lm_prep.fit_gold)
    res = evaluate(dset, p)
    assert res["sparsity"] > 0.8 and math.isfinite(res["value"]) and res["value"] != res["reference"]
    assert len(res["per_layer_sparsity"]) == TINY.layers and res["predict_seconds"] >= 0
    # Sparse execution gives the same run as the masked reference.
    sparse, _ = run_restricted(dset, p, method="auto")
    assert score_results(dset, sparse)["value"] == pytest.approx(res["value"], rel=1e-5)
    # A learned predictor, fitted on the fit samples only.
    km = predictors.get("sf-kmeans-r2-k2-top1").fit(lm_prep.fit, lm_prep.fit_gold)
    r2 = evaluate(dset, km)
    assert 0 < r2["sparsity"] < 1 and math.isfinite(r2["value"])


def test_minilm_set_and_cosines():
    prep = prepare("minilm", corpus="pydoc", samples=4, length=40, seed=4)
    dset = downstream_set(prep, samples=6)
    assert dset.metric == "cosine" and dset.samples == [2, 3, 4, 5]
    res = evaluate(dset, None)
    assert res["value"] == pytest.approx(1.0, abs=1e-5) and res["higher_is_better"]
    assert res["cosine_to_softmax"] == pytest.approx(res["reference_to_softmax"], abs=1e-5)
    assert res["reference_to_softmax"] < 1  # MiniLM was trained with softmax: entmax moves it
    w = evaluate(dset, predictors.get("window-w3").fit(prep.fit, prep.fit_gold))
    assert w["value"] < 0.999 and w["sparsity"] > 0.8 and len(w["per_sample"]) == 4


def test_bad_sets():
    prep = prepare("synthetic", samples=4, length=20)
    with pytest.raises(DataError, match="no downstream task for source 'synthetic'"):
        downstream_set(prep)


# ---------------------------------------------------------------- summary and report tables


def down_rec(ds, name, family, sparsity, value, params=None, metric=None):
    metric = metric or ("bpc" if ds == "lm" else "cosine")
    ref = 1.5 if metric == "bpc" else 1.0
    return {"kind": "downstream", "dataset": ds, "name": name, "family": family, "backend": "torch",
            "params": params or {}, "metric": metric, "higher_is_better": metric == "cosine", "value": value,
            "reference": ref, "delta": value - ref, "sparsity": sparsity, "support_sparsity": 0.97,
            "empty_rows": 0.0, "time": {"mean": 1.0}, "fit_seconds": 0.1, "eval_samples": 8,
            "environment": {"torch": "x"}}


DOWN = [down_rec("lm", "dense-entmax", "dense", 0.0, 1.5),
        down_rec("lm", "window-w3-g1", "window", 0.95, 1.9, {"w": 3, "g": 1}),
        down_rec("lm", "window-w11-g1", "window", 0.88, 1.7, {"w": 11, "g": 1}),
        down_rec("lm", "sf-kmeans-k8", "sf-kmeans", 0.91, 1.8),
        down_rec("lm", "sf-kmeans-k4", "sf-kmeans", 0.92, 1.75),
        down_rec("enc", "dense-entmax", "dense", 0.0, 1.0),
        down_rec("enc", "window-w3", "window", 0.96, 0.6, {"w": 3, "g": 0}),
        down_rec("enc", "routing-k4", "routing", 0.80, 0.9),
        down_rec("enc", "routing-k8", "routing", 0.89, 0.7)]


def test_downstream_tables():
    frame = downstream_frame({"downstream": DOWN})
    assert list(frame.columns[:5]) == ["dataset", "backend", "name", "family", "series"]
    assert set(frame["series"]) == {"dense", "window+sink", "window", "sf-kmeans", "routing"}
    best = pareto.downstream_at_levels(frame, [0.9, 0.95])
    row = lambda ds, s, lv: best[(best["dataset"] == ds) & (best["series"] == s) & (best["level"] == lv)].iloc[0]
    # bpc: lower wins (k4 at 0.92 beats k8 at 0.91); cosine: higher wins.
    assert row("lm", "sf-kmeans", 0.9)["name"] == "sf-kmeans-k4" and row("lm", "sf-kmeans", 0.9)["value"] == 1.75
    assert math.isnan(row("lm", "sf-kmeans", 0.95)["value"]) and pd.isna(row("lm", "sf-kmeans", 0.95)["name"])
    assert row("lm", "window+sink", 0.9)["name"] == "window-w3-g1"  # w11 does not reach 0.9
    assert math.isnan(row("enc", "routing", 0.9)["value"])
    assert "dense" not in set(best["series"])
    near = pareto.downstream_nearest(frame, 0.9)
    assert dict(zip(near["series"] + "@" + near["dataset"], near["name"])) == {
        "routing@enc": "routing-k8", "window@enc": "window-w3", "sf-kmeans@lm": "sf-kmeans-k8",
        "window+sink@lm": "window-w11-g1"}
    lines = pareto.downstream_sentences(near, 0.9)
    assert lines[0].startswith("enc: cosine to the dense-entmax embeddings") and "routing 0.700" in lines[0]
    assert "dense entmax: 1.500" in lines[1] and lines[1].index("window+sink 1.700") < lines[1].index("sf-kmeans 1.800")
    empty = downstream_frame({})
    assert empty.empty and pareto.downstream_at_levels(empty).empty and pareto.downstream_nearest(empty).empty



def test_downstream_sentences_name_metrics_from_the_table():
    from bench.evaluation.metric_table import axis_label, direction_words, phrase

    assert phrase("bpc", 2.5) == "held-out bits per byte (dense entmax: 2.500; lower is better)"
    assert phrase("cosine", 1.0) == "cosine to the dense-entmax embeddings (higher is better)"
    assert phrase("recall") == axis_label("recall")  # no phrase: the label
    assert direction_words("output_error") == "lower is better" and direction_words("effective_sparsity") == \
        "higher is better"

SX = [{"kind": "sparse_exec", "n": n, "backend": b, "method": m, "time": {"mean": t, "min": t}, "sparsity": sp}
      for n, b, m, t, sp in [(128, "dense", "entmax15-topk", 0.01, None), (512, "dense", "entmax15-topk", 0.1, None),
                             (2048, "dense", "entmax15-topk", 2.0, None), (128, "sparse", "km", 0.05, 0.9),
                             (512, "sparse", "km", 0.08, 0.9), (2048, "sparse", "km", 0.3, 0.9),
                             (128, "sparse", "slow", 0.5, 0.5), (2048, "sparse", "slow", 3.0, 0.5)]]
GOAL = [{"kind": "sparse_exec_goal", "n": 4096, "method": "km", "reference": "entmax15-topk", "speedup_min": 6.5,
         "speedup_median": 6.0, "synthetic": {"recall": 0.95, "sparsity": 0.9},
         "minilm": {"recall": 0.4, "sparsity": 0.93, "length": 512, "speedup_min": 0.8}}]


def test_sparse_exec_tables():
    sx = sparse_exec_frame({"sparse_exec": SX})
    assert list(sx.columns) == ["n", "backend", "method", "time_mean", "time_min", "sparsity"]
    cross = crossover(sx, "entmax15-topk").set_index("method")
    assert cross.loc["km", "crossover_n"] == 512 and cross.loc["km", "speedup_at_max"] == pytest.approx(2.0 / 0.3)
    assert math.isnan(cross.loc["slow", "crossover_n"])
    goal = sparse_goal_frame({"sparse_exec_goal": GOAL})
    assert goal.iloc[0]["speedup_min"] == 6.5 and goal.iloc[0]["recall_minilm"] == 0.4
    # Efficiency: 6.5 x (1 - 0.9) = 0.65 of the ideal 10x; on MiniLM 0.8 x 0.07 = 0.056.
    assert goal.iloc[0]["efficiency_synthetic"] == pytest.approx(0.65)
    assert goal.iloc[0]["efficiency_minilm"] == pytest.approx(0.056)
    (line,) = sparse_goal_sentences(goal)
    assert "6.50x faster (medians: 6.00x faster) than dense entmax15-topk, at recall 0.950 and sparsity 0.900" in line
    assert "efficiency 0.65 of the ideal 10x (misses the goal of efficiency 0.8 at recall 0.9)" in line
    assert "its recall is 0.400 at sparsity 0.930, 1.25x slower there, efficiency 0.06 (misses" in line
    (line,) = sparse_goal_sentences(goal, target=0.6)
    assert "(meets the goal of efficiency 0.6 at recall 0.9)" in line
    assert sparse_goal_frame({}).empty and sparse_exec_frame({}).empty


def test_summary_carries_the_new_records(tmp_path):
    run = tmp_path / "run"
    for r in DOWN[:2]:
        write_json_atomic(record_path(run, "downstream", f"{r['dataset']}--{r['name']}"), r)
    write_json_atomic(record_path(run, "sparse_exec", "n128--dense--entmax15-topk"), SX[0])
    write_json_atomic(record_path(run, "sparse_exec_goal", "n4096--km"), GOAL[0])
    s = summarise(run)
    assert [r["name"] for r in s["downstream"]] == ["dense-entmax", "window-w3-g1"]
    assert len(s["sparse_exec"]) == 1 and len(s["sparse_exec_goal"]) == 1
    assert s["predictors"] == [] and s["environment"] == {"torch": "x"}  # environment from the new records


@pytest.mark.slow
def test_report_section_renders(tmp_path):
    from bench.report import render as report

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"environment": {}, "predictors": [], "dense": [], "scaling": [],
                                                  "downstream": DOWN, "sparse_exec": SX, "sparse_exec_goal": GOAL}))
    paths = report.render(run)
    names = {p.name for p in paths}
    assert {"downstream--lm.png", "downstream--enc.png", "sparse-exec.png", "downstream.csv",
            "sparse-exec-goal.csv", "sparse-exec-crossover-entmax15-topk.csv"} <= names
    readme = (run / "report" / "README.md").read_text()
    assert "**Downstream effect near sparsity 0.9**" in readme and "km (sparse): cheaper from n = 512" in readme
    assert "| lm | bpc | sf-kmeans | 1.750 (sf-kmeans-k4, sparsity 0.920)" in readme
