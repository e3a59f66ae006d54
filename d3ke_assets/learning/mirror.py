"""Left-right mirroring of labels and predictions, so a horizontally flipped frame is scored
against what it shows: a mirrored person.

Mirroring a pose across the body's sagittal plane swaps every left/right pair of coordinates, bodies,
joints and markers and negates the coordinates whose motion a mirror reverses.  Pairs come from a
mapping (the model's `D3KE_MIRROR_MAP`, name -> partner) and else from the usual naming: a `_r`/`_l`
suffix, an `r_`/`l_` prefix, or an `R`/`L` prefix before a capital, digit, `.` or `_` (`RASI`,
`R.Knee.Lat`, `RKJC`); a name is paired only when its partner exists.  A name without a side is
its own mirror image.  Given the skeletal layer, the signs come from the joint axes: a coordinate
keeps its sign where its partner's axis is its own axis mirrored (a rotation axis (x, y, z) mirrors
to (-x, -y, z), a translation to (x, y, -z)), so a central rotation about a sagittal-plane axis
(pelvis list and rotation, lumbar bending and rotation) and a lateral translation change sign.
Points are reflected along one axis: the lateral axis z in OpenSim's ground and body frames, the
image's x axis in the camera frame (a horizontal flip of the picture).  A marker with no partner on
the other side (the project's RBAK) has no mirror image and is left out of mirrored scores.  A
coordinate with a side but no partner, or whose partner's axis is not its mirror image, makes
mirroring unavailable (a one-line error) rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from d3ke_assets.errors import D3keError

# rotations about a sagittal-plane axis and the lateral translation change sign in a mirror (names only)
OUT_OF_PLANE = ("pelvis_list", "pelvis_rotation", "pelvis_tz", "lumbar_bending", "lumbar_rotation")
CAMERA_X, LATERAL_Z = 0, 2
SIDES = (("R", "L"), ("L", "R"))


def _named_partner(name: str) -> str | None:
    """The other side's name by the usual naming rules, or None for a name without a side."""
    for a, b in (("_r", "_l"), ("_l", "_r"), ("_R", "_L"), ("_L", "_R")):
        if name.endswith(a):
            return name[: -len(a)] + b
    for a, b in (("r_", "l_"), ("l_", "r_")):
        if name.startswith(a):
            return b + name[len(a):]
    for a, b in SIDES:
        if len(name) > 1 and name[0] == a and (name[1].isupper() or name[1].isdigit() or name[1] in "._"):
            return b + name[1:]
    return None


