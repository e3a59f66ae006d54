"""The D3KE frame model: a torchvision backbone, a 1x1-convolution head, and the skeletal layer.

The head predicts, per image, every coordinate except the root's six (the model's free joint to
ground: the pelvis's in the project's model; mapped into the
coordinate's range by a sigmoid), per-body scale factors (mapped into `SCALE_RANGE`) and the
pelvis orientation as a 6D rotation (Zhou et al. 2019), all in the camera frame.  The skeletal
layer of the generic model turns coordinates and scales into markers and joint centres with the
pelvis at the origin, which the predicted orientation then rotates: pelvis-relative outputs in
the camera frame, as the loss compares them.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from d3ke_assets.biomech.model_files import root_joint
from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.errors import D3keError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCALE_RANGE = (0.7, 1.3)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    features: int  # channels of the last feature map


BACKBONES = {
    "resnext50_32x4d": BackboneSpec("resnext50_32x4d", 2048),  # the paper's
    "efficientnet_v2_s": BackboneSpec("efficientnet_v2_s", 1280),  # the lighter one compared for ROMP
    "resnet18": BackboneSpec("resnet18", 512),  # small, for CPU presets
    "mobilenet_v3_small": BackboneSpec("mobilenet_v3_small", 576),  # smaller still, for tests
}


def build_backbone(name: str, weights_file: str | Path | None = None) -> torch.nn.Module:
    """A torchvision backbone up to its last feature map; weights only from a local file."""
    import torchvision

    if name not in BACKBONES:
        raise D3keError(f"backbone {name!r} does not exist: use one of {', '.join(BACKBONES)}")
    net = getattr(torchvision.models, name)(weights=None)
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise D3keError(f"pretrained weights file {path} does not exist: nothing is downloaded at run time; "
                            f"put the torchvision {name} ImageNet state_dict there, or set no weights file to "
                            f"train from scratch")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as exc:  # weights_only refuses code
            raise D3keError(f"{path}: not a {name} state_dict ({str(exc).splitlines()[0]})") from None
    if name.startswith(("resnet", "resnext")):
        return torch.nn.Sequential(*list(net.children())[:-2])
    return net.features  # efficientnet, mobilenet


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float normalised with the ImageNet statistics torchvision's backbones expect."""
    x = images.float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def rotation_6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(B, 6) -> (B, 3, 3): Gram-Schmidt on two predicted columns (Zhou et al. 2019)."""
    a, b = x[:, :3], x[:, 3:]
    c1 = F.normalize(a, dim=-1)
    c2 = F.normalize(b - (c1 * b).sum(-1, keepdim=True) * c1, dim=-1)
    c3 = torch.cross(c1, c2, dim=-1)
    return torch.stack([c1, c2, c3], dim=-1)


def predicted_coordinates(layer: SkeletalModel) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Indices of the coordinates the head predicts (all but the root's), their lower bounds and spans."""
    names = layer.coordinate_names
    root = set(root_joint(layer.spec).coordinates)
    predicted = [i for i, n in enumerate(names) if n not in root]
    lo = torch.tensor([layer.spec.coordinates[i].range[0] for i in predicted], dtype=torch.float32)
    hi = torch.tensor([layer.spec.coordinates[i].range[1] for i in predicted], dtype=torch.float32)
    return predicted, lo, hi - lo


def head_output_size(layer: SkeletalModel) -> int:
    """Unsquashed outputs per image: the predicted coordinates, 3 scale factors per body, a 6D rotation."""
    return len(predicted_coordinates(layer)[0]) + 3 * layer.n_bodies + 6


