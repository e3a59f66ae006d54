"""The one entry point through which every asset builds, reuses and versions its output.

An asset's data version is the hash of its code version, its configuration and its inputs'
data versions (`versioning.version_stamp`).  Its inputs are the asset's own `deps` (the keys in
`constants`): partitioned upstreams are read at the asset's own partition, unpartitioned ones
as a whole, and an unpartitioned asset that reads several subject partitions names them
(`partitions`).  Inputs' versions are read from their outputs on disk, which also proves each
input is complete.  `VersionedOutput.result` returns the data version and the `reused` and
`input_data_versions` metadata every materialization carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Mapping, Sequence

import dagster as dg

from d3ke_assets import interrupts, versioning
from d3ke_assets.defs.constants import PARTITIONED_ASSETS, RAW_SUBJECT, folder_name
from d3ke_assets.defs.resources import DataRootResource
from d3ke_assets.errors import D3keError
from d3ke_assets.sources import checksums

INPUT_VERSIONS_KEY = "input_data_versions"


def input_versions_metadata(inputs: dict[str, str]) -> dict:
    """The inputs' data versions this output was built from, kept with its materialization.

    Dagster's own `dagster/input_data_version/*` tags do not record a partitioned upstream's
    version reliably here (1.13), and tags cannot hold a whole hash, so staleness is judged
    from this metadata.
    """
    return {INPUT_VERSIONS_KEY: dg.MetadataValue.json(dict(inputs))}


def _manifest_digest(folder: Path) -> str:
    return checksums.Manifest.read(folder / checksums.MANIFEST_NAME).digest


# Outputs versioned by their content rather than by their stamp: the raw edge is its files.
CONTENT_VERSIONS: dict[dg.AssetKey, Callable[[Path], str]] = {RAW_SUBJECT: _manifest_digest}


def input_version(data_root: DataRootResource, asset: dg.AssetKey, partition: str | None) -> str:
    """The data version of an upstream output, read from disk; a clear error when it is not there."""
    folder = data_root.asset_dir(folder_name(asset), partition)
    where = f" for {partition}" if partition else ""
    missing = D3keError(f"{folder}: {asset.to_user_string()} is not materialized{where}: materialize it first")
    if asset in CONTENT_VERSIONS:
        if not (folder / checksums.MANIFEST_NAME).is_file():
            raise missing
        return CONTENT_VERSIONS[asset](folder)
    version = versioning.recorded_data_version(folder)
    if version is None:
        raise missing
    return version


def version_on_disk(data_root: DataRootResource, asset: dg.AssetKey, partition: str | None) -> str | None:
    """`input_version`, or None when the output is not (or no longer) there."""
    try:
        return input_version(data_root, asset, partition)
    except D3keError:
        return None


@dataclass
class VersionedOutput:
    """One asset partition's output folder, its stamp and its inputs' versions; built or reused."""

    key: dg.AssetKey
    folder: Path
    stamp: str  # also the resume key of a training that continues after a killed run
    inputs: dict[str, str]
    config: dict = field(default_factory=dict)  # the asset's own configuration, part of the stamp
    run_settings: dict = field(default_factory=dict)  # the run's whole settings (`settings.Settings`)
    data_version: str = ""
    reused: bool = False

    def result(self, metadata: Mapping | None = None) -> dg.MaterializeResult:
        return dg.MaterializeResult(data_version=dg.DataVersion(self.data_version), metadata={
            "reused": self.reused, **input_versions_metadata(self.inputs),
            # the effective configuration, in one place: the run's settings and this asset's own
            "settings": dg.MetadataValue.json({**self.run_settings, "asset_config": self.config}),
            **(metadata or {})})

    def build(self, build: Callable[[Path], object], *, in_place: bool = False,
              on_reuse: Callable[[Path], object] | None = None,
              log: Callable[[str], None] = lambda m: None) -> "VersionedOutput":
        """Reuse the output when its stamp matches, else `build(folder)` and stamp it.

        `build` writes into a temporary folder swapped in when complete, or (`in_place`) into the
        output folder itself, for outputs with parts that must survive a failed run.
        """
        stop_if_requested()
        self.data_version, self.reused = versioning.build_if_stale(
            self.folder, self.stamp, build, in_place=in_place, content_version=CONTENT_VERSIONS.get(self.key),
            on_reuse=on_reuse, log=log)
        where = f" [{self.folder.name}]" if self.key in PARTITIONED_ASSETS else ""
        log(f"{self.key.to_user_string()}{where}: {'unchanged, reused' if self.reused else 'written'}")
        return self


def stop_if_requested() -> None:
    """Fail the step as interrupted when a stop signal has come (`d3ke demo`'s wakeup fd saw it).

    Dagster raises a signal inside the step that is running, but a signal whose handler runs inside
    a finalizer (a `__del__`) is swallowed there and the run would go on; each asset checks again here.
    """
    if interrupts.stop_requested():
        raise dg.DagsterExecutionInterruptedError()


def versioned_output(context: dg.AssetExecutionContext, data_root: DataRootResource, config: dict,
                     partitions: Mapping[dg.AssetKey, Sequence[str]] | None = None,
                     unread: Collection[dg.AssetKey] = ()) -> VersionedOutput:
    """The output of the running asset partition, with the stamp its code, config and inputs give.

    `unread`: deps this build does not read (real raw data does not depend on the generic model).
    """
    key = context.asset_key
    own_partition = context.partition_key if context.has_partition_key else None
    partitions = partitions or {}
    inputs: dict[str, str] = {}
    for dep in context.assets_def.get_asset_spec(key).deps:
        upstream = dep.asset_key
        name = upstream.to_user_string()
        if upstream in unread:
            continue
        if upstream in partitions:  # several subject partitions: one input each
            for p in partitions[upstream]:
                inputs[f"{name}/{p}"] = input_version(data_root, upstream, p)
        elif upstream in PARTITIONED_ASSETS:
            if own_partition is None:
                raise D3keError(f"{key.to_user_string()} reads {name} without naming its partitions")
            inputs[name] = input_version(data_root, upstream, own_partition)
        else:
            inputs[name] = input_version(data_root, upstream, None)
    code_version = context.assets_def.code_versions_by_key[key]
    folder = data_root.asset_dir(folder_name(key), own_partition)
    dataset = getattr(context.resources, "dataset", None)
    run_settings = dataset.run_settings(str(data_root.root())).as_dict() if dataset is not None else \
        {"data_root": str(data_root.root())}
    return VersionedOutput(key, folder, versioning.version_stamp(code_version, config, inputs), inputs,
                           config, run_settings)


def build_versioned(context: dg.AssetExecutionContext, data_root: DataRootResource, config: dict,
                    build: Callable[[Path], object], *, in_place: bool = False,
                    partitions: Mapping[dg.AssetKey, Sequence[str]] | None = None,
                    unread: Collection[dg.AssetKey] = (),
                    on_reuse: Callable[[Path], object] | None = None) -> VersionedOutput:
    """`versioned_output(...).build(...)`: the running asset's output, reused or built and stamped."""
    return versioned_output(context, data_root, config, partitions, unread).build(
        build, in_place=in_place, on_reuse=on_reuse, log=context.log.info)
