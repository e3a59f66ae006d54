"""sha256 manifests of raw files, a hash cache, and verification.

- `HashCache`: sha256 by (path, size, mtime); unchanged files are never re-read.
  SQLite, so several processes (Dagster runs) can share it.
- A manifest (`manifest.json` beside a subject's raw outputs) lists every raw
  file of the subject with its size and sha256; its own hash is the subject's
  raw data version.
- `verify_manifests` re-reads every file (no cache: that is the point of
  verifying) and reports each missing or corrupt file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from d3ke_assets.errors import D3keError
from d3ke_assets.storage import atomic_write_json

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20  # 1 MiB reads: large enough that hashlib releases the GIL


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def sha256_files(paths: Iterable[str | Path], workers: int | None = None) -> list[str]:
    """Hash files in parallel threads (OpenSSL's sha256 releases the GIL)."""
    paths = list(paths)
    workers = workers or min(len(paths), os.cpu_count() or 1) or 1
    if workers <= 1:
        return [sha256_file(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(sha256_file, paths))


class HashCache:
    """sha256 of files keyed by absolute path, size and modification time (ns)."""

    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.files_hashed = 0  # files actually read since this object was made
        self.bytes_hashed = 0
        self._lock = threading.Lock()
        self._create(timeout_s=60.0)

    def _create(self, timeout_s: float) -> None:
        """The table, and the file in WAL mode (readers never wait for a writer; the mode is kept
        in the file, so it is set once).  Several runs starting together on a fresh data root
        create the same cache at once, and SQLite then answers the journal-mode switch with
        "database is locked" at once, without waiting out the busy timeout: retry until it is done."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self._connect() as con:
                    if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        con.execute("PRAGMA journal_mode=WAL")
                    con.execute("CREATE TABLE IF NOT EXISTS sha256 (path TEXT PRIMARY KEY, size INTEGER, "
                                "mtime_ns INTEGER, digest TEXT)")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise D3keError(f"{self.db_path}: the hash cache cannot be opened ({exc}); if no other "
                                    "process is using it, delete the file (it is only a cache)") from exc
                time.sleep(0.02)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits on success and is always closed."""
        con = sqlite3.connect(self.db_path, timeout=60)
        try:
            with con:
                yield con
        finally:
            con.close()

    def digests(self, paths: Iterable[str | Path]) -> dict[Path, str]:
        """sha256 of each path, reading only files that are new or changed."""
        paths = [Path(p).resolve() for p in paths]
        stats = {p: p.stat() for p in paths}
        out: dict[Path, str] = {}
        with self._connect() as con:
            for p in paths:
                row = con.execute("SELECT size, mtime_ns, digest FROM sha256 WHERE path = ?", (str(p),)).fetchone()
                st = stats[p]
                if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
                    out[p] = row[2]
        todo = [p for p in paths if p not in out]
        for p, digest in zip(todo, sha256_files(todo)):
            out[p] = digest
        if todo:
            with self._lock:
                self.files_hashed += len(todo)
                self.bytes_hashed += sum(stats[p].st_size for p in todo)
            with self._connect() as con:
                con.executemany("INSERT OR REPLACE INTO sha256 VALUES (?, ?, ?, ?)",
                                [(str(p), stats[p].st_size, stats[p].st_mtime_ns, out[p]) for p in todo])
        return out


@dataclass
class Manifest:
    """Raw files of one subject: relative name -> (size, sha256), plus where they live."""

    subject: str
    dataset: str
    base_dir: str  # folder the relative names are relative to
    files: dict[str, dict] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """Hash of the file list and contents: the subject's raw data version."""
        canonical = json.dumps({k: [v["size"], v["sha256"]] for k, v in sorted(self.files.items())},
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_dict(self) -> dict:
        return {"subject": self.subject, "dataset": self.dataset, "base_dir": self.base_dir,
                "files": self.files, "digest": self.digest}

    def write(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            return cls(d["subject"], d["dataset"], d["base_dir"], d["files"])
        except FileNotFoundError:
            raise D3keError(f"{path}: manifest is missing: materialize raw_subject or run "
                            f"`d3ke verify --write-manifest`") from None
        except (KeyError, json.JSONDecodeError) as exc:
            raise D3keError(f"{path}: manifest is not valid ({exc}): run `d3ke verify --write-manifest`") from None


def build_manifest(subject: str, dataset: str, base_dir: str | Path, relative_names: Iterable[str],
                   cache: HashCache) -> Manifest:
    base = Path(base_dir).resolve()
    names = sorted(relative_names)
    digests = cache.digests(base / n for n in names)
    files = {n: {"size": (base / n).stat().st_size, "sha256": digests[(base / n).resolve()]} for n in names}
    return Manifest(subject, dataset, str(base), files)


@dataclass
class FileProblem:
    subject: str
    path: str
    problem: str  # "missing" or "corrupt"
    expected_sha256: str
    actual_sha256: str | None = None


    def describe(self) -> str:
        if self.problem == "missing":
            return f"{self.path} is missing"
        return f"{self.path} is corrupt (sha256 {self.actual_sha256[:12]}..., expected {self.expected_sha256[:12]}...)"


def compare_with_manifest(manifest: Manifest, current: dict[str, str | None]) -> list[FileProblem]:
    """`current`: relative name -> sha256 now, or None for a file that is gone."""
    base = Path(manifest.base_dir)
    problems = []
    for name, meta in sorted(manifest.files.items()):
        digest = current.get(name)
        if digest is None:
            problems.append(FileProblem(manifest.subject, str(base / name), "missing", meta["sha256"]))
        elif digest != meta["sha256"]:
            problems.append(FileProblem(manifest.subject, str(base / name), "corrupt", meta["sha256"], digest))
    return problems


def present_files(manifest: Manifest) -> dict[str, Path]:
    base = Path(manifest.base_dir)
    return {name: base / name for name in manifest.files if (base / name).is_file()}


def verify_manifest(manifest: Manifest, workers: int | None = None) -> list[FileProblem]:
    """Re-read every file listed (no cache: that is the point) and compare with the manifest."""
    present = present_files(manifest)
    digests = sha256_files(list(present.values()), workers)
    return compare_with_manifest(manifest, dict(zip(present, digests)))


def verify_manifest_cached(manifest: Manifest, cache: HashCache) -> list[FileProblem]:
    """The same check through the hash cache: unchanged files are not re-read."""
    present = present_files(manifest)
    digests = cache.digests(present.values())
    return compare_with_manifest(manifest, {n: digests[p.resolve()] for n, p in present.items()})
