"""The torch skeletal layer against OpenSim's own forward kinematics (the independent truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from d3ke_assets.biomech import model_builder as mb
from d3ke_assets.biomech import osim_functions as F
from d3ke_assets.biomech.formats import read_mot
from d3ke_assets.biomech.opensim_tools import OpenSimKinematics, opensim_module, scale_model
from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.errors import D3keError



def random_pose(layer: SkeletalModel, n: int, rng: np.random.Generator) -> np.ndarray:
    q = np.zeros((n, len(layer.coordinate_names)))
    for i, c in enumerate(layer.spec.coordinates):
        lo, hi = c.range
        q[:, i] = rng.uniform(max(lo, -np.pi), min(hi, np.pi), n)
    return q


def opensim_markers(model_path: Path, layer: SkeletalModel, q: np.ndarray):
    kin = OpenSimKinematics(model_path)
    res = kin.compute(q, layer.coordinate_names)
    order = [kin.marker_names.index(m) for m in layer.marker_names]
    body_order = [kin.body_names.index(b) for b in layer.body_names]
    return res.markers_m[:, order], res.body_rotations[:, body_order], res.body_origins_m[:, body_order]


def test_project_model_matches_opensim_at_random_poses_and_scales(generic_model, tmp_path):
    path = generic_model[0]
    layer = SkeletalModel.from_osim(path, torch.float64)
    rng = np.random.default_rng(3)
    for trial in range(3):
        factors = {b: tuple(rng.uniform(0.8, 1.25, 3)) for b in layer.body_names}
        scaled = tmp_path / f"scaled_{trial}.osim"
        scale_model(path, factors, 70.0, scaled)
        q = random_pose(layer, 40, rng)
        ref_markers, ref_R, ref_p = opensim_markers(scaled, layer, q)
        s = torch.tensor([[factors[b] for b in layer.body_names]] * len(q))
        pose = layer(torch.tensor(q), s)
        assert np.abs(pose.markers_m.numpy() - ref_markers).max() < 1e-7  # 0.1 mm asked; this is 0.0001 mm
        assert np.abs(pose.body_origins_m.numpy() - ref_p).max() < 1e-7
        assert np.abs(pose.body_rotations.numpy() - ref_R).max() < 1e-7


def test_float32_stays_within_a_tenth_of_a_millimetre(generic_model):
    layer64 = SkeletalModel.from_osim(generic_model[0], torch.float64)
    layer32 = SkeletalModel.from_osim(generic_model[0], torch.float32)
    q = random_pose(layer64, 64, np.random.default_rng(5))
    m64 = layer64(torch.tensor(q)).markers_m
    m32 = layer32(torch.tensor(q, dtype=torch.float32)).markers_m
    assert m32.dtype == torch.float32
    assert (m64 - m32.double()).abs().max() < 1e-4


def test_joint_centres_are_child_frame_origins(generic_model):
    layer = SkeletalModel.from_osim(generic_model[0], torch.float64)
    q = torch.tensor(random_pose(layer, 8, np.random.default_rng(1)))
    pose = layer(q)
    # The project's joints put the child frame at the child body's origin.
    for k, j in enumerate(layer.spec.joints):
        b = layer.body_names.index(j.child.body)
        assert torch.allclose(pose.joint_centres_m[:, k], pose.body_origins_m[:, b], atol=1e-12)


def test_gradcheck_in_float64(generic_model):
    layer = SkeletalModel.from_osim(generic_model[0], torch.float64)
    rng = np.random.default_rng(2)
    q = torch.tensor(random_pose(layer, 2, rng), requires_grad=True)
    s = torch.tensor(rng.uniform(0.9, 1.1, (2, layer.n_bodies, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, s: layer(q, s).markers_m, (q, s), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda q, s: layer(q, s).joint_centres_m, (q, s), eps=1e-6, atol=1e-6)


def test_hamner_reference_marker_locations_from_opensim(hamner):
    """OpenSim's own ik_model_marker_locations.sto, reproduced by the layer from the IK .mot."""
    ref = hamner / "outputReference"
    layer = SkeletalModel.from_osim(ref / "subject02_registered.osim", torch.float64)
    t, cols, values, in_degrees = read_mot(ref / "ResultsIK" / "subject02_running_ik.mot")
    assert in_degrees
    q = np.stack([np.radians(values[:, cols.index(n)]) if rot else values[:, cols.index(n)]
                  for n, rot in zip(layer.coordinate_names, layer.rotational)], 1)
    markers = layer(torch.tensor(q)).markers_m.numpy()
    _, mcols, mvals, _ = read_mot(ref / "ResultsIK" / "ik_model_marker_locations.sto")
    checked = 0
    for k, name in enumerate(layer.marker_names):
        if f"{name}_tx" not in mcols:
            continue
        expected = mvals[:, [mcols.index(f"{name}_t{a}") for a in "xyz"]]
        assert np.abs(markers[:, k] - expected).max() < 1e-4, name
        checked += 1
    assert checked == 37


