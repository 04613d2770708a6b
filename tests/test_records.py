import json

import pytest

from bench.errors import BenchError
from bench.results.records import load_records, record_path, write_json_atomic
from bench.results.summary import write_summary


def test_atomic_write_and_nan_as_null(tmp_path):
    p = tmp_path / "r" / "x.json"
    write_json_atomic(p, {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads(p.read_text()) == {"a": None, "b": [1.0, None]}
    assert list(p.parent.iterdir()) == [p]  # no temporary file left behind


def test_corrupt_record_is_named(tmp_path):
    path = record_path(tmp_path, "predictor", "x")
    path.parent.mkdir(parents=True)
    path.write_text('{"truncated": ')
    with pytest.raises(BenchError, match="x.json is corrupt"):
        load_records(tmp_path, "predictor")


def test_summary_from_records(tmp_path):
    rec = {"dataset": "d", "backend": "torch", "name": "window-w3", "family": "window", "params": {"w": 3, "g": 0},
           "mean": {"recall": 0.5}, "per_head": {m: [[0.5, float("nan")]] for m in
                                                  ("recall", "sparsity", "precision", "exact", "mass", "output_error")},
           "time": {"mean": 0.01}, "fit_seconds": 0.0, "prediction_flops": 0.0, "attention_flops": 1.0,
           "dense_flops": 2.0, "environment": {"torch": "x"}}
    write_json_atomic(record_path(tmp_path, "predictor", "a"), rec)
    write_json_atomic(record_path(tmp_path, "dense", "b"), {"dataset": "d", "method": "entmax15-topk",
                                                            "time": {"mean": 0.5}})
    paths = write_summary(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["predictors"][0]["ratio_to_dense"] == {"entmax15-topk": pytest.approx(0.02)}
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv) == 3 and csv[0].startswith("dataset,backend,name,family,layer,head,param_g,param_w")
    assert len(paths) == 2


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from bench.data.atomic import write_atomic

    path = tmp_path / "sub" / "r.json"
    write_json_atomic(path, {"a": 1})

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fail)
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in path.parent.iterdir()] == ["r.json"]
    write_atomic(tmp_path / "new" / "t.txt", lambda tmp: tmp.write_text("whole"))
    assert (tmp_path / "new" / "t.txt").read_text() == "whole"
