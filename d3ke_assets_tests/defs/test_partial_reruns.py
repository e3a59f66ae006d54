"""Skipping unchanged work, partial reruns by subject, and what an interrupted write leaves behind.

The tests share one data root and instance and run in file order: a full graph, a no-op rerun, a
changed raw file, a code-version bump, an interrupted write and a bad subject.
"""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from d3ke_assets.cli import main
from d3ke_assets.defs.automation import build_automation, stale_assets_by_partition
from d3ke_assets.defs.constants import SUBJECT_ASSETS
from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.defs.runner import materialize_graph
from d3ke_assets.definitions import ALL_ASSETS, SETTINGS
from d3ke_assets.defs.partitions import subject_partitions
from d3ke_assets.frames import processing
from d3ke_assets.versioning import recorded_data_version

SUBJECTS = ["Subject_1", "Subject_2"]
# the per-subject graph and the model it builds on; training has its own tests
ASSETS = [a for a in ALL_ASSETS if a.key in SUBJECT_ASSETS or a.key == dg.AssetKey("opensim_model")]
PER_SUBJECT = ["raw_subject", "mocap_markers", "opensim_gt", "frames"]


def _resources(root):
    return {"data_root": DataRootResource(path=str(root)),
            "dataset": DatasetResource(name="synthetic", preset="smoke"),
            "mlflow": MlflowTrackingResource(data_root=str(root))}


def _defs(root, assets=ASSETS):
    return dg.Definitions(assets=assets, resources=_resources(root))


def _with_code_version(asset: dg.AssetsDefinition, version: str) -> dg.AssetsDefinition:
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(code_version=version))


def _latest_version(instance, asset: str, partition: str | None) -> str:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1).records
    return records[0].asset_materialization.tags["dagster/data_version"]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerun_root")
    with dg.instance_for_test() as instance:  # a real (temporary) instance: schedules need its reference
        first = materialize_graph(_defs(root), instance, SUBJECTS, log=lambda m: None)
        yield {"root": root, "instance": instance, "first": first}


def test_the_first_run_computes_every_asset_partition(graph):
    first = graph["first"]
    assert not first.failed
    assert set(first.recomputed) == {("opensim_model", None)} | {(a, s) for a in PER_SUBJECT for s in SUBJECTS}


def test_a_rerun_with_nothing_changed_recomputes_nothing(graph):
    before = {(a, s): _latest_version(graph["instance"], a, s) for a in PER_SUBJECT for s in SUBJECTS}
    again = materialize_graph(_defs(graph["root"]), graph["instance"], SUBJECTS, log=lambda m: None)
    assert not again.failed and again.recomputed == []
    after = {(a, s): _latest_version(graph["instance"], a, s) for a in PER_SUBJECT for s in SUBJECTS}
    assert after == before
    assert stale_assets_by_partition(graph["instance"], ASSETS, SUBJECTS) == {}


def test_automation_ignores_a_new_materialization_with_the_same_data_version(graph):
    root, instance = graph["root"], graph["instance"]
    first = dg.evaluate_automation_conditions(defs=_defs(root), instance=instance)
    assert first.total_requested == 0
    again = dg.materialize(ASSETS, selection=["raw_subject"], partition_key="Subject_1", instance=instance,
                           resources=_resources(root))
    assert again.success  # a new materialization, with the same data version
    second = dg.evaluate_automation_conditions(defs=_defs(root), instance=instance, cursor=first.cursor)
    assert second.total_requested == 0  # eager() requests mocap_markers[Subject_1] here
    graph["automation_cursor"] = second.cursor


def test_a_changed_raw_file_reruns_exactly_that_subjects_partitions(graph):
    root, instance = graph["root"], graph["instance"]
    sensor, _ = build_automation(ASSETS, subject_partitions(SETTINGS), SETTINGS.rerun_cron)
    first_tick = sensor(dg.build_sensor_context(instance=instance, resources=_resources(root)))
    assert sorted(r.partition_key for r in first_tick.run_requests) == SUBJECTS  # both new to the sensor
    cursor = first_tick.cursor
    quiet = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=_resources(root)))
    assert quiet.run_requests == []

    trc = root / "raw_subject" / "Subject_2" / "mocap" / "Subject_2_squat.trc"
    lines = trc.read_text().splitlines()
    cells = lines[10].split("\t")
    cells[5] = f"{float(cells[5]) + 1.0:.5f}"  # one marker coordinate moved by 1 mm, on purpose
    lines[10] = "\t".join(cells)
    trc.write_text("\n".join(lines) + "\n")
    changed = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=_resources(root)))
    assert [r.partition_key for r in changed.run_requests] == ["Subject_2"]

    assert main(["verify", "--write-manifest", "--data-root", str(root)]) == 0  # accept the change
    for s in SUBJECTS:
        assert dg.materialize(ASSETS, selection=["raw_subject"], partition_key=s, instance=instance,
                              resources=_resources(root)).success
    evaluation = dg.evaluate_automation_conditions(defs=_defs(root), instance=instance,
                                                   cursor=graph["automation_cursor"])
    assert evaluation.get_requested_partitions(dg.AssetKey("mocap_markers")) == {"Subject_2"}

    rerun = materialize_graph(_defs(root), instance, SUBJECTS, log=lambda m: None)
    assert not rerun.failed
    assert set(rerun.recomputed) == {("mocap_markers", "Subject_2"), ("opensim_gt", "Subject_2"),
                                     ("frames", "Subject_2")}


