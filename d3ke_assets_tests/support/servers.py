"""Server programs for the tests that start servers (test_ui, deploy/test_scale_out):
`scripts/test.sh` installs them and sets D3KE_REQUIRE_SERVERS=1, so there a missing program fails
the test; elsewhere it skips. Also what a server listens on, and a small REST client."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from d3ke_assets.errors import D3keError
from d3ke_assets.processes import find_program

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


def listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a socket listening on `port` (Linux /proc/net/tcp*): how a test checks
    that a server is bound to loopback and not to every interface."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            host_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(host_hex)
            # the kernel prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words))
    return found


def rest(url: str, body: dict | None = None, timeout_s: float = 30.0) -> dict:
    """GET (no body) or POST JSON to a REST endpoint; a one-line error with the server's message."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300].replace("\n", " ")
        raise D3keError(f"{url} answered HTTP {exc.code}: {detail}") from None
