"""What a long command shows on the terminal, and where everything else goes.

OpenSim prints model summaries through its C++ logger's console sink, which its Python API cannot
remove (`Logger.cout` messages "always appear"); Dagster, MLflow and warnings write to Python's
stderr; child processes (trial workers, DataLoader workers) inherit both.  So `output_to_log`
points file descriptors 1 and 2 of the whole process at a log file for the duration, and hands
the command a stream to the real terminal for its own lines.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
import time
from pathlib import Path
from typing import Iterator, TextIO


def flush_native_stdio() -> None:
    """Flush C stdio buffers (C++ iostreams go through them when stdout is not a terminal)."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def new_log_file(data_root: Path, command: str) -> Path:
    """`<data root>/logs/<command>-<YYYYmmdd-HHMMSS>.log`, created empty (a second one that second gets -2)."""
    folder = Path(data_root) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        path = folder / (f"{stem}.log" if n == 1 else f"{stem}-{n}.log")
        try:
            path.open("x").close()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free name for a log file {stem}*.log")


class Terminal:
    """The command's own lines; on an interactive terminal also a transient status line."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.interactive = stream.isatty()
        self._status = False

    def say(self, line: str = "") -> None:
        if self._status:  # the status line is replaced by the line it announced
            self.stream.write("\r\033[K")
            self._status = False
        self.stream.write(line + "\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        """Shown until the next `say`, and only on an interactive terminal (a pipe or file gets final lines only)."""
        if self.interactive:
            self.stream.write(("\r\033[K" if self._status else "") + text)
            self.stream.flush()
            self._status = True


@contextlib.contextmanager
def output_to_log(log_path: Path) -> Iterator[Terminal]:
    """Within: all output of the process and its children goes to `log_path`; yields the terminal."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved_out, saved_err = os.dup(1), os.dup(2)
    except (OSError, ValueError, io.UnsupportedOperation):  # no real stdout (embedded): nothing to route
        yield Terminal(sys.stdout)
        return
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1, encoding="utf-8", errors="replace")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield Terminal(terminal)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            flush_native_stdio()
        finally:
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            for fd in (saved_out, saved_err, log_fd):
                os.close(fd)
            terminal.close()
