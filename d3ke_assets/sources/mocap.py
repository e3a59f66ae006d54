"""`mocap_markers`: one subject's marker trajectories per trial, as OpenSim reads them.

Synthetic: the generator's `.trc` files (its virtual markers with soft-tissue
noise).  Real (`movi`): virtual markers on the AMASS SMPL+H body of each motion
(`amass_markers`), with its video frames from MoVi's v3d `flags30`, paired by
motion number (`movi.index_subject`).  A lab's (`lab`): its own `.trc` files, each
trial timed against its videos (`lab_mocap`).
Either way the folder holds one `.trc` per trial and `trials.json`
(`biomech.trials` owns its format; `biomech.ground_truth` reads it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from d3ke_assets.biomech.trials import write_trials_file
from d3ke_assets.errors import D3keError, RawDataError
from d3ke_assets.sources import lab, movi, synthetic

MOCAP_CODE_VERSION = "1"
MOVI_DEFAULT_MASS_KG = 70.0  # MoVi does not publish body mass; scaling only uses it for inertia
MOVI_STATIC_SECONDS = 1.0  # MoVi has no static trial: the first second of the first motion (an A-pose) stands in


def synthetic_mocap(raw_dir: str | Path, out_dir: str | Path, log: Callable[[str], None] = lambda m: None) -> dict:
    raw_dir, out = Path(raw_dir), Path(out_dir)
    facts = synthetic.load_subject_facts(raw_dir)
    static, trials = None, []
    for t in facts["trials"]:
        src = raw_dir / t["mocap_file"]
        if not src.is_file():
            raise RawDataError(f"{src}: marker file is missing: materialize raw_subject for {facts['subject']} again")
        shutil.copyfile(src, out / src.name)
        entry = {"name": t["name"], "trc": src.name,
                 "capture_per_video_frame": synthetic.CAPTURE_PER_VIDEO_FRAME}
        if "video_start_frame" in t:
            entry.update(video_start_frame=t["video_start_frame"], video_end_frame=t["video_end_frame"])
            trials.append(entry)
        else:
            static = entry
    if static is None:
        raise RawDataError(f"{raw_dir / 'subject.json'}: no static trial listed")
    write_trials_file(out, facts["subject"], facts["mass_kg"], static, trials)
    log(f"{facts['subject']}: {len(trials)} trials and a static trial from the synthetic generator")
    return {"n_trials": len(trials), "source": "synthetic generator"}


def movi_mocap(subject: movi.SubjectIndex, smplh_dir: Path, out_dir: str | Path,
               log: Callable[[str], None] = lambda m: None, vertices: dict[str, int] | None = None) -> dict:
    """Virtual markers for each motion of `subject` (paired by motion number, see `movi.index_subject`).

    A motion that cannot be used (missing file, unreadable, far too short, markers failing) is left
    out and named in the log and the returned facts; the subject fails only when none is left.
    """
    from d3ke_assets.biomech.formats import MarkerTrajectories, write_trc
    from d3ke_assets.sources import amass_markers

    out, key = Path(out_dir), subject.key
    failed = dict(subject.failed)
    for line in subject.missing:
        log(f"{key}: {line} is missing: that motion is left out")
    for motion, why in failed.items():
        log(f"{key}: motion {motion} left out: {why}")
    trials, static, gender = [], None, None
    for trial in subject.trials:
        name = trial.amass_file.name.removesuffix("_poses.npz")
        try:
            traj = amass_markers.write_trial_trc(trial.amass_file, smplh_dir, out / f"{name}.trc", vertices=vertices)
            gender = gender or amass_markers.load_amass_trial(trial.amass_file)["gender"]
        except D3keError as exc:
            failed[trial.motion] = str(exc)
            log(f"{key}: motion {trial.motion} left out: {exc}")
            continue
        trials.append({"name": name, "trc": f"{name}.trc", "motion": trial.motion,
                       "video_start_frame": trial.video_start_frame, "video_end_frame": trial.video_end_frame,
                       "capture_per_video_frame": trial.capture_per_video_frame,
                       "clamped_video_frames": trial.clamped_video_frames})
        if static is None:
            k = max(2, int(MOVI_STATIC_SECONDS * traj.rate_hz))
            write_trc(out / "static.trc", MarkerTrajectories(traj.marker_names, traj.time_s[:k],
                                                             traj.positions_m[:k], traj.rate_hz))
            static = {"name": "static", "trc": "static.trc"}
        clamped = f", last {trial.clamped_video_frames} video frames clamped" if trial.clamped_video_frames else ""
        log(f"{key}: motion {trial.motion} ({name}): {len(traj.time_s)} frames of virtual markers, video frames "
            f"[{trial.video_start_frame}, {trial.video_end_frame}){clamped}")
    if static is None:
        raise RawDataError(f"{key}: none of its motions can be used ({len(subject.missing)} missing, "
                           f"{len(failed)} failed; see the log): fix or download the files named there")
    facts = {"n_trials": len(trials), "source": "AMASS SMPL+H virtual markers",
             "missing_motions": subject.missing, "failed_motions": {str(m): w for m, w in sorted(failed.items())},
             "clamped_video_frames": sum(t["clamped_video_frames"] for t in trials),
             "sex_v3d": subject.v3d.sex or f"unknown ({subject.v3d.sex_raw!r})", "gender_amass": gender}
    if subject.v3d.sex and gender in ("female", "male") and subject.v3d.sex != gender:
        facts["sex_warning"] = (f"{subject.v3d.path.name} says subject.sex {subject.v3d.sex_raw!r} but the AMASS "
                                f"files say gender {gender!r}; the AMASS gender's body model is used")
        log(f"{key}: {facts['sex_warning']}")
    write_trials_file(out, key, MOVI_DEFAULT_MASS_KG, static, trials)
    return facts


VIDEO_FPS_TOLERANCE = 1e-3  # relative: the cameras of one trial share its label frames, so they share a rate


def lab_video_frames(trial: lab.LabTrial, cameras: dict, capture_start_s: float, capture_end_s: float, trc: Path
                     ) -> tuple[int, int, float, dict]:
    """The trial's video frames inside its capture [start, end] (s, mocap time): (first, end, fps, facts).

    Frames before the capture starts or after it ends have no markers and are not labelled; a video
    that ends before the capture does is an error (truncated, the wrong file, or a wrong
    video_start_time_s)."""
    from d3ke_assets.media.video import probe_video

    infos = {cam: probe_video(video) for cam, video in sorted(trial.videos.items())}
    for cam, info in infos.items():
        size = (cameras[cam].width_px, cameras[cam].height_px)
        if (info.width_px, info.height_px) != size:
            raise RawDataError(f"{trial.videos[cam]}: video is {info.width_px}x{info.height_px} but camera {cam} of "
                               f"{lab.CALIBRATION_FILE} has size {size[0]}x{size[1]}: the video or the calibration "
                               f"is the wrong one")
    fps = {cam: info.fps for cam, info in infos.items()}
    first_cam = next(iter(fps))
    for cam, rate in fps.items():
        if rate <= 0 or abs(rate - fps[first_cam]) > VIDEO_FPS_TOLERANCE * fps[first_cam]:
            raise RawDataError(f"{trial.videos[cam]}: runs at {rate:g} fps but {trial.videos[first_cam].name} at "
                               f"{fps[first_cam]:g} fps: the cameras of a trial share its label frames, so "
                               f"export them at one frame rate")
    rate = fps[first_cam]
    start = trial.video_start_time_s
    eps = 1e-6 * rate  # .trc times carry 1e-6 s
    first = max(0, int(np.ceil((capture_start_s - start) * rate - eps)))
    end = int(np.floor((capture_end_s - start) * rate + eps)) + 1  # one past the last frame inside the capture
    for cam, info in infos.items():
        if info.n_frames < end:
            video_end_s = start + (info.n_frames - 1) / rate
            raise RawDataError(
                f"{trial.videos[cam]}: {info.n_frames} frames at {rate:g} fps end at mocap time {video_end_s:.3f} s "
                f"but {trc.name} runs to {capture_end_s:.3f} s: the video is shorter than its mocap: check "
                f"[trials.{trial.name}] video_start_time_s in subject.toml, export the whole video, or trim "
                f"{trc.name} to the video")
    if end - first < 2:
        raise RawDataError(f"{trc}: fewer than 2 of the trial's video frames lie in its capture "
                           f"({capture_start_s:g}-{capture_end_s:g} s): check [trials.{trial.name}] "
                           f"video_start_time_s in subject.toml")
    return first, end, rate, {cam: info.n_frames for cam, info in infos.items()}


def lab_mocap(subject: lab.LabSubject, out_dir: str | Path, log: Callable[[str], None] = lambda m: None) -> dict:
    """A lab subject's .trc files as they are (OpenSim reads mm, cm or m) and, per trial, its video
    frames inside the capture, timed (`biomech.trials`: `video_fps`, `video_start_time_s`)."""
    from d3ke_assets.biomech.formats import read_trc

    out = Path(out_dir)
    read_trc(subject.static_trc)  # units and numbers, as OpenSim reads them
    shutil.copyfile(subject.static_trc, out / "static.trc")
    trials, facts = [], {}
    for trial in subject.trials:
        markers = read_trc(trial.trc)
        first, end, fps, n_frames = lab_video_frames(trial, subject.cameras, float(markers.time_s[0]),
                                                     float(markers.time_s[-1]), trial.trc)
        shutil.copyfile(trial.trc, out / f"{trial.name}.trc")
        trials.append({"name": trial.name, "trc": f"{trial.name}.trc", "video_start_frame": first,
                       "video_end_frame": end, "video_fps": fps, "video_start_time_s": trial.video_start_time_s})
        facts[trial.name] = {"capture_rate_hz": markers.rate_hz, "video_fps": fps, "video_frames": n_frames,
                             "labelled_video_frames": [first, end]}
        log(f"{subject.key}: trial {trial.name}: {len(markers.time_s)} capture frames at {markers.rate_hz:g} Hz, "
            f"video frames [{first}, {end}) of {min(n_frames.values())} at {fps:g} fps "
            f"({', '.join(sorted(trial.videos))})")
    write_trials_file(out, subject.key, subject.mass_kg, {"name": "static", "trc": "static.trc"}, trials)
    return {"n_trials": len(trials), "source": "lab .trc files", "sex": subject.sex or "unknown",
            "height_m": subject.height_m, "mass_kg": subject.mass_kg, "trial_timing": facts}
