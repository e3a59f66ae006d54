"""Users' OpenSim files read and run the way OpenSim 4.6 reads and runs them; OpenSim itself is the reference."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from d3ke_assets.biomech.formats import read_mot, read_trc
from d3ke_assets.biomech.opensim_tools import OpenSimKinematics, opensim_module
from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.cli import main
from d3ke_assets.errors import D3keError

_TABLE = "time\tknee_angle_r\tpelvis_tx\n0\t10\t1\n0.1\t20\t2\n"
MOT_HEADERS = {  # header styles met in published files; Storage decides what each holds
    "version 1, inDegrees=yes": "Coordinates\nversion=1\nnRows=2\nnColumns=3\ninDegrees=yes\n",
    "version 1, no inDegrees line": "Coordinates\nversion=1\nnRows=2\nnColumns=3\n",
    "version 1, inDegrees=true": "Coordinates\nversion=1\nnRows=2\nnColumns=3\ninDegrees=true\n",
    "version 1, inDegrees = Yes": "Coordinates\nversion = 1\nnRows=2\nnColumns=3\ninDegrees = Yes\n",
    "version 1, lower-case indegrees key": "Coordinates\nversion=1\nnRows=2\nnColumns=3\nindegrees=yes\n",
    "version 0": "Coordinates\nversion=0\nnRows=2\nnColumns=3\ninDegrees=no\n",
    "old OpenSim header": "Coordinates\nnRows=2\nnColumns=3\n",
    "old OpenSim header, inDegrees=no": "Coordinates\nnRows=2\nnColumns=3\ninDegrees=no\n",
    "SIMM header": "knee\ndatacolumns 3\ndatarows 2\nrange 0 0.1\n",
}


@pytest.mark.parametrize("style", MOT_HEADERS)
def test_mot_degrees_follow_opensims_storage(tmp_path, style):
    path = tmp_path / "q.mot"
    path.write_text(MOT_HEADERS[style] + "endheader\n" + _TABLE)
    expected = opensim_module().Storage(str(path)).isInDegrees()
    t, cols, values, in_degrees = read_mot(path)
    assert in_degrees == expected
    assert cols == ["knee_angle_r", "pelvis_tx"] and np.allclose(values, [[10, 1], [20, 2]])


def test_a_mot_opensim_cannot_read_is_refused(tmp_path):
    path = tmp_path / "q.mot"
    path.write_text("Coordinates\nendheader\n" + _TABLE)
    with pytest.raises(RuntimeError, match="Failed to parse headers"):
        opensim_module().Storage(str(path))
    with pytest.raises(D3keError, match=r"q.mot: the header has neither a 'version=' nor an 'nRows='"):
        read_mot(path)


def _trc_in(units: str, scale: float, source: Path, out: Path, frames: int = 20) -> Path:
    """The first frames of `source` (mm) written in other units, header and all."""
    lines = source.read_text().splitlines()
    header = lines[2].split("\t")
    header[4] = units
    rows = []
    for ln in lines[5:5 + frames + 1]:
        cells = ln.split("\t")
        rows.append(ln if len(cells) < 3 else
                    "\t".join(cells[:2] + [f"{float(c) * scale:.6f}" if c.strip() else c for c in cells[2:]]))
    out.write_text("\n".join([*lines[:2], "\t".join(header), *lines[3:5], *rows]) + "\n")
    return out


@pytest.mark.parametrize("units, scale", [("mm", 1.0), ("cm", 0.1), ("m", 0.001), ("CENTIMETERS", 0.1)])
def test_trc_units_follow_opensims_marker_data(tmp_path, hamner, units, scale):
    osim = opensim_module()
    path = _trc_in(units, scale, hamner / "subject02_static.trc", tmp_path / "static.trc")
    ours = read_trc(path)
    theirs = osim.MarkerData(str(path))
    theirs.convertToUnits(osim.Units(osim.Units.Meters))
    names = theirs.getMarkerNames()
    assert ours.marker_names == [names.get(k) for k in range(names.getSize())]
    assert len(ours.time_s) == theirs.getNumFrames() == 20
    for f in (0, 19):
        frame = theirs.getFrame(f)
        expected = np.array([[frame.getMarker(k).get(a) for a in range(3)] for k in range(len(ours.marker_names))])
        assert np.abs(ours.positions_m[f] - expected).max() < 1e-9


@pytest.mark.parametrize("units", ["Meters", "in"])
def test_trc_units_opensim_does_not_know_are_refused(tmp_path, hamner, units):
    osim = opensim_module()
    path = _trc_in(units, 1.0, hamner / "subject02_static.trc", tmp_path / "static.trc")
    theirs = osim.MarkerData(str(path))
    with pytest.raises(RuntimeError, match="unspecified units"):
        theirs.convertToUnits(osim.Units(osim.Units.Meters))
    with pytest.raises(D3keError, match=rf"static.trc: Units '{units}' in the header is not a length OpenSim reads"):
        read_trc(path)


def test_fk_on_a_simm_header_mot_gives_opensims_marker_locations(tmp_path, hamner):
    ref = hamner / "outputReference"
    lines = (ref / "ResultsIK" / "subject02_running_ik.mot").read_text().splitlines()
    end = next(i for i, ln in enumerate(lines) if ln.strip() == "endheader")
    rows = lines[end + 2:]
    simm = tmp_path / "running_simm.mot"
    simm.write_text("\n".join(["subject02_running_ik", f"datacolumns {len(lines[end + 1].split())}",
                               f"datarows {len(rows)}", f"range {rows[0].split()[0]} {rows[-1].split()[0]}",
                               "endheader", lines[end + 1], *rows]) + "\n")
    assert opensim_module().Storage(str(simm)).isInDegrees()  # OpenSim reads this header as degrees
    out = tmp_path / "markers.sto"
    assert main(["fk", "--model", str(ref / "subject02_registered.osim"), "--motion", str(simm),
                 "--out", str(out)]) == 0
    _, cols, ours, _ = read_mot(out)
    _, cols_ref, theirs, _ = read_mot(ref / "ResultsIK" / "ik_model_marker_locations.sto")
    shared = [c for c in cols_ref if c in cols]
    assert len(shared) == 37 * 3
    diff = ours[:, [cols.index(c) for c in shared]] - theirs[:, [cols_ref.index(c) for c in shared]]
    assert np.abs(diff).max() <= 1e-4  # 0.1 mm


def _hamner_copy(hamner: Path, folder: Path, marker_set_file: bool) -> Path:
    """The Hamner pipeline in `folder`, IK over 0.2 s.  With `marker_set_file`, as OpenSim's classic
    examples ship it: the generic model keeps one marker, all markers are in a MarkerSet file that the
    scale setup names."""
    folder.mkdir()
    for name in ("subject02_static.trc", "subject02_running.trc"):
        shutil.copy(hamner / name, folder / name)
    model = (hamner / "FullBodyModel_Hamner2010_v2_0.osim").read_text()
    scale = (hamner / "Setup_Scale.xml").read_text()
    if marker_set_file:
        start, end = model.index("<MarkerSet"), model.index("</MarkerSet>") + len("</MarkerSet>")
        marker_set = model[start:end]
        sternum = re.search(r"<Marker name=\"Sternum\">.*?</Marker>", marker_set, re.S).group(0)
        (folder / "Markers.xml").write_text('<?xml version="1.0" encoding="UTF-8" ?>\n'
                                            f'<OpenSimDocument Version="40000">\n{marker_set}\n</OpenSimDocument>\n')
        model = (model[:start] + f'<MarkerSet name="markerset"><objects>{sternum}</objects></MarkerSet>'
                 + model[end:])
        scale = re.sub(r"<marker_set_file>.*?</marker_set_file>", "<marker_set_file>Markers.xml</marker_set_file>",
                       scale)
    (folder / "generic.osim").write_text(model)
    scale = re.sub(r"<model_file>.*?</model_file>", "<model_file>generic.osim</model_file>", scale)
    (folder / "Setup_Scale.xml").write_text(scale)
    ik = (hamner / "Setup_IK.xml").read_text()
    ik = re.sub(r"<time_range>.*?</time_range>", "<time_range>1.0 1.2</time_range>", ik)
    ik = re.sub(r"<model_file>.*?</model_file>", "<model_file>subject02_registered.osim</model_file>", ik)
    ik = re.sub(r"<report_marker_locations>.*?</report_marker_locations>",
                "<report_marker_locations>false</report_marker_locations>", ik)
    (folder / "Setup_IK.xml").write_text(ik)
    (folder / "ResultsIK").mkdir()  # OpenSim writes into it, but does not make it
    return folder


@pytest.fixture(scope="module")
def opensim_marker_set_run(hamner, tmp_path_factory) -> Path:
    """ScaleTool then InverseKinematicsTool straight from the marker-set-file setups, as OpenSim's GUI runs them."""
    osim = opensim_module()
    folder = _hamner_copy(hamner, tmp_path_factory.mktemp("opensim") / "run", marker_set_file=True)
    assert osim.ScaleTool(str(folder / "Setup_Scale.xml")).run()
    model = osim.Model(str(folder / "subject02_registered.osim"))  # held: the tool does not keep it alive
    assert model.getMarkerSet().getSize() == 46  # all of Markers.xml; its Sternum replaced the model's
    ik = osim.InverseKinematicsTool(str(folder / "Setup_IK.xml"))
    ik.setModel(model)
    assert ik.run()
    return folder / "ResultsIK" / "subject02_running_ik.mot"


