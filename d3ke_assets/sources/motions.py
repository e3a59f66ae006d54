"""Joint-angle trajectories of the synthetic trials, at the capture rate.

Each motion returns coordinate values (radians / metres) for a model's coordinates, smooth and
inside every coordinate's range.  The motions are written with the project model's coordinate
names, which OpenSim's gait models share (gait2392, Hamner 2010, Rajagopal); for another model
(`MotionModel.from_spec`) the root's rotations and translations stand in for the pelvis's by axis,
and a named coordinate the model lacks is left out of the motion.  Vertical pelvis position is set
afterwards so that the feet stand on the floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from d3ke_assets.biomech import model_builder as mb

MOTIONS = ("walking", "squat", "arm_raises", "jumping_jacks", "random_motion")
CAPTURE_RATE_HZ = 120.0
WALK_CIRCLE_RADIUS_M = 1.2


ROOT_ROLES = {"pelvis_tilt": ("r", 2), "pelvis_list": ("r", 0), "pelvis_rotation": ("r", 1),
              "pelvis_tx": ("t", 0), "pelvis_ty": ("t", 1), "pelvis_tz": ("t", 2)}  # role: (kind, ground axis)


@dataclass(frozen=True)
class MotionCoordinate:
    name: str
    range: tuple[float, float]  # radians / metres
    default: float
    rotational: bool
    locked: bool = False


@dataclass(frozen=True)
class MotionModel:
    """The coordinates a motion drives, and which of them play the pelvis's roles."""

    coords: tuple
    aliases: dict  # the project's root names -> this model's
    root: frozenset

    @classmethod
    def project(cls) -> "MotionModel":
        coords = tuple(mb.coordinates())
        return cls(coords, {}, frozenset(c.name for c in coords if c.name.startswith("pelvis")))

    @classmethod
    def from_spec(cls, spec, root) -> "MotionModel":
        """A skeletal-layer `ModelSpec` and its `model_files.RootJoint`."""
        coords = tuple(MotionCoordinate(c.name, tuple(c.range), c.default_value, c.rotational, c.locked)
                       for c in spec.coordinates)
        aliases = {role: (root.rotation_about(axis) if kind == "r" else root.translation_along(axis))
                   for role, (kind, axis) in ROOT_ROLES.items()}
        return cls(coords, aliases, frozenset(root.coordinates))


class Pose:
    """Coordinate trajectories addressed by name, in degrees for rotations; names the model lacks are
    left out."""

    def __init__(self, n_frames: int, model: MotionModel | None = None):
        self.model = model or MotionModel.project()
        self.coords = list(self.model.coords)
        self.index = {c.name: i for i, c in enumerate(self.coords)}
        self.index.update({role: self.index[name] for role, name in self.model.aliases.items()})
        self.values = np.zeros((n_frames, len(self.coords)))
        for i, c in enumerate(self.coords):
            self.values[:, i] = c.default
        # height of the feet above the floor (a jump), added after floor contact
        self.lift_m = np.zeros(n_frames)

    def has(self, name: str) -> bool:
        return name in self.index

    def set_deg(self, name: str, deg) -> None:
        if name in self.index:
            self.values[:, self.index[name]] = np.radians(deg)

    def add_deg(self, name: str, deg) -> None:
        if name in self.index:
            self.values[:, self.index[name]] += np.radians(deg)

    def set_m(self, name: str, metres) -> None:
        if name in self.index:
            self.values[:, self.index[name]] = metres

    def both(self, name: str, right_deg, left_deg=None) -> None:
        self.add_deg(f"{name}_r", right_deg)
        self.add_deg(f"{name}_l", right_deg if left_deg is None else left_deg)

    def clipped(self) -> np.ndarray:
        lo = np.array([c.range[0] for c in self.coords])
        hi = np.array([c.range[1] for c in self.coords])
        out = np.clip(self.values, lo, hi)
        for i, c in enumerate(self.coords):
            if getattr(c, "locked", False):  # a locked coordinate stays at its default
                out[:, i] = c.default
        return out


def _relaxed_arms(p: Pose) -> None:
    # Arms slightly away from the trunk so they are visible and not inside it.
    p.both("arm_add", -12.0)
    p.both("elbow_flex", 12.0)
    p.both("pro_sup", 45.0)


def _in_place(n_frames: int, rng: np.random.Generator, model: MotionModel | None = None) -> Pose:
    """Standing at the volume's centre, arms relaxed, facing roughly the front camera."""
    p = Pose(n_frames, model)
    _relaxed_arms(p)
    p.set_deg("pelvis_rotation", rng.uniform(-30, 30))
    return p


