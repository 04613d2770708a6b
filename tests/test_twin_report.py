"""The report's FAISS-twin table and sentences (bench.report.frames.twin_frame, crossover.twin_sentences) on
hand-built twin records."""

from __future__ import annotations

import math

import pytest

from bench.report.crossover import twin_sentences
from bench.report.frames import twin_frame


def twin(dataset, name, family, fit, predict, equal=1.0):
    return {"kind": "twin", "dataset": dataset, "name": name, "family": family, "fit_ratio": fit,
            "predict_ratio": predict, "codes_equal_fraction": equal,
            "fit_seconds": {"faiss": {"median": None if fit is None else 2.0 * fit}, "torch": {"median": 2.0}},
            "predict_seconds": {"faiss": {"median": 0.5 * predict}, "torch": {"median": 0.5}}}


TWINS = [twin("minilm", "sf-kmeans-r4-k8-top1", "sf-kmeans", 0.55, 0.84),
         twin("entmax-lm", "routing-raw-k8", "routing", 0.47, 0.87, 0.9998),
         twin("minilm", "simhash-b8-l4-h0-top0", "simhash", None, 1.02)]


def test_the_twin_table_reads_ratios_and_medians():
    t = twin_frame({"twins": TWINS})
    assert list(t["dataset"]) == ["entmax-lm", "minilm", "minilm"]  # by dataset, then family
    assert t.loc[1, "fit_faiss_median"] == pytest.approx(1.1) and t.loc[1, "predict_torch_median"] == 0.5
    assert math.isnan(t.loc[2, "fit_ratio"]) and twin_frame({}).empty


def test_twin_sentences_say_whether_faiss_keeps_up():
    lines = twin_sentences(twin_frame({"twins": TWINS}))
    assert lines[0] == ("entmax-lm, routing-raw-k8: FAISS over torch 0.47 to fit, 0.87 to predict; codes identical "
                        "in 0.9998 of entries")
    assert lines[-1] == "every ratio at most 1.5 (0.47 to 1.02): FAISS keeps up with torch"  # the NaN is left out
    slow = twin_sentences(twin_frame({"twins": TWINS + [twin("minilm", "reformer-raw-b8-h2", "reformer", 0.9, 700.0)]}))
    assert slow[-1] == "1 of 7 ratios above 1.5 (0.47 to 700.00)"
    assert twin_sentences(twin_frame({})) == []
