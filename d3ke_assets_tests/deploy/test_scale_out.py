"""Scale-out: the subject assets on Celery workers (Redis broker) with Dagster's storage in
PostgreSQL, concurrency pools that hold, and the deployment examples of docs/deploy/.

The servers are real (redis-server, PostgreSQL, `celery worker` processes), started here on free
loopback ports in temporary folders and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import yaml

from d3ke_assets.defs import pools
from d3ke_assets.deploy import services
from d3ke_assets.ui import servers
from d3ke_assets_tests.support.servers import listening_addresses, require_program

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"
SCALE_DEFS = "d3ke_assets.deploy.scale_defs"
RUN_LAUNCHER_DEFS = "d3ke_assets.deploy.run_launcher_defs"
SUBJECTS = [f"Subject_{i}" for i in range(1, 5)]
STEPS = ["raw_subject", "mocap_markers", "opensim_gt", "frames"]


def _require_servers() -> None:
    for program in ("redis-server", "initdb", "postgres"):
        require_program(program)


def _tails(paths) -> str:
    return "\n".join(f"--- {p.name}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-20:])
                     for p in paths if p.is_file())


def _celery_workers_of_steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker (node name) that executed it, from the worker's engine event."""
    out = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        worker = event.engine_event_data.metadata.get("Celery worker") if event.engine_event_data else None
        if worker is not None:
            out[record.step_key] = worker.value
    return out


@contextlib.contextmanager
def _servers(tmp_path, monkeypatch, instance_yaml: str):
    """Redis and PostgreSQL on loopback, DAGSTER_HOME with docs/deploy/`instance_yaml` as is, and
    the settings of a 4-subject smoke dataset under tmp_path/data; yields (data root, redis, pg)."""
    _require_servers()
    root, home = tmp_path / "data", tmp_path / "dagster_home"
    root.mkdir()
    home.mkdir()
    shutil.copy(DEPLOY / instance_yaml, home / "dagster.yaml")  # the documented example, as is
    for key, value in {"D3KE_PRESET": "smoke", "D3KE_SYNTHETIC_SUBJECTS": "4", "D3KE_DATA_ROOT": str(root),
                       "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(key, value)
    with services.redis_server(tmp_path / "redis") as redis, services.postgres_server() as pg:
        assert listening_addresses(redis.port) == listening_addresses(pg.port) == {"127.0.0.1"}
        for key, value in pg.dagster_env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("D3KE_CELERY_BROKER", redis.url(0))
        monkeypatch.setenv("D3KE_CELERY_BACKEND", redis.url(1))
        yield root, redis, pg


def test_celery_workers_materialize_subject_partitions_into_postgres(tmp_path, monkeypatch):
    """opensim_model, then 4 subject partitions (raw_subject -> mocap_markers -> opensim_gt -> frames)
    as 4 concurrent runs whose steps two Celery workers take from Redis; runs and events in
    PostgreSQL through docs/deploy/dagster-postgres.yaml."""
    import psycopg2

    with _servers(tmp_path, monkeypatch, "dagster-postgres.yaml") as (root, redis, pg):
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert pools.ensure_pool_limits(instance) == {"opensim": os.cpu_count(), "gpu": 1}
        with services.celery_workers(2, redis.url(0), redis.url(1), tmp_path / "workers") as workers, \
                services.run_orchestrators(len(SUBJECTS), preload=(SCALE_DEFS,)) as orchestrators:
            model = orchestrators.execute(SCALE_DEFS, "defs", "opensim_model_job", [None], timeout_s=300)
            subjects = orchestrators.execute(SCALE_DEFS, "defs", "subject_data_job", SUBJECTS, timeout_s=300)
            failed = [o for o in model + subjects if not o.success]
            assert not failed, f"runs failed: {failed}\n{_tails(workers.logs)}"

        for subject in SUBJECTS:
            assert (root / "frames" / subject / "_stamp.json").is_file(), f"{subject}: frames were not written"

        run_ids = [o.run_id for o in model + subjects]
        with dg.DagsterInstance.get() as instance:
            records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
            assert {r.dagster_run.run_id: r.dagster_run.status for r in records} == {
                run_id: dg.DagsterRunStatus.SUCCESS for run_id in run_ids}
            partitions = instance.get_materialized_partitions(dg.AssetKey("frames"))
            assert partitions == set(SUBJECTS)
            executed_by = {o.partition: _celery_workers_of_steps(instance, o.run_id) for o in subjects}
            model_worker = _celery_workers_of_steps(instance, model[0].run_id)
            assert pools.ensure_pool_limits(instance) == {"opensim": os.cpu_count(), "gpu": 1}  # kept, not reset
            assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1
            assert instance.event_log_storage.get_concurrency_info("opensim").slot_count == os.cpu_count()

        # every step ran on a Celery worker, and both workers took steps
        assert set(model_worker) == {"opensim_model"}
        for subject, steps in executed_by.items():
            assert set(steps) == set(STEPS), f"{subject}: steps without a Celery worker event: {steps}"
        used = {w for steps in executed_by.values() for w in steps.values()} | set(model_worker.values())
        assert used <= set(workers.names), used
        assert len(used) >= 2, f"every step went to one worker: {executed_by}"

        # and it is PostgreSQL that holds them: read its tables directly
        conn = psycopg2.connect(**pg.connect_args())
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (run_ids,))
                assert dict(cur.fetchall()) == {run_id: "SUCCESS" for run_id in run_ids}
                cur.execute("SELECT asset_key, partition FROM event_logs WHERE run_id = ANY(%s) "
                            "AND dagster_event_type = 'ASSET_MATERIALIZATION'", (run_ids,))
                materialized = {(dg.AssetKey.from_db_string(key).to_user_string(), part) for key, part in cur.fetchall()}
                cur.execute("SELECT concurrency_key, \"limit\" FROM concurrency_limits")
                limits = dict(cur.fetchall())
        finally:
            conn.close()
        assert materialized == {("opensim_model", None)} | {(a, s) for a in STEPS for s in SUBJECTS}
        assert limits == {"opensim": os.cpu_count(), "gpu": 1}



