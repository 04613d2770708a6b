import json

import pytest

from bench.cli import main
from bench.data.external import write_external
from bench.data.synthetic import synthetic


def test_inspect_json_on_a_file(tmp_path, capsys):
    path = write_external(synthetic(samples=3, layers=2, heads=3, length=30, dim=8), tmp_path / "d.safetensors")
    assert main(["data", "inspect", f"file:{path}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["per_head"]) == 2 and len(out["per_head"][0]) == 3
    assert out["mean"] == pytest.approx(sum(sum(r) for r in out["per_head"]) / 6)
    assert out["descriptor"]["source"] == "file"


def test_export_then_inspect_agree(tmp_path, capsys):
    path = tmp_path / "syn.safetensors"
    assert main(["data", "export", "synthetic", str(path), "--samples", "2", "--length", "24"]) == 0
    capsys.readouterr()
    main(["data", "inspect", "synthetic", "--samples", "2", "--length", "24", "--json"])
    a = json.loads(capsys.readouterr().out)
    main(["data", "inspect", f"file:{path}", "--json"])
    b = json.loads(capsys.readouterr().out)
    assert a["per_head"] == b["per_head"]


@pytest.mark.parametrize("argv, message", [
    (["data", "inspect", "nope"], "unknown source 'nope'"),
    (["data", "inspect", "synthetic", "--corpus", "kjv"], "takes no option(s) ['corpus']"),
    (["data", "inspect", "file:/no/such/file"], "does not exist"),
    (["score", "--dataset", "synthetic", "--predictor", "nope"], "unknown predictor 'nope'"),
    (["score", "--dataset", "synthetic", "--predictor", "window-x3"], "cannot read 'x3'"),
])
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_score_json(capsys):
    assert main(["score", "--dataset", "synthetic", "--predictor", "window-w3", "--predictor", "window-w5-g1",
                 "--samples", "4", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in recs] == ["window-w3", "window-w5-g1"]
    assert recs[1]["mean"]["recall"] >= recs[0]["mean"]["recall"]
    assert recs[0]["params"] == {"w": 3, "g": 0, "s": 0}


def test_list(capsys):
    assert main(["list", "--json"]) == 0
    fams = {f["family"]: f for f in json.loads(capsys.readouterr().out)}
    assert fams["window"]["example"] == "window"
