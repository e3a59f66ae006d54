"""A differentiable copy of an OpenSim model's kinematics, in PyTorch.

`SkeletalModel.from_osim(path)` reads an `.osim` file (OpenSim 4 format; older
files are upgraded by OpenSim first) and maps batched coordinate values and
per-body scale factors to marker positions, joint-centre positions and body
transforms in ground, as OpenSim's forward kinematics of the model scaled by
`Model.scale` with those factors would give them.

What it follows from OpenSim:
- joints: CustomJoint (three rotations about their axes in sequence, each axis
  fixed in the frame the previous rotations produced, then translations along
  axes of the parent frame), PinJoint (z), UniversalJoint (x then y), BallJoint,
  GimbalJoint and FreeJoint (body-fixed x-y-z), SliderJoint (x), WeldJoint;
- offset frames: translation and body-fixed x-y-z orientation on a base body;
- scaling (`Model.scale`): offset-frame translations and marker locations scale
  elementwise with their body's factors; a CustomJoint's translation functions
  are multiplied by `axis . factors` of the parent body;
- locked coordinates stay at their default value; a CoordinateCouplerConstraint
  makes its dependent coordinate a function of its one independent coordinate.

Joint centres are the origins of each joint's child frame in ground.
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from d3ke_assets.biomech.osim_functions import Constant, LinearFunction, OsimFunction, parse_function
from d3ke_assets.errors import D3keError

# joint type -> (rotation axes in sequence, translation axes) of its coordinates, in coordinate order
_FIXED_JOINTS = {
    "PinJoint": ([(0, 0, 1)], []),
    "SliderJoint": ([], [(1, 0, 0)]),
    "UniversalJoint": ([(1, 0, 0), (0, 1, 0)], []),
    "BallJoint": ([(1, 0, 0), (0, 1, 0), (0, 0, 1)], []),
    "GimbalJoint": ([(1, 0, 0), (0, 1, 0), (0, 0, 1)], []),
    "FreeJoint": ([(1, 0, 0), (0, 1, 0), (0, 0, 1)], [(1, 0, 0), (0, 1, 0), (0, 0, 1)]),
    "WeldJoint": ([], []),
}
SUPPORTED_JOINTS = ("CustomJoint", *_FIXED_JOINTS)
OPENSIM_4_VERSION = 40000
CLAMPED_DEFAULT = "false"  # Coordinate's `clamped` when the file leaves it out (OpenSim 4's default)


def euler_xyz_matrix(angles) -> np.ndarray:
    """Body-fixed x-y-z rotation (OpenSim's `orientation` of a frame)."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


@dataclass
class FrameSpec:
    """A frame fixed on a body: rotation and translation (unscaled) in the body's frame."""

    body: str  # "ground" or a body name
    rotation: np.ndarray
    translation_m: np.ndarray


@dataclass
class AxisSpec:
    axis: np.ndarray  # unit vector
    coordinate: str | None
    function: OsimFunction


@dataclass
class JointSpec:
    name: str
    kind: str
    parent: FrameSpec
    child: FrameSpec
    rotations: list[AxisSpec]
    translations: list[AxisSpec]


@dataclass
class CoordinateSpec:
    name: str
    default_value: float
    locked: bool
    rotational: bool
    range: tuple[float, float]
    clamped: bool = True  # OpenSim's IK keeps a clamped coordinate within its range


@dataclass
class CouplerSpec:
    dependent: str
    independent: str
    function: OsimFunction


@dataclass
class ModelSpec:
    path: Path
    name: str
    bodies: list[str]
    joints: list[JointSpec]  # parents before children
    coordinates: list[CoordinateSpec]
    couplers: list[CouplerSpec]
    markers: list[tuple[str, FrameSpec]]  # (name, location frame)


def _text(element: ET.Element | None, default: str = "") -> str:
    return (element.text or "").strip() if element is not None else default


def _vec(element: ET.Element | None, default=(0.0, 0.0, 0.0)) -> np.ndarray:
    txt = _text(element)
    return np.array([float(v) for v in txt.split()], float) if txt else np.array(default, float)


def _objects(parent: ET.Element | None, set_tag: str) -> list[ET.Element]:
    holder = parent.find(set_tag) if parent is not None else None
    objects = holder.find("objects") if holder is not None else None
    return list(objects) if objects is not None else []


class _Parser:
    """Reads the components of an OpenSim 4 model file and resolves socket paths between them."""

    def __init__(self, path: Path, root: ET.Element):
        self.path = path
        model = root.find("Model")
        if model is None:
            raise D3keError(f"{path}: no <Model> element: not an OpenSim model file")
        self.model = model
        self.frames: dict[str, tuple[str, ET.Element | None]] = {"/ground": ("ground", None)}
        for body in _objects(model, "BodySet"):
            self._add(f"/bodyset/{body.get('name')}", "body", body)
            for comp in body.findall("components/*"):
                self._add_frames(f"/bodyset/{body.get('name')}", [comp])
        for joint in _objects(model, "JointSet"):
            self._add_frames(f"/jointset/{joint.get('name')}", list(joint.find("frames") or []))
        for comp in model.findall("components/*"):
            self._add_frames("", [comp])

    def _add(self, key: str, kind: str, element: ET.Element | None):
        self.frames[key] = (kind, element)

    def _add_frames(self, owner: str, elements: list[ET.Element]):
        for el in elements:
            if el.tag == "PhysicalOffsetFrame":
                key = f"{owner}/{el.get('name')}"
                self._add(key, "offset", el)
                self._add_frames(key, el.findall("components/*"))

    def resolve(self, owner: str, ref: str, what: str) -> str:
        ref = ref.strip()
        key = ref if ref.startswith("/") else posixpath.normpath(posixpath.join(owner, ref))
        if key in self.frames:
            return key
        matches = [k for k in self.frames if k.rsplit("/", 1)[-1] == ref.rsplit("/", 1)[-1]]
        if len(matches) == 1:  # older files write paths relative to other owners
            return matches[0]
        raise D3keError(f"{self.path}: {what} refers to frame {ref!r}, which is not in the model")

    def frame(self, key: str) -> FrameSpec:
        """The frame at `key` as a fixed transform on its base body."""
        kind, el = self.frames[key]
        if kind == "ground":
            return FrameSpec("ground", np.eye(3), np.zeros(3))
        if kind == "body":
            return FrameSpec(el.get("name"), np.eye(3), np.zeros(3))
        parent = self.frame(self.resolve(key, _text(el.find("socket_parent")), f"frame {key}"))
        rot = euler_xyz_matrix(_vec(el.find("orientation")))
        return FrameSpec(parent.body, parent.rotation @ rot,
                         parent.translation_m + parent.rotation @ _vec(el.find("translation")))


# OpenSim writes some set elements as `<Owner::SetName>` (e.g. HuntCrossleyForce::ContactParametersSet),
# a tag name strict XML parsers refuse; OpenSim's own reader takes it, and the layer needs none of them.
_TAG_NAME = re.compile(rb"</?[A-Za-z_][\w.:\-]*")


def _parse_osim_xml(path: Path) -> ET.Element:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise D3keError(f"{path}: model file does not exist") from None
    except OSError as exc:
        raise D3keError(f"{path}: cannot read model file ({exc.strerror})") from None
    try:
        return ET.fromstring(_TAG_NAME.sub(lambda m: m.group(0).replace(b"::", b"__"), text))
    except ET.ParseError as exc:
        raise D3keError(f"{path}: not valid XML ({exc}): not an OpenSim model file") from None


def _read_xml(path: Path) -> ET.Element:
    root = _parse_osim_xml(path)
    version = int(root.get("Version", "0") or 0)
    if version < OPENSIM_4_VERSION:
        # Older formats nest joints in bodies: let OpenSim upgrade the file in memory.
        import tempfile

        from d3ke_assets.biomech.opensim_tools import load_model

        model = load_model(path)
        with tempfile.TemporaryDirectory() as tmp:
            upgraded = Path(tmp) / path.name
            model.printToXML(str(upgraded))
            root = _parse_osim_xml(upgraded)
    return root


def _coordinate_specs(joint: ET.Element) -> list[CoordinateSpec]:
    out = []
    for c in joint.findall("coordinates/Coordinate"):
        motion = _text(c.find("motion_type"), "")
        rng = _vec(c.find("range"), (-np.pi, np.pi))
        out.append(CoordinateSpec(c.get("name"), float(_text(c.find("default_value"), "0") or 0),
                                  _text(c.find("locked"), "false").lower() == "true",
                                  motion != "translational", (float(rng[0]), float(rng[1])),
                                  _text(c.find("clamped"), CLAMPED_DEFAULT).lower() == "true"))
    return out


def read_model_spec(path: str | Path) -> ModelSpec:
    """Everything the skeletal layer needs from an `.osim` file; unsupported elements are errors."""
    path = Path(path)
    root = _read_xml(path)
    p = _Parser(path, root)
    model = p.model
    bodies = [b.get("name") for b in _objects(model, "BodySet")]
    coordinates: list[CoordinateSpec] = []
    joints: list[JointSpec] = []
    for j in _objects(model, "JointSet"):
        name, kind = j.get("name"), j.tag
        where = f"{path}: joint {name}"
        if kind not in SUPPORTED_JOINTS:
            raise D3keError(f"{where}: {kind} is not supported by the skeletal layer "
                            f"(supported: {', '.join(SUPPORTED_JOINTS)})")
        owner = f"/jointset/{name}"
        parent = p.frame(p.resolve(owner, _text(j.find("socket_parent_frame")), f"joint {name}"))
        child = p.frame(p.resolve(owner, _text(j.find("socket_child_frame")), f"joint {name}"))
        if child.body == "ground":
            raise D3keError(f"{where}: its child frame is on ground; the skeletal layer needs ground as a parent")
        coords = _coordinate_specs(j)
        coordinates.extend(coords)
        if kind == "CustomJoint":
            axes = []
            for ta in j.findall("SpatialTransform/TransformAxis"):
                names = _text(ta.find("coordinates")).split()
                fn_el = next((c for c in ta if c.tag not in ("coordinates", "axis")), None)
                if len(names) > 1:
                    raise D3keError(f"{where}: {ta.get('name')} depends on {len(names)} coordinates; "
                                    f"only one-coordinate functions are supported")
                fn = parse_function(fn_el, f"{where} {ta.get('name')}") if fn_el is not None else Constant(0.0)
                axis = _vec(ta.find("axis"))
                axes.append(AxisSpec(axis / np.linalg.norm(axis), names[0] if names else None, fn))
            if len(axes) != 6:
                raise D3keError(f"{where}: SpatialTransform has {len(axes)} TransformAxis elements, expected 6")
            rotations, translations = axes[:3], axes[3:]
            for c in coords:  # OpenSim decides rotational/translational from the axes that use it
                c.rotational = any(a.coordinate == c.name for a in rotations)
        else:
            rot_axes, trans_axes = _FIXED_JOINTS[kind]
            if len(coords) != len(rot_axes) + len(trans_axes):
                raise D3keError(f"{where}: {kind} has {len(coords)} coordinates, expected "
                                f"{len(rot_axes) + len(trans_axes)}")
            unit = LinearFunction(1.0, 0.0)
            rotations = [AxisSpec(np.array(a, float), c.name, unit) for a, c in zip(rot_axes, coords)]
            translations = [AxisSpec(np.array(a, float), c.name, unit) for a, c in zip(trans_axes, coords[len(rot_axes):])]
            for c in coords[len(rot_axes):]:
                c.rotational = False
        joints.append(JointSpec(name, kind, parent, child, rotations, translations))
    joints = _parents_first(joints, path)
    couplers = []
    for con in _objects(model, "ConstraintSet"):
        if _text(con.find("isEnforced"), _text(con.find("isDisabled"), "true")).lower() in ("false",):
            continue
        if con.tag != "CoordinateCouplerConstraint":
            raise D3keError(f"{path}: constraint {con.get('name')}: {con.tag} is not supported by the skeletal "
                            f"layer (supported: CoordinateCouplerConstraint)")
        independent = _text(con.find("independent_coordinate_names")).split()
        fn_holder = con.find("coupled_coordinates_function")
        fn_el = next(iter(fn_holder), None) if fn_holder is not None else None
        if len(independent) != 1 or fn_el is None:
            raise D3keError(f"{path}: constraint {con.get('name')}: only one independent coordinate and a "
                            f"one-variable function are supported")
        couplers.append(CouplerSpec(_text(con.find("dependent_coordinate_name")), independent[0],
                                    parse_function(fn_el, f"{path}: constraint {con.get('name')}")))
    markers = []
    for m in _objects(model, "MarkerSet"):
        frame = p.frame(p.resolve(f"/markerset/{m.get('name')}", _text(m.find("socket_parent_frame")),
                                  f"marker {m.get('name')}"))
        loc = frame.translation_m + frame.rotation @ _vec(m.find("location"))
        markers.append((m.get("name"), FrameSpec(frame.body, np.eye(3), loc)))
    names = {c.name for c in coordinates}
    for cp in couplers:
        for n in (cp.dependent, cp.independent):
            if n not in names:
                raise D3keError(f"{path}: a CoordinateCouplerConstraint names coordinate {n}, not in the model")
    return ModelSpec(path, model.get("name") or path.stem, bodies, joints, coordinates, couplers, markers)


def _parents_first(joints: list[JointSpec], path: Path) -> list[JointSpec]:
    placed = {"ground"}
    ordered: list[JointSpec] = []
    pending = list(joints)
    while pending:
        ready = [j for j in pending if j.parent.body in placed]
        if not ready:
            raise D3keError(f"{path}: joints {[j.name for j in pending]} do not connect to ground "
                            f"(a closed loop or a missing parent body)")
        for j in ready:
            ordered.append(j)
            placed.add(j.child.body)
            pending.remove(j)
    return ordered


def _cross_matrix(axis: np.ndarray) -> np.ndarray:
    """K with K v = axis x v."""
    return np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], float)


