"""Any OpenSim model with markers (issue 18, parts 2 and 3): the Hamner 2010 full-body model, with its
own 83 markers, Setup_Scale.xml and IK task weights, through the whole graph on synthetic subjects
generated from it; one-line errors for a model without markers and a marker set that cannot scale it;
left/right pairs and mirror signs from the model; the root found whatever its coordinates are called.

Truths the tests compare with: OpenSim's own reading of the model (coordinate, body and marker
names), the generator's truth (`truth/*.mot`, `truth/scale_factors.json`), and hand-written lists.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch

from d3ke_assets.biomech import ground_truth, model_files
from d3ke_assets.biomech.formats import MarkerTrajectories, read_mot, read_trc, write_trc
from d3ke_assets.biomech.opensim_tools import load_model
from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.defs.runner import materialize_graph
from d3ke_assets.definitions import ALL_ASSETS
from d3ke_assets.errors import D3keError
from d3ke_assets.learning.mirror import Mirror
from d3ke_assets.learning import training
from d3ke_assets.learning.model import predicted_coordinates
from d3ke_assets.settings import Settings
from d3ke_assets_tests.conftest import REFERENCE, require_reference

HAMNER = REFERENCE / "opensim-hamner-running"
HAMNER_OSIM = HAMNER / "FullBodyModel_Hamner2010_v2_0.osim"
SUBJECTS = ["Subject_1", "Subject_2", "Subject_3"]  # smoke: train, validation, test


def _opensim_names(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Coordinate, body and marker names as OpenSim reads the model."""
    model = load_model(path)
    sets = (model.getCoordinateSet(), model.getBodySet(), model.getMarkerSet())
    return tuple([s.get(i).getName() for i in range(s.getSize())] for s in sets)


@pytest.fixture(autouse=True)
def _hamner_present(hamner):
    """Every test here reads the Hamner model (`hamner`: missing reference data fails under scripts/test.sh)."""


@pytest.fixture(scope="module")
def hamner_graph(tmp_path_factory):
    """The smoke preset's three subjects generated from the Hamner model, through every asset."""
    require_reference("opensim-hamner-running")
    root = tmp_path_factory.mktemp("hamner")
    resources = {"data_root": DataRootResource(path=str(root)),
                 "dataset": DatasetResource(name="synthetic", preset="smoke", model=str(HAMNER_OSIM),
                                            model_scale_setup=str(HAMNER / "Setup_Scale.xml"),
                                            model_ik_tasks=str(HAMNER / "Tasks_IK.xml")),
                 "mlflow": MlflowTrackingResource(data_root=str(root))}
    with dg.instance_for_test() as instance:
        summary = materialize_graph(dg.Definitions(assets=ALL_ASSETS, resources=resources), instance, SUBJECTS,
                                    log=lambda m: None)
        assert not summary.failed, [r.error for r in summary.failed]
    return root


def test_the_opensim_model_asset_holds_hamner_and_its_setup_files(hamner_graph):
    files = model_files.ModelFiles.in_folder(hamner_graph / "opensim_model")
    assert not files.project and files.osim.read_bytes() == HAMNER_OSIM.read_bytes()
    assert files.scale_setup.read_bytes() == (HAMNER / "Setup_Scale.xml").read_bytes()
    assert files.ik_tasks.read_bytes() == (HAMNER / "Tasks_IK.xml").read_bytes()


def test_labels_follow_hamners_coordinates_bodies_and_markers(hamner_graph):
    coordinates, bodies, markers = _opensim_names(HAMNER_OSIM)
    for key in SUBJECTS:
        arrays, names = ground_truth.load_labels(hamner_graph / "opensim_gt" / key)
        assert names["coordinates"] == coordinates and names["bodies"] == bodies and names["markers"] == markers
        assert arrays["coordinates"].shape == (150, 37)  # 5 trials x 30 video frames
        assert arrays["markers_m"].shape == (150, 83, 3)


