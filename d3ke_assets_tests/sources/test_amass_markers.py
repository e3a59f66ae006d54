"""Virtual markers from AMASS SMPL+H parameters against hand-computed truth.

The body model used here is a GENERATED file in the SMPL+H `model.npz` format
(the AMASS "Extended SMPL+H" layout: v_template, shapedirs, posedirs, J_regressor,
weights, kintree_table, f; no hand PCA fields), NOT the real, licence-restricted
SMPL+H model. Its values are synthetic and chosen so that every expected marker
position can be worked out by hand with numpy:

- joints at known points of a T-posed stick figure (SMPL's rest frame: Y up, facing
  +z, left side on +x), each the mean of four dedicated vertices (J_regressor = 1/4);
- one-hot skinning weights, so a vertex follows exactly one joint;
- each marker vertex placed on its body part and skinned to that part's joint.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from d3ke_assets.biomech.formats import read_trc
from d3ke_assets.errors import D3keError
from d3ke_assets.sources import amass_markers as am

N_V = 6890
N_J = 52
# SMPL+H kinematic tree: 22 body joints, then 15 finger joints per hand (index, middle,
# pinky, ring, thumb; three each) hanging from the left (20) / right (21) wrist.
BODY_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
PARENTS = BODY_PARENTS + [w if k % 3 == 0 else 22 + 15 * h + k - 1
                          for h, w in ((0, 20), (1, 21)) for k in range(15)]
R_ELBOW = 19
L_INDEX1, R_INDEX1 = 22, 37  # first joint of each hand block

# Rest joints of the stick figure, metres (x = subject's left, y = up, z = front).
BODY_JOINTS = np.array([
    (0, 0.95, 0), (0.09, 0.88, 0), (-0.09, 0.88, 0), (0, 1.05, 0), (0.09, 0.50, 0), (-0.09, 0.50, 0),
    (0, 1.18, 0), (0.09, 0.08, 0), (-0.09, 0.08, 0), (0, 1.30, 0), (0.09, 0.02, 0.12), (-0.09, 0.02, 0.12),
    (0, 1.50, 0), (0.07, 1.42, 0), (-0.07, 1.42, 0), (0, 1.62, 0), (0.18, 1.42, 0), (-0.18, 1.42, 0),
    (0.45, 1.42, 0), (-0.45, 1.42, 0), (0.70, 1.42, 0), (-0.70, 1.42, 0)], float)

# Marker -> (joint it follows, rest position) for the right side and the midline;
# the left side is the mirror image (x -> -x, SMPL's left/right joint pairs swapped).
RIGHT_AND_MID = {
    "RASI": (0, (-0.12, 0.98, 0.10)), "RPSI": (0, (-0.05, 1.00, -0.10)),
    "RTHI": (2, (-0.15, 0.70, 0.03)), "RKNE": (2, (-0.14, 0.50, 0.0)), "RKNM": (2, (-0.04, 0.50, 0.0)),
    "RTIB": (5, (-0.13, 0.30, 0.02)), "RANK": (5, (-0.13, 0.08, 0.0)), "RMED": (5, (-0.05, 0.08, 0.0)),
    "RHEE": (8, (-0.09, 0.04, -0.06)), "RMT5": (8, (-0.14, 0.02, 0.10)), "RTOE": (11, (-0.09, 0.02, 0.18)),
    "C7": (12, (0.0, 1.48, -0.06)), "T10": (6, (0.0, 1.20, -0.12)), "CLAV": (9, (0.0, 1.42, 0.07)),
    "STRN": (9, (0.0, 1.28, 0.12)), "RBAK": (14, (-0.10, 1.35, -0.12)), "RSHO": (14, (-0.18, 1.46, 0.0)),
    "RFHD": (15, (-0.05, 1.70, 0.09)), "RBHD": (15, (-0.05, 1.68, -0.09)),
    "RUPA": (17, (-0.30, 1.44, -0.04)), "RELB": (17, (-0.45, 1.42, -0.04)), "RELM": (17, (-0.45, 1.42, 0.04)),
    "RWRB": (19, (-0.68, 1.42, -0.025)), "RFRM": (19, (-0.58, 1.44, 0.0)), "RWRA": (19, (-0.68, 1.42, 0.025)),
    "RFIN": (R_INDEX1, (-0.80, 1.42, 0.0)),
}
SWAP = {1: 2, 4: 5, 7: 8, 10: 11, 13: 14, 16: 17, 18: 19, 20: 21, L_INDEX1: R_INDEX1}
SWAP.update({v: k for k, v in SWAP.items()})


def _marker_layout() -> dict[str, tuple[int, np.ndarray]]:
    out = {}
    for name, (joint, pos) in RIGHT_AND_MID.items():
        out[name] = (joint, np.array(pos, float))
        if name.startswith("R") and name != "RBAK":
            out["L" + name[1:]] = (SWAP.get(joint, joint), np.array(pos, float) * (-1, 1, 1))
    return out


def _hand_joints() -> np.ndarray:
    """Finger joints along the arm, beyond each wrist."""
    rows = []
    for sign in (1, -1):  # left hand on +x, then right hand
        for z in (0.03, 0.01, -0.03, -0.01, 0.05):  # index, middle, pinky, ring, thumb
            for dx in (0.09, 0.12, 0.145):
                rows.append((sign * (0.70 + dx), 1.42, z))
    return np.array(rows, float)


def make_model(folder: Path) -> dict:
    """Write `<folder>/<gender>/model.npz` for all genders; return the facts the tests use."""
    rng = np.random.default_rng(7)
    joints = np.vstack([BODY_JOINTS, _hand_joints()])
    layout = _marker_layout()
    marker_vids = set(am.MARKER_VERTICES.values())
    free = [i for i in range(N_V) if i not in marker_vids]
    joint_vids = np.array(free[:4 * N_J]).reshape(N_J, 4)

    v = np.zeros((N_V, 3))
    owner = np.zeros(N_V, int)
    # Everything else: a cloud around the joints, each vertex riding one joint.
    for i in range(N_V):
        owner[i] = i % N_J
        v[i] = joints[owner[i]] + rng.uniform(-0.03, 0.03, 3)
    cross = np.array([(0.01, 0, 0), (-0.01, 0, 0), (0, 0.01, 0), (0, -0.01, 0)])
    J_regressor = np.zeros((N_J, N_V))
    for j in range(N_J):
        v[joint_vids[j]] = joints[j] + cross
        owner[joint_vids[j]] = j
        J_regressor[j, joint_vids[j]] = 0.25
    for name, vid in am.MARKER_VERTICES.items():
        joint, pos = layout[name]
        v[vid] = pos
        owner[vid] = joint
    weights = np.zeros((N_V, N_J))
    weights[np.arange(N_V), owner] = 1.0

    shapedirs = rng.normal(0, 0.01, (N_V, 3, 16))
    posedirs = np.zeros((N_V, 3, 9 * (N_J - 1)))
    # A pose corrective on the forearm marker, driven by the right elbow's rotation.
    rfrm = am.MARKER_VERTICES["RFRM"]
    elbow_block = slice(9 * (R_ELBOW - 1), 9 * R_ELBOW)
    posedirs[rfrm, :, elbow_block] = rng.normal(0, 0.02, (3, 9))
    kintree = np.array([[4294967295 if p < 0 else p for p in PARENTS], list(range(N_J))], dtype=np.int64)
    faces = (np.arange(13776 * 3) % N_V).reshape(13776, 3).astype(np.uint32)
    for g in am.GENDERS:
        (folder / g).mkdir(parents=True, exist_ok=True)
        np.savez(folder / g / "model.npz", v_template=v, shapedirs=shapedirs, posedirs=posedirs,
                 J_regressor=J_regressor, weights=weights, kintree_table=kintree, f=faces)
    return {"v": v, "shapedirs": shapedirs, "posedirs": posedirs, "joints": joints, "owner": owner}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, dict]:
    """The generated SMPL+H files; the tests that pose them need the optional smplx (the others do not)."""
    pytest.importorskip("smplx")
    folder = tmp_path_factory.mktemp("smplh")
    return folder, make_model(folder)


def write_poses(path: Path, poses: np.ndarray, trans: np.ndarray, betas=None, gender="male",
                rate=120.0, drop: tuple[str, ...] = ()) -> Path:
    arrays = {"poses": poses, "trans": trans, "betas": np.zeros(16) if betas is None else betas,
              "gender": np.array(gender), "mocap_framerate": np.array(rate)}
    for k in drop:
        arrays.pop(k)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def to_opensim(p: np.ndarray) -> np.ndarray:
    """Hand-written frame change: OpenSim (x, y, z) = AMASS (-y, z, -x)."""
    p = np.asarray(p, float)
    return np.stack([-p[..., 1], p[..., 2], -p[..., 0]], axis=-1)


def rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


NAMES = list(am.MARKER_VERTICES)
VIDS = np.array(list(am.MARKER_VERTICES.values()))


def test_marker_table_covers_the_project_model():
    from d3ke_assets.biomech.model_builder import marker_table

    assert list(am.MARKER_VERTICES) == list(marker_table())
    assert len(set(am.MARKER_VERTICES.values())) == 47
    assert all(0 <= i < N_V for i in am.MARKER_VERTICES.values())
    # Published MoSh++ values spot-checked (C7, RASI = RFWT, LWRB = LOWR).
    assert (am.MARKER_VERTICES["C7"], am.MARKER_VERTICES["RASI"], am.MARKER_VERTICES["LWRB"]) == (3470, 4343, 2108)


def test_zero_pose_is_template_plus_trans_in_opensim_frame(model, tmp_path):
    folder, m = model
    trans = np.array([[0.3, -1.2, 0.05], [0.31, -1.1, 0.06], [0.5, 2.0, 0.0], [1.0, 0.0, -0.2], [0, 0, 0]])
    f = write_poses(tmp_path / "Subject_1_F_MoSh/Subject_1_F_1_poses.npz", np.zeros((5, 156)), trans)
    traj = am.virtual_markers(f, folder, batch_frames=2)  # batches of 2, 2, 1
    assert traj.marker_names == NAMES
    assert traj.rate_hz == 120.0
    np.testing.assert_allclose(traj.time_s, [0, 1 / 120, 2 / 120, 3 / 120, 4 / 120])
    assert traj.positions_m.dtype == np.float64 and traj.positions_m.shape == (5, 47, 3)
    expected = to_opensim(m["v"][VIDS][None, :, :] + trans[:, None, :])
    np.testing.assert_allclose(traj.positions_m, expected, atol=1e-5)


def test_global_orientation_rotates_about_the_root_joint(model, tmp_path):
    folder, m = model
    poses = np.zeros((1, 156))
    poses[0, 2] = math.pi / 2  # 90 degrees about AMASS z
    t = np.array([0.2, 0.1, -0.3])
    f = write_poses(tmp_path / "p.npz", poses, t[None])
    traj = am.virtual_markers(f, folder)
    root = m["joints"][0]
    expected = root + (m["v"][VIDS] - root) @ rot_z(90).T + t
    np.testing.assert_allclose(traj.positions_m[0], to_opensim(expected), atol=1e-5)


def test_betas_add_the_shape_blend(model, tmp_path):
    folder, m = model
    betas = np.linspace(-2.0, 2.0, 16)
    f = write_poses(tmp_path / "p.npz", np.zeros((2, 156)), np.zeros((2, 3)), betas=betas)
    traj = am.virtual_markers(f, folder)
    shaped = m["v"][VIDS] + np.einsum("vck,k->vc", m["shapedirs"][VIDS], betas)
    np.testing.assert_allclose(traj.positions_m[1], to_opensim(shaped), atol=1e-5)
    # All 16 betas count (smplx alone would keep only 10 of them).
    assert np.abs(np.einsum("vck,k->vc", m["shapedirs"][VIDS][:, :, 10:], betas[10:])).max() > 1e-3


def test_elbow_flexion_moves_only_the_forearm_and_hand(model, tmp_path):
    folder, m = model
    poses = np.zeros((1, 156))
    angle = 60.0
    # body_pose holds joints 1..21 after the 3 global-orient values.
    poses[0, 3 * R_ELBOW: 3 * R_ELBOW + 3] = (0.0, 0.0, math.radians(angle))
    f = write_poses(tmp_path / "p.npz", poses, np.zeros((1, 3)))
    got = dict(zip(NAMES, am.virtual_markers(f, folder).positions_m[0]))

    R = rot_z(angle)  # in the rest frame, as the pose is in the joint's parent frame at rest
    elbow = m["joints"][R_ELBOW]
    moved = {"RFRM", "RWRA", "RWRB", "RFIN"}
    for name, vid in am.MARKER_VERTICES.items():
        rest = m["v"][vid]
        if name == "RFRM":  # also carries a pose corrective: B_P = P . vec(R - I)
            rest = rest + m["posedirs"][vid][:, 9 * (R_ELBOW - 1): 9 * R_ELBOW] @ (R - np.eye(3)).ravel()
        expected = elbow + R @ (rest - elbow) if name in moved else rest
        np.testing.assert_allclose(got[name], to_opensim(expected), atol=1e-5, err_msg=name)
    # The markers that moved really moved (a 60 degree turn about the elbow).
    assert np.linalg.norm(got["RFIN"] - to_opensim(m["v"][am.MARKER_VERTICES["RFIN"]])) > 0.3


@pytest.mark.parametrize("hand, column, moved, still", [
    ("right", 66 + 45, "RFIN", "LFIN"), ("left", 66, "LFIN", "RFIN")])
def test_hand_pose_columns_drive_their_own_hand(model, tmp_path, hand, column, moved, still):
    """poses[:, 66:111] is the left hand, [111:156] the right; each starts with index1."""
    folder, m = model
    poses = np.zeros((1, 156))
    poses[0, column + 2] = math.radians(45)  # index1 about z
    f = write_poses(tmp_path / "p.npz", poses, np.zeros((1, 3)))
    got = dict(zip(NAMES, am.virtual_markers(f, folder).positions_m[0]))
    knuckle = m["joints"][R_INDEX1 if hand == "right" else L_INDEX1]
    rest = m["v"][am.MARKER_VERTICES[moved]]
    np.testing.assert_allclose(got[moved], to_opensim(knuckle + rot_z(45) @ (rest - knuckle)), atol=1e-5)
    np.testing.assert_allclose(got[still], to_opensim(m["v"][am.MARKER_VERTICES[still]]), atol=1e-5)


def test_upright_amass_body_lands_upright_in_opensim(model, tmp_path):
    """AMASS stands SMPL's Y-up body with +90 deg about x; OpenSim must see it Y up, X forward, Z right."""
    folder, _ = model
    poses = np.zeros((1, 156))
    poses[0, 0] = math.pi / 2
    f = write_poses(tmp_path / "p.npz", poses, np.zeros((1, 3)))
    p = dict(zip(NAMES, am.virtual_markers(f, folder).positions_m[0]))
    assert p["RASI"][2] > 0.1 and p["LASI"][2] < -0.1  # right is +Z
    assert p["RFHD"][1] > p["RASI"][1] + 0.5 > p["RANK"][1] + 1.0  # up is +Y
    assert p["RASI"][0] > p["RPSI"][0] + 0.1 and p["RTOE"][0] > p["RHEE"][0] + 0.1  # forward is +X
    # Consistent with the rotation itself: rot_x(90) then the frame change.
    assert np.allclose(to_opensim(rot_x(90) @ np.array([0.0, 0.0, 1.0])), [1, 0, 0])


