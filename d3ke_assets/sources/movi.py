"""The real BML-MoVi + AMASS files, in the layout the providers ship them.

The user downloads (after registering) and unpacks anywhere under one folder
(`D3KE_MOVI_ROOT`); files are found by their published names, whatever the
nesting:

- `F_PG1_Subject_<ID>_L.avi`, `F_PG2_Subject_<ID>_L.avi` (BML-MoVi round F, 800x600, 30 fps)
- `F_v3d_Subject_<ID>.mat` (subject facts and per-motion video frames, `move.flags30`)
- `Subject_<ID>_F_MoSh/Subject_<ID>_F_<n>_poses.npz` (AMASS BMLmovi, SMPL+H, 120 Hz)
- `cameraParams_PG1.npz`, `Extrinsics_PG1.npz`, and the same for PG2
  (from `Camera Parameters.tar`), shared by all subjects
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from d3ke_assets.errors import D3keError, RawDataError
from d3ke_assets.sources.subjects import movi_video_name, subject_id

CAMERA_FILES = ("cameraParams_PG1.npz", "Extrinsics_PG1.npz", "cameraParams_PG2.npz", "Extrinsics_PG2.npz")
AMASS_POSE_KEYS = ("poses", "trans", "betas", "mocap_framerate")


def expected_names(key: str) -> dict[str, str]:
    """Role -> file name of one subject's per-subject files."""
    sid = subject_id(key)
    return {
        "video_PG1": movi_video_name("PG1", key),
        "video_PG2": movi_video_name("PG2", key),
        "v3d": f"F_v3d_Subject_{sid}.mat",
        "amass_dir": f"Subject_{sid}_F_MoSh",
    }


@dataclass
class MoviIndex:
    """Every file and folder under the MoVi root, by name (one walk, reused)."""

    root: Path
    files: dict[str, list[Path]]
    dirs: dict[str, list[Path]]

    @classmethod
    def scan(cls, root: str | Path) -> "MoviIndex":
        root = Path(root)
        files: dict[str, list[Path]] = {}
        dirs: dict[str, list[Path]] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for d in dirnames:
                dirs.setdefault(d, []).append(Path(dirpath) / d)
            for f in sorted(filenames):
                files.setdefault(f, []).append(Path(dirpath) / f)
        return cls(root, files, dirs)


def subject_files(index: MoviIndex, key: str) -> list[Path]:
    """All raw files of one subject; a `RawDataError` lists everything missing."""
    names = expected_names(key)
    found: list[Path] = []
    missing: list[str] = []
    for role in ("video_PG1", "video_PG2", "v3d"):
        paths = index.files.get(names[role])
        if paths:
            found.append(paths[0])
        else:
            missing.append(names[role])
    amass = index.dirs.get(names["amass_dir"])
    poses = sorted(amass[0].glob("*_poses.npz")) if amass else []
    if not poses:
        missing.append(f"{names['amass_dir']}/*_poses.npz (AMASS BMLmovi)")
    found.extend(poses)
    shape = amass[0] / "shape.npz" if amass else None
    if shape is not None and shape.is_file():
        found.append(shape)
    for name in CAMERA_FILES:
        paths = index.files.get(name)
        if paths:
            found.append(paths[0])
        else:
            missing.append(f"{name} (from 'Camera Parameters.tar')")
    if missing:
        raise RawDataError(
            f"{key}: missing under {index.root}: {', '.join(missing)}; download them from BML-MoVi / AMASS "
            f"and unpack under D3KE_MOVI_ROOT (other subjects are not affected)")
    return found


def check_amass_file(path: Path) -> None:
    """An AMASS pose file must load and hold SMPL+H parameters."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in AMASS_POSE_KEYS if k not in data.files]
    except Exception as exc:  # numpy raises several types for a damaged zip
        raise RawDataError(f"{path}: cannot be read as .npz ({type(exc).__name__}): download it again") from None
    if missing:
        raise RawDataError(f"{path}: AMASS pose file lacks {missing}: download the BMLmovi SMPL+H archive again")


def preview_jpeg(files: list[Path], frame_indices: tuple[int, ...] = (0, 450, 900)) -> bytes:
    """A few frames of each camera's video (no markers: those come with opensim_gt)."""
    from d3ke_assets.sources.preview import contact_sheet, pick_frames

    rows = []
    for video in (f for f in files if f.suffix.lower() == ".avi"):
        frames = pick_frames(video, list(frame_indices))
        rows.append([(frames[i], None, f"{video.name} #{i}") for i in sorted(frames)])
    rows = [r for r in rows if r]
    if not rows:
        raise D3keError(f"no decodable frames in {[f.name for f in files if f.suffix.lower() == '.avi']}")
    return contact_sheet(rows)


def read_flags30(v3d_path: Path) -> list[tuple[int, int]]:
    """Per motion, its first and last video frame (MoVi's `move.flags30`, 1-based MATLAB) as 0-based [start, end)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(v3d_path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises several types for damaged or v7.3 files
        raise RawDataError(f"{v3d_path}: cannot read the v3d file ({type(exc).__name__}: {exc})") from None
    holder = next((mat[k] for k in mat if not k.startswith("__")), None)
    move = getattr(holder, "move", None)
    flags = np.atleast_2d(np.asarray(getattr(move, "flags30", None) if move is not None else None, dtype=float))
    if move is None or flags.ndim != 2 or flags.shape[1] != 2:
        raise RawDataError(f"{v3d_path}: no move.flags30 table (motions x 2 video frames) in the v3d file")
    return [(int(a) - 1, int(b)) for a, b in flags]
