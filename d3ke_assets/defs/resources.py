"""Resources: where data lives, which dataset, and MLflow tracking."""

from pathlib import Path
from typing import Optional

import dagster as dg

from d3ke_assets import settings
from d3ke_assets.errors import D3keError
from d3ke_assets.learning.tracking import MlflowStore
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
    """MLflow tracking on the project's store under the data root (layout: `MlflowStore`)."""

    data_root: str = settings.DEFAULT_DATA_ROOT

    def store(self) -> MlflowStore:
        return MlflowStore(settings.data_root(self.data_root))

    def folder(self) -> Path:
        return self.store().folder

    @property
    def tracking_uri(self) -> str:
        return self.store().tracking_uri

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created with its artifacts under the data root if new."""
        return self.store().experiment_id(name)


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
