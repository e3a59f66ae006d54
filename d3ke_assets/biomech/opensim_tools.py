"""Thin, explicit wrappers around OpenSim: load, scale, forward kinematics.

OpenSim's Python bindings do not keep alive what is passed to a setter, so
every wrapper holds its own reference to the `Model` it uses.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from d3ke_assets.console import flush_native_stdio
from d3ke_assets.errors import D3keError


@functools.cache
def opensim_module():
    """`opensim`, without its default `opensim.log` in the working folder and info chatter."""
    import opensim as osim

    osim.Logger.removeFileSink()
    osim.Logger.setLevelString("warn")
    return osim


@contextlib.contextmanager
def native_stdout_to_stderr():
    """OpenSim's tools print model summaries to the C stdout; send them to stderr instead,
    so that stdout stays clean for results (`d3ke bench ... --json`)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real stdout (embedded): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        try:
            sys.stdout.flush()
            flush_native_stdio()  # C++ iostreams buffer in C stdio when stdout is a pipe
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def load_model(path: str | Path):
    osim = opensim_module()

    path = Path(path)
    if not path.is_file():
        raise D3keError(f"{path}: model file does not exist")
    try:
        model = osim.Model(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
        raise D3keError(f"{path}: OpenSim cannot load this model ({first})") from None
    return model


def scale_model(generic_path: str | Path, scale_factors: dict[str, tuple[float, float, float]],
                mass_kg: float, out_path: str | Path, name: str | None = None) -> None:
    """Scale bodies of the generic model by (x, y, z) factors and set the total mass.

    Uses OpenSim's own `Model.scale` (what ScaleTool's ModelScaler calls), which
    scales joint frames, markers, geometry and mass properties.
    """
    osim = opensim_module()
    model = load_model(generic_path)
    state = model.initSystem()
    scale_set = osim.ScaleSet()
    for body, f in scale_factors.items():
        sc = osim.Scale()
        sc.setSegmentName(body)
        sc.setScaleFactors(osim.Vec3(*[float(v) for v in f]))
        sc.setApply(True)
        scale_set.cloneAndAppend(sc)
    if not model.scale(state, scale_set, True, float(mass_kg)):
        raise D3keError(f"{generic_path}: OpenSim failed to scale the model")
    if name:
        model.setName(name)
    model.printToXML(str(out_path))


@dataclass
class KinematicsResult:
    marker_names: list[str]
    markers_m: np.ndarray  # (frames, markers, 3) in ground
    body_names: list[str]
    body_rotations: np.ndarray  # (frames, bodies, 3, 3) body -> ground
    body_origins_m: np.ndarray  # (frames, bodies, 3) in ground


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions (w, x, y, z) -> (..., 3, 3) rotation matrices."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


class OpenSimKinematics:
    """Forward kinematics with OpenSim: coordinates in, markers and body poses out."""

    def __init__(self, model_path: str | Path):
        self.model = load_model(model_path)  # held: OpenSim does not keep it alive
        self.state = self.model.initSystem()
        cs = self.model.getCoordinateSet()
        self.coordinates = [cs.get(i) for i in range(cs.getSize())]
        self.coordinate_names = [c.getName() for c in self.coordinates]
        ms = self.model.getMarkerSet()
        self.markers = [ms.get(i) for i in range(ms.getSize())]
        self.marker_names = [m.getName() for m in self.markers]
        bs = self.model.getBodySet()
        self.bodies = [bs.get(i) for i in range(bs.getSize())]
        self.body_names = [b.getName() for b in self.bodies]

    def compute(self, coordinate_values: np.ndarray, names: list[str] | None = None,
                with_bodies: bool = True) -> KinematicsResult:
        """`coordinate_values`: (frames, coordinates) in radians / metres."""
        values = np.asarray(coordinate_values, float)
        names = names or self.coordinate_names
        index = {n: i for i, n in enumerate(self.coordinate_names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise D3keError(f"coordinates {missing} are not in model {self.model.getName()}")
        order = [self.coordinates[index[n]] for n in names]
        n_frames = values.shape[0]
        markers = np.empty((n_frames, len(self.markers), 3))
        nb = len(self.bodies) if with_bodies else 0
        quats = np.empty((n_frames, nb, 4))
        origins = np.empty((n_frames, nb, 3))
        s = self.state
        for f in range(n_frames):
            for c, v in zip(order, values[f]):
                c.setValue(s, float(v), False)
            self.model.realizePosition(s)
            for k, m in enumerate(self.markers):
                markers[f, k] = m.getLocationInGround(s).to_numpy()
            for k in range(nb):
                tf = self.bodies[k].getTransformInGround(s)
                origins[f, k] = tf.p().to_numpy()
                q = tf.R().convertRotationToQuaternion()
                quats[f, k] = (q.get(0), q.get(1), q.get(2), q.get(3))
        rots = quaternion_to_matrix(quats)
        return KinematicsResult(self.marker_names, markers, self.body_names if with_bodies else [], rots, origins)
