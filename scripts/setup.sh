#!/usr/bin/env bash
# Install skembed (editable) with the given extras, torch first so pip never pulls CUDA wheels.
# Usage: bash scripts/setup.sh EXTRAS   (e.g. "minilm" or "test")
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    # The CPU build; a looser requirement would download several GB of CUDA packages.
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[${1:-minilm}]"
