"""Atomic writes: an output is either complete or absent, never half-written.

Everything is written into a temporary sibling and renamed into place only when
complete (a rename within one file system is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

TMP_MARK = ".tmp-"


def _tmp_sibling(path: Path) -> Path:
    """`name.tmp-xxxxxxxx.ext`: keeps the extension, so tools that go by it still work."""
    return path.with_name(f"{path.stem}{TMP_MARK}{uuid.uuid4().hex[:8]}{path.suffix}")


def is_temporary(path: Path) -> bool:
    return TMP_MARK in Path(path).name


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write one file to; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
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
        yield tmp
        old = None
        if path.exists():
            old = _tmp_sibling(path)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old is not None:  # put the previous complete folder back
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
