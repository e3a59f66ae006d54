"""MoVi + AMASS as they ship (../shared/reference/movi/README.md): files shaped like the real ones.

The fixture writes what the real subject folders hold: 21 motions numbered 1..21 without zero
padding (so text order F_1, F_10, ..., F_2 differs from motion order), each of its own length;
a MATLAB 5 v3d file whose variable is `Subject_<ID>_F` and whose `move` is a 1x1 cell holding a
struct with `flags30` (1-based, inclusive) beside other fields; the real calibration files.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import scipy.io

from d3ke_assets.errors import RawDataError
from d3ke_assets.media.camera import camera_from_movi
from d3ke_assets.sources import movi
from d3ke_assets_tests.conftest import require_reference

N_MOTIONS = 21
REAL_RATE_HZ = 120.00004577636719  # one of the rates the real AMASS files carry


def motion_video_ranges(sid: int) -> list[tuple[int, int]]:
    """Per motion n (row n-1), a distinct (first, last) 1-based inclusive video frame range."""
    rows, first = [], 5 + sid
    for n in range(1, N_MOTIONS + 1):
        length = 20 + 3 * n + (n * 7) % 11  # all different
        rows.append((first, first + length - 1))
        first += length + 2 + n % 3  # gaps between motions, as in the real sessions
    return rows


def capture_frames_for(rows: list[tuple[int, int]], n: int, short_by: int = 0) -> int:
    """An AMASS trial exactly covering motion n's video range at 4 capture frames per video frame."""
    first, last = rows[n - 1]
    return 4 * (last - first) + 1 + 3 - short_by  # its last video frame plus 3 more capture frames


def write_v3d(path, sid: int, rows, move_as_cell: bool = True, sex: str = "F", flags30: bool = True) -> None:
    move = {"flags120": np.array(rows, float) * 4, "motions_list": np.array([f"m{n}" for n in range(1, len(rows) + 1)],
                                                                             dtype=object)}
    if flags30:
        move["flags30"] = np.array(rows, float)  # MATLAB stores doubles
    holder = {"subject": {"sex": sex, "height": 1.7}, "move": move}
    if move_as_cell:
        cell = np.empty((1, 1), dtype=object)
        cell[0, 0] = move
        holder["move"] = cell
    scipy.io.savemat(path, {f"Subject_{sid}_F": holder}, format="5")


def write_amass(path, n_frames: int, gender: str = "female") -> None:
    np.savez(path, poses=np.zeros((n_frames, 156)), trans=np.tile([0.0, 0.0, 0.9], (n_frames, 1)),
             betas=np.zeros(16), dmpls=np.zeros((n_frames, 8)), gender=np.array(gender),
             mocap_framerate=np.array(REAL_RATE_HZ))


def make_subject(root, sid: int, short_by: dict[int, int] | None = None, drop: tuple[int, ...] = (),
                 **v3d) -> list[tuple[int, int]]:
    """One subject's files under `root` in the shipped layout; returns its flags30 rows."""
    rows = motion_video_ranges(sid)
    videos = root / "dataverse_files"
    videos.mkdir(parents=True, exist_ok=True)
    for cam in ("PG1", "PG2"):
        (videos / f"F_{cam}_Subject_{sid}_L.avi").write_bytes(b"RIFF" + bytes([sid]) * 64)
    (root / "F_Subjects_1_45").mkdir(exist_ok=True)
    write_v3d(root / "F_Subjects_1_45" / f"F_v3d_Subject_{sid}.mat", sid, rows, **v3d)
    amass = root / "BMLmovi" / f"Subject_{sid}_F_MoSh"
    amass.mkdir(parents=True, exist_ok=True)
    for n in range(1, N_MOTIONS + 1):
        if n not in drop:
            write_amass(amass / f"Subject_{sid}_F_{n}_poses.npz",
                        capture_frames_for(rows, n, (short_by or {}).get(n, 0)))
    np.savez(amass / "shape.npz", betas=np.zeros(16), gender=np.array("female"))
    calib = root / "Camera Parameters" / "Calib"
    if not calib.is_dir():
        shutil.copytree(require_reference("movi") / "cameras", calib)
    return rows


def test_motions_pair_with_flags30_rows_by_number_not_text_order(tmp_path):
    rows = make_subject(tmp_path, 5)
    index = movi.MoviIndex.scan(tmp_path)
    names = sorted(p.name for p in (tmp_path / "BMLmovi" / "Subject_5_F_MoSh").glob("*_poses.npz"))
    assert names[:3] == ["Subject_5_F_10_poses.npz", "Subject_5_F_11_poses.npz", "Subject_5_F_12_poses.npz"]

    subject = movi.index_subject(index, "Subject_5")
    assert [t.motion for t in subject.trials] == list(range(1, N_MOTIONS + 1))
    assert subject.missing == [] and subject.failed == {} and subject.v3d.sex == "female"
    for t in subject.trials:
        first, last = rows[t.motion - 1]  # flags30 row n-1, 1-based inclusive
        assert t.amass_file.name == f"Subject_5_F_{t.motion}_poses.npz"
        assert (t.video_start_frame, t.video_end_frame) == (first - 1, last)
        assert t.capture_per_video_frame == 4 and t.clamped_video_frames == 0
        assert t.n_capture_frames == capture_frames_for(rows, t.motion)
        assert t.session_capture_frames == (4 * (first - 1), 4 * (last - 1) + 1)
        assert t.trial_capture_frames == (0, 4 * (last - first) + 1)
    # the raw files of the subject include every motion file, found by the published names
    files = {p.name for p in movi.subject_files(index, "Subject_5")}
    assert {f"Subject_5_F_{n}_poses.npz" for n in range(1, 22)} <= files and "F_v3d_Subject_5.mat" in files


