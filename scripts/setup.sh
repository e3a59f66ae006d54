#!/usr/bin/env bash
# Create .venv at the repository root and install the project into it (with the test extra).
# Re-running is cheap: nothing is reinstalled unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)'; then
      echo "$candidate"; return 0
    fi
  done
  echo "d3ke: error: Python 3.11 or 3.12 is needed (found: $(python3 --version 2>&1)): install it and rerun" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  echo "d3ke setup: creating .venv with $($py --version)"
  "$py" -m venv .venv
fi

stamp=.venv/.d3ke-install-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "d3ke setup: installing the project and its dependencies into .venv (torch is large: minutes the first time)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi
