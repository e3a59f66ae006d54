"""The Dagster layer: materialize opensim_model and raw_subject partitions in a test instance."""

import json

import dagster as dg
import numpy as np
import pytest

from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.definitions import ALL_ASSETS, defs
from d3ke_assets.sources.checksums import Manifest


def _resources(root, **dataset):
    return {"data_root": DataRootResource(path=str(root)),
            "dataset": DatasetResource(**{"name": "synthetic", "preset": "smoke", **dataset}),
            "mlflow": MlflowTrackingResource(data_root=str(root))}


def _materialize(selection, root, instance, partition=None, **dataset):
    return dg.materialize(ALL_ASSETS, selection=selection, partition_key=partition, instance=instance,
                          resources=_resources(root, **dataset), raise_on_error=False)


def _data_version(result, asset):
    mats = result.asset_materializations_for_node(asset)
    assert len(mats) == 1
    return mats[0].tags["dagster/data_version"], mats[0].metadata


def _failure(result) -> str:
    return next(e.step_failure_data.user_failure_data.description for e in result.all_events if e.is_step_failure)


def test_definitions_load_with_subject_partitions():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.toposorted_asset_keys}
    assert {"opensim_model", "raw_subject"} <= keys
    parts = graph.get(dg.AssetKey("raw_subject")).partitions_def.get_partition_keys()
    assert parts == ["Subject_1", "Subject_2", "Subject_3"]  # smoke preset


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    root = tmp_path_factory.mktemp("dagster_root")
    instance = dg.DagsterInstance.ephemeral()
    model = _materialize(["opensim_model"], root, instance)
    assert model.success
    runs = {k: _materialize(["raw_subject"], root, instance, k) for k in ("Subject_1", "Subject_2")}
    return root, instance, model, runs


def test_opensim_model_asset_writes_a_loadable_model(materialized):
    import opensim as osim

    root, _, model_result, _ = materialized
    version, meta = _data_version(model_result, "opensim_model")
    path = root / "opensim_model" / "d3ke_fullbody.osim"
    assert osim.Model(str(path)).getNumCoordinates() == meta["n_coordinates"].value >= 35
    from d3ke_assets.defs.constants import CODE_VERSIONS, OPENSIM_MODEL
    from d3ke_assets.versioning import version_stamp
    assert version == version_stamp(CODE_VERSIONS[OPENSIM_MODEL], {}, {})  # code version, no config, no inputs


def test_two_raw_subject_partitions_materialize_with_manifest_data_versions(materialized):
    root, _, _, runs = materialized
    digests = set()
    for key, result in runs.items():
        assert result.success, key
        version, meta = _data_version(result, "raw_subject")
        manifest = Manifest.read(root / "raw_subject" / key / "manifest.json")
        assert version == manifest.digest
        assert meta["n_files"].value == len(manifest.files) >= 10
        assert meta["split"].value in ("train", "validation", "test")
        assert meta["preview"].value.startswith(f"![{key} preview](data:image/jpeg;base64,")
        effective = meta["settings"].value  # the run's whole configuration, with the asset's own
        assert (effective["preset"], effective["dataset"], effective["seed"]) == ("smoke", "synthetic", 0)
        assert effective["data_root"] == str(root.resolve()) and effective["asset_config"]["seed"] == 0
        digests.add(version)
    assert len(digests) == 2  # different subjects, different data


def test_rematerializing_reuses_files_and_keeps_the_data_version(materialized):
    root, instance, _, runs = materialized
    before, _ = _data_version(runs["Subject_1"], "raw_subject")
    mtime = (root / "raw_subject" / "Subject_1" / "F_PG1_Subject_1_L.avi").stat().st_mtime_ns
    again = _materialize(["raw_subject"], root, instance, "Subject_1")
    version, meta = _data_version(again, "raw_subject")
    assert version == before and meta["reused"].value is True
    assert (root / "raw_subject" / "Subject_1" / "F_PG1_Subject_1_L.avi").stat().st_mtime_ns == mtime


