"""The generic model, checked with OpenSim itself and hand-computed geometry."""

import math

import numpy as np
import opensim as osim
import pytest

from d3ke_assets.biomech import model_builder as mb

GAIT_NAMES = [
    "pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx", "pelvis_ty", "pelvis_tz",
    "lumbar_extension", "lumbar_bending", "lumbar_rotation",
    *[f"{n}_{s}" for s in "rl" for n in (
        "hip_flexion", "hip_adduction", "hip_rotation", "knee_angle", "ankle_angle", "subtalar_angle",
        "mtp_angle", "arm_flex", "arm_add", "arm_rot", "elbow_flex", "pro_sup", "wrist_flex", "wrist_dev")],
]
LANDMARKS = ["ASI", "PSI", "KNE", "ANK", "HEE", "TOE", "SHO", "ELB", "WRA", "WRB", "FHD", "BHD"]


@pytest.fixture(scope="module")
def loaded(generic_model):
    model = osim.Model(str(generic_model[0]))
    state = model.initSystem()
    return model, state


def _markers(model, state):
    model.realizePosition(state)
    ms = model.getMarkerSet()
    return {ms.get(i).getName(): np.array(ms.get(i).getLocationInGround(state).to_numpy())
            for i in range(ms.getSize())}


def test_opensim_loads_the_file_with_gait_model_coordinates(loaded):
    model, _ = loaded
    cs = model.getCoordinateSet()
    names = [cs.get(i).getName() for i in range(cs.getSize())]
    assert len(names) >= 35
    assert set(GAIT_NAMES) <= set(names)
    for i in range(cs.getSize()):
        c = cs.get(i)
        assert c.getRangeMin() < c.getRangeMax(), c.getName()
        assert c.getRangeMin() <= c.getDefaultValue() <= c.getRangeMax(), c.getName()


def test_bodies_have_mass_inertia_and_geometry(loaded):
    model, state = loaded
    bs = model.getBodySet()
    assert bs.getSize() >= 20
    for i in range(bs.getSize()):
        body = bs.get(i)
        assert body.getMass() > 0, body.getName()
        inertia = body.getInertia().getMoments().to_numpy()
        assert np.all(inertia > 0), body.getName()
    assert model.getTotalMass(state) == pytest.approx(mb.GENERIC_MASS_KG, abs=0.1)
    text = open(model.getInputFileName()).read()
    assert text.count("<Ellipsoid") >= bs.getSize() - 2  # the talus bodies carry none


def test_marker_set_is_bilateral_and_clinical(loaded):
    model, _ = loaded
    ms = model.getMarkerSet()
    names = {ms.get(i).getName() for i in range(ms.getSize())}
    assert len(names) >= 40
    for lm in LANDMARKS:
        assert f"R{lm}" in names and f"L{lm}" in names, lm
    assert {"C7", "STRN", "CLAV", "T10"} <= names


def test_default_pose_is_mirror_symmetric(loaded):
    model, state = loaded
    pos = _markers(model, state)
    pairs = [(n, "L" + n[1:]) for n in pos if n.startswith("R") and "L" + n[1:] in pos]
    assert len(pairs) >= 18
    for right, left in pairs:
        mirrored = pos[left] * np.array([1, 1, -1])
        np.testing.assert_allclose(pos[right], mirrored, atol=1e-9, err_msg=right)


def test_hip_flexion_rotates_the_thigh_forward_about_the_hip_centre(loaded):
    model, state = loaded
    before = _markers(model, state)
    hip = model.getJointSet().get("hip_r")
    hip_centre = hip.getParentFrame().getPositionInGround(state).to_numpy()
    coord = model.getCoordinateSet().get("hip_flexion_r")
    coord.setValue(state, math.radians(30))
    try:
        after = _markers(model, state)
    finally:
        coord.setValue(state, 0.0)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # pelvis is level in the default pose
    for name in ("RKNE", "RTHI", "RANK", "RHEE"):
        expected = hip_centre + rz @ (before[name] - hip_centre)
        np.testing.assert_allclose(after[name], expected, atol=1e-9, err_msg=name)
    assert after["RKNE"][0] > before["RKNE"][0] + 0.15  # knee moved anteriorly
    np.testing.assert_allclose(after["LKNE"], before["LKNE"], atol=1e-12)


def test_standing_height_and_feet_on_the_floor(loaded):
    model, state = loaded
    model.realizePosition(state)
    lows, highs = [], []
    for body_name, _group, e in mb.geometry_table():
        tf = model.getBodySet().get(body_name).getTransformInGround(state)
        centre = tf.p().to_numpy() + np.array(tf.R().multiply(osim.Vec3(*e.centre)).to_numpy())
        lows.append(centre[1] - e.radii[1])
        highs.append(centre[1] + e.radii[1])
    assert min(lows) == pytest.approx(0.0, abs=0.01)
    assert max(highs) == pytest.approx(mb.GENERIC_HEIGHT_M, abs=0.03)


def test_every_marker_lies_in_its_body_geometry():
    """Markers sit on the drawn surface, so a camera sees them on body pixels."""
    geometry: dict[str, list] = {}
    for body, _group, e in mb.geometry_table():
        geometry.setdefault(body, []).append(e)
    for name, (body, loc) in mb.marker_table().items():
        inside = [np.sum(((np.array(loc) - e.centre) / e.radii) ** 2) for e in geometry[body]]
        assert min(inside) <= 1.0, f"{name} outside every ellipsoid of {body}"
