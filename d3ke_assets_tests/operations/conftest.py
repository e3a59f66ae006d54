"""Server programs for the operations tests: `scripts/test.sh` installs them and sets
D3KE_REQUIRE_SERVERS=1, so there a missing program fails the test; elsewhere it skips."""

from __future__ import annotations

import os

import pytest

from d3ke_assets.errors import D3keError
from d3ke_assets.operations.net import find_program

PROGRAM_DIRS = {"initdb": ("/usr/lib/postgresql/*/bin/initdb",), "pg_ctl": ("/usr/lib/postgresql/*/bin/pg_ctl",),
                "postgres": ("/usr/lib/postgresql/*/bin/postgres",)}


def require_program(name: str) -> str:
    try:
        return find_program(name, *PROGRAM_DIRS.get(name, ()),
                            install_hint="run scripts/system_packages.sh as root")
    except D3keError as exc:
        if os.environ.get("D3KE_REQUIRE_SERVERS") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
