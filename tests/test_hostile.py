"""Hostile input: every case ends with exit status 2 and one line naming the problem, never a traceback.

Cases by kind: external files, predictor names, options, corpora, caches and folders, through
``bench.cli.main`` (in process) and, for a few, the ``sparsebench`` command and the benchmark suite in a
subprocess (pytest reports a usage error of the suite with its own exit status 4). Records and
baselines that cannot be trusted are covered in ``tests/test_records.py`` (truncated, tampered, no
checksum, schema) and ``tests/test_gates.py`` (malformed baselines, other fingerprints: exit 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bench.cli import main
from bench.data.synthetic import synthetic

ROOT = Path(__file__).resolve().parents[1]


def refused(argv, capsys, message: str) -> str:
    """Run ``sparsebench ARGV``: exit 2 and one line on stderr holding ``message``, no traceback."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err, err
    return err


def data_file(tmp_path: Path, name="d.safetensors", **replace) -> Path:
    """An external file of small synthetic data, with tensors or metadata replaced (None: removed)."""
    d = synthetic(samples=3, layers=2, heads=2, length=12, dim=4)
    tensors = {"q": d.q, "k": d.k, "lengths": d.lengths}
    meta = {"causal": "false"}
    for key, value in replace.items():
        target = meta if key in ("causal", "scale", "alpha") else tensors
        if value is None:
            target.pop(key)
        else:
            target[key] = value
    path = tmp_path / name
    save_file(tensors, str(path), metadata=meta)
    return path


def _creates(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "probe").write_text("")
        (folder / "probe").unlink()
        return True
    except OSError:
        return False


