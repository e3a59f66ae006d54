"""The one mechanism every asset uses to skip unchanged work.

An asset's data version is the hash of its code version, its configuration and
its inputs' data versions (`versioning.version_stamp`).  The stamp is stored
with the output; when it already matches, the recorded data version is returned
without recomputing, and the materialization says `reused: true`.  Inputs'
versions are read from their outputs on disk (their stamps, or the manifest
digest at the raw edge), which also proves the input is complete.
"""

from dataclasses import dataclass

import dagster as dg
from pathlib import Path
from typing import Callable

from d3ke_assets.defs.resources import DataRootResource
from d3ke_assets.errors import D3keError
from d3ke_assets.sources import checksums, raw
from d3ke_assets.versioning import build_if_stale, build_in_place_if_stale, read_stamp, version_stamp


@dataclass
class VersionedBuild:
    folder: Path
    data_version: str
    reused: bool
    inputs: dict[str, str]

    def metadata(self) -> dict:
        return {"reused": self.reused, **input_versions_metadata(self.inputs)}


INPUT_VERSIONS_KEY = "input_data_versions"


def input_versions_metadata(inputs: dict[str, str]) -> dict:
    """The inputs' data versions this output was built from, kept with its materialization.

    Dagster's own `dagster/input_data_version/*` tags do not record a partitioned upstream's
    version reliably here (1.13), and tags cannot hold a whole hash, so staleness is judged
    from this metadata.
    """
    return {INPUT_VERSIONS_KEY: dg.MetadataValue.json(dict(inputs))}


def code_version_of(context) -> str:
    """The asset's own code version as Dagster knows it: one source for Dagster's staleness and our stamps."""
    return context.assets_def.code_versions_by_key[context.asset_key]


def input_version(data_root: DataRootResource, asset: str, partition: str | None) -> str:
    """The data version of an upstream output, read from disk; a clear error when it is not there."""
    folder = data_root.asset_dir(asset, partition)
    where = f" for {partition}" if partition else ""
    if asset == raw.ASSET_DIR:  # the raw edge: the content hash of the subject's files
        manifest = folder / checksums.MANIFEST_NAME
        if not manifest.is_file():
            raise D3keError(f"{manifest}: {asset} is not materialized{where}: materialize it first")
        return checksums.Manifest.read(manifest).digest
    rec = read_stamp(folder)
    if rec is None:
        raise D3keError(f"{folder}: {asset} is not materialized{where}: materialize it first")
    return rec["data_version"]


def version_on_disk(data_root: DataRootResource, asset: str, partition: str | None) -> str | None:
    """`input_version`, or None when the output is not (or no longer) there."""
    try:
        return input_version(data_root, asset, partition)
    except D3keError:
        return None


def build_versioned(data_root: DataRootResource, asset: str, partition: str | None, code_version: str,
                    config: dict, inputs: dict[str, str | None], build: Callable[[Path], object],
                    in_place: bool = False) -> VersionedBuild:
    """Reuse the asset's output when its stamp matches, else `build(folder)` and stamp it.

    `inputs`: upstream asset -> its partition (None for unpartitioned).  `build` writes into a
    temporary folder swapped in when complete, or (`in_place`) into the output folder itself.
    """
    versions = {name: input_version(data_root, name, part) for name, part in inputs.items()}
    stamp = version_stamp(code_version, config, versions)
    folder = data_root.asset_dir(asset, partition)
    run = build_in_place_if_stale if in_place else build_if_stale
    data_version, reused = run(folder, stamp, build)
    return VersionedBuild(folder, data_version, reused, versions)