def test_celery_run_launcher_gives_each_subject_run_to_one_free_worker(tmp_path, monkeypatch):
    """docs/deploy/dagster-celery-run-launcher.yaml: each launched run is one Celery task; a worker
    executes the whole run in its own process.  Runs are submitted to a webserver on the run
    launcher's code location and the daemon launches them from the queue, as from the UI.  Two
    subject runs launched at once with two idle workers go one to each (a worker holds only the
    run it executes: late acknowledgement)."""
    from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

    subjects = SUBJECTS[:2]
    with _servers(tmp_path, monkeypatch, "dagster-celery-run-launcher.yaml") as (root, redis, pg):
        workspace = servers.module_workspace(tmp_path / "workspace.yaml", RUN_LAUNCHER_DEFS, "defs")
        with services.celery_workers(2, redis.url(0), redis.url(1), tmp_path / "workers") as workers, \
                servers.dagster_services(tmp_path / "dagster_home", root, workspace=workspace) as (web, _), \
                dg.DagsterInstance.get() as instance:
            assert type(instance.run_launcher).__name__ == "CeleryRunLauncher"
            model = services.launch_runs(web.url, "opensim_model_job", [None], timeout_s=300, workers=workers)
            runs = services.launch_runs(web.url, "subject_data_job", subjects, timeout_s=300, workers=workers)
            failed = [o for o in model + runs if not o.success]
            assert not failed, f"runs failed: {failed}\n{_tails(workers.logs)}"
            assert instance.get_materialized_partitions(dg.AssetKey("frames")) == set(subjects)
            executed_by = {}
            for outcome in runs:
                task_id = instance.get_run_by_id(outcome.run_id).tags[DAGSTER_CELERY_TASK_ID_TAG]
                executed_by[outcome.partition] = [name for name, log in zip(workers.names, workers.logs)
                                                  if f"[{task_id}] succeeded" in log.read_text(errors="replace")]
                steps = {r.step_key: r.dagster_event.pid for r in instance.all_logs(
                    outcome.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)}
                assert sorted(steps) == sorted(STEPS), steps
                assert len(set(steps.values())) == 1 and os.getpid() not in steps.values(), \
                    f"{outcome.partition}: the steps should run in one worker process: {steps}"
        for subject in subjects:
            assert (root / "frames" / subject / "_stamp.json").is_file(), f"{subject}: frames were not written"
    assert sorted(w for names in executed_by.values() for w in names) == sorted(workers.names), executed_by