def _toy_model(path: Path) -> Path:
    """Every supported joint type, rotated offset frames, a coupler, a locked coordinate, odd functions."""
    osim = opensim_module()
    model = osim.Model()
    model.setName("toy")
    rng = np.random.default_rng(11)

    def vec():
        return osim.Vec3(*[float(v) for v in rng.uniform(-0.3, 0.3, 3)])

    parent = model.getGround()
    bodies = []
    kinds = ["FreeJoint", "PinJoint", "UniversalJoint", "BallJoint", "GimbalJoint", "SliderJoint",
             "WeldJoint", "CustomJoint", "PinJoint"]
    for k, kind in enumerate(kinds):
        body = osim.Body(f"b{k}", 1.0, osim.Vec3(0), osim.Inertia(0.1, 0.1, 0.1))
        args = (f"j{k}", parent, vec(), vec(), body, vec(), vec())
        if kind == "CustomJoint":
            st = osim.SpatialTransform()
            axes = [(0.3, 0.2, 0.93), (1, 0, 0.2), (0, 1, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
            for i, a in enumerate(axes):
                ta = st.updTransformAxis(i)
                ta.setAxis(osim.Vec3(*a))
                ta.setCoordinateNames(osim.ArrayStr("c_flex" if i in (0, 3, 4) else "c_add", 1))
                if i == 0:
                    ta.set_function(osim.LinearFunction(0.8, 0.1))
                elif i == 1:
                    ta.set_function(osim.PolynomialFunction(osim.Vector([0.3, -0.2, 0.5, 0.05])))
                elif i == 3:
                    spline = osim.SimmSpline()
                    for x, y in zip([-2.0, -1.0, 0.0, 0.7, 2.0], [0.01, 0.03, 0.0, -0.02, 0.01]):
                        spline.addPoint(x, y)
                    ta.set_function(spline)
                elif i == 4:
                    spline = osim.SimmSpline()  # becomes a scaled NaturalCubicSpline below (not in the bindings)
                    for x, y in zip([-2.0, -0.5, 0.5, 2.0], [-0.4, -0.41, -0.39, -0.4]):
                        spline.addPoint(x, y)
                    ta.set_function(spline)
                elif i == 5:
                    ta.set_function(osim.Constant(0.02))
                else:
                    ta.set_function(osim.LinearFunction(1.0, 0.0))
            joint = osim.CustomJoint(*args, st)
        else:
            joint = getattr(osim, kind)(*args)
        model.addBody(body)
        model.addJoint(joint)
        model.addMarker(osim.Marker(f"m{k}a", body, vec()))
        model.addMarker(osim.Marker(f"m{k}b", body, vec()))
        bodies.append(body)
        parent = body
    cs = model.updCoordinateSet()
    cs.get("j3_coord_1").setDefaultValue(0.4)
    cs.get("j3_coord_1").setDefaultLocked(True)
    coupler = osim.CoordinateCouplerConstraint()
    coupler.setName("couple")
    coupler.setIndependentCoordinateNames(osim.ArrayStr("j1_coord_0", 1))
    coupler.setDependentCoordinateName("j8_coord_0")
    coupler.setFunction(osim.LinearFunction(-0.5, 0.2))
    model.addConstraint(coupler)
    model.finalizeConnections()
    model.initSystem()
    model.printToXML(str(path))
    # The second spline becomes MultiplierFunction(NaturalCubicSpline): the bindings lack the one and
    # free the other twice when built in Python.
    text = path.read_text()
    first = text.index("<SimmSpline", text.index("<SimmSpline") + 1)
    end = text.index("</SimmSpline>", first) + len("</SimmSpline>")
    inner = text[first:end].replace("SimmSpline", "NaturalCubicSpline").replace(' name="function"', "")
    text = text[:first] + ('<MultiplierFunction name="function"><function>' + inner +
                           "</function><scale>0.9</scale></MultiplierFunction>") + text[end:]
    path.write_text(text)
    return path


def test_every_supported_joint_type_matches_opensim(tmp_path):
    path = _toy_model(tmp_path / "toy.osim")
    layer = SkeletalModel.from_osim(path, torch.float64)
    assert {j.kind for j in layer.spec.joints} >= {"FreeJoint", "PinJoint", "UniversalJoint", "BallJoint",
                                                   "GimbalJoint", "SliderJoint", "WeldJoint", "CustomJoint"}
    assert "j3_coord_1" not in layer.free_coordinate_names and "j8_coord_0" not in layer.free_coordinate_names
    rng = np.random.default_rng(4)
    q = rng.uniform(-2.5, 2.5, (30, len(layer.coordinate_names)))  # splines evaluated beyond their knots too
    full = layer.full_coordinates(torch.tensor(q)).numpy()
    assert np.allclose(full[:, layer.coordinate_names.index("j3_coord_1")], 0.4)
    assert np.allclose(full[:, layer.coordinate_names.index("j8_coord_0")],
                       -0.5 * q[:, layer.coordinate_names.index("j1_coord_0")] + 0.2)
    factors = {b: tuple(rng.uniform(0.8, 1.25, 3)) for b in layer.body_names}
    scaled = tmp_path / "toy_scaled.osim"
    scale_model(path, factors, 9.0, scaled)
    ref_markers, ref_R, ref_p = opensim_markers(scaled, layer, full)
    pose = layer(torch.tensor(q), torch.tensor([[factors[b] for b in layer.body_names]] * len(q)))
    assert np.abs(pose.markers_m.numpy() - ref_markers).max() < 1e-7
    assert np.abs(pose.body_rotations.numpy() - ref_R).max() < 1e-7


def test_simm_spline_coefficients_equal_opensims():
    osim = opensim_module()
    rng = np.random.default_rng(0)
    for n in (2, 3, 4, 7, 12):
        x = np.sort(rng.uniform(-2, 2, n))
        y = rng.normal(size=n)
        spline = osim.SimmSpline()
        for a, b in zip(x, y):
            spline.addPoint(float(a), float(b))
        xs = np.linspace(x[0] - 0.5, x[-1] + 0.5, 57)
        expected = [spline.calcValue(osim.Vector(1, float(v))) for v in xs]
        mine = F.CubicSpline(x, y, *F.simm_spline_coefficients(x, y))(torch.tensor(xs))
        assert np.abs(mine.numpy() - expected).max() < 1e-12


def test_unsupported_elements_are_named(tmp_path):
    osim = opensim_module()
    model = osim.Model()
    body = osim.Body("b", 1.0, osim.Vec3(0), osim.Inertia(0.1, 0.1, 0.1))
    model.addBody(body)
    model.addJoint(osim.PlanarJoint("planar", model.getGround(), body))
    model.finalizeConnections()
    path = tmp_path / "planar.osim"
    model.printToXML(str(path))
    with pytest.raises(D3keError, match=r"planar.osim: joint planar: PlanarJoint is not supported"):
        SkeletalModel.from_osim(path)
    text = path.read_text().replace("<PlanarJoint", "<PinJoint").replace("</PlanarJoint>", "</PinJoint>")
    bad = tmp_path / "bad_function.osim"
    bad.write_text(text)
    with pytest.raises(D3keError, match="expected 1"):
        SkeletalModel.from_osim(bad)
    (tmp_path / "broken.osim").write_text("<OpenSimDocument Version='40000'><Model")
    with pytest.raises(D3keError, match="broken.osim: not valid XML"):
        SkeletalModel.from_osim(tmp_path / "broken.osim")


def test_generic_model_coordinates_are_the_builders(generic_model):
    layer = SkeletalModel.from_osim(generic_model[0])
    assert layer.coordinate_names == mb.coordinate_names()
    assert layer.rotational == [c.rotational for c in mb.coordinates()]
    assert set(layer.marker_names) == set(mb.marker_table())
