"""One subject's raw data, from either source, with its sha256 manifest.

Layout under the data root: `raw_subject/<Subject_ID>/` holds `manifest.json`
(and, for the synthetic dataset, the generated files themselves).  The raw data
version of a subject is the manifest's digest.  A manifest names its files
relative to the data root (synthetic), the MoVi root or the lab root (real data),
so readers pass the roots as configured now (`Manifest.folder`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from d3ke_assets.errors import D3keError, RawDataError
from d3ke_assets.settings import SyntheticSize
from d3ke_assets.sources import lab, movi, synthetic
from d3ke_assets.sources.checksums import (DATA_ROOT, LAB_ROOT, MANIFEST_NAME, MOVI_ROOT, HashCache, Manifest,
                                          build_manifest, compare_with_manifest, verify_manifest_cached)
from d3ke_assets.storage import atomic_dir, atomic_write_bytes, ensure_free_space, output_lock
from d3ke_assets.sources.subjects import is_subject_key

ASSET_DIR = "raw_subject"
HASH_CACHE = Path(".cache") / "sha256.sqlite"


@dataclass
class RawSubject:
    key: str
    dataset: str
    folder: Path  # where the manifest lives
    manifest: Manifest
    reused: bool  # nothing was generated or changed
    changed_files: list[str] = field(default_factory=list)

    @property
    def data_version(self) -> str:
        return self.manifest.digest

    @property
    def total_bytes(self) -> int:
        return sum(f["size"] for f in self.manifest.files.values())


def raw_dir(data_root: str | Path, key: str) -> Path:
    return Path(data_root) / ASSET_DIR / key


def data_root_base(key: str) -> str:
    """A generated subject's folder as its manifest records it: relative to the data root."""
    return f"{ASSET_DIR}/{key}"


def hash_cache(data_root: str | Path) -> HashCache:
    return HashCache(Path(data_root) / HASH_CACHE)


PREVIEW_NAME = "_preview.jpg"


