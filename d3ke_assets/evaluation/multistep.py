"""The multi-step route D3KE argues against: predicted markers, then OpenSim inverse kinematics.

The generic model is scaled by the network's predicted scale factors (their mean over the frames
of a subject and view) with OpenSim's `Model.scale`; the predicted markers, pelvis-relative in the
camera frame, are turned back into the ground frame with the camera's rotation (the calibration
is known) and lifted to a standing pelvis height; OpenSim's InverseKinematicsTool (or the torch
solver, `ik_backend="torch"`) then solves every frame with the project's marker weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from d3ke_assets.biomech.formats import MarkerTrajectories, write_trc
from d3ke_assets.biomech.ground_truth import project_marker_weights
from d3ke_assets.biomech.opensim_pipeline import run_ik, write_ik_setup
from d3ke_assets.biomech.opensim_tools import scale_model
from d3ke_assets.errors import D3keError

PELVIS_HEIGHT_M = 0.95  # where the pelvis-relative markers are put: IK starts from a standing model
VIDEO_RATE_HZ = 30.0


@dataclass
class MultiStepResult:
    coordinates: np.ndarray  # (N, C) radians / metres, in `coordinate_names` order
    scaled_model: Path
    ik_seconds: float


def markers_to_ground(markers_cam_m: np.ndarray, camera_R: np.ndarray) -> np.ndarray:
    """(N, M, 3) pelvis-relative camera-frame points -> ground frame (rows: cam = ground @ R^T)."""
    return np.einsum("nmj,nji->nmi", markers_cam_m, camera_R) + np.array([0.0, PELVIS_HEIGHT_M, 0.0])


def inverse_kinematics_on_predictions(generic_osim: Path, marker_names: list[str], markers_cam_m: np.ndarray,
                                      camera_R: np.ndarray, scale_factors: np.ndarray, body_names: list[str],
                                      coordinate_names: list[str], workdir: Path,
                                      mass_kg: float = 75.0, ik_backend: str = "opensim") -> MultiStepResult:
    """OpenSim IK on predicted markers (N, M, 3) with the model scaled by the mean of the predicted
    per-body scale factors (N, B, 3).  Frames are solved in the order given."""
    if len(markers_cam_m) == 0:
        raise D3keError("no frames to solve: the multi-step baseline needs predicted markers")
    workdir.mkdir(parents=True, exist_ok=True)
    mean_scales = scale_factors.mean(axis=0)
    scaled = workdir / "scaled.osim"
    scale_model(generic_osim, {b: tuple(mean_scales[i]) for i, b in enumerate(body_names)}, mass_kg, scaled)
    ground = markers_to_ground(markers_cam_m, camera_R)
    time_s = np.arange(len(ground)) / VIDEO_RATE_HZ
    write_trc(workdir / "predicted.trc", MarkerTrajectories(list(marker_names), time_s, ground, VIDEO_RATE_HZ))
    setup = write_ik_setup(workdir / "Setup_IK.xml", scaled.name, "predicted.trc", (time_s[0], time_s[-1]),
                           "predicted.mot", project_marker_weights(list(marker_names)))
    ik = run_ik(setup, ik_backend)
    column = {n: i for i, n in enumerate(ik.coordinate_names)}
    missing = [n for n in coordinate_names if n not in column]
    if missing:
        raise D3keError(f"{ik.mot_path}: IK wrote no column for {missing}")
    if len(ik.values) != len(ground):
        raise D3keError(f"{ik.mot_path}: IK solved {len(ik.values)} of {len(ground)} frames")
    coordinates = ik.values[:, [column[n] for n in coordinate_names]]
    return MultiStepResult(coordinates, scaled, ik.seconds)