def test_write_trial_trc_in_millimetres(model, tmp_path):
    folder, m = model
    t = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.4]])
    f = write_poses(tmp_path / "p.npz", np.zeros((2, 156)), t, rate=60.0)
    out = tmp_path / "trial.trc"
    am.write_trial_trc(f, folder, out)
    assert "\tmm\t" in out.read_text().splitlines()[2]
    back = read_trc(out)
    assert back.marker_names == NAMES and back.rate_hz == 60.0
    np.testing.assert_allclose(back.positions_m, to_opensim(m["v"][VIDS][None] + t[:, None]), atol=1e-6)


def test_a_users_vertex_table_gives_its_own_markers(model, tmp_path):
    """Another model's marker set (Hamner-style names) on the SMPL+H body, from a CSV table with a header."""
    folder, m = model
    table = tmp_path / "hamner_vertices.csv"
    table.write_text("marker,vertex\nR.ASIS,4343\nSternum,3470\nR.Heel,12\n")
    vertices = am.read_vertex_table(table)
    assert vertices == {"R.ASIS": 4343, "Sternum": 3470, "R.Heel": 12}
    t = np.array([[0.1, 0.2, 0.3]])
    f = write_poses(tmp_path / "p.npz", np.zeros((1, 156)), t)
    traj = am.write_trial_trc(f, folder, tmp_path / "trial.trc", vertices=vertices)
    assert traj.marker_names == ["R.ASIS", "Sternum", "R.Heel"]
    np.testing.assert_allclose(traj.positions_m[0], to_opensim(m["v"][[4343, 3470, 12]] + t), atol=1e-5)
    json_table = tmp_path / "t.json"
    json_table.write_text('{"R.ASIS": 4343, "Sternum": 3470}')
    assert am.read_vertex_table(json_table) == {"R.ASIS": 4343, "Sternum": 3470}


