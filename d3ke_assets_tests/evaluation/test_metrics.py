"""Metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from d3ke_assets.evaluation import metrics as M


def _rotation(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_coordinate_errors_by_hand():
    true = np.zeros((3, 2))
    pred = np.radians([[1.0, 10.0], [-3.0, 20.0], [2.0, 30.0]])
    mask = np.array([[1, 0], [1, 0], [0, 0]])
    out = M.coordinate_errors_deg(pred, true, mask)
    assert out["mae_deg"][0] == pytest.approx(2.0)  # (1 + 3) / 2; frame 3 masked
    assert out["rmse_deg"][0] == pytest.approx(np.sqrt((1 + 9) / 2))
    assert np.isnan(out["mae_deg"][1]) and out["n_frames"].tolist() == [2, 0]


def test_mpjpe_and_pck_by_hand():
    true = np.zeros((1, 4, 3))
    pred = true.copy()
    pred[0, 0] = [0.3, 0.4, 0.0]  # 500 mm off
    pred[0, 1] = [0.0, 0.1, 0.0]  # 100 mm off
    assert M.mpjpe_mm(pred, true) == pytest.approx((500 + 100) / 4)
    assert M.pck_percent(pred, true) == pytest.approx(75.0)  # 3 of 4 within 150 mm
    assert M.pck_percent(pred, true, threshold_mm=50) == pytest.approx(50.0)


def test_pa_mpjpe_ignores_a_similarity_transform_and_not_a_deformation():
    rng = np.random.default_rng(1)
    true = rng.normal(0, 0.3, (5, 17, 3))
    moved = np.stack([1.3 * true[i] @ _rotation(rng.normal(size=3), 1.0 + i).T + rng.normal(size=3)
                      for i in range(5)])
    assert M.mpjpe_mm(moved, true) > 100
    assert M.pa_mpjpe_mm(moved, true) == pytest.approx(0.0, abs=1e-6)
    deformed = moved.copy()
    deformed[:, 0] += [0.05, 0, 0]  # one point 50 mm off (38 mm after undoing the scale): PA cannot undo that
    # the least-squares fit's mean error is at most the RMS of undoing the transform exactly
    assert 0.5 < M.pa_mpjpe_mm(deformed, true) <= 50 / 1.3 / np.sqrt(17) + 1e-9
    mirrored = true * np.array([-1, 1, 1])  # a reflection is not a rotation
    assert M.pa_mpjpe_mm(mirrored, true) > 10


def test_scale_error_by_hand():
    assert M.scale_error(np.array([[1.1, 0.9]]), np.array([[1.0, 1.0]])) == pytest.approx(0.1)
