"""A client of the Dagster webserver's GraphQL API, for the benchmarks and tests that drive a running
webserver (`d3ke bench load`, `d3ke bench scale`'s run-launcher condition, test_ui, test_scale_out).

Runs are launched and polled with dagster-graphql's `DagsterGraphQLClient` (`submit_job_execution`,
`get_run_status`), against a named job of the code location (`all_assets` of
d3ke_assets.definitions, or a deployment location's own jobs), never Dagster's internal implicit
job. Raw GraphQL remains only for what that client has no call for: whether the workspace's code
locations loaded, a run's tags and error events (`runOrError`, `logsForRun`), asset backfills
(`launchPartitionBackfill`, `partitionBackfillOrError`) and the queries the UI itself polls.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

from d3ke_assets.errors import D3keError

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


def _keys(assets: list[str]) -> list[dict]:
    return [{"path": a.split("/")} for a in assets]




def client(url: str, timeout_s: int = 60):
    """dagster-graphql's client for the webserver at `url` (http://host:port)."""
    from dagster_graphql import DagsterGraphQLClient

    parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    return DagsterGraphQLClient(parsed.hostname, port_number=parsed.port, timeout=timeout_s,
                                path_prefix=parsed.path.removesuffix("/graphql").rstrip("/"))


def _one_line(exc: Exception) -> str:
    """The message of a DagsterGraphQLClientError (its `body` holds the errors of an invalid run config)."""
    body = getattr(exc, "body", None)
    detail = str(body if body is not None else exc).strip().splitlines()
    return detail[0] if detail else type(exc).__name__


def submit_run(url: str, job_name: str, partition: str | None = None, assets: list[str] | None = None,
               tags: dict[str, str] | None = None) -> str:
    """Launch a run of `job_name` (only `assets` of it, when given; of one `partition`) as the UI's
    Materialize button does; returns the run id. With the queued run coordinator the daemon starts it."""
    from dagster_graphql import DagsterGraphQLClientError

    run_tags = {**(tags or {}), **({"dagster/partition": partition} if partition else {})}
    try:
        return client(url).submit_job_execution(job_name, run_config={}, tags=run_tags or None,
                                                asset_selection=[a.split("/") for a in assets] if assets else None)
    except DagsterGraphQLClientError as exc:
        what = ", ".join(assets) if assets else job_name
        raise D3keError(f"launching a run of {what}{f' ({partition})' if partition else ''} at {url}: "
                        f"{_one_line(exc)}") from None


def launch_asset_run(url: str, assets: list[str], partition: str | None = None) -> str:
    """A run materializing `assets` (of one partition) through the project's job over every asset."""
    from d3ke_assets.definitions import ASSETS_JOB_NAME

    return submit_run(url, ASSETS_JOB_NAME, partition, assets)


FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

RUN_RECORD = """query Run($runId: ID!) { runOrError(runId: $runId) { __typename
  ... on Run { runId status startTime endTime tags { key value } } ... on Error { message } } }"""


def run_record(url: str, run_id: str) -> dict:
    """A run's id, status, start and end times and tags (raw GraphQL: the client gives only the status)."""
    return expect(graphql(url, RUN_RECORD, {"runId": run_id})["runOrError"], "Run", f"run {run_id}")


def run_statuses(url: str, run_ids: list[str]) -> dict[str, str]:
    """Each run's status name (QUEUED, STARTED, SUCCESS, ...), from the client's get_run_status."""
    from dagster_graphql import DagsterGraphQLClientError

    graphql_client, out = client(url), {}
    for run_id in run_ids:
        try:
            out[run_id] = graphql_client.get_run_status(run_id).value
        except DagsterGraphQLClientError as exc:
            raise D3keError(f"the status of run {run_id} at {url}: {_one_line(exc)}") from None
    return out


def wait_for_runs(url: str, run_ids: list[str], timeout_s: float = 300.0, poll_s: float = 1.0,
                  while_waiting: Callable[[], None] | None = None) -> dict[str, str]:
    """Poll until every run finished; each run's final status. `while_waiting()` runs between polls
    (e.g. to fail early when a worker died). An error if some are unfinished after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    final: dict[str, str] = {}
    while True:
        pending = [r for r in run_ids if r not in final]
        final.update({r: s for r, s in run_statuses(url, pending).items() if s in FINISHED})
        unfinished = [r for r in run_ids if r not in final]
        if not unfinished:
            return {r: final[r] for r in run_ids}
        if time.monotonic() > deadline:
            raise D3keError(f"{len(unfinished)} of {len(run_ids)} runs are unfinished after {timeout_s:.0f} s "
                            f"(first: {unfinished[0]}): is the dagster-daemon running (queued runs need it)?")
        if while_waiting is not None:
            while_waiting()
        time.sleep(poll_s)


def wait_for_run(url: str, run_id: str, timeout_s: float = 300.0, poll_s: float = 1.0) -> dict:
    """Wait until the run finishes; its record (run_record) on SUCCESS, else an error with its error events."""
    status = wait_for_runs(url, [run_id], timeout_s, poll_s)[run_id]
    if status != "SUCCESS":
        errors = run_error_messages(url, run_id)
        raise D3keError(f"run {run_id} ended {status}: " + (" | ".join(errors[-3:]) or "no error events"))
    return run_record(url, run_id)


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


RUN_ERRORS = """query Logs($runId: ID!) { logsForRun(runId: $runId, limit: 2000) { __typename
  ... on EventConnection { events { __typename
    ... on MessageEvent { message level stepKey }
    ... on ErrorEvent { error { message } } } }
  ... on Error { message } } }"""

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