@pytest.mark.parametrize("text, words", [("marker,vertex\nRASI,7000\n", r"not SMPL\+H vertices"),
                                         ("just text\n", "not a vertex table")])
def test_a_bad_vertex_table_is_one_line_naming_it(tmp_path, text, words):
    table = tmp_path / "bad.csv"
    table.write_text(text)
    with pytest.raises(D3keError, match=words) as err:
        am.read_vertex_table(table)
    assert str(err.value).startswith(str(table)) and "D3KE_AMASS_MARKERS" in str(err.value)


def test_load_amass_trial_reads_gender_as_bytes_and_body_only_poses(tmp_path):
    f = write_poses(tmp_path / "p.npz", np.zeros((3, 66)), np.zeros((3, 3)), gender=b"Female")
    trial = am.load_amass_trial(f)
    assert trial["gender"] == "female" and trial["rate_hz"] == 120.0 and trial["poses"].shape == (3, 66)


def test_missing_model_file_names_the_path(tmp_path):
    f = write_poses(tmp_path / "p.npz", np.zeros((1, 156)), np.zeros((1, 3)), gender="female")
    empty = tmp_path / "no_models"
    empty.mkdir()
    with pytest.raises(D3keError) as err:
        am.virtual_markers(f, empty)
    msg = str(err.value)
    assert str(empty / "female" / "model.npz") in msg
    assert am.SMPLH_DIR_ENV in msg and "mano.is.tue.mpg.de" in msg and "\n" not in msg


