"""One writer per run folder, manifests that refuse other settings, records reused only on a matching
fingerprint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.errors import BenchError
from bench.results.records import record_path, write_record
from bench.results.run_folder import (
    RunLock,
    check_manifest,
    code_version,
    empty_run_folder,
    record_fingerprint,
    reuse_or_slot,
    writable,
)

DENSE = {"kind": "dense", "dataset": "d", "method": "entmax15-topk", "device": "cpu",
         "time": {"mean": 0.5, "median": 0.5, "min": 0.5, "stddev": 0.0, "rounds": 1, "per_head_mean": 0.1}}


def test_a_second_writer_is_refused_with_the_holder(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    try:
        code = ("import sys; from bench.results.run_folder import RunLock; from bench.errors import BenchError\n"
                f"try:\n    RunLock({str(tmp_path)!r}).acquire()\nexcept BenchError as e:\n    print(e); sys.exit(2)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 2 and "is in use by another run (process" in out.stdout
    finally:
        lock.release()
    RunLock(tmp_path).acquire()  # free again


def test_fresh_empties_the_folder_but_keeps_its_lock(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    (tmp_path / "records" / "dense").mkdir(parents=True)
    (tmp_path / "records" / "dense" / "a.json").write_text("{}")
    (tmp_path / "summary.json").write_text("{}")
    empty_run_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", ".lock.owner"]
    lock.release()


def test_manifest_refuses_other_settings(tmp_path):
    m = {"profile": "smoke", "data": {"samples": 8, "length": 128}, "split": [0.5, 0.25, 0.25], "device": "cpu"}
    check_manifest(tmp_path, m)
    check_manifest(tmp_path, dict(m))  # the same settings: fine
    with pytest.raises(BenchError, match="profile: 'smoke' there, 'default' now.*--fresh"):
        check_manifest(tmp_path, {**m, "profile": "default"})
    with pytest.raises(BenchError, match="data: "):
        check_manifest(tmp_path, {**m, "data": {"samples": 16, "length": 256}})
    (tmp_path / "run.json").write_text("{trunc")
    with pytest.raises(BenchError, match="unreadable"):
        check_manifest(tmp_path, m)


def test_records_are_reused_only_with_their_fingerprint(tmp_path):
    session = {"profile": "smoke", "code": code_version()}
    fp = record_fingerprint(session, {"kind": "dense", "id": "a", "data": {"file_sha256": "aa"}})
    other = record_fingerprint(session, {"kind": "dense", "id": "a", "data": {"file_sha256": "bb"}})
    assert fp != other and fp.startswith("sha256:")
    path = record_path(tmp_path, "dense", "a")
    reuse, slot = reuse_or_slot(path, fp, "dense")
    assert not reuse and slot.reason == "new"
    slot.write(DENSE)
    assert reuse_or_slot(path, fp, "dense")[0]
    reuse, slot = reuse_or_slot(path, other, "dense")  # same file name, other data: measured again
    assert not reuse and "fingerprint differs" in slot.reason
    rec = json.loads(path.read_text())
    rec["time"]["mean"] = 7.0  # edited by hand: its checksum fails
    path.write_text(json.dumps(rec))
    reuse, slot = reuse_or_slot(path, fp, "dense")
    assert not reuse and "checksum" in slot.reason
    write_record(path, DENSE)  # a valid record written without a fingerprint (older suite)
    assert not reuse_or_slot(path, fp, "dense")[0]


def test_unwritable_folders_are_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BenchError, match="run folder .* is not writable"):
        writable(blocker / "run", "run folder")
