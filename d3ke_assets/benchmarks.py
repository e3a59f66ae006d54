"""Benchmarks (`d3ke bench NAME --json`): ratios measured side by side in one run.

Not tests: they print figures for closing notes and regressions, and do not
assert.  Each repeats its measurements interleaved and keeps the best of each,
because this kind of machine is noisy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from d3ke_assets.sources.checksums import Manifest, sha256_files
from d3ke_assets.sources.raw import manifests_under


def _files_to_hash(data_root: Path | None, min_bytes: int) -> tuple[list[Path], Path | None]:
    """Raw files under the data root if there are enough, else generated files in a temp folder."""
    files: list[Path] = []
    if data_root is not None:
        for mpath in manifests_under(data_root):
            m = Manifest.read(mpath)
            files += [Path(m.base_dir) / n for n in m.files if (Path(m.base_dir) / n).is_file()]
    if sum(f.stat().st_size for f in files) >= min_bytes:
        return files, None
    tmp = Path(tempfile.mkdtemp(prefix="d3ke-bench-verify-"))
    chunk = os.urandom(1 << 20)
    n_files, per_file = 8, max(1, min_bytes // 8 // (1 << 20))
    for i in range(n_files):
        with open(tmp / f"file_{i}.bin", "wb") as fh:
            for k in range(per_file):
                fh.write(chunk[k % 7:] + chunk[:k % 7])
    return sorted(tmp.iterdir()), tmp


def _timed(fn: Callable[[], object], seconds: list[float]) -> None:
    start = time.perf_counter()
    fn()
    seconds.append(time.perf_counter() - start)


def bench_verify(data_root: Path | None = None, min_bytes: int = 512 << 20, rounds: int = 3) -> dict:
    """Hashing throughput of `d3ke verify` next to coreutils `sha256sum` on the same files."""
    if shutil.which("sha256sum") is None:
        raise RuntimeError("sha256sum (coreutils) is not on PATH")
    files, tmp = _files_to_hash(data_root, min_bytes)
    try:
        total = sum(f.stat().st_size for f in files)
        for f in files:  # warm the page cache so both read from memory
            with open(f, "rb") as fh:
                while fh.read(1 << 22):
                    pass
        t_ref: list[float] = []
        t_verify: list[float] = []
        t_single: list[float] = []
        for _ in range(rounds):
            _timed(lambda: subprocess.run(["sha256sum", *map(str, files)], check=True,
                                                 stdout=subprocess.DEVNULL), t_ref)
            _timed(lambda: sha256_files(files), t_verify)
            _timed(lambda: sha256_files(files, workers=1), t_single)
        mb = total / 1e6
        ref, ver, single = mb / min(t_ref), mb / min(t_verify), mb / min(t_single)
        return {
            "benchmark": "verify",
            "files": len(files),
            "bytes": total,
            "source": "data root raw files" if tmp is None else "generated files",
            "rounds": rounds,
            "sha256sum_MB_per_s": round(ref, 1),
            "verify_MB_per_s": round(ver, 1),
            "verify_single_thread_MB_per_s": round(single, 1),
            "ratio_verify_to_sha256sum": round(ver / ref, 3),
            "ratio_single_thread_to_sha256sum": round(single / ref, 3),
            "cpu_count": os.cpu_count(),
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


BENCHMARKS: dict[str, Callable[..., dict]] = {"verify": bench_verify}
