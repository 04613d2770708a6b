"""Result records: atomic writes, checksums, schemas and ranges, and summaries that never go stale."""

import json

import pytest

from bench.errors import BenchError
from bench.evaluation.metric_table import METRIC_TABLE
from bench.results.records import (
    RecordError,
    load_records,
    read_record,
    record_checksum,
    record_path,
    write_json_atomic,
    write_record,
)
from bench.results.schema import RANGES, RECORD_KINDS, REQUIRED
from bench.results.summary import SummaryError, summarise, write_summary

METRIC_NAMES = ("recall", "sparsity", "precision", "exact", "mass", "output_error")
DESCRIPTOR = {"source": "synthetic", "samples": 4, "length": 20, "seed": 0, "corpus": "fortunes",
              "corpus_sha256": "ab" * 32}


def predictor_rec(**over) -> dict:
    """A valid predictor record as bench/suite/bench_predictors.py writes it (1 layer x 2 heads)."""
    rec = {"kind": "predictor", "dataset": "d", "backend": "torch", "name": "window-w3", "family": "window",
           "params": {"w": 3, "g": 0}, "mean": {"recall": 0.5, "sparsity": 0.5, "exact": 0.5},
           "per_head": {m: [[0.5, float("nan")]] for m in METRIC_NAMES},
           "time": {"mean": 0.01}, "fit_seconds": 0.0, "prediction_flops": 0.0, "attention_flops": 1.0,
           "dense_flops": 2.0, "environment": {"torch": "x"}, "dataset_descriptor": DESCRIPTOR,
           "eval_samples": 2, "fit_samples": 2, "layers": 1, "heads": 2}
    rec.update(over)
    return rec


def dense_rec(**over) -> dict:
    return {"kind": "dense", "dataset": "d", "method": "entmax15-topk", "time": {"mean": 0.5}, **over}


def forge(path, content) -> None:
    """Write ``content`` with a *valid* checksum, as an editor who knows the format would."""
    content = json.loads(json.dumps(content).replace("NaN", "null"))  # as written: NaN stored as null
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**content, "checksum": record_checksum(content)}))


def refused(path, match: str) -> RecordError:
    with pytest.raises(RecordError, match=match) as info:
        read_record(path)
    assert str(path) in str(info.value) and "measure it again" in str(info.value)
    return info.value


