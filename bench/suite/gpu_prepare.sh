#!/usr/bin/env bash
# On your own machine, once before a GPU session, in the checkout the device tool sends (README.md, "On a
# lent GPU"): what bench/suite/gpu_run.sh needs on the lent GPU machine, which reaches no package index,
# in the git-ignored .device/a and .device/b.
#   1. faiss-gpu, entmax and the CUDA 12 runtime: the shared kit's prepare.sh (../shared/device/faiss-gpu;
#      SPARSEBENCH_DEVICE_KIT names another folder); skipped when its archive .device/tmp/faiss.tar.xz is there.
#   2. the AdaSplash wheel (pure Python and Triton, 37 KB) into .device/b, unless one is there.
#   3. faiss-gpu's archive split again for this checkout: a call carries at most 64 MiB, the working tree
#      included (28.5 MiB on 2026-12-01), so the kit's first part of 36 MiB did not fit beside it. The
#      first part is made as large as call 1 allows, the rest goes with call 2; an error when both cannot fit.
#   4. the two run calls, with what each carries.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
kit=${SPARSEBENCH_DEVICE_KIT:-$(cd .. && pwd)/shared/device/faiss-gpu}
limit=$((64 * 1024 * 1024))
margin=$((1024 * 1024)) # room for files added between now and the calls
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
size() { find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }

if [ ! -f .device/tmp/faiss.tar.xz ] || [ ! -f .device/b/stage2.sh ]; then
    [ -f "$kit/prepare.sh" ] || { echo "gpu_prepare: no $kit/prepare.sh (set SPARSEBENCH_DEVICE_KIT)" >&2; exit 2; }
    bash "$kit/prepare.sh"
fi
ls .device/b/adasplash-*.whl >/dev/null 2>&1 ||
    python3 -m pip download -q --no-deps --only-binary=:all: -d .device/b adasplash==0.2.2

# What travels with every call: tracked files and untracked ones git does not ignore.
tree=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
total=$(stat -c %s .device/tmp/faiss.tar.xz)
first=$((limit - tree - margin - $(size .device/a/stage1.sh)))
((first > total)) && first=$total
rest=$((total - first))
others=$(find .device/b -maxdepth 1 -type f ! -name partab -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
call2=$((tree + rest + others))
if ((first <= 0 || call2 + margin > limit)); then
    echo "gpu_prepare: faiss-gpu ($(mib "$total")) and the working tree ($(mib "$tree")) do not fit in two calls" \
        "of $(mib "$limit"); carry less (reports/) or split in three" >&2
    exit 1
fi
head -c "$first" .device/tmp/faiss.tar.xz >.device/a/partaa
tail -c +"$((first + 1))" .device/tmp/faiss.tar.xz >.device/b/partab
cat .device/a/partaa .device/b/partab | cmp -s - .device/tmp/faiss.tar.xz || { echo "gpu_prepare: split failed" >&2; exit 1; }

cat <<MSG
Ready. Working tree $(mib "$tree"); call 1 carries $(mib $((tree + $(size .device/a)))), call 2 $(mib $((call2)))
(of $(mib "$limit") each). On the GPU machine, two run calls back to back (it keeps /tmp only while warm,
about 30 s after a call):
  1. command: bash .device/a/stage1.sh
     carry:   [".device/a"]
  2. command: source .device/b/stage2.sh; bash bench/suite/gpu_run.sh
     carry:   [".device/b"]    timeout_s: 600
Then give the machine back, and here: tar xzf FILES_AT/gpu-run.tar.gz -C reports/   (gives reports/gpu/)
MSG
