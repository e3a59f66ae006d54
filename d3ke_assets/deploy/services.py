"""Throwaway local servers for `d3ke bench scale` and the scale-out tests: Redis, PostgreSQL and
Celery workers, each a context manager that starts the server on loopback and stops it on exit;
processes that execute runs (`run_orchestrators`), and runs launched through a webserver
(`launch_runs`, for the run launcher).

They are for one machine and one session (no persistence, fsync off, a random password);
docs/deploy/ describes the real deployment.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from d3ke_assets.errors import D3keError
from d3ke_assets.processes import LOOPBACK, find_program, free_port, log_tail, stop_group, wait_for_port

INSTALL_HINT = "run scripts/system_packages.sh as root"
POSTGRES_DIRS = {name: (f"/usr/lib/postgresql/*/bin/{name}",) for name in ("initdb", "postgres")}
CELERY_APP = "d3ke_assets.deploy.celery_app"  # reads D3KE_CELERY_BROKER / D3KE_CELERY_BACKEND
CELERY_QUEUE = "dagster"  # the queue dagster_celery routes step tasks to


# --- Redis -------------------------------------------------------------------------------------

@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen
    log: Path

    def url(self, db: int = 0) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{db}"


@contextlib.contextmanager
def redis_server(workdir: Path, port: int | None = None, timeout_s: float = 30.0) -> Iterator[RedisServer]:
    """redis-server on 127.0.0.1 with no persistence (no RDB snapshots, no AOF), working in `workdir`."""
    program = find_program("redis-server", install_hint=INSTALL_HINT)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = workdir / "redis.log"
    argv = [program, "--bind", LOOPBACK, "--port", str(port), "--protected-mode", "yes", "--save", "",
            "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no", "--logfile", str(log)]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_for_port(port, "redis-server", timeout_s, process=process, log=log)
        yield RedisServer(port, process, log)
    finally:
        stop_group(process, signal.SIGTERM, 15.0, leader_only=True)


# --- PostgreSQL --------------------------------------------------------------------------------

@dataclass
class PostgresServer:
    port: int
    user: str
    password: str
    db_name: str
    process: subprocess.Popen
    data_dir: Path
    log: Path

    def connect_args(self, db_name: str | None = None) -> dict:
        """Keyword arguments of psycopg2.connect."""
        return {"host": LOOPBACK, "port": self.port, "user": self.user, "password": self.password,
                "dbname": db_name or self.db_name}

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{LOOPBACK}:{self.port}/{self.db_name}"

    def dagster_env(self) -> dict[str, str]:
        """The variables docs/deploy/dagster-postgres.yaml reads its connection from."""
        return {"DAGSTER_PG_HOST": LOOPBACK, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USERNAME": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.db_name}


def _as_postgres_user() -> dict:
    """Popen arguments that drop root to the `postgres` account (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise D3keError("running as root and there is no `postgres` user to run PostgreSQL as: "
                        f"{INSTALL_HINT}, or run as an ordinary user") from None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [],
            "env": {"PATH": "/usr/bin:/bin", "LANG": "C", "HOME": str(Path(account.pw_dir))}}


def _wait_for_login(server: PostgresServer, timeout_s: float) -> None:
    """Listening is not accepting logins yet ("the database system is starting up"): retry until it does."""
    import psycopg2

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg2.connect(**server.connect_args("postgres"), connect_timeout=2).close()
            return
        except psycopg2.OperationalError as exc:
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise D3keError(f"PostgreSQL on {LOOPBACK}:{server.port} does not accept logins "
                                f"({str(exc).strip().splitlines()[0]}){log_tail(server.log)}") from None
            time.sleep(0.2)


