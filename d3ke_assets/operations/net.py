"""Loopback helpers shared by the servers the project starts (tests, benchmarks, `d3ke ui`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from d3ke_assets.errors import D3keError

LOOPBACK = "127.0.0.1"  # every server the project starts listens here unless told otherwise


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, what: str, timeout_s: float = 60.0, host: str = LOOPBACK,
                  process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Block until something accepts connections on host:port; a clear error (with the log's tail) if not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise D3keError(f"{what} exited with code {process.returncode} before listening on {host}:{port}"
                            f"{_tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise D3keError(f"{what} did not listen on {host}:{port} within {timeout_s:.0f} s{_tail(log)}")


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not Path(log).is_file():
        return ""
    text = Path(log).read_text(errors="replace").strip().splitlines()[-lines:]
    return "; its log ends:\n" + "\n".join(text)


def find_program(name: str, *extra_dirs: str, install_hint: str) -> str:
    """The path of a server binary, from PATH or Debian's versioned folders."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_dirs:
        for candidate in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    raise D3keError(f"{name} is not installed: {install_hint}")


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


def stop_group(process: subprocess.Popen, first_signal: int = signal.SIGTERM, timeout_s: float = 15.0,
               grace_s: float = 3.0, leader_only: bool = False) -> None:
    """Stop a server started with start_new_session (its pid is its process group's id): send
    `first_signal` to the group (or to the leader alone, when the leader shuts its children down
    itself: a Celery worker's warm shutdown, PostgreSQL's postmaster), wait for the leader, then
    SIGKILL whatever of the group is still there after `grace_s`.  Works as well when the leader
    already died and its children did not."""
    pgid = process.pid
    if leader_only:
        if process.poll() is None:
            process.send_signal(first_signal)
    else:
        _killpg(pgid, first_signal)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    _killpg(pgid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=timeout_s)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
