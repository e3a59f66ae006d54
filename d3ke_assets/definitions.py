"""The project's Dagster `Definitions`: `build_definitions(settings)`, and `defs` from the environment
(what `dagster dev`, `dg` and workspace.yaml load)."""

from __future__ import annotations

import os
from typing import Mapping

import dagster as dg

from d3ke_assets.defs.automation import build_automation
from d3ke_assets.defs.backbone_study_assets import backbone_comparison, backbone_study
from d3ke_assets.defs.evaluation_assets import evaluation, robustness_report, subject_evaluation
from d3ke_assets.defs.frames_assets import frames
from d3ke_assets.defs.ground_truth_assets import mocap_markers, opensim_gt
from d3ke_assets.defs.model_assets import opensim_model
from d3ke_assets.defs.partitions import partitioned_by_subject, subject_partitions, subject_split
from d3ke_assets.defs.raw_assets import raw_subject
from d3ke_assets.defs.study_assets import current_policy_evaluation
from d3ke_assets.defs.constants import STUDY_ASSETS
from d3ke_assets.defs.resources import resources_for
from d3ke_assets.defs.training_assets import frame_model, sequence_model
from d3ke_assets.settings import Settings

ASSETS = [opensim_model, raw_subject, mocap_markers, opensim_gt, frames, frame_model, sequence_model,
          subject_evaluation, evaluation, robustness_report, current_policy_evaluation, backbone_study,
          backbone_comparison]


# A named job over every asset: what a client launches a selection of assets through (GraphQL,
# d3ke_assets.ui.graphql), instead of Dagster's internal implicit job
ASSETS_JOB_NAME = "all_assets"
# the backbone study's assets: partitioned by backbone, which a job of subject partitions cannot hold
BACKBONE_STUDY_JOB_NAME = "backbone_study_job"


def build_definitions(run: Settings, from_environment: Mapping[str, str] | None = None) -> dg.Definitions:
    """Assets partitioned by the subjects of `run`'s dataset, its resources, the sensor and schedule.

    `from_environment`: field -> variable for the settings read from the environment (shown as
    `dg.EnvVar` in the UI)."""
    partitions = subject_partitions(run)
    assets = partitioned_by_subject(ASSETS, partitions)
    # the studies (constants.STUDY_ASSETS) run on request, never on the schedule
    sensor, schedule = build_automation([a for a in assets if a.key not in STUDY_ASSETS], partitions, run.rerun_cron,
                                        test_subjects=subject_split(run).test)
    by_backbone = [backbone_study.key]
    jobs = [dg.define_asset_job(ASSETS_JOB_NAME, selection=[a for a in assets if a.key not in by_backbone]),
            dg.define_asset_job(BACKBONE_STUDY_JOB_NAME, selection=[backbone_study, backbone_comparison],
                                description="The backbone study: one partition per backbone, then the comparison.")]
    return dg.Definitions(assets=assets, jobs=jobs,
                          sensors=[sensor], schedules=[schedule], resources=resources_for(run, from_environment))


SETTINGS = Settings.from_environment(os.environ)  # the edge: Dagster loads this module
defs = build_definitions(SETTINGS, Settings.from_environment_sources(os.environ))
ALL_ASSETS = partitioned_by_subject(ASSETS, subject_partitions(SETTINGS))
