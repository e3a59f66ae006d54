#!/usr/bin/env bash
# Set everything up and run the test suite. pytest's exit code is kept (5, no tests, is a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