def _axis_rotation(k: torch.Tensor, k2: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: the axis' cross matrix K and K @ K, (B,) angles -> (B, 3, 3)."""
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    return torch.eye(3, dtype=angle.dtype, device=angle.device) + s * k + (1 - c) * k2


@dataclass
class SkeletalPose:
    """Outputs in ground, metres: markers (B, M, 3), joint centres (B, J, 3), body rotations (B, N, 3, 3)
    (body to ground) and body origins (B, N, 3)."""

    markers_m: torch.Tensor
    joint_centres_m: torch.Tensor
    body_rotations: torch.Tensor
    body_origins_m: torch.Tensor


@dataclass
class JointMotion:
    """How one joint moves what hangs below it, at the current coordinates: `turns`, one per rotation
    axis driven by a coordinate, (axis in ground (B, 3), coordinate index, d angle / d coordinate (B,));
    each turns the subtree about `origin_m` (B, 3), the joint's child-frame origin in ground.  `shifts`,
    one per translation axis driven by a coordinate, (direction in ground (B, 3), coordinate index,
    d distance / d coordinate (B,)), scale included; each moves the subtree along its direction."""

    origin_m: torch.Tensor
    turns: list[tuple[torch.Tensor, int, torch.Tensor]]
    shifts: list[tuple[torch.Tensor, int, torch.Tensor]]


class SkeletalModel(torch.nn.Module):
    """Forward kinematics of an OpenSim model with per-body scale factors, batched and differentiable."""

    def __init__(self, spec: ModelSpec, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.spec = spec
        self.body_names = list(spec.bodies)
        self.coordinate_names = [c.name for c in spec.coordinates]
        self.joint_names = [j.name for j in spec.joints]
        self.marker_names = [m for m, _ in spec.markers]
        dependent = {cp.dependent for cp in spec.couplers}
        self.free_coordinate_names = [c.name for c in spec.coordinates if not c.locked and c.name not in dependent]
        self.rotational = [c.rotational for c in spec.coordinates]
        self._coord_index = {n: i for i, n in enumerate(self.coordinate_names)}
        self._body_index = {n: i for i, n in enumerate(self.body_names)}
        self.functions = torch.nn.ModuleList()
        self._axes = []  # per joint: (rotation terms, translation terms); a term = (axis buffer, coord idx, fn idx)

        def buf(name, value):
            self.register_buffer(name, torch.as_tensor(np.asarray(value, float)), persistent=False)
            return name

        def body_idx(body):
            return -1 if body == "ground" else self._body_index[body]

        self._joints = []
        for k, j in enumerate(spec.joints):
            terms = []
            for kind, axes in (("r", j.rotations), ("t", j.translations)):
                part = []
                for a_i, ax in enumerate(axes):
                    if ax.coordinate is None and ax.function.is_constant_zero():
                        continue  # contributes nothing
                    self.functions.append(ax.function)
                    cidx = self._coord_index[ax.coordinate] if ax.coordinate else None
                    name = buf(f"axis_{k}_{kind}{a_i}", ax.axis)
                    if kind == "r":  # Rodrigues' constant matrices, made once
                        cross = _cross_matrix(ax.axis)
                        buf(f"{name}_k", cross)
                        buf(f"{name}_k2", cross @ cross)
                    part.append((name, cidx, len(self.functions) - 1))
                terms.append(part)
            self._joints.append(dict(
                parent_body=body_idx(j.parent.body), child_body=body_idx(j.child.body),
                parent_R=buf(f"parent_R_{k}", j.parent.rotation), parent_p=buf(f"parent_p_{k}", j.parent.translation_m),
                child_R=buf(f"child_R_{k}", j.child.rotation), child_p=buf(f"child_p_{k}", j.child.translation_m),
                rotations=terms[0], translations=terms[1], custom=j.kind == "CustomJoint"))
        self.register_buffer("marker_locations_m", torch.as_tensor(
            np.array([f.translation_m for _, f in spec.markers], float).reshape(-1, 3)), persistent=False)
        self._marker_body = [body_idx(f.body) for _, f in spec.markers]
        if any(b < 0 for b in self._marker_body):
            ground = [m for m, f in spec.markers if f.body == "ground"]
            raise D3keError(f"{spec.path}: markers {ground} are on ground; the skeletal layer needs markers on bodies")
        self.register_buffer("marker_body_index", torch.as_tensor(self._marker_body, dtype=torch.long), persistent=False)
        self.register_buffer("default_values", torch.as_tensor(
            [c.default_value for c in spec.coordinates], dtype=torch.float64), persistent=False)
        self._locked = [i for i, c in enumerate(spec.coordinates) if c.locked]
        self._couplers = []
        for cp in spec.couplers:
            self.functions.append(cp.function)
            self._couplers.append((self._coord_index[cp.dependent], self._coord_index[cp.independent],
                                   len(self.functions) - 1))
        self.to(dtype)

    @classmethod
    def from_osim(cls, path: str | Path, dtype: torch.dtype = torch.float32,
                  device: str | torch.device | None = None) -> "SkeletalModel":
        model = cls(read_model_spec(path), dtype)
        return model.to(device) if device is not None else model

    @property
    def n_bodies(self) -> int:
        return len(self.body_names)

    def joint_moves_body(self) -> np.ndarray:
        """(joints, bodies) bool: joint k (in `joint_names` order) lies on body b's path to ground."""
        moves = np.zeros((len(self._joints), self.n_bodies), bool)
        for k, j in enumerate(self._joints):  # parents first: a parent body's row is complete
            if j["parent_body"] >= 0:
                moves[:, j["child_body"]] = moves[:, j["parent_body"]]
            moves[k, j["child_body"]] = True
        return moves

    def full_coordinates(self, q: torch.Tensor) -> torch.Tensor:
        """Locked coordinates at their default, coupled ones from their independent coordinate."""
        if not self._locked and not self._couplers:
            return q
        q = q.clone()
        for i in self._locked:
            q[:, i] = self.default_values[i].to(q.dtype)
        for dep, ind, f in self._couplers:
            q[:, dep] = self.functions[f](q[:, ind])
        return q

    def forward(self, q: torch.Tensor, scale_factors: torch.Tensor | None = None,
                motion: list[JointMotion] | None = None) -> SkeletalPose:
        """`q`: (B, coordinates) in radians / metres, in `coordinate_names` order.
        `scale_factors`: (B, bodies, 3) in `body_names` order; ones when omitted.
        `motion`: when a list, each joint's `JointMotion` is appended to it (inverse kinematics builds
        its Jacobian from them)."""
        if q.ndim != 2 or q.shape[1] != len(self.coordinate_names):
            raise D3keError(f"skeletal layer of {self.spec.path.name}: expected coordinates of shape "
                            f"(batch, {len(self.coordinate_names)}), got {tuple(q.shape)}")
        batch, dtype, device = q.shape[0], q.dtype, q.device
        if scale_factors is None:
            scale_factors = torch.ones(batch, self.n_bodies, 3, dtype=dtype, device=device)
        elif scale_factors.shape != (batch, self.n_bodies, 3):
            raise D3keError(f"skeletal layer of {self.spec.path.name}: expected scale factors of shape "
                            f"({batch}, {self.n_bodies}, 3), got {tuple(scale_factors.shape)}")
        else:
            scale_factors = scale_factors.to(dtype)
        q = self.full_coordinates(q)
        eye = torch.eye(3, dtype=dtype, device=device).expand(batch, 3, 3)
        zero = torch.zeros(batch, 3, dtype=dtype, device=device)
        rots: list[torch.Tensor | None] = [None] * self.n_bodies
        origins: list[torch.Tensor | None] = [None] * self.n_bodies
        centres = []
        for j in self._joints:
            pb, cb = j["parent_body"], j["child_body"]
            g_R, g_p = (eye, zero) if pb < 0 else (rots[pb], origins[pb])
            p_scale = None if pb < 0 else scale_factors[:, pb]
            parent_p = getattr(self, j["parent_p"]).expand(batch, 3)
            if p_scale is not None:
                parent_p = parent_p * p_scale
            f_R = g_R @ getattr(self, j["parent_R"])
            f_p = g_p + (g_R @ parent_p.unsqueeze(-1)).squeeze(-1)
            # joint motion X_FM
            m_R = None
            turns, shifts = [], []
            for axis_name, ci, fi in j["rotations"]:
                axis = getattr(self, axis_name)
                x = q[:, ci] if ci is not None else torch.zeros(batch, dtype=dtype, device=device)
                angle = self.functions[fi](x)
                if motion is not None and ci is not None:  # the axis in ground: after the earlier rotations
                    turns.append(((f_R if m_R is None else f_R @ m_R) @ axis, ci, self.functions[fi].derivative(x)))
                r = _axis_rotation(getattr(self, f"{axis_name}_k"), getattr(self, f"{axis_name}_k2"), angle)
                m_R = r if m_R is None else m_R @ r
            m_p = zero
            for axis_name, ci, fi in j["translations"]:
                axis = getattr(self, axis_name)
                x = q[:, ci] if ci is not None else torch.zeros(batch, dtype=dtype, device=device)
                value = self.functions[fi](x)
                factor = None
                if p_scale is not None and j["custom"]:  # Model.scale multiplies CustomJoint translation functions by axis . parent factors
                    factor = p_scale @ axis
                    value = value * factor
                if motion is not None and ci is not None:
                    rate = self.functions[fi].derivative(x)
                    shifts.append((f_R @ axis, ci, rate if factor is None else rate * factor))
                m_p = m_p + value[:, None] * axis
            m_origin = f_p + (f_R @ m_p.unsqueeze(-1)).squeeze(-1)
            if motion is not None:
                motion.append(JointMotion(m_origin, turns, shifts))
            m_orient = f_R if m_R is None else f_R @ m_R
            centres.append(m_origin)
            # child body: X_GB = X_GM * inverse(X_BM), with X_BM's translation scaled by the child's factors
            c_R = getattr(self, j["child_R"])
            c_p = getattr(self, j["child_p"]) * scale_factors[:, cb]
            b_R = m_orient @ c_R.transpose(0, 1)
            b_p = m_origin - (b_R @ c_p.unsqueeze(-1)).squeeze(-1)
            rots[cb], origins[cb] = b_R, b_p
        missing = [self.body_names[i] for i, r in enumerate(rots) if r is None]
        if missing:
            raise D3keError(f"{self.spec.path}: bodies {missing} have no joint")
        body_R = torch.stack(rots, 1)
        body_p = torch.stack(origins, 1)
        idx = self.marker_body_index
        loc = self.marker_locations_m * scale_factors[:, idx]
        markers = (body_R[:, idx] @ loc.unsqueeze(-1)).squeeze(-1) + body_p[:, idx]
        return SkeletalPose(markers, torch.stack(centres, 1), body_R, body_p)
