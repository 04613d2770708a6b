"""On a CUDA GPU (``--profile gpu --device cuda``): exact entmax attention against AdaSplash, softmax SDPA
and predicted sparse execution, the gold on the GPU, and FAISS-GPU twins against torch twins.

What each case is: :mod:`bench.evaluation.gpu_cases` (attention, gold, prediction + sparse execution)
and :mod:`bench.evaluation.gpu_twins` (twins); the methods and their dtypes:
:mod:`bench.execution.gpu_attention`. Two benchmarks:

* ``bench_gpu_attention``: every ``(n, backend, method, dtype)`` of the profile, timed with
  ``benchmark.pedantic`` (one warm-up round, ``rounds`` rounds, each call followed by
  ``torch.cuda.synchronize``). AdaSplash's first call per dtype (Triton compiles and autotunes) runs
  untimed at ``gpu_warmup_n`` and is recorded as ``compile_seconds``. Records kind ``gpu``
  (``records/gpu/n<n>--<backend>--<method>--<dtype>.json``), with the device's name.
* ``bench_gpu_twin``: every ``(n, configuration)`` of ``gpu_twins``, FAISS-GPU against torch on the GPU
  (fit and predict, alternating; the share of identical codes). Records kind ``gpu_twin``.

Every record is written when its case finishes, so a run stopped by a time limit keeps what it measured
(``bench/suite/gpu_run.sh`` runs the cases in phases, each with its own budget). Without ``--device cuda``
every case skips saying so (the gpu profile itself refuses to start without it); other profiles have no
GPU cases. AdaSplash and FAISS-GPU cases skip, saying why, where the package is missing.
"""

from __future__ import annotations

import pytest
import torch

from bench.evaluation.gpu_cases import attention_case, case_id, gpu_cases, warm_adasplash
from bench.evaluation.gpu_twins import faiss_gpu_problem, faiss_predict_call, twin_cases, twin_measure
from bench.execution.gpu_attention import CudaPeak, adasplash_problem
from bench.execution.plan import UnsupportedGraph
from bench.execution.timing import time_record


def pytest_generate_tests(metafunc):
    prof = metafunc.config.sparsebench["profile"]
    if "gpu_case" in metafunc.fixturenames:
        cases = gpu_cases(prof)
        metafunc.parametrize("gpu_case", cases, ids=[case_id(c) for c in cases])
    if "gpu_twin_case" in metafunc.fixturenames:
        cases = twin_cases(prof)
        metafunc.parametrize("gpu_twin_case", cases, ids=[f"n{n}-twin-{name}" for n, name in cases])


def _device(config) -> str:
    """``cuda``, or a skip: the GPU benchmarks run only with ``--device cuda`` on a CUDA device."""
    if config.getoption("device") != "cuda" or not torch.cuda.is_available():
        pytest.skip("the GPU benchmarks need --device cuda on a CUDA device (--profile gpu)")
    return "cuda"


def _base(state, device: str) -> dict:
    prof = state["profile"]
    return {"device": device, "device_name": torch.cuda.get_device_name(0), "heads": prof.gpu_heads,
            "head_dim": prof.gpu_head_dim, "causal": prof.gpu_causal}


def bench_gpu_attention(benchmark, gpu_case, bench_config, fresh_record, run_environment):
    n, backend, method, dtype = gpu_case
    device = _device(bench_config)
    if method == "adasplash" and (why := adasplash_problem()):
        pytest.skip(why)
    state = bench_config.sparsebench
    prof = state["profile"]
    try:
        run, extras = attention_case(gpu_case, prof, device)
    except UnsupportedGraph as exc:  # said so, never timed on another path instead
        pytest.skip(str(exc))
    slot = fresh_record("gpu", f"n{n}--{backend}--{method}--{dtype}")
    compile_seconds = warm_adasplash(prof, dtype, device) if method == "adasplash" else None
    peak = CudaPeak(device).start()
    benchmark.pedantic(run, rounds=prof.rounds, warmup_rounds=1, iterations=1)
    rec = {"kind": "gpu", "n": n, "backend": backend, "method": method, "dtype": dtype, **_base(state, device),
           "time": time_record(benchmark), **extras(), "environment": run_environment}
    for key, value in (("peak_bytes", peak.stop()), ("compile_seconds", compile_seconds)):
        if value is not None:
            rec[key] = value
    benchmark.extra_info.update({k: rec[k] for k in ("kind", "n", "backend", "method", "dtype", "device_name")})
    slot.write(rec)


def bench_gpu_twin(benchmark, gpu_twin_case, bench_config, fresh_record, run_environment):
    n, name = gpu_twin_case
    device = _device(bench_config)
    if why := faiss_gpu_problem():
        pytest.skip(f"FAISS-GPU twins: {why}")
    state = bench_config.sparsebench
    prof = state["profile"]
    slot = fresh_record("gpu_twin", f"n{n}--{name}")
    rec = twin_measure(n, name, prof, device, rounds=max(5, prof.rounds))
    # pytest-benchmark's own numbers: the FAISS twin's prediction (the record holds both twins').
    run = faiss_predict_call(n, name, prof, device)
    benchmark.pedantic(run, rounds=prof.rounds, warmup_rounds=1, iterations=1)
    rec.update(kind="gpu_twin", **_base(state, device), environment=run_environment)
    benchmark.extra_info.update({"kind": "gpu_twin", "n": n, "method": name, "predict_ratio": rec["predict_ratio"],
                                 "fit_ratio": rec["fit_ratio"], "codes_equal_fraction": rec["codes_equal_fraction"]})
    slot.write(rec)
