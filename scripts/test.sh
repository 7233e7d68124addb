#!/usr/bin/env bash
# Set everything up, lint, build the documentation site, then run the test suite (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,docs
export HF_HUB_OFFLINE=1 SKEMBED_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Some VMs advertise AMX without enabling it; oneDNN's bfloat16 kernels then die (SIGILL).
export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX512_CORE_BF16}"
"${PYTHON:-python3}" -m ruff check skembed tests
# The documentation site, offline: a broken link or reference fails the build (--strict).
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 "${PYTHON:-python3}" -m mkdocs build --strict --quiet --site-dir "$site"
# The tests, and the runnable examples in the docstrings of skembed's modules.
"${PYTHON:-python3}" -m pytest -q --durations=15 --doctest-modules --ignore=tests/data tests skembed "$@"
