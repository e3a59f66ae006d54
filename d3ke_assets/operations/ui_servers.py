"""The Dagster webserver, the Dagster daemon and the MLflow server on loopback, for tests, benchmarks
and `d3ke ui`; a small GraphQL client for the webserver; headless Chromium for screenshots.

Each server is a context manager: it starts the program in its own session (so its children, such
as Dagster's code server and run workers, share its process group), waits until it answers, and on
exit stops the whole group. Logs go to a file whose tail is shown when a server does not come up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from d3ke_assets.errors import D3keError
from d3ke_assets.operations.net import LOOPBACK, _killpg, _tail, find_program, free_port, stop_group, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = REPO_ROOT / "workspace.yaml"
ASSET_JOB = "__ASSET_JOB"  # Dagster's implicit job over every asset (dagster._core...asset_job.IMPLICIT_ASSET_JOB_NAME)


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
    """A DAGSTER_HOME with a dagster.yaml (kept if one exists): no telemetry, and the queued run
    coordinator (Dagster's default, served by the daemon) limited to `max_concurrent_runs` at once,
    since every run is a process importing torch and OpenSim."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "telemetry:\n  enabled: false\n"
            "nux:\n  enabled: false\n"  # no "Join the Dagster community" dialog over the UI
            "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n"
            f"  config:\n    max_concurrent_runs: {int(max_concurrent_runs)}\n"
            f"    dequeue_interval_seconds: {int(dequeue_interval_s)}\n")
    return home


