"""One subject's OpenSim ground truth: scale the generic model, run IK per trial, derive labels.

Input is a subject's mocap folder (`mocap_markers/<Subject>/`: `trials.json` and
one `.trc` per trial, metres or millimetres).  Output, under `out_dir`:

    scale/                 Setup_Scale.xml, static.trc, scale_factors.xml, scaled.osim
    scaled.osim            the scaled model with its markers placed (what IK ran on)
    ik/<trial>/            Setup_IK.xml, <trial>.trc (the frames IK solves), <trial>.mot
    ik_marker_errors.parquet   per trial and marker: RMS and max IK error (m)
    labels.npz + labels.json   per video frame: coordinates, mask, scale factors, markers,
                           joint centres, pelvis transform (see `LABEL_ARRAYS`)
    summary.json

The scale folder and each trial folder carry their own version stamp, so a
rerun after one bad trial was fixed reuses the trials that were already solved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from d3ke_assets.biomech import opensim_pipeline as op
from d3ke_assets.biomech.formats import MarkerTrajectories, read_trc, write_mot, write_trc
from d3ke_assets.biomech.model_files import (ModelFiles, automatic_measurements, read_marker_weights, read_measurements,
                                             root_joint)
from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.biomech.trials import (TIME_TOLERANCE_S, SubjectMocap, TrialMocap, markers_at_times,
                                        read_subject_mocap)
from d3ke_assets.errors import D3keError
from d3ke_assets.storage import atomic_write_bytes, atomic_write_json, read_json
from d3ke_assets.versioning import canonical_hash, is_current, stamped_dir

MASK_ERROR_M = 0.02  # D3KE: a coordinate is unreliable when a bony landmark on its body misses by > 2 cm
# Markers on soft tissue (wands, clusters), not bony landmarks: lower IK weight, ignored by the mask.
SOFT_TISSUE_SUFFIXES = ("THI", "TIB", "UPA", "FRM", "BAK")

# Measurement-based scaling of the project model: marker pairs chosen so each scaled axis is the
# direction the pair spans on the body (segment length along Y, widths along X/Z, feet along X).
PROJECT_MEASUREMENTS = [
    # pelvis: uniformly from its width, as clinical hip-joint-centre regressions do
    op.Measurement("pelvis_width", [("RASI", "LASI"), ("RPSI", "LPSI")], ["pelvis"], "X Y Z"),
    op.Measurement("torso_length", [("C7", "T10"), ("CLAV", "STRN")], ["torso"], "Y"),
    op.Measurement("torso_depth", [("RFHD", "RBHD"), ("LFHD", "LBHD")], ["torso"], "X"),
    op.Measurement("torso_width", [("RSHO", "LSHO")], ["torso"], "Z"),
]
for _s, _S in (("r", "R"), ("l", "L")):
    PROJECT_MEASUREMENTS += [
        op.Measurement(f"thigh_length_{_s}", [(f"{_S}THI", f"{_S}KNE"), (f"{_S}THI", f"{_S}KNM")], [f"femur_{_s}"], "Y"),
        op.Measurement(f"knee_width_{_s}", [(f"{_S}KNE", f"{_S}KNM")], [f"femur_{_s}"], "X Z"),
        op.Measurement(f"shank_length_{_s}", [(f"{_S}KNE", f"{_S}ANK"), (f"{_S}KNM", f"{_S}MED")],
                       [f"tibia_{_s}", f"talus_{_s}"], "Y"),
        op.Measurement(f"ankle_width_{_s}", [(f"{_S}ANK", f"{_S}MED")], [f"tibia_{_s}", f"talus_{_s}"], "X Z"),
        op.Measurement(f"foot_length_{_s}", [(f"{_S}HEE", f"{_S}MT5"), (f"{_S}HEE", f"{_S}TOE")],
                       [f"calcn_{_s}", f"toes_{_s}"], "X Y Z"),
        op.Measurement(f"upper_arm_length_{_s}", [(f"{_S}SHO", f"{_S}ELB"), (f"{_S}SHO", f"{_S}ELM")],
                       [f"humerus_{_s}"], "Y"),
        # no wrist marker pair lies on one forearm bone: the elbow's width scales the forearm's too
        op.Measurement(f"elbow_width_{_s}", [(f"{_S}ELB", f"{_S}ELM")],
                       [f"humerus_{_s}", f"ulna_{_s}", f"radius_{_s}"], "X Z"),
        op.Measurement(f"forearm_length_{_s}", [(f"{_S}ELB", f"{_S}WRB"), (f"{_S}ELM", f"{_S}WRA")],
                       [f"ulna_{_s}", f"radius_{_s}"], "Y"),
        op.Measurement(f"hand_length_{_s}", [(f"{_S}WRA", f"{_S}FIN"), (f"{_S}WRB", f"{_S}FIN")],
                       [f"hand_{_s}"], "X Y Z"),
    ]


def is_bony_landmark(marker: str) -> bool:
    return not marker.endswith(SOFT_TISSUE_SUFFIXES)


def project_marker_weights(markers: list[str]) -> dict[str, float]:
    return {m: (10.0 if is_bony_landmark(m) else 1.0) for m in markers}


@dataclass
class ModelRules:
    """How a model is scaled and tracked: its measurements, the marker placer's and IK's marker
    weights (0: not tracked), and the markers whose misses mask their body's coordinates."""

    measurements: list
    scale_weights: dict[str, float]
    ik_weights: dict[str, float]
    mask_markers: set[str]

    @classmethod
    def for_model(cls, files: ModelFiles, layer: SkeletalModel) -> "ModelRules":
        markers = layer.marker_names
        if files.project:
            weights = project_marker_weights(markers)
            return cls(PROJECT_MEASUREMENTS, weights, weights, {m for m in markers if is_bony_landmark(m)})

        def restricted(table: dict[str, float]) -> dict[str, float]:
            return {m: float(table.get(m, 0.0)) for m in markers}  # a marker without a task is not tracked

        setup = files.scale_setup
        measurements = read_measurements(setup) if setup else automatic_measurements(layer.spec)
        ik = restricted(read_marker_weights(files.ik_tasks)) if files.ik_tasks else {m: 1.0 for m in markers}
        scale = ik
        if setup is not None:
            try:
                scale = restricted(read_marker_weights(setup))
            except D3keError:  # a setup without marker placer tasks: the IK weights place the markers
                pass
        return cls(measurements, scale, ik, {m for m, w in ik.items() if w > 0})


