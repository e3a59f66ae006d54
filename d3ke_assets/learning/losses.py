"""D3KE's training loss: every term anatomically consistent through the skeletal layer.

    L = w_joint * L_joint + w_marker * L_marker + w_body * L_body + w_angle * L_angle

- L_joint: L1 between pelvis-relative joint centres (metres), mean over joints and axes;
- L_marker: the same on markers, each marker weighted (weights normalised to mean 1), over the
  markers `marker_mask` keeps (all but a mirrored sample's markers without a partner);
- L_body: SmoothL1 (beta 0.05) on per-body scale factors;
- L_angle: SmoothL1 (beta 5 degrees) on coordinates in degrees (rotational) or centimetres
  (translational), masked by the coordinate mask: masked entries contribute nothing, and the
  mean is over the unmasked ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    joint: float = 1.0
    marker: float = 2.0
    body: float = 0.1
    angle: float = 0.06

    def as_dict(self) -> dict:
        return asdict(self)


BODY_BETA = 0.05
ANGLE_BETA_DEG = 5.0


def pelvis_relative(points: torch.Tensor, pelvis: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) points minus the (B, 3) pelvis origin."""
    return points - pelvis[:, None, :]


def joint_loss(pred: torch.Tensor, true: torch.Tensor, pred_pelvis: torch.Tensor,
               true_pelvis: torch.Tensor) -> torch.Tensor:
    return (pelvis_relative(pred, pred_pelvis) - pelvis_relative(true, true_pelvis)).abs().mean()


def marker_loss(pred: torch.Tensor, true: torch.Tensor, pred_pelvis: torch.Tensor, true_pelvis: torch.Tensor,
                marker_weights: torch.Tensor | None = None, marker_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`marker_mask` (B, M): 0 leaves a marker of a sample out (a mirrored sample's marker without a
    partner); the mean is then over the markers kept."""
    err = (pelvis_relative(pred, pred_pelvis) - pelvis_relative(true, true_pelvis)).abs().mean(dim=-1)  # (B, M)
    if marker_weights is not None:
        err = err * (marker_weights / marker_weights.mean())
    if marker_mask is None:
        return err.mean()
    mask = marker_mask.to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


def body_loss(pred_scales: torch.Tensor, true_scales: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(pred_scales, true_scales, beta=BODY_BETA)


def angle_loss(pred_q: torch.Tensor, true_q: torch.Tensor, mask: torch.Tensor,
               rotational: torch.Tensor) -> torch.Tensor:
    """Coordinates in degrees (rotational) or cm (translational); mask 0 drops an entry entirely."""
    unit = torch.where(rotational, torch.full_like(rotational, 180.0 / math.pi, dtype=pred_q.dtype),
                       torch.full_like(rotational, 100.0, dtype=pred_q.dtype))
    per = F.smooth_l1_loss(pred_q * unit, true_q * unit, beta=ANGLE_BETA_DEG, reduction="none")
    mask = mask.to(per.dtype)
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


def d3ke_loss(pred: dict, true: dict, weights: LossWeights, rotational: torch.Tensor,
              marker_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`pred`/`true`: dicts with coordinates (B, C), scale_factors (B, N, 3), markers_m (B, M, 3),
    joint_centres_m (B, J, 3), pelvis_origin_m (B, 3); `true` also has coordinate_mask (B, C)."""
    terms = {
        "joint": joint_loss(pred["joint_centres_m"], true["joint_centres_m"], pred["pelvis_origin_m"],
                            true["pelvis_origin_m"]),
        "marker": marker_loss(pred["markers_m"], true["markers_m"], pred["pelvis_origin_m"],
                              true["pelvis_origin_m"], marker_weights, true.get("marker_mask")),
        "body": body_loss(pred["scale_factors"], true["scale_factors"]),
        "angle": angle_loss(pred["coordinates"], true["coordinates"], true["coordinate_mask"], rotational),
    }
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    return total, terms
