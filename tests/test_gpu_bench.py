"""The GPU benchmark on a machine without one: the gpu profile, its usage errors and clean skips, the script
that runs it on a lent GPU, the measuring code run on the CPU, and the report's GPU section from a
hand-built GPU run with a known crossover against AdaSplash."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from bench.config.profiles import load_profile, load_profiles
from bench.errors import BenchError
from bench.evaluation.gpu_cases import attention_case, gpu_cases, reference
from bench.execution.dense import dense_attention
from bench.execution.gpu_attention import adasplash_problem, entmax15_blocked, method_dtypes, relative_error
from bench.report.gpu import NO_RUN, against_adasplash, gpu_frame, gpu_plot_frame, gpu_section, time_table
from bench.results.records import record_path, write_record
from bench.results.summary import write_summary

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "bench" / "suite" / "profiles.toml"
SCRIPT = ROOT / "bench" / "suite" / "gpu_run.sh"
PREPARE = ROOT / "bench" / "suite" / "gpu_prepare.sh"


def tiny_profile(**kw):
    """The suite's gpu profile at CPU sizes (2 heads of dimension 16)."""
    prof = load_profile(PROFILES, "gpu")
    return dataclasses.replace(prof, **{"gpu_n": (64, 128), "gpu_heads": 2, "gpu_head_dim": 16,
                                        "gpu_quality_n": 128, **kw})


# -- the profile -------------------------------------------------------------------------------------------------
def test_the_gpu_profile_validates_and_the_others_have_no_gpu_work():
    profiles = load_profiles(PROFILES)
    gpu = profiles["gpu"]
    assert gpu.device == "cuda" and gpu.gpu_n == (1024, 4096, 16384, 32768)
    assert (gpu.gpu_heads, gpu.gpu_head_dim, gpu.gpu_causal) == (16, 64, True)
    assert gpu.gpu_dtypes == ("float16", "bfloat16") and set(gpu.gpu_dense) == {"softmax-sdpa", "entmax15",
                                                                               "adasplash", "gold"}
    assert gpu.datasets == () and gpu.scaling_n == () and gpu.twin_predictors == ()
    for name in ("smoke", "default", "full"):
        p = profiles[name]
        assert p.device is None and p.gpu_n == () and p.gpu_dense == () and p.gpu_predictors == ()


TINY = "\n".join(["[tiny]", "datasets = []", "data = {}", "rounds = 1", "dense = []", "scaling_n = []",
                  "scaling_dense = []", ""])
ON_GPU = 'device = "cuda"\ngpu_n = [1024]\n'


@pytest.mark.parametrize("lines, message", [
    ('gpu_n = [1024]\ngpu_dense = ["softmax-sdpa"]', 'gpu_n is set, so the profile needs device = "cuda"'),
    ('device = "tpu"', "key 'device' must be one of cpu, cuda, got 'tpu'"),
    ('device = "cuda"\ngpu_n = [1000]', "gpu lengths must be powers of two >= 64 .*got 1000"),
    (ON_GPU + 'gpu_dtypes = ["float8"]', "gpu_dtypes has 'float8'; known: float16, bfloat16"),
    (ON_GPU + 'gpu_dense = ["flash"]', "gpu_dense has 'flash'; known: softmax-sdpa, entmax15, adasplash, gold"),
    (ON_GPU + "gpu_head_dim = 48",
     "gpu_heads must be >= 1 and gpu_head_dim one of 16, 32, 64, 128, 256 .*got 16 and 48"),
])
def test_bad_gpu_keys_are_one_line_errors_naming_them(tmp_path, lines, message):
    path = tmp_path / "p.toml"
    path.write_text(TINY + lines + "\n")
    with pytest.raises(BenchError, match=f"profile 'tiny': {message}") as err:
        load_profile(path, "tiny")
    assert "\n" not in str(err.value)
    path.write_text(TINY + ON_GPU)
    assert load_profile(path, "tiny").gpu_n == (1024,)


