"""Left-right mirroring of labels and predictions, so a horizontally flipped frame is scored
against what it shows: a mirrored person.

Mirroring a pose across the body's sagittal plane swaps every `_r`/`_l` coordinate, body and joint
and every `R...`/`L...` marker, and negates the coordinates that turn out of that plane (pelvis
list and rotation, lumbar bending and rotation) and the lateral pelvis translation.  Points are
reflected along one axis: the lateral axis z in OpenSim's ground and body frames, the image's x
axis in the camera frame (a horizontal flip of the picture).  A marker with no partner on the other
side (the project's RBAK) has no mirror image and is left out of mirrored scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from d3ke_assets.errors import D3keError

# rotations about a sagittal-plane axis and the lateral translation change sign in a mirror
OUT_OF_PLANE = ("pelvis_list", "pelvis_rotation", "pelvis_tz", "lumbar_bending", "lumbar_rotation")
CAMERA_X, LATERAL_Z = 0, 2


def _side_swapped(name: str) -> str:
    for a, b in (("_r", "_l"), ("_l", "_r")):
        if name.endswith(a):
            return name[: -len(a)] + b
    return name


def _marker_swapped(name: str) -> str:
    if len(name) > 1 and name[0] in "RL" and name[1:].isupper():
        return ("L" if name[0] == "R" else "R") + name[1:]
    return name


def _permutation(names: list[str], partner) -> tuple[np.ndarray, np.ndarray]:
    index = {n: i for i, n in enumerate(names)}
    perm = np.array([index.get(partner(n), i) for i, n in enumerate(names)])
    paired = np.array([partner(n) in index for n in names])
    return perm, paired


@dataclass(frozen=True)
class Mirror:
    coordinate_perm: np.ndarray
    coordinate_sign: np.ndarray
    body_perm: np.ndarray
    joint_perm: np.ndarray
    marker_perm: np.ndarray
    marker_paired: np.ndarray  # False: no partner, left out of mirrored scores

    @classmethod
    def for_names(cls, coordinates: list[str], bodies: list[str], joints: list[str], markers: list[str]) -> "Mirror":
        c_perm, c_paired = _permutation(coordinates, _side_swapped)
        if not c_paired.all():
            missing = [n for n, ok in zip(coordinates, c_paired) if not ok]
            raise D3keError(f"coordinates without a partner on the other side: {missing}: the model is not "
                            f"left-right symmetric, so flipped frames cannot be scored")
        sign = np.array([-1.0 if n in OUT_OF_PLANE else 1.0 for n in coordinates])
        b_perm, _ = _permutation(bodies, _side_swapped)
        j_perm, _ = _permutation(joints, _side_swapped)
        m_perm, m_paired = _permutation(markers, _marker_swapped)
        return cls(c_perm, sign, b_perm, j_perm, m_perm, m_paired)

    @classmethod
    def for_layer(cls, layer) -> "Mirror":
        return cls.for_names(list(layer.coordinate_names), list(layer.body_names), list(layer.joint_names),
                             list(layer.marker_names))

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
