"""`d3ke bench scale`: wall time of materializing N subject partitions (raw_subject -> mocap_markers
-> opensim_gt -> frames) with 1 and with 2 workers, for the multiprocess executor and for Celery.

Everything runs for real on this machine: Redis, PostgreSQL (Dagster's run and event storage,
docs/deploy/dagster-postgres.yaml), the Celery workers, one run per subject partition.

- multiprocess, k workers: k run slots (like a run queue with `max_concurrent_runs: k`), each a
  long-lived process executing runs one after another with the multiprocess executor (steps in
  processes forked from a forkserver that has the project imported).
- Celery, k workers: every subject's run is submitted at once; k Celery workers of concurrency 1
  take their steps from Redis (dagster_celery's executor: one orchestrator process per run hands
  each step to the queue).
- Celery run launcher, k workers: every subject's run is launched at once through dagster_celery's
  `CeleryRunLauncher` (docs/deploy/dagster-celery-run-launcher.yaml); the same k workers take whole
  runs from Redis and execute their steps in-process (d3ke_assets.deploy.run_launcher_defs).  The
  runs are submitted to a webserver (dagster-graphql's client) and the daemon launches them from the
  run queue, as runs launched from the UI are; both servers start before the clock.

- no_orchestration, k workers (the machine's own ceiling for this work): k plain processes, each
  executing its share of the subjects one after another with `execute_in_process` on an ephemeral
  instance: no servers, no event storage, no process per run or step.  Its speed-up is what two
  cores of this machine give the same steps; the executors' are read against it.

Per-run overhead is kept out where a deployment would keep it out: workers and run slots are
started (and have imported the project) before the clock starts, and opensim_model, which every
subject needs, is materialized first, untimed.  Each condition starts on a fresh data root, so
every step computes.  The order of the conditions turns over from round to round (the machine is
noisy and PostgreSQL's tables grow as the runs go); the best of each condition is kept and every
round's wall time is reported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import dagster as dg

from d3ke_assets import definitions as project  # the module: one Definitions object at this module's scope
from d3ke_assets.defs.constants import SUBJECT_ASSETS
from d3ke_assets.deploy import preload, run_launcher_defs, scale_defs, services
from d3ke_assets.ui import servers
from d3ke_assets.versioning import is_complete

SUBJECT_STEPS = [k.to_user_string() for k in SUBJECT_ASSETS]
# PostgreSQL storage and the Celery run launcher (the other conditions do not launch through it)
DEPLOY_INSTANCE_YAML = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "dagster-celery-run-launcher.yaml"
EXECUTORS = ("multiprocess", "celery", "celery_run_launcher")
CEILING = "no_orchestration"

# The multiprocess condition's code location: the project's assets, the scale-out jobs, and the
# multiprocess executor (a subject's steps form a chain: one at a time within a run).
local_executor = dg.multiprocess_executor.configured(
    {"max_concurrent": 1, "start_method": {"forkserver": {"preload_modules": [__name__, preload.__name__]}}},
    name="d3ke_multiprocess_executor")
local_defs = dg.Definitions.merge(project.defs, dg.Definitions(
    jobs=[scale_defs.opensim_model_job, scale_defs.subject_data_job], executor=local_executor))


def _instance_yaml() -> str:
    if DEPLOY_INSTANCE_YAML.is_file():
        return DEPLOY_INSTANCE_YAML.read_text()
    return ("run_launcher:\n  module: dagster_celery.launcher\n  class: CeleryRunLauncher\n  config:\n"
            "    broker:\n      env: D3KE_CELERY_BROKER\n    backend:\n      env: D3KE_CELERY_BACKEND\n"
            "storage:\n  postgres:\n    postgres_db:\n" + "".join(
        f"      {k}:\n        env: {v}\n" for k, v in (("hostname", "DAGSTER_PG_HOST"), ("port", "DAGSTER_PG_PORT"),
                                                     ("username", "DAGSTER_PG_USERNAME"),
                                                     ("password", "DAGSTER_PG_PASSWORD"), ("db_name", "DAGSTER_PG_DB")))
            + "      scheme: postgresql+psycopg2\ntelemetry:\n  enabled: false\n")


def _step_seconds(instance: dg.DagsterInstance, run_ids: list[str]) -> float:
    """Time spent inside the steps (STEP_START to STEP_SUCCESS) of these runs, summed."""
    total = 0.0
    for run_id in run_ids:
        starts = {}
        for record in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START,
                                                         dg.DagsterEventType.STEP_SUCCESS}):
            if record.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                starts[record.step_key] = record.timestamp
            elif record.step_key in starts:
                total += record.timestamp - starts[record.step_key]
    return total


def _celery_workers_used(instance: dg.DagsterInstance, run_ids: list[str]) -> list[str]:
    used = set()
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            data = record.dagster_event.engine_event_data
            if data is not None and "Celery worker" in data.metadata:
                used.add(data.metadata["Celery worker"].value)
    return sorted(used)


def _workers_of_run_tasks(instance: dg.DagsterInstance, run_ids: list[str],
                          workers: services.CeleryWorkers) -> list[str]:
    """The workers whose logs say they executed these runs' Celery tasks (the launcher tags each run
    with its task id)."""
    from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

    task_ids = {instance.get_run_by_id(r).tags.get(DAGSTER_CELERY_TASK_ID_TAG) for r in run_ids} - {None}
    return sorted(name for name, log in zip(workers.names, workers.logs)
                  if any(f"[{t}] succeeded" in log.read_text(errors="replace") for t in task_ids))


def _in_process_runs(job_name: str, partitions: list[str | None], ready, go, results) -> None:
    """A process of the no_orchestration condition: runs `job_name` for each partition in this
    process, on an ephemeral instance.  The project, OpenSim and PyAV are imported (with this
    module) before it reports ready; the clock starts when `go` is set."""
    job = run_launcher_defs.defs.resolve_job_def(job_name)
    if ready is not None:
        ready.put(os.getpid())
        go.wait()
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            results.put([(p, job.execute_in_process(instance=instance, partition_key=p, raise_on_error=False).success)
                         for p in partitions])
    except Exception as exc:  # reported to the parent, which names the partitions
        results.put([(p, f"{type(exc).__name__}: {exc}") for p in partitions])


def _no_orchestration(workers: int, root: Path, env: dict, subjects: list[str], timeout_s: float = 1800.0) -> dict:
    """opensim_model in one process (untimed), then `workers` processes share the subjects
    (round-robin); the wall time from their common start to the last one's end."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    saved = dict(os.environ)
    os.environ.update({**env, "D3KE_DATA_ROOT": str(root)})  # a spawned process starts with this environment
    processes = []
    try:
        model = ctx.Process(target=_in_process_runs, args=("opensim_model_job", [None], None, None, results))
        model.start()
        model_outcome = results.get(timeout=timeout_s)
        model.join()
        if model_outcome[0][1] is not True:
            raise RuntimeError(f"{CEILING}: opensim_model failed: {model_outcome[0][1]}")
        processes = [ctx.Process(target=_in_process_runs, args=("subject_data_job", subjects[i::workers], ready, go,
                                                                results)) for i in range(workers)]
        for process in processes:
            process.start()
        for _ in processes:
            ready.get(timeout=timeout_s)
        start = time.perf_counter()
        go.set()
        outcomes = [pair for _ in processes for pair in results.get(timeout=timeout_s)]
        wall = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    missing = [s for s in subjects if not is_complete(root / "frames" / s)]
    return {"wall_s": wall, "run_ids": [], "run_task_workers": [],
            "failed": [f"{p}: {ok if isinstance(ok, str) else 'run failed'}" for p, ok in outcomes if ok is not True],
            "missing_frames": missing}