@contextlib.contextmanager
def postgres_server(port: int | None = None, user: str = "d3ke", db_name: str = "dagster",
                    timeout_s: float = 60.0) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster on 127.0.0.1 with password login and one empty database.

    The cluster lives in its own temporary folder (not a caller's folder: when we run as root the
    server runs as `postgres`, which must be able to reach it) and is deleted on exit.  fsync is
    off: the data is thrown away anyway.
    """
    initdb = find_program("initdb", *POSTGRES_DIRS["initdb"], install_hint=INSTALL_HINT)
    postgres = find_program("postgres", *POSTGRES_DIRS["postgres"], install_hint=INSTALL_HINT)
    drop = _as_postgres_user()
    base = Path(tempfile.mkdtemp(prefix="d3ke-postgres-"))
    process = None
    try:
        if drop:
            os.chown(base, drop["user"], drop["group"])
        password = secrets.token_hex(16)
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if drop:
            os.chown(pwfile, drop["user"], drop["group"])
        data_dir, log = base / "data", base / "postgres.log"
        done = subprocess.run([initdb, "-D", str(data_dir), "-U", user, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                               "-E", "UTF8", "--no-locale", "--no-sync"], capture_output=True, text=True, **drop)
        pwfile.unlink()
        if done.returncode != 0:
            raise D3keError(f"initdb failed with code {done.returncode}: "
                            f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        port = port or free_port()
        argv = [postgres, "-D", str(data_dir), "-h", LOOPBACK, "-p", str(port), "-k", "",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200"]
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True, **drop)
        server = PostgresServer(port, user, password, db_name, process, data_dir, log)
        wait_for_port(port, "postgres", timeout_s, process=process, log=log)
        _wait_for_login(server, timeout_s)
        import psycopg2

        conn = psycopg2.connect(**server.connect_args("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{db_name}"')
        finally:
            conn.close()
        yield server
    finally:
        if process is not None:
            # SIGINT to the postmaster: PostgreSQL's "fast" shutdown, which does not wait for clients
            stop_group(process, signal.SIGINT, 20.0, leader_only=True)
        shutil.rmtree(base, ignore_errors=True)


# --- Celery workers ----------------------------------------------------------------------------

@dataclass
class CeleryWorkers:
    names: list[str]  # node names, as Celery reports them (`name@host`)
    processes: list[subprocess.Popen]
    logs: list[Path]
    broker_url: str
    backend_url: str


def worker_env(broker_url: str, backend_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment (D3KE_*, DAGSTER_*), plus the broker and backend the worker app reads."""
    env = dict(os.environ)
    env.update(extra or {})
    env.update({"D3KE_CELERY_BROKER": broker_url, "D3KE_CELERY_BACKEND": backend_url})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _ping(broker_url: str, backend_url: str, names: list[str], timeout_s: float) -> set[str]:
    from celery import Celery

    app = Celery("d3ke-ping", broker=broker_url, backend=backend_url)
    try:
        replies = app.control.ping(destination=names, timeout=timeout_s)
    finally:
        app.close()
    return {name for reply in replies for name in reply}


