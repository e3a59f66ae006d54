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


def test_the_store_layout_is_defined_once_and_the_ui_server_uses_it(tmp_path, monkeypatch):
    from d3ke_assets.learning.tracking import MlflowStore
    from d3ke_assets.ui.servers import mlflow_folder, mlflow_server_command

    store = MlflowStore(tmp_path)
    assert store.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert store.artifacts_for("synthetic") == tmp_path.resolve() / "mlflow" / "artifacts" / "synthetic"
    assert MlflowTrackingResource(data_root=str(tmp_path)).tracking_uri == store.tracking_uri
    assert mlflow_folder(tmp_path) == store.folder
    argv = mlflow_server_command(tmp_path, 5999)
    assert argv[argv.index("--backend-store-uri") + 1] == store.tracking_uri
    assert argv[argv.index("--artifacts-destination") + 1] == (tmp_path.resolve() / "mlflow" / "artifacts").as_uri()
    monkeypatch.chdir(tmp_path)  # a relative root still gives absolute URIs
    assert MlflowStore("data").tracking_uri == f"sqlite:///{tmp_path.resolve()}/data/mlflow/mlflow.db"


def test_experiments_are_typed_so_the_ui_opens_them_on_their_runs(tmp_path):
    """MLflow 3's UI opens an experiment without `mlflow.experimentKind` on the GenAI traces overview:
    a new experiment gets the model-development kind, and one created before (untyped) gets it too."""
    tracking = MlflowTrackingResource(data_root=str(tmp_path))
    client = mlflow.MlflowClient(tracking.tracking_uri)
    new = tracking.experiment_id("synthetic")
    assert client.get_experiment(new).tags["mlflow.experimentKind"] == "custom_model_development"
    old = client.create_experiment("movi")  # as the project created them before
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert tracking.experiment_id("movi") == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