def present_weights(weights: dict[str, float], trc: MarkerTrajectories) -> tuple[dict[str, float], list[str]]:
    """The weights with the model markers the file lacks set to 0, and those markers' names."""
    missing = [m for m, w in weights.items() if w > 0 and m not in trc.marker_names]
    return {m: (0.0 if m in missing else w) for m, w in weights.items()}, missing


def usable_measurements(measurements: list, static: MarkerTrajectories, path: Path, project: bool = False) -> list:
    """The measurements with the marker pairs the static trial has; one line when a measurement has none."""
    change = ("name the static trial's markers as the project's model does" if project else
              "change the measurement set in the model's Setup_Scale.xml (D3KE_MODEL_SCALE_SETUP)")
    have = set(static.marker_names)
    out = []
    for me in measurements:
        pairs = [p for p in me.marker_pairs if p[0] in have and p[1] in have]
        if not pairs:
            lacking = sorted({m for p in me.marker_pairs for m in p} - have)
            raise D3keError(f"{path}: cannot scale {', '.join(me.bodies)}: the static trial lacks markers {lacking} "
                            f"of measurement {me.name}: record them, or {change}")
        out.append(op.Measurement(me.name, pairs, me.bodies, me.axes) if len(pairs) < len(me.marker_pairs) else me)
    return out


@dataclass
class GroundTruthConfig:
    ik_rate: str = "video"  # "video" (one IK frame per video frame) or a rate in Hz, e.g. "120"
    accuracy: float = 1e-5
    workers: int = 1  # trials solved in parallel processes
    ik_backend: str = "opensim"  # settings.IK_BACKENDS; the scaling is OpenSim's either way

    def as_dict(self) -> dict:
        values = {"ik_rate": self.ik_rate, "accuracy": self.accuracy}  # workers do not change results
        if self.ik_backend != "opensim":  # named only when not the default: existing stamps stay valid
            values["ik_backend"] = self.ik_backend
        return values


@dataclass
class TrialOutcome:
    name: str
    n_ik_frames: int
    ik_seconds: float
    reused: bool
    rms_error_m: float = float("nan")
    max_error_m: float = float("nan")