class FrameModel(torch.nn.Module):
    def __init__(self, layer: SkeletalModel, backbone: str = "resnet18", weights_file: str | Path | None = None):
        super().__init__()
        self.layer = layer
        self.backbone_name = backbone
        self.backbone = build_backbone(backbone, weights_file)
        self.predicted, lo, span = predicted_coordinates(layer)
        self.register_buffer("range_lo", lo)
        self.register_buffer("range_span", span)
        n_out = self.n_outputs = head_output_size(layer)
        self.head = torch.nn.Conv2d(BACKBONES[backbone].features, n_out, kernel_size=1)
        torch.nn.init.zeros_(self.head.bias)
        with torch.no_grad():  # start at the identity orientation
            self.head.bias[-6:] = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def head_outputs(self, images: torch.Tensor) -> torch.Tensor:
        """(B, n_out) unsquashed head outputs: what the sequence model reads and refines."""
        return self.head(self.backbone(images)).mean(dim=(2, 3)).float()

    def decode(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        return decode_head_outputs(out, self.layer, self.predicted, self.range_lo, self.range_span)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """`images`: (B, 3, S, S) float, normalised.  Returns predictions as the loss expects them."""
        return self.decode(self.head_outputs(images))


def decode_head_outputs(out: torch.Tensor, layer: SkeletalModel, predicted: list[int], range_lo: torch.Tensor,
                        range_span: torch.Tensor) -> dict[str, torch.Tensor]:
    """Unsquashed outputs (B, n_q + 3 * bodies + 6) -> coordinates in range, scale factors in
    `SCALE_RANGE`, the pelvis rotation, and pelvis-relative markers and joint centres (camera frame)."""
    n_q = len(predicted)
    batch = out.shape[0]
    q = torch.zeros(batch, len(layer.coordinate_names), device=out.device)
    q[:, predicted] = range_lo + range_span * torch.sigmoid(out[:, :n_q])
    lo, hi = SCALE_RANGE
    scales = lo + (hi - lo) * torch.sigmoid(out[:, n_q:n_q + 3 * layer.n_bodies])
    scales = scales.view(batch, layer.n_bodies, 3)
    with torch.autocast(out.device.type, enabled=False):  # kinematics in float32 even under AMP
        rotation = rotation_6d_to_matrix(out[:, -6:].float())
        pose = layer(q, scales)  # pelvis at the origin, unrotated
    rotate = lambda p: p @ rotation.transpose(1, 2)  # noqa: E731  (row vectors)
    return {"coordinates": q, "scale_factors": scales, "pelvis_rotation": rotation,
            "markers_m": rotate(pose.markers_m), "joint_centres_m": rotate(pose.joint_centres_m),
            "pelvis_origin_m": torch.zeros(batch, 3, device=out.device)}


def decode_to_numpy(model, head_outputs) -> dict:
    """Predictions (float64 numpy) from stored head outputs of `model` (a FrameModel or anything with `decode`)."""
    with torch.no_grad():
        pred = model.decode(torch.as_tensor(head_outputs))
    return {k: v.cpu().numpy().astype("float64") for k, v in pred.items()}


def camera_frame_targets(batch: dict, camera_R: torch.Tensor, layer: SkeletalModel) -> dict[str, torch.Tensor]:
    """Labels from the frame index (ground frame) as the model predicts them: camera frame,
    pelvis-relative; the pelvis's own coordinates masked out of the coordinate loss."""
    b = camera_R.shape[0]
    markers = batch["markers_m"].view(b, -1, 3).float()
    joints = batch["joint_centres_m"].view(b, -1, 3).float()
    pelvis = batch["pelvis_origin_m"].view(b, 3).float()
    R = camera_R.float()
    to_cam = lambda p: (p - pelvis[:, None, :]) @ R.transpose(1, 2)  # noqa: E731
    mask = batch["coordinate_mask"].float().clone()
    root = set(root_joint(layer.spec).coordinates)
    for i, n in enumerate(layer.coordinate_names):
        if n in root:
            mask[:, i] = 0.0
    return {"coordinates": batch["coordinates"].float(), "coordinate_mask": mask,
            "scale_factors": batch["scale_factors"].view(b, -1, 3).float(),
            "markers_m": to_cam(markers), "joint_centres_m": to_cam(joints),
            "pelvis_origin_m": torch.zeros(b, 3, device=R.device),
            "pelvis_rotation": R @ batch["pelvis_rotation"].view(b, 3, 3).float()}