def _partners(names: list[str], mapping: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Per name, its partner's index (itself for a name without a side) and whether it has one."""
    index = {n: i for i, n in enumerate(names)}
    both = {**{v: k for k, v in mapping.items()}, **mapping}
    perm, paired = [], []
    for i, n in enumerate(names):
        other = both.get(n) or _named_partner(n)
        if other is None:
            perm.append(i)
            paired.append(True)
        else:
            perm.append(index.get(other, i))
            paired.append(other in index)
    return np.array(perm, int), np.array(paired, bool)


def _coordinate_axes(layer) -> dict[str, tuple[str, np.ndarray]]:
    """coordinate -> ("r" or "t", its first axis in the parent's frame) from the skeletal layer's joints."""
    out: dict[str, tuple[str, np.ndarray]] = {}
    for j in layer.spec.joints:
        for kind, axes in (("r", j.rotations), ("t", j.translations)):
            for ax in axes:
                if ax.coordinate and ax.coordinate not in out:
                    out[ax.coordinate] = (kind, j.parent.rotation @ np.asarray(ax.axis, float))
    return out


def _axis_signs(coordinates: list[str], perm: np.ndarray, layer) -> np.ndarray:
    axes = _coordinate_axes(layer)
    mirror_rot, mirror_trans = np.array([-1.0, -1.0, 1.0]), np.array([1.0, 1.0, -1.0])
    signs = []
    for i, n in enumerate(coordinates):
        partner = coordinates[perm[i]]
        if n not in axes or partner not in axes:
            signs.append(1.0)  # coupled or locked: follows its independent coordinate
            continue
        kind, a = axes[n]
        _, b = axes[partner]
        d = float(b @ ((mirror_rot if kind == "r" else mirror_trans) * a))
        if abs(d) < 0.9:
            raise D3keError(f"coordinate {n}: the axis of its partner {partner} is not its mirror image, so "
                            f"flipped frames cannot be scored: give the pairs in a mirror map (D3KE_MIRROR_MAP)")
        signs.append(float(np.sign(d)))
    return np.array(signs)


@dataclass(frozen=True)
class Mirror:
    coordinate_perm: np.ndarray
    coordinate_sign: np.ndarray
    body_perm: np.ndarray
    joint_perm: np.ndarray
    marker_perm: np.ndarray
    marker_paired: np.ndarray  # False: no partner, left out of mirrored scores

    @classmethod
    def for_names(cls, coordinates: list[str], bodies: list[str], joints: list[str], markers: list[str],
                  mapping: Mapping[str, str] | None = None, layer=None) -> "Mirror":
        """Signs from the layer's axes when given, else from the project's names (`OUT_OF_PLANE`)."""
        mapping = mapping or {}
        c_perm, c_paired = _partners(coordinates, mapping)
        if not c_paired.all():
            missing = [n for n, ok in zip(coordinates, c_paired) if not ok]
            raise D3keError(f"coordinates without a partner on the other side: {missing}: mirroring is unavailable "
                            f"(the model is not left-right symmetric), so flipped frames cannot be scored; if they "
                            f"have partners under other names, give them in a mirror map (D3KE_MIRROR_MAP)")
        sign = (_axis_signs(coordinates, c_perm, layer) if layer is not None
                else np.array([-1.0 if n in OUT_OF_PLANE else 1.0 for n in coordinates]))
        b_perm, _ = _partners(bodies, mapping)
        j_perm, _ = _partners(joints, mapping)
        m_perm, m_paired = _partners(markers, mapping)
        return cls(c_perm, sign, b_perm, j_perm, m_perm, m_paired)

    @classmethod
    def for_layer(cls, layer, mapping: Mapping[str, str] | None = None) -> "Mirror":
        """The mirror of a skeletal layer's model; `mapping` defaults to the model folder's mirror map."""
        if mapping is None:
            from d3ke_assets.biomech.model_files import ModelFiles

            mapping = ModelFiles.for_path(layer.spec.path).mirror_map
        return cls.for_names(list(layer.coordinate_names), list(layer.body_names), list(layer.joint_names),
                             list(layer.marker_names), mapping, layer)

    def coordinates(self, q: np.ndarray) -> np.ndarray:
        return q[..., self.coordinate_perm] * self.coordinate_sign

    def scale_factors(self, s: np.ndarray) -> np.ndarray:
        """(..., bodies, 3): a body's mirror image has its partner's proportions."""
        return s[..., self.body_perm, :]

    @staticmethod
    def _reflect(points: np.ndarray, axis: int) -> np.ndarray:
        out = points.copy()
        out[..., axis] *= -1
        return out

    def markers(self, p: np.ndarray, axis: int = CAMERA_X) -> np.ndarray:
        return self._reflect(p[..., self.marker_perm, :], axis)

    def joint_centres(self, p: np.ndarray, axis: int = CAMERA_X) -> np.ndarray:
        return self._reflect(p[..., self.joint_perm, :], axis)

    @staticmethod
    def pelvis_rotation(r: np.ndarray) -> np.ndarray:
        """Camera-frame pelvis orientation (..., 3, 3) of the mirrored person: the camera's x and the
        body's lateral z reflected (a proper rotation again)."""
        out = r.copy()
        out[..., CAMERA_X, :] *= -1
        out[..., :, LATERAL_Z] *= -1
        return out

    def camera_labels(self, labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Camera-frame labels (coordinates, coordinate_mask, scale_factors, markers_m,
        joint_centres_m, pelvis_rotation) of the horizontally flipped picture."""
        out = dict(labels)
        out["coordinates"] = self.coordinates(labels["coordinates"])
        out["coordinate_mask"] = labels["coordinate_mask"][..., self.coordinate_perm]
        out["scale_factors"] = self.scale_factors(labels["scale_factors"])
        out["markers_m"] = self.markers(labels["markers_m"])
        out["joint_centres_m"] = self.joint_centres(labels["joint_centres_m"])
        out["pelvis_rotation"] = self.pelvis_rotation(labels["pelvis_rotation"])
        return out

    def camera_targets(self, targets: dict, mirrored):
        """Training targets (torch tensors, camera frame, pelvis-relative: `learning.model.camera_frame_targets`)
        with the rows where `mirrored` (B,) is true mirrored as `camera_labels` mirrors labels.  A marker
        without a partner has no mirror image: `marker_mask` (B, M) leaves it out of those rows' loss."""
        import torch

        q = targets["coordinates"]
        device, dtype = q.device, q.dtype
        rows = torch.as_tensor(mirrored, device=device, dtype=torch.bool)
        index = lambda perm: torch.as_tensor(perm, device=device, dtype=torch.long)  # noqa: E731
        x_reflect = torch.tensor([-1.0, 1.0, 1.0], device=device, dtype=dtype)
        z_reflect = torch.tensor([1.0, 1.0, -1.0], device=device, dtype=dtype)
        mirrored_values = {
            "coordinates": q[:, index(self.coordinate_perm)]
            * torch.as_tensor(self.coordinate_sign, device=device, dtype=dtype),
            "coordinate_mask": targets["coordinate_mask"][:, index(self.coordinate_perm)],
            "scale_factors": targets["scale_factors"][:, index(self.body_perm)],
            "markers_m": targets["markers_m"][:, index(self.marker_perm)] * x_reflect,
            "joint_centres_m": targets["joint_centres_m"][:, index(self.joint_perm)] * x_reflect,
            "pelvis_rotation": targets["pelvis_rotation"] * (x_reflect[:, None] * z_reflect[None, :]),
        }
        out = dict(targets)
        for key, value in mirrored_values.items():
            pick = rows.view(-1, *([1] * (value.dim() - 1)))
            out[key] = torch.where(pick, value, targets[key])
        paired = torch.as_tensor(self.marker_paired, device=device)
        mask = targets.get("marker_mask", torch.ones(q.shape[0], len(self.marker_perm), device=device, dtype=dtype))
        out["marker_mask"] = torch.where(rows[:, None] & ~paired[None, :], torch.zeros_like(mask), mask)
        return out