def _terminate_groups(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        _killpg(process.pid, signal.SIGTERM)  # started with start_new_session: pid == process group id


@contextmanager
def _started(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process)


# ---------------------------------------------------------------- Dagster


def dagster_webserver_command(port: int, host: str = LOOPBACK, workspace: Path = WORKSPACE) -> list[str]:
    return [_bin("dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(port)]


@contextmanager
def dagster_webserver(dagster_home: Path, data_root: Path, port: int | None = None,
                      env: dict[str, str | None] | None = None, workspace: Path = WORKSPACE,
                      log: Path | None = None, timeout_s: float = 180.0) -> Iterator[Server]:
    """`dagster-webserver -w workspace.yaml -h 127.0.0.1 -p PORT`; ready once the code location loaded."""
    with dagster_services(dagster_home, data_root, port=port, env=env, workspace=workspace, daemon=False,
                          webserver_log=log, timeout_s=timeout_s) as (web, _):
        yield web


@contextmanager
def dagster_daemon(dagster_home: Path, data_root: Path, env: dict[str, str | None] | None = None,
                   workspace: Path = WORKSPACE, log: Path | None = None, timeout_s: float = 180.0) -> Iterator[Server]:
    """`dagster-daemon run -w workspace.yaml`, which launches queued runs and drives backfills; ready once
    its run queue and backfill daemons wrote a heartbeat into the instance."""
    with dagster_services(dagster_home, data_root, env=env, workspace=workspace, webserver=False,
                          daemon_log=log, timeout_s=timeout_s) as (_, daemon):
        yield daemon


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
            process = stack.enter_context(_started(dagster_webserver_command(port, workspace=workspace),
                                                   environment, log, cwd))
            web = Server("dagster-webserver", process, log, port)
        if daemon:
            log = Path(daemon_log or home / "daemon.log")
            process = stack.enter_context(_started([_bin("dagster-daemon"), "run", "-w", str(workspace)],
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
                            f"{_tail(log)}")
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
                            f"{_tail(log)}")
        time.sleep(0.5)


def wait_for_daemon_heartbeats(dagster_home: Path, needed: tuple[str, ...], since: float, timeout_s: float,
                               process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    import dagster as dg

    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        while True:
            if process is not None and process.poll() is not None:
                raise D3keError(f"dagster-daemon exited with code {process.returncode}{_tail(log)}")
            beats = instance.get_daemon_heartbeats()
            missing = [d for d in needed if d not in beats or beats[d].timestamp < since]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise D3keError(f"dagster-daemon wrote no heartbeat for {', '.join(missing)} within "
                                f"{timeout_s:.0f} s{_tail(log)}")
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


@contextmanager
def mlflow_server(data_root: Path, port: int | None = None, log: Path | None = None,
                  env: dict[str, str | None] | None = None, timeout_s: float = 120.0) -> Iterator[Server]:
    """`mlflow server` on the project's store; ready once /health answers."""
    port = port or free_port()
    folder = mlflow_folder(data_root)
    folder.mkdir(parents=True, exist_ok=True)
    log = Path(log or folder / "server.log")
    environment = server_environment(data_root, env={**MLFLOW_SERVER_ENV, **(env or {})})
    with _started(mlflow_server_command(data_root, port), environment, log, folder) as process:
        server = Server("mlflow server", process, log, port)
        start = time.monotonic()
        wait_for_port(port, "mlflow server", timeout_s, process=process, log=log)
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() - start > timeout_s:
                raise D3keError(f"mlflow server on port {port} did not answer /health{_tail(log)}")
            time.sleep(0.3)
        yield server


def rest(url: str, body: dict | None = None, timeout_s: float = 30.0) -> dict:
    """GET (no body) or POST JSON to a REST endpoint; a one-line error with the server's message."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300].replace("\n", " ")
        raise D3keError(f"{url} answered HTTP {exc.code}: {detail}") from None


# ---------------------------------------------------------------- GraphQL


def graphql(url: str, query: str, variables: dict | None = None, timeout_s: float = 60.0) -> dict:
    """The `data` of a GraphQL request to a Dagster webserver (`url` is its root or its /graphql)."""
    endpoint = url if url.rstrip("/").endswith("/graphql") else url.rstrip("/") + "/graphql"
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(endpoint, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # Dagster answers 400 with the errors for an invalid query
        try:
            payload = json.loads(exc.read())
        except ValueError:
            raise D3keError(f"GraphQL request to {endpoint} failed: HTTP {exc.code}") from None
    errors = payload.get("errors")
    if errors:
        messages = "; ".join(e.get("message", str(e)).strip().splitlines()[0] for e in errors[:3])
        raise D3keError(f"GraphQL error from {endpoint}: {messages}")
    return payload["data"]


def expect(result: dict, typename: str, what: str) -> dict:
    """`result` if its __typename is `typename`; else its message as a one-line error."""
    if result.get("__typename") != typename:
        message = (result.get("message") or "").strip().splitlines()
        raise D3keError(f"{what}: {result.get('__typename')}: {message[0] if message else result}")
    return result


def repository_selector(url: str) -> dict:
    """{repositoryLocationName, repositoryName} of the webserver's only repository."""
    data = graphql(url, """{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name
        location { name } } } ... on PythonError { message } } }""")["repositoriesOrError"]
    nodes = expect(data, "RepositoryConnection", "listing repositories")["nodes"]
    if len(nodes) != 1:
        raise D3keError(f"expected one repository in the workspace, found {len(nodes)}: check workspace.yaml")
    return {"repositoryLocationName": nodes[0]["location"]["name"], "repositoryName": nodes[0]["name"]}


def _keys(assets: list[str]) -> list[dict]:
    return [{"path": a.split("/")} for a in assets]


LAUNCH_RUN = """mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on Error { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


def launch_asset_run(url: str, assets: list[str], partition: str | None = None) -> str:
    """Launch a run of the implicit asset job materializing `assets` (of one partition), as the UI's
    Materialize button does; returns the run id. With the queued run coordinator the daemon starts it."""
    tags = [{"key": "dagster/partition", "value": partition}] if partition else []
    params = {"selector": {**repository_selector(url), "jobName": ASSET_JOB, "assetSelection": _keys(assets)},
              "runConfigData": {}, "executionMetadata": {"tags": tags}}
    result = graphql(url, LAUNCH_RUN, {"executionParams": params})["launchRun"]
    if result["__typename"] == "RunConfigValidationInvalid":
        raise D3keError(f"run config of {assets} is invalid: {result['errors'][0]['message']}")
    return expect(result, "LaunchRunSuccess", f"launching a run of {', '.join(assets)}")["run"]["runId"]


LAUNCH_BACKFILL = """mutation Backfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on InvalidSubsetError { message }
  }
}"""


def launch_partition_backfill(url: str, assets: list[str], partitions: list[str] | None = None,
                              title: str | None = None) -> str:
    """An asset backfill of `partitions` (every partition when None) of `assets`; the daemon's backfill
    loop turns it into one run per partition. Returns the backfill id."""
    params: dict = {"assetSelection": _keys(assets), "fromFailure": False, "tags": []}
    if partitions is None:
        params["allPartitions"] = True
    else:
        params["partitionNames"] = list(partitions)
    if title:
        params["title"] = title
    result = graphql(url, LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
    return expect(result, "LaunchBackfillSuccess", f"launching a backfill of {', '.join(assets)}")["backfillId"]


RUN_STATUS = """query Run($runId: ID!) { runOrError(runId: $runId) { __typename
  ... on Run { runId status startTime endTime tags { key value } } ... on Error { message } } }"""

RUN_ERRORS = """query Logs($runId: ID!) { logsForRun(runId: $runId, limit: 2000) { __typename
  ... on EventConnection { events { __typename
    ... on MessageEvent { message level stepKey }
    ... on ErrorEvent { error { message } } } }
  ... on Error { message } } }"""

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def run_error_messages(url: str, run_id: str) -> list[str]:
    """The ERROR-level events of a run (step failures, run failure, engine errors), one line each."""
    logs = graphql(url, RUN_ERRORS, {"runId": run_id})["logsForRun"]
    out = []
    for event in logs.get("events") or []:
        if event.get("level") == "ERROR" or (event.get("error") or {}).get("message"):
            error = (event.get("error") or {}).get("message") or ""
            line = f"{event.get('stepKey') or 'run'}: {event.get('message', '')} {error}".strip()
            out.append(" ".join(line.split())[:400])
    return out


def wait_for_run(url: str, run_id: str, timeout_s: float = 300.0, poll_s: float = 1.0) -> dict:
    """Poll runOrError until the run finishes; its record on SUCCESS, else an error with its error events."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = expect(graphql(url, RUN_STATUS, {"runId": run_id})["runOrError"], "Run", f"run {run_id}")
        if run["status"] == "SUCCESS":
            return run
        if run["status"] in FINISHED:
            errors = run_error_messages(url, run_id)
            raise D3keError(f"run {run_id} ended {run['status']}: " + (" | ".join(errors[-3:]) or "no error events"))
        if time.monotonic() > deadline:
            raise D3keError(f"run {run_id} is still {run['status']} after {timeout_s:.0f} s: is the dagster-daemon "
                            "running (queued runs need it)?")
        time.sleep(poll_s)


BACKFILL_STATUS = """query Backfill($backfillId: String!) { partitionBackfillOrError(backfillId: $backfillId) {
  __typename ... on PartitionBackfill { id status numPartitions error { message }
    assetBackfillData { assetBackfillStatuses { __typename
      ... on AssetPartitionsStatusCounts { assetKey { path } numPartitionsTargeted numPartitionsInProgress
          numPartitionsMaterialized numPartitionsFailed } } } }
  ... on Error { message } } }"""


def backfill_status(url: str, backfill_id: str) -> dict:
    data = graphql(url, BACKFILL_STATUS, {"backfillId": backfill_id})["partitionBackfillOrError"]
    return expect(data, "PartitionBackfill", f"backfill {backfill_id}")


BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def wait_for_backfill(url: str, backfill_id: str, timeout_s: float = 3600.0, poll_s: float = 2.0,
                      while_waiting: Callable[[], None] | None = None) -> dict:
    """Poll a backfill until it is done; `while_waiting()` is called between polls (e.g. to time queries)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = backfill_status(url, backfill_id)
        if status["status"] in BACKFILL_DONE:
            return status
        if time.monotonic() > deadline:
            raise D3keError(f"backfill {backfill_id} is still {status['status']} after {timeout_s:.0f} s: "
                            "is the dagster-daemon running?")
        next_poll = time.monotonic() + poll_s
        if while_waiting is not None:
            while_waiting()
        time.sleep(max(0.0, next_poll - time.monotonic()))


# ---------------------------------------------------------------- Chromium


def _chromium_argv(chromium: str, profile: str, window: tuple[int, int], budget_ms: int) -> list[str]:
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}", f"--virtual-time-budget={budget_ms}"]


def _run_chromium(extra: list[str], url: str, window: tuple[int, int], budget_ms: int, timeout_s: float,
                  chromium: str | None) -> subprocess.CompletedProcess:
    program = chromium or find_program("chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser",
                                       install_hint="apt-get install chromium (Debian's package)")
    with tempfile.TemporaryDirectory(prefix="d3ke-chromium-") as profile:
        argv = _chromium_argv(program, profile, window, budget_ms) + extra + [url]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_group(process, timeout_s=5)
            raise D3keError(f"chromium did not finish rendering {url} within {timeout_s:.0f} s") from None
        finally:
            stop_group(process, timeout_s=5)  # its helper processes, if any outlived it
    if process.returncode != 0:
        last = (stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise D3keError(f"chromium exited with code {process.returncode} on {url}: {last}")
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def chromium_screenshot(url: str, png_path: Path, window: tuple[int, int] = (1600, 1000),
                        budget_ms: int = 20000, timeout_s: float = 120.0, chromium: str | None = None) -> Path:
    """A PNG of `url` rendered by headless Chromium after `budget_ms` of virtual time (the React app's
    requests and renders run in it), in a fresh profile."""
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    _run_chromium([f"--screenshot={png_path}"], url, window, budget_ms, timeout_s, chromium)
    if not png_path.is_file():
        raise D3keError(f"chromium wrote no screenshot of {url} to {png_path}")
    return png_path


def chromium_dom(url: str, window: tuple[int, int] = (1600, 1000), budget_ms: int = 20000,
                 timeout_s: float = 120.0, chromium: str | None = None) -> str:
    """The DOM of `url` after the page's scripts ran for `budget_ms` of virtual time (--dump-dom)."""
    done = _run_chromium(["--dump-dom"], url, window, budget_ms, timeout_s, chromium)
    return done.stdout.decode(errors="replace")


def visible_text(dom: str) -> str:
    """The text of a dumped DOM without scripts, styles and tags (what a reader sees, roughly)."""
    import html
    import re

    dom = re.sub(r"(?is)<(script|style|noscript|template)\b.*?</\1>", " ", dom)
    return " ".join(html.unescape(re.sub(r"(?s)<[^>]+>", " ", dom)).split())


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR; an error if the file is not a PNG."""
    head = Path(path).read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise D3keError(f"{path} is not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def copy_screenshot(png: Path, env_var: str = "D3KE_SCREENSHOT_DIR") -> Path | None:
    """Copy a screenshot into the folder named by `env_var`, when it is set (e.g. to keep it from CI)."""
    folder = os.environ.get(env_var)
    if not folder:
        return None
    target = Path(folder).expanduser().resolve()
    target.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(png, target / Path(png).name))
