#!/usr/bin/env bash
# Set everything up and run the main job: every asset on the embedded synthetic dataset, through Dagster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# exec: Ctrl-C and SIGTERM reach d3ke itself, which stops the run in progress (exit 130 / 143)
exec .venv/bin/d3ke demo "$@"
