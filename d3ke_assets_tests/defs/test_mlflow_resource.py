"""The project's MLflow resource keeps its store and artifacts under the data root."""

import mlflow

from d3ke_assets.defs.resources import MlflowTrackingResource


def test_experiment_and_run_land_in_the_data_root(tmp_path):
    tracking = MlflowTrackingResource(data_root=str(tmp_path))
    exp_id = tracking.experiment_id("synthetic")
    assert tracking.experiment_id("synthetic") == exp_id  # found, not created twice
    client = mlflow.MlflowClient(tracking.tracking_uri)
    run = client.create_run(exp_id)
    client.log_metric(run.info.run_id, "coordinate_mae_deg", 4.2)
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    assert (tmp_path / "mlflow" / "mlflow.db").is_file()
    assert client.get_run(run.info.run_id).data.metrics["coordinate_mae_deg"] == 4.2
    artifacts = list((tmp_path / "mlflow" / "artifacts" / "synthetic").rglob("note.txt"))
    assert len(artifacts) == 1