@dataclass
class GroundTruthResult:
    out_dir: Path
    scale_factors: dict[str, tuple[float, float, float]]
    trials: list[TrialOutcome]
    n_label_frames: int
    scale_seconds: float
    seconds: float
    has_nan: bool
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ik_seconds(self) -> float:
        return sum(t.ik_seconds for t in self.trials)


def _ik_rate_hz(ik_rate: str) -> float | None:
    """None for "video" (IK only at video frames), else the extra regular rate in Hz."""
    if ik_rate == "video":
        return None
    try:
        return float(ik_rate)
    except ValueError:
        raise D3keError(f"ik_rate {ik_rate!r}: use 'video' or a rate in Hz such as 120") from None


def ik_capture_frames(trial: TrialMocap, n_capture: int, capture_rate_hz: float, ik_rate: str) -> np.ndarray:
    """Capture frames to solve: every video frame's, plus a regular grid when a rate is asked for."""
    frames = set(int(f) for f in trial.video_capture_frames(n_capture))
    rate = _ik_rate_hz(ik_rate)
    if rate is not None:
        step = max(1, int(round(capture_rate_hz / rate)))
        frames |= set(range(0, n_capture, step))
    return np.array(sorted(frames), int)


def ik_markers(trial: TrialMocap, markers: MarkerTrajectories, ik_rate: str) -> tuple[MarkerTrajectories, np.ndarray]:
    """What IK solves for one trial: (marker frames, which of them to solve).  A trial of whole capture
    frames per video frame solves its capture frames; a timed one (`TrialMocap.video_fps`) the markers
    interpolated at its video frames' times (and on a regular grid when a rate is asked for)."""
    if trial.video_fps is None:
        return markers, ik_capture_frames(trial, len(markers.time_s), markers.rate_hz, ik_rate)
    video_times = trial.video_times_s()
    times = video_times
    rate = _ik_rate_hz(ik_rate)
    if rate is not None:
        grid = np.arange(markers.time_s[0], markers.time_s[-1] + TIME_TOLERANCE_S, 1.0 / rate)
        off_video = np.abs(grid[:, None] - video_times[None]).min(axis=1) > TIME_TOLERANCE_S
        times = np.union1d(video_times, grid[off_video])  # no grid time a hair away from a video frame's
    return markers_at_times(markers, times, trial.trc), np.arange(len(times))


def label_frames(trial: TrialMocap, markers: MarkerTrajectories) -> np.ndarray:
    """Per video frame of the trial, its frame in `markers` (as `ik_markers` returned them)."""
    if trial.video_fps is None:
        return trial.video_capture_frames(len(markers.time_s))
    return np.searchsorted(markers.time_s, trial.video_times_s())  # the video times are among them, exactly


STATIC_POSE_FRAMES = 10  # static IK frames: the pose is averaged anyway
STATIC_IK_ACCURACY = 1e-6  # at 1e-5 the first frame can stop short of the pose (seen on the forearm)


def _scale_with_guided_placement(tmp: Path, static, static_range, generic_model: Path, mocap: SubjectMocap,
                                 weights: dict[str, float], layer: SkeletalModel,
                                 measurements: list = PROJECT_MEASUREMENTS,
                                 ik_weights: dict[str, float] | None = None) -> op.ScaleResult:
    """Scale, solve the static pose with the scaled model, then scale again and place markers from that pose.

    OpenSim's marker placement solves the static pose from the model's default coordinates; a
    coordinate whose default sits on its range bound (the forearm's pro_sup at 0) stays there and
    the markers are moved to fit, which biases every later trial.  Giving the placer the static
    pose IK found first (as a coordinate file with light coordinate tasks) avoids that.
    """
    write_trc(tmp / "static.trc", static)
    common = dict(generic_model=str(generic_model), static_trc="static.trc", time_range=static_range,
                  mass_kg=mocap.mass_kg, measurements=measurements, marker_weights=weights, name=mocap.key)
    first = op.run_scale(op.write_scale_setup(tmp / "Setup_Scale_measurements.xml", place_markers=False, **common))
    frames = np.unique(np.linspace(0, len(static.time_s) - 1, STATIC_POSE_FRAMES).round().astype(int))
    op.subsample_trc(static, frames, tmp / "static_pose.trc")
    ik = op.run_ik(op.write_ik_setup(tmp / "Setup_IK_static.xml", first.model_path.name, "static_pose.trc",
                                     (float(static.time_s[frames[0]]), float(static.time_s[frames[-1]])),
                                     "static_ik.mot", ik_weights or weights, accuracy=STATIC_IK_ACCURACY))
    # one pose over the whole static time range: the median of the solved frames (robust to a slow first frame)
    pose = np.median(ik.values, axis=0)
    times = np.linspace(*static_range, 8)  # OpenSim fits a quintic GCV spline: it needs 6 rows or more
    write_mot(tmp / "static_pose.mot", times, ik.coordinate_names, np.tile(pose, (len(times), 1)),
              [layer.rotational[layer.coordinate_names.index(n)] for n in ik.coordinate_names],
              title="static pose for marker placement")
    coordinate_weights = {c: 1.0 for c in layer.free_coordinate_names}
    final = op.run_scale(op.write_scale_setup(tmp / op.SCALE_SETUP, coordinate_file="static_pose.mot",
                                              coordinate_weights=coordinate_weights, **common))
    return op.ScaleResult(final.model_path, final.scale_factors, first.seconds + ik.seconds + final.seconds)


