"""The Celery app of the project's workers: `celery -A d3ke_assets.deploy.celery_app worker -Q dagster`.

It is dagster_celery's own app (`dagster_celery.app`: the same `dagster` queue, task names and
routes), but it takes the broker and results backend from D3KE_CELERY_BROKER and
D3KE_CELERY_BACKEND, the variables the scale-out code location's executor reads
(d3ke_assets.deploy.scale_defs), so workers and runs are configured in one place.  It imports
the project's definitions here, in the worker's main process before the prefork pool forks, so a
step does not pay for importing torch and OpenSim.
"""

from __future__ import annotations

import os

from celery import Celery
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from d3ke_assets.errors import D3keError
from d3ke_assets.deploy import preload, run_launcher_defs, scale_defs

BROKER_ENV = scale_defs.BROKER_ENV
BACKEND_ENV = scale_defs.BACKEND_ENV


def make_worker_app(broker_url: str, backend_url: str) -> Celery:
    """dagster_celery's app with this broker and backend, and its tasks (execute a step, a run, resume a run)."""
    app = make_app(CeleryExecutor.for_cli(broker=broker_url, backend=backend_url).app_args())
    # A step or a run takes seconds to hours: a worker should hold only the task it is executing.
    # With early acknowledgement a worker of concurrency 1 acknowledges its task when it starts and
    # reserves the next one, which another, idle worker then cannot take; late acknowledgement, with
    # the prefetch of 1 dagster_celery's config already sets, keeps the queue's tasks for whichever
    # worker is free (Celery's "prefetch limits" advice for long tasks).
    app.conf.task_acks_late = True
    create_task(app)
    create_execute_job_task(app)
    create_resume_job_task(app)
    return app


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise D3keError(f"{name} is not set: export the broker / results backend URL the runs use, "
                        f"e.g. {name}=redis://127.0.0.1:6379/0")
    return value


app = make_worker_app(_required(BROKER_ENV), _required(BACKEND_ENV))
# imported before the pool forks (see the module docstring): step tasks of the Celery executor, and
# whole runs of the Celery run launcher
PRELOADED = (scale_defs.defs, run_launcher_defs.defs, preload)
