#!/usr/bin/env bash
# Every GPU measurement of the project in one call on a lent GPU machine (README.md, "On a lent GPU"):
# the GPU tests (pytest -m gpu), then the gpu benchmark profile (bench_gpu.py) in phases, each with its own
# time limit inside SPARSEBENCH_GPU_BUDGET seconds (default 480: a 600 s call keeps room for stage 2 and
# packing). Records are written as each case finishes, so a phase stopped at its limit keeps what it
# measured; a second call on the same warm machine resumes (finished records are reused).
#
#   source .device/b/stage2.sh; bash bench/suite/gpu_run.sh      (from the project root, on the GPU machine)
#
# Result: $OUT/gpu-run.tar.gz (one archive) holding the run folder gpu/ (records, summary.json,
# pytest-benchmark JSON) and gpu/device/ (log.txt, junit-gpu-tests.xml, phases.tsv, env.txt). Locally:
# tar xzf FILES_AT/gpu-run.tar.gz -C reports/   (gives reports/gpu/, which the report's GPU section reads).
# Needs no network: faiss-gpu and entmax come from stage 2, AdaSplash's wheel from .device/b
# (bench/suite/gpu_prepare.sh). Without a CUDA device it runs the GPU tests (they skip, saying why),
# measures nothing, packs the log and exits 0.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
START=$(date +%s)
BUDGET=${SPARSEBENCH_GPU_BUDGET:-480}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/sparsebench-gpu-out}
export SPARSEBENCH_REPORTS=${SPARSEBENCH_REPORTS:-/tmp/sparsebench-gpu-reports}
export SPARSEBENCH_CACHE=${SPARSEBENCH_CACHE:-/tmp/sparsebench-gpu-cache}
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUN_DIR="$SPARSEBENCH_REPORTS/runs/gpu"
DEV="$RUN_DIR/device"
mkdir -p "$OUT" "$DEV" || exit 2
LOG=$(mktemp /tmp/sparsebench-gpu-log.XXXXXX)  # copied into the run folder when packing (tee still writes)
exec > >(tee -a "$LOG") 2>&1

left() { echo $((BUDGET - ($(date +%s) - START))); }

# phase NAME MAX_SECONDS COMMAND...: run COMMAND for at most MAX_SECONDS (less when the budget runs out).
phase() {
    local name=$1 max=$2 t rc begin
    shift 2
    t=$(left)
    ((t > max)) && t=$max
    if ((t < 20)); then
        echo "== $name: not run, $(left) s of the budget left"
        printf '%s\tnot run\t0\n' "$name" >>"$DEV/phases.tsv"
        return 0
    fi
    echo "== $name (at most $t s; $(left) s of the budget left)"
    begin=$(date +%s)
    timeout -k 10 "$t" "$@"
    rc=$?
    ((rc == 124 || rc == 137)) && echo "== $name: stopped at its limit of $t s (finished records are kept)"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - begin))" >>"$DEV/phases.tsv"
}

# Wheels carried in .device/b (entmax also comes from stage 2; AdaSplash only from here).
for pkg in entmax adasplash; do
    whl=$(ls .device/b/"$pkg"-*.whl 2>/dev/null | head -n 1)
    if ! "$PY" -c "import $pkg" 2>/dev/null && [ -n "$whl" ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$whl"
    fi
done
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    else
        echo "no nvidia-smi"
    fi
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    for pkg in faiss entmax adasplash triton; do
        "$PY" -c "import $pkg; print('$pkg', getattr($pkg, '__version__', '?'))" 2>&1 | tail -n 1
    done
} >"$DEV/env.txt"
cat "$DEV/env.txt"

phase gpu-tests 60 "$PY" -m pytest -m gpu tests/test_gpu.py tests/test_faiss_twins.py tests/test_sparse_exec.py \
    -q -p no:cacheprovider -rs --junitxml="$DEV/junit-gpu-tests.xml"

# 8 torch threads: the CPU side (data, fits, k-means seeding) of a 16-core machine; recorded with every record.
BENCH=("$PY" -m pytest -c bench/suite/pytest.ini bench/suite --profile gpu --device cuda --run gpu --threads 8 -q -rs)
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    # Cheap and decisive first (SDPA, sparse execution, twins), AdaSplash (compiles for minutes) next, the
    # slow dense references last.
    phase bench-core 120 "${BENCH[@]}" -k "bench_gpu and (softmax-sdpa or sparse or twin)"
    phase bench-adasplash 240 "${BENCH[@]}" -k "bench_gpu and adasplash"
    phase bench-reference 150 "${BENCH[@]}" -k "bench_gpu and (gold or entmax15)"
    # The summary of every record, whichever phase was stopped.
    phase summary 30 "$PY" -c "from pathlib import Path; from bench.results.summary import write_summary; \
print(*write_summary(Path('$RUN_DIR'), profile='gpu'))"
else
    echo "== no CUDA device here: the GPU benchmark is skipped (every GPU path skips with its reason)"
    printf 'bench\tno CUDA device\t0\n' >>"$DEV/phases.tsv"
fi

echo "== packing $RUN_DIR into $OUT/gpu-run.tar.gz ($(left) s of the budget left)"
cp "$LOG" "$DEV/log.txt"
tar czf "$OUT/gpu-run.tar.gz" -C "$SPARSEBENCH_REPORTS/runs" gpu
if (($(stat -c %s "$OUT/gpu-run.tar.gz") > 15 * 1024 * 1024)); then  # $OUT returns files of 16 MiB at most
    echo "== archive over 15 MiB: packed again without pytest-benchmark's JSON"
    tar czf "$OUT/gpu-run.tar.gz" -C "$SPARSEBENCH_REPORTS/runs" --exclude 'benchmark-*.json' gpu
fi
ls -l "$OUT/gpu-run.tar.gz"
cat "$DEV/phases.tsv"
exit 0
