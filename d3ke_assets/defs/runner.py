"""Materialize the whole asset graph through Dagster, stage by stage.

Unpartitioned assets run as one run; partitioned assets run one run per
subject, so a failing subject fails alone and the others go on.  Runs are
recorded in the given (persistent) instance, so the Dagster UI shows them.
A stop signal (see `d3ke_assets.interrupts`) ends the run in progress as
interrupted and launches nothing more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import dagster as dg

from d3ke_assets.defs.constants import STUDY_ASSETS, TEST_SUBJECT_ASSETS
from d3ke_assets.interrupts import signal_name, stop_requested

INTERRUPTED_ERRORS = ("DagsterExecutionInterruptedError", "KeyboardInterrupt", "Interrupted")


class _Stop(Exception):
    """A stop was requested: leave the stages' loop."""


@dataclass
class StageResult:
    assets: list[str]
    partition: str | None
    ok: bool
    seconds: float
    run_id: str | None
    error: str | None = None
    recomputed: list[str] = field(default_factory=list)  # assets whose output was (re)written, not reused
    interrupted: bool = False  # stopped by a stop signal (the run fails as interrupted)

    @property
    def label(self) -> str:
        return ", ".join(self.assets) + (f" [{self.partition}]" if self.partition else "")

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        if not self.ok:
            return "skipped" if self.run_id is None else "FAILED"
        return "ok" if self.recomputed else "reused"


@dataclass
class GraphRunSummary:
    results: list[StageResult] = field(default_factory=list)
    interrupted: bool = False  # a stop signal ended the graph early
    not_launched: list[str] = field(default_factory=list)  # what the stop left out: stage labels

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
    """Consecutive topological levels grouped by whether they are partitioned; the main job's assets
    only (the studies, `constants.STUDY_ASSETS`, run on request)."""
    graph = defs.resolve_asset_graph()
    stages: list[tuple[list[dg.AssetKey], bool]] = []
    for key in graph.toposorted_asset_keys:
        if key in STUDY_ASSETS:
            continue
        partitioned = graph.get(key).partitions_def is not None
        if stages and stages[-1][1] == partitioned:
            stages[-1][0].append(key)
        else:
            stages.append(([key], partitioned))
    return stages


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    # a blocking check that failed (a quality gate): its asset, check and description, not Dagster's
    # multi-line "N blocking asset checks failed" summary
    blocked = [e for e in result.get_asset_check_evaluations()
               if not e.passed and e.blocking and e.severity == dg.AssetCheckSeverity.ERROR]
    if blocked:
        return "; ".join(f"{e.asset_key.to_user_string()} failed its blocking check {e.check_name}"
                         + (f": {e.description}" if e.description else "") for e in blocked)
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.user_failure_data:
            return event.step_failure_data.user_failure_data.description or "step failed"
        if event.is_step_failure and event.step_failure_data:
            return event.step_failure_data.error.message.strip().splitlines()[0]
    return "run failed"


def _interrupted_in_run(result: dg.ExecuteInProcessResult) -> bool:
    """A step of the run stopped by a signal (Dagster raises DagsterExecutionInterruptedError in it)."""
    return any(event.is_step_failure and event.step_failure_data and event.step_failure_data.error
               and event.step_failure_data.error.cls_name in INTERRUPTED_ERRORS for event in result.all_events)


def _recomputed(result: dg.ExecuteInProcessResult, node_names: dict[dg.AssetKey, str],
                keys: list[dg.AssetKey]) -> list[str]:
    """Assets of a run that wrote their output (their materialization says `reused: false`)."""
    out = []
    for key in keys:
        for mat in result.asset_materializations_for_node(node_names[key]):
            reused = mat.metadata.get("reused")
            if reused is None or not reused.value:
                out.append(mat.asset_key.to_user_string())
    return out


def format_result(r: StageResult, width: int = 0) -> str:
    """One line per run: its assets and partition, ok (outputs written) / reused / FAILED / skipped /
    interrupted, the seconds it took, and the error or which outputs were written when not all."""
    line = f"{r.label:<{width}}  {r.status:<11}{r.seconds:>7.1f} s"
    if r.error:
        return f"{line}  {r.error}"
    if r.ok and r.recomputed and len(r.recomputed) < len(r.assets):
        return f"{line}  wrote {', '.join(r.recomputed)}"
    return line