def test_a_corrupt_raw_file_fails_only_its_own_partition(materialized):
    root, instance, _, _ = materialized
    trc = root / "raw_subject" / "Subject_2" / "mocap" / "Subject_2_squat.trc"
    original = trc.read_bytes()
    try:
        trc.write_bytes(original.replace(b"\t1.", b"\t2.", 1))
        bad = _materialize(["raw_subject"], root, instance, "Subject_2")
        good = _materialize(["raw_subject"], root, instance, "Subject_1")
        assert not bad.success and good.success
        message = _failure(bad)
        assert str(trc) in message and "corrupt" in message and "delete" in message
        assert "\n" not in message
    finally:
        trc.write_bytes(original)


def test_missing_model_is_reported_not_a_traceback(tmp_path):
    result = _materialize(["raw_subject"], tmp_path, dg.DagsterInstance.ephemeral(), "Subject_3")
    assert not result.success
    assert "opensim_model is not materialized" in _failure(result)


def _fake_movi(root, subjects_complete, subject_without_pg2):
    """Files named as the real datasets ship them (content is a stand-in)."""
    calib = root / "Camera Parameters" / "Calib"
    calib.mkdir(parents=True)
    for cam in ("PG1", "PG2"):
        np.savez(calib / f"cameraParams_{cam}.npz", IntrinsicMatrix=np.eye(3))
        np.savez(calib / f"Extrinsics_{cam}.npz", rotationMatrix=np.eye(3), translationVector=np.zeros(3))
    for sid in [*subjects_complete, subject_without_pg2]:
        videos = root / "dataverse_files"
        videos.mkdir(exist_ok=True)
        cams = ("PG1", "PG2") if sid != subject_without_pg2 else ("PG1",)
        for cam in cams:
            (videos / f"F_{cam}_Subject_{sid}_L.avi").write_bytes(b"RIFF" + bytes([sid]) * 64)
        v3d = root / "F_Subjects_1_45"
        v3d.mkdir(exist_ok=True)
        (v3d / f"F_v3d_Subject_{sid}.mat").write_bytes(b"MATLAB" + bytes([sid]) * 32)
        amass = root / "BMLmovi" / f"Subject_{sid}_F_MoSh"
        amass.mkdir(parents=True)
        for n in (1, 2):
            np.savez(amass / f"Subject_{sid}_F_{n}_poses.npz", poses=np.zeros((4, 156)), trans=np.zeros((4, 3)),
                     betas=np.zeros(16), gender=np.array("female"), mocap_framerate=np.array(120.0))


def _movi_runs(tmp_path, movi_root, good: str, bad: str):
    """Materialize two movi partitions in one instance: (good result, bad result, data root)."""
    root = tmp_path / "root"
    root.mkdir()
    instance = dg.DagsterInstance.ephemeral()
    runs = {k: _materialize(["raw_subject"], root, instance, k, name="movi", movi_root=str(movi_root))
            for k in (bad, good)}
    return runs[good], runs[bad], root


def test_movi_partitions_find_real_file_names_and_report_what_is_missing(tmp_path):
    movi_root = tmp_path / "movi"
    _fake_movi(movi_root, [1], subject_without_pg2=3)
    ok, bad, root = _movi_runs(tmp_path, movi_root, "Subject_1", "Subject_3")
    assert ok.success and not bad.success
    manifest = json.loads((root / "raw_subject" / "Subject_1" / "manifest.json").read_text())
    names = set(manifest["files"])
    assert {"dataverse_files/F_PG1_Subject_1_L.avi", "dataverse_files/F_PG2_Subject_1_L.avi",
            "F_Subjects_1_45/F_v3d_Subject_1.mat", "BMLmovi/Subject_1_F_MoSh/Subject_1_F_2_poses.npz",
            "Camera Parameters/Calib/Extrinsics_PG2.npz"} <= names
    message = _failure(bad)
    assert "F_PG2_Subject_3_L.avi" in message and "F_PG1_Subject_3_L.avi" not in message
    assert "other subjects are not affected" in message