def test_gpu_cases_run_each_dtype_of_a_method_through_every_length():
    prof = tiny_profile(gpu_dense=("adasplash", "entmax15"), gpu_dense_max={"entmax15": 64},
                        gpu_predictors=("window-w11-g1",))
    assert gpu_cases(prof) == [(64, "dense", "adasplash", "float16"), (128, "dense", "adasplash", "float16"),
                               (64, "dense", "adasplash", "bfloat16"), (128, "dense", "adasplash", "bfloat16"),
                               (64, "dense", "entmax15", "float32"),
                               (64, "sparse", "window-w11-g1", "float32"), (128, "sparse", "window-w11-g1", "float32")]
    assert method_dtypes("softmax-sdpa", ("bfloat16",)) == ("bfloat16",)
    assert method_dtypes("gold", ("float16",)) == ("float32",)


# -- the suite without a GPU ------------------------------------------------------------------------------------------
def _suite(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SPARSEBENCH_REPORTS": str(tmp_path)}
    cmd = [sys.executable, "-m", "pytest", "-c", "bench/suite/pytest.ini", *args, "--run", "x", "-q", "-rs"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_gpu_profile_needs_cuda_and_says_so_in_one_line(tmp_path):
    p = _suite(tmp_path, "bench/suite", "--profile", "gpu", "--collect-only")
    out = p.stdout + p.stderr
    assert p.returncode == pytest.ExitCode.USAGE_ERROR and "Traceback" not in out, out
    assert "--profile gpu runs on the GPU: it needs --device cuda" in out
    if not torch.cuda.is_available():
        p = _suite(tmp_path, "bench/suite", "--profile", "gpu", "--device", "cuda", "--collect-only")
        out = p.stdout + p.stderr
        assert p.returncode == pytest.ExitCode.USAGE_ERROR and "Traceback" not in out, out
        assert "--device cuda asked for, but torch sees no CUDA device here" in out
    assert not (tmp_path / "runs" / "x").exists()  # refused before the run folder was made


@pytest.mark.slow
def test_other_profiles_generate_no_gpu_case(tmp_path):
    p = _suite(tmp_path, "bench/suite/bench_gpu.py", "--profile", "smoke")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "2 skipped" in out and "got empty parameter set" in out
    assert not (tmp_path / "runs" / "x" / "records").exists()  # nothing measured


# -- the scripts --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", [SCRIPT, PREPARE])
def test_the_scripts_are_valid_bash(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True).returncode == 0


def _fake_checkout(tmp_path, tree_bytes: int, archive_bytes: int) -> Path:
    """A git checkout with ``tree_bytes`` of tracked files and what the shared kit's prepare.sh leaves in
    .device/ (its faiss-gpu archive of ``archive_bytes``, stage scripts, wheels), so nothing is downloaded."""
    repo = tmp_path / "checkout"
    (repo / "bench" / "suite").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/.device/\n")
    (repo / "big.bin").write_bytes(b"\0" * (tree_bytes - len("/.device/\n")))
    for folder, files in (("a", ["stage1.sh"]), ("b", ["stage2.sh", "adasplash-0.2.2-py3-none-any.whl"]),
                          ("tmp", [])):
        (repo / ".device" / folder).mkdir(parents=True)
        for name in files:
            (repo / ".device" / folder / name).write_text("#\n")
    (repo / ".device" / "tmp" / "faiss.tar.xz").write_bytes(bytes(range(256)) * (archive_bytes // 256))
    return repo


def test_gpu_prepare_splits_faiss_gpu_so_that_each_call_fits(tmp_path):
    mib = 1024 * 1024
    repo = _fake_checkout(tmp_path, int(28.5 * mib), int(63.5 * mib))
    p = subprocess.run(["bash", str(PREPARE)], cwd=repo, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    first, rest = (repo / ".device" / "a" / "partaa").stat().st_size, (repo / ".device" / "b" / "partab").stat().st_size
    assert first == 64 * mib - int(28.5 * mib) - mib - 2  # 64 MiB less the tree, a 1 MiB margin and stage1.sh
    assert first + rest == int(63.5 * mib)
    assert "call 1 carries 63.0 MiB, call 2 57.5 MiB" in p.stdout
    assert "source .device/b/stage2.sh; bash bench/suite/gpu_run.sh" in p.stdout
    big = _fake_checkout(tmp_path / "big", 40 * mib, int(63.5 * mib))
    p = subprocess.run(["bash", str(PREPARE)], cwd=big, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "do not fit in two calls" in p.stderr


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: the script would measure")
def test_the_gpu_script_skips_cleanly_on_the_cpu_and_packs_its_log(tmp_path):
    out, reports = tmp_path / "out", tmp_path / "device-reports"
    env = {**os.environ, "OUT": str(out), "SPARSEBENCH_REPORTS": str(reports), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1", "SPARSEBENCH_CACHE": str(tmp_path / "cache")}
    p = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "no CUDA device here: the GPU benchmark is skipped" in p.stdout
    archive = out / "gpu-run.tar.gz"
    # The README's unpacking command: tar xzf FILES_AT/gpu-run.tar.gz -C reports/
    local = tmp_path / "reports"
    local.mkdir()
    subprocess.run(["tar", "xzf", str(archive), "-C", str(local)], check=True)
    dev = local / "gpu" / "device"
    assert {"log.txt", "junit-gpu-tests.xml", "phases.tsv", "env.txt"} <= {f.name for f in dev.iterdir()}
    junit = (dev / "junit-gpu-tests.xml").read_text()
    assert 'failures="0"' in junit and 'errors="0"' in junit and 'skipped="0"' not in junit
    assert "bench\tno CUDA device" in (dev / "phases.tsv").read_text()
    with tarfile.open(archive) as tar:
        assert all(m.name == "gpu" or m.name.startswith("gpu/") for m in tar.getmembers())


# -- the measuring code, on the CPU -----------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_blocked_dense_entmax15_is_the_dense_reference(causal):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(3, 130, 16, generator=g) for _ in range(3))
    ref = dense_attention(q, k, v, causal, 0.4, "entmax15-sort")
    assert torch.allclose(entmax15_blocked(q, k, v, causal, 0.4, block=48), ref, atol=1e-6)
    assert relative_error(ref, ref) == 0.0 and math.isnan(relative_error(ref, torch.zeros_like(ref)))


def test_without_cuda_adasplash_says_why():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    assert "needs a CUDA device" in adasplash_problem()


@pytest.mark.slow
def test_every_case_but_adasplash_runs_on_the_cpu_with_its_record_fields():
    from bench.evaluation.gold import layer_gold
    from bench.evaluation.speed_data import gpu_view

    prof = tiny_profile(gpu_predictors=("window-w11-g1", "sf-kmeans-r4-k8-top1"))
    seen = set()
    for case in gpu_cases(prof):
        n, backend, method, dtype = case
        if method == "adasplash":
            continue
        run, extras = attention_case(case, prof, "cpu")
        run()
        rec = extras()
        seen.add(method)
        if backend == "gold":
            assert rec["gold_sparsity"] == pytest.approx(float(layer_gold(gpu_view(n, 2, 16, True)).sparsity().mean()))
        if backend == "sparse":
            assert 0 < rec["sparsity"] < 1 and rec["support_sparsity"] >= rec["sparsity"] and rec["predict_seconds"] > 0
            assert 0 <= rec["output_error"] < 2
    assert seen == {"softmax-sdpa", "entmax15", "gold", "window-w11-g1", "sf-kmeans-r4-k8-top1"}
    full = reference(prof, 128, "cpu")
    assert full.shape == (2, 128, 16) and torch.isfinite(full).all()


@pytest.mark.slow
def test_twins_on_one_device_give_the_same_codes():
    pytest.importorskip("faiss")
    from bench.evaluation.gpu_twins import twin_measure

    prof = tiny_profile(gpu_n=(128,))
    kmeans = twin_measure(128, "sf-kmeans-r4-k8-top1", prof, "cpu", rounds=2)
    assert kmeans["codes_equal_fraction"] == 1.0 and kmeans["centroid_max_diff"] < 1e-5
    assert kmeans["fit_what"] == "k-means of the 256 projected queries and keys per head"
    assert kmeans["predict_ratio"] > 0 and kmeans["fit_ratio"] > 0
    lsh = twin_measure(128, "reformer-raw-b8-h2", prof, "cpu", rounds=2)
    assert lsh["codes_equal_fraction"] == 1.0 and "centroid_max_diff" not in lsh


class FakeBenchmark:
    """pytest-benchmark's ``benchmark`` as the GPU benchmarks use it: ``pedantic``, ``stats``, ``extra_info``."""

    def __init__(self):
        self.extra_info, self.stats = {}, None

    def pedantic(self, fn, args=(), rounds=1, warmup_rounds=0, iterations=1):
        import statistics
        import time
        from types import SimpleNamespace

        for _ in range(warmup_rounds):
            fn(*args)
        seconds = []
        for _ in range(rounds):
            start = time.perf_counter()
            fn(*args)
            seconds.append(time.perf_counter() - start)
        self.stats = SimpleNamespace(stats=SimpleNamespace(
            mean=statistics.fmean(seconds), median=statistics.median(seconds), min=min(seconds), stddev=0.0,
            rounds=rounds))


@pytest.mark.slow
def test_the_benchmarks_write_valid_records_when_run_on_the_cpu(tmp_path, monkeypatch):
    """bench_gpu.py's two benchmarks with their fixtures stood in for and the device forced to the CPU: every
    record passes the schema (write_record refuses one that does not) and summarises."""
    import importlib.util
    from types import SimpleNamespace

    from bench.results.run_folder import RecordSlot

    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "suite" / "bench_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "_device", lambda config: "cpu")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "a CPU standing in")
    monkeypatch.setattr(mod, "faiss_gpu_problem", lambda: None if _has_faiss() else "faiss is missing")
    prof = tiny_profile(gpu_n=(64,), gpu_dense=("softmax-sdpa", "gold", "entmax15"),
                        gpu_predictors=("sf-kmeans-r4-k8-top1",), gpu_twins=("sf-kmeans-r4-k8-top1",), rounds=2)
    config = SimpleNamespace(sparsebench={"profile": prof}, getoption=lambda name: "cuda")
    run = tmp_path / "gpu"
    fresh = lambda kind, rid, dataset=None: RecordSlot(record_path(run, kind, rid), "fp")
    for case in gpu_cases(prof):
        mod.bench_gpu_attention(FakeBenchmark(), case, config, fresh, {"python": "3"})
    if _has_faiss():
        mod.bench_gpu_twin(FakeBenchmark(), (64, "sf-kmeans-r4-k8-top1"), config, fresh, {"python": "3"})
    write_summary(run, profile="gpu")
    summary = json.loads((run / "summary.json").read_text())
    assert {(r["method"], r["dtype"]) for r in summary["gpu"]} == {
        ("softmax-sdpa", "float16"), ("softmax-sdpa", "bfloat16"), ("gold", "float32"), ("entmax15", "float32"),
        ("sf-kmeans-r4-k8-top1", "float32")}
    assert all(r["device_name"] == "a CPU standing in" and r["time"]["rounds"] == 2 for r in summary["gpu"])
    assert len(summary["gpu_twins"]) == (1 if _has_faiss() else 0) and summary["environment"] == {"python": "3"}


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# -- the report's GPU section --------------------------------------------------------------------------------------
ADASPLASH = {1024: 4.6e-4, 4096: 6.3e-4, 16384: 5.9e-3, 32768: 2.0e-2}  # float16; bfloat16 10% slower
SPARSE = {  # prediction + sparse execution
    "sf-kmeans-r4-k8-top1": {1024: 2e-3, 4096: 1.5e-3, 16384: 4e-3, 32768: 1e-2},  # beats AdaSplash from 16384
    "routing-raw-k8": {1024: 1e-3, 4096: 5e-4, 16384: 7e-3, 32768: 3e-2},  # only at 4096: no crossover
    "window-w11-g1": {1024: 1e-4, 4096: 1e-4, 16384: 1e-4, 32768: 1e-4},  # at every n
}


def _gpu_record(n, backend, method, dtype, t, **extra):
    return {"kind": "gpu", "n": n, "backend": backend, "method": method, "dtype": dtype, "device": "cuda",
            "device_name": "NVIDIA H200", "time": {"mean": t, "median": t, "min": t, "stddev": 0.0, "rounds": 5},
            **extra}


def write_gpu_run(run: Path) -> Path:
    """A GPU run folder written as the suite writes one: records, then write_summary."""
    recs = []
    for n, t in ADASPLASH.items():
        recs.append(_gpu_record(n, "dense", "adasplash", "float16", t, compile_seconds=95.0))
        recs.append(_gpu_record(n, "dense", "adasplash", "bfloat16", 1.1 * t, compile_seconds=90.0))
        recs.append(_gpu_record(n, "dense", "softmax-sdpa", "bfloat16", t / 5))
    for name, times in SPARSE.items():
        for n, t in times.items():
            err = {"output_error": 0.6 if n == 1024 else 0.5} if n <= 4096 else {}
            recs.append(_gpu_record(n, "sparse", name, "float32", t, sparsity=0.87, **err))
    for rec in recs:
        write_record(record_path(run, "gpu", f"n{rec['n']}--{rec['backend']}--{rec['method']}--{rec['dtype']}"), rec)
    twin = {"kind": "gpu_twin", "n": 1024, "name": "sf-kmeans-r4-k8-top1", "family": "sf-kmeans",
            "device_name": "NVIDIA H200", "fit_ratio": 8.0, "predict_ratio": 2.5, "codes_equal_fraction": 1.0,
            "centroid_max_diff": 2e-7, "fit_what": "k-means of the 2048 projected queries and keys per head"}
    write_record(record_path(run, "gpu_twin", "n1024--sf-kmeans-r4-k8-top1"), twin)
    write_summary(run, profile="gpu")
    return run


def test_the_crossover_against_adasplash_of_a_hand_built_run(tmp_path):
    run = write_gpu_run(tmp_path / "gpu")
    frame = gpu_frame(json.loads((run / "summary.json").read_text()))
    assert len(frame) == 24 and set(frame["device_name"]) == {"NVIDIA H200"}
    cross = against_adasplash(frame).set_index("method")
    assert cross.loc["sf-kmeans-r4-k8-top1", "crossover_n"] == 16384
    assert cross.loc["sf-kmeans-r4-k8-top1", "speedup_at_max"] == pytest.approx(2.0)  # float16 is the faster dtype
    assert math.isnan(cross.loc["routing-raw-k8", "crossover_n"])
    assert cross.loc["routing-raw-k8", "speedup_at_max"] == pytest.approx(2 / 3)
    assert bool(cross.loc["window-w11-g1", "always"]) and cross.loc["window-w11-g1", "crossover_n"] == 1024
    section = gpu_section(run)
    text = section.markdown
    assert ("- sf-kmeans-r4-k8-top1: predicted sparse execution (prediction included) beats AdaSplash from "
            "n = 16384 (2x faster than AdaSplash at n = 32768; sparsity 0.870 at n = 32768, output error 0.5 against "
            "dense entmax15 at n = 4096).") in text
    assert ("- routing-raw-k8: predicted sparse execution (prediction included) does not beat AdaSplash up to "
            "n = 32768 (AdaSplash 1.5x faster at n = 32768;") in text
    assert "- window-w11-g1: predicted sparse execution (prediction included) beats AdaSplash at every measured n " \
           "(from n = 1024) (200x faster than AdaSplash at n = 32768;" in text
    assert "on NVIDIA H200: 24 attention records, 1 twin records" in text
    assert section.findings and section.findings[0] in text
    assert set(section.tables) == {"gpu-times", "gpu-crossover-adasplash", "gpu-twins"}
    table = time_table(frame).set_index("n")
    assert table.loc[32768, "adasplash (float16)"] == pytest.approx(20.0)  # milliseconds
    assert table.loc[1024, "sf-kmeans-r4-k8-top1 (float32)"] == pytest.approx(2.0)
    shown = gpu_plot_frame(frame)
    assert set(shown.loc[shown["backend"] == "dense", "method"]) == {"adasplash (float16)", "adasplash (bfloat16)",
                                                                     "softmax-sdpa (bfloat16)"}


def test_without_a_gpu_run_the_section_says_so(tmp_path):
    section = gpu_section(tmp_path / "gpu")
    assert section.markdown == NO_RUN.format(path=str(tmp_path / "gpu")) and not section.findings
    assert section.markdown.startswith("No GPU run yet")