def _checked_trial(trial: TrialMocap, model_markers: list[str], weights: dict[str, float], ik_rate: str):
    """The trial's markers, the frames IK solves, its weights (0 for model markers it lacks) and those markers."""
    markers, frames = ik_markers(trial, read_trc(trial.trc), ik_rate)
    n_video = trial.video_end_frame - trial.video_start_frame
    n_covered = n_video - trial.clamped_video_frames  # the declared clamped frames may lie past the end
    if n_video <= 0 or (trial.video_fps is None
                        and len(markers.time_s) < (n_covered - 1) * trial.capture_per_video_frame + 1):
        raise D3keError(f"{trial.trc}: {len(markers.time_s)} capture frames do not cover the trial's "
                        f"{n_video} video frames ({trial.clamped_video_frames} of them declared clamped)")
    weights, missing = _tracked(weights, markers, trial.trc)
    op.check_markers(markers, trial.trc, model_markers, weights,
                     (float(markers.time_s[frames[0]]), float(markers.time_s[frames[-1]])))
    return markers, frames, weights, missing


MIN_TRACKED_MARKERS = 3  # fewer cannot fix a body's six degrees of freedom


def _tracked(weights: dict[str, float], markers: MarkerTrajectories, path: Path) -> tuple[dict[str, float], list[str]]:
    weights, missing = present_weights(weights, markers)
    if sum(w > 0 for w in weights.values()) < MIN_TRACKED_MARKERS:
        raise D3keError(f"{path}: only {sum(w > 0 for w in weights.values())} of the model's tracked markers are in "
                        f"the file (missing: {missing}): name the markers as the model does, or give the model a "
                        f"marker set matching the file")
    return weights, missing


def _solve_trial(setup: str, backend: str = "opensim") -> tuple[float, int]:
    """Worker entry (also used in-process): run one trial's IK from its setup file."""
    res = op.run_ik(Path(setup), backend)
    return res.seconds, len(res.time_s)