@contextlib.contextmanager
def celery_workers(n: int, broker_url: str, backend_url: str, workdir: Path, env: Mapping[str, str] | None = None,
                   concurrency: int = 1, name_prefix: str = "d3ke-worker", timeout_s: float = 90.0
                   ) -> Iterator[CeleryWorkers]:
    """`n` Celery workers consuming Dagster step tasks from the broker, each a separate process
    (`celery -A d3ke_assets.deploy.celery_app worker`, prefork pool of `concurrency` processes).

    Returns once every worker answers a ping, so start-up (importing torch and OpenSim) is not
    counted against the first steps.  `env` is added to this process's environment: the workers
    need the same D3KE_* settings and the Dagster storage's credentials as the runs.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    host = os.uname().nodename
    names = [f"{name_prefix}{i}@{host}" for i in range(1, n + 1)]
    full_env = worker_env(broker_url, backend_url, env)
    processes: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        for name in names:
            log = workdir / f"{name.split('@')[0]}.log"
            argv = [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "-n", name, "-Q", CELERY_QUEUE,
                    f"--concurrency={concurrency}", "--prefetch-multiplier=1", "--loglevel=INFO",
                    "--without-gossip", "--without-mingle"]
            with open(log, "wb") as out:
                processes.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                                  stderr=subprocess.STDOUT, env=full_env, start_new_session=True))
            logs.append(log)
        deadline = time.monotonic() + timeout_s
        answered: set[str] = set()
        while answered != set(names):
            for process, log in zip(processes, logs):
                if process.poll() is not None:
                    raise D3keError(f"Celery worker exited with code {process.returncode} at start-up{log_tail(log)}")
            if time.monotonic() > deadline:
                missing = sorted(set(names) - answered)
                raise D3keError(f"Celery workers {', '.join(missing)} did not answer a ping within {timeout_s:.0f} s"
                                f"{log_tail(logs[names.index(missing[0])])}")
            answered |= _ping(broker_url, backend_url, names, 1.0)
        yield CeleryWorkers(names, processes, logs, broker_url, backend_url)
    finally:
        for process in processes:  # SIGTERM: warm shutdown, a running step finishes first
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            stop_group(process, signal.SIGTERM, 60.0, leader_only=True)


# --- Jobs another process can load again -----------------------------------------------------

def resolve_job(module: str, attribute: str, job_name: str):
    """The job `job_name` of the Definitions object `module.attribute` (e.g. an asset job)."""
    import importlib

    return getattr(importlib.import_module(module), attribute).resolve_job_def(job_name)


def reconstructable_job(module: str, attribute: str, job_name: str):
    """`resolve_job(module, attribute, job_name)` as a job that the processes a run starts (the
    multiprocess executor's step processes, Celery workers) can load again by the same call:
    `dg.build_reconstructable_job`, since an asset job exists only once its Definitions resolve it
    (there is no module-scope job for `dg.reconstructable` to point at)."""
    import dagster as dg

    return dg.build_reconstructable_job(__name__, "resolve_job", (module, attribute, job_name))


# --- Run orchestrators -------------------------------------------------------------------------

@dataclass
class RunOutcome:
    partition: str | None
    run_id: str | None
    success: bool
    error: str | None = None


def _orchestrator_main(env: dict, preload: tuple[str, ...], warm_forkserver: bool, tasks, results) -> None:
    """One orchestrator process: executes the runs it is handed, one after another."""
    import importlib

    os.environ.update(env)  # before the project is imported: its settings are read at import
    for module in preload:
        importlib.import_module(module)
    if warm_forkserver:  # the multiprocess executor's forkserver, with the project imported, started now
        import multiprocessing
        from multiprocessing import forkserver

        multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
        forkserver.ensure_running()
    results.put(("ready", os.getpid()))
    parent = os.getppid()
    while True:
        try:
            task = tasks.get(timeout=5.0)
        except queue.Empty:
            if os.getppid() != parent:  # the caller died without stopping us
                return
            continue
        if task is None:
            return
        module, attribute, job_name, partition, tags = task
        try:
            import dagster as dg

            run_tags = {**tags, **({"dagster/partition": partition} if partition else {})}
            with dg.DagsterInstance.get() as instance:
                result = dg.execute_job(reconstructable_job(module, attribute, job_name), instance, tags=run_tags)
            results.put(("done", RunOutcome(partition, result.run_id, result.success)))
        except Exception as exc:  # reported to the caller, which decides
            results.put(("done", RunOutcome(partition, None, False, f"{type(exc).__name__}: {exc}")))


@dataclass
class RunOrchestrators:
    """Processes that launch and orchestrate Dagster runs (`execute_job`: the run's executor then
    starts subprocesses or hands steps to Celery).  Each has the project imported already."""

    processes: list
    tasks: object
    results: object

    def execute(self, module: str, attribute: str, job_name: str, partitions: list[str | None],
                tags: Mapping[str, str] | None = None, timeout_s: float = 1800.0) -> list[RunOutcome]:
        """One run of `job_name` (of the Definitions `module.attribute`) per partition, as many at
        once as there are orchestrators; returns when all have finished, in partition order."""
        for partition in partitions:
            self.tasks.put((module, attribute, job_name, partition, dict(tags or {})))
        outcomes: list[RunOutcome] = []
        deadline = time.monotonic() + timeout_s
        while len(outcomes) < len(partitions):
            try:
                kind, outcome = self.results.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise D3keError(f"{len(partitions) - len(outcomes)} runs of {job_name} did not finish "
                                    f"within {timeout_s:.0f} s") from None
                dead = [p for p in self.processes if not p.is_alive()]
                if dead:
                    raise D3keError(f"a run orchestrator process exited with code {dead[0].exitcode}") from None
                continue
            outcomes.append(outcome)
        order = {p: i for i, p in enumerate(partitions)}
        return sorted(outcomes, key=lambda o: order.get(o.partition, 0))


@contextlib.contextmanager
def run_orchestrators(n: int, env: Mapping[str, str] | None = None,
                      preload: tuple[str, ...] = ("d3ke_assets.definitions",), warm_forkserver: bool = False,
                      timeout_s: float = 120.0) -> Iterator[RunOrchestrators]:
    """`n` processes (spawned, so they read `env` and the current D3KE_* settings at import, and
    hold no lock or connection of this process) that execute runs handed to them; returns once each
    has imported `preload`.  Dagster's run execution is not thread-safe (it reconfigures logging
    per run), hence processes.

    `warm_forkserver` also starts each one's forkserver for the multiprocess executor
    (`start_method: forkserver` with the same preload), as a long-lived run worker would have it.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    full_env = {**os.environ, **(env or {})}
    processes = [ctx.Process(target=_orchestrator_main, args=(full_env, tuple(preload), warm_forkserver, tasks, results),
                             name=f"d3ke-orchestrator-{i}") for i in range(n)]
    started: list = []
    try:
        for process in processes:
            process.start()
            started.append(process)
        ready = 0
        deadline = time.monotonic() + timeout_s
        while ready < n:
            try:
                kind, _ = results.get(timeout=1.0)
                ready += kind == "ready"
            except queue.Empty:
                dead = [p for p in processes if not p.is_alive()]
                if dead:
                    raise D3keError(f"a run orchestrator process exited with code {dead[0].exitcode} at start-up: "
                                    "it could not import the project with these settings") from None
                if time.monotonic() > deadline:
                    raise D3keError(f"run orchestrators were not ready within {timeout_s:.0f} s") from None
        yield RunOrchestrators(started, tasks, results)
    finally:
        for _ in started:
            tasks.put(None)
        for process in started:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)


