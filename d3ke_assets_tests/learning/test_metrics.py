"""The one coordinate error: worked out by hand, and the same figure from its three callers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.evaluation.evaluate import camera_labels, score
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning import training as T
from d3ke_assets.learning.metrics import coordinate_mae_deg, scored_coordinates
from d3ke_assets.learning.model import FrameModel, decode_to_numpy
from d3ke_assets.learning.quality import frame_model_vs_mean_baseline
from d3ke_assets.learning.sequence import predict_head_outputs


def test_coordinate_mae_worked_out_by_hand():
    # hip_flexion and knee_angle: rotational and predicted; pelvis_tx: predicted but translational
    # (metres); pelvis_tilt: rotational but not predicted (the pelvis's orientation is a rotation)
    model = SimpleNamespace(predicted=[0, 1, 2], layer=SimpleNamespace(
        coordinate_names=["hip_flexion", "knee_angle", "pelvis_tx", "pelvis_tilt"],
        rotational=[True, True, False, True]))
    scored = scored_coordinates(model)
    assert scored.tolist() == [True, True, False, False]
    true = np.radians([[5.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0]])
    pred = true + np.radians([[10.0, -4.0, 99.0, 50.0],  # off by 10 and 4 degrees
                              [2.0, 6.0, 99.0, 50.0],  # the knee masked out: only the hip's 2 counts
                              [30.0, 8.0, 99.0, 50.0]])  # the hip masked out: only the knee's 8 counts
    mask = np.array([[1, 1, 1, 1], [1, 0, 1, 1], [0, 1, 1, 1]], float)
    assert math.isclose(coordinate_mae_deg(pred, true, mask, scored), (10 + 4 + 2 + 8) / 4)
    # CPU tensors in float32, as training validation passes them, give the same figure
    got = coordinate_mae_deg(torch.tensor(pred, dtype=torch.float32), torch.tensor(true, dtype=torch.float32),
                             torch.tensor(mask, dtype=torch.float32), scored)
    assert got == pytest.approx(6.0, rel=1e-5)
    assert coordinate_mae_deg(pred, true, np.zeros_like(mask), scored) == 0.0  # nothing counts


def test_training_validation_quality_and_evaluation_give_the_same_coordinate_error(smoke_frames, generic_model):
    frames = FrameDataset([smoke_frames["base"] / "frames"], used_only=False, cameras=("PG1",))
    torch.manual_seed(0)
    model = FrameModel(SkeletalModel.from_osim(generic_model[0]), "mobilenet_v3_small").eval()
    config = T.TrainConfig(backbone="mobilenet_v3_small", batch_size=16, num_workers=0)
    device = T.choose_device()
    rotational = torch.tensor(model.layer.rotational)
    loader = torch.utils.data.DataLoader(frames, batch_size=16, shuffle=False)
    _, training_mae, _ = T.evaluate(model, loader, config, device, rotational, T.frame_prepare(model, config))
    quality_mae = frame_model_vs_mean_baseline(model, frames, frames)["frame_model_coordinate_mae_deg"]
    pred = decode_to_numpy(model.eval(), predict_head_outputs(model, frames))
    all_markers = np.ones(len(model.layer.marker_names), bool)
    evaluation_mae = score(pred, camera_labels(frames, model.layer), scored_coordinates(model), all_markers,
                           list(model.layer.coordinate_names))["coordinate_mae_deg"]
    # an independent figure: every scored entry with a label, straight from the labels file
    scored = scored_coordinates(model)
    counted = frames.labels["coordinate_mask"][:, scored] > 0
    direct = np.degrees(np.abs(pred["coordinates"][:, scored] - frames.labels["coordinates"][:, scored]))[counted]
    assert counted.sum() > 0 and direct.mean() > 0
    assert training_mae == pytest.approx(direct.mean(), rel=1e-5)
    assert quality_mae == pytest.approx(direct.mean(), rel=1e-5)
    assert evaluation_mae == pytest.approx(direct.mean(), rel=1e-5)
