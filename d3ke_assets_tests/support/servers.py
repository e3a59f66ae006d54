"""Server programs for the tests that start servers (test_ui, deploy/test_scale_out):
`scripts/test.sh` installs them and sets D3KE_REQUIRE_SERVERS=1, so there a missing program fails
the test; elsewhere it skips. Also what a server listens on, a small REST client, and the MLflow
server on a store, started and stopped around a test."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from d3ke_assets.errors import D3keError
from d3ke_assets.processes import find_program, free_port, log_tail, wait_for_port
from d3ke_assets.ui import servers

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


def _answering(server: servers.Server, path: str, timeout_s: float) -> servers.Server:
    """`server` once its port is open and `path` answers HTTP 200; a clear error with its log's tail if not."""
    start = time.monotonic()
    wait_for_port(server.port, server.name, timeout_s, process=server.process, log=server.log)
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}{path}", timeout=5) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        if server.process.poll() is not None or time.monotonic() - start > timeout_s:
            raise D3keError(f"{server.name} on port {server.port} did not answer {path}{log_tail(server.log)}")
        time.sleep(0.3)


@contextmanager
def mlflow_server(data_root: Path, port: int | None = None, log: Path | None = None,
                  env: dict[str, str | None] | None = None, timeout_s: float = 120.0) -> Iterator[servers.Server]:
    """`mlflow server` on the project's store (the command `d3ke ui mlflow` runs); ready once /health answers."""
    port = port or free_port()
    folder = servers.mlflow_folder(data_root)
    folder.mkdir(parents=True, exist_ok=True)
    log = Path(log or folder / "server.log")
    environment = servers.server_environment(data_root, env={**servers.MLFLOW_SERVER_ENV, **(env or {})})
    with servers.start_in_group(servers.mlflow_server_command(data_root, port), environment, log, folder) as process:
        yield _answering(servers.Server("mlflow server", process, log, port), "/health", timeout_s)


@contextmanager
def mlflow_model_server(data_root: Path, model_uri: str, log: Path, timeout_s: float = 180.0
                        ) -> Iterator[servers.Server]:
    """`mlflow models serve -m MODEL_URI --env-manager local -h 127.0.0.1` on a free port, the project's
    store as its tracking URI (so `models:/` URIs resolve); ready once /ping answers."""
    from d3ke_assets.learning.tracking import MlflowStore

    port = free_port()
    argv = [servers._bin("mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", servers.LOOPBACK, "-p", str(port), "-w", "1"]
    # the scoring server is `uvicorn`, which MLflow starts by name: the environment's bin folder on PATH, as
    # the README's command has it (an activated venv)
    bin_dir = str(Path(sys.executable).parent)
    environment = servers.server_environment(data_root, env={
        "MLFLOW_TRACKING_URI": MlflowStore(data_root).tracking_uri,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")})
    with servers.start_in_group(argv, environment, log, Path(data_root)) as process:
        yield _answering(servers.Server("mlflow models serve", process, log, port), "/ping", timeout_s)