@pytest.mark.parametrize("change, words", [
    (dict(drop=("trans",)), "lacks ['trans']"),
    (dict(poses=np.zeros((4, 60))), "'poses' has shape (4, 60)"),
    (dict(poses=np.zeros((0, 156)), trans=np.zeros((0, 3))), "zero frames"),
    (dict(trans=np.full((4, 3), np.nan)), "'trans' contains NaN"),
    (dict(trans=np.zeros((3, 3))), "'trans' has shape (3, 3)"),
])
def test_bad_poses_file_is_one_line_naming_the_file(tmp_path, change, words):
    args = dict(poses=np.zeros((4, 156)), trans=np.zeros((4, 3)))
    args.update(change)
    f = write_poses(tmp_path / "Subject_3_F_2_poses.npz", **args)
    with pytest.raises(D3keError) as err:
        am.load_amass_trial(f)
    msg = str(err.value)
    assert str(f) in msg and words in msg and "\n" not in msg


def test_smplh_dir_is_named_by_the_settings(tmp_path):
    with pytest.raises(D3keError, match=am.SMPLH_DIR_ENV):
        am.smplh_dir(None)
    assert am.smplh_dir(str(tmp_path)) == tmp_path


def test_movi_mocap_writes_trials_with_their_video_frames(model, tmp_path):
    """The real-data path of `mocap_markers`, on generated SMPL-H-format files (not the real model)."""
    import scipy.io

    from d3ke_assets.biomech.trials import read_subject_mocap
    from d3ke_assets.sources import mocap, movi

    smplh_dir, _ = model
    poses = []
    for n, frames in ((1, 240), (2, 120)):
        path = tmp_path / f"Subject_7_F_{n}_poses.npz"
        write_poses(path, np.zeros((frames, 156)), np.tile([0.0, 0.0, 0.9], (frames, 1)))
        poses.append(path)
    v3d = tmp_path / "F_v3d_Subject_7.mat"
    scipy.io.savemat(v3d, {"Subject_7_F": {"move": {"flags30": np.array([[1, 60], [61, 90]])}}})
    facts = movi.read_v3d(v3d, "Subject_7")
    assert facts.flags30 == [(0, 60), (60, 90)]  # MATLAB's 1-based inclusive -> 0-based [start, end)
    out = tmp_path / "mocap"
    out.mkdir()
    mocap.movi_mocap(movi.pair_motions("Subject_7", facts, {1: poses[0], 2: poses[1]}), smplh_dir, out)
    subject = read_subject_mocap(out)
    assert [t.name for t in subject.trials] == ["Subject_7_F_1", "Subject_7_F_2"]
    assert subject.n_video_frames == 90 and subject.trials[0].capture_per_video_frame == 4
    assert subject.static.trc.is_file() and subject.trials[1].trc.is_file()
    bad = tmp_path / "bad.mat"
    scipy.io.savemat(bad, {"Subject_7_F": {"move": {"flags120": np.zeros((2, 2))}}})
    with pytest.raises(D3keError, match="bad.mat: no move.flags30 table"):
        movi.read_v3d(bad, "Subject_7")
