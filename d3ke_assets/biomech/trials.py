"""`trials.json`: the trials of one subject's mocap folder, written by `sources.mocap`
(the `mocap_markers` asset) and read by `biomech.ground_truth` (`opensim_gt`).

One module owns the format, below both, so writer and reader cannot drift apart:

    {"subject": "Subject_1", "mass_kg": 70.0,
     "static": {"name": "static", "trc": "static.trc"},
     "trials": [{"name": ..., "trc": ..., "video_start_frame": ..., "video_end_frame": ...,
                 "capture_per_video_frame": 4, "clamped_video_frames": 0}, ...]}

    a lab's trial instead: {"name": ..., "trc": ..., "video_start_frame": 1, "video_end_frame": 30,
                            "video_fps": 30.0, "video_start_time_s": 0.37}

Video frame `video_start_frame + k` of a trial is capture frame `capture_per_video_frame * k` of
its .trc; the last `clamped_video_frames` of them lie past the trial's end and use its last frame.

A trial with `video_fps` (a lab's, whose rates need not be whole multiples) is timed instead:
video frame `f` (`video_start_frame <= f < video_end_frame`, counted in the trial's own videos)
lies at mocap time `video_start_time_s + f / video_fps`, and is labelled from the markers
interpolated there (`markers_at_times`).

Trial and file names become paths, so the reader accepts only plain names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from d3ke_assets.storage import atomic_write_json, read_json, safe_name

TRIALS_FILE = "trials.json"


@dataclass
class TrialMocap:
    name: str
    trc: Path
    video_start_frame: int | None  # None: a trial without video (the static trial)
    video_end_frame: int | None
    capture_per_video_frame: int = 4
    clamped_video_frames: int = 0  # video frames past the trial's last capture frame (they use that frame)
    video_fps: float | None = None  # set: video frames are timed (see the module docstring)
    video_start_time_s: float = 0.0  # mocap time of video frame 0 (timed trials)

    def video_times_s(self) -> np.ndarray:
        """Mocap time of each of the trial's video frames (timed trials)."""
        return self.video_start_time_s + np.arange(self.video_start_frame, self.video_end_frame) / self.video_fps

    def video_capture_frames(self, n_capture: int) -> np.ndarray:
        """Per video frame of the trial, the capture frame it is labelled from (clamped to the last one)."""
        wanted = np.arange(self.video_end_frame - self.video_start_frame) * self.capture_per_video_frame
        return np.minimum(wanted, n_capture - 1)


@dataclass
class SubjectMocap:
    key: str
    mass_kg: float
    static: TrialMocap
    trials: list[TrialMocap]

    @property
    def n_video_frames(self) -> int:
        return sum(t.video_end_frame - t.video_start_frame for t in self.trials)


def write_trials_file(folder: Path, key: str, mass_kg: float, static: dict, trials: list[dict]) -> None:
    atomic_write_json(folder / TRIALS_FILE, {"subject": key, "mass_kg": mass_kg, "static": static, "trials": trials})


def read_subject_mocap(folder: str | Path) -> SubjectMocap:
    folder = Path(folder)
    facts = read_json(folder / TRIALS_FILE, "materialize mocap_markers for this subject")

    def trial(d: dict) -> TrialMocap:
        where = folder / TRIALS_FILE
        return TrialMocap(safe_name(d["name"], "trial name", where), folder / safe_name(d["trc"], "marker file", where),
                          d.get("video_start_frame"), d.get("video_end_frame"),
                          int(d.get("capture_per_video_frame", 4)), int(d.get("clamped_video_frames", 0)),
                          float(d["video_fps"]) if d.get("video_fps") else None, float(d.get("video_start_time_s", 0)))

    return SubjectMocap(facts["subject"], float(facts["mass_kg"]), trial(facts["static"]),
                        [trial(t) for t in facts["trials"]])


TIME_TOLERANCE_S = 1e-5  # .trc times are written to 1e-6 s: a video frame this close to a capture frame is on it


def markers_at_times(markers, times_s: np.ndarray, path: Path):
    """`markers` (a `formats.MarkerTrajectories`) linearly interpolated at `times_s`, which must lie
    within the capture (a gap stays a gap: NaN next to it)."""
    from d3ke_assets.biomech.formats import MarkerTrajectories
    from d3ke_assets.errors import D3keError

    t = markers.time_s
    if len(times_s) and (times_s[0] < t[0] - TIME_TOLERANCE_S or times_s[-1] > t[-1] + TIME_TOLERANCE_S):
        raise D3keError(f"{path}: the capture covers {t[0]:g}-{t[-1]:g} s, not the video frames' "
                        f"{times_s[0]:g}-{times_s[-1]:g} s: check the trial's video_start_time_s")
    flat = markers.positions_m.reshape(len(t), -1)
    at = np.clip(times_s, t[0], t[-1])
    out = np.empty((len(times_s), flat.shape[1]))
    for k in range(flat.shape[1]):
        out[:, k] = np.interp(at, t, flat[:, k])
    nearest = np.clip(np.searchsorted(t, at), 1, len(t) - 1)
    nearest = np.where(np.abs(t[nearest - 1] - at) < np.abs(t[nearest] - at), nearest - 1, nearest)
    on_capture = np.abs(t[nearest] - at) <= TIME_TOLERANCE_S
    out[on_capture] = flat[nearest[on_capture]]  # the captured frame itself, not a blend with its neighbour
    rate = 1.0 / np.diff(times_s).mean() if len(times_s) > 1 else markers.rate_hz
    return MarkerTrajectories(markers.marker_names, np.asarray(times_s, float),
                              out.reshape(len(times_s), *markers.positions_m.shape[1:]), float(rate))