def test_ik_recovers_the_generators_coordinates_and_scale_factors(hamner_graph):
    for key in SUBJECTS:
        summary = ground_truth.read_summary(hamner_graph / "opensim_gt" / key)
        # the generator adds ~2 mm soft-tissue motion per marker: IK cannot fit better, nor much worse
        assert all(0.001 < t["rms_error_m"] < 0.01 for t in summary["trials"]), summary["trials"]
        assert summary["ignored_markers"] == [] and summary["markers_missing_from_trials"] == {}
        arrays, names = ground_truth.load_labels(hamner_graph / "opensim_gt" / key)
        rotational = np.array(names["rotational"])
        raw = hamner_graph / "raw_subject" / key
        for ti, trial in enumerate(names["trials"]):
            _, cols, values, in_degrees = read_mot(raw / "truth" / f"{trial}.mot")
            true = values[::4][:, [cols.index(n) for n in names["coordinates"]]]  # 4 capture frames a video frame
            true[:, rotational] = np.radians(true[:, rotational]) if in_degrees else true[:, rotational]
            q = arrays["coordinates"][arrays["trial_index"] == ti]
            mae = np.degrees(np.abs(q[:, rotational] - true[: len(q), rotational])).mean()
            assert mae < 2.0, (key, trial, mae)
        truth = json.loads((raw / "truth" / "scale_factors.json").read_text())
        found = dict(zip(names["bodies"], arrays["scale_factors"][0]))
        for body, factors in truth.items():
            # Hamner's thigh is measured from the ASIS, across the separately scaled pelvis: a few % off
            np.testing.assert_allclose(found[body], factors, atol=0.04, err_msg=f"{key} {body}")


def test_the_network_outputs_hamners_coordinates(hamner_graph):
    layer = SkeletalModel.from_osim(HAMNER_OSIM)
    predicted, _, _ = predicted_coordinates(layer)
    coordinates, bodies, _ = _opensim_names(HAMNER_OSIM)
    assert [coordinates[i] for i in predicted] == [c for c in coordinates if not c.startswith("pelvis_")]
    state = torch.load(hamner_graph / "frame_model" / training.CHECKPOINT, weights_only=True)["model"]
    assert state["head.weight"].shape[0] == len(predicted) + 3 * len(bodies) + 6  # 31 + 60 + 6
    results = pd.read_parquet(hamner_graph / "evaluation" / "results.parquet")
    assert {"clean", "flip"} <= set(results["augmentation"]) and results["n_frames"].eq(150).all()
    assert np.isfinite(results["coordinate_mae_deg"]).all()


def test_predict_writes_hamners_coordinates_and_scales_hamner(hamner_graph, tmp_path):
    from d3ke_assets.evaluation.predict import predict_video

    video = next((hamner_graph / "raw_subject" / "Subject_3").glob("*PG1*"))
    osim = model_files.ModelFiles.in_folder(hamner_graph / "opensim_model").osim
    r = predict_video(video, hamner_graph / "frame_model" / training.CHECKPOINT, osim, tmp_path)
    coordinates, bodies, _ = _opensim_names(HAMNER_OSIM)
    _, cols, values, _ = read_mot(r.mot)
    assert cols == coordinates and values.shape == (150, 37)
    assert _opensim_names(r.osim)[1] == bodies  # OpenSim opens the scaled model


def test_a_checkpoint_of_another_model_is_one_line(hamner_graph, tmp_path):
    from d3ke_assets.biomech.model_builder import ensure_model

    with pytest.raises(D3keError, match="trained on another OpenSim model") as err:
        training.load_trained_frame_model(hamner_graph / "frame_model" / training.CHECKPOINT,
                                          ensure_model(tmp_path / "project"))
    assert "\n" not in str(err.value)


# --- bad inputs: one line naming the file and the fix ----------------------------------------------

def _without_markers(tmp_path: Path) -> Path:
    text = HAMNER_OSIM.read_text()
    text = re.sub(r"<MarkerSet[^>]*>.*?</MarkerSet>", "", text, flags=re.S)
    out = tmp_path / "no_markers.osim"
    out.write_text(text)
    return out