def _ramp(t: np.ndarray, period_s: float) -> np.ndarray:
    """0 -> 1 -> 0 smoothly once per period."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * t / period_s)


def walking(t: np.ndarray, rng: np.random.Generator, model: MotionModel | None = None) -> Pose:
    p = Pose(len(t), model)
    _relaxed_arms(p)
    duration = t[-1] + (t[1] - t[0])
    # Walk along a circle around the capture volume's centre so the subject stays in view.
    speed = min(rng.uniform(0.8, 1.1), 5.0 * WALK_CIRCLE_RADIUS_M / duration)
    span = speed * duration / WALK_CIRCLE_RADIUS_M
    heading = -span / 2 + speed * t / WALK_CIRCLE_RADIUS_M
    p.set_m("pelvis_tx", WALK_CIRCLE_RADIUS_M * np.sin(heading))
    p.set_m("pelvis_tz", WALK_CIRCLE_RADIUS_M * np.cos(heading))
    p.set_deg("pelvis_rotation", np.degrees(heading))
    cadence_hz = 0.9 * speed / 1.0 + 0.1  # strides per second
    phi = 2 * np.pi * cadence_hz * t + rng.uniform(0, 2 * np.pi)
    for side, off in (("r", 0.0), ("l", np.pi)):
        ph = phi + off
        p.add_deg(f"hip_flexion_{side}", 12 + 22 * np.sin(ph))
        swing = np.clip(np.sin(ph + 0.9), 0, None) ** 1.5
        p.add_deg(f"knee_angle_{side}", -(6 + 52 * swing))
        p.add_deg(f"ankle_angle_{side}", 6 * np.sin(ph + 2.0))
        p.add_deg(f"mtp_angle_{side}", 10 * np.clip(np.sin(ph - 1.2), 0, None))
        p.add_deg(f"arm_flex_{side}", -18 * np.sin(ph))
        p.add_deg(f"elbow_flex_{side}", 10 + 8 * np.sin(ph))
    p.add_deg("pelvis_list", 4 * np.sin(phi))
    p.add_deg("pelvis_tilt", 2 * np.sin(2 * phi))
    p.add_deg("lumbar_rotation", 5 * np.sin(phi))
    return p


def squat(t: np.ndarray, rng: np.random.Generator, model: MotionModel | None = None) -> Pose:
    p = _in_place(len(t), rng, model)
    d = _ramp(t, rng.uniform(2.2, 3.0)) * rng.uniform(0.7, 1.0)
    p.add_deg("pelvis_tilt", -25 * d)
    p.both("hip_flexion", 95 * d)
    p.both("knee_angle", -95 * d)
    p.both("ankle_angle", 25 * d)
    p.both("arm_flex", 75 * d)
    p.add_deg("lumbar_extension", -10 * d)
    return p


def arm_raises(t: np.ndarray, rng: np.random.Generator, model: MotionModel | None = None) -> Pose:
    p = _in_place(len(t), rng, model)
    period = rng.uniform(2.5, 3.2)
    r = _ramp(t, period)
    sideways = (np.floor(t / period) % 2) == 0  # alternate lateral and forward raises
    p.both("arm_add", np.where(sideways, -140 * r, 0.0))
    p.both("arm_flex", np.where(sideways, 0.0, 150 * r))
    p.add_deg("lumbar_extension", 5 * r)
    return p


def jumping_jacks(t: np.ndarray, rng: np.random.Generator, model: MotionModel | None = None) -> Pose:
    p = _in_place(len(t), rng, model)
    period = rng.uniform(1.0, 1.3)
    r = _ramp(t, period)
    p.both("arm_add", -150 * r)
    p.both("hip_adduction", -18 * r)
    hop = np.abs(np.sin(2 * np.pi * t / period))
    knee_flex = 8 + 12 * hop
    # hip and ankle share the knee flexion so the feet stay flat; toes point down in flight
    p.both("knee_angle", -knee_flex)
    p.both("hip_flexion", knee_flex / 2)
    p.both("ankle_angle", knee_flex / 2 - 15 * hop)
    p.lift_m = 0.06 * hop  # two hops per cycle
    return p


def random_motion(t: np.ndarray, rng: np.random.Generator, model: MotionModel | None = None) -> Pose:
    """Every coordinate a sum of slow sinusoids around a comfortable mid-range."""
    p = Pose(len(t), model)
    _relaxed_arms(p)
    for i, c in enumerate(p.coords):
        if not c.rotational or c.name in p.model.root:
            continue
        lo, hi = (math.degrees(v) for v in c.range)
        mid = np.degrees(p.values[0, i])
        half = 0.25 * (hi - lo)
        signal = sum(rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(0.1, 0.6) * t + rng.uniform(0, 6.3))
                     for _ in range(3)) / 2.0
        p.set_deg(c.name, np.clip(mid + half * signal, lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo)))
    # the knee flexes (negative), never hyper-extends much
    for knee in ("knee_angle_r", "knee_angle_l"):
        if p.has(knee):
            p.set_deg(knee, -np.abs(np.degrees(p.values[:, p.index[knee]])))
    p.set_deg("pelvis_rotation", 40 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t))
    p.set_deg("pelvis_tilt", 8 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t))
    p.set_deg("pelvis_list", 6 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t))
    return p


def static_pose(t: np.ndarray, rng: np.random.Generator, model: MotionModel | None = None) -> Pose:
    """Standing still for scaling: arms away from the body, a little sway."""
    p = Pose(len(t), model)
    p.both("arm_add", -25.0)
    p.both("pro_sup", 45.0)
    p.set_deg("pelvis_rotation", rng.uniform(-10, 10))
    p.add_deg("pelvis_tilt", 1.0 * np.sin(2 * np.pi * 0.3 * t))
    return p


GENERATORS: dict[str, Callable[..., Pose]] = {
    "walking": walking,
    "squat": squat,
    "arm_raises": arm_raises,
    "jumping_jacks": jumping_jacks,
    "random_motion": random_motion,
    "static": static_pose,
}


def generate(motion: str, duration_s: float, rng: np.random.Generator,
             model: MotionModel | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time_s, coordinate values, feet lift in m) for one trial; frames a multiple of 4.

    A multiple of 4 capture frames makes every trial an integer number of 30 fps
    video frames.
    """
    n = int(round(duration_s * CAPTURE_RATE_HZ / 4)) * 4
    t = np.arange(n) / CAPTURE_RATE_HZ
    pose = GENERATORS[motion](t, rng, model)
    return t, pose.clipped(), pose.lift_m
