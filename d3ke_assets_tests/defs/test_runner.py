"""The graph runner: one run per subject, a failed subject is skipped downstream, others go on."""

import os
import signal
import time

import dagster as dg

from d3ke_assets import interrupts
from d3ke_assets.defs.runner import materialize_graph

parts = dg.StaticPartitionsDefinition(["Subject_1", "Subject_2", "Subject_3"])
calls: list[str] = []


@dg.asset
def generic_thing():
    calls.append("generic_thing")


@dg.asset(partitions_def=parts, deps=[generic_thing])
def per_subject(context: dg.AssetExecutionContext):
    calls.append(f"per_subject {context.partition_key}")
    if context.partition_key == "Subject_2":
        raise dg.Failure(description="Subject_2: F_PG1_Subject_2_L.avi is missing")


@dg.asset(partitions_def=parts, deps=[per_subject])
def downstream(context: dg.AssetExecutionContext):
    calls.append(f"downstream {context.partition_key}")


@dg.asset(deps=[downstream])
def across_subjects():
    calls.append("across_subjects")


@dg.asset(partitions_def=parts, deps=[across_subjects])
def late(context: dg.AssetExecutionContext):
    calls.append(f"late {context.partition_key}")


def test_failed_subject_is_skipped_downstream_and_reported():
    calls.clear()
    defs = dg.Definitions(assets=[generic_thing, per_subject, downstream, across_subjects, late])
    with dg.DagsterInstance.ephemeral() as instance:
        summary = materialize_graph(defs, instance, ["Subject_1", "Subject_2", "Subject_3"], log=lambda m: None)
    # consecutive partitioned assets run together, one run per subject
    assert calls == ["generic_thing",
                     "per_subject Subject_1", "downstream Subject_1", "per_subject Subject_2",
                     "per_subject Subject_3", "downstream Subject_3",
                     "across_subjects", "late Subject_1", "late Subject_3"]
    failed = {(r.assets[0], r.partition): r for r in summary.failed}
    assert set(failed) == {("per_subject", "Subject_2"), ("late", "Subject_2")}
    assert failed[("per_subject", "Subject_2")].error == "Subject_2: F_PG1_Subject_2_L.avi is missing"
    assert failed[("late", "Subject_2")].run_id is None  # never launched
    assert len(summary.results) == 1 + 3 + 1 + 3


def _runs(instance: dg.DagsterInstance) -> list[tuple[str | None, dg.DagsterRunStatus]]:
    """(partition, status) of every run the instance recorded, oldest first."""
    return [(r.tags.get("dagster/partition"), r.status) for r in reversed(instance.get_runs())]


def test_a_stop_request_between_runs_launches_nothing_more():
    calls.clear()
    defs = dg.Definitions(assets=[generic_thing, per_subject, downstream, across_subjects, late])
    lines: list[str] = []
    with dg.DagsterInstance.ephemeral() as instance:
        summary = materialize_graph(defs, instance, ["Subject_1", "Subject_3"], log=lines.append,
                                    should_stop=lambda: "downstream Subject_1" in calls)
        runs = _runs(instance)
    assert calls == ["generic_thing", "per_subject Subject_1", "downstream Subject_1"]
    assert runs == [(None, dg.DagsterRunStatus.SUCCESS), ("Subject_1", dg.DagsterRunStatus.SUCCESS)]
    assert summary.interrupted and [r.status for r in summary.results] == ["ok", "ok"]
    assert summary.not_launched == ["per_subject, downstream [Subject_3]", "across_subjects", "late"]
    assert len(lines) == 2 and lines[1].startswith("per_subject, downstream [Subject_1]")


@dg.asset(partitions_def=parts)
def signals_itself(context: dg.AssetExecutionContext):
    calls.append(f"signals_itself {context.partition_key}")
    if context.partition_key == "Subject_2":
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a supervisor's stop would
        for _ in range(300):  # not interrupted: this returns after 30 s and the test sees it in `calls`
            time.sleep(0.1)
    calls.append(f"signals_itself {context.partition_key} done")


@dg.asset(deps=[signals_itself])
def after_signals():
    calls.append("after_signals")


def test_a_stop_signal_interrupts_the_run_in_progress_and_launches_nothing_more():
    calls.clear()
    defs = dg.Definitions(assets=[generic_thing, signals_itself, after_signals])
    before = signal.getsignal(signal.SIGTERM)
    with dg.DagsterInstance.ephemeral() as instance, interrupts.stop_on_signals():
        summary = materialize_graph(defs, instance, ["Subject_1", "Subject_2", "Subject_3"], log=lambda m: None)
        received = interrupts.stop_requested()
        runs = _runs(instance)
        failure = instance.all_logs(instance.get_runs(limit=1)[0].run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    assert received == signal.SIGTERM
    assert calls == ["generic_thing", "signals_itself Subject_1", "signals_itself Subject_1 done",
                     "signals_itself Subject_2"]
    assert runs == [(None, dg.DagsterRunStatus.SUCCESS), ("Subject_1", dg.DagsterRunStatus.SUCCESS),
                    ("Subject_2", dg.DagsterRunStatus.FAILURE)]
    assert [e.dagster_event.step_failure_data.error.cls_name for e in failure] == ["DagsterExecutionInterruptedError"]
    stopped = summary.results[-1]
    assert (stopped.partition, stopped.status) == ("Subject_2", "interrupted") and "SIGTERM" in stopped.error
    assert summary.interrupted and summary.not_launched == ["signals_itself [Subject_3]", "after_signals"]


def test_a_stop_signal_just_before_a_run_launches_nothing_more():
    """Outside Dagster's handling (here: as a run is announced) the signal raises; nothing more starts."""
    calls.clear()
    defs = dg.Definitions(assets=[generic_thing, per_subject])

    def started(label: str) -> None:
        if "Subject_3" in label:
            os.kill(os.getpid(), signal.SIGINT)

    with dg.DagsterInstance.ephemeral() as instance, interrupts.stop_on_signals():
        summary = materialize_graph(defs, instance, ["Subject_1", "Subject_3"], log=lambda m: None, started=started)
        received = interrupts.stop_requested()
        runs = _runs(instance)
    assert received == signal.SIGINT
    assert [p for p, _ in runs] == [None, "Subject_1"] and calls == ["generic_thing", "per_subject Subject_1"]
    assert summary.interrupted and summary.not_launched == ["per_subject [Subject_3]"]
