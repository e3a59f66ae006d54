#!/usr/bin/env bash
# Set everything up and run the test suite. pytest's exit code is kept (5, no tests, is a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system_packages.sh
export D3KE_REQUIRE_SERVERS=1  # a missing server fails its test here, never skips it
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