def test_scale_out_code_locations_load_by_module_name():
    """`dagster dev -m d3ke_assets.deploy.scale_defs` finds exactly one Definitions object (two at
    module scope is an error), with the Celery executor; likewise the run launcher's location (steps
    in-process inside the worker) and the benchmark's."""
    from d3ke_assets.benchmarks import scale
    from d3ke_assets.deploy import run_launcher_defs, scale_defs

    for module, attribute, executor in ((scale_defs, "defs", "d3ke_celery_executor"),
                                        (run_launcher_defs, "defs", "in_process"),
                                        (scale, "local_defs", "d3ke_multiprocess_executor")):
        # what `-m` autodiscovery looks for: the Definitions objects at module scope
        found = [name for name, value in vars(module).items() if isinstance(value, dg.Definitions)]
        assert found == [attribute], module.__name__
        job = getattr(module, attribute).resolve_job_def("subject_data_job")
        assert job.executor_def.name == executor
        assert sorted(n.name for n in job.graph.nodes) == sorted(STEPS)


# --- pools -------------------------------------------------------------------------------------

PROBE_TAG = "d3ke/probe_dir"
PROBE_WAIT_S = 300.0  # only a fallback: each probe step ends on an event long before


def _other_probe_started(folder: Path, run_id: str) -> bool:
    return any(p.stem != run_id for p in folder.glob("*.begin"))


def _other_probe_blocked_on_the_pool(context) -> bool:
    """Another run of this probe has logged that its step waits for a `gpu` slot."""
    runs = context.instance.get_runs(dg.RunsFilter(tags={PROBE_TAG: context.run.tags[PROBE_TAG]}))
    return any(record.dagster_event is not None and record.dagster_event.message is not None
               and record.dagster_event.message.startswith(f"Step blocked by limit for pool {pools.GPU_POOL}")
               for run in runs if run.run_id != context.run_id
               for record in context.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT))


@dg.op(pool=pools.GPU_POOL)
def gpu_step(context) -> None:
    """Holds a `gpu` slot until the other probe run's step has started too (the pool let both in) or
    that run has logged that its step is blocked on the pool; records when it held the slot (a
    file per run, in the run's probe folder).  Ordering by events, so a slow start-up cannot fake
    either outcome."""
    folder = Path(context.run.tags[PROBE_TAG])
    begin = time.time()
    (folder / f"{context.run_id}.begin").write_text(str(begin))
    deadline = time.monotonic() + PROBE_WAIT_S
    while not (_other_probe_started(folder, context.run_id) or _other_probe_blocked_on_the_pool(context)):
        if time.monotonic() > deadline:
            (folder / f"{context.run_id}.timeout").write_text("")
            break
        time.sleep(0.1)
    (folder / f"{context.run_id}.txt").write_text(f"{begin} {time.time()}")


@dg.job(executor_def=dg.in_process_executor)
def gpu_probe_job():
    gpu_step()


gpu_probe_defs = dg.Definitions(jobs=[gpu_probe_job])


def test_assets_declare_their_pools():
    from d3ke_assets.definitions import ALL_ASSETS

    declared = {a.key.to_user_string(): a.op.pool for a in ALL_ASSETS}
    assert declared == {"opensim_model": "opensim", "raw_subject": None, "mocap_markers": None, "opensim_gt": "opensim",
                        "frames": None, "frame_model": "gpu", "sequence_model": "gpu", "subject_evaluation": "gpu",
                        "evaluation": None, "robustness_report": "gpu", "current_policy_evaluation": "gpu",
                        "backbone_study": "gpu", "backbone_comparison": None}


