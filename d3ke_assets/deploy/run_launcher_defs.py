"""The code location for dagster_celery's run launcher: every run is one Celery task, and a worker
executes the whole run, its steps one after another in the worker's process (the in-process
executor).  One subject partition is then one task: no orchestrator process per run and no
broker round trip per step, which is what scales a backfill over many subjects.

Use it with `docs/deploy/dagster-celery-run-launcher.yaml` as the instance's dagster.yaml and the
same workers as the Celery executor (`celery -A d3ke_assets.deploy.celery_app worker -Q
dagster`, which registers the run task too): `dagster dev -m d3ke_assets.deploy.run_launcher_defs`.
The jobs and assets are those of `scale_defs`; only the executor differs (a run inside a worker
must not hand its steps back to the queue: with one worker of concurrency 1 it would wait for itself).
"""

from __future__ import annotations

import dagster as dg

from d3ke_assets import definitions as project  # the module: one Definitions object at this module's scope
from d3ke_assets.deploy import scale_defs

defs = dg.Definitions.merge(project.defs, dg.Definitions(
    jobs=[scale_defs.opensim_model_job, scale_defs.subject_data_job], executor=dg.in_process_executor))
