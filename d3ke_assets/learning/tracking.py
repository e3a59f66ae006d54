"""MLflow tracking of a training: parameters, per-epoch metrics, artifacts, a registered model;
and the store's layout under the data root (`MlflowStore`), defined here once.

Nothing is pickled: the checkpoint is a state_dict bundle (`torch.save`, loaded with
`weights_only=True`) logged as an artifact.  The registered model version is an MLflow pyfunc model
saved from code (`evaluation/serving.py`, which the caller saves and hands to `finish`), so
`mlflow.pyfunc.load_model("models:/NAME/VERSION")` and `mlflow models serve` take it.  A run's
inputs' data versions are its MLflow dataset inputs (the UI's Dataset column), and the project's
experiments are typed as model development, so the UI opens them on their runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: the store below is used where torch is not loaded (`d3ke ui mlflow`)
    from d3ke_assets.learning.training import EpochRecord


# MLflow 3's UI opens an experiment without this tag on the GenAI traces overview; with it, on its runs.
# MLflow 3.17's UI instead follows a global GenAI / model-training switch (default GenAI), which a link
# sets with WORKFLOW_QUERY: the project's links carry it (`TrackedRun.experiment_url`)
EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"
WORKFLOW_QUERY = "workflowType=machine_learning"
MODEL_ARTIFACT = "model"  # the pyfunc model in a training run's artifacts; registered versions point at it


@dataclass(frozen=True)
class MlflowStore:
    """The project's MLflow store under a data root: runs and models in `<root>/mlflow/mlflow.db`
    (SQLite), each experiment's artifacts in `<root>/mlflow/artifacts/<experiment>`."""

    root: Path

    @property
    def folder(self) -> Path:
        return Path(self.root).expanduser().resolve() / "mlflow"  # absolute: URIs need it

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.folder / 'mlflow.db'}"

    @property
    def artifacts_root(self) -> Path:
        """Where `mlflow server` puts what the UI uploads, beside the experiments' own artifacts."""
        return self.folder / "artifacts"

    def artifacts_for(self, experiment: str) -> Path:
        return self.artifacts_root / experiment

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created with its artifacts in this store if new."""
        import mlflow

        self.folder.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        client = mlflow.MlflowClient(self.tracking_uri)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            return client.create_experiment(name, artifact_location=self.artifacts_for(name).as_uri(),
                                            tags={EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT})
        if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_DEVELOPMENT:  # created before the tag was set
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT)
        return exp.experiment_id


@dataclass
class TrackedRun:
    run_id: str
    experiment_id: str
    tracking_uri: str
    model_name: str | None = None
    model_version: str | None = None

    def ui_url(self, host: str = "http://127.0.0.1:5000") -> str:
        return f"{host}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def experiment_url(self, host: str = "http://127.0.0.1:5000") -> str:
        """The experiment's page, on its runs table (MLflow 3.17's UI needs WORKFLOW_QUERY for that)."""
        return f"{host}/#/experiments/{self.experiment_id}?{WORKFLOW_QUERY}"

    @classmethod
    def from_file(cls, path: Path) -> "TrackedRun":
        """The run an asset recorded (`mlflow_run.json`)."""
        return cls(**json.loads(Path(path).read_text()))


REGISTERED_MODEL_DESCRIPTION = (
    "D3KE models as MLflow pyfunc models saved from code (nothing pickled): mlflow.pyfunc.load_model("
    "'models:/NAME/VERSION') or `mlflow models serve -m models:/NAME/VERSION --env-manager local` (POST "
    "/invocations {\"inputs\": crops}). Input: uint8 (batch, S, S, 3) RGB crops at the size in the signature "
    "(a sequence model reads the batch as one video's consecutive frames); output per crop: every coordinate "
    "(<name>_deg, <name>_m, as the .mot of `d3ke predict`) and per-body scale factors (<body>_scale_x/_y/_z). "
    "The checkpoint inside loads with torch.load(weights_only=True).")


class TrainingTracker:
    """One MLflow run; `log_epoch` after each epoch, `finish` with the artifacts."""

    def __init__(self, tracking_uri: str, experiment_id: str, run_name: str, params: dict, tags: dict | None = None,
                 resume_run_id: str | None = None):
        """`resume_run_id`: the run of an interrupted training with the same inputs, continued
        (back to RUNNING, its epochs kept) instead of leaving it RUNNING for ever beside a new one."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no calls home from a lab machine
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri)
        if resume_run_id is not None:
            try:
                self.client.update_run(resume_run_id, status="RUNNING")
                self.run = TrackedRun(resume_run_id, experiment_id, tracking_uri)
                return
            except mlflow.exceptions.MlflowException:
                pass  # deleted in the meantime: a new run
        self.run = TrackedRun(self.client.create_run(experiment_id, run_name=run_name, tags=tags or {}).info.run_id,
                              experiment_id, tracking_uri)
        for key, value in _flatten(params).items():
            self.client.log_param(self.run.run_id, key, str(value)[:500])

    def end_stale(self, run_id: str) -> None:
        """Mark an interrupted run that will not be continued (its inputs changed) as KILLED."""
        try:
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, "KILLED")
        except Exception:  # noqa: BLE001 - a vanished run needs no ending
            pass

    def log_epoch(self, record: EpochRecord) -> None:
        metrics = {"train_loss": record.train_loss, "val_loss": record.val_loss,
                   "val_coordinate_mae_deg": record.val_coordinate_mae_deg,
                   "val_marker_error_mm": record.val_marker_error_mm, "lr": record.lr,
                   "data_wait_share": record.data_wait_share,
                   **{f"train_loss_{k}": v for k, v in record.terms.items()}}
        for key, value in metrics.items():
            self.client.log_metric(self.run.run_id, key, float(value), step=record.epoch)

    def log_data_versions(self, inputs: dict[str, str], contexts: dict[str, str], folders: dict[str, Path]) -> None:
        """Each input (name -> data version) as an MLflow dataset input: the version's first 32 hex
        digits as its digest, its folder as its source, `contexts` (name -> "training", "validation",
        ...) as MLflow's context tag."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        datasets = [DatasetInput(Dataset(name=name, digest=version[:32], source_type="local",
                                         source=json.dumps({"uri": str(folders.get(name, name))})),
                                 tags=[InputTag("mlflow.data.context", contexts.get(name, "input"))])
                    for name, version in sorted(inputs.items())]
        self.client.log_inputs(self.run.run_id, datasets=datasets)

    def finish(self, checkpoint: Path, config: dict, history: list[EpochRecord], model_name: str,
               status: str = "FINISHED", model_dir: Path | None = None) -> TrackedRun:
        """Log the artifacts and register a model version: `model_dir`, a saved pyfunc model, logged
        as `model` (the version's source), beside the bare checkpoint."""
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "config.json").write_text(json.dumps(config, indent=1, default=str))
            curve = tmp / "learning_curve.png"
            learning_curve_png(history, curve)
            self.client.log_artifact(self.run.run_id, str(tmp / "config.json"))
            self.client.log_artifact(self.run.run_id, str(curve))
        self.client.log_artifact(self.run.run_id, str(checkpoint), artifact_path="checkpoint")
        if model_dir is not None:
            self.client.log_artifacts(self.run.run_id, str(model_dir), artifact_path=MODEL_ARTIFACT)
        try:
            self.client.get_registered_model(model_name)
        except mlflow.exceptions.MlflowException:
            self.client.create_registered_model(model_name, description=REGISTERED_MODEL_DESCRIPTION)
        where = MODEL_ARTIFACT if model_dir is not None else "checkpoint"
        source = f"{self.client.get_run(self.run.run_id).info.artifact_uri}/{where}"
        version = self.client.create_model_version(model_name, source, run_id=self.run.run_id)
        self.run.model_name, self.run.model_version = model_name, str(version.version)
        self.client.set_terminated(self.run.run_id, status)
        return self.run

    def fail(self) -> None:
        self.client.set_terminated(self.run.run_id, "FAILED")


def log_evaluation_run(tracking_uri: str, experiment_id: str, run_name: str, params: dict,
                       metrics: dict[str, float], artifacts: list[Path], tags: dict | None = None) -> TrackedRun:
    """A finished MLflow run holding an evaluation: its inputs, headline metrics and files."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.create_run(experiment_id, run_name=run_name, tags=tags or {}).info.run_id
    for key, value in _flatten(params).items():
        client.log_param(run_id, key, str(value)[:500])
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return TrackedRun(run_id, experiment_id, tracking_uri)


def learning_curve_png(history: list[EpochRecord], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch + 1 for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(epochs, [h.train_loss for h in history], "o-", label="train")
    a.plot(epochs, [h.val_loss for h in history], "s-", label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(epochs, [h.val_coordinate_mae_deg for h in history], "o-", color="tab:red")
    b.set_xlabel("epoch")
    b.set_ylabel("validation coordinate MAE (deg)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