def test_gpu_pool_limit_keeps_two_runs_apart(tmp_path, monkeypatch):
    """Two runs at once, each with one step in the `gpu` pool: with the project's limit (1) the
    steps do not overlap (the first holds its slot until the second says it is blocked); with the
    limit raised to 2 they do (so the first check can fail).

    On PostgreSQL (docs/deploy/dagster-postgres.yaml), the storage the deployment docs give for runs
    in parallel: Dagster 1.13's SQLite storage claims a slot without a row lock (SQLite ignores
    FOR UPDATE SKIP LOCKED), so two claims at the same instant can both win there; seen here in 2 of
    5 runs of this test under load, never on PostgreSQL."""
    _require_servers()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster-postgres.yaml", home / "dagster.yaml")  # the documented example, as is
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    intervals = {}
    with services.postgres_server() as pg, services.run_orchestrators(
            2, env=pg.dagster_env(), preload=(__name__,)) as orchestrators:
        for key, value in pg.dagster_env().items():
            monkeypatch.setenv(key, value)
        for limit in (1, 2):
            with dg.DagsterInstance.get() as instance:
                if limit == 1:
                    assert pools.ensure_pool_limits(instance)["gpu"] == 1  # the project's own limit
                else:
                    pools.ensure_pool_limits(instance, {"gpu": limit}, replace=True)
            folder = tmp_path / f"limit_{limit}"
            folder.mkdir()
            outcomes = orchestrators.execute(__name__, "gpu_probe_defs", "gpu_probe_job", [None, None],
                                             tags={PROBE_TAG: str(folder)}, timeout_s=2 * PROBE_WAIT_S + 300)
            assert all(o.success for o in outcomes), outcomes
            assert not list(folder.glob("*.timeout")), f"limit {limit}: a probe step waited in vain"
            intervals[limit] = sorted(tuple(map(float, p.read_text().split())) for p in folder.glob("*.txt"))
    (first, second) = intervals[1]
    assert second[0] >= first[1], f"limit 1: the gpu steps overlapped: {intervals[1]}"
    (first, second) = intervals[2]
    assert second[0] < first[1], f"limit 2: the gpu steps ran one after the other: {intervals[2]}"


def test_project_instance_gets_the_pool_limits_and_keeps_a_users(tmp_path, monkeypatch):
    """The instance `d3ke demo` / `d3ke ui dagster` prepare (cli._prepare_instance) has the
    limits; a limit the user changed since is left alone."""
    from d3ke_assets import cli, settings

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    run = settings.Settings(data_root=str(tmp_path), preset="smoke")
    cli._prepare_instance(run)
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        storage = instance.event_log_storage
        assert storage.get_concurrency_info("gpu").slot_count == 1
        assert storage.get_concurrency_info("opensim").slot_count == os.cpu_count()
        storage.set_concurrency_slots("gpu", 2)  # as `dagster instance concurrency set gpu 2` would
    cli._prepare_instance(run)
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 2


HOLDS_GPU = """
import time
import dagster as dg

@dg.asset(pool="gpu")
def holds_gpu():
    time.sleep(900)  # until the test kills it

with dg.DagsterInstance.get() as instance:
    dg.materialize([holds_gpu], instance=instance, tags={"d3ke/launched_by": "d3ke demo"})
"""


