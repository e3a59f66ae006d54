"""sha256 manifests of raw files, a hash cache, and verification.

- `HashCache`: sha256 by (path, size, mtime); unchanged files are never re-read.
  SQLite, so several processes (Dagster runs) can share it.
- A manifest (`manifest.json` beside a subject's raw outputs) lists every raw
  file of the subject with its size and sha256; its own hash is the subject's
  raw data version.  It names its files relative to a root, never by an absolute
  path: `raw_subject/<Subject_ID>` under the data root (generated files), or
  under the configured MoVi root (a real dataset), so a root that is copied,
  moved or mounted elsewhere is verified where it is.
- `verify_manifest` re-reads every file (no cache: that is the point of
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
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from d3ke_assets import settings
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
    """sha256 of files keyed by absolute path, size and modification time (ns).

    The cache lives under the data root and is copied with it, but a copy's files have other paths:
    they are hashed afresh, never answered with the original's hashes."""

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


# Which root a manifest's files are named relative to.  Never an absolute path: a data root copied,
# moved or mounted elsewhere is verified where it is now, and a moved MoVi root is found through
# the currently configured D3KE_MOVI_ROOT.
DATA_ROOT = "data_root"  # files generated under the data root (synthetic subjects)
MOVI_ROOT = "movi_root"  # a real dataset, under the user's D3KE_MOVI_ROOT
LAB_ROOT = "lab_root"  # a lab's own data, under the user's D3KE_LAB_ROOT
ROOT_SETTINGS = {DATA_ROOT: "D3KE_DATA_ROOT", MOVI_ROOT: "D3KE_MOVI_ROOT", LAB_ROOT: "D3KE_LAB_ROOT"}
FORMAT = 2  # 1 (no "format" key): an absolute "base_dir"


@dataclass
class Manifest:
    """Raw files of one subject: relative name -> (size, sha256), plus where they live: the folder
    `base` (POSIX, relative; "" for the root itself) under the root of kind `root`."""

    subject: str
    dataset: str
    root: str  # DATA_ROOT or MOVI_ROOT
    base: str
    files: dict[str, dict] = field(default_factory=dict)
    legacy_base_dir: str | None = field(default=None, compare=False)  # read from a format-1 manifest

    @property
    def digest(self) -> str:
        """Hash of the file list and contents: the subject's raw data version (independent of where
        the root is, so moving it makes nothing downstream stale)."""
        canonical = json.dumps({k: [v["size"], v["sha256"]] for k, v in sorted(self.files.items())},
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def folder(self, data_root: str | Path, movi_root: str | Path | None = None,
               lab_root: str | Path | None = None) -> Path:
        """Where the listed files are now: `base` under the data root, or under the configured MoVi
        or lab root (`settings.movi_root`, `settings.lab_root`: a one-line error naming the variable
        when it is not set)."""
        if self.root == DATA_ROOT:
            return Path(data_root) / self.base
        what, resolve, value = (("MoVi", settings.movi_root, movi_root) if self.root == MOVI_ROOT
                                else ("lab", settings.lab_root, lab_root))
        try:
            root = resolve(value)
        except D3keError as exc:
            raise D3keError(f"{self.subject}: its raw files are recorded relative to the {what} root: {exc}") from None
        return root / self.base

    def to_dict(self) -> dict:
        return {"format": FORMAT, "subject": self.subject, "dataset": self.dataset, "root": self.root,
                "base": self.base, "files": self.files, "digest": self.digest}

    def write(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        """A manifest file.  Format 1 (an absolute `base_dir`) is read as what it always meant, relative
        to its root: a synthetic subject's files beside the manifest (`raw_subject/<Subject_ID>` under
        the data root), a real subject's under the MoVi root (its `base_dir` was the MoVi root)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            if "format" not in d:  # format 1
                root = DATA_ROOT if d["dataset"] == "synthetic" else MOVI_ROOT
                base = "/".join(path.absolute().parts[-3:-1]) if root == DATA_ROOT else ""
                return cls(d["subject"], d["dataset"], root, base, d["files"], legacy_base_dir=d["base_dir"])
            if d["format"] != FORMAT:
                raise ValueError(f"format {d['format']!r}, this version reads {FORMAT}")
            if d["root"] not in ROOT_SETTINGS:
                raise ValueError(f"root {d['root']!r} is none of {sorted(ROOT_SETTINGS)}")
            base = PurePosixPath(d["base"])
            if base.is_absolute() or ".." in base.parts:
                raise ValueError(f"base {d['base']!r} is not a folder inside its root")
            return cls(d["subject"], d["dataset"], d["root"], d["base"], d["files"])
        except FileNotFoundError:
            raise D3keError(f"{path}: manifest is missing: materialize raw_subject or run "
                            f"`d3ke verify --write-manifest`") from None
        except (KeyError, TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            raise D3keError(f"{path}: manifest is not valid ({exc}): run `d3ke verify --write-manifest`") from None


def build_manifest(subject: str, dataset: str, base_dir: str | Path, relative_names: Iterable[str],
                   cache: HashCache, root: str, base: str) -> Manifest:
    """Hash the files named relative to `base_dir` (as they are now, cached) into a manifest that
    records them as `base` under the root of kind `root` (`base_dir` may be a temporary folder
    swapped in there afterwards)."""
    if root not in ROOT_SETTINGS:
        raise ValueError(f"root {root!r} is none of {sorted(ROOT_SETTINGS)}")
    folder = Path(base_dir).resolve()
    names = sorted(relative_names)
    digests = cache.digests(folder / n for n in names)
    files = {n: {"size": (folder / n).stat().st_size, "sha256": digests[(folder / n).resolve()]} for n in names}
    return Manifest(subject, dataset, root, str(PurePosixPath(base)) if base else "", files)


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


def compare_with_manifest(manifest: Manifest, folder: Path, current: dict[str, str | None]) -> list[FileProblem]:
    """`current`: relative name -> sha256 now, or None for a file that is gone; `folder`: where the
    files are now (`Manifest.folder`), to name them."""
    problems = []
    for name, meta in sorted(manifest.files.items()):
        digest = current.get(name)
        if digest is None:
            problems.append(FileProblem(manifest.subject, str(folder / name), "missing", meta["sha256"]))
        elif digest != meta["sha256"]:
            problems.append(FileProblem(manifest.subject, str(folder / name), "corrupt", meta["sha256"], digest))
    return problems


def present_files(manifest: Manifest, folder: Path) -> dict[str, Path]:
    return {name: folder / name for name in manifest.files if (folder / name).is_file()}


def verify_manifest(manifest: Manifest, folder: Path, workers: int | None = None) -> list[FileProblem]:
    """Re-read every file listed, under `folder` (`Manifest.folder`: where the files are now), with no
    cache (that is the point) and compare with the manifest."""
    present = present_files(manifest, folder)
    digests = sha256_files(list(present.values()), workers)
    return compare_with_manifest(manifest, folder, dict(zip(present, digests)))


def verify_manifest_cached(manifest: Manifest, folder: Path, cache: HashCache) -> list[FileProblem]:
    """The same check through the hash cache: unchanged files are not re-read.  The cache is keyed by
    each file's own absolute path, so the files of a copied root are hashed afresh, never answered
    with the original's hashes."""
    present = present_files(manifest, folder)
    digests = cache.digests(present.values())
    return compare_with_manifest(manifest, folder, {n: digests[p.resolve()] for n, p in present.items()})
