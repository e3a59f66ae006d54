"""`trials.json`: the trials of one subject's mocap folder, written by `sources.mocap`
(the `mocap_markers` asset) and read by `biomech.ground_truth` (`opensim_gt`).

One module owns the format, below both, so writer and reader cannot drift apart:

    {"subject": "Subject_1", "mass_kg": 70.0,
     "static": {"name": "static", "trc": "static.trc"},
     "trials": [{"name": ..., "trc": ..., "video_start_frame": ..., "video_end_frame": ...,
                 "capture_per_video_frame": 4, "clamped_video_frames": 0}, ...]}

Video frame `video_start_frame + k` of a trial is capture frame `capture_per_video_frame * k` of
its .trc; the last `clamped_video_frames` of them lie past the trial's end and use its last frame.

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
                          int(d.get("capture_per_video_frame", 4)), int(d.get("clamped_video_frames", 0)))

    return SubjectMocap(facts["subject"], float(facts["mass_kg"]), trial(facts["static"]),
                        [trial(t) for t in facts["trials"]])
