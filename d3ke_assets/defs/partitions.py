"""Subject partitions of the chosen dataset, and its train / validation / test split."""

from __future__ import annotations

import dagster as dg

from d3ke_assets import settings
from d3ke_assets.sources.subjects import SubjectSplit, split_for


def current_split() -> SubjectSplit:
    return split_for(settings.dataset_name(), settings.get_preset().synthetic.n_subjects)


SUBJECT_SPLIT = current_split()
subject_partitions = dg.StaticPartitionsDefinition(list(SUBJECT_SPLIT.all))