def test_slots_of_a_killed_demo_run_are_released(tmp_path, monkeypatch):
    """A demo killed with SIGKILL while training holds the only `gpu` slot; the next `d3ke demo`
    frees it (and marks that run failed) instead of waiting forever.  A live run keeps its slot."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        pools.ensure_pool_limits(instance)
    child = subprocess.Popen([sys.executable, "-c", HOLDS_GPU], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with dg.DagsterInstance.get() as instance:
            storage = instance.event_log_storage
            deadline = time.monotonic() + 300  # a fallback: the loop ends when the child claims the slot
            while not storage.get_concurrency_info("gpu").claimed_slots:
                assert child.poll() is None and time.monotonic() < deadline, "the child never claimed the gpu slot"
                time.sleep(0.2)
            (slot,) = storage.get_concurrency_info("gpu").claimed_slots
            assert pools.release_dead_claims(instance) == []  # alive: its slot is its own
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            assert instance.get_run_by_id(slot.run_id).status == dg.DagsterRunStatus.STARTED  # nobody told Dagster
            assert pools.release_dead_claims(instance) == [slot.run_id]
            assert storage.get_concurrency_info("gpu").claimed_slots == []
            assert instance.get_run_by_id(slot.run_id).status == dg.DagsterRunStatus.FAILURE
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


# --- docs/deploy --------------------------------------------------------------------------------

# dagster_instance_config (private): no public call validates a dagster.yaml without building what it
# names (a PostgreSQL connection, dagster-k8s, which is not installed here)
def test_postgres_example_is_valid_instance_config(monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(DEPLOY), "dagster-postgres.yaml")
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert config["concurrency"]["pools"]["granularity"] == "op"


def test_run_launcher_example_is_valid_instance_config():
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(DEPLOY), "dagster-celery-run-launcher.yaml")
    assert config["run_launcher"]["class"] == "CeleryRunLauncher"
    assert config["run_launcher"]["config"]["default_queue"] == services.CELERY_QUEUE
    postgres = yaml.safe_load((DEPLOY / "dagster-postgres.yaml").read_text())
    assert config["storage"] == postgres["storage"], "the two examples should name the same storage"


def test_celery_example_is_valid_executor_config(monkeypatch):
    from dagster_celery.cli import get_validated_config

    monkeypatch.setenv("D3KE_CELERY_BROKER", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("D3KE_CELERY_BACKEND", "redis://127.0.0.1:6379/1")
    config = get_validated_config(str(DEPLOY / "celery-executor.yaml"))
    assert config["broker"] == "redis://127.0.0.1:6379/0" and config["backend"] == "redis://127.0.0.1:6379/1"


# Field names of dagster-k8s 0.29 (not installed here): the k8s_job_executor's config and the
# `dagster-k8s/config` tag (USER_DEFINED_K8S_JOB_CONFIG_SCHEMA in dagster_k8s/job.py).
K8S_EXECUTOR_FIELDS = {"job_image", "image_pull_policy", "image_pull_secrets", "service_account_name",
                       "env_config_maps", "env_secrets", "env_vars", "volume_mounts", "volumes", "labels",
                       "resources", "scheduler_name", "security_context", "load_incluster_config",
                       "kubeconfig_file", "job_namespace", "retries", "max_concurrent", "tag_concurrency_limits",
                       "step_k8s_config", "per_step_k8s_config", "enable_owner_references",
                       "step_dependency_config"}
K8S_TAG_FIELDS = {"container_config", "pod_template_spec_metadata", "pod_spec_config", "job_config", "job_metadata",
                  "job_spec_config", "merge_behavior"}


def test_k8s_examples_and_the_gpu_op_tags():
    """The instance example has a valid shape; the executor example and the GPU assets' op tag use
    dagster-k8s's fields, and the tag asks for one NVIDIA GPU."""
    from dagster._core.instance.config import dagster_instance_config

    from d3ke_assets.definitions import ALL_ASSETS

    config, _ = dagster_instance_config(str(DEPLOY), "dagster-k8s.yaml")
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    executor = yaml.safe_load((DEPLOY / "k8s-executor.yaml").read_text())["execution"]["config"]
    assert set(executor) <= K8S_EXECUTOR_FIELDS, set(executor) - K8S_EXECUTOR_FIELDS
    assert set(executor["step_k8s_config"]) <= K8S_TAG_FIELDS
    tag = pools.GPU_OP_TAGS["dagster-k8s/config"]
    assert set(tag) <= K8S_TAG_FIELDS
    assert tag["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    tagged = sorted(a.key.to_user_string() for a in ALL_ASSETS if "dagster-k8s/config" in a.op.tags)
    assert tagged == ["backbone_study", "current_policy_evaluation", "frame_model", "robustness_report",
                      "sequence_model", "subject_evaluation"]
    for asset in ALL_ASSETS:
        if asset.key.to_user_string() in tagged:  # stored JSON-encoded on the op
            assert yaml.safe_load(asset.op.tags["dagster-k8s/config"]) == tag
