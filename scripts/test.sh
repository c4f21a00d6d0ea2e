#!/usr/bin/env bash
# Run the test suite: set up .venv (first time only), then pytest, offline (no Hugging Face Hub).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
