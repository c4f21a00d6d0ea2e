#!/usr/bin/env bash
# The main job, offline on any machine: set up .venv (first time only), then render the built-in example scene
# (assets/head.ply) to a turntable video and a contact sheet in runs/demo/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
exec .venv/bin/esd-gs render assets/head.ply --out runs/demo "$@"
