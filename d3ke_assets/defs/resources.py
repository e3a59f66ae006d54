"""Resources: where data lives, which dataset, and MLflow tracking."""

from pathlib import Path
from typing import Mapping, Optional

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
        """`<root>/<asset>[/<partition>]`; a partition key that is not a subject key (or one of the
        backbone study's backbones) is refused, so a crafted key (`../../etc`) cannot point outside
        the data root."""
        from d3ke_assets.evaluation.backbones import STUDY_BACKBONES

        folder = self.root() / asset
        if partition is None:
            return folder
        if not is_subject_key(partition) and partition not in STUDY_BACKBONES:
            raise D3keError(f"partition key {partition!r} is not a subject key like Subject_1: use one of the "
                            f"dataset's subject partitions")
        return folder / partition


class DatasetResource(dg.ConfigurableResource):
    """Which dataset, at which preset: the run's settings besides the data root (see `settings.Settings`)."""

    name: str = "synthetic"
    preset: str = settings.DEFAULT_PRESET
    seed: int = 0
    movi_root: Optional[str] = None
    lab_root: Optional[str] = None
    smplh_dir: Optional[str] = None
    synthetic_subjects: Optional[int] = None
    backbone_weights: Optional[str] = None
    model: Optional[str] = None  # a user's OpenSim model and its companions (`settings.Settings`)
    model_scale_setup: Optional[str] = None
    model_ik_tasks: Optional[str] = None
    mirror_map: Optional[str] = None
    amass_markers: Optional[str] = None
    ik_backend: str = "opensim"  # settings.IK_BACKENDS: ground truth's and the multi-step baseline's IK

    def run_settings(self, data_root: str = settings.DEFAULT_DATA_ROOT) -> settings.Settings:
        """The whole typed settings object these values give."""
        return settings.Settings(data_root=data_root, dataset=self.name, preset=self.preset, seed=self.seed,
                                 movi_root=self.movi_root, lab_root=self.lab_root, smplh_dir=self.smplh_dir,
                                 synthetic_subjects=self.synthetic_subjects, backbone_weights=self.backbone_weights,
                                 model=self.model, model_scale_setup=self.model_scale_setup,
                                 model_ik_tasks=self.model_ik_tasks, mirror_map=self.mirror_map,
                                 amass_markers=self.amass_markers, ik_backend=self.ik_backend)

    def checked_name(self) -> str:
        return settings.dataset_name(self.name)

    def preset_settings(self) -> settings.Preset:
        return settings.get_preset(self.preset, self.synthetic_subjects)

    def synthetic_size(self) -> settings.SyntheticSize:
        return self.preset_settings().synthetic

    def split(self) -> SubjectSplit:
        return split_for(self.checked_name(), self.synthetic_size().n_subjects, self.lab_root)

    def crop_px(self) -> int:
        return self.preset_settings().crop_px


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


def resources_for(run: settings.Settings, from_environment: Mapping[str, str] | None = None
                  ) -> dict[str, dg.ConfigurableResource]:
    """The resources of `run`'s settings.  `from_environment`: field -> the variable it came from;
    those values are given as `dg.EnvVar`, so the UI shows where each value came from."""
    sources = from_environment or {}

    def value(name: str):
        var = sources.get(name)
        if var is None:
            return getattr(run, name)
        return dg.EnvVar.int(var) if name in ("seed", "synthetic_subjects") else dg.EnvVar(var)

    root = value("data_root")
    return {
        "data_root": DataRootResource(path=root),
        "dataset": DatasetResource(name=value("dataset"), preset=value("preset"), seed=value("seed"),
                                   movi_root=value("movi_root"), lab_root=value("lab_root"),
                                   smplh_dir=value("smplh_dir"),
                                   synthetic_subjects=value("synthetic_subjects"),
                                   backbone_weights=value("backbone_weights"), model=value("model"),
                                   model_scale_setup=value("model_scale_setup"),
                                   model_ik_tasks=value("model_ik_tasks"), mirror_map=value("mirror_map"),
                                   amass_markers=value("amass_markers"), ik_backend=value("ik_backend")),
        "mlflow": MlflowTrackingResource(data_root=root),
    }
