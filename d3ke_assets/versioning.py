"""Version stamps: skip work whose code, configuration and inputs are unchanged.

This module is the only one that reads or writes a `_stamp.json` (a test checks it).  A stamp
is a hash of a unit's code version, its configuration and its inputs' data versions.  It is
written inside the output folder as the last step of a complete build; when the stamp of a new
request matches the stored one, the stored data version is returned without recomputing.

Two sizes of unit use the same stamps:

- an asset's output folder (`build_if_stale`: the lock, the atomic swap or the in-place
  rebuild, reuse, the data version), called by the Dagster layer's one entry point
  (`defs/versioned.py`);
- a part of an output that must survive a failed run, such as opensim_gt's scaled model and
  each IK trial (`is_current` + `stamped_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Callable, Iterator

from d3ke_assets.storage import atomic_dir, atomic_write_json, disk_full_as_error, output_lock

STAMP_NAME = "_stamp.json"


def canonical_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def version_stamp(code_version: str, config: dict, input_versions: dict[str, str]) -> str:
    return canonical_hash({"code_version": code_version, "config": config, "inputs": input_versions})


def _read(folder: str | Path) -> dict | None:
    try:
        return json.loads((Path(folder) / STAMP_NAME).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _write(folder: str | Path, stamp: str, data_version: str) -> None:
    atomic_write_json(Path(folder) / STAMP_NAME, {"stamp": stamp, "data_version": data_version})


def recorded_data_version(folder: str | Path) -> str | None:
    """The data version of the complete output in `folder`, or None when there is none."""
    rec = _read(folder)
    return rec.get("data_version") if rec else None


def is_complete(folder: str | Path) -> bool:
    """Whether `folder` holds a complete output (a folder only carries a stamp once it is complete)."""
    return recorded_data_version(folder) is not None


def is_current(folder: str | Path, stamp: str) -> bool:
    rec = _read(folder)
    return bool(rec and rec.get("stamp") == stamp)


@contextlib.contextmanager
def stamped_dir(folder: str | Path, stamp: str, data_version: str | None = None) -> Iterator[Path]:
    """Build into a temporary sibling of `folder`; on success, stamp it and swap it in."""
    with atomic_dir(folder) as tmp:
        yield Path(tmp)
        _write(tmp, stamp, data_version or stamp)


def build_if_stale(folder: str | Path, stamp: str, build: Callable[[Path], object], *, in_place: bool = False,
                   content_version: Callable[[Path], str] | None = None,
                   on_reuse: Callable[[Path], object] | None = None,
                   log: Callable[[str], None] | None = None) -> tuple[str, bool]:
    """Reuse `folder` when its stamp matches, else `build` it; returns (data version, reused).

    `build(tmp)` writes into a temporary sibling swapped in when complete, or (`in_place`, for
    outputs whose parts outlive a failed run: per-trial folders, per-epoch checkpoints) into the
    folder itself, whose stamp is removed before anything changes and written last.  Either way
    a folder with a stamp is complete.  The data version is the stamp, or `content_version(folder)`
    for outputs versioned by their content (the raw edge: the manifest digest), which is read
    again on reuse.  `on_reuse(folder)` checks a reused output (e.g. its files' hashes).  One
    writer at a time (`output_lock`): a second run on the same output waits, then reuses it.
    """
    folder = Path(folder)

    def reuse() -> str | None:
        if not is_current(folder, stamp):
            return None
        if on_reuse is not None:
            on_reuse(folder)
        return content_version(folder) if content_version else recorded_data_version(folder)

    current = reuse()
    if current:
        return current, True
    with output_lock(folder, log):
        current = reuse()
        if current:
            return current, True
        if in_place:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / STAMP_NAME).unlink(missing_ok=True)  # from here on the folder is not complete
            with disk_full_as_error(folder):
                build(folder)
            version = content_version(folder) if content_version else stamp
            _write(folder, stamp, version)
        else:
            with atomic_dir(folder) as tmp:
                build(Path(tmp))
                version = content_version(Path(tmp)) if content_version else stamp
                _write(tmp, stamp, version)
    return version, False
