"""The project's generic full-body OpenSim model, built by code.

Conventions follow OpenSim's gait models (gait2392, Hamner 2010): ground and
body frames with x anterior, y up, z to the right; coordinate names such as
`hip_flexion_r`, `knee_angle_r` (negative is flexion), `pelvis_tilt`; left-side
axes are the right-side axes mirrored through the sagittal plane.  Dimensions
are those of an adult male of about 1.75 m and 75 kg; subjects are made by
scaling this model with OpenSim's ScaleTool machinery.

Each body carries ellipsoids (OpenSim `Ellipsoid` geometry on offset frames)
that cover its markers, so the model can be drawn and rendered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODEL_NAME = "d3ke_fullbody"
GENERIC_HEIGHT_M = 1.75
GENERIC_MASS_KG = 75.0
# Height of the pelvis origin above the floor in the default standing pose.
STANDING_PELVIS_HEIGHT_M = 0.964

Vec = tuple[float, float, float]


@dataclass(frozen=True)
class Coordinate:
    name: str
    axis: Vec
    range_deg: tuple[float, float] | None = None  # rotational
    range_m: tuple[float, float] | None = None  # translational
    default: float = 0.0  # radians or metres

    @property
    def rotational(self) -> bool:
        return self.range_deg is not None

    @property
    def range(self) -> tuple[float, float]:
        if self.range_deg is not None:
            return (math.radians(self.range_deg[0]), math.radians(self.range_deg[1]))
        assert self.range_m is not None
        return self.range_m


@dataclass(frozen=True)
class Ellipsoid:
    centre: Vec  # in the body frame, m
    radii: Vec  # along the body axes, m


@dataclass(frozen=True)
class BodySpec:
    name: str
    parent: str
    joint: str
    location_in_parent: Vec
    mass_kg: float
    rotations: tuple[Coordinate, ...]
    translations: tuple[Coordinate, ...] = ()
    ellipsoids: tuple[Ellipsoid, ...] = ()
    markers: dict[str, Vec] = field(default_factory=dict)
    segment: str = "trunk"  # colour group for rendering: trunk, head, right, left


def _mirror_axis(axis: Vec) -> Vec:
    """Right-side rotation axis -> left side (mirror z, keep the rotation's sense)."""
    return (-axis[0], -axis[1], axis[2])


def _mirror_point(p: Vec) -> Vec:
    return (p[0], p[1], -p[2])


def _side_specs(side: str) -> list[BodySpec]:
    """Leg and arm bodies for one side, written for the right side and mirrored."""
    r = side == "r"
    ax = (lambda a: a) if r else _mirror_axis
    pt = (lambda p: p) if r else _mirror_point
    s = side
    S = side.upper()

    def rot(name: str, axis: Vec, lo: float, hi: float, default: float = 0.0) -> Coordinate:
        return Coordinate(f"{name}_{s}", ax(axis), range_deg=(lo, hi), default=math.radians(default))

    def ell(c: Vec, rad: Vec) -> Ellipsoid:
        return Ellipsoid(pt(c), rad)

    def mk(d: dict[str, Vec]) -> dict[str, Vec]:
        return {f"{S}{k}": pt(v) for k, v in d.items()}

    group = "right" if r else "left"
    return [
        BodySpec(f"femur_{s}", "pelvis", f"hip_{s}", pt((-0.0707, -0.0661, 0.0835)), 9.30,
                 (rot("hip_flexion", (0, 0, 1), -30, 120),
                  rot("hip_adduction", (1, 0, 0), -50, 30),
                  rot("hip_rotation", (0, 1, 0), -40, 40)),
                 ellipsoids=(ell((0, -0.20, 0), (0.075, 0.23, 0.075)),
                             ell((0, -0.39, 0), (0.06, 0.06, 0.06))),
                 markers=mk({"THI": (0.01, -0.22, 0.07), "KNE": (0.0, -0.40, 0.05),
                             "KNM": (0.0, -0.40, -0.05)}),
                 segment=group),
        BodySpec(f"tibia_{s}", f"femur_{s}", f"knee_{s}", pt((-0.0045, -0.396, 0)), 3.70,
                 (rot("knee_angle", (0, 0, 1), -120, 10),),
                 ellipsoids=(ell((0, -0.21, 0), (0.055, 0.24, 0.055)),
                             ell((0, -0.42, 0), (0.045, 0.045, 0.06))),
                 markers=mk({"TIB": (0.0, -0.22, 0.05), "ANK": (-0.005, -0.42, 0.053),
                             "MED": (0.006, -0.41, -0.038)}),
                 segment=group),
        BodySpec(f"talus_{s}", f"tibia_{s}", f"ankle_{s}", pt((0, -0.43, 0)), 0.10,
                 (rot("ankle_angle", (-0.10501355, -0.17402245, 0.97912632), -40, 30),),
                 segment=group),
        BodySpec(f"calcn_{s}", f"talus_{s}", f"subtalar_{s}", pt((-0.04877, -0.04195, 0.00792)), 1.25,
                 (rot("subtalar_angle", (0.78717961, 0.60474746, -0.12094949), -20, 20),),
                 ellipsoids=(ell((0.09, 0.01, 0.0), (0.13, 0.04, 0.055)),),
                 markers=mk({"HEE": (-0.02, 0.02, 0.0), "MT5": (0.15, 0.005, 0.04)}),
                 segment=group),
        BodySpec(f"toes_{s}", f"calcn_{s}", f"mtp_{s}", pt((0.1788, -0.002, 0.00108)), 0.22,
                 (rot("mtp_angle", (-0.5809544, 0.0, 0.81393611), -30, 30),),
                 ellipsoids=(ell((0.03, 0.0, 0.0), (0.045, 0.025, 0.045)),),
                 markers=mk({"TOE": (0.03, 0.015, 0.0)}),
                 segment=group),
        BodySpec(f"humerus_{s}", "torso", f"acromial_{s}", pt((0.003155, 0.3715, 0.17)), 2.00,
                 (rot("arm_flex", (0, 0, 1), -90, 180),
                  rot("arm_add", (1, 0, 0), -180, 90),
                  rot("arm_rot", (0, 1, 0), -90, 90)),
                 ellipsoids=(ell((0, -0.14, 0), (0.05, 0.17, 0.05)),
                             ell((0.01, -0.28, 0), (0.045, 0.045, 0.05))),
                 markers=mk({"UPA": (-0.01, -0.15, 0.045), "ELB": (0.005, -0.28, 0.035),
                             "ELM": (0.005, -0.28, -0.045)}),
                 segment=group),
        BodySpec(f"ulna_{s}", f"humerus_{s}", f"elbow_{s}", pt((0.013144, -0.286273, -0.009595)), 0.60,
                 (rot("elbow_flex", (0.04940001, 0.03660001, 0.99810825), 0, 150),),
                 ellipsoids=(ell((0, -0.12, 0.015), (0.04, 0.15, 0.045)),),
                 markers=mk({"WRB": (-0.015, -0.245, 0.0)}),
                 segment=group),
        BodySpec(f"radius_{s}", f"ulna_{s}", f"radioulnar_{s}", pt((-0.006727, -0.013007, 0.026083)), 0.60,
                 (rot("pro_sup", (-0.01716099, 0.99266564, -0.11966796), 0, 90, default=0),),
                 ellipsoids=(ell((0, -0.12, 0.0), (0.035, 0.13, 0.035)),
                             ell((-0.005, -0.23, 0.015), (0.035, 0.035, 0.045))),
                 markers=mk({"FRM": (0.0, -0.12, 0.03), "WRA": (0.01, -0.235, 0.03)}),
                 segment=group),
        BodySpec(f"hand_{s}", f"radius_{s}", f"radius_hand_{s}", pt((-0.008797, -0.235841, 0.01361)), 0.45,
                 (rot("wrist_flex", (0, 0, 1), -70, 70),
                  rot("wrist_dev", (1, 0, 0), -25, 35)),
                 ellipsoids=(ell((0, -0.08, 0), (0.025, 0.09, 0.045)),),
                 markers=mk({"FIN": (0.0, -0.13, 0.0)}),
                 segment=group),
    ]


def body_specs() -> list[BodySpec]:
    """All bodies in parent-before-child order."""
    pelvis = BodySpec(
        "pelvis", "ground", "ground_pelvis", (0, 0, 0), 11.80,
        (Coordinate("pelvis_tilt", (0, 0, 1), range_deg=(-90, 90)),
         Coordinate("pelvis_list", (1, 0, 0), range_deg=(-90, 90)),
         # a full turn: subjects walk around the capture volume
         Coordinate("pelvis_rotation", (0, 1, 0), range_deg=(-180, 180))),
        translations=(Coordinate("pelvis_tx", (1, 0, 0), range_m=(-5, 5)),
                      Coordinate("pelvis_ty", (0, 1, 0), range_m=(-1, 2), default=STANDING_PELVIS_HEIGHT_M),
                      Coordinate("pelvis_tz", (0, 0, 1), range_m=(-5, 5))),
        ellipsoids=(Ellipsoid((-0.05, -0.02, 0), (0.13, 0.11, 0.16)),),
        markers={"RASI": (0.015, -0.005, 0.128), "LASI": (0.015, -0.005, -0.128),
                 "RPSI": (-0.155, 0.03, 0.045), "LPSI": (-0.155, 0.03, -0.045)},
    )
    torso = BodySpec(
        "torso", "pelvis", "back", (-0.1007, 0.0815, 0), 26.80,
        (Coordinate("lumbar_extension", (0, 0, 1), range_deg=(-90, 90)),
         Coordinate("lumbar_bending", (1, 0, 0), range_deg=(-90, 90)),
         Coordinate("lumbar_rotation", (0, 1, 0), range_deg=(-90, 90))),
        ellipsoids=(Ellipsoid((-0.03, 0.20, 0), (0.12, 0.26, 0.16)),
                    Ellipsoid((-0.01, 0.37, 0.14), (0.07, 0.07, 0.08)),
                    Ellipsoid((-0.01, 0.37, -0.14), (0.07, 0.07, 0.08)),
                    Ellipsoid((-0.02, 0.47, 0), (0.06, 0.07, 0.06))),
        markers={"C7": (-0.07, 0.45, 0.0), "T10": (-0.14, 0.22, 0.0), "CLAV": (0.05, 0.38, 0.0),
                 "STRN": (0.08, 0.22, 0.0), "RBAK": (-0.11, 0.30, 0.07),
                 "RSHO": (-0.01, 0.41, 0.15), "LSHO": (-0.01, 0.41, -0.15)},
    )
    # The head is part of the torso body (as in gait2392/Hamner); its own colour.
    head = BodySpec(
        "head", "torso", "", (0, 0, 0), 0.0, (),
        ellipsoids=(Ellipsoid((0.0, 0.595, 0), (0.10, 0.12, 0.08)),),
        markers={"RFHD": (0.08, 0.62, 0.035), "LFHD": (0.08, 0.62, -0.035),
                 "RBHD": (-0.08, 0.62, 0.035), "LBHD": (-0.08, 0.62, -0.035)},
        segment="head",
    )
    legs = [b for b in _side_specs("r") + _side_specs("l") if not b.name.startswith(("humerus", "ulna", "radius", "hand"))]
    arms = [b for b in _side_specs("r") + _side_specs("l") if b.name.startswith(("humerus", "ulna", "radius", "hand"))]
    return [pelvis, *legs, torso, head, *arms]


def real_bodies() -> list[BodySpec]:
    """Bodies that become OpenSim bodies (the head is geometry on the torso)."""
    return [b for b in body_specs() if b.joint]


def coordinates() -> list[Coordinate]:
    out: list[Coordinate] = []
    for b in real_bodies():
        out.extend(b.rotations)
        out.extend(b.translations)
    return out


def coordinate_names() -> list[str]:
    return [c.name for c in coordinates()]


def marker_table() -> dict[str, tuple[str, Vec]]:
    """marker name -> (OpenSim body name, location in body, m)."""
    out: dict[str, tuple[str, Vec]] = {}
    for b in body_specs():
        body = b.parent if not b.joint else b.name
        for name, loc in b.markers.items():
            out[name] = (body, loc)
    return out


def geometry_table() -> list[tuple[str, str, Ellipsoid]]:
    """(OpenSim body name, colour group, ellipsoid) for every ellipsoid."""
    out = []
    for b in body_specs():
        body = b.parent if not b.joint else b.name
        out.extend((body, b.segment, e) for e in b.ellipsoids)
    return out


def _ellipsoid_inertia(mass: float, radii: Vec) -> tuple[float, float, float]:
    a, b, c = radii
    return (mass / 5 * (b * b + c * c), mass / 5 * (a * a + c * c), mass / 5 * (a * a + b * b))


def _orthonormal_completion(axis: Vec) -> tuple[np.ndarray, np.ndarray]:
    """Two unit axes that with `axis` span 3D (for a CustomJoint's unused rotations)."""
    a = np.asarray(axis, float)
    a = a / np.linalg.norm(a)
    helper = np.array([1.0, 0, 0]) if abs(a[0]) < 0.9 else np.array([0, 1.0, 0])
    b = np.cross(a, helper)
    b /= np.linalg.norm(b)
    c = np.cross(a, b)
    return b, c


def build_model():
    """Return the generic `opensim.Model` (not yet written to disk)."""
    from d3ke_assets.biomech.opensim_tools import opensim_module

    osim = opensim_module()

    model = osim.Model()
    model.setName(MODEL_NAME)
    model.set_credits("d3ke: generic full-body model built by d3ke_assets.biomech.model_builder")
    model.setGravity(osim.Vec3(0, -9.80665, 0))
    model.set_length_units("meters")
    model.set_force_units("N")

    bodies: dict[str, object] = {"ground": model.getGround()}
    specs = body_specs()
    colours = {"trunk": (0.8, 0.8, 0.8), "head": (0.9, 0.75, 0.6),
               "right": (0.85, 0.3, 0.25), "left": (0.25, 0.45, 0.85)}
    for spec in specs:
        if not spec.joint:
            continue
        main = spec.ellipsoids[0] if spec.ellipsoids else Ellipsoid((0, 0, 0), (0.02, 0.02, 0.02))
        inertia = _ellipsoid_inertia(spec.mass_kg, main.radii)
        body = osim.Body(spec.name, spec.mass_kg, osim.Vec3(*main.centre), osim.Inertia(*inertia))
        parent = bodies[spec.parent]
        st = osim.SpatialTransform()
        rots = list(spec.rotations)
        rot_axes = [np.asarray(c.axis, float) for c in rots]
        if len(rots) == 1:
            rot_axes += list(_orthonormal_completion(rots[0].axis))
        elif len(rots) == 2:
            third = np.cross(rot_axes[0], rot_axes[1])
            rot_axes.append(third / np.linalg.norm(third))
        for i in range(3):
            ta = st.updTransformAxis(i)
            ta.setAxis(osim.Vec3(*[float(v) for v in rot_axes[i]]))
            if i < len(rots):
                ta.setCoordinateNames(osim.ArrayStr(rots[i].name, 1))
                ta.set_function(osim.LinearFunction(1.0, 0.0))
            else:
                ta.set_function(osim.Constant(0.0))
        for i in range(3):
            ta = st.updTransformAxis(3 + i)
            unit = [0.0, 0.0, 0.0]
            unit[i] = 1.0
            ta.setAxis(osim.Vec3(*unit))
            if i < len(spec.translations):
                ta.setCoordinateNames(osim.ArrayStr(spec.translations[i].name, 1))
                ta.set_function(osim.LinearFunction(1.0, 0.0))
            else:
                ta.set_function(osim.Constant(0.0))
        joint = osim.CustomJoint(spec.joint, parent, osim.Vec3(*spec.location_in_parent), osim.Vec3(0, 0, 0),
                                 body, osim.Vec3(0, 0, 0), osim.Vec3(0, 0, 0), st)
        model.addBody(body)
        model.addJoint(joint)
        for k, coord_spec in enumerate([*rots, *spec.translations]):
            coord = joint.upd_coordinates(k)
            assert coord.getName() == coord_spec.name, (coord.getName(), coord_spec.name)
            lo, hi = coord_spec.range
            coord.setRangeMin(lo)
            coord.setRangeMax(hi)
            coord.setDefaultValue(coord_spec.default)
            coord.setDefaultClamped(False)
        bodies[spec.name] = body

    for spec in specs:
        body_name = spec.name if spec.joint else spec.parent
        body = bodies[body_name]
        for k, e in enumerate(spec.ellipsoids):
            frame = osim.PhysicalOffsetFrame(f"{spec.name}_geometry_{k}", body,
                                             osim.Transform(osim.Vec3(*e.centre)))
            body.addComponent(frame)
            geom = osim.Ellipsoid(*e.radii)
            geom.setColor(osim.Vec3(*colours[spec.segment]))
            frame.attachGeometry(geom)
        for name, loc in spec.markers.items():
            model.addMarker(osim.Marker(name, body, osim.Vec3(*loc)))

    model.finalizeConnections()
    model.initSystem()
    return model


def write_model(path: str | Path) -> Path:
    """Build the generic model and write it as `.osim` to `path`."""
    path = Path(path)
    model = build_model()
    model.printToXML(str(path))
    return path


def model_file(folder: str | Path) -> Path:
    """Where the generic model lives inside the opensim_model asset folder."""
    return Path(folder) / f"{MODEL_NAME}.osim"


def ensure_model(folder: str | Path) -> Path:
    """The generic model in `folder`, written unless it is there (benchmarks, `d3ke predict`, test
    fixtures; the opensim_model asset versions it through the project's one versioned path)."""
    from d3ke_assets.storage import atomic_path

    path = model_file(folder)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            write_model(tmp)
    return path
