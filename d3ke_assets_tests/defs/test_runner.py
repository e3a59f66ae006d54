"""The graph runner: one run per subject, a failed subject is skipped downstream, others go on."""

import dagster as dg

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