# --- Runs launched through a webserver and the instance's run launcher (Celery: one task per run)

def launch_runs(url: str, job_name: str, partitions: list[str | None], tags: Mapping[str, str] | None = None,
                timeout_s: float = 1800.0, workers: CeleryWorkers | None = None) -> list[RunOutcome]:
    """One run of `job_name` per partition, submitted to the webserver at `url` (dagster-graphql's
    client, as the UI's Launch button does); the daemon takes each from the run queue and launches
    it with the instance's run launcher. Waits until all have finished; outcomes in partition order.
    `workers`: fail early when one of them dies."""
    from d3ke_assets.ui import graphql as gql

    run_ids = [gql.submit_run(url, job_name, partition, tags=dict(tags or {})) for partition in partitions]

    def check_workers() -> None:
        dead = [p for p in (workers.processes if workers else []) if p.poll() is not None]
        if dead:
            raise D3keError(f"a Celery worker exited with code {dead[0].returncode} while runs of {job_name} were "
                            f"unfinished{log_tail(workers.logs[workers.processes.index(dead[0])])}")

    # one status request per run per poll: once a second keeps the webserver off the 2 cores the runs use
    statuses = gql.wait_for_runs(url, run_ids, timeout_s, poll_s=1.0, while_waiting=check_workers)
    return [RunOutcome(p, r, statuses[r] == "SUCCESS", None if statuses[r] == "SUCCESS" else statuses[r])
            for p, r in zip(partitions, run_ids)]