def test_a_damaged_amass_file_fails_its_subject_with_the_file_named(tmp_path):
    movi_root = tmp_path / "movi"
    _fake_movi(movi_root, [1, 2], subject_without_pg2=3)
    damaged = movi_root / "BMLmovi" / "Subject_2_F_MoSh" / "Subject_2_F_1_poses.npz"
    damaged.write_bytes(damaged.read_bytes()[:100])  # a truncated download
    ok, bad, _ = _movi_runs(tmp_path, movi_root, "Subject_1", "Subject_2")
    assert ok.success and not bad.success
    message = _failure(bad)
    assert str(damaged) in message and "download it again" in message


def test_a_deleted_synthetic_file_is_named(materialized):
    root, instance, _, _ = materialized
    video = root / "raw_subject" / "Subject_1" / "F_PG2_Subject_1_L.avi"
    kept = video.read_bytes()
    video.unlink()
    try:
        result = _materialize(["raw_subject"], root, instance, "Subject_1")
        assert not result.success
        assert f"{video} is missing" in _failure(result)
    finally:
        video.write_bytes(kept)


def test_a_movi_file_changed_after_its_manifest_is_damage_until_rewritten(tmp_path, monkeypatch):
    from d3ke_assets.cli import main
    from d3ke_assets.errors import RawDataError
    from d3ke_assets.sources import movi, raw

    movi_root = tmp_path / "movi"
    _fake_movi(movi_root, [1], subject_without_pg2=3)
    root = tmp_path / "root"
    root.mkdir()
    first = raw.movi_subject(root, "Subject_1", movi.MoviIndex.scan(movi_root))
    assert not first.reused and len(first.changed_files) == len(first.manifest.files)
    video = movi_root / "dataverse_files" / "F_PG1_Subject_1_L.avi"
    video.write_bytes(b"RIFF" + b"\x00" * 64)  # same size, other bytes
    with pytest.raises(RawDataError, match="F_PG1_Subject_1_L.avi is corrupt.*--write-manifest"):
        raw.movi_subject(root, "Subject_1", movi.MoviIndex.scan(movi_root))
    monkeypatch.setenv("D3KE_MOVI_ROOT", str(movi_root))  # where verify looks for the manifest's files
    assert main(["verify", "--data-root", str(root)]) == 1  # verify sees it too
    monkeypatch.setenv("D3KE_DATASET", "movi")
    assert main(["verify", "--data-root", str(root), "--write-manifest"]) == 0  # the user's "on purpose"
    again = raw.movi_subject(root, "Subject_1", movi.MoviIndex.scan(movi_root))
    assert again.reused and again.data_version != first.data_version


def test_opensim_gt_partition_materializes_with_passing_checks_and_is_reused(materialized):
    root, instance, _, _ = materialized
    result = _materialize(["mocap_markers", "opensim_gt"], root, instance, "Subject_1")
    assert result.success
    version, meta = _data_version(result, "opensim_gt")
    assert meta["n_label_frames"].value == meta["n_video_frames"].value > 0
    assert meta["reused"].value is False and meta["ik_marker_rms_error_mm_worst_trial"].value < 10
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks == {"ik_marker_error_below_threshold": True, "labels_have_no_nan": True,
                      "label_frames_match_video": True}
    for name in ("scaled.osim", "labels.npz", "labels.json", "ik_marker_errors.parquet", "scale/Setup_Scale.xml"):
        assert (root / "opensim_gt" / "Subject_1" / name).is_file(), name
    assert (root / "opensim_gt" / "Subject_1" / "ik" / "walking" / "Setup_IK.xml").is_file()
    again = _materialize(["mocap_markers", "opensim_gt"], root, instance, "Subject_1")
    version_again, meta_again = _data_version(again, "opensim_gt")
    assert version_again == version and meta_again["reused"].value is True


def test_opensim_gt_without_its_inputs_says_what_to_materialize(tmp_path):
    result = _materialize(["opensim_gt"], tmp_path, dg.DagsterInstance.ephemeral(), "Subject_1")
    assert not result.success
    assert "mocap_markers is not materialized" in _failure(result)