def _condition(executor: str, workers: int, root: Path, env: dict, subjects: list[str], broker: str, backend: str,
               work: Path) -> dict:
    """Materialize opensim_model (untimed), then every subject; the wall time of the subjects."""
    env = {**env, "D3KE_DATA_ROOT": str(root)}
    if executor == "celery_run_launcher":
        # the webserver creates the runs, the daemon launches them from the queue, the workers execute them
        workspace = servers.module_workspace(work / f"workspace_{workers}.yaml", run_launcher_defs.__name__, "defs")
        with services.celery_workers(workers, broker, backend, work / f"celery_runs_{workers}", env=env) as w, \
                servers.dagster_services(Path(os.environ["DAGSTER_HOME"]), root, env=env, workspace=workspace,
                                         webserver_log=work / f"webserver_{workers}.log",
                                         daemon_log=work / f"daemon_{workers}.log") as (web, _), \
                dg.DagsterInstance.get() as instance:
            def execute(job_name, partitions):
                return services.launch_runs(web.url, job_name, partitions, workers=w)
            model, start = execute("opensim_model_job", [None]), time.perf_counter()
            outcomes = execute("subject_data_job", subjects) if model[0].success else []
            wall = time.perf_counter() - start
            used = _workers_of_run_tasks(instance, [o.run_id for o in outcomes], w)
    else:
        if executor == "multiprocess":
            module, attribute = __name__, "local_defs"
            workers_ctx = contextlib.nullcontext()
            orchestrators = services.run_orchestrators(workers, env, preload=(__name__, preload.__name__),
                                                       warm_forkserver=True)
        else:
            module, attribute = scale_defs.__name__, "defs"
            workers_ctx = services.celery_workers(workers, broker, backend, work / f"celery_{workers}", env=env)
            orchestrators = services.run_orchestrators(len(subjects), env, preload=(scale_defs.__name__,))
        with workers_ctx, orchestrators as runs:
            model, start = runs.execute(module, attribute, "opensim_model_job", [None]), time.perf_counter()
            outcomes = runs.execute(module, attribute, "subject_data_job", subjects) if model[0].success else []
            wall = time.perf_counter() - start
        used = []
    if not model[0].success:
        raise RuntimeError(f"{executor}: opensim_model failed: {model[0]}")
    missing = [s for s in subjects if not is_complete(root / "frames" / s)]
    return {"wall_s": wall, "run_ids": [o.run_id for o in outcomes if o.run_id], "run_task_workers": used,
            "failed": [f"{o.partition}: {o.error or 'run failed'}" for o in outcomes if not o.success],
            "missing_frames": missing}


