"""A lab's own data (`D3KE_DATASET=lab`): marker capture, calibrated videos, one folder per subject.

Layout under `D3KE_LAB_ROOT` (the README's "Your own lab's data" has a complete example):

    Subject_<n>/                      the folder name is the subject's partition key
      subject.toml                    mass_kg, height_m; optional sex, split, [trials.<trial>]
      calibration.toml                Pose2Sim / OpenCV calibration, one table per camera
      mocap/static.trc                the static (scaling) trial
      mocap/<trial>.trc               one file per motion trial: any marker names, rate, mm / cm / m
      videos/<trial>_<camera>.mp4     (or .avi, .mov) each camera's video of the trial

`calibration.toml`, per camera (the format Pose2Sim writes; `[metadata]` and other tables without
`matrix` are ignored): `name` (what video file names call the camera; default the table's name),
`size = [width, height]` in pixels, `matrix` (3x3 intrinsics, OpenCV: pixel centres at integers),
`distortions` (k1, k2, p1, p2 and optionally k3), `rotation` (Rodrigues vector) and `translation`
(metres): a point X of the world goes to the camera frame as `x_cam = R X + t` (OpenCV; camera x
right, y down, z forward), with R = Rodrigues(rotation).  The world frame is the frame of the
`.trc` files, which OpenSim takes as its ground: x forward, y up, z right, in metres.

Per trial, `video_start_time_s` in `subject.toml` (`[trials.walking] video_start_time_s = 0.25`)
is the mocap time (the `.trc`'s Time column) of the trial's video frame 0, shared by its cameras
(synchronized); it defaults to 0.  Labels are made at the video frames' times; video frames outside
the mocap's time range are not labelled.

Subject partitions come from the folders named `Subject_<n>` (others are ignored); a subject's
`split` is train, validation or test, and train when absent (a rule that never moves a subject
when others are added).  A subject.toml that cannot be read lists the subject under train; its
raw_subject run then fails with the file's error, so its data is never used.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from d3ke_assets.errors import D3keError, RawDataError
from d3ke_assets.media.camera import Camera
from d3ke_assets.sources.subjects import SPLITS, SubjectSplit, is_subject_key, subject_id
from d3ke_assets.storage import safe_name

SUBJECT_FILE = "subject.toml"
CALIBRATION_FILE = "calibration.toml"
STATIC_TRIAL = "static"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov")
SEXES = ("female", "male")


@dataclass
class LabTrial:
    name: str
    trc: Path
    videos: dict[str, Path]  # camera -> its video of the trial
    video_start_time_s: float  # mocap time of video frame 0


@dataclass
class LabSubject:
    key: str
    folder: Path
    mass_kg: float
    height_m: float
    sex: str | None
    split: str
    static_trc: Path
    trials: list[LabTrial]
    cameras: dict[str, Camera]  # from calibration.toml; the frame rate comes from each video

    @property
    def files(self) -> list[Path]:
        """Every raw file of the subject (what its manifest records)."""
        out = [self.folder / SUBJECT_FILE, self.folder / CALIBRATION_FILE, self.static_trc]
        for t in self.trials:
            out += [t.trc, *t.videos.values()]
        return sorted(out)


def _number(d: dict, key: str, path: Path, what: str) -> float:
    value = d.get(key)
    if value is None:
        raise RawDataError(f"{path}: no {key}: add {key} = <{what}>")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise RawDataError(f"{path}: {key} = {value!r} is not a positive number: give the {what}")
    return float(value)


def read_toml(path: Path, fix: str) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RawDataError(f"{path}: missing: {fix}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RawDataError(f"{path}: not valid TOML ({exc}): fix the file") from None


def read_subject_toml(path: Path) -> dict:
    """subject.toml as checked values: mass_kg, height_m, sex, split and each trial's video_start_time_s."""
    d = read_toml(path, "write one with mass_kg and height_m (see the README's 'Your own lab's data')")
    mass = _number(d, "mass_kg", path, "body mass in kg, which OpenSim's ScaleTool needs")
    height = _number(d, "height_m", path, "standing height in m")
    sex = d.get("sex")
    if sex is not None and sex not in SEXES:
        raise RawDataError(f"{path}: sex = {sex!r}: use \"female\" or \"male\", or leave it out")
    split = d.get("split", "train")
    if split not in SPLITS:
        raise RawDataError(f"{path}: split = {split!r}: use \"train\", \"validation\" or \"test\" (absent: train)")
    trials = d.get("trials", {})
    if not isinstance(trials, dict) or not all(isinstance(v, dict) for v in trials.values()):
        raise RawDataError(f"{path}: [trials] must hold one table per trial, e.g. [trials.walking]")
    starts = {}
    for name, table in trials.items():
        value = table.get("video_start_time_s", 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise RawDataError(f"{path}: [trials.{name}] video_start_time_s = {value!r}: give the mocap time "
                               f"(s) of the trial's video frame 0")
        starts[name] = float(value)
    return {"mass_kg": mass, "height_m": height, "sex": sex, "split": split, "video_start_time_s": starts}


def rodrigues_to_matrix(rvec) -> np.ndarray:
    """OpenCV's Rodrigues: rotation by |r| radians about r / |r|."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(rvec, float)).as_matrix()


def matrix_to_rodrigues(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(R, float)).as_rotvec()


def read_calibration(path: Path) -> dict[str, Camera]:
    """Cameras of a Pose2Sim / OpenCV calibration.toml (see the module docstring), by name."""
    d = read_toml(path, "export the cameras' calibration in the Pose2Sim format (see the README)")
    cameras: dict[str, Camera] = {}
    for section, table in d.items():
        if not isinstance(table, dict) or "matrix" not in table:
            continue  # [metadata] and the like
        name = str(table.get("name", section))
        try:
            if table.get("fisheye", False):
                raise ValueError("fisheye calibrations are not supported; calibrate with the pinhole model")
            width, height = (int(round(float(v))) for v in table["size"])
            K = np.array(table["matrix"], float)
            dist = np.array(table.get("distortions", [0.0] * 4), float).ravel()
            rvec = np.array(table["rotation"], float).ravel()
            t = np.array(table["translation"], float).ravel()
            if K.shape != (3, 3) or len(dist) not in (4, 5) or rvec.shape != (3,) or t.shape != (3,):
                raise ValueError("matrix must be 3x3, distortions 4 or 5 values (k1 k2 p1 p2 [k3]), "
                                 "rotation and translation 3 values each")
        except KeyError as exc:
            raise RawDataError(f"{path}: camera [{section}] has no {exc.args[0]}: add it (size, matrix, "
                               f"distortions, rotation, translation)") from None
        except (TypeError, ValueError) as exc:
            raise RawDataError(f"{path}: camera [{section}]: {exc}") from None
        if name in cameras:
            raise RawDataError(f"{path}: two cameras are named {name!r}: give each its own name")
        cameras[name] = Camera(name, width, height, K, rodrigues_to_matrix(rvec), t, np.pad(dist, (0, 5 - len(dist))))
    if not cameras:
        raise RawDataError(f"{path}: no camera (a table with size, matrix, distortions, rotation, translation)")
    return cameras


def calibration_toml(cameras: list[Camera]) -> str:
    """A calibration.toml for `cameras` in the format `read_calibration` reads (and Pose2Sim writes)."""
    def row(values) -> str:
        return "[" + ", ".join(repr(float(v)) for v in values) + "]"

    lines = []
    for cam in cameras:
        lines += [f"[{cam.name}]", f'name = "{cam.name}"', f"size = {row([cam.width_px, cam.height_px])}",
                  "matrix = [" + ", ".join(row(r) for r in cam.K) + "]", f"distortions = {row(cam.dist)}",
                  f"rotation = {row(matrix_to_rodrigues(cam.R))}", f"translation = {row(cam.t_m)}",
                  "fisheye = false", ""]
    return "\n".join(lines)


def _split_video_name(stem: str, trials: list[str]) -> tuple[str, str] | None:
    """`<trial>_<camera>` -> (trial, camera), the longest matching trial name first."""
    for trial in sorted(trials, key=len, reverse=True):
        if stem.startswith(trial + "_") and len(stem) > len(trial) + 1:
            return trial, stem[len(trial) + 1:]
    return None


def index_subject(lab_root: Path, key: str) -> LabSubject:
    """One subject's files, checked: each problem is a RawDataError naming the file and the fix."""
    subject_id(key)
    folder = Path(lab_root) / key
    if not folder.is_dir():
        raise RawDataError(f"{folder}: no such subject folder under D3KE_LAB_ROOT: create it or remove "
                           f"{key} from the run")
    facts = read_subject_toml(folder / SUBJECT_FILE)
    cameras = read_calibration(folder / CALIBRATION_FILE)
    mocap = folder / "mocap"
    static = mocap / f"{STATIC_TRIAL}.trc"
    if not static.is_file():
        raise RawDataError(f"{static}: missing: record a static trial (the subject standing still) and save it "
                           f"there, as OpenSim's ScaleTool scales the model on it")
    trial_trcs = {p.stem: p for p in sorted(mocap.glob("*.trc")) if p.stem != STATIC_TRIAL}
    for name, p in trial_trcs.items():
        safe_name(name, "trial name", p)
    if not trial_trcs:
        raise RawDataError(f"{mocap}: no trial besides static.trc: add mocap/<trial>.trc and its videos")
    unknown = sorted(set(facts["video_start_time_s"]) - set(trial_trcs))
    if unknown:
        raise RawDataError(f"{folder / SUBJECT_FILE}: [trials.{unknown[0]}] names no mocap/{unknown[0]}.trc: "
                           f"rename the table or add the file")
    videos: dict[str, dict[str, Path]] = {name: {} for name in trial_trcs}
    for p in sorted((folder / "videos").glob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() not in VIDEO_SUFFIXES:
            raise RawDataError(f"{p}: not a video this reads ({', '.join(VIDEO_SUFFIXES)}): convert or remove it")
        parts = _split_video_name(p.stem, list(trial_trcs))
        if parts is None:
            raise RawDataError(f"{p}: names no trial: call it <trial>_<camera>{p.suffix} after a mocap/<trial>.trc "
                               f"(trials: {', '.join(trial_trcs)})")
        trial, camera = parts
        if camera not in cameras:
            raise RawDataError(f"{folder / CALIBRATION_FILE}: no camera {camera!r}, which filmed {p.name}: add its "
                               f"calibration (a [{camera}] table) or remove the video "
                               f"(calibrated: {', '.join(cameras)})")
        if camera in videos[trial]:
            raise RawDataError(f"{p}: a second video of trial {trial} by camera {camera} "
                               f"({videos[trial][camera].name}): keep one")
        videos[trial][camera] = p
    trials = []
    for name, trc in trial_trcs.items():
        if not videos[name]:
            raise RawDataError(f"{trc}: trial {name} has no video: add videos/{name}_<camera>.mp4 or move the "
                               f".trc out of mocap/")
        trials.append(LabTrial(name, trc, videos[name], facts["video_start_time_s"].get(name, 0.0)))
    return LabSubject(key, folder, facts["mass_kg"], facts["height_m"], facts["sex"], facts["split"], static,
                      trials, cameras)


def subject_keys(lab_root: Path) -> list[str]:
    """The subject folders under the lab root, by number."""
    return sorted((p.name for p in Path(lab_root).glob("Subject_*") if p.is_dir() and is_subject_key(p.name)),
                  key=subject_id)


def lab_split(lab_root: Path) -> SubjectSplit:
    """Each subject's `split` from its subject.toml (absent or unreadable: train; see the module docstring)."""
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for key in subject_keys(lab_root):
        try:
            split = read_subject_toml(Path(lab_root) / key / SUBJECT_FILE)["split"]
        except D3keError:
            split = "train"
        by_split[split].append(key)
    return SubjectSplit(*(tuple(by_split[s]) for s in SPLITS))


def preview_jpeg(subject: LabSubject, max_trials: int = 2) -> bytes:
    """Each camera's frame in the middle of the first trials' capture, with the .trc's markers at that
    frame's time projected through calibration.toml: one look tells whether the calibration, the
    world axes and video_start_time_s line up."""
    from d3ke_assets.biomech.formats import read_trc
    from d3ke_assets.biomech.trials import markers_at_times
    from d3ke_assets.media.video import container_info
    from d3ke_assets.sources.preview import contact_sheet, pick_frames

    rows = []
    for trial in subject.trials[:max_trials]:
        markers = read_trc(trial.trc)
        t0, t1 = float(markers.time_s[0]), float(markers.time_s[-1])
        row = []
        for cam, video in sorted(trial.videos.items()):
            fps = container_info(video)[2]
            frame = max(0, int(round(((t0 + t1) / 2 - trial.video_start_time_s) * fps)))
            image = pick_frames(video, [frame]).get(frame)
            if image is None:
                continue  # shorter than the capture: mocap_markers says so
            t = min(max(trial.video_start_time_s + frame / fps, t0), t1)
            at = markers_at_times(markers, np.array([t]), trial.trc).positions_m[0]
            row.append((image, subject.cameras[cam].project(at), f"{cam} {trial.name} #{frame}"))
        if row:
            rows.append(row)
    if not rows:
        raise D3keError(f"{subject.folder / 'videos'}: no frame to preview")
    return contact_sheet(rows)