def test_movi_mocap_markers_pair_motions_by_number_and_name_what_is_left_out(tmp_path):
    """mocap_markers on files shaped like MoVi's: motion 7's file missing, motion 3 three video frames
    short (clamped), motion 4 over a second short (left out), the v3d's sex disagreeing with AMASS."""
    from d3ke_assets.biomech.trials import read_subject_mocap
    from d3ke_assets_tests.sources.test_amass_markers import make_model
    from d3ke_assets_tests.sources.test_movi import make_subject

    smplh = tmp_path / "smplh"
    make_model(smplh)
    movi_root = tmp_path / "movi"
    rows = make_subject(movi_root, 2, short_by={3: 15, 4: 4 * 31 + 3}, drop=(7,), sex="M")
    root = tmp_path / "root"
    root.mkdir()
    instance = dg.DagsterInstance.ephemeral()
    dataset = dict(name="movi", movi_root=str(movi_root), smplh_dir=str(smplh))
    for asset in ("opensim_model", "raw_subject", "mocap_markers"):
        result = _materialize([asset], root, instance, None if asset == "opensim_model" else "Subject_2", **dataset)
        assert result.success, _failure(result)
    _, meta = _data_version(result, "mocap_markers")
    assert meta["missing_motions"].value == ["motion 7: Subject_2_F_7_poses.npz"]
    assert list(meta["failed_motions"].value) == ["4"] and "more than 1 s" in meta["failed_motions"].value["4"]
    assert meta["clamped_video_frames"].value == 3
    assert "subject.sex 'M'" in meta["sex_warning"].value and "'female'" in meta["sex_warning"].value
    subject = read_subject_mocap(root / "mocap_markers" / "Subject_2")
    by_name = {t.name: t for t in subject.trials}
    assert sorted(by_name, key=lambda n: int(n.split("_")[-1])) == [
        f"Subject_2_F_{n}" for n in range(1, 22) if n not in (4, 7)]
    for name, trial in by_name.items():
        first, last = rows[int(name.split("_")[-1]) - 1]  # flags30 row n-1 for motion n
        assert (trial.video_start_frame, trial.video_end_frame) == (first - 1, last)
        assert trial.clamped_video_frames == (3 if name.endswith("_3") else 0)
    third = by_name["Subject_2_F_3"]
    n_capture = 4 * (rows[2][1] - rows[2][0]) + 1 - 12
    frames = third.video_capture_frames(n_capture)  # the last 3 video frames use the last capture frame
    assert list(frames[-4:]) == [n_capture - 1] * 4 and frames[-5] == n_capture - 5

    # opensim_gt labels every video frame of the kept motions, the clamped ones from the last capture frame
    result = _materialize(["opensim_gt"], root, instance, "Subject_2", **dataset)
    assert result.success, _failure(result)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["label_frames_match_video"] and checks["labels_have_no_nan"]
    _, gt = _data_version(result, "opensim_gt")
    assert gt["n_label_frames"].value == sum(last - first + 1 for n, (first, last) in enumerate(rows, 1)
                                             if n not in (4, 7))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed signal, on purpose
def test_a_stop_signal_swallowed_by_a_finalizer_still_stops_the_next_asset(tmp_path):
    """A signal whose Python handler happens to run inside a finalizer (`__del__`) is swallowed there
    ("Exception ignored in ..."), so Dagster never raises it and the run would go on.  `d3ke demo`'s
    wakeup fd saw it: the next asset fails as interrupted before writing anything."""
    import os
    import signal

    from d3ke_assets import interrupts

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here and its exception is swallowed

    with interrupts.stop_on_signals():
        Finalized()
        swallowed = interrupts.stop_requested()
        result = _materialize(["opensim_model"], tmp_path, dg.DagsterInstance.ephemeral())
    assert swallowed == signal.SIGINT
    assert not result.success
    failures = [e.step_failure_data.error.cls_name for e in result.all_events if e.is_step_failure]
    assert failures == ["DagsterExecutionInterruptedError"]
    assert not (tmp_path / "opensim_model").exists() or not any((tmp_path / "opensim_model").iterdir())