def _assert_same_ik(ours_path: Path, reference: Path) -> None:
    t, cols, ours, in_degrees = read_mot(ours_path)
    t_ref, cols_ref, theirs, ref_in_degrees = read_mot(reference)
    assert in_degrees and ref_in_degrees and len(t) == len(t_ref) == 13 and np.allclose(t, t_ref)
    assert set(cols) == set(cols_ref)
    diff = np.abs(ours - theirs[:, [cols_ref.index(c) for c in cols]])
    assert diff.max() < 1e-3, dict(zip(cols, diff.max(axis=0)))  # degrees / metres: the same OpenSim solve


def test_ik_with_a_marker_set_file_matches_opensims_run(tmp_path, hamner, opensim_marker_set_run):
    user = _hamner_copy(hamner, tmp_path / "user", marker_set_file=True)
    assert main(["ik", "--model", str(user / "generic.osim"), "--static", str(user / "subject02_static.trc"),
                 "--motion", str(user / "subject02_running.trc"), "--out", str(tmp_path / "out"),
                 "--scale-setup", str(user / "Setup_Scale.xml"), "--ik-setup", str(user / "Setup_IK.xml")]) == 0
    assert opensim_module().Model(str(tmp_path / "out" / "scaled.osim")).getMarkerSet().getSize() == 46
    _assert_same_ik(tmp_path / "out" / "subject02_running.mot", opensim_marker_set_run)


