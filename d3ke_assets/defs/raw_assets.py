"""`raw_subject`: one subject's raw files (generated or found) with a sha256 manifest."""

import base64

import dagster as dg

from d3ke_assets import settings
from d3ke_assets.biomech import model_builder
from d3ke_assets.errors import D3keError
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.model_assets import opensim_model
from d3ke_assets.defs.partitions import subject_partitions
from d3ke_assets.defs.resources import DataRootResource, DatasetResource
from d3ke_assets.defs.versioned import input_versions_metadata
from d3ke_assets.sources import movi, raw, synthetic
from d3ke_assets.versioning import read_stamp

RAW_CODE_VERSION = f"raw1-gen{synthetic.GENERATOR_CODE_VERSION}"


@dg.asset(partitions_def=subject_partitions, deps=[opensim_model], code_version=RAW_CODE_VERSION,
          group_name="raw", kinds={"video", "mocap"})
def raw_subject(context: dg.AssetExecutionContext, data_root: DataRootResource,
                dataset: DatasetResource) -> dg.MaterializeResult:
    """Videos, calibration and motion capture of one subject, sha256-checked.

    Synthetic: generated here. movi: found under D3KE_MOVI_ROOT.  The data
    version is the digest of the subject's manifest.
    """
    key = context.partition_key
    with user_errors_as_failures():
        split = dataset.split()  # the resource's own dataset, even if configured apart from the partitions
        split.check(key)
        root = data_root.root()
        if dataset.checked_name() == "synthetic":
            model_dir = data_root.asset_dir("opensim_model")
            model_stamp = read_stamp(model_dir)
            if model_stamp is None:
                raise D3keError(f"{model_dir}: opensim_model is not materialized: materialize it first")
            result = raw.synthetic_subject(root, key, dataset.synthetic_size(), dataset.seed,
                                           model_builder.model_file(model_dir), model_stamp["data_version"],
                                           log=context.log.info)
        else:
            index = movi.MoviIndex.scan(settings.movi_root(dataset.movi_root))
            result = raw.movi_subject(root, key, index, log=context.log.info)
    metadata = {
        "dataset": result.dataset,
        "split": split.split_of(key),
        "n_files": len(result.manifest.files),
        "total_bytes": result.total_bytes,
        "manifest": dg.MetadataValue.path(str(result.folder / raw.MANIFEST_NAME)),
        "reused": result.reused,
        "changed_files": len(result.changed_files),
    }
    preview = result.folder / raw.PREVIEW_NAME
    if preview.is_file():
        encoded = base64.b64encode(preview.read_bytes()).decode()
        metadata["preview"] = dg.MetadataValue.md(f"![{key} preview](data:image/jpeg;base64,{encoded})")
    if result.dataset == "synthetic":
        facts = synthetic.load_subject_facts(result.folder)
        metadata.update(sex=facts["sex"], height_m=facts["height_m"], mass_kg=facts["mass_kg"],
                        n_video_frames=facts["n_video_frames"],
                        trials=", ".join(t["name"] for t in facts["trials"]))
    inputs = {"opensim_model": model_stamp["data_version"]} if result.dataset == "synthetic" else {}
    return dg.MaterializeResult(data_version=dg.DataVersion(result.data_version),
                                metadata={**metadata, **input_versions_metadata(inputs)})
