"""Partial reruns: a sensor for new or changed raw subjects, a schedule for stale partitions, and the
automation condition the derived assets use."""

import json
from typing import Callable, Collection

import dagster as dg

from d3ke_assets import settings
from d3ke_assets.defs.constants import STUDY_ASSETS, SUBJECT_ASSETS, TEST_SUBJECT_ASSETS
from d3ke_assets.defs.resources import DataRootResource, DatasetResource
from d3ke_assets.defs.versioned import INPUT_VERSIONS_KEY
from d3ke_assets.sources import raw

CODE_VERSION_TAG = "dagster/code_version"
DATA_VERSION_TAG = "dagster/data_version"


def on_changed_data_versions() -> dg.AutomationCondition:
    """Like `eager()`, but an upstream counts as updated only when its data version changed.

    `eager()` reacts to every new materialization, so a rerun that reused its output (same data
    version) would cascade through the graph for nothing.
    """
    upstream_changed = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
    return (
        (dg.AutomationCondition.newly_missing() | upstream_changed | dg.AutomationCondition.code_version_changed())
        .since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("on_changed_data_versions")


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
    return records[0].asset_materialization if records else None


def _recorded_inputs(mat) -> dict[str, str]:
    value = mat.metadata.get(INPUT_VERSIONS_KEY)
    return dict(value.value) if value is not None else {}


def stale_assets_by_partition(instance: dg.DagsterInstance, assets: list[dg.AssetsDefinition],
                              partitions: list[str],
                              on_disk: Callable[[dg.AssetKey, str | None], str | None] | None = None,
                              test_subjects: Collection[str] | None = None) -> dict[str | None, list[str]]:
    """Which assets of which subject partition are missing or stale, from materialization tags.

    Stale: the code version changed, an input's data version differs from the one the output
    was built from (its `input_data_versions` metadata), or an input is itself stale.  Dagster's
    own `stale_assets_only` (1.13) resolves staleness without the partition key, so the schedule
    computes it per partition.
    `assets` must be in topological order; the key None holds unpartitioned assets.
    `on_disk(asset, partition)`, when given, is the data version of the output on disk now (None
    when it is gone): an output deleted, or raw files recorded anew, also makes an asset stale.
    `test_subjects`: the only partitions of `constants.TEST_SUBJECT_ASSETS` that exist in practice
    (None: every partition).
    """
    out: dict[str | None, list[str]] = {}
    for partition in [None, *partitions]:
        bad: set[dg.AssetKey] = set()
        for a in assets:
            key = a.key
            if key in STUDY_ASSETS:  # run on request only; still an input of what read it (its recorded version)
                continue
            partitioned = a.partitions_def is not None
            if key in TEST_SUBJECT_ASSETS and test_subjects is not None and partition not in test_subjects:
                continue  # not a test subject: never materialized, never stale
            if partitioned != (partition is not None):
                if not partitioned and key in out.get(None, []):
                    bad.add(key)
                continue
            mat = _latest(instance, key, partition)
            stale = mat is None or mat.tags.get(CODE_VERSION_TAG) != a.code_versions_by_key.get(key)
            if not stale and on_disk is not None:
                stale = on_disk(key, partition) != mat.tags.get(DATA_VERSION_TAG)
            for dep in a.dependency_keys:
                dep_def = next((d for d in assets if d.key == dep), None)
                recorded = _recorded_inputs(mat).get(dep.to_user_string()) if mat else None
                if dep in STUDY_ASSETS:  # an input once it exists: stale when it appeared or changed since
                    study = _latest(instance, dep, None)
                    stale = stale or (study is not None and study.tags.get(DATA_VERSION_TAG) != recorded)
                    continue
                if dep_def is None or (mat is not None and recorded is None):
                    continue  # not an input of this output (e.g. the model for real raw data)
                if dep in bad:
                    stale = True
                    continue
                upstream = _latest(instance, dep, partition if dep_def.partitions_def is not None else None)
                if upstream is None or upstream.tags.get(DATA_VERSION_TAG) != recorded:
                    stale = True
            if stale:
                bad.add(key)
                out.setdefault(partition, []).append(key.to_user_string())
    # staleness crosses between the two kinds until nothing changes: frames -> frame_model (unpartitioned)
    # -> subject_evaluation (test subject partitions) -> evaluation (unpartitioned)
    while True:
        before = {p: list(v) for p, v in out.items()}
        _unpartitioned_reading_partitions(instance, assets, out)
        _partitions_reading_stale_unpartitioned(assets, partitions, out, test_subjects)
        if out == before:
            return out


def _partitions_reading_stale_unpartitioned(assets: list[dg.AssetsDefinition], partitions: list[str],
                                           out: dict[str | None, list[str]],
                                           test_subjects: Collection[str] | None) -> None:
    """Partitioned assets that read a stale unpartitioned one (subject_evaluation reads the models) are
    stale in each of their partitions, and so is what is built on them there."""
    unpartitioned_bad = set(out.get(None, []))
    if not unpartitioned_bad:
        return
    order = [a.key.to_user_string() for a in assets]
    for partition in partitions:
        stale = set(out.get(partition, []))
        for a in assets:
            name = a.key.to_user_string()
            if a.partitions_def is None or a.key in STUDY_ASSETS or name in stale:
                continue
            if a.key in TEST_SUBJECT_ASSETS and test_subjects is not None and partition not in test_subjects:
                continue
            if any(d.to_user_string() in unpartitioned_bad | stale for d in a.dependency_keys):
                stale.add(name)
        if stale:
            out[partition] = sorted(stale, key=order.index)


def _unpartitioned_reading_partitions(instance: dg.DagsterInstance, assets: list[dg.AssetsDefinition],
                                      out: dict[str | None, list[str]]) -> None:
    """Unpartitioned assets that read partitions (frame_model reads the train subjects' frames,
    recorded as `frames/<subject>`) are stale when such a partition is stale, or was rebuilt with
    another data version since; and so is whatever is built on them."""
    bad = {dg.AssetKey.from_user_string(k) for k in out.get(None, [])}
    for a in assets:  # topological order: a stale model makes its evaluation stale in the same pass
        if a.partitions_def is not None or a.key in bad or a.key in STUDY_ASSETS:
            continue
        mat = _latest(instance, a.key, None)
        if mat is None:
            continue
        stale = any(dep in bad for dep in a.dependency_keys)
        for name, version in _recorded_inputs(mat).items():
            upstream, _, partition = name.partition("/")
            if stale or not partition:
                continue
            latest = _latest(instance, dg.AssetKey.from_user_string(upstream), partition)
            stale = upstream in out.get(partition, []) or latest is None or \
                latest.tags.get(DATA_VERSION_TAG) != version
        if stale:
            bad.add(a.key)
            out.setdefault(None, []).append(a.key.to_user_string())


def build_automation(assets: list[dg.AssetsDefinition], subjects: dg.PartitionsDefinition, rerun_cron: str,
                     test_subjects: Collection[str] | None = None):
    """The sensor and the schedule, for the project's assets (in topological order) and subject partitions;
    the schedule runs on `rerun_cron` (`D3KE_RERUN_CRON`).  `test_subjects`: the partitions
    `constants.TEST_SUBJECT_ASSETS` are materialized for (None: all)."""
    subject_assets = [a for a in assets if a.key in SUBJECT_ASSETS]  # the subject's data; its scoring follows

    @dg.sensor(name="raw_subject_sensor", target=subject_assets, minimum_interval_seconds=60,
               description="Requests runs for the partitions of subjects whose raw files are new or changed "
                           "(compared by manifest digest).")
    def raw_subject_sensor(context: dg.SensorEvaluationContext, data_root: DataRootResource,
                           dataset: DatasetResource):
        keys = dataset.split().all
        name = dataset.checked_name()
        current = raw.subject_digests(data_root.root(), name, keys,
                                      settings.movi_root(dataset.movi_root) if name == "movi" else None,
                                      log=context.log.info,
                                      lab_root=settings.lab_root(dataset.lab_root) if name == "lab" else None)
        previous = json.loads(context.cursor) if context.cursor else {}
        changed = raw.changed_subjects(previous, current)
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"{k}:{current[k][:16]}", partition_key=k) for k in changed],
            cursor=json.dumps(current, sort_keys=True))

    @dg.schedule(name="stale_subjects_schedule", cron_schedule=rerun_cron, target=assets,
                 description="Reruns only the stale assets of stale subject partitions (cron: D3KE_RERUN_CRON).")
    def stale_subjects_schedule(context: dg.ScheduleEvaluationContext):
        stale = stale_assets_by_partition(context.instance, assets, subjects.get_partition_keys(),
                                          test_subjects=test_subjects)
        if not stale:
            return dg.SkipReason("no stale or missing asset partitions")
        return [dg.RunRequest(run_key=f"{context.scheduled_execution_time}:{p or 'unpartitioned'}",
                              partition_key=p, asset_selection=[dg.AssetKey(a) for a in names])
                for p, names in stale.items()]

    return raw_subject_sensor, stale_subjects_schedule
