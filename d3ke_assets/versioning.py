"""Version stamps: skip work whose code, configuration and inputs are unchanged.

An asset's stamp is a hash of its code version, its configuration and its
inputs' data versions.  It is written next to the output (`_stamp.json`) after
the output is complete; when the stamp of a new request matches the stored one,
the stored data version is returned without recomputing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from d3ke_assets.storage import atomic_write_json

STAMP_NAME = "_stamp.json"


def canonical_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def version_stamp(code_version: str, config: dict, input_versions: dict[str, str]) -> str:
    return canonical_hash({"code_version": code_version, "config": config, "inputs": input_versions})


def read_stamp(folder: str | Path) -> dict | None:
    path = Path(folder) / STAMP_NAME
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_stamp(folder: str | Path, stamp: str, data_version: str, **extra) -> None:
    atomic_write_json(Path(folder) / STAMP_NAME, {"stamp": stamp, "data_version": data_version, **extra})


def stored_version_if_current(folder: str | Path, stamp: str) -> str | None:
    """The recorded data version when the stored stamp matches, else None."""
    rec = read_stamp(folder)
    if rec and rec.get("stamp") == stamp:
        return rec.get("data_version")
    return None


def build_if_stale(folder: str | Path, stamp: str, build, log=None) -> tuple[str, bool]:
    """Reuse `folder` when its stamp matches, else run `build(tmp)` into a temporary sibling.

    Returns (data version, reused).  The data version is the stamp: a hash of code
    version, configuration and input versions.  The folder is swapped in only when
    `build` returned, and the stamp is written inside it before the swap, so a
    folder with a stamp is always complete.  One writer at a time (`output_lock`): a
    second run on the same output waits, then finds the stamp current and reuses it.
    """
    from d3ke_assets.storage import atomic_dir, output_lock

    current = stored_version_if_current(folder, stamp)
    if current:
        return current, True
    with output_lock(folder, log):
        current = stored_version_if_current(folder, stamp)
        if current:
            return current, True
        with atomic_dir(folder) as tmp:
            build(Path(tmp))
            write_stamp(tmp, stamp, stamp)
    return stamp, False


def build_in_place_if_stale(folder: str | Path, stamp: str, build, log=None) -> tuple[str, bool]:
    """Like `build_if_stale`, for outputs that keep reusable parts across runs (e.g. per-trial folders).

    The old stamp is removed before anything changes and the new one written last, so the
    folder never carries a stamp while it is partly rewritten.
    """
    from d3ke_assets.storage import disk_full_as_error, output_lock

    folder = Path(folder)
    current = stored_version_if_current(folder, stamp)
    if current:
        return current, True
    with output_lock(folder, log):
        current = stored_version_if_current(folder, stamp)
        if current:
            return current, True
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STAMP_NAME).unlink(missing_ok=True)
        with disk_full_as_error(folder):
            build(folder)
        write_stamp(folder, stamp, stamp)
    return stamp, False