def test_a_model_without_markers_is_one_line_naming_it(tmp_path):
    bad = _without_markers(tmp_path)
    folder = tmp_path / "installed"
    folder.mkdir()
    with pytest.raises(D3keError) as err:
        model_files.install(folder, bad)
    message = str(err.value)
    assert message.startswith(str(bad)) and "no markers" in message and "MarkerSet" in message
    assert "\n" not in message
    # through Dagster: the opensim_model run fails with that line
    resources = {"data_root": DataRootResource(path=str(tmp_path)),
                 "dataset": DatasetResource(name="synthetic", preset="smoke", model=str(bad))}
    result = dg.materialize([a for a in ALL_ASSETS if getattr(a, "key", None) == dg.AssetKey("opensim_model")],
                            resources=resources, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no markers" in failure.event_specific_data.error.message


def _hamner_mocap(graph_root: Path, key: str, out: Path) -> Path:
    shutil.copytree(graph_root / "mocap_markers" / key, out, ignore=shutil.ignore_patterns("_stamp.json"))
    return out


def _rewrite(trc: Path, drop: tuple[str, ...] = (), extra: str | None = None) -> None:
    t = read_trc(trc)
    keep = [i for i, m in enumerate(t.marker_names) if m not in drop]
    names, positions = [t.marker_names[i] for i in keep], t.positions_m[:, keep]
    if extra:
        names, positions = names + [extra], np.concatenate([positions, positions[:, :1] + 0.05], axis=1)
    write_trc(trc, MarkerTrajectories(names, t.time_s, positions, t.rate_hz))


def test_a_static_trial_that_cannot_scale_the_model_fails_that_subject_only(hamner_graph, tmp_path):
    osim = model_files.ModelFiles.in_folder(hamner_graph / "opensim_model").osim
    bad = _hamner_mocap(hamner_graph, "Subject_1", tmp_path / "bad")
    static = bad / "Subject_1_static.trc"
    _rewrite(static, drop=("R.ASIS", "L.ASIS"))  # the pelvis measurement's only pair
    with pytest.raises(D3keError) as err:
        ground_truth.compute_subject(bad, osim, tmp_path / "bad_gt")
    message = str(err.value)
    assert message.startswith(str(static)) and "cannot scale pelvis" in message
    assert "R.ASIS" in message and "Setup_Scale.xml" in message and "\n" not in message
    # the other subjects' ground truth is untouched by it
    assert (hamner_graph / "opensim_gt" / "Subject_2" / "labels.npz").is_file()


def test_extra_markers_are_ignored_and_missing_ones_named(hamner_graph, tmp_path):
    osim = model_files.ModelFiles.in_folder(hamner_graph / "opensim_model").osim
    folder = _hamner_mocap(hamner_graph, "Subject_2", tmp_path / "mocap")
    for trc in folder.glob("*.trc"):
        _rewrite(trc, extra="EXTRA_CLUSTER")
    _rewrite(folder / "Subject_2_squat.trc", drop=("R.Heel",))  # a tracked marker (weight 10 in Tasks_IK.xml)
    lines: list[str] = []
    result = ground_truth.compute_subject(folder, osim, tmp_path / "gt", log=lines.append)
    assert not result.has_nan
    summary = ground_truth.read_summary(tmp_path / "gt")
    assert summary["ignored_markers"] == ["EXTRA_CLUSTER"]
    assert summary["markers_missing_from_trials"] == {"squat": ["R.Heel"]}
    assert sum("EXTRA_CLUSTER" in line for line in lines) == 1  # named once, not once per trial
    arrays, names = ground_truth.load_labels(tmp_path / "gt")
    heel = names["markers"].index("R.Heel")
    squat = arrays["trial_index"] == names["trials"].index("squat")
    assert np.isnan(arrays["marker_error_m"][squat, heel]).all()
    assert np.isfinite(arrays["marker_error_m"][~squat, heel]).all()


# --- mirroring, the root and the settings ---------------------------------------------------------

def test_hamner_mirror_pairs_and_signs_come_from_its_names_and_axes():
    layer = SkeletalModel.from_osim(HAMNER_OSIM, torch.float64)
    mirror = Mirror.for_layer(layer, {})
    names = layer.coordinate_names
    assert [n for n, s in zip(names, mirror.coordinate_sign) if s < 0] == [
        "pelvis_list", "pelvis_rotation", "pelvis_tz", "lumbar_bending", "lumbar_rotation"]  # as for the project's
    pairs = dict(zip(layer.marker_names, (layer.marker_names[i] for i in mirror.marker_perm)))
    assert pairs["R.Knee.Lat"] == "L.Knee.Lat" and pairs["RKJC"] == "LKJC" and pairs["LFAsuperior"] == "RFAsuperior"
    assert pairs["Sternum"] == "Sternum" and mirror.marker_paired.all()
    # Hamner is left-right symmetric: the mirrored pose's joint centres are the reflected joint centres
    rng = np.random.default_rng(0)
    hi = np.array([c.range[1] for c in layer.spec.coordinates])
    q = rng.uniform(0, 0.3, (4, len(names))) * hi
    pose, mirrored = layer(torch.tensor(q)), layer(torch.tensor(mirror.coordinates(q)))
    np.testing.assert_allclose(mirror.joint_centres(pose.joint_centres_m.numpy(), axis=2),
                               mirrored.joint_centres_m.numpy(), atol=1e-9)


def test_the_projects_mirror_from_its_axes_is_its_hand_written_one(generic_model):
    layer = SkeletalModel.from_osim(generic_model[0])
    from_axes = Mirror.for_layer(layer)
    by_names = Mirror.for_names(layer.coordinate_names, layer.body_names, layer.joint_names, layer.marker_names)
    for field in ("coordinate_perm", "coordinate_sign", "body_perm", "joint_perm", "marker_perm", "marker_paired"):
        np.testing.assert_array_equal(getattr(from_axes, field), getattr(by_names, field), err_msg=field)
    assert [m for m, ok in zip(layer.marker_names, from_axes.marker_paired) if not ok] == ["RBAK"]


@pytest.mark.parametrize("name, partner", [("hip_flexion_r", "hip_flexion_l"), ("r_knee", "l_knee"),
                                           ("RASI", "LASI"), ("R.Knee.Lat", "L.Knee.Lat"), ("LHJC", "RHJC"),
                                           ("R_wrist", "L_wrist"), ("radius_r", "radius_l")])
def test_left_right_naming_rules(name, partner):
    assert list(Mirror.for_names([name, partner, "trunk"], [], [], []).coordinate_perm) == [1, 0, 2]


def test_a_coordinate_without_partner_makes_mirroring_unavailable_unless_mapped():
    with pytest.raises(D3keError, match="mirroring is unavailable.*D3KE_MIRROR_MAP"):
        Mirror.for_names(["knee_r", "knee_left"], [], [], [])
    mirror = Mirror.for_names(["knee_right", "knee_left", "lumbar"], ["thigh_right", "thigh_left"], [], [],
                              mapping={"knee_right": "knee_left", "thigh_left": "thigh_right"})
    assert list(mirror.coordinate_perm) == [1, 0, 2] and list(mirror.body_perm) == [1, 0]


def _renamed_root(tmp_path: Path) -> Path:
    text = HAMNER_OSIM.read_text()
    for old, new in (("pelvis_tilt", "root_rz"), ("pelvis_list", "root_rx"), ("pelvis_rotation", "root_ry"),
                     ("pelvis_tx", "root_x"), ("pelvis_ty", "root_y"), ("pelvis_tz", "root_z")):
        text = text.replace(old, new)
    out = tmp_path / "renamed_root.osim"
    out.write_text(text)
    return out


def test_the_root_is_the_free_joint_whatever_its_coordinates_are_called(tmp_path):
    from d3ke_assets.evaluation.predict import root_angles

    layer = SkeletalModel.from_osim(_renamed_root(tmp_path), torch.float64)
    root = model_files.root_joint(layer.spec)
    assert root.coordinates == ("root_rz", "root_rx", "root_ry", "root_x", "root_y", "root_z")
    assert root.translation_along(1) == "root_y" and root.rotation_about(0) == "root_rx"
    predicted, _, _ = predicted_coordinates(layer)
    assert not {layer.coordinate_names[i] for i in predicted} & set(root.coordinates)
    # the root body's orientation from the skeletal layer gives its three angles back
    q = np.zeros((3, len(layer.coordinate_names)))
    q[:, :3] = [[0.3, -0.2, 1.1], [-0.5, 0.4, -2.0], [0.1, 0.0, 0.2]]
    rotation = layer(torch.tensor(q)).body_rotations[:, 0].numpy()
    np.testing.assert_allclose(root_angles(rotation, root), q[:, :3], atol=1e-9)


def test_a_model_without_a_free_root_is_one_line(tmp_path):
    text = _renamed_root(tmp_path).read_text()
    # the root translates along y and z only: root_x moves nothing
    text = re.sub(r"(<TransformAxis name=\"translation1\">.*?<coordinates>)\s*root_x\s*(</coordinates>)", r"\1\2",
                  text, count=1, flags=re.S)
    bad = tmp_path / "fixed_root.osim"
    bad.write_text(text)
    with pytest.raises(D3keError, match="no free joint to ground") as err:
        model_files.check_model(bad)
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)


def test_model_settings_from_the_environment():
    run = Settings.from_environment({"D3KE_MODEL": "/m/model.osim", "D3KE_MODEL_SCALE_SETUP": "/m/Setup_Scale.xml",
                                     "D3KE_MODEL_IK_TASKS": "/m/Tasks_IK.xml", "D3KE_MIRROR_MAP": "/m/map.json",
                                     "D3KE_AMASS_MARKERS": "/m/vertices.csv"})
    assert (run.model, run.model_scale_setup, run.model_ik_tasks, run.mirror_map, run.amass_markers) == (
        "/m/model.osim", "/m/Setup_Scale.xml", "/m/Tasks_IK.xml", "/m/map.json", "/m/vertices.csv")
    assert Settings().model is None  # the project's model by default
    with pytest.raises(D3keError, match="set D3KE_MODEL"):
        Settings.from_environment({"D3KE_MODEL_SCALE_SETUP": "/m/Setup_Scale.xml"})
