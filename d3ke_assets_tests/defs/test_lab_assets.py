"""A lab's subjects through the Dagster assets: raw_subject -> mocap_markers -> opensim_gt -> frames,
unchanged, with a bad subject failing alone."""

import dagster as dg
import pytest

from d3ke_assets.biomech import ground_truth as gt
from d3ke_assets.definitions import ALL_ASSETS
from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.frames import processing as fp
from d3ke_assets.sources import lab
from d3ke_assets.sources.checksums import Manifest
from d3ke_assets_tests.sources.test_lab import export_to_lab


def _materialize(selection, root, lab_root, instance, partition=None):
    resources = {"data_root": DataRootResource(path=str(root)),
                 "dataset": DatasetResource(name="lab", preset="smoke", lab_root=str(lab_root)),
                 "mlflow": MlflowTrackingResource(data_root=str(root))}
    return dg.materialize(ALL_ASSETS, selection=selection, partition_key=partition, instance=instance,
                          resources=resources, raise_on_error=False)


def test_lab_subjects_run_through_the_subject_assets(tmp_path, smoke_subject):
    lab_root, root = tmp_path / "lab", tmp_path / "data"
    root.mkdir()
    export_to_lab(smoke_subject, lab_root, "Subject_1", ["walking", "squat"])
    export_to_lab(smoke_subject, lab_root, "Subject_2", ["walking"], split="test")
    subject_toml = lab_root / "Subject_2" / lab.SUBJECT_FILE
    subject_toml.write_text(subject_toml.read_text().replace("mass_kg", "weight_kg"))
    instance = dg.DagsterInstance.ephemeral()
    assert _materialize(["opensim_model"], root, lab_root, instance).success
    chain = ["raw_subject", "mocap_markers", "opensim_gt", "frames"]
    good = _materialize(chain, root, lab_root, instance, "Subject_1")
    bad = _materialize(chain, root, lab_root, instance, "Subject_2")
    assert good.success and not bad.success
    message = next(e.step_failure_data.user_failure_data.description for e in bad.all_events if e.is_step_failure)
    assert message == f"{subject_toml}: no mass_kg: add mass_kg = <body mass in kg, which OpenSim's ScaleTool needs>"
    raw_meta = good.asset_materializations_for_node("raw_subject")[0].metadata
    assert raw_meta["split"].value == "train" and raw_meta["settings"].value["lab_root"] == str(lab_root)
    assert raw_meta["trials"].value == "squat, walking" and raw_meta["mass_kg"].value > 40
    assert raw_meta["preview"].value.startswith("![Subject_1 preview](data:image/jpeg;base64,")
    manifest = Manifest.read(root / "raw_subject" / "Subject_1" / "manifest.json")
    assert manifest.dataset == "lab" and len(manifest.files) == 2 + 3 + 4  # tomls, .trc files, videos
    labels, names = gt.load_labels(root / "opensim_gt" / "Subject_1")
    assert names["trials"] == ["squat", "walking"] and len(labels["video_frame"]) == 60
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in good.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks and all(checks.values()), checks
    index = fp.read_index(root / "frames" / "Subject_1")
    assert index.num_rows == 2 * 60 and set(index.column("shard").to_pylist()) == {
        f"{c}_{t}_000.jpgs" for c in ("PG1", "PG2") for t in ("squat", "walking")}
    # the same subject again: every asset reuses its output
    again = _materialize(chain, root, lab_root, instance, "Subject_1")
    for asset in chain:
        assert again.asset_materializations_for_node(asset)[0].metadata["reused"].value is True, asset


def test_lab_partitions_come_from_the_subject_folders(tmp_path):
    from d3ke_assets.definitions import build_definitions
    from d3ke_assets.errors import D3keError
    from d3ke_assets.settings import Settings

    for key, split in (("Subject_2", "validation"), ("Subject_7", None), ("Subject_11", "test")):
        (tmp_path / key).mkdir()
        (tmp_path / key / lab.SUBJECT_FILE).write_text(
            "mass_kg = 70\nheight_m = 1.7\n" + (f'split = "{split}"\n' if split else ""))
    run = Settings.from_environment({"D3KE_DATASET": "lab", "D3KE_LAB_ROOT": str(tmp_path)}, preset="smoke")
    defs = build_definitions(run, Settings.from_environment_sources({"D3KE_LAB_ROOT": str(tmp_path)}))
    keys = defs.resolve_asset_graph().get(dg.AssetKey("raw_subject")).partitions_def.get_partition_keys()
    assert keys == ["Subject_2", "Subject_7", "Subject_11"]
    assert defs.resources["dataset"].lab_root == dg.EnvVar("D3KE_LAB_ROOT")
    split = DatasetResource(name="lab", preset="smoke", lab_root=str(tmp_path)).split()
    assert (split.train, split.validation, split.test) == (("Subject_7",), ("Subject_2",), ("Subject_11",))
    with pytest.raises(D3keError, match="D3KE_LAB_ROOT is not set"):
        build_definitions(Settings(dataset="lab", preset="smoke"))



def test_the_whole_graph_and_predict_run_on_lab_subjects(tmp_path, generic_model, monkeypatch, capsys):
    """Three synthetic subjects exported as a lab's (train, validation, test) through every asset to the
    evaluation and report, then `d3ke predict` with the trained model on one of the lab's videos."""
    from d3ke_assets.cli import main
    from d3ke_assets.defs.runner import materialize_graph
    from d3ke_assets.sources import raw
    from d3ke_assets_tests.conftest import SMOKE

    synthetic_root, lab_root, root = tmp_path / "synthetic", tmp_path / "lab", tmp_path / "data"
    root.mkdir()
    for key, split in (("Subject_1", "train"), ("Subject_2", "validation"), ("Subject_3", "test")):
        subject = raw.synthetic_subject(synthetic_root, key, SMOKE, 0, generic_model[0])
        export_to_lab(subject.folder, lab_root, key, ["walking", "squat", "jumping_jacks"], split=split)
    resources = {"data_root": DataRootResource(path=str(root)),
                 "dataset": DatasetResource(name="lab", preset="smoke", lab_root=str(lab_root)),
                 "mlflow": MlflowTrackingResource(data_root=str(root))}
    defs = dg.Definitions(assets=ALL_ASSETS, resources=resources)
    with dg.instance_for_test() as instance:
        summary = materialize_graph(defs, instance, ["Subject_1", "Subject_2", "Subject_3"], log=lambda m: None)
    assert not summary.failed, [r.error for r in summary.failed]
    for folder in ("frame_model/last.pt", "sequence_model", "evaluation/results.parquet", "robustness_report/report.md"):
        assert (root / folder).exists(), folder
    monkeypatch.setenv("D3KE_DATASET", "lab")
    monkeypatch.setenv("D3KE_LAB_ROOT", str(lab_root))
    video = lab_root / "Subject_3" / "videos" / "squat_PG1.mp4"
    assert main(["predict", str(video), "--model", str(root / "frame_model" / "last.pt"),
                 "--out", str(tmp_path / "predicted"), "--data-root", str(root)]) == 0
    assert "coordinates:" in capsys.readouterr().out and (tmp_path / "predicted" / "squat_PG1.mot").is_file()
