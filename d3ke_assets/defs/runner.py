"""Materialize the whole asset graph through Dagster, stage by stage.

Unpartitioned assets run as one run; partitioned assets run one run per
subject, so a failing subject fails alone and the others go on.  Runs are
recorded in the given (persistent) instance, so the Dagster UI shows them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import dagster as dg


@dataclass
class StageResult:
    assets: list[str]
    partition: str | None
    ok: bool
    seconds: float
    run_id: str | None
    error: str | None = None
    recomputed: list[str] = field(default_factory=list)  # assets whose output was (re)written, not reused


@dataclass
class GraphRunSummary:
    results: list[StageResult] = field(default_factory=list)

    @property
    def recomputed(self) -> list[tuple[str, str | None]]:
        """(asset, partition) pairs whose output was written in this run."""
        return [(a, r.partition) for r in self.results for a in r.recomputed]

    @property
    def failed(self) -> list[StageResult]:
        return [r for r in self.results if not r.ok]

    def failed_partitions(self) -> set[str]:
        return {r.partition for r in self.failed if r.partition}


def _stages(defs: dg.Definitions) -> list[tuple[list[dg.AssetKey], bool]]:
    """Consecutive topological levels grouped by whether they are partitioned."""
    graph = defs.resolve_asset_graph()
    stages: list[tuple[list[dg.AssetKey], bool]] = []
    for key in graph.toposorted_asset_keys:
        partitioned = graph.get(key).partitions_def is not None
        if stages and stages[-1][1] == partitioned:
            stages[-1][0].append(key)
        else:
            stages.append(([key], partitioned))
    return stages


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.user_failure_data:
            return event.step_failure_data.user_failure_data.description or "step failed"
        if event.is_step_failure and event.step_failure_data:
            return event.step_failure_data.error.message.strip().splitlines()[0]
    return "run failed"


def _recomputed(result: dg.ExecuteInProcessResult) -> list[str]:
    """Assets of a run that wrote their output (their materialization says `reused: false`)."""
    out = []
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        reused = mat.metadata.get("reused")
        if reused is None or not reused.value:
            out.append(mat.asset_key.to_user_string())
    return out


def materialize_graph(defs: dg.Definitions, instance: dg.DagsterInstance, partitions: list[str],
                      log: Callable[[str], None] = print, log_level: str = "INFO",
                      only_stale: bool = False) -> GraphRunSummary:
    """Every stage's runs; with `only_stale`, only the runs of stale or missing asset partitions.

    A launched run whose inputs are unchanged reuses its outputs, but Dagster's own cost of a run
    (event log writes) remains: `only_stale` does not launch it at all.
    """
    from d3ke_assets.defs.automation import stale_assets_by_partition
    from d3ke_assets.defs.versioned import version_on_disk

    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})
    summary = GraphRunSummary()
    for keys, partitioned in _stages(defs):
        names = [k.to_user_string() for k in keys]
        failed_before = summary.failed_partitions()
        targets = [p for p in partitions if p not in failed_before] if partitioned else [None]
        selections = {p: keys for p in targets}
        if only_stale:  # judged per stage: upstream stages may just have changed data versions
            data_root = resources["data_root"]
            stale = stale_assets_by_partition(instance, assets, [p for p in targets if p],
                                              on_disk=lambda a, p: version_on_disk(data_root, a, p))
            selections = {p: [k for k in keys if k.to_user_string() in stale.get(p, [])] for p in targets}
            targets = [p for p in targets if selections[p]]
        if partitioned:
            for partition in sorted(set(partitions) & failed_before):
                summary.results.append(StageResult(names, partition, False, 0.0, None, "skipped: upstream failed"))
        for partition in targets:
            names = [k.to_user_string() for k in selections[partition]]
            label = f"{', '.join(names)}" + (f" [{partition}]" if partition else "")
            log(f"materializing {label} ...")
            start = time.perf_counter()
            result = dg.materialize(assets, instance=instance, resources=resources, selection=selections[partition],
                                    run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
                                    partition_key=partition, raise_on_error=False,
                                    tags={"d3ke/launched_by": "d3ke demo"})
            seconds = time.perf_counter() - start
            error = None if result.success else _failure_message(result)
            recomputed = _recomputed(result) if result.success else []
            summary.results.append(StageResult(names, partition, result.success, seconds, result.run_id, error,
                                               recomputed))
            reuse = f", recomputed {', '.join(recomputed) or 'nothing'}" if result.success else ""
            log(f"  {'ok' if result.success else 'FAILED'} in {seconds:.1f} s{reuse}" + (f": {error}" if error else ""))
            if not result.success and not partitioned:
                return summary  # nothing downstream can run without it
    return summary
