"""The UI launchers: the DAGSTER_HOME and MLflow server command of `d3ke ui` (`prepare_dagster_home`,
`mlflow_server_command`), and the Dagster webserver with its daemon on loopback (`dagster_services`)
for the benchmarks that need them running (`d3ke bench load`, `d3ke bench scale`'s run-launcher
condition) and the tests.

A server is a context manager: it starts the program in its own session (so its children, such
as Dagster's code server and run workers, share its process group), waits until it answers, and on
exit stops the whole group. Logs go to a file whose tail is shown when a server does not come up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from d3ke_assets.errors import D3keError
from d3ke_assets.processes import LOOPBACK, find_program, free_port, log_tail, signal_group, stop_group, wait_for_port
from d3ke_assets.ui.graphql import graphql

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = REPO_ROOT / "workspace.yaml"


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    log: Path
    port: int | None = None
    host: str = LOOPBACK

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _bin(name: str) -> str:
    """A console script of this environment (the venv's, next to the running Python) or from PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return find_program(name, install_hint="install the project (pip install -e .) into this Python environment")


def server_environment(data_root: Path, dagster_home: Path | None = None,
                       env: dict[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment with the data root, DAGSTER_HOME and the given overrides (None removes)."""
    out = dict(os.environ)
    out.update({"D3KE_DATA_ROOT": str(Path(data_root).resolve()), "PYTHONUNBUFFERED": "1",
                "MLFLOW_DISABLE_TELEMETRY": "true", "DAGSTER_DISABLE_TELEMETRY": "true"})
    if dagster_home is not None:
        out["DAGSTER_HOME"] = str(Path(dagster_home).resolve())
    for key, value in (env or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = str(value)
    return out


def prepare_dagster_home(home: Path, max_concurrent_runs: int = 2, dequeue_interval_s: int = 1) -> Path:
    """A DAGSTER_HOME with a dagster.yaml (kept if one exists): no telemetry, and the run queue
    (Dagster's default coordinator, served by the daemon) limited to `max_concurrent_runs` at once,
    since every run is a process importing torch and OpenSim.

    The limit is written in the current form, `concurrency: runs: max_concurrent_runs`, not as the
    queued run coordinator's config: Dagster refuses a file that has both, so a user who adds
    `concurrency:` settings (pools, tag limits) edits this block rather than meeting a config error.
    `run_queue:` keeps only what `concurrency:` has no key for (how often the daemon dequeues)."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "telemetry:\n  enabled: false\n"
            "nux:\n  enabled: false\n"  # no "Join the Dagster community" dialog over the UI
            f"run_queue:\n  dequeue_interval_seconds: {int(dequeue_interval_s)}\n"
            f"concurrency:\n  runs:\n    max_concurrent_runs: {int(max_concurrent_runs)}\n")
    return home


def _terminate_groups(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        signal_group(process.pid, signal.SIGTERM)  # started with start_new_session: pid == process group id


@contextmanager
def start_in_group(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    """`argv` in its own session (process group), output appended to `log`; the group stopped on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process)


# ---------------------------------------------------------------- Dagster


def module_workspace(path: Path, module: str, attribute: str = "defs") -> Path:
    """A workspace.yaml at `path` with one code location, the Definitions `module.attribute` (e.g. a
    deployment location of d3ke_assets.deploy), loaded from the repository root."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"load_from:\n  - python_module:\n      module_name: {module}\n      attribute: {attribute}\n"
                    f"      working_directory: {REPO_ROOT}\n")
    return path


def dagster_webserver_command(port: int, host: str = LOOPBACK, workspace: Path = WORKSPACE) -> list[str]:
    return [_bin("dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(port)]


DAEMONS_NEEDED = ("QUEUED_RUN_COORDINATOR", "BACKFILL")


@contextmanager
def dagster_services(dagster_home: Path, data_root: Path, port: int | None = None,
                     env: dict[str, str | None] | None = None, workspace: Path = WORKSPACE,
                     webserver: bool = True, daemon: bool = True, webserver_log: Path | None = None,
                     daemon_log: Path | None = None,
                     timeout_s: float = 180.0) -> Iterator[tuple[Server | None, Server | None]]:
    """The webserver and the daemon on one instance, started together (each loads the code location in
    its own code server) and both ready: (webserver, daemon), None for one not asked for."""
    home = prepare_dagster_home(dagster_home)  # an existing dagster.yaml is kept
    initialise_instance(home)
    environment = server_environment(data_root, home, env)
    cwd = Path(workspace).parent
    started = time.time()
    with ExitStack() as stack:
        web = dmn = None
        if webserver:
            port = port or free_port()
            log = Path(webserver_log or home / "webserver.log")
            process = stack.enter_context(start_in_group(dagster_webserver_command(port, workspace=workspace),
                                                   environment, log, cwd))
            web = Server("dagster-webserver", process, log, port)
        if daemon:
            log = Path(daemon_log or home / "daemon.log")
            process = stack.enter_context(start_in_group([_bin("dagster-daemon"), "run", "-w", str(workspace)],
                                                   environment, log, cwd))
            dmn = Server("dagster-daemon", process, log)
        # on exit, both groups get SIGTERM at once (then each is waited for in turn)
        stack.callback(_terminate_groups, [s.process for s in (web, dmn) if s is not None])
        deadline = time.monotonic() + timeout_s
        if web is not None:
            wait_for_port(web.port, "dagster-webserver", timeout_s, process=web.process, log=web.log)
            wait_for_code_locations(web.url, deadline - time.monotonic(), web.process, web.log)
        if dmn is not None:
            wait_for_daemon_heartbeats(home, DAEMONS_NEEDED, started, max(deadline - time.monotonic(), 5.0),
                                       dmn.process, dmn.log)
        yield web, dmn


def initialise_instance(dagster_home: Path) -> None:
    """Create (or migrate-check) the instance's SQLite storages here, once: servers starting together
    on a fresh DAGSTER_HOME otherwise race to stamp the same alembic table, which leaves it with two
    heads and fails the code location ("Version table 'alembic_version' has more than one head")."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(Path(dagster_home).resolve())) as instance:
        instance.get_runs(limit=1)  # storages are built with the instance; this only proves they answer


def wait_for_code_locations(url: str, timeout_s: float, process: subprocess.Popen | None = None,
                            log: Path | None = None) -> list[dict]:
    """Block until every code location of the webserver's workspace is loaded; its error if one failed."""
    query = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } } ... on PythonError { message } } }"""
    deadline = time.monotonic() + max(timeout_s, 1.0)
    while True:
        if process is not None and process.poll() is not None:
            raise D3keError(f"dagster-webserver exited with code {process.returncode} while loading the workspace"
                            f"{log_tail(log)}")
        try:
            workspace = graphql(url, query)["workspaceOrError"]
        except (D3keError, OSError):
            workspace = {}
        entries = workspace.get("locationEntries") or []
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            broken = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
            if broken:
                first = broken[0]["locationOrLoadError"]["message"].strip().splitlines()[-1]
                raise D3keError(f"code location {broken[0]['name']} failed to load: {first} "
                                f"(fix the definitions, then restart the webserver)")
            return entries
        if time.monotonic() > deadline:
            raise D3keError(f"the webserver at {url} did not load its code locations within {timeout_s:.0f} s"
                            f"{log_tail(log)}")
        time.sleep(0.5)


def wait_for_daemon_heartbeats(dagster_home: Path, needed: tuple[str, ...], since: float, timeout_s: float,
                               process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    import dagster as dg

    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        while True:
            if process is not None and process.poll() is not None:
                raise D3keError(f"dagster-daemon exited with code {process.returncode}{log_tail(log)}")
            beats = instance.get_daemon_heartbeats()
            missing = [d for d in needed if d not in beats or beats[d].timestamp < since]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise D3keError(f"dagster-daemon wrote no heartbeat for {', '.join(missing)} within "
                                f"{timeout_s:.0f} s{log_tail(log)}")
            time.sleep(0.5)


# ---------------------------------------------------------------- MLflow


def mlflow_folder(data_root: Path) -> Path:
    """`<data root>/mlflow`, as MlflowTrackingResource uses it."""
    from d3ke_assets.learning.tracking import MlflowStore

    return MlflowStore(Path(data_root)).folder


# MLflow 3's server also starts a job runner and seven huey consumers (GenAI scorers, trace jobs) unless
# told not to: the project runs none of those, and on two cores they cost seconds at start-up
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server_command(data_root: Path, port: int, host: str = LOOPBACK, workers: int = 1) -> list[str]:
    """The project's store: runs in `<root>/mlflow/mlflow.db`; artifacts the UI uploads land beside
    the experiments' own, under `<root>/mlflow/artifacts` (not ./mlartifacts in the working folder)."""
    from d3ke_assets.learning.tracking import MlflowStore

    store = MlflowStore(Path(data_root))
    return [_bin("mlflow"), "server", "--backend-store-uri", store.tracking_uri,
            "--artifacts-destination", store.artifacts_root.as_uri(), "--host", host, "--port", str(port),
            "--workers", str(workers)]
