"""A lab's subjects through the Dagster assets: raw_subject -> mocap_markers -> opensim_gt -> frames,
unchanged, with a bad subject failing alone."""

import dagster as dg

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