def listed_files(folder: Path) -> list[str]:
    """Raw files of a subject folder: not the manifest, stamp or preview (all start with _ or are the manifest)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith("_"))


def synthetic_manifest(folder: Path, key: str, cache: HashCache) -> Manifest:
    """The manifest of the generated files in `folder` (the subject's folder, or a temporary one swapped
    in there), recorded as `raw_subject/<key>` under the data root."""
    return build_manifest(key, "synthetic", folder, listed_files(folder), cache, DATA_ROOT, data_root_base(key))


def write_synthetic_subject(folder: Path, key: str, size: SyntheticSize, seed: int, generic_model: str | Path,
                            cache: HashCache, final_dir: Path | None = None,
                            log: Callable[[str], None] = lambda m: None) -> Manifest:
    """Generate one synthetic subject's files, preview and manifest into the empty `folder`.

    `final_dir`: where the folder will be swapped in, when `folder` is a temporary sibling of it
    (for the log: the manifest names the files relative to the data root either way).
    """
    log(f"{key}: generating synthetic subject into {final_dir or folder}")
    ensure_free_space(folder, synthetic.estimate_bytes(size), f"raw_subject for {key}")
    synthetic.generate_subject(key, folder, size, seed, generic_model, log)
    atomic_write_bytes(folder / PREVIEW_NAME, synthetic.preview_jpeg(folder))
    manifest = synthetic_manifest(folder, key, cache)
    manifest.write(folder / MANIFEST_NAME)
    return manifest


def check_synthetic_subject(data_root: str | Path, key: str, cache: HashCache,
                            log: Callable[[str], None] = lambda m: None) -> Manifest:
    """A generated subject about to be reused: every file, under this data root (wherever it was
    generated), as its manifest says (hashes cached by path, size and mtime), else a RawDataError
    saying how to regenerate it."""
    folder = raw_dir(data_root, key)
    manifest = Manifest.read(folder / MANIFEST_NAME)
    problems = verify_manifest_cached(manifest, manifest.folder(data_root), cache)
    if problems:
        raise RawDataError(f"{key}: {'; '.join(p.describe() for p in problems)}: delete {folder} and "
                           f"materialize raw_subject for {key} again to regenerate it")
    if not (folder / PREVIEW_NAME).is_file():
        atomic_write_bytes(folder / PREVIEW_NAME, synthetic.preview_jpeg(folder))
    log(f"{key}: synthetic files unchanged ({len(manifest.files)} files)")
    return manifest


def synthetic_subject(data_root: str | Path, key: str, size: SyntheticSize, seed: int,
                      generic_model: str | Path, log: Callable[[str], None] = lambda m: None) -> RawSubject:
    """One synthetic subject under `data_root`, generated unless its folder is there (benchmarks and
    test fixtures; the raw_subject asset versions it through the project's one versioned path)."""
    out = raw_dir(data_root, key)
    cache = hash_cache(data_root)
    with output_lock(out, log):
        if (out / MANIFEST_NAME).is_file():
            return RawSubject(key, "synthetic", out, check_synthetic_subject(data_root, key, cache, log),
                              reused=True)
        with atomic_dir(out) as tmp:
            manifest = write_synthetic_subject(tmp, key, size, seed, generic_model, cache, out, log)
    return RawSubject(key, "synthetic", out, manifest, reused=False)


@dataclass
class FoundScan:
    """One real subject's files (MoVi or a lab's) as they are now, checked against its recorded manifest."""

    key: str
    root: Path  # the configured root the files were found under (D3KE_MOVI_ROOT, D3KE_LAB_ROOT)
    files: list[Path]
    manifest: Manifest
    changed_files: list[str]  # new or changed since the recorded manifest (all, when none was recorded)


def _scan_found(data_root: str | Path, key: str, dataset: str, root: Path, root_kind: str, base: str,
                files: list[Path], accept_changes: bool, fix: str) -> FoundScan:
    """Hash a real subject's `files` (cached), named relative to `base` under `root`, and compare them
    with its recorded manifest: a recorded file that changed or vanished is damage (a RawDataError)
    until the user says otherwise (`accept_changes`: `d3ke verify --write-manifest`)."""
    out = raw_dir(data_root, key)
    folder = root / base
    names = [str(p.relative_to(folder)) for p in files]
    manifest = build_manifest(key, dataset, folder, names, hash_cache(data_root), root_kind, base)
    previous = None
    if (out / MANIFEST_NAME).is_file() and not accept_changes:
        # the recorded names, looked for under the root as configured now: a moved root is no change
        previous = Manifest.read(out / MANIFEST_NAME)
        problems = compare_with_manifest(previous, folder, {n: m["sha256"] for n, m in manifest.files.items()})
        if problems:
            raise RawDataError(
                f"{key}: {'; '.join(p.describe() for p in problems)} since its manifest was recorded: {fix}, "
                f"or if you replaced it on purpose run `d3ke verify --write-manifest`")
    changed = sorted(n for n in manifest.files if previous is None or n not in previous.files)
    return FoundScan(key, root, files, manifest, changed)


def scan_movi_subject(data_root: str | Path, key: str, index: movi.MoviIndex,
                      accept_changes: bool = False) -> FoundScan:
    """Find one MoVi subject's files, check them and hash them (cached; see `_scan_found`)."""
    files = movi.subject_files(index, key)
    for path in files:
        if path.name.endswith("_poses.npz"):
            movi.check_amass_file(path)
        elif path.stat().st_size == 0:
            raise RawDataError(f"{path}: file is empty: download it again")
    return _scan_found(data_root, key, "movi", index.root, MOVI_ROOT, "", files, accept_changes, "download it again")


def scan_lab_subject(data_root: str | Path, key: str, lab_root: Path, accept_changes: bool = False) -> FoundScan:
    """Find one lab subject's files (`lab.index_subject`), check them (subject.toml, calibration.toml, the
    videos' cameras, each .trc as OpenSim reads it) and hash them (cached; see `_scan_found`).  Its
    manifest names them relative to the subject's folder under D3KE_LAB_ROOT."""
    from d3ke_assets.biomech.formats import read_trc

    subject = lab.index_subject(lab_root, key)
    for path in subject.files:
        if path.stat().st_size == 0:
            raise RawDataError(f"{path}: file is empty: export it again")
    for path in [subject.static_trc, *(t.trc for t in subject.trials)]:
        read_trc(path)  # units, header and numbers, as OpenSim reads them
    return _scan_found(data_root, key, "lab", Path(lab_root), LAB_ROOT, key, subject.files, accept_changes,
                       "export it again")


def write_found_subject(folder: Path, scan: FoundScan, log: Callable[[str], None] = lambda m: None) -> None:
    """Record a real subject's manifest (and a preview) in `folder`; the files stay where they are."""
    folder.mkdir(parents=True, exist_ok=True)
    scan.manifest.write(folder / MANIFEST_NAME)
    try:
        preview = (movi.preview_jpeg(scan.files) if scan.manifest.dataset == "movi"
                   else lab.preview_jpeg(lab.index_subject(scan.root, scan.key)))
        atomic_write_bytes(folder / PREVIEW_NAME, preview)
    except D3keError as exc:  # decoding is checked by the frames stage; the manifest stands
        log(f"{scan.key}: no preview ({exc})")
    log(f"{scan.key}: {len(scan.files)} raw files under {scan.root}, {len(scan.changed_files)} new or changed")


def record_found_subject(data_root: str | Path, scan: FoundScan, accept_changes: bool = False,
                         log: Callable[[str], None] = lambda m: None) -> RawSubject:
    """Record a scanned real subject's manifest when it is new or changed (`d3ke verify`)."""
    out = raw_dir(data_root, scan.key)
    recorded = Manifest.read(out / MANIFEST_NAME) if (out / MANIFEST_NAME).is_file() else None
    if (recorded is None or scan.changed_files or accept_changes or recorded.legacy_base_dir is not None
            or (recorded.root, recorded.base) != (scan.manifest.root, scan.manifest.base)):
        write_found_subject(out, scan, log)
    return RawSubject(scan.key, scan.manifest.dataset, out, scan.manifest, reused=not scan.changed_files,
                      changed_files=scan.changed_files)


def movi_subject(data_root: str | Path, key: str, index: movi.MoviIndex,
                 log: Callable[[str], None] = lambda m: None, accept_changes: bool = False) -> RawSubject:
    """Scan one MoVi subject and record its manifest when it is new or changed (`d3ke verify`)."""
    return record_found_subject(data_root, scan_movi_subject(data_root, key, index, accept_changes),
                                accept_changes, log)


def lab_subject(data_root: str | Path, key: str, lab_root: Path,
                log: Callable[[str], None] = lambda m: None, accept_changes: bool = False) -> RawSubject:
    """Scan one lab subject and record its manifest when it is new or changed (`d3ke verify`)."""
    return record_found_subject(data_root, scan_lab_subject(data_root, key, lab_root, accept_changes),
                                accept_changes, log)


def subject_folders(data_root: str | Path) -> list[Path]:
    """Complete subject folders only: never a temporary left by an interrupted write."""
    base = Path(data_root) / ASSET_DIR
    return sorted(p for p in base.glob("*") if p.is_dir() and is_subject_key(p.name))


def manifests_under(data_root: str | Path) -> list[Path]:
    return [f / MANIFEST_NAME for f in subject_folders(data_root) if (f / MANIFEST_NAME).is_file()]


def camera_videos(data_root: str | Path, key: str, movi_root: str | Path | None = None,
                  lab_root: str | Path | None = None) -> list:
    """Each camera's video and calibration of one subject (`media.video.CameraVideo`); a real subject's
    files are found under `movi_root` or `lab_root` (the configured D3KE_MOVI_ROOT, D3KE_LAB_ROOT).
    A lab films each trial in videos of its own: one entry per trial and camera, its `trial` set."""
    from dataclasses import replace

    from d3ke_assets.media.camera import Camera, camera_from_movi
    from d3ke_assets.media.video import CameraVideo, container_info
    from d3ke_assets.sources.subjects import movi_video_name

    folder = raw_dir(data_root, key)
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise D3keError(f"{manifest_path}: raw_subject is not materialized for {key}: materialize it first")
    manifest = Manifest.read(manifest_path)
    if manifest.dataset == "synthetic":
        facts = synthetic.load_subject_facts(folder)
        out = []
        for cam, files in facts["cameras"].items():
            calibration = folder / files["calibration"]
            out.append(CameraVideo(cam, folder / files["video"], Camera.from_json(calibration), calibration))
        return out
    base = manifest.folder(data_root, movi_root, lab_root)
    if manifest.dataset == "lab":
        subject = lab.index_subject(base.parent, key)
        return [CameraVideo(cam, video, replace(subject.cameras[cam], fps=container_info(video)[2]),
                            base / lab.CALIBRATION_FILE, trial.name)
                for trial in subject.trials for cam, video in sorted(trial.videos.items())]
    by_name = {Path(n).name: base / n for n in manifest.files}
    out = []
    for cam in ("PG1", "PG2"):
        intrinsics, extrinsics = (by_name.get(f"{kind}_{cam}.npz") for kind in ("cameraParams", "Extrinsics"))
        video = by_name.get(movi_video_name(cam, key))
        if intrinsics is None or extrinsics is None or video is None:
            raise RawDataError(f"{manifest_path}: no {movi_video_name(cam, key)} or calibration of {cam} in the "
                               f"manifest: run `d3ke verify --write-manifest` after adding the files")
        out.append(CameraVideo(cam, video, camera_from_movi(cam, intrinsics, extrinsics), intrinsics))
    return out


def subject_digests(data_root: str | Path, dataset: str, keys: list[str], movi_root: str | Path | None = None,
                    log: Callable[[str], None] = lambda m: None, lab_root: str | Path | None = None
                    ) -> dict[str, str]:
    """Manifest digest of each subject's raw files as they are now (hashes come from the cache when
    path, size and mtime are unchanged).  Subjects without raw files are left out."""
    cache = hash_cache(data_root)
    out: dict[str, str] = {}
    if dataset == "synthetic":
        for folder in subject_folders(data_root):
            if folder.name in keys and (folder / MANIFEST_NAME).is_file():
                out[folder.name] = synthetic_manifest(folder, folder.name, cache).digest
        return out
    if dataset == "lab":
        for key in keys:
            try:
                files = lab.index_subject(Path(lab_root), key).files
            except RawDataError as exc:
                log(str(exc))
                continue
            folder = Path(lab_root) / key
            names = [str(p.relative_to(folder)) for p in files]
            out[key] = build_manifest(key, "lab", folder, names, cache, LAB_ROOT, key).digest
        return out
    index = movi.MoviIndex.scan(movi_root)
    for key in keys:
        try:
            files = movi.subject_files(index, key)
        except RawDataError as exc:
            log(str(exc))
            continue
        names = [str(p.relative_to(index.root)) for p in files]
        out[key] = build_manifest(key, "movi", index.root, names, cache, MOVI_ROOT, "").digest
    return out


def changed_subjects(previous: dict[str, str], current: dict[str, str]) -> list[str]:
    """Subjects that are new or whose raw files changed since `previous`."""
    return sorted(k for k, digest in current.items() if previous.get(k) != digest)