def _rounded(x: float, digits: int = 2) -> float | None:
    """None for NaN (a condition whose every round had a failure): JSON has no NaN."""
    return None if x != x else round(x, digits)


def _round_order(r: int) -> list[tuple[str, int]]:
    """The conditions of round `r`: the executors' order rotated by r, and 2 workers before 1 in
    odd rounds, so no condition always comes first or last."""
    names = (*EXECUTORS, CEILING)
    names = names[r % len(names):] + names[:r % len(names)]
    return [(name, k) for name in names for k in ((1, 2) if r % 2 == 0 else (2, 1))]


def bench_scale(data_root: Path | None = None, n_subjects: int = 6, preset: str = "demo", rounds: int = 1) -> dict:
    """Speed-up of 2 workers over 1 for the multiprocess executor and for Celery, on `n_subjects`
    subject partitions of `preset` size (demo: several seconds of work per subject on one core).
    The defaults fit in 10 minutes on 2 cores (8 subjects x 2 rounds took over 20): more subjects
    keep the last-partition tail and the per-run start-up a smaller share of the wall time, and
    more rounds show the noise; `bench_scale(n_subjects=8, rounds=2)` from Python gives both."""
    from d3ke_assets.defs.pools import ensure_pool_limits
    from d3ke_assets.settings import PRESETS

    if n_subjects < 2:
        raise ValueError("n_subjects: at least 2, or two workers have nothing to share")
    subjects = [f"Subject_{i}" for i in range(1, n_subjects + 1)]
    base = Path(tempfile.mkdtemp(prefix="d3ke-bench-scale-", dir=data_root))
    home = base / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(_instance_yaml())
    env = {"D3KE_PRESET": preset, "D3KE_DATASET": "synthetic", "DAGSTER_HOME": str(home),
           "D3KE_SYNTHETIC_SUBJECTS": str(max(n_subjects, PRESETS[preset].synthetic.n_subjects))}
    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", scale_defs.BROKER_ENV, scale_defs.BACKEND_ENV,
                                            *(f"DAGSTER_PG_{v}" for v in ("HOST", "PORT", "USERNAME", "PASSWORD",
                                                                          "DB")))}
    load_before = [round(x, 2) for x in os.getloadavg()]
    walls: dict[tuple[str, int], list[float]] = {}
    steps: dict[tuple[str, int], list[float]] = {}
    used: list[str] = []
    used_by_runs: list[str] = []
    order: list[str] = []
    failed: list[str] = []
    try:
        with services.redis_server(base / "redis") as redis, services.postgres_server() as pg:
            env.update({**pg.dagster_env(), scale_defs.BROKER_ENV: redis.url(0), scale_defs.BACKEND_ENV: redis.url(1)})
            os.environ.update({k: env[k] for k in saved if k in env})  # this process opens the instance too
            with dg.DagsterInstance.get() as instance:
                limits = ensure_pool_limits(instance)
            for r in range(rounds):
                for executor, workers in _round_order(r):
                    root = base / f"{executor}_{workers}_round{r}"
                    root.mkdir()
                    if executor == CEILING:
                        got = _no_orchestration(workers, root, env, subjects)
                    else:
                        got = _condition(executor, workers, root, env, subjects, redis.url(0), redis.url(1), base)
                    problems = got["failed"] + got["missing_frames"]
                    failed += [f"{executor}/{workers}, round {r}: {f}" for f in problems]
                    # a round with a failed subject did less work: its wall time is not comparable
                    walls.setdefault((executor, workers), []).append(float("nan") if problems else got["wall_s"])
                    order.append(f"{executor}/{workers}")
                    with dg.DagsterInstance.get() as instance:
                        steps.setdefault((executor, workers), []).append(_step_seconds(instance, got["run_ids"]))
                        if executor == "celery" and workers == 2:
                            used = _celery_workers_used(instance, got["run_ids"])
                        if executor == "celery_run_launcher" and workers == 2:
                            used_by_runs = got["run_task_workers"]
                    shutil.rmtree(root, ignore_errors=True)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(base, ignore_errors=True)

    best = {k: min((w for w in v if w == w), default=float("nan")) for k, v in walls.items()}  # w == w: not NaN
    out: dict = {"benchmark": "scale", "preset": preset, "subjects": n_subjects, "assets_per_subject": SUBJECT_STEPS,
                 "cpu_count": os.cpu_count(), "rounds": rounds, "order": order, "pool_limits": limits,
                 "storage": "postgresql",
                 "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    ceiling = best[(CEILING, 1)] / best[(CEILING, 2)]
    for executor in (*EXECUTORS, CEILING):
        one, two = best[(executor, 1)], best[(executor, 2)]
        out[executor] = {"1_worker_s": _rounded(one), "2_workers_s": _rounded(two), "speedup": _rounded(one / two, 3),
                         "per_subject_s_1_worker": _rounded(one / n_subjects),
                         "walls_s_by_round": {f"{k}_worker{'s' * (k > 1)}": [_rounded(w) for w in walls[(executor, k)]]
                                              for k in (1, 2)}}
        if executor != CEILING:
            inside = min(steps[(executor, 1)])
            out[executor].update({"speedup_share_of_no_orchestration": _rounded(one / two / ceiling, 3),
                                  "seconds_inside_steps_1_worker": round(inside, 2),
                                  "overhead_share_1_worker": _rounded(1 - inside / one, 3)})
    out["celery_workers_used_with_2"] = used
    out["celery_run_launcher_workers_used_with_2"] = used_by_runs
    out["ratio_celery_to_multiprocess_1_worker"] = _rounded(best[("celery", 1)] / best[("multiprocess", 1)], 3)
    out["failed"] = failed
    return out