@pytest.fixture
def read_only(tmp_path):
    """A folder in which nothing can be created: a read-only folder, or under root (which ignores
    permissions) a folder of sysfs, which refuses even root."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if _creates(folder / "sub"):
        folder.chmod(0o755)
        folder = Path("/sys/sparsebench-read-only")
        if _creates(folder):
            pytest.skip("no folder here refuses to be written")
    yield folder
    if folder.is_relative_to(tmp_path):
        folder.chmod(0o755)


# -- external files --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("replace, message", [
    ({"q": torch.zeros(3, 2, 2, 12, 4, dtype=torch.int32)}, "tensor 'q' has dtype torch.int32"),
    ({"lengths": torch.tensor([12.0, 5.0, 5.0])}, "tensor 'lengths' has dtype torch.float32; expected int64"),
    ({"k": None}, "tensor 'k' is missing"),
    ({"causal": "maybe"}, "metadata 'causal' is 'maybe'"),
    ({"scale": "fast"}, "metadata 'scale' is 'fast'; expected a number"),
    ({"alpha": "inf"}, "metadata 'alpha' is 'inf'; expected a finite number"),
    ({"q": torch.full((3, 2, 2, 12, 4), float("nan"))}, "q holds NaN or inf at valid position"),
    ({"q": torch.full((3, 2, 2, 12, 4), 1e20), "k": torch.full((3, 2, 2, 12, 4), 1e20)},  # finite; q.k is not
     "not finite in float32 (inf or NaN) in layer 0, sample 0"),
], ids=["dtype", "lengths-dtype", "missing-k", "causal", "scale", "alpha-inf", "nan", "overflow"])
def test_malformed_external_files(tmp_path, capsys, replace, message):
    refused(["data", "inspect", f"file:{data_file(tmp_path, **replace)}", "--json"], capsys, message)


def test_missing_truncated_and_folder_files(tmp_path, capsys):
    refused(["data", "inspect", f"file:{tmp_path / 'absent.safetensors'}"], capsys, "does not exist")
    refused(["data", "inspect", f"file:{tmp_path}"], capsys, f"external file {tmp_path} is a folder")
    whole = data_file(tmp_path).read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole[: len(whole) // 2])
    refused(["data", "inspect", f"file:{cut}", "--json"], capsys, "is not a readable safetensors file")
    refused(["score", "--dataset", f"file:{cut}", "--predictor", "window-w3"], capsys, "not a readable safetensors")


# -- predictor names -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, message", [
    ("sf-kmeans-k4-k8", "parameter k is given twice (k4, k8)"),
    ("window-w011", "did you mean window-w11?"),
    ("window-w+3", "did you mean window-w3?"),
    ("window-w\u0663", "did you mean window-w3?"),
    ("sf-dist-r4-t1.50", "did you mean sf-dist-r4-t1.5?"),
    ("sf-dist-r4-t1e0", "did you mean sf-dist-r4-t1?"),
    ("sf-dist-r4-tinf", "t=inf must be a finite number"),
    ("nope-k3", "unknown predictor 'nope-k3'"),
    ("window-x3", "cannot read 'x3'"),
])
def test_bad_names(capsys, name, message):
    refused(["score", "--dataset", "synthetic", "--predictor", name], capsys, message)


@pytest.mark.parametrize("name, message", [
    ("xattention-b0-st8-t0.9", "need b >= 1, st >= 1"),
    ("xattention-b64-st0-t0.9", "need b >= 1, st >= 1"),
    ("seer-b0-top1-t0", "need b >= 1"),
    ("quest-query-b0-k4", "need page size b >= 1 and pages k >= 1"),
    ("quest-query-b16-k0", "need page size b >= 1 and pages k >= 1"),
    ("simhash-b0-l4-h0-top0", "bits b must be >= 1"),
    ("simhash-b8-l0-h0-top0", "tables l must be >= 1"),
    ("minference-lq0-v16-sl16", "lq must be >= 1"),
    ("fixed-l0-c0", "stride l must be >= 1"),
    ("reformer-raw-b0-h2", "buckets b must be even and >= 2"),
    ("reformer-raw-b8-h0", "rounds h must be >= 1"),
    ("sf-kmeans-r0-k4-top1", "projected dimension r must be >= 1"),
])
def test_sizes_that_must_be_positive(capsys, name, message):
    refused(["score", "--dataset", "synthetic", "--predictor", name], capsys, message)


def test_faiss_backend_of_a_family_without_twin(capsys):
    refused(["score", "--dataset", "synthetic", "--predictor", "window-w3", "--backend", "faiss"], capsys,
            "no FAISS twin of window; families with a twin: reformer, routing, sf-kmeans, simhash")


# -- options ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    (["--threads", "0"], "--threads must be a whole number in 1..64, got 0"),
    (["--threads", "65"], "--threads must be a whole number in 1..64, got 65"),
    (["--threads", "two"], "argument --threads: invalid int value: 'two'"),
    (["--samples", "2"], "--samples must be a whole number in 3..10000 (the fit, validation and eval parts"),
    (["--samples", "10001"], "--samples must be a whole number in 3..10000"),
    (["--length", "1"], "--length must be a whole number in 2..65536"),
    (["--length", "65537"], "--length must be a whole number in 2..65536"),
    (["--split", "0.5,0.5"], "three fractions fit,val,eval, each in (0, 1), summing to 1"),
    (["--split", "0.6,0.3,0.3"], "three fractions fit,val,eval, each in (0, 1), summing to 1"),
    (["--split", "a,b,c"], "three numbers fit,val,eval expected"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
])
def test_bounded_options(capsys, options, message):
    refused(["score", "--dataset", "synthetic", "--predictor", "window-w3", *options], capsys, message)


def test_inspect_and_export_split_nothing_but_are_bounded(tmp_path, capsys):
    refused(["data", "inspect", "synthetic", "--samples", "0"], capsys, "--samples must be a whole number in 1..10000")
    refused(["data", "export", "synthetic", str(tmp_path / "x.safetensors"), "--length", "0"], capsys,
            "--length must be a whole number in 2..65536")
    refused(["data", "inspect", "minilm", "--length", "513"], capsys, "minilm length must be in [2, 512], got 513")


# -- corpora ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    (b"one paragraph only\n", "has 1 paragraph(s) (text between blank lines)"),
    (b"", "is empty"),
    (b"  \n\n \n", "is empty"),
    (b"\x00\x01\x02binary\x00" * 50, "looks binary"),
    (b"\xff\xfe\xfa\x00", "is not UTF-8 text"),
], ids=["too-small", "empty", "blank", "binary", "not-utf8"])
def test_file_corpora(tmp_path, capsys, content, message):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    refused(["data", "inspect", "minilm", "--corpus", f"file:{path}", "--samples", "4", "--json"], capsys, message)


def test_corpus_folder_and_unknown_corpus(tmp_path, capsys):
    refused(["data", "inspect", "minilm", "--corpus", f"file:{tmp_path}"], capsys, "is a folder; give a text file")
    refused(["data", "inspect", "minilm", "--corpus", "klingon"], capsys, "unknown corpus 'klingon'")


# -- caches and folders ----------------------------------------------------------------------------------------
def test_a_corrupt_cache_entry_is_rebuilt_with_a_one_line_warning(tmp_path, capsys, isolated_cache):
    argv = ["data", "inspect", "synthetic", "--samples", "3", "--length", "20", "--json"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    (entry,) = isolated_cache.glob("gold-*.safetensors")
    entry.write_bytes(entry.read_bytes()[:100])  # truncated, as by a full disk
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.split('"load_seconds"')[0] == first.split('"load_seconds"')[0]  # the same gold, rebuilt
    assert err.count("\n") == 1 and err.startswith("sparsebench: warning: cache entry") and "rebuilding it" in err
    assert main(argv) == 0 and capsys.readouterr().err == ""  # rebuilt: no warning the third time


def test_read_only_cache_folder(capsys, monkeypatch, read_only):
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(read_only / "cache"))
    refused(["data", "inspect", "synthetic"], capsys, "cache folder")
    refused(["score", "--dataset", "synthetic", "--predictor", "window-w3"], capsys, "is not writable")


def test_export_onto_a_folder_or_into_a_read_only_one(tmp_path, capsys, read_only):
    refused(["data", "export", "synthetic", str(tmp_path)], capsys, f"data export: {tmp_path} is a folder")
    refused(["data", "export", "synthetic", str(read_only / "x.safetensors")], capsys,
            "data export: the folder")
    refused(["compare", str(tmp_path), "--baseline", str(tmp_path), "--update"], capsys,
            f"compare --update: {tmp_path} is a folder")


def test_read_only_run_folder_for_rescore(tmp_path, capsys, monkeypatch, read_only):
    refused(["rescore", str(tmp_path / "no-run"), "--write"], capsys, "no such run folder")
    run = tmp_path / "run"
    (run / "records").mkdir(parents=True)
    run.chmod(0o555)
    try:
        if os.access(run, os.W_OK):  # root: a run folder that cannot be written is not to be had here
            pytest.skip("root ignores folder permissions")
        refused(["rescore", str(run), "--write"], capsys, "rescore --write: the run folder")
    finally:
        run.chmod(0o755)


# -- the real processes ----------------------------------------------------------------------------------------
def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}
    return env


@pytest.mark.slow
@pytest.mark.parametrize("argv, message", [
    (["data", "inspect", "synthetic", "--threads", "0"], "--threads must be a whole number in 1..64"),
    (["score", "--dataset", "synthetic", "--predictor", "sf-kmeans-k4-k8"], "parameter k is given twice"),
])
def test_the_command_prints_one_line(argv, message):
    p = subprocess.run([sys.executable, "-m", "bench.cli", *argv], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and message in p.stderr


@pytest.mark.slow
def test_the_suite_refuses_bad_threads_and_a_read_only_run_folder(tmp_path, read_only):
    base = [sys.executable, "-m", "pytest", "-c", "bench/suite/pytest.ini", "bench/suite", "--profile", "smoke",
            "--no-scaling", "--collect-only", "-q"]
    for extra, env, message in (
            (["--threads", "0", "--run", "x"], {"SPARSEBENCH_REPORTS": str(tmp_path)}, "--threads must be a whole"),
            (["--run", "x"], {"SPARSEBENCH_REPORTS": str(read_only)}, "is not writable")):
        p = subprocess.run(base + extra, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=300)
        out = p.stdout + p.stderr
        assert p.returncode == pytest.ExitCode.USAGE_ERROR and "Traceback" not in out, out
        assert message in out
        assert not (tmp_path / "runs" / "x").exists()  # refused before the run folder was made
