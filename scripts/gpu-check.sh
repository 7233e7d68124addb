#!/usr/bin/env bash
# The GPU checks of skembed, in one command, on a machine with an NVIDIA GPU:
#   1. the tests marked `gpu` (every family in float32, float16 and bfloat16 against the CPU,
#      cuda:1 when two GPUs are visible, GridSearchCV(n_jobs=2) on a GPU, one Dask worker per
#      GPU, a real out-of-memory error recovered, CharacterEmbeddings trained on the GPU);
#   2. benchmarks/bench_gpu.py (tokens/s in float32, bfloat16 and float16, skembed / raw
#      forward >= 0.9, bfloat16 cosine >= 0.999, peak GPU memory per million tokens), whose
#      table replaces the one between the gpu-check markers of docs/performance.md.
# Exits non-zero when there is no CUDA device, a test fails or a goal is missed (the table is
# written in every case where the benchmark ran). Usage: bash scripts/gpu-check.sh [--docs N]
set -uo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: no CUDA device (torch.cuda.is_available() is False): run it on a machine with an NVIDIA GPU and a CUDA build of torch." >&2
    exit 1
fi

export HF_HUB_OFFLINE=1 SKEMBED_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L 2>/dev/null || true

python3 -m pytest -q -p no:cacheprovider -m gpu tests/
tests_status=$?

table=$(mktemp)
trap 'rm -f "$table"' EXIT
python3 benchmarks/bench_gpu.py --markdown "$table" --check "$@"
bench_status=$?

if [ -s "$table" ]; then
    python3 - "$table" docs/performance.md <<'PY'
import sys

table, page = sys.argv[1], sys.argv[2]
begin, end = "<!-- gpu-check: begin -->", "<!-- gpu-check: end -->"
text = open(page).read()
if begin not in text or end not in text:
    sys.exit(f"gpu-check: {page} has no {begin} ... {end} markers to write the table between")
head, rest = text.split(begin, 1)
tail = rest.split(end, 1)[1]
body = open(table).read().strip()
open(page, "w").write(f"{head}{begin}\n{body}\n{end}{tail}")
print(f"gpu-check: the GPU table of {page} is updated")
PY
fi

if [ "$tests_status" -ne 0 ] || [ "$bench_status" -ne 0 ]; then
    echo "gpu-check: failed (tests: exit $tests_status, benchmark: exit $bench_status)" >&2
    exit 1
fi
echo "gpu-check: all GPU tests passed and every GPU goal is met"