def test_only_stale_launches_no_run_when_nothing_changed_and_notices_outputs_on_disk(graph):
    root, instance = graph["root"], graph["instance"]
    quiet = materialize_graph(_defs(root), instance, SUBJECTS, log=lambda m: None, only_stale=True)
    assert quiet.results == []
    shutil.rmtree(root / "frames" / "Subject_1")  # an output deleted by hand
    trc = root / "raw_subject" / "Subject_2" / "mocap" / "Subject_2_walking.trc"
    trc.write_text(trc.read_text().replace("\t1.", "\t2.", 1))  # a raw file replaced on purpose ...
    assert main(["verify", "--write-manifest", "--data-root", str(root)]) == 0  # ... and recorded
    again = materialize_graph(_defs(root), instance, SUBJECTS, log=lambda m: None, only_stale=True)
    assert sorted((tuple(r.assets), r.partition) for r in again.results) == [
        (("frames",), "Subject_1"), (tuple(PER_SUBJECT), "Subject_2")]
    assert set(again.recomputed) == {("frames", "Subject_1"), ("mocap_markers", "Subject_2"),
                                     ("opensim_gt", "Subject_2"), ("frames", "Subject_2")}


def test_a_code_version_bump_makes_every_partition_of_that_asset_stale(graph):
    root, instance = graph["root"], graph["instance"]
    bumped = [a if a.key != dg.AssetKey("frames") else _with_code_version(a, "bumped") for a in ASSETS]
    assert stale_assets_by_partition(instance, bumped, SUBJECTS) == {s: ["frames"] for s in SUBJECTS}
    _, schedule = build_automation(bumped, subject_partitions(SETTINGS), SETTINGS.rerun_cron)
    import datetime

    tick = datetime.datetime(2026, 11, 23, 3, 0, tzinfo=datetime.timezone.utc)
    requests = schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=tick))
    # Subject_3 (smoke has three) was never materialized here: missing, so all of it is requested
    assert sorted((r.partition_key, [k.to_user_string() for k in r.asset_selection]) for r in requests) == \
        [(s, ["frames"]) for s in SUBJECTS] + [("Subject_3", PER_SUBJECT)]
    rerun = materialize_graph(_defs(root, bumped), instance, SUBJECTS, log=lambda m: None)
    assert set(rerun.recomputed) == {("frames", s) for s in SUBJECTS}
    assert stale_assets_by_partition(instance, bumped, SUBJECTS) == {}
    graph["assets"] = bumped


def test_an_interrupted_write_leaves_no_output_that_passes_as_complete(graph, monkeypatch):
    root, instance = graph["root"], graph["instance"]
    folder = root / "frames" / "Subject_1"
    before = recorded_data_version(folder)
    calls = {"n": 0}
    original = processing.crop_to_jpeg

    def dies_halfway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt("killed mid-write")
        return original(*args, **kwargs)

    monkeypatch.setattr(processing, "crop_to_jpeg", dies_halfway)
    assets = [a if a.key != dg.AssetKey("frames") else _with_code_version(a, "again") for a in ASSETS]
    with pytest.raises(KeyboardInterrupt):
        dg.materialize(assets, selection=["frames"], partition_key="Subject_1", instance=instance,
                       resources=_resources(root))
    assert calls["n"] > 20
    assert recorded_data_version(folder) == before  # the previous complete output is untouched
    assert not [p for p in (root / "frames").iterdir() if p.name.startswith("Subject_1.tmp-")]
    monkeypatch.setattr(processing, "crop_to_jpeg", original)
    done = dg.materialize(assets, selection=["frames"], partition_key="Subject_1", instance=instance,
                          resources=_resources(root))
    assert done.success and recorded_data_version(folder) != before


def test_a_bad_subject_fails_alone_with_the_file_named(graph):
    root, instance = graph["root"], graph["instance"]
    calibration = root / "raw_subject" / "Subject_2" / "cameras" / "PG2.json"
    saved = calibration.read_bytes()
    calibration.unlink()
    try:
        assets = [a if a.key != dg.AssetKey("frames") else _with_code_version(a, "third") for a in ASSETS]
        results = {s: dg.materialize(assets, selection=["frames"], partition_key=s, instance=instance,
                                     resources=_resources(root), raise_on_error=False) for s in SUBJECTS}
        assert results["Subject_1"].success and not results["Subject_2"].success
        failure = next(e.step_failure_data.user_failure_data.description
                       for e in results["Subject_2"].all_events if e.is_step_failure)
        assert str(calibration) in failure and "missing" in failure and "\n" not in failure
    finally:
        calibration.write_bytes(saved)


def test_disk_preflight_fails_before_writing(graph, monkeypatch):
    import shutil

    from d3ke_assets import storage

    root, instance = graph["root"], graph["instance"]
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, 1 << 40, 1000))
    assets = [a if a.key != dg.AssetKey("frames") else _with_code_version(a, "fourth") for a in ASSETS]
    result = dg.materialize(assets, selection=["frames"], partition_key="Subject_1", instance=instance,
                            resources=_resources(root), raise_on_error=False)
    failure = next(e.step_failure_data.user_failure_data.description for e in result.all_events if e.is_step_failure)
    assert "frames for Subject_1 needs about" in failure and "are free there" in failure
    assert recorded_data_version(root / "frames" / "Subject_1")  # still the complete one
