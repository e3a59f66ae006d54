"""Coordinate error of a trained frame model next to the trivial baseline D3KE must beat.

The baseline always predicts the training subjects' mean coordinates.  Errors are mean absolute
errors in degrees over the rotational coordinates the model predicts (the pelvis's own are
expressed through its predicted orientation instead), where the coordinate mask is 1.
"""

from __future__ import annotations

import numpy as np
import torch

from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning.model import FrameModel
from d3ke_assets.learning.training import choose_device, normalise


def _scored(model: FrameModel) -> np.ndarray:
    rotational = np.asarray(model.layer.rotational, bool)
    scored = np.zeros(len(rotational), bool)
    scored[model.predicted] = True
    return scored & rotational


@torch.no_grad()
def predict_coordinates(model: FrameModel, dataset: FrameDataset, batch_size: int = 64) -> np.ndarray:
    device = choose_device()
    model.to(device).eval()
    out = []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=0)
    for batch in loader:
        out.append(model(normalise(batch["image"].to(device)))["coordinates"].cpu().numpy())
    return np.concatenate(out)


def coordinate_mae_deg(pred: np.ndarray, true: np.ndarray, mask: np.ndarray, scored: np.ndarray) -> float:
    weight = mask[:, scored]
    err = np.degrees(np.abs(pred[:, scored] - true[:, scored]))
    return float((err * weight).sum() / max(weight.sum(), 1.0))


def frame_model_vs_mean_baseline(model: FrameModel, train: FrameDataset, test: FrameDataset) -> dict:
    scored = _scored(model)
    true = test.labels["coordinates"].astype(np.float64)
    mask = test.labels["coordinate_mask"].astype(np.float64)
    mean = train.labels["coordinates"].astype(np.float64).mean(axis=0, keepdims=True)
    model_mae = coordinate_mae_deg(predict_coordinates(model, test), true, mask, scored)
    baseline_mae = coordinate_mae_deg(np.repeat(mean, len(true), 0), true, mask, scored)
    return {"frame_model_coordinate_mae_deg": model_mae, "mean_baseline_coordinate_mae_deg": baseline_mae,
            "ratio_model_to_baseline": model_mae / baseline_mae, "n_test_frames": len(true)}