def test_atomic_write_and_nan_as_null(tmp_path):
    p = tmp_path / "r" / "x.json"
    write_json_atomic(p, {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads(p.read_text()) == {"a": None, "b": [1.0, None]}  # not a record: no checksum added
    assert list(p.parent.iterdir()) == [p]  # no temporary file left behind


def test_record_round_trip_with_checksum(tmp_path):
    path = write_record(record_path(tmp_path, "predictor", "a"), predictor_rec())
    stored = json.loads(path.read_text())
    assert stored["checksum"].startswith("sha256:") and len(stored["checksum"]) == 7 + 64
    back = read_record(path)
    assert "checksum" not in back and back["per_head"]["recall"] == [[0.5, None]]  # NaN stored as null
    assert list(path.parent.iterdir()) == [path]


def test_write_json_atomic_on_a_record_path_adds_the_checksum(tmp_path):
    # bench/suite's writers call write_json_atomic(record_path(...)): their records are checksummed too.
    path = record_path(tmp_path, "dense", "b")
    write_json_atomic(path, dense_rec())
    assert "checksum" in json.loads(path.read_text()) and read_record(path)["method"] == "entmax15-topk"


def test_corrupt_record_is_named(tmp_path):
    path = record_path(tmp_path, "predictor", "x")
    path.parent.mkdir(parents=True)
    path.write_text('{"truncated": ')
    refused(path, "x.json is corrupt")
    good, bad = load_records(tmp_path, "predictor")
    assert good == [] and [e.path for e in bad] == [path] and "x.json is corrupt" in str(bad[0])


def test_empty_record(tmp_path):
    path = record_path(tmp_path, "predictor", "x")
    path.parent.mkdir(parents=True)
    path.write_text("")
    refused(path, "x.json is empty")


def test_empty_object_record(tmp_path):
    path = record_path(tmp_path, "predictor", "x")
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    refused(path, "has no checksum: written by an older version")
    forge(path, {})  # even with a checksum, {} is no predictor record
    refused(path, "is not a 'predictor' record")


def test_record_without_checksum_is_from_an_older_version(tmp_path):
    path = record_path(tmp_path, "predictor", "old")
    path.parent.mkdir(parents=True)
    # A complete record, as the previous version wrote it: no checksum.
    path.write_text(json.dumps(predictor_rec()).replace("NaN", "null"))
    refused(path, "old.json has no checksum: written by an older version of sparsebench")


def test_edited_record_fails_its_checksum(tmp_path):
    path = write_record(record_path(tmp_path, "predictor", "a"), predictor_rec())
    stored = json.loads(path.read_text())
    stored["mean"]["recall"] = 0.9
    path.write_text(json.dumps(stored))
    refused(path, "a.json fails its checksum: edited or damaged")


def test_impossible_metrics_are_refused_even_with_a_valid_checksum(tmp_path):
    path = record_path(tmp_path, "predictor", "a")
    forge(path, predictor_rec(mean={"recall": 7.5, "sparsity": -3, "exact": 0.5}))
    err = refused(path, r"field 'mean.recall' is 7.5, outside \[0, 1\]")
    assert "field 'mean.sparsity' is -3, outside [0, 1]" in str(err)


def test_out_of_range_per_head_and_negative_error(tmp_path):
    rec = predictor_rec()
    rec["per_head"]["precision"] = [[0.5, 1.5]]
    rec["mean"]["output_error"] = -0.1
    path = record_path(tmp_path, "predictor", "a")
    forge(path, rec)
    err = refused(path, r"field 'per_head.precision' is 1.5, outside \[0, 1\]")
    assert "field 'mean.output_error' is -0.1, outside [0, inf]" in str(err)


def test_float32_rounding_past_one_is_not_refused(tmp_path):
    path = write_record(record_path(tmp_path, "predictor", "a"),
                        predictor_rec(mean={"recall": 1.0000001, "sparsity": 0.0, "mass": 1.00000008}))
    assert read_record(path)["mean"]["recall"] == 1.0000001


def test_wrong_types_are_named(tmp_path):
    path = record_path(tmp_path, "predictor", "a")
    forge(path, predictor_rec(name=5, params=[1], time={"mean": "fast"}))
    err = refused(path, "field 'name' is 5, expected a string")
    assert "field 'params' is a list, expected an object" in str(err)
    forge(path, predictor_rec(time={"mean": "fast"}))
    refused(path, "field 'time.mean' is the string 'fast', expected a number or null")
    forge(path, predictor_rec(eval_samples=True))
    refused(path, "field 'eval_samples' is true, expected an integer")


def test_missing_fields_are_named(tmp_path):
    rec = predictor_rec()
    del rec["per_head"], rec["dataset_descriptor"]
    path = record_path(tmp_path, "predictor", "a")
    forge(path, rec)
    err = refused(path, "misses required field 'per_head'")
    assert "misses required field 'dataset_descriptor'" in str(err)


def test_per_head_tables_must_have_the_records_shape(tmp_path):
    rec = predictor_rec()
    rec["per_head"]["mass"] = [[0.5]]
    path = record_path(tmp_path, "predictor", "a")
    forge(path, rec)
    refused(path, "field 'per_head.mass' is not a layers x heads table")
    forge(path, predictor_rec(layers=3))
    refused(path, "field 'per_head.recall' is not 3 layers x 2 heads")


def test_unknown_metric_and_nan_constant(tmp_path):
    path = record_path(tmp_path, "predictor", "a")
    forge(path, predictor_rec(mean={"recall": 0.5, "sparsity": 0.5, "recal": 0.5}))
    refused(path, "field 'mean.recal' is not a metric of bench/evaluation/metric_table.py")
    path.write_text(path.read_text().replace('"recal": 0.5', '"recal": NaN'))
    refused(path, "is corrupt .*non-standard JSON constant NaN")


def test_record_in_the_wrong_folder(tmp_path):
    path = record_path(tmp_path, "predictor", "a")
    forge(path, dense_rec())
    refused(path, "is not a 'predictor' record \\(its field 'kind' is the string 'dense'\\)")


def test_invalid_record_is_never_written(tmp_path):
    path = record_path(tmp_path, "predictor", "a")
    with pytest.raises(RecordError, match="was not written: it .*field 'mean.recall' is 7.5"):
        write_record(path, predictor_rec(mean={"recall": 7.5, "sparsity": 0.5}))
    assert not path.exists() and not list(path.parent.glob("*"))


def test_load_records_returns_good_and_bad(tmp_path):
    write_record(record_path(tmp_path, "predictor", "a"), predictor_rec())
    forge(record_path(tmp_path, "predictor", "b"), predictor_rec(mean={"recall": 7.5, "sparsity": 0.5}))
    record_path(tmp_path, "predictor", "c").write_text("")
    good, bad = load_records(tmp_path, "predictor")
    assert [r["name"] for r in good] == ["window-w3"]
    assert [e.path.name for e in bad] == ["b.json", "c.json"] and "outside [0, 1]" in bad[0].problem
    with pytest.raises(BenchError, match="unknown record kind 'predictors'"):
        load_records(tmp_path, "predictors")


def test_summary_from_records(tmp_path):
    write_json_atomic(record_path(tmp_path, "predictor", "a"), predictor_rec())
    write_json_atomic(record_path(tmp_path, "dense", "b"), dense_rec())
    paths = write_summary(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["predictors"][0]["ratio_to_dense"] == {"entmax15-topk": pytest.approx(0.02)}
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv) == 3 and csv[0].startswith("dataset,backend,name,family,layer,head,param_g,param_w")
    assert len(paths) == 2
    assert summary["fingerprint"] == {"profile": None, "datasets": {"d": {
        "descriptor": DESCRIPTOR, "fit_samples": 2, "eval_samples": 2}}}


def test_fingerprint_takes_the_profile_from_the_sessions(tmp_path):
    write_record(record_path(tmp_path, "predictor", "a"), predictor_rec())
    bench_json = {"machine_info": {"sparsebench": {"profile": "smoke", "torch": "x"}}}
    (tmp_path / "benchmark-20260101T000000.json").write_text(json.dumps(bench_json))
    assert summarise(tmp_path)["fingerprint"]["profile"] == "smoke"
    assert summarise(tmp_path, profile="default")["fingerprint"]["profile"] == "default"  # the suite's word wins
    bench_json["machine_info"]["sparsebench"]["profile"] = "default"
    (tmp_path / "benchmark-20260102T000000.json").write_text(json.dumps(bench_json))
    with pytest.raises(SummaryError, match="sessions of several profiles \\(default, smoke\\)"):
        summarise(tmp_path)


def test_a_run_mixing_data_configurations_is_refused(tmp_path):
    write_record(record_path(tmp_path, "predictor", "a"), predictor_rec())
    write_record(record_path(tmp_path, "predictor", "b"),
                 predictor_rec(name="window-w5", dataset_descriptor={**DESCRIPTOR, "samples": 8}))
    with pytest.raises(SummaryError, match="records of dataset 'd' come from different data"):
        summarise(tmp_path)


@pytest.mark.parametrize("damage", ["", '{"trunc', "{}", "edited"])
def test_bad_record_removes_the_stale_summary(tmp_path, damage):
    write_record(record_path(tmp_path, "predictor", "a"), predictor_rec())
    bad = write_record(record_path(tmp_path, "dense", "b"), dense_rec())
    write_summary(tmp_path)
    assert (tmp_path / "summary.json").exists() and (tmp_path / "results.csv").exists()
    text = bad.read_text().replace('"mean": 0.5', '"mean": 0.25') if damage == "edited" else damage
    bad.write_text(text)
    with pytest.raises(SummaryError, match="cannot summarise .*1 bad record\\(s\\): result record .*b.json"):
        write_summary(tmp_path)
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "results.csv").exists()


def test_every_metric_of_the_table_has_a_range():
    assert set(METRIC_TABLE) - {"cosine"} <= set(RANGES)  # cosine can be negative: no range
    assert all(RANGES[m] == (0.0, 1.0) for m in ("recall", "sparsity", "precision", "exact", "mass"))
    assert RANGES["output_error"] == (0.0, float("inf"))
    assert set(RECORD_KINDS) == {"predictor", "dense", "scaling", "gold", "twin", "downstream", "sparse_exec",
                                 "sparse_exec_goal", "gold_memory", "sparse_exec_real", "gpu", "gpu_twin"}
    assert all("kind" in REQUIRED[k] for k in RECORD_KINDS)


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
