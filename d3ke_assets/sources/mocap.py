"""`mocap_markers`: one subject's marker trajectories per trial, as OpenSim reads them.

Synthetic: the generator's `.trc` files (its virtual markers with soft-tissue
noise).  Real (`movi`): virtual markers on the AMASS SMPL+H body of each trial
(`amass_markers`), with the trials' video frames from MoVi's v3d `flags30`.
Either way the folder holds one `.trc` per trial and `trials.json`
(`biomech.trials` owns its format; `biomech.ground_truth` reads it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from d3ke_assets.biomech.trials import write_trials_file
from d3ke_assets.errors import D3keError, RawDataError
from d3ke_assets.sources import synthetic

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


def movi_mocap(key: str, amass_trials: list[Path], flags30: list[tuple[int, int]], smplh_dir: Path,
               out_dir: str | Path, log: Callable[[str], None] = lambda m: None) -> dict:
    """Virtual markers for each AMASS trial; trial n's video frames are MoVi's flags30 row n."""
    from d3ke_assets.biomech.formats import MarkerTrajectories, write_trc
    from d3ke_assets.sources import amass_markers

    out = Path(out_dir)
    if len(flags30) < len(amass_trials):
        raise RawDataError(f"{key}: {len(amass_trials)} AMASS trials but only {len(flags30)} motions in the v3d "
                           f"flags30 table")
    trials = []
    static = None
    for n, path in enumerate(amass_trials):
        name = path.name.removesuffix("_poses.npz")
        traj = amass_markers.write_trial_trc(path, smplh_dir, out / f"{name}.trc")
        start, end = flags30[n]
        trials.append({"name": name, "trc": f"{name}.trc", "video_start_frame": int(start),
                       "video_end_frame": int(end), "capture_per_video_frame": int(round(traj.rate_hz / 30))})
        if static is None:
            k = max(2, int(MOVI_STATIC_SECONDS * traj.rate_hz))
            write_trc(out / "static.trc", MarkerTrajectories(traj.marker_names, traj.time_s[:k],
                                                             traj.positions_m[:k], traj.rate_hz))
            static = {"name": "static", "trc": "static.trc"}
        log(f"{key}: {name}: {len(traj.time_s)} frames of virtual markers")
    if static is None:
        raise D3keError(f"{key}: no AMASS trials")
    write_trials_file(out, key, MOVI_DEFAULT_MASS_KG, static, trials)
    return {"n_trials": len(trials), "source": "AMASS SMPL+H virtual markers"}