def compute_subject(mocap_dir: str | Path, generic_model: str | Path, out_dir: str | Path,
                    config: GroundTruthConfig | None = None, code_version: str = "1",
                    log: Callable[[str], None] = lambda m: None) -> GroundTruthResult:
    """Scale, IK and labels for one subject; see the module docstring for the layout.

    `code_version`: the opensim_gt asset's, part of the scale and trial stamps.  Call it on a
    folder without a complete-output stamp (the asset's in-place build removes it first).
    """
    config = config or GroundTruthConfig()
    t0 = time.perf_counter()
    mocap = read_subject_mocap(mocap_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = generic_model if isinstance(generic_model, ModelFiles) else ModelFiles.for_path(generic_model)
    generic_model = files.osim.resolve()
    layer_generic = SkeletalModel.from_osim(generic_model, torch.float64)
    rules = ModelRules.for_model(files, layer_generic)
    model_hash = hashlib.sha256(generic_model.read_bytes()).hexdigest()
    if not files.project:  # the project's stamps stay as they were; a user's model adds its rules
        model_hash = canonical_hash({"model": model_hash, "measurements": [m.__dict__ for m in rules.measurements],
                                     "scale_weights": rules.scale_weights, "ik_weights": rules.ik_weights})
    base_stamp = canonical_hash({"code": code_version, "config": config.as_dict(), "input": "", "model": model_hash})
    timings: dict[str, float] = {}

    # --- scale -------------------------------------------------------------------------------
    static = read_trc(mocap.static.trc)
    static_range = (float(static.time_s[0]), float(static.time_s[-1]))
    ignored = sorted(set(static.marker_names) - set(layer_generic.marker_names))
    if ignored:  # named once per subject: every trial of a session has the same marker set
        log(f"{mocap.key}: markers {ignored} of {mocap.static.trc.name} are not in the model: ignored")
    weights, missing_static = _tracked(rules.scale_weights, static, mocap.static.trc)
    static_ik_weights, _ = present_weights(rules.ik_weights, static)
    measurements = usable_measurements(rules.measurements, static, mocap.static.trc, files.project)
    if missing_static:
        log(f"{mocap.key}: model markers {missing_static} are not in {mocap.static.trc.name}: not used for scaling")
    op.check_markers(static, mocap.static.trc, layer_generic.marker_names, weights, static_range)
    scale_dir = out / "scale"
    scale_stamp = canonical_hash({"base": base_stamp, "static": mocap.static.name,
                                  "markers": hashlib.sha256(static.positions_m.tobytes()).hexdigest()})
    if is_current(scale_dir, scale_stamp):
        scale_factors = op.read_scale_factors(scale_dir / op.SCALE_FACTORS)
        scale_seconds, scale_reused = 0.0, True
        log(f"{mocap.key}: scaled model unchanged, reused")
    else:
        with stamped_dir(scale_dir, scale_stamp) as tmp:
            result = _scale_with_guided_placement(tmp, static, static_range, generic_model, mocap, weights,
                                                  layer_generic, measurements, static_ik_weights)
        scale_factors, scale_seconds, scale_reused = result.scale_factors, result.seconds, False
        log(f"{mocap.key}: scaled the generic model on {mocap.static.trc.name} in {scale_seconds:.1f} s")
    scaled_model = out / op.SCALED_MODEL
    atomic_write_bytes(scaled_model, (scale_dir / op.SCALED_MODEL).read_bytes())

    # --- IK per trial, each in its own folder ------------------------------------------------
    t_prep = time.perf_counter()
    trial_data = {}
    todo: list[tuple[TrialMocap, Path, contextlib.ExitStack, str]] = []  # trial, temp folder, its swap, stamp
    outcomes: dict[str, TrialOutcome] = {}
    failures: list[str] = []  # a bad trial fails the subject, after the good ones are solved and kept
    missing_markers: dict[str, list[str]] = {}
    for trial in mocap.trials:
        try:
            markers, frames, trial_weights, missing = _checked_trial(trial, layer_generic.marker_names,
                                                                     rules.ik_weights, config.ik_rate)
        except D3keError as exc:
            failures.append(str(exc))
            log(f"{mocap.key}: trial {trial.name} skipped: {exc}")
            continue
        if missing:
            missing_markers[trial.name] = missing
            log(f"{mocap.key}: model markers {missing} are not in {trial.trc.name}: not tracked")
        trial_data[trial.name] = (markers, frames)
        tdir = out / "ik" / trial.name
        timed = {"times_s": markers.time_s[frames].round(9).tolist()} if trial.video_fps else {}
        stamp = canonical_hash({"scale": scale_stamp, "trial": trial.name, "frames": frames.tolist(), **timed,
                                "markers": hashlib.sha256(markers.positions_m[frames].tobytes()).hexdigest()})
        if is_current(tdir, stamp):
            outcomes[trial.name] = TrialOutcome(trial.name, len(frames), 0.0, True)
            continue
        swap = contextlib.ExitStack()  # the trial folder is swapped in only once its IK is solved
        tmp = swap.enter_context(stamped_dir(tdir, stamp))  # stamped and swapped in at swap.close()
        op.subsample_trc(markers, frames, tmp / f"{trial.name}.trc")
        op.write_ik_setup(tmp / op.IK_SETUP, "../../" + op.SCALED_MODEL, f"{trial.name}.trc",
                          (float(markers.time_s[frames[0]]), float(markers.time_s[frames[-1]])),
                          f"{trial.name}.mot", trial_weights, config.accuracy)
        todo.append((trial, tmp, swap, stamp))
    timings["prepare_s"] = time.perf_counter() - t_prep

    def finish(item, seconds, n):
        trial, tmp, swap, stamp = item
        swap.close()
        outcomes[trial.name] = TrialOutcome(trial.name, n, seconds, False)
        log(f"{mocap.key}: IK ({config.ik_backend}) {trial.name}: {n} frames in {seconds:.1f} s ({n / max(seconds, 1e-9):.0f} frames/s)")

    try:
        if config.workers > 1 and len(todo) > 1:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(config.workers, len(todo)), mp_context=ctx) as pool:
                try:
                    futures = [(item, pool.submit(_solve_trial, str(item[1] / op.IK_SETUP), config.ik_backend)) for item in todo]
                    for item, fut in futures:
                        finish(item, *fut.result())
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)  # a stop or a failure: queued trials never start
                    raise
        else:
            for item in todo:
                finish(item, *_solve_trial(str(item[1] / op.IK_SETUP), config.ik_backend))
    except BaseException as exc:
        for item in todo:  # unfinished trial folders: drop their temporaries, keep what was there
            if item[0].name not in outcomes:
                item[2].__exit__(type(exc), exc, exc.__traceback__)
        raise

    if failures:
        raise D3keError("; ".join(failures) + f" (the other {len(outcomes)} trials are solved and kept)")

    # --- labels at every video frame ---------------------------------------------------------
    t_lab = time.perf_counter()
    labels = _labels(mocap, trial_data, out, scaled_model, layer_generic, scale_factors, rules.mask_markers)
    for name, (rms, mx) in labels.pop("_errors").items():
        outcomes[name].rms_error_m, outcomes[name].max_error_m = rms, mx
    # a model marker the capture lacks has no error (NaN), which is no fault of the labels
    has_nan = any(np.isnan(v).any() for k, v in labels["arrays"].items() if v.dtype.kind == "f" and k != "marker_error_m")
    _write_labels(out, labels)
    timings["labels_s"] = time.perf_counter() - t_lab
    trials = [outcomes[t.name] for t in mocap.trials]
    seconds = time.perf_counter() - t0
    summary = {
        "subject": mocap.key, "n_label_frames": int(labels["arrays"]["video_frame"].shape[0]),
        "n_video_frames": mocap.n_video_frames, "scale_seconds": scale_seconds, "scale_reused": scale_reused,
        "trials": [t.__dict__ for t in trials], "seconds": seconds, "has_nan": bool(has_nan), "timings": timings,
    }
    if not files.project:  # the project's own summaries stay as they were
        summary.update(ignored_markers=ignored, markers_missing_from_static=missing_static,
                       markers_missing_from_trials=missing_markers)
    atomic_write_json(out / "summary.json", summary)
    return GroundTruthResult(out, scale_factors, trials, summary["n_label_frames"], scale_seconds, seconds,
                             bool(has_nan), timings)


