"""`d3ke bench load`: the Dagster UI's GraphQL queries while the daemon backfills many subject partitions.

A temporary data root and DAGSTER_HOME with `D3KE_PRESET=smoke` and D3KE_SYNTHETIC_SUBJECTS subjects;
the webserver and the daemon on 127.0.0.1; `opensim_model` materialized first, one subject timed, then
an asset backfill of every subject partition launched through GraphQL (`launchPartitionBackfill`), which
only the daemon executes. While it runs, the queries the UI's asset graph and asset page poll (every
2 s, as the UI's live-data poll rate) are timed.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from d3ke_assets.errors import D3keError
from d3ke_assets.ui import graphql as gql
from d3ke_assets.ui import servers
from d3ke_assets.versioning import is_complete

# the asset graph: structure of every node (the UI's graph / catalog load this once per page)
ASSET_GRAPH = """query AssetGraph { assetNodes { id assetKey { path } groupName isPartitioned isMaterializable
  isExecutable isObservable opNames jobNames kinds description computeKind
  dependencyKeys { path } dependedByKeys { path } partitionDefinition { description }
  repository { id name location { id name } } } }"""

# the graph's live data, polled while a graph is open (AssetGraphLiveQuery with its fragments inlined)
ASSET_GRAPH_LIVE = """query AssetGraphLiveQuery($assetKeys: [AssetKeyInput!]!) {
  assetNodes(assetKeys: $assetKeys, loadMaterializations: true) { id opNames repository { id }
    assetKey { path }
    assetMaterializations(limit: 1) { timestamp runId stepKey }
    assetObservations(limit: 1) { timestamp runId stepKey }
    assetChecksOrError { ... on AssetChecks { checks { name canExecuteIndividually
      executionForLatestMaterialization { id runId status timestamp stepKey evaluation { severity } } } } }
    partitionStats { numMaterialized numMaterializing numPartitions numFailed } }
  assetsLatestInfo(assetKeys: $assetKeys) { id assetKey { path } unstartedRunIds inProgressRunIds
    latestRun { id status startTime endTime } } }"""

# the asset page's partition bar: the UI's PartitionHealthQuery, verbatim (dagster-webserver 1.13 bundle)
PARTITION_HEALTH = """query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) { ... on AssetNode { id
    partitionKeysByDimension { name type partitionKeys }
    assetPartitionStatuses {
      ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
      ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
      ... on MultiPartitionStatuses { primaryDimensionName ranges { primaryDimStartKey primaryDimEndKey
        primaryDimStartTime primaryDimEndTime secondaryDim {
          ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
          ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
        } } } } } } }"""

# the asset page's event list: the latest materializations with their partitions and runs
ASSET_EVENTS = """query AssetEvents($assetKey: AssetKeyInput!) { assetOrError(assetKey: $assetKey) {
  ... on Asset { id assetMaterializations(limit: 100) { partition runId timestamp stepKey
    tags { key value } } } } }"""

POLL_S = 2.0  # dagster-webserver's default live-data poll rate (liveDataPollRate 2000 ms)
ALL_ASSET_KEYS = ["opensim_model", "raw_subject", "mocap_markers", "opensim_gt", "frames", "frame_model",
                  "sequence_model", "evaluation", "robustness_report"]


def ui_queries(asset: str) -> dict[str, tuple[str, dict]]:
    keys = [{"path": [a]} for a in ALL_ASSET_KEYS]
    return {"asset_graph": (ASSET_GRAPH, {}),
            "asset_graph_live": (ASSET_GRAPH_LIVE, {"assetKeys": keys}),
            "partition_health": (PARTITION_HEALTH, {"assetKey": {"path": [asset]}}),
            "asset_events": (ASSET_EVENTS, {"assetKey": {"path": [asset]}})}


class LatencySampler:
    """Times each UI query against the webserver; one round = every query once, in turn."""

    def __init__(self, url: str, asset: str):
        self.url, self.queries = url, ui_queries(asset)
        self.seconds: dict[str, list[float]] = {name: [] for name in self.queries}

    def round(self) -> None:
        for name, (query, variables) in self.queries.items():
            start = time.perf_counter()
            gql.graphql(self.url, query, variables)
            self.seconds[name].append(time.perf_counter() - start)

    def summary(self) -> dict:
        out = {name: _stats(values) for name, values in self.seconds.items()}
        out["all"] = _stats([v for values in self.seconds.values() for v in values])
        return out


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(values), "median_ms": round(1000 * statistics.median(ordered), 1),
            "p95_ms": round(1000 * ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)], 1),
            "max_ms": round(1000 * ordered[-1], 1)}


def partition_statuses(url: str, asset: str) -> dict[str, list[str]]:
    node = gql.graphql(url, PARTITION_HEALTH, {"assetKey": {"path": [asset]}})["assetNodeOrError"]
    statuses = node.get("assetPartitionStatuses") or {}
    return {k: statuses.get(k) or [] for k in ("materializedPartitions", "materializingPartitions",
                                                "failedPartitions")}


def timed_run(url: str, assets: list[str], partition: str | None = None, timeout_s: float = 600.0) -> float:
    start = time.perf_counter()
    gql.wait_for_run(url, gql.launch_asset_run(url, assets, partition), timeout_s)
    return time.perf_counter() - start


def backfill_runs(url: str, backfill_id: str) -> int:
    data = gql.graphql(url, """query R($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
        __typename ... on Runs { count } ... on Error { message } } }""",
                      {"tags": [{"key": "dagster/backfill", "value": backfill_id}]})["runsOrError"]
    return gql.expect(data, "Runs", f"runs of backfill {backfill_id}")["count"]


def load_environment(n_subjects: int) -> dict[str, str | None]:
    """The servers' D3KE_* settings: the smoke preset's synthetic subjects, `n_subjects` of them (the
    caller's own D3KE_DATASET, D3KE_MOVI_ROOT, D3KE_LAB_ROOT and D3KE_SEED are not passed on)."""
    return {"D3KE_PRESET": "smoke", "D3KE_SYNTHETIC_SUBJECTS": str(n_subjects), "D3KE_DATASET": "synthetic",
            "D3KE_MOVI_ROOT": None, "D3KE_LAB_ROOT": None, "D3KE_SEED": None}


def run_load(url: str, data_root: Path, partitions: list[str], assets: list[str] | None = None,
             probe: bool = True, max_concurrent_runs: int = 2, budget_s: float = 420.0,
             materialize_model: bool = True, log: Callable[[str], None] = lambda m: None) -> dict:
    """On running servers (webserver at `url` and a daemon): opensim_model (unless `materialize_model` is
    False: already done), optionally one subject timed, then a backfill of `assets` (None: raw_subject, plus mocap_markers when the timed subject says the
    whole backfill fits in `budget_s`) over `partitions`, timing the UI queries until it is done.
    Raises a D3keError naming the failed partitions if any failed."""
    out: dict = {"subjects": len(partitions)}
    sampler_idle = LatencySampler(url, "raw_subject")
    for _ in range(5):
        sampler_idle.round()
    out["query_latency_idle"] = sampler_idle.summary()["all"]
    if materialize_model:
        out["opensim_model_run_s"] = round(timed_run(url, ["opensim_model"]), 2)
        log(f"opensim_model materialized in {out['opensim_model_run_s']} s")
    if probe:
        first = partitions[0]
        raw_s = timed_run(url, ["raw_subject"], first)
        mocap_s = timed_run(url, ["mocap_markers"], first)
        out["one_subject_run_s"] = {"raw_subject": round(raw_s, 2), "mocap_markers": round(mocap_s, 2)}
        # runs of one partition take about as long in a backfill; the daemon's backfill loop ticks every 30 s
        estimate = len(partitions) * (raw_s + mocap_s) / max_concurrent_runs + 90
        out["estimated_backfill_with_mocap_markers_s"] = round(estimate)
        if assets is None:
            assets = ["raw_subject", "mocap_markers"] if estimate <= budget_s else ["raw_subject"]
        log(f"one subject: raw_subject {raw_s:.1f} s, mocap_markers {mocap_s:.1f} s; backfilling {assets}")
    assets = list(assets or ["raw_subject"])
    out["backfill_assets"] = assets
    sampler = LatencySampler(url, assets[-1])
    start = time.perf_counter()
    backfill_id = gql.launch_partition_backfill(url, assets, partitions, title=f"d3ke load: {len(partitions)} subjects")
    rounds = [0]

    def sample() -> None:
        sampler.round()
        rounds[0] += 1
        if rounds[0] % 30 == 0:
            counts = partition_statuses(url, assets[-1])
            log(f"{time.perf_counter() - start:.0f} s: {assets[-1]} {len(counts['materializedPartitions'])}"
                f"/{len(partitions)} materialized")

    status = gql.wait_for_backfill(url, backfill_id, timeout_s=max(1800.0, 60.0 * len(partitions)), poll_s=POLL_S,
                                  while_waiting=sample)
    out["backfill_wall_s"] = round(time.perf_counter() - start, 1)
    out["backfill_status"] = status["status"]
    out["backfill_runs"] = backfill_runs(url, backfill_id)
    counts = {}
    for entry in (status.get("assetBackfillData") or {}).get("assetBackfillStatuses") or []:
        if entry["__typename"] == "AssetPartitionsStatusCounts":
            counts["/".join(entry["assetKey"]["path"])] = entry
    materialized, failed = {}, {}
    for asset in assets:
        statuses = partition_statuses(url, asset)
        materialized[asset] = len(set(statuses["materializedPartitions"]) & set(partitions))
        failed[asset] = sorted(statuses["failedPartitions"])
        on_disk = sum(is_complete(Path(data_root) / asset / p) for p in partitions)
        out.setdefault("outputs_on_disk", {})[asset] = on_disk
    out["partitions_materialized"] = materialized
    out["partitions_failed"] = {a: len(f) for a, f in failed.items()}
    out["backfill_counts"] = {a: {k: v for k, v in c.items() if k.startswith("num")} for a, c in counts.items()}
    latency = sampler.summary()
    out["query_latency_during_backfill"] = latency
    out["max_query_under_1s"] = latency["all"].get("max_ms", math.inf) < 1000.0
    bad = {a: f for a, f in failed.items() if f}
    if status["status"] != "COMPLETED_SUCCESS" or bad or any(n != len(partitions) for n in materialized.values()):
        first_error = (status.get("error") or {}).get("message", "").strip().splitlines()
        raise D3keError(f"backfill {backfill_id} ended {status['status']}: materialized {materialized} of "
                        f"{len(partitions)}, failed {bad or 'none'}"
                        f"{': ' + first_error[-1] if first_error else ''} (see the runs in the Dagster UI)")
    return out


# 90 (MoVi's count) took 611 s on 2 cores on 2026-12-05, over the 10 minutes every bench must fit in
DEFAULT_SUBJECTS = 64


def bench_load(data_root: Path | None = None, n_subjects: int = DEFAULT_SUBJECTS, assets: list[str] | None = None,
               max_concurrent_runs: int = 2, log: Callable[[str], None] | None = None) -> dict:
    """The load benchmark on a fresh temporary data root and DAGSTER_HOME (under `data_root` when given).
    `assets=None` backfills raw_subject, and mocap_markers too when one timed subject says it fits."""
    import sys

    from d3ke_assets.sources.subjects import split_for

    log = log or (lambda m: print(f"bench load: {m}", file=sys.stderr, flush=True))
    tmp = Path(tempfile.mkdtemp(prefix="d3ke-bench-load-", dir=str(data_root) if data_root else None))
    try:
        root, home = tmp / "data", tmp / "dagster"
        root.mkdir()
        servers.prepare_dagster_home(home, max_concurrent_runs=max_concurrent_runs)
        partitions = list(split_for("synthetic", n_subjects).all)
        start = time.perf_counter()
        with servers.dagster_services(home, root, env=load_environment(n_subjects)) as (web, _):
            started_s = time.perf_counter() - start
            log(f"webserver {web.url} and daemon up in {started_s:.1f} s; {len(partitions)} subject partitions")
            result = run_load(web.url, root, partitions, assets, probe=True,
                              max_concurrent_runs=max_concurrent_runs, log=log)
        return {"benchmark": "load", "preset": "smoke", "max_concurrent_runs": max_concurrent_runs,
                "servers_start_s": round(started_s, 1), **result, "wall_s": round(time.perf_counter() - start, 1),
                "cpu_count": os.cpu_count()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
