"""Subject partitions of the run's dataset, from the same settings as its resources."""

from __future__ import annotations

import dagster as dg

from d3ke_assets.defs.constants import PARTITIONED_ASSETS
from d3ke_assets.settings import Settings
from d3ke_assets.sources.subjects import SubjectSplit, split_for


def subject_split(run: Settings) -> SubjectSplit:
    return split_for(run.dataset, run.preset_settings().synthetic.n_subjects, run.lab_root)


def subject_partitions(run: Settings) -> dg.StaticPartitionsDefinition:
    """One partition per subject of the dataset (the synthetic one: the preset's number of them)."""
    return dg.StaticPartitionsDefinition(list(subject_split(run).all))


def partitioned_by_subject(assets: list[dg.AssetsDefinition], partitions: dg.PartitionsDefinition
                           ) -> list[dg.AssetsDefinition]:
    """The subject assets (`constants.PARTITIONED_ASSETS`) partitioned by `partitions`; the asset files
    leave the partitions to this, since which subjects exist is a setting of the run."""
    return [a.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=partitions))
            if a.key in PARTITIONED_ASSETS else a for a in assets]
