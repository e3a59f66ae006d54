"""Resources: where data lives, which dataset, and MLflow tracking."""

from pathlib import Path
from typing import Optional

import dagster as dg

from d3ke_assets import settings
from d3ke_assets.errors import D3keError
from d3ke_assets.sources.subjects import SubjectSplit, is_subject_key, split_for


class DataRootResource(dg.ConfigurableResource):
    """Root folder of every asset's output (`D3KE_DATA_ROOT`, default `./data`)."""

    path: str = settings.DEFAULT_DATA_ROOT

    def root(self) -> Path:
        return settings.data_root(self.path)

    def asset_dir(self, asset: str, partition: str | None = None) -> Path:
        """`<root>/<asset>[/<partition>]`; a partition key that is not a subject key is refused, so a
        crafted key (`../../etc`) cannot point outside the data root."""
        folder = self.root() / asset
        if partition is None:
            return folder
        if not is_subject_key(partition):
            raise D3keError(f"partition key {partition!r} is not a subject key like Subject_1: use one of the "
                            f"dataset's subject partitions")
        return folder / partition


class DatasetResource(dg.ConfigurableResource):
    """`synthetic` (embedded, generated) or `movi` (the user's real downloads)."""

    name: str = "synthetic"
    preset: str = settings.DEFAULT_PRESET
    seed: int = 0
    movi_root: Optional[str] = None

    def checked_name(self) -> str:
        return settings.dataset_name(self.name)

    def synthetic_size(self) -> settings.SyntheticSize:
        return settings.get_preset(self.preset).synthetic

    def split(self) -> SubjectSplit:
        return split_for(self.checked_name(), self.synthetic_size().n_subjects)

    def crop_px(self) -> int:
        return settings.get_preset(self.preset).crop_px


class MlflowTrackingResource(dg.ConfigurableResource):
    """MLflow tracking on a SQLite store with artifacts, both under `<data root>/mlflow`."""

    data_root: str = settings.DEFAULT_DATA_ROOT

    def folder(self) -> Path:
        return settings.data_root(self.data_root) / "mlflow"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.folder() / 'mlflow.db'}"

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created with its artifacts under the data root if new."""
        import mlflow

        self.folder().mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        client = mlflow.MlflowClient(self.tracking_uri)
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return client.create_experiment(name, artifact_location=(self.folder() / "artifacts" / name).as_uri())


def resources_from_environment() -> dict[str, dg.ConfigurableResource]:
    """Resources configured from the D3KE_* environment variables (see settings)."""
    import os

    root = os.environ.get("D3KE_DATA_ROOT", settings.DEFAULT_DATA_ROOT)
    return {
        "data_root": DataRootResource(path=root),
        "dataset": DatasetResource(name=settings.dataset_name(), preset=settings.preset_name(),
                                   seed=int(os.environ.get("D3KE_SEED", "0")),
                                   movi_root=os.environ.get("D3KE_MOVI_ROOT")),
        "mlflow": MlflowTrackingResource(data_root=root),
    }