LABEL_ARRAYS = {
    "trial_index": "(F,) index into labels.json 'trials'",
    "video_frame": "(F,) frame number in the subject's video",
    "time_s": "(F,) time within the trial's mocap, s",
    "coordinates": "(F, C) radians / metres, labels.json 'coordinates' order",
    "coordinate_mask": "(F, C) 1 where the coordinate is reliable, 0 where a bony landmark on its body misses by > 2 cm",
    "scale_factors": "(F, B, 3) per-body x, y, z scale factors of the generic model",
    "markers_m": "(F, M, 3) model marker positions in ground",
    "marker_error_m": "(F, M) distance between model and measured marker",
    "joint_centres_m": "(F, J, 3) joint-centre positions in ground",
    "pelvis_rotation": "(F, 3, 3) pelvis to ground",
    "pelvis_origin_m": "(F, 3) pelvis origin in ground",
}


def _labels(mocap: SubjectMocap, trial_data: dict, out: Path, scaled_model: Path,
            layer_generic: SkeletalModel, scale_factors: dict, mask_markers: set[str]) -> dict:
    from d3ke_assets.biomech.formats import read_mot

    layer = SkeletalModel.from_osim(scaled_model, torch.float64)  # markers as placed, on the scaled model
    names = layer.coordinate_names
    body_of_coordinate = {}
    for j in layer.spec.joints:
        for ax in (*j.rotations, *j.translations):
            if ax.coordinate:
                body_of_coordinate[ax.coordinate] = j.child.body
    bony_on_body = {b: [k for k, m in enumerate(layer.marker_names)
                        if m in mask_markers and layer.spec.markers[k][1].body == b] for b in layer.body_names}
    sf = np.array([scale_factors.get(b, (1.0, 1.0, 1.0)) for b in layer.body_names])
    pelvis = layer.body_names.index(root_joint(layer.spec).body)  # the root body, named pelvis in the labels
    parts: dict[str, list] = {k: [] for k in LABEL_ARRAYS}
    errors = {}
    for ti, trial in enumerate(mocap.trials):
        markers, frames = trial_data[trial.name]
        t_mot, cols, values, in_degrees = read_mot(out / "ik" / trial.name / f"{trial.name}.mot")
        if len(t_mot) != len(frames):
            raise D3keError(f"{out / 'ik' / trial.name}: IK wrote {len(t_mot)} frames, expected {len(frames)}")
        q_all = np.zeros((len(t_mot), len(names)))
        for i, n in enumerate(names):
            v = values[:, cols.index(n)]
            q_all[:, i] = np.radians(v) if (in_degrees and layer.rotational[i]) else v
        n_video = trial.video_end_frame - trial.video_start_frame
        wanted = label_frames(trial, markers)
        pos = np.searchsorted(frames, wanted)
        q = q_all[pos]
        pose = layer(torch.tensor(q))
        model_markers = pose.markers_m.numpy()
        measured = np.full(model_markers.shape, np.nan)  # NaN: a model marker the capture lacks
        have = [k for k, m in enumerate(layer.marker_names) if m in markers.marker_names]
        measured[:, have] = markers.positions_m[wanted][:, [markers.marker_names.index(layer.marker_names[k])
                                                             for k in have]]
        err = np.linalg.norm(model_markers - measured, axis=-1)
        mask = np.ones_like(q)
        for i, n in enumerate(names):
            idx = [k for k in bony_on_body.get(body_of_coordinate.get(n, ""), []) if k in have]
            if idx:
                mask[:, i] = (np.nan_to_num(err[:, idx], nan=1.0) <= MASK_ERROR_M).all(axis=1)
        parts["trial_index"].append(np.full(n_video, ti))
        parts["video_frame"].append(trial.video_start_frame + np.arange(n_video))
        parts["time_s"].append(markers.time_s[wanted])
        parts["coordinates"].append(q)
        parts["coordinate_mask"].append(mask)
        parts["scale_factors"].append(np.broadcast_to(sf, (n_video, *sf.shape)))
        parts["markers_m"].append(model_markers)
        parts["marker_error_m"].append(err)
        parts["joint_centres_m"].append(pose.joint_centres_m.numpy())
        parts["pelvis_rotation"].append(pose.body_rotations[:, pelvis].numpy())
        parts["pelvis_origin_m"].append(pose.body_origins_m[:, pelvis].numpy())
        errors[trial.name] = (float(np.sqrt(np.nanmean(err ** 2))), float(np.nanmax(err)))
    arrays = {k: np.concatenate(v).astype(np.int32 if k in ("trial_index", "video_frame") else np.float32
                                          if k not in ("time_s", "coordinates") else np.float64)
              for k, v in parts.items()}
    per_marker = []
    for ti, trial in enumerate(mocap.trials):
        sel = arrays["trial_index"] == ti
        e = arrays["marker_error_m"][sel]
        for k, m in enumerate(layer.marker_names):
            per_marker.append({"trial": trial.name, "marker": m, "rms_error_m": float(np.sqrt(np.mean(e[:, k] ** 2))),
                               "max_error_m": float(np.max(e[:, k]))})
    return {"arrays": arrays, "_errors": errors, "per_marker": per_marker,
            "names": {"trials": [t.name for t in mocap.trials], "coordinates": names,
                      "rotational": layer.rotational, "bodies": layer.body_names, "markers": layer.marker_names,
                      "joints": layer.joint_names, "arrays": LABEL_ARRAYS}}


def _write_labels(out: Path, labels: dict) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **labels["arrays"])
    atomic_write_bytes(out / "labels.npz", buf.getvalue())
    atomic_write_json(out / "labels.json", labels["names"])
    table = pd.DataFrame(labels["per_marker"])
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    atomic_write_bytes(out / "ik_marker_errors.parquet", buf.getvalue())


def read_summary(out_dir: str | Path) -> dict:
    return read_json(Path(out_dir) / "summary.json", "materialize opensim_gt for this subject")


def load_labels(out_dir: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    out = Path(out_dir)
    with np.load(out / "labels.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads((out / "labels.json").read_text())
