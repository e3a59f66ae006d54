"""The multi-step baseline against known truth: fed the true markers and scale factors, OpenSim IK
gives back the labels' coordinates."""

from __future__ import annotations

import numpy as np
import torch

from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.evaluation.evaluate import camera_labels
from d3ke_assets.evaluation.multistep import inverse_kinematics_on_predictions
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning.metrics import scored_coordinates
from d3ke_assets.learning.model import FrameModel


def test_ik_on_true_markers_recovers_the_coordinates(smoke_frames, generic_model, tmp_path):
    frames = FrameDataset([smoke_frames["base"] / "frames"], used_only=False, cameras=("PG1",))
    rows = np.arange(0, len(frames), 3)[:40]
    layer = SkeletalModel.from_osim(generic_model[0])
    labels = camera_labels(frames, layer)
    result = inverse_kinematics_on_predictions(
        generic_model[0], list(layer.marker_names), labels["markers_m"][rows], frames.camera_R[rows],
        labels["scale_factors"][rows], list(layer.body_names), list(layer.coordinate_names), tmp_path)
    assert result.scaled_model.is_file() and result.coordinates.shape == (len(rows), len(layer.coordinate_names))
    torch.manual_seed(0)
    scored = scored_coordinates(FrameModel(layer, "mobilenet_v3_small"))
    err = np.degrees(np.abs(result.coordinates - labels["coordinates"][rows]))[:, scored]
    mask = labels["coordinate_mask"][rows][:, scored] > 0
    # the labels came from IK on the same model, scaled per body from static markers: a few degrees
    assert np.median(err[mask]) < 1.0 and err[mask].mean() < 3.0, (np.median(err[mask]), err[mask].mean())