def test_v3d_move_as_cell_or_struct_and_sex(tmp_path):
    rows = motion_video_ranges(2)
    write_v3d(tmp_path / "cell.mat", 2, rows, move_as_cell=True, sex="F")
    write_v3d(tmp_path / "struct.mat", 2, rows, move_as_cell=False, sex="male")
    cell, struct = movi.read_v3d(tmp_path / "cell.mat", "Subject_2"), movi.read_v3d(tmp_path / "struct.mat", "Subject_2")
    expected = [(a - 1, b) for a, b in rows]
    assert cell.flags30 == expected and struct.flags30 == expected
    assert (cell.sex, cell.sex_raw, struct.sex) == ("female", "F", "male")
    # the file really holds move as a 1x1 cell (what scipy returns for the shipped files)
    raw = scipy.io.loadmat(tmp_path / "cell.mat", struct_as_record=False)["Subject_2_F"][0, 0].move
    assert raw.dtype == object and raw.shape == (1, 1)


@pytest.mark.parametrize("case, words", [
    ("no_flags30", "no move.flags30 table"),
    ("other_subject", "no variable Subject_2_F (found ['Subject_3_F'])"),
    ("not_mat", "cannot read the v3d file"),
])
def test_bad_v3d_files_are_one_line_naming_the_file_and_fix(tmp_path, case, words):
    path = tmp_path / "F_v3d_Subject_2.mat"
    rows = motion_video_ranges(2)
    if case == "no_flags30":
        write_v3d(path, 2, rows, flags30=False)
    elif case == "other_subject":
        write_v3d(path, 3, rows)
    else:
        path.write_bytes(b"<html>login required</html>")
    with pytest.raises(RawDataError) as err:
        movi.read_v3d(path, "Subject_2")
    msg = str(err.value)
    assert str(path) in msg and words in msg and "\n" not in msg and "download" in msg


def test_a_missing_motion_file_leaves_out_that_motion_alone(tmp_path):
    rows = make_subject(tmp_path, 5, drop=(7,))
    subject = movi.index_subject(movi.MoviIndex.scan(tmp_path), "Subject_5")
    assert subject.missing == ["motion 7: Subject_5_F_7_poses.npz"]
    assert [t.motion for t in subject.trials] == [n for n in range(1, 22) if n != 7]
    eighth = next(t for t in subject.trials if t.motion == 8)
    assert (eighth.video_start_frame, eighth.video_end_frame) == (rows[7][0] - 1, rows[7][1])  # row 8, not row 7


def test_a_short_trial_is_clamped_and_one_over_a_second_short_fails_that_motion(tmp_path):
    # motion 3: 3 video frames past its end (12 capture frames + the 3 spare); motion 4: 31 (> 1 s at 30 fps)
    rows = make_subject(tmp_path, 5, short_by={3: 15, 4: 4 * 31 + 3})
    subject = movi.index_subject(movi.MoviIndex.scan(tmp_path), "Subject_5")
    third = next(t for t in subject.trials if t.motion == 3)
    first, last = rows[2]
    assert third.n_capture_frames == 4 * (last - first) + 1 - 12
    assert third.clamped_video_frames == 3
    assert third.trial_capture_frames == (0, third.n_capture_frames)
    assert list(subject.failed) == [4]
    why = subject.failed[4]
    assert "Subject_5_F_4_poses.npz" in why and "more than 1 s" in why and "\n" not in why
    assert len(subject.trials) == 20


@pytest.mark.parametrize("bad_name", ["Subject_5_F_01_poses.npz", "Subject_5_F_1_poses (1).npz",
                                      "Subject_6_F_1_poses.npz", "subject_5_f_1_poses.npz"])
def test_a_file_named_outside_the_published_pattern_fails_its_subject_only(tmp_path, bad_name):
    make_subject(tmp_path, 5)
    make_subject(tmp_path, 8)
    np.savez(tmp_path / "BMLmovi" / "Subject_5_F_MoSh" / bad_name, trans=np.zeros((4, 3)))
    index = movi.MoviIndex.scan(tmp_path)
    for call in (movi.index_subject, movi.subject_files):
        with pytest.raises(RawDataError) as err:
            call(index, "Subject_5")
        msg = str(err.value)
        assert bad_name in msg and "rename it to Subject_5_F_<n>_poses.npz" in msg and "\n" not in msg
    assert len(movi.index_subject(index, "Subject_8").trials) == 21
    report = movi.movi_index_report(index, [])
    assert bad_name in report["subjects"]["Subject_5"]["error"]
    assert "error" not in report["subjects"]["Subject_8"]