def materialize_graph(defs: dg.Definitions, instance: dg.DagsterInstance, partitions: list[str],
                      log: Callable[[str], None] = print, log_level: str = "INFO",
                      only_stale: bool = False, should_stop: Callable[[], object] = stop_requested,
                      started: Callable[[str], None] | None = None) -> GraphRunSummary:
    """Every stage's runs; with `only_stale`, only the runs of stale or missing asset partitions.

    A launched run whose inputs are unchanged reuses its outputs, but Dagster's own cost of a run
    (event log writes) remains: `only_stale` does not launch it at all.
    `log` gets one line per run when it ends (`format_result`); `started` the label of each run as
    it is launched.  Once `should_stop()` is true (a stop signal, by default) or a run is
    interrupted, no further run is launched and the summary says what was left out.
    """
    from d3ke_assets.defs.automation import stale_assets_by_partition
    from d3ke_assets.defs.versioned import version_on_disk

    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})
    node_names = {key: a.node_def.name for a in assets if isinstance(a, dg.AssetsDefinition) for key in a.keys}
    stages = _stages(defs)
    # the resources' values as a run resolves them (a value may be a dg.EnvVar)
    test_subjects = set(resources["dataset"].process_config_and_initialize().split().test) \
        if "dataset" in resources else None
    longest_partition = max((len(p) for p in partitions), default=0)
    width = max((len(", ".join(k.to_user_string() for k in keys)) + (longest_partition + 3 if partitioned else 0)
                 for keys, partitioned in stages), default=0)  # the lines' columns line up
    summary = GraphRunSummary()
    pending: list[str] = []  # labels of the runs not yet launched, for the summary of a stop
    cut_short: StageResult | None = None  # the run a stop signal interrupted
    try:
        for i, (keys, partitioned) in enumerate(stages):
            names = [k.to_user_string() for k in keys]
            later = [", ".join(k.to_user_string() for k in ks) for ks, _ in stages[i + 1:]]
            pending = [", ".join(names)] + later
            if should_stop():
                raise _Stop
            failed_before = summary.failed_partitions()
            # the scoring stage runs for the test subjects only
            stage_partitions = [p for p in partitions if p in test_subjects] if test_subjects is not None and all(
                k in TEST_SUBJECT_ASSETS for k in keys) else partitions
            targets = [p for p in stage_partitions if p not in failed_before] if partitioned else [None]
            selections = {p: keys for p in targets}
            if only_stale:  # judged per stage: upstream stages may just have changed data versions
                data_root = resources["data_root"].process_config_and_initialize()
                stale = stale_assets_by_partition(instance, assets, [p for p in targets if p],
                                                  on_disk=lambda a, p: version_on_disk(data_root, a, p),
                                                  test_subjects=test_subjects)
                selections = {p: [k for k in keys if k.to_user_string() in stale.get(p, [])] for p in targets}
                targets = [p for p in targets if selections[p]]
            if partitioned:
                for partition in sorted(set(stage_partitions) & failed_before):
                    skipped = StageResult(names, partition, False, 0.0, None, "its upstream failed")
                    summary.results.append(skipped)
                    log(format_result(skipped, width))
            for n, partition in enumerate(targets):
                run_names = [k.to_user_string() for k in selections[partition]]
                pending = [StageResult(run_names, p, False, 0.0, None).label for p in targets[n:]] + later
                if should_stop():
                    raise _Stop
                if started:
                    started(pending[0])
                pending = pending[1:]
                start = time.perf_counter()
                try:
                    result = dg.materialize(assets, instance=instance, resources=resources,
                                            selection=selections[partition],
                                            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
                                            partition_key=partition, raise_on_error=False,
                                            tags={"d3ke/launched_by": "d3ke demo"})
                except KeyboardInterrupt:  # the signal came just before or after Dagster's own handling of it
                    cut_short = StageResult(run_names, partition, False, time.perf_counter() - start, None,
                                            f"stopped by {signal_name(stop_requested())} as the run began or "
                                            f"ended", interrupted=True)
                    raise
                seconds = time.perf_counter() - start
                signum = should_stop()
                if not result.success and (signum or _interrupted_in_run(result)):
                    cut_short = StageResult(run_names, partition, False, seconds, result.run_id,
                                            f"stopped by {signal_name(signum)}: the run failed as interrupted",
                                            interrupted=True)
                    raise _Stop
                error = None if result.success else _failure_message(result)
                recomputed = _recomputed(result, node_names, selections[partition]) if result.success else []
                r = StageResult(run_names, partition, result.success, seconds, result.run_id, error, recomputed)
                summary.results.append(r)
                log(format_result(r, width))
                if signum:  # the run completed as the signal came: keep it, launch nothing more
                    raise _Stop
                if not result.success and not partitioned:
                    return summary  # nothing downstream can run without it
    except (KeyboardInterrupt, _Stop):  # a stop signal, here or inside a run: launch nothing more
        if cut_short is not None:
            summary.results.append(cut_short)
            log(format_result(cut_short, width))
        summary.interrupted = True
        summary.not_launched = pending
    return summary