def test_ik_from_relative_paths_matches_opensims_run(tmp_path, hamner, monkeypatch, opensim_marker_set_run):
    """The model with its markers, every path typed in the folder holding the files."""
    user = _hamner_copy(hamner, tmp_path / "user", marker_set_file=False)
    monkeypatch.chdir(user)
    assert main(["ik", "--model", "generic.osim", "--static", "subject02_static.trc",
                 "--motion", "subject02_running.trc", "--out", "out", "--scale-setup", "Setup_Scale.xml",
                 "--ik-setup", "Setup_IK.xml"]) == 0
    _assert_same_ik(user / "out" / "subject02_running.mot", opensim_marker_set_run)


def test_a_missing_marker_set_file_gets_one_line(tmp_path, hamner, capsys):
    folder = _hamner_copy(hamner, tmp_path / "user", marker_set_file=True)
    (folder / "Markers.xml").unlink()
    assert main(["ik", "--model", str(folder / "generic.osim"), "--static", str(folder / "subject02_static.trc"),
                 "--motion", str(folder / "subject02_running.trc"), "--out", str(tmp_path / "out"),
                 "--scale-setup", str(folder / "Setup_Scale.xml")]) == 2
    err = capsys.readouterr().err
    assert "Setup_Scale.xml: <marker_set_file> Markers.xml does not exist" in err and err.count("\n") == 1


