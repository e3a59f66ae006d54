"""A `smoke` training through Dagster: it logs to MLflow and registers a model version."""

from __future__ import annotations

import dagster as dg
import mlflow
import torch

from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.defs.runner import materialize_graph
from d3ke_assets.definitions import ALL_ASSETS
from d3ke_assets.learning import training


def test_smoke_training_through_dagster_is_tracked_in_mlflow(tmp_path):
    resources = {"data_root": DataRootResource(path=str(tmp_path)),
                 "dataset": DatasetResource(name="synthetic", preset="smoke"),
                 "mlflow": MlflowTrackingResource(data_root=str(tmp_path))}
    defs = dg.Definitions(assets=ALL_ASSETS, resources=resources)
    with dg.instance_for_test() as instance:
        # the test subject (Subject_3) is left out: training must not need it
        summary = materialize_graph(defs, instance, ["Subject_1", "Subject_2"], log=lambda m: None)
        assert not summary.failed, [r.error for r in summary.failed]
        record = instance.fetch_materializations(dg.AssetKey("frame_model"), limit=1).records[0]
        meta = record.asset_materialization.metadata
    assert meta["epochs"].value == 2 and meta["backbone"].value == "mobilenet_v3_small"
    assert meta["learning_curve"].value.startswith("![learning curve](data:image/png;base64,")
    client = mlflow.MlflowClient(resources["mlflow"].tracking_uri)
    run_id = meta["mlflow_run"].value.rsplit("/", 1)[-1]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["backbone"] == "mobilenet_v3_small" and run.data.params["preset"] == "smoke"
    assert "input_data_versions.frames/Subject_1" in run.data.params and "dagster_run_id" in run.data.params
    assert run.data.params["validation_subjects"] == "Subject_2"
    assert [m.step for m in client.get_metric_history(run_id, "val_coordinate_mae_deg")] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "learning_curve.png", "checkpoint"} <= artifacts
    versions = client.search_model_versions("name='d3ke_frame_model_synthetic'")
    assert [v.run_id for v in versions] == [run_id]
    checkpoint = tmp_path / "frame_model" / training.CHECKPOINT
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1  # a state_dict bundle, no pickle
