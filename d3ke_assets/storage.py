"""Atomic writes: an output is either complete or absent, never half-written.

Everything is written into a temporary sibling and renamed into place only when
complete (a rename within one file system is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Iterator

TMP_MARK = ".tmp-"


def _tmp_sibling(path: Path) -> Path:
    """`name.tmp-xxxxxxxx.ext`: keeps the extension, so tools that go by it still work."""
    return path.with_name(f"{path.stem}{TMP_MARK}{uuid.uuid4().hex[:8]}{path.suffix}")


def is_temporary(path: Path) -> bool:
    return TMP_MARK in Path(path).name


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# what libraries that do not raise OSError(ENOSPC) say instead (torch.save, Arrow, PyAV)
DISK_FULL_TEXTS = ("no space left on device", "file write failed", "disk quota exceeded")
NEARLY_FULL_BYTES = 1 << 20


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether `exc`, raised while writing under `folder`, came from a full disk."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc).lower()
    if any(t in text for t in DISK_FULL_TEXTS):
        return True
    try:  # a library that hides the cause: judge by the space left
        return isinstance(exc, (OSError, RuntimeError)) and shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


@contextlib.contextmanager
def disk_full_as_error(path: Path) -> Iterator[None]:
    """A write that fails because the disk is full becomes one clear D3keError naming the place."""
    from d3ke_assets.errors import D3keError

    try:
        yield
    except D3keError:
        raise
    except (OSError, RuntimeError) as exc:
        probe = path if path.is_dir() else path.parent
        if not is_disk_full(exc, probe):
            raise
        raise D3keError(f"the disk is full: writing {path} failed ({exc}); nothing was replaced. Free some "
                        f"space there or set D3KE_DATA_ROOT to a larger disk, then materialize again") from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write one file to; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with disk_full_as_error(path):
            yield tmp
            with open(tmp, "rb+") as fh:  # data on disk before the rename makes it visible
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces `path` as a whole.

    A previous complete `path` stays in place until the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    tmp.mkdir()
    try:
        with disk_full_as_error(path):
            yield tmp
        old = None
        try:
            if path.exists():
                old = _tmp_sibling(path)
                os.replace(path, old)
            os.replace(tmp, path)
        except BaseException:  # also Ctrl-C / SIGTERM between the two renames
            if old is not None and old.exists() and not path.exists():  # put the previous complete folder back
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def lock_path(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # Dagster keeps a step's stderr in its compute log


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, log=None) -> Iterator[None]:
    """Hold the one writer's lock of an output folder; a second run on the same output waits here.

    An advisory `flock` on `.<name>.lock` beside the folder: the kernel releases it when its holder
    dies (even by SIGKILL), so a killed run never blocks the next.  Holding it, any temporaries left
    beside or inside the folder are from dead writers and are removed.
    """
    folder = Path(folder)
    log = log or _stderr
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{folder} is being written by another run: waiting for it to finish")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            remove_stale_temporaries(folder)
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete `<name>.tmp-*` beside `folder` and any temporary inside it; call only under its lock."""
    found = list(folder.parent.glob(f"{glob.escape(folder.stem)}{TMP_MARK}*{glob.escape(folder.suffix)}"))
    if folder.is_dir():
        found += [p for p in folder.rglob(f"*{TMP_MARK}*") if is_temporary(p)]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def read_json(path: str | os.PathLike, when_missing: str) -> dict:
    """A JSON file written by the platform; one-line errors say what to do when it is missing or damaged."""
    from d3ke_assets.errors import D3keError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise D3keError(f"{path}: missing: {when_missing}") from None
    except json.JSONDecodeError as exc:
        raise D3keError(f"{path}: not valid JSON ({exc}): delete it and {when_missing}") from None


def ensure_free_space(folder: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Fail before writing when the disk holding `folder` has less room than `needed_bytes`."""
    from d3ke_assets.errors import D3keError

    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise D3keError(f"{what} needs about {needed_bytes / 1e6:,.0f} MB at {folder} but only "
                        f"{free / 1e6:,.0f} MB are free there: free some space or set D3KE_DATA_ROOT to a larger disk")


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def safe_name(name: str, what: str, where) -> str:
    """A name from the data (a trial, a file) that becomes part of a path: one plain component,
    so a crafted value cannot reach outside the data root."""
    from d3ke_assets.errors import D3keError

    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise D3keError(f"{where}: {what} {name!r} is not a plain name (letters, digits, _ . -; no '..' or '/'): "
                        f"fix or regenerate that file")
    return name
