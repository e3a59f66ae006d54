"""`d3ke ik` and `d3ke fk` on the real Hamner running subject, against OpenSim's own outputs."""

from __future__ import annotations

import numpy as np

from d3ke_assets.biomech.formats import read_mot
from d3ke_assets.biomech.opensim_tools import opensim_module
from d3ke_assets.cli import main


def test_fk_reproduces_opensims_model_marker_locations(tmp_path, hamner):
    ref = hamner / "outputReference"
    out = tmp_path / "markers.sto"
    assert main(["fk", "--model", str(ref / "subject02_registered.osim"),
                 "--motion", str(ref / "ResultsIK" / "subject02_running_ik.mot"), "--out", str(out)]) == 0
    t, cols, values, in_degrees = read_mot(out)
    t_ref, cols_ref, ref_values, _ = read_mot(ref / "ResultsIK" / "ik_model_marker_locations.sto")
    assert not in_degrees and np.allclose(t, t_ref)
    shared = [c for c in cols_ref if c in cols]
    assert len(shared) == 37 * 3
    ours = values[:, [cols.index(c) for c in shared]]
    theirs = ref_values[:, [cols_ref.index(c) for c in shared]]
    assert np.abs(ours - theirs).max() <= 1e-4  # 0.1 mm, every marker and frame


def test_ik_with_the_shipped_setups_reproduces_opensims_ik(tmp_path, hamner):
    out = tmp_path / "ik"
    assert main(["ik", "--model", str(hamner / "FullBodyModel_Hamner2010_v2_0.osim"),
                 "--static", str(hamner / "subject02_static.trc"), "--motion", str(hamner / "subject02_running.trc"),
                 "--out", str(out), "--scale-setup", str(hamner / "Setup_Scale.xml"),
                 "--ik-setup", str(hamner / "Setup_IK.xml")]) == 0
    assert (out / "scaled.osim").is_file() and (out / "subject02_running_ik_marker_errors.sto").is_file()
    t, cols, ours, in_degrees = read_mot(out / "subject02_running.mot")
    t_ref, cols_ref, theirs, _ = read_mot(hamner / "outputReference" / "ResultsIK" / "subject02_running_ik.mot")
    assert in_degrees
    rows = np.searchsorted(np.round(t, 3), np.round(t_ref, 3))  # OpenSim's run stopped one frame short
    assert np.allclose(t[rows], t_ref, atol=1e-3) and len(rows) >= 599
    ours = ours[rows]
    osim = opensim_module()
    model = osim.Model(str(hamner / "FullBodyModel_Hamner2010_v2_0.osim"))
    cs = model.getCoordinateSet()
    rotational = [c for c in cols_ref if cs.get(c).getMotionType() == 1]
    rms = [np.sqrt(np.mean((ours[:, cols.index(c)] - theirs[:, cols_ref.index(c)]) ** 2)) for c in rotational]
    assert np.mean(rms) <= 1.0, np.mean(rms)  # OpenSim 4.6 itself: 0.54


def test_ik_without_setups_uses_the_projects_measurements(tmp_path, smoke_subject, generic_model):
    static = smoke_subject / "mocap" / "Subject_1_static.trc"
    motion = smoke_subject / "mocap" / "Subject_1_squat.trc"
    out = tmp_path / "ik"
    assert main(["ik", "--model", str(generic_model[0]), "--static", str(static), "--motion", str(motion),
                 "--out", str(out), "--mass", "70"]) == 0
    t, cols, values, in_degrees = read_mot(out / "Subject_1_squat.mot")
    t_true, cols_true, truth, _ = read_mot(smoke_subject / "truth" / "squat.mot")
    assert in_degrees and len(t) == len(t_true)  # full capture rate here
    for c in ("knee_angle_r", "hip_flexion_l"):
        assert np.sqrt(np.mean((values[:, cols.index(c)] - truth[:, cols_true.index(c)]) ** 2)) < 2.0


def test_bad_inputs_get_one_line_errors(tmp_path, smoke_subject, generic_model, capsys):
    static = smoke_subject / "mocap" / "Subject_1_static.trc"
    broken = tmp_path / "broken.osim"
    broken.write_text("<OpenSimDocument Version='40000'><Model name='x'>")
    assert main(["ik", "--model", str(broken), "--static", str(static), "--motion", str(static),
                 "--out", str(tmp_path / "o")]) == 2
    assert "broken.osim: not valid XML" in capsys.readouterr().err
    empty = tmp_path / "empty.trc"
    empty.write_text("\n".join(static.read_text().splitlines()[:6]) + "\n")
    assert main(["ik", "--model", str(generic_model[0]), "--static", str(static), "--motion", str(empty),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "empty.trc: the file has no frames" in err and err.count("\n") == 1
    setup = tmp_path / "Setup_IK.xml"
    setup.write_text("<OpenSimDocument><InverseKinematicsTool><time_range>50 60</time_range>"
                     "</InverseKinematicsTool></OpenSimDocument>")
    assert main(["ik", "--model", str(generic_model[0]), "--static", str(static), "--motion", str(static),
                 "--out", str(tmp_path / "o"), "--ik-setup", str(setup)]) == 2
    assert "no frames in the time range 50-60 s" in capsys.readouterr().err