def test_a_model_with_owner_scoped_element_names_loads_and_matches_opensim(tmp_path, hamner):
    osim = opensim_module()
    model = osim.Model(str(hamner / "outputReference" / "subject02_registered.osim"))
    heel = osim.ContactSphere(0.03, osim.Vec3(0.05, -0.02, 0), model.getBodySet().get("calcn_r"), "heel_r")
    floor = osim.ContactHalfSpace(osim.Vec3(0), osim.Vec3(0, 0, -np.pi / 2), model.getGround(), "floor")
    model.addContactGeometry(heel)
    model.addContactGeometry(floor)
    contact = osim.HuntCrossleyForce()
    contact.setName("heel_contact")
    contact.addGeometry("heel_r")
    contact.addGeometry("floor")
    model.addForce(contact)
    model.finalizeConnections()
    path = tmp_path / "with_contact.osim"
    model.printToXML(str(path))
    assert "<HuntCrossleyForce::ContactParametersSet" in path.read_text()
    assert osim.Model(str(path)).getForceSet().contains("heel_contact")  # OpenSim loads it
    layer = SkeletalModel.from_osim(path, torch.float64)
    rng = np.random.default_rng(5)
    q = np.array([[rng.uniform(max(c.range[0], -1.0), min(c.range[1], 1.0)) if not c.locked else c.default_value
                   for c in layer.spec.coordinates] for _ in range(5)])
    kin = OpenSimKinematics(path)
    expected = kin.compute(q, layer.coordinate_names).markers_m[:, [kin.marker_names.index(m)
                                                                    for m in layer.marker_names]]
    assert len(layer.marker_names) == 46
    assert np.abs(layer(torch.tensor(q)).markers_m.numpy() - expected).max() < 1e-9


def test_unmodelled_joints_and_constraints_get_one_line(tmp_path, capsys):
    osim = opensim_module()
    motion = tmp_path / "q.mot"
    motion.write_text("Coordinates\nversion=1\nnRows=1\nnColumns=2\ninDegrees=yes\nendheader\ntime\tpin\n0\t10\n")
    for kind in ("EllipsoidJoint", "PointConstraint"):
        model = osim.Model()
        upper = osim.Body("upper", 1.0, osim.Vec3(0), osim.Inertia(0.1, 0.1, 0.1))
        lower = osim.Body("lower", 1.0, osim.Vec3(0), osim.Inertia(0.1, 0.1, 0.1))
        model.addBody(upper)
        model.addBody(lower)
        model.addJoint(osim.PinJoint("pin", model.getGround(), upper))
        if kind == "EllipsoidJoint":
            model.addJoint(osim.EllipsoidJoint("hip", upper, lower, osim.Vec3(0.1, 0.2, 0.3)))
        else:
            model.addJoint(osim.PinJoint("knee", upper, lower))
            model.addConstraint(osim.PointConstraint(model.getGround(), osim.Vec3(0), lower, osim.Vec3(0)))
        model.addMarker(osim.Marker("toe", lower, osim.Vec3(0, -0.4, 0)))
        model.finalizeConnections()
        path = tmp_path / f"{kind}.osim"
        model.printToXML(str(path))
        osim.Model(str(path)).initSystem()  # OpenSim itself takes the model
        assert main(["fk", "--model", str(path), "--motion", str(motion), "--out", str(tmp_path / "m.sto")]) == 2
        err = capsys.readouterr().err
        assert f"{kind}.osim" in err and f"{kind} is not supported by the skeletal layer" in err
        assert err.count("\n") == 1
