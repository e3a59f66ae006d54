"""The coordinate error every part of the project reports: training validation, `d3ke quality`
and the evaluation all call `coordinate_mae_deg` with `scored_coordinates`, so their figures
agree on the same predictions.

Scored coordinates are the rotational ones the network predicts: translations are in metres, not
degrees, and the pelvis's rotations are not predicted as coordinates (its orientation is a 6D
rotation, scored through markers and joint centres instead).  Within those, an entry counts where
the label's coordinate mask is 1.
"""

from __future__ import annotations

import numpy as np


def scored_coordinates(model) -> np.ndarray:
    """(C,) bool: the rotational coordinates `model` (a frame or sequence model) predicts."""
    scored = np.zeros(len(model.layer.coordinate_names), bool)
    scored[model.predicted] = True
    return scored & np.asarray(model.layer.rotational, bool)


def coordinate_mae_deg(pred, true, mask, scored: np.ndarray) -> float:
    """Mean absolute error in degrees over the scored coordinates (C,) of the (N, C) entries where
    `mask` is 1; `pred` and `true` in radians (NumPy arrays or CPU tensors).  0 when nothing counts."""
    scored = np.asarray(scored, bool)
    weight = np.asarray(mask, np.float64)[:, scored]
    err = np.degrees(np.abs(np.asarray(pred, np.float64)[:, scored] - np.asarray(true, np.float64)[:, scored]))
    return float((err * weight).sum() / max(weight.sum(), 1.0))
