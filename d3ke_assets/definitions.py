"""The one Dagster `Definitions` object of the project (loaded by workspace.yaml)."""

from __future__ import annotations

import dagster as dg

from d3ke_assets.defs.automation import build_automation
from d3ke_assets.defs.evaluation_assets import evaluation, robustness_report
from d3ke_assets.defs.frames_assets import frames
from d3ke_assets.defs.ground_truth_assets import mocap_markers, opensim_gt
from d3ke_assets.defs.model_assets import opensim_model
from d3ke_assets.defs.raw_assets import raw_subject
from d3ke_assets.defs.training_assets import frame_model, sequence_model
from d3ke_assets.defs.resources import resources_from_environment

ALL_ASSETS = [opensim_model, raw_subject, mocap_markers, opensim_gt, frames, frame_model, sequence_model,
              evaluation, robustness_report]

raw_subject_sensor, stale_subjects_schedule = build_automation(ALL_ASSETS)

# A named job over every asset: what a client launches a selection of assets through (GraphQL,
# d3ke_assets.ui.graphql), instead of Dagster's internal implicit job
ASSETS_JOB_NAME = "all_assets"
all_assets_job = dg.define_asset_job(ASSETS_JOB_NAME, selection=ALL_ASSETS)

defs = dg.Definitions(assets=ALL_ASSETS, jobs=[all_assets_job], sensors=[raw_subject_sensor],
                      schedules=[stale_subjects_schedule], resources=resources_from_environment())
