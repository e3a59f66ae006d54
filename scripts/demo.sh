#!/usr/bin/env bash
# Set everything up and run the main job: every asset on the embedded synthetic dataset, through Dagster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/d3ke demo "$@"
