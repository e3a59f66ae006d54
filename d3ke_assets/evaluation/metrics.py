"""Pose and kinematics metrics, as the 3D human pose literature and D3KE report them.

Points are (N, K, 3) arrays in metres, compared pelvis-relative; results are in millimetres or
degrees as their names say.  Coordinates are (N, C) in radians (rotational) with a (N, C) mask of
the entries that count; the headline coordinate error is `coordinate_mae_deg` over
`scored_coordinates` (defined in `learning.metrics`).
"""

from __future__ import annotations

import numpy as np

# the coordinate error training validation and `d3ke quality` report too: one definition, in learning
from d3ke_assets.learning.metrics import coordinate_mae_deg, scored_coordinates  # noqa: F401 (re-exported)

PCK_THRESHOLD_MM = 150.0


def _masked_mean(values: np.ndarray, mask: np.ndarray, axis=None) -> np.ndarray:
    w = mask.astype(np.float64)
    return (values * w).sum(axis=axis) / np.maximum(w.sum(axis=axis), 1e-12)


def coordinate_errors_deg(pred: np.ndarray, true: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Per-coordinate MAE and RMSE in degrees over the frames where the mask is 1 (NaN where none is)."""
    err = np.degrees(pred.astype(np.float64) - true.astype(np.float64))
    counted = mask.astype(bool)
    n = counted.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.where(n > 0, (np.abs(err) * counted).sum(axis=0) / n, np.nan)
        rmse = np.where(n > 0, np.sqrt((err ** 2 * counted).sum(axis=0) / n), np.nan)
    return {"mae_deg": mae, "rmse_deg": rmse, "n_frames": n}


def position_errors_mm(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(N, K) distances between predicted and true points, in millimetres."""
    return 1000 * np.linalg.norm(pred - true, axis=-1)


def mpjpe_mm(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean per-joint position error (the points already pelvis-relative)."""
    return float(position_errors_mm(pred, true).mean())


def similarity_align(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """`pred` (N, K, 3) moved onto `true` per frame by the best rotation, uniform scale and
    translation (Umeyama 1991), as PA-MPJPE does."""
    mu_p, mu_t = pred.mean(axis=1, keepdims=True), true.mean(axis=1, keepdims=True)
    p, t = pred - mu_p, true - mu_t
    cov = np.einsum("nki,nkj->nij", t, p) / pred.shape[1]  # (N, 3, 3): sum t p^T
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((len(pred), 3))
    fix[:, 2] = d  # no reflections
    rot = u @ (fix[:, :, None] * vt)
    var_p = (p ** 2).sum(axis=(1, 2)) / pred.shape[1]
    scale = (s * fix).sum(axis=1) / np.maximum(var_p, 1e-12)
    return scale[:, None, None] * np.einsum("nij,nkj->nki", rot, p) + mu_t


def pa_mpjpe_mm(pred: np.ndarray, true: np.ndarray) -> float:
    return mpjpe_mm(similarity_align(pred, true), true)


def pck_percent(pred: np.ndarray, true: np.ndarray, threshold_mm: float = PCK_THRESHOLD_MM) -> float:
    """Share of points within `threshold_mm` of the truth."""
    return float(100 * (position_errors_mm(pred, true) <= threshold_mm).mean())


def scale_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error of the per-body scale factors (unitless)."""
    return float(np.abs(pred - true).mean())
