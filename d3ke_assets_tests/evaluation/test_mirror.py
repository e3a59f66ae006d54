"""Mirroring checked against the skeletal layer: the mirrored coordinates pose the model as the
mirror image of the original pose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.evaluation.metrics import mpjpe_mm
from d3ke_assets.learning.mirror import LATERAL_Z, Mirror


@pytest.fixture(scope="module")
def layer(generic_model):
    return SkeletalModel.from_osim(generic_model[0], dtype=torch.float64)


def _pose(layer, q):
    pose = layer(torch.from_numpy(q), torch.ones(len(q), layer.n_bodies, 3, dtype=torch.float64))
    return pose.markers_m.numpy(), pose.joint_centres_m.numpy()


def test_mirrored_coordinates_give_the_mirror_image_of_the_pose(layer):
    mirror = Mirror.for_layer(layer)
    rng = np.random.default_rng(0)
    lo = np.array([c.range[0] for c in layer.spec.coordinates])
    hi = np.array([c.range[1] for c in layer.spec.coordinates])
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    q = mid + 0.3 * half * rng.uniform(-1, 1, (6, len(lo)))  # inside every range, and so is the mirror image
    markers, joints = _pose(layer, q)
    m_markers, m_joints = _pose(layer, mirror.coordinates(q))
    paired = mirror.marker_paired
    assert paired.sum() == len(paired) - 1  # RBAK has no partner
    expected = mirror.markers(markers, axis=LATERAL_Z)
    assert np.abs(m_markers[:, paired] - expected[:, paired]).max() < 1e-9
    assert np.abs(m_joints - mirror.joint_centres(joints, axis=LATERAL_Z)).max() < 1e-9
    assert np.allclose(mirror.coordinates(mirror.coordinates(q)), q)  # an involution


def test_a_mirrored_prediction_of_a_flipped_frame_scores_as_the_unflipped_one(layer):
    """For a symmetric pose the flipped picture shows the same pose; predicting it and mirroring
    the labels gives the same errors as the unflipped frame."""
    mirror = Mirror.for_layer(layer)
    names = layer.coordinate_names
    q = np.zeros((1, len(names)))
    for side in ("_r", "_l"):  # the same angles on both sides: a symmetric pose
        q[0, names.index("hip_flexion" + side)] = 0.4
        q[0, names.index("knee_angle" + side)] = -0.6
        q[0, names.index("arm_flex" + side)] = 0.3
    markers, joints = _pose(layer, q)
    R = np.eye(3)[None]
    labels = {"coordinates": q, "coordinate_mask": np.ones_like(q), "scale_factors": np.ones((1, layer.n_bodies, 3)),
              "markers_m": markers, "joint_centres_m": joints, "pelvis_rotation": R}
    flipped = mirror.camera_labels(labels)
    # Worked out by hand: a symmetric pose is its own mirror image across the sagittal plane (z -> -z,
    # sides swapped), so the picture's flip (x -> -x, sides swapped) shows it turned 180 deg about y:
    # every joint at (-x, y, -z), no side swap left.
    half_turn = np.array([-1.0, 1.0, -1.0])
    assert np.abs(flipped["joint_centres_m"] - joints * half_turn).max() < 1e-9
    # A prediction of the unflipped frame with a 20 mm error at each joint, in a different direction
    # per joint: the same prediction seen in the flipped picture (turned with it) scores 20 mm against
    # the mirrored labels, as the unflipped one does against the originals; against the unmirrored
    # labels it would not.
    rng = np.random.default_rng(5)
    error = rng.normal(size=joints.shape)
    error *= 0.02 / np.linalg.norm(error, axis=-1, keepdims=True)
    pred = joints + error
    assert mpjpe_mm(pred, joints) == pytest.approx(20.0)
    assert mpjpe_mm(pred * half_turn, flipped["joint_centres_m"]) == pytest.approx(20.0)
    assert mpjpe_mm(pred * half_turn, joints) > 100.0  # the check above depends on the mirroring
    assert np.allclose(flipped["coordinates"], q)  # symmetric: the same coordinates
    rot = flipped["pelvis_rotation"][0]
    assert np.isclose(np.linalg.det(rot), 1.0) and np.allclose(rot, np.diag([-1.0, 1.0, -1.0]))
    # the flipped picture's markers are the original's with x reflected and sides swapped
    paired = mirror.marker_paired
    assert np.allclose(flipped["markers_m"][:, paired][..., 0], -markers[:, mirror.marker_perm][:, paired][..., 0])


def test_pelvis_angles_invert_the_models_pelvis_rotation(layer):
    """predict's decomposition, checked against the skeletal layer's pelvis orientation."""
    from d3ke_assets.evaluation.predict import pelvis_angles

    names = layer.coordinate_names
    rng = np.random.default_rng(3)
    q = np.zeros((8, len(names)))
    angles = np.stack([rng.uniform(-1.2, 1.2, 8), rng.uniform(-1.2, 1.2, 8), rng.uniform(-3.0, 3.0, 8)], axis=1)
    for i, name in enumerate(("pelvis_tilt", "pelvis_list", "pelvis_rotation")):
        q[:, names.index(name)] = angles[:, i]
    pose = layer(torch.from_numpy(q), torch.ones(8, layer.n_bodies, 3, dtype=torch.float64))
    recovered = pelvis_angles(pose.body_rotations[:, 0].numpy())
    assert np.allclose(recovered, angles, atol=1e-9)
