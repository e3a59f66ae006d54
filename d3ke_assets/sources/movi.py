"""The real BML-MoVi + AMASS files, in the layout the providers ship them.

The user downloads (after registering) and unpacks anywhere under one folder
(`D3KE_MOVI_ROOT`); files are found by their published names, whatever the
nesting:

- `F_PG1_Subject_<ID>_L.avi`, `F_PG2_Subject_<ID>_L.avi` (BML-MoVi round F, 800x600, 30 fps)
- `F_v3d_Subject_<ID>.mat` (subject facts and per-motion video frames, `move.flags30`)
- `Subject_<ID>_F_MoSh/Subject_<ID>_F_<n>_poses.npz` (AMASS BMLmovi, SMPL+H, 120 Hz; n = motion
  number 1..21, not zero-padded, so text order is not motion order)
- `cameraParams_PG1.npz`, `Extrinsics_PG1.npz`, and the same for PG2
  (from `Camera Parameters.tar`), shared by all subjects

Motion n is paired with `flags30` row n-1 of the v3d file and with the AMASS file numbered n,
always by that number (facts and sources: ../shared/reference/movi/README.md and the README's
MoVi section).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from d3ke_assets.errors import D3keError, RawDataError
from d3ke_assets.sources.subjects import movi_video_name, subject_id, subject_key

CAMERA_FILES = ("cameraParams_PG1.npz", "Extrinsics_PG1.npz", "cameraParams_PG2.npz", "Extrinsics_PG2.npz")
AMASS_POSE_KEYS = ("poses", "trans", "betas", "mocap_framerate")
AMASS_TRIAL_NAME = re.compile(r"^Subject_(\d+)_F_([1-9]\d*)_poses\.npz$")
AMASS_SHAPE_FILE = "shape.npz"
VIDEO_RATE_HZ = 30.0
MAX_SHORT_S = 1.0  # a trial this much shorter than its video range fails that motion (less: clamped, as D3KE does)


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


def _near_miss(index: MoviIndex, name: str) -> str:
    """' (found X: rename it)' when a file differs from `name` only in case or zero padding."""
    def plain(n: str) -> str:
        return re.sub(r"(?<=_)0+(?=\d)", "", n.lower())
    close = sorted(f for f in index.files if f != name and plain(f) == plain(name))
    return f" (found {close[0]}: rename it to {name})" if close else ""


def missing_files(index: MoviIndex, key: str) -> list[str]:
    """What one subject lacks under the MoVi root, each with where it comes from (empty: nothing)."""
    names = expected_names(key)
    missing = [names[role] + _near_miss(index, names[role]) for role in ("video_PG1", "video_PG2", "v3d")
               if not index.files.get(names[role])]
    amass = index.dirs.get(names["amass_dir"])
    if not amass or not any(AMASS_TRIAL_NAME.match(p.name) for p in amass[0].iterdir()):
        missing.append(f"{names['amass_dir']}/Subject_{subject_id(key)}_F_<n>_poses.npz (AMASS BMLmovi)")
    missing += [f"{name} (from 'Camera Parameters.tar')" for name in CAMERA_FILES if not index.files.get(name)]
    return missing


def amass_trial_files(index: MoviIndex, key: str) -> dict[int, Path]:
    """Motion number -> that motion's AMASS file, by the number in its name (never by text order).

    A `.npz` in the subject's MoSh folder named outside the published pattern is a RawDataError:
    pairing it by guesswork could label a motion with another motion's video frames.
    """
    sid = subject_id(key)
    folders = index.dirs.get(expected_names(key)["amass_dir"]) or []
    trials: dict[int, Path] = {}
    for path in sorted(folders[0].iterdir()) if folders else []:
        if not path.is_file() or not path.name.endswith(".npz") or path.name == AMASS_SHAPE_FILE:
            continue
        m = AMASS_TRIAL_NAME.match(path.name)
        if not m or int(m.group(1)) != sid:
            raise RawDataError(
                f"{path}: not an AMASS BMLmovi trial name for {key}: rename it to Subject_{sid}_F_<n>_poses.npz "
                f"(n = the motion number, 1..21, not zero-padded) or move it out of {path.parent.name}")
        trials[int(m.group(2))] = path
    return dict(sorted(trials.items()))


def subject_files(index: MoviIndex, key: str) -> list[Path]:
    """All raw files of one subject; a `RawDataError` lists everything missing."""
    missing = missing_files(index, key)
    if missing:
        raise RawDataError(
            f"{key}: missing under {index.root}: {', '.join(missing)}; download them from BML-MoVi / AMASS "
            f"and unpack under D3KE_MOVI_ROOT (other subjects are not affected)")
    names = expected_names(key)
    found = [index.files[names[role]][0] for role in ("video_PG1", "video_PG2", "v3d")]
    trials = amass_trial_files(index, key)
    found += list(trials.values())
    shape = next(iter(trials.values())).parent / AMASS_SHAPE_FILE
    if shape.is_file():
        found.append(shape)
    found += [index.files[name][0] for name in CAMERA_FILES]
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


def _unwrap(value):
    """MATLAB 1x1 cells and 1x1 struct arrays (as scipy's loadmat returns them) -> the one thing inside."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.flat[0]
    return value


def _text(value) -> str | None:
    value = _unwrap(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "US" or value.size == 0:
            return None
        value = "".join(str(v) for v in value.ravel())
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.strip() if isinstance(value, str) else None


SEXES = {"f": "female", "female": "female", "w": "female", "m": "male", "male": "male"}


@dataclass
class V3dFacts:
    """What the platform reads from one subject's `F_v3d_Subject_<ID>.mat`."""

    path: Path
    sex: str | None  # "female", "male", or None when `subject.sex` is absent or unrecognized
    sex_raw: str | None
    flags30: list[tuple[int, int]]  # per motion (row n-1 = motion n), 0-based video frames [start, end)


def read_v3d(path: str | Path, key: str) -> V3dFacts:
    """The variable `Subject_<ID>_F` by name; `move` as the 1x1 cell the files hold (or a plain struct)."""
    import scipy.io

    path = Path(path)
    variable = f"Subject_{subject_id(key)}_F"
    try:
        mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False, chars_as_strings=True)
    except NotImplementedError:  # scipy's words for a v7.3 (HDF5) file
        raise RawDataError(f"{path}: a MATLAB v7.3 file; MoVi's v3d files are MATLAB 5: download "
                           f"{path.name} again from BML-MoVi") from None
    except Exception as exc:  # scipy raises several types for damaged files
        raise RawDataError(f"{path}: cannot read the v3d file ({type(exc).__name__}: {exc}): download it again "
                           f"from BML-MoVi") from None
    if variable not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise RawDataError(f"{path}: no variable {variable} (found {found or 'none'}): this is not {key}'s v3d "
                           f"file; download F_v3d_Subject_{subject_id(key)}.mat again")
    holder = _unwrap(mat[variable])
    move = _unwrap(getattr(holder, "move", None))
    table = getattr(move, "flags30", None)
    flags = np.asarray(_unwrap(table), dtype=float) if table is not None else np.zeros((0, 0))
    if flags.ndim != 2 or flags.shape[1] != 2 or not len(flags) or not np.isfinite(flags).all():
        raise RawDataError(f"{path}: no move.flags30 table (motions x 2 video frames) in {variable}: the platform "
                           f"needs it to find each motion in the videos; download {path.name} again")
    sex_raw = _text(getattr(_unwrap(getattr(holder, "subject", None)), "sex", None))
    return V3dFacts(path, SEXES.get((sex_raw or "").lower()), sex_raw,
                    [(int(a) - 1, int(b)) for a, b in flags])  # 1-based inclusive -> 0-based half-open


@dataclass
class MotionTrial:
    """One motion of a subject: its AMASS file and the video frames flags30 gives it.

    Video frame `video_start_frame + k` is capture frame `capture_per_video_frame * k` of the AMASS
    file (the file holds that motion alone, from its first frame); `session_capture_frames` gives
    the same range in MoVi's whole-session 120 Hz numbering, [4a, 4(b-1)+1).
    """

    motion: int
    amass_file: Path
    video_start_frame: int
    video_end_frame: int
    n_capture_frames: int
    capture_per_video_frame: int = 4

    @property
    def n_video_frames(self) -> int:
        return self.video_end_frame - self.video_start_frame

    @property
    def clamped_video_frames(self) -> int:
        """Video frames past the trial's last capture frame, which use that last frame (as D3KE does)."""
        covered = (self.n_capture_frames - 1) // self.capture_per_video_frame + 1
        return max(0, self.n_video_frames - covered)

    @property
    def trial_capture_frames(self) -> tuple[int, int]:
        """Rows of the AMASS file used, [first, end)."""
        return 0, min(self.capture_per_video_frame * (self.n_video_frames - 1) + 1, self.n_capture_frames)

    @property
    def session_capture_frames(self) -> tuple[int, int]:
        cpf = self.capture_per_video_frame
        return cpf * self.video_start_frame, cpf * (self.video_end_frame - 1) + 1

    def as_json(self) -> dict:
        return {"motion": self.motion, "amass_file": self.amass_file.name,
                "video_frames": [self.video_start_frame, self.video_end_frame],
                "capture_frames": list(self.session_capture_frames),
                "trial_capture_frames": list(self.trial_capture_frames),
                "n_capture_frames": self.n_capture_frames, "clamped_video_frames": self.clamped_video_frames}


@dataclass
class SubjectIndex:
    """One subject's motions as the platform pairs them; missing and failed motions are left out."""

    key: str
    v3d: V3dFacts
    trials: list[MotionTrial]
    missing: list[str]  # motions of flags30 without an AMASS file, each named
    failed: dict[int, str]  # motion -> why it cannot be used (one line)

    def as_json(self) -> dict:
        return {"sex": self.v3d.sex, "missing": self.missing, "trials": [t.as_json() for t in self.trials],
                "failed": {str(m): why for m, why in self.failed.items()}}


def _capture_facts(path: Path) -> tuple[int, float]:
    """(capture frames, rate Hz) of an AMASS file, reading only `trans` and `mocap_framerate`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(data["trans"].shape[0]), float(data["mocap_framerate"])
    except Exception as exc:  # numpy raises several types for a damaged zip or a missing key
        raise RawDataError(f"{path}: cannot read trans/mocap_framerate ({type(exc).__name__}: {exc}): download "
                           f"it again") from None


def pair_motions(key: str, v3d: V3dFacts, amass: dict[int, Path]) -> SubjectIndex:
    """Motion n <-> flags30 row n-1 <-> AMASS file n.  Per-motion problems leave that motion out."""
    trials, missing, failed = [], [], {}
    sid = subject_id(key)
    for n in range(1, len(v3d.flags30) + 1):
        if n not in amass:
            missing.append(f"motion {n}: Subject_{sid}_F_{n}_poses.npz")
    for n, path in amass.items():
        if n > len(v3d.flags30):
            failed[n] = (f"{path}: motion {n} has no row in {v3d.path.name}'s move.flags30 ({len(v3d.flags30)} "
                         f"rows): check the file's motion number")
            continue
        start, end = v3d.flags30[n - 1]
        try:
            n_capture, rate_hz = _capture_facts(path)
        except RawDataError as exc:
            failed[n] = str(exc)
            continue
        trial = MotionTrial(n, path, start, end, n_capture, max(1, int(round(rate_hz / VIDEO_RATE_HZ))))
        short_s = trial.clamped_video_frames / VIDEO_RATE_HZ
        if trial.n_video_frames <= 0 or n_capture == 0:
            failed[n] = (f"{path}: motion {n} has {n_capture} capture frames and flags30 row {n} gives video "
                         f"frames {start + 1}..{end} (1-based): nothing to label; check {v3d.path.name}")
        elif short_s > MAX_SHORT_S:
            failed[n] = (f"{path}: {n_capture} capture frames ({n_capture / rate_hz:.2f} s) but flags30 row {n} "
                         f"spans {trial.n_video_frames} video frames ({trial.n_video_frames / VIDEO_RATE_HZ:.2f} s): "
                         f"{short_s:.2f} s short, more than {MAX_SHORT_S:g} s; check that it is motion {n} of {key}")
        else:
            trials.append(trial)
    return SubjectIndex(key, v3d, trials, missing, failed)


def index_subject(index: MoviIndex, key: str) -> SubjectIndex:
    """A subject's motions from its v3d file and AMASS files; a RawDataError when the subject cannot be used."""
    names = expected_names(key)
    v3d_paths = index.files.get(names["v3d"])
    if not v3d_paths:
        raise RawDataError(f"{key}: {names['v3d']}{_near_miss(index, names['v3d'])} is missing under "
                           f"{index.root}; download it from BML-MoVi (F_Subjects_1_45.tar / F_Subjects_46_90.tar)")
    amass = amass_trial_files(index, key)
    if not amass:
        raise RawDataError(f"{key}: no {names['amass_dir']}/Subject_{subject_id(key)}_F_<n>_poses.npz under "
                           f"{index.root}; download AMASS BMLmovi (SMPL+H) and unpack it under D3KE_MOVI_ROOT")
    return pair_motions(key, read_v3d(v3d_paths[0], key), amass)


_FOUND_SUBJECT = re.compile(r"^(?:F_v3d_Subject_(\d+)\.mat|F_PG[12]_Subject_(\d+)_L\.avi|Subject_(\d+)_F_MoSh)$")


def subjects_found(index: MoviIndex) -> list[str]:
    """Subjects with any file or AMASS folder under the MoVi root, by subject number."""
    ids = {int(next(g for g in m.groups() if g)) for name in [*index.files, *index.dirs]
           if (m := _FOUND_SUBJECT.match(name))}
    return [subject_key(i) for i in sorted(ids)]


def _nothing_of(index: MoviIndex, key: str) -> bool:
    names = expected_names(key)
    return not any(index.files.get(names[r]) for r in ("video_PG1", "video_PG2", "v3d")) and not index.dirs.get(
        names["amass_dir"])


def movi_index_report(index: MoviIndex, keys: list[str]) -> dict:
    """What the platform finds per subject (`d3ke movi-index --json`): missing files and motions, and per
    motion its number, AMASS file, video frames [a, b), capture frames [4a, 4(b-1)+1) (whole-session
    120 Hz numbering) and the AMASS file's rows it uses; 0-based half-open.  A subject that cannot be
    used carries its one-line `error`."""
    subjects: dict[str, dict] = {}
    for key in sorted(set(keys) | set(subjects_found(index)), key=subject_id):
        entry: dict = {"missing": missing_files(index, key), "trials": [], "failed": {}}
        if _nothing_of(index, key):
            entry["error"] = f"{key}: no file of this subject under {index.root}"
            subjects[key] = entry
            continue
        try:
            subject = index_subject(index, key)
        except RawDataError as exc:
            entry["error"] = str(exc)
        else:
            entry["missing"] += subject.missing
            entry.update(sex=subject.v3d.sex, trials=[t.as_json() for t in subject.trials],
                         failed={str(m): why for m, why in subject.failed.items()})
        subjects[key] = entry
    return {"movi_root": str(index.root), "subjects": subjects}


def format_movi_index(report: dict) -> str:
    """`movi_index_report` as a readable table, one block per subject."""
    lines = [f"MoVi root: {report['movi_root']}"]
    for key, entry in report["subjects"].items():
        trials = entry["trials"]
        n_video = sum(t["video_frames"][1] - t["video_frames"][0] for t in trials)
        lines.append(f"\n{key}: {len(trials)} motions usable, {n_video} video frames"
                     + (f", sex {entry['sex']}" if entry.get("sex") else ""))
        if entry.get("error", "").endswith(f"no file of this subject under {report['movi_root']}"):
            lines[-1] = f"\n{key}: no files found"
            continue
        if entry.get("error"):
            lines.append(f"  cannot be used: {entry['error']}")
        for what in entry["missing"]:
            lines.append(f"  missing: {what}")
        for motion, why in entry["failed"].items():
            lines.append(f"  motion {motion} left out: {why}")
        if trials:
            lines.append(f"  {'motion':>6}  {'AMASS file':<28} {'video frames':<14} {'capture frames':<16} "
                         f"{'file rows':<14} clamped")
            for t in trials:
                ranges = ["[{}, {})".format(*t[k]) for k in ("video_frames", "capture_frames", "trial_capture_frames")]
                lines.append(f"  {t['motion']:>6}  {t['amass_file']:<28} {ranges[0]:<14} {ranges[1]:<16} "
                             f"{ranges[2]:<14} {t['clamped_video_frames']}")
    return "\n".join(lines)
