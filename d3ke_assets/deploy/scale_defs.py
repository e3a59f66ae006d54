"""The project's definitions for a scale-out deployment: every step of every run is a Celery task,
executed by whichever worker takes it from the broker.

Load it as the code location (`dagster dev -m d3ke_assets.deploy.scale_defs`, or a
workspace.yaml naming this module) with D3KE_CELERY_BROKER and D3KE_CELERY_BACKEND set, and start
workers with `celery -A d3ke_assets.deploy.celery_app worker -Q dagster` (docs/deploy/README.md).
The assets, resources, sensor and schedule are the project's own (d3ke_assets.definitions).
"""

from __future__ import annotations

import warnings

import dagster as dg
from celery.exceptions import DuplicateTaskNameWarning
from dagster_celery import celery_executor

from d3ke_assets import definitions as project  # the module: one Definitions object at this module's scope
from d3ke_assets.defs.constants import OPENSIM_MODEL, SUBJECT_ASSETS

# dagster_celery registers its step task again at every submission (same name, same code): Celery 5.7
# warns about each; nothing is wrong.
warnings.filterwarnings("ignore", category=DuplicateTaskNameWarning)

BROKER_ENV = "D3KE_CELERY_BROKER"  # e.g. redis://127.0.0.1:6379/0
BACKEND_ENV = "D3KE_CELERY_BACKEND"  # e.g. redis://127.0.0.1:6379/1

d3ke_celery_executor = celery_executor.configured(
    {"broker": {"env": BROKER_ENV}, "backend": {"env": BACKEND_ENV}}, name="d3ke_celery_executor")

opensim_model_job = dg.define_asset_job("opensim_model_job", selection=[OPENSIM_MODEL])
subject_data_job = dg.define_asset_job("subject_data_job", selection=list(SUBJECT_ASSETS))  # their partitions

defs = dg.Definitions.merge(project.defs, dg.Definitions(jobs=[opensim_model_job, subject_data_job],
                                                         executor=d3ke_celery_executor))

