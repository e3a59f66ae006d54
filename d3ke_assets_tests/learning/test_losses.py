"""The loss terms on hand-computed cases."""

from __future__ import annotations

import math

import torch

from d3ke_assets.learning import losses as L


def test_joint_loss_is_pelvis_relative_l1():
    true = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    pred = true + torch.tensor([10.0, -3.0, 2.0])  # the same pose, translated: nothing to learn
    assert L.joint_loss(pred, true, pred[:, 0], true[:, 0]).item() == 0.0
    pred2 = true.clone()
    pred2[0, 1, 1] = 0.3  # one joint 0.3 m off along y: mean |.| over 2 joints x 3 axes
    assert math.isclose(L.joint_loss(pred2, true, pred2[:, 0], true[:, 0]).item(), 0.3 / 6, rel_tol=1e-6)


def test_marker_loss_weights_markers():
    true = torch.zeros(1, 2, 3)
    pred = torch.zeros(1, 2, 3)
    pred[0, 1] = torch.tensor([0.3, 0.0, 0.0])  # marker 1: mean abs over axes 0.1
    pelvis = torch.zeros(1, 3)
    assert math.isclose(L.marker_loss(pred, true, pelvis, pelvis).item(), 0.05, rel_tol=1e-6)
    # weights 1 and 3 (normalised to 0.5 and 1.5): (0 * 0.5 + 0.1 * 1.5) / 2
    w = torch.tensor([1.0, 3.0])
    assert math.isclose(L.marker_loss(pred, true, pelvis, pelvis, w).item(), 0.075, rel_tol=1e-6)


def test_body_loss_is_smooth_l1_with_beta_005():
    true = torch.ones(1, 1, 3)
    small = true + torch.tensor([0.01, 0.0, 0.0])  # |d| < beta: 0.5 d^2 / beta, averaged over 3
    assert math.isclose(L.body_loss(small, true).item(), 0.5 * 0.01 ** 2 / 0.05 / 3, rel_tol=1e-5)
    big = true + torch.tensor([0.2, 0.0, 0.0])  # |d| >= beta: |d| - beta / 2
    assert math.isclose(L.body_loss(big, true).item(), (0.2 - 0.025) / 3, rel_tol=1e-6)


def test_angle_loss_in_degrees_with_beta_5_and_masked_entries_contribute_nothing():
    rotational = torch.tensor([True, True, False])
    true = torch.zeros(1, 3)
    pred = torch.tensor([[math.radians(10.0), math.radians(2.0), 0.03]])  # 10 deg, 2 deg, 3 cm
    mask = torch.ones(1, 3)
    expected = ((10.0 - 2.5) + 0.5 * 2.0 ** 2 / 5.0 + 0.5 * 3.0 ** 2 / 5.0) / 3
    assert math.isclose(L.angle_loss(pred, true, mask, rotational).item(), expected, rel_tol=1e-5)
    masked = torch.tensor([[0.0, 1.0, 1.0]])
    wild = pred.clone()
    wild[0, 0] = 1e6  # a masked coordinate can be anything
    expected_masked = (0.5 * 2.0 ** 2 / 5.0 + 0.5 * 3.0 ** 2 / 5.0) / 2
    assert math.isclose(L.angle_loss(wild, true, masked, rotational).item(), expected_masked, rel_tol=1e-5)
    wild.requires_grad_(True)
    L.angle_loss(wild, true, masked, rotational).backward()
    assert wild.grad[0, 0].item() == 0.0


def test_total_uses_the_configured_weights():
    b, c, n, m, j = 2, 3, 4, 5, 6
    true = {"coordinates": torch.zeros(b, c), "coordinate_mask": torch.ones(b, c),
            "scale_factors": torch.ones(b, n, 3), "markers_m": torch.zeros(b, m, 3),
            "joint_centres_m": torch.zeros(b, j, 3), "pelvis_origin_m": torch.zeros(b, 3)}
    pred = {k: v + 0.01 for k, v in true.items() if k != "coordinate_mask"}
    pred["pelvis_origin_m"] = true["pelvis_origin_m"]
    rotational = torch.tensor([True, True, False])
    w = L.LossWeights(joint=1.0, marker=2.0, body=0.1, angle=0.06)
    total, terms = L.d3ke_loss(pred, true, w, rotational)
    assert math.isclose(total.item(), sum(getattr(w, k) * v.item() for k, v in terms.items()), rel_tol=1e-6)
    assert set(terms) == {"joint", "marker", "body", "angle"}
    assert math.isclose(terms["joint"].item(), 0.01, rel_tol=1e-5)

