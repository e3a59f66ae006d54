"""Server processes on loopback: free ports, waiting for a port, finding a program, stopping a
process group. Shared by `d3ke_assets.ui` (the UI launchers) and `d3ke_assets.deploy` (the throwaway
Redis, PostgreSQL and Celery workers of `d3ke bench scale`); it imports nothing of the project but
its errors, so both can sit above it."""

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
                            f"{log_tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise D3keError(f"{what} did not listen on {host}:{port} within {timeout_s:.0f} s{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 15) -> str:
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
        signal_group(pgid, first_signal)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    signal_group(pgid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=timeout_s)


def signal_group(pgid: int, sig: int) -> None:
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