def test_near_miss_names_are_pointed_out(tmp_path):
    make_subject(tmp_path, 5)
    (tmp_path / "dataverse_files" / "F_PG2_Subject_5_L.avi").rename(tmp_path / "dataverse_files" / "f_pg2_subject_05_l.avi")
    missing = movi.missing_files(movi.MoviIndex.scan(tmp_path), "Subject_5")
    assert missing == ["F_PG2_Subject_5_L.avi (found f_pg2_subject_05_l.avi: rename it to F_PG2_Subject_5_L.avi)"]


def test_movi_index_command_json_and_table(tmp_path, capsys):
    from d3ke_assets.cli import main

    rows = make_subject(tmp_path, 5, drop=(21,))
    assert main(["movi-index", "--movi-root", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    five = report["subjects"]["Subject_5"]
    assert five["missing"] == ["motion 21: Subject_5_F_21_poses.npz"]
    first, last = rows[0]
    assert five["trials"][0] == {
        "motion": 1, "amass_file": "Subject_5_F_1_poses.npz", "video_frames": [first - 1, last],
        "capture_frames": [4 * (first - 1), 4 * (last - 1) + 1], "trial_capture_frames": [0, 4 * (last - first) + 1],
        "n_capture_frames": capture_frames_for(rows, 1), "clamped_video_frames": 0}
    assert [t["motion"] for t in five["trials"]] == list(range(1, 21))
    # the published split's subjects are listed too, with what they lack
    one = report["subjects"]["Subject_1"]
    assert "F_PG1_Subject_1_L.avi" in one["missing"] and "no file of this subject" in one["error"]
    assert "Subject_12" not in report["subjects"]  # absent from the published split and from the files

    assert main(["movi-index", "--movi-root", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "Subject_5: 20 motions usable" in table and "missing: motion 21: Subject_5_F_21_poses.npz" in table
    row = next(line.split() for line in table.splitlines() if "Subject_5_F_2_poses.npz" in line)
    assert row[:4] == ["2", "Subject_5_F_2_poses.npz", f"[{rows[1][0] - 1},", f"{rows[1][1]})"]
    assert "Subject_1: no files found" in table


def matlab_world_to_image(points_mm: np.ndarray, intrinsic_matrix: np.ndarray, radial: np.ndarray,
                          rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """MATLAB's documented worldToImage(..., 'ApplyDistortion', true), written from its documentation:
    row vectors, [x y z] = [X Y Z] * R + t; normalized x/z, y/z; radial distortion k1, k2;
    [u v 1] = [xd yd 1] * IntrinsicMatrix, in MATLAB's 1-based pixel coordinates."""
    cam = points_mm @ rotation + translation
    x, y = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
    r2 = x ** 2 + y ** 2
    factor = 1 + radial[0] * r2 + radial[1] * r2 ** 2
    homogeneous = np.column_stack([x * factor, y * factor, np.ones_like(x)]) @ intrinsic_matrix
    return homogeneous[:, :2] / homogeneous[:, 2:]


@pytest.mark.parametrize("camera", ["PG1", "PG2"])
def test_real_calibration_files_project_as_matlab_world_to_image(camera):
    from d3ke_assets.sources.amass_markers import AMASS_TO_OPENSIM

    folder = require_reference("movi") / "cameras"
    intr, extr = np.load(folder / f"cameraParams_{camera}.npz"), np.load(folder / f"Extrinsics_{camera}.npz")
    assert set(intr.files) == {"IntrinsicMatrix", "RadialDistortion"}  # as shipped: no tangential terms
    cam = camera_from_movi(camera, folder / f"cameraParams_{camera}.npz", folder / f"Extrinsics_{camera}.npz")
    # points of a person in the capture volume, given as AMASS coordinates (z-up, m)
    rng = np.random.default_rng(3)
    amass_m = np.column_stack([rng.uniform(-1, 1, 200), rng.uniform(-1, 1, 200), rng.uniform(0, 1.9, 200)])
    movi_mm = 1000 * np.column_stack([-amass_m[:, 1], amass_m[:, 0], amass_m[:, 2]])  # the MoVi toolbox's mapping
    expected_1based = matlab_world_to_image(movi_mm, intr["IntrinsicMatrix"], intr["RadialDistortion"],
                                            extr["rotationMatrix"], extr["translationVector"])
    got = cam.project(amass_m @ AMASS_TO_OPENSIM.T)  # the project's path: AMASS -> OpenSim ground -> pixels
    np.testing.assert_allclose(got, expected_1based - 1, atol=1e-6)  # the project's pixels are 0-based
    inside = (got[:, 0] > 0) & (got[:, 0] < 800) & (got[:, 1] > 0) & (got[:, 1] < 600)
    assert inside.mean() > 0.9  # the real cameras do look at the capture volume
