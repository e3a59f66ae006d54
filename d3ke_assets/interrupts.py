"""Stop signals: Ctrl-C (SIGINT) and SIGTERM end a long `d3ke` command within seconds.

Outside a Dagster run the handler raises `Interrupted`, a `KeyboardInterrupt`, so every `finally`
and `except BaseException` that cleans up after Ctrl-C (temporaries of the atomic writes) also runs
on SIGTERM.  While a run executes in-process, Dagster installs its own handler for both signals:
the run stops at its next checkpoint and fails with DagsterExecutionInterruptedError, but Dagster
keeps neither which signal came nor one that arrived just as the run ended.  A wakeup fd
(`signal.set_wakeup_fd`) records every signal whatever Python handler is installed, so
`stop_requested()` knows, and the graph runner launches no further run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; `exit_code` is the shell's convention, 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_state: dict = {"read_fd": None, "first": None}


def _record(signum: int) -> None:
    if _state["first"] is None and signum in STOP_SIGNALS:
        _state["first"] = int(signum)


def _handler(signum, _frame) -> None:
    _record(signum)
    raise Interrupted(signum)


def stop_requested() -> int | None:
    """The first stop signal received inside `stop_on_signals()` (also during a Dagster run), or None."""
    fd = _state["read_fd"]
    if fd is not None:
        while True:  # the wakeup fd holds one byte, the signal number, per signal received
            try:
                data = os.read(fd, 512)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            for signum in data:
                _record(signum)
    return _state["first"]


def signal_name(signum: object) -> str:
    return signal.Signals(signum).name if signum in STOP_SIGNALS else "a stop signal"


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise `Interrupted` and are recorded for `stop_requested()`.

    Only the main thread may install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()  # not inherited by child processes (close-on-exec)
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)  # a full pipe must never block the signal handler
    previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    saved_state = dict(_state)
    _state.update(read_fd=read_fd, first=None)
    try:
        for s in STOP_SIGNALS:  # one handler for both: Dagster copies SIGINT's handler onto SIGTERM after a run
            signal.signal(s, _handler)
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(previous_wakeup)
        _state.update(saved_state)
        os.close(read_fd)
        os.close(write_fd)
