"""One subject's raw data, from either source, with its sha256 manifest.

Layout under the data root: `raw_subject/<Subject_ID>/` holds `manifest.json`
(and, for the synthetic dataset, the generated files themselves).  The raw data
version of a subject is the manifest's digest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from d3ke_assets.errors import D3keError, RawDataError
from d3ke_assets.settings import SyntheticSize
from d3ke_assets.sources import movi, synthetic
from d3ke_assets.sources.checksums import (MANIFEST_NAME, HashCache, Manifest, build_manifest,
                                          compare_with_manifest, verify_manifest_cached)
from d3ke_assets.storage import atomic_dir, atomic_write_bytes, ensure_free_space, output_lock
from d3ke_assets.sources.subjects import is_subject_key
from d3ke_assets.versioning import stored_version_if_current, version_stamp, write_stamp

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


def hash_cache(data_root: str | Path) -> HashCache:
    return HashCache(Path(data_root) / HASH_CACHE)


PREVIEW_NAME = "_preview.jpg"


def listed_files(folder: Path) -> list[str]:
    """Raw files of a subject folder: not the manifest, stamp or preview (all start with _ or are the manifest)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith("_"))


def synthetic_subject(data_root: str | Path, key: str, size: SyntheticSize, seed: int,
                      generic_model: str | Path, model_version: str,
                      log: Callable[[str], None] = lambda m: None) -> RawSubject:
    """Generate (or reuse) one synthetic subject's files and manifest (one writer at a time)."""
    with output_lock(raw_dir(data_root, key), log):
        return _synthetic_subject(data_root, key, size, seed, generic_model, model_version, log)


def _synthetic_subject(data_root: str | Path, key: str, size: SyntheticSize, seed: int,
                       generic_model: str | Path, model_version: str, log: Callable[[str], None]) -> RawSubject:
    out = raw_dir(data_root, key)
    cache = hash_cache(data_root)
    stamp = version_stamp(synthetic.GENERATOR_CODE_VERSION, {"seed": seed, "size": asdict(size)},
                          {"opensim_model": model_version})
    if stored_version_if_current(out, stamp) and (out / MANIFEST_NAME).is_file():
        manifest = Manifest.read(out / MANIFEST_NAME)
        problems = verify_manifest_cached(manifest, cache)
        if problems:
            raise RawDataError(f"{key}: {'; '.join(p.describe() for p in problems)}: delete {out} and "
                               f"materialize raw_subject for {key} again to regenerate it")
        if not (out / PREVIEW_NAME).is_file():
            atomic_write_bytes(out / PREVIEW_NAME, synthetic.preview_jpeg(out))
        log(f"{key}: synthetic files unchanged ({len(manifest.files)} files), reused")
        return RawSubject(key, "synthetic", out, manifest, reused=True)
    log(f"{key}: generating synthetic subject into {out}")
    ensure_free_space(out, synthetic.estimate_bytes(size), f"raw_subject for {key}")
    with atomic_dir(out) as tmp:
        synthetic.generate_subject(key, tmp, size, seed, generic_model, log)
        atomic_write_bytes(tmp / PREVIEW_NAME, synthetic.preview_jpeg(tmp))
    manifest = build_manifest(key, "synthetic", out, listed_files(out), cache)
    manifest.write(out / MANIFEST_NAME)
    write_stamp(out, stamp, manifest.digest)  # last: only a complete folder carries a stamp
    return RawSubject(key, "synthetic", out, manifest, reused=False)


def movi_subject(data_root: str | Path, key: str, index: movi.MoviIndex,
                 log: Callable[[str], None] = lambda m: None, accept_changes: bool = False) -> RawSubject:
    """Find one real subject's files, check them and record their manifest.

    `accept_changes` records files that differ from the recorded manifest
    (`d3ke verify --write-manifest`, after replacing files on purpose).
    """
    out = raw_dir(data_root, key)
    files = movi.subject_files(index, key)
    for path in files:
        if path.name.endswith("_poses.npz"):
            movi.check_amass_file(path)
        elif path.stat().st_size == 0:
            raise RawDataError(f"{path}: file is empty: download it again")
    cache = hash_cache(data_root)
    names = [str(p.relative_to(index.root)) for p in files]
    manifest = build_manifest(key, "movi", index.root, names, cache)
    previous = None
    if (out / MANIFEST_NAME).is_file() and not accept_changes:
        previous = Manifest.read(out / MANIFEST_NAME)
        # A recorded file that changed or vanished is damage until the user says otherwise.
        problems = compare_with_manifest(
            Manifest(key, "movi", manifest.base_dir, previous.files),
            {n: m["sha256"] for n, m in manifest.files.items()})
        if problems:
            raise RawDataError(
                f"{key}: {'; '.join(p.describe() for p in problems)} since its manifest was recorded: download "
                f"it again, or if you replaced it on purpose run `d3ke verify --write-manifest`")
    changed = sorted(n for n in manifest.files if previous is None or n not in previous.files)
    if previous is None or changed or previous.base_dir != manifest.base_dir:
        out.mkdir(parents=True, exist_ok=True)
        manifest.write(out / MANIFEST_NAME)
        try:
            atomic_write_bytes(out / PREVIEW_NAME, movi.preview_jpeg(files))
        except D3keError as exc:  # decoding is checked by the frames stage; the manifest stands
            log(f"{key}: no preview ({exc})")
    log(f"{key}: {len(files)} raw files under {index.root}, {len(changed)} new or changed")
    return RawSubject(key, "movi", out, manifest, reused=not changed, changed_files=changed)


def subject_folders(data_root: str | Path) -> list[Path]:
    """Complete subject folders only: never a temporary left by an interrupted write."""
    base = Path(data_root) / ASSET_DIR
    return sorted(p for p in base.glob("*") if p.is_dir() and is_subject_key(p.name))


def manifests_under(data_root: str | Path) -> list[Path]:
    return [f / MANIFEST_NAME for f in subject_folders(data_root) if (f / MANIFEST_NAME).is_file()]


def camera_videos(data_root: str | Path, key: str) -> list:
    """Each camera's video and calibration of one subject (`media.video.CameraVideo`)."""
    from d3ke_assets.media.camera import Camera, camera_from_movi
    from d3ke_assets.media.video import CameraVideo
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
    base = Path(manifest.base_dir)
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
                    log: Callable[[str], None] = lambda m: None) -> dict[str, str]:
    """Manifest digest of each subject's raw files as they are now (hashes come from the cache when
    path, size and mtime are unchanged).  Subjects without raw files are left out."""
    cache = hash_cache(data_root)
    out: dict[str, str] = {}
    if dataset == "synthetic":
        for folder in subject_folders(data_root):
            if folder.name in keys and (folder / MANIFEST_NAME).is_file():
                out[folder.name] = build_manifest(folder.name, "synthetic", folder, listed_files(folder), cache).digest
        return out
    index = movi.MoviIndex.scan(movi_root)
    for key in keys:
        try:
            files = movi.subject_files(index, key)
        except RawDataError as exc:
            log(str(exc))
            continue
        names = [str(p.relative_to(index.root)) for p in files]
        out[key] = build_manifest(key, "movi", index.root, names, cache).digest
    return out


def changed_subjects(previous: dict[str, str], current: dict[str, str]) -> list[str]:
    """Subjects that are new or whose raw files changed since `previous`."""
    return sorted(k for k, digest in current.items() if previous.get(k) != digest)
