"""`raw_subject`: one subject's raw files (generated or found) with a sha256 manifest."""

import base64
from dataclasses import asdict
from pathlib import Path

import dagster as dg

from d3ke_assets import settings
from d3ke_assets.biomech import model_files
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.constants import CODE_VERSIONS, OPENSIM_MODEL, RAW_SUBJECT
from d3ke_assets.defs.resources import DataRootResource, DatasetResource
from d3ke_assets.defs.versioned import build_versioned
from d3ke_assets.sources import lab, movi, raw, synthetic
from d3ke_assets.sources.checksums import Manifest


@dg.asset(key=RAW_SUBJECT, deps=[OPENSIM_MODEL],  # partitioned by subject in definitions
          code_version=CODE_VERSIONS[RAW_SUBJECT], group_name="raw", kinds={"video", "mocap"})
def raw_subject(context: dg.AssetExecutionContext, data_root: DataRootResource,
                dataset: DatasetResource) -> dg.MaterializeResult:
    """Videos, calibration and motion capture of one subject, sha256-checked.

    Synthetic: generated here. movi: found under D3KE_MOVI_ROOT; lab: under D3KE_LAB_ROOT.  The data
    version is the digest of the subject's manifest.
    """
    key = context.partition_key
    log = context.log.info
    with user_errors_as_failures():
        split = dataset.split()  # the resource's own dataset, even if configured apart from the partitions
        split.check(key)
        root = data_root.root()
        cache = raw.hash_cache(root)
        changed: list[str] = []
        if dataset.checked_name() == "synthetic":
            size = dataset.synthetic_size()
            model = model_files.ModelFiles.in_folder(data_root.asset_dir(OPENSIM_MODEL.to_user_string())).osim
            folder = raw.raw_dir(root, key)
            out = build_versioned(
                context, data_root, {"dataset": "synthetic", "seed": dataset.seed, "size": asdict(size)},
                lambda tmp: raw.write_synthetic_subject(tmp, key, size, dataset.seed, model, cache, folder, log),
                on_reuse=lambda f: raw.check_synthetic_subject(root, key, cache, log))
        else:
            if dataset.checked_name() == "movi":
                scan = raw.scan_movi_subject(root, key, movi.MoviIndex.scan(settings.movi_root(dataset.movi_root)))
            else:
                scan = raw.scan_lab_subject(root, key, settings.lab_root(dataset.lab_root))
            changed = scan.changed_files
            # the files stay where the user keeps them: the folder holds their manifest (the data version).
            # Their contents are the config, not where the MoVi or lab root is: a moved root is no change.
            out = build_versioned(
                context, data_root, {"dataset": scan.manifest.dataset, "files": scan.manifest.digest},
                lambda folder: raw.write_found_subject(folder, scan, log), in_place=True, unread=[OPENSIM_MODEL])
        manifest = Manifest.read(out.folder / raw.MANIFEST_NAME)
    metadata = {
        "dataset": manifest.dataset,
        "split": split.split_of(key),
        "n_files": len(manifest.files),
        "total_bytes": sum(f["size"] for f in manifest.files.values()),
        "manifest": dg.MetadataValue.path(str(out.folder / raw.MANIFEST_NAME)),
        "changed_files": len(changed),
    }
    preview = out.folder / raw.PREVIEW_NAME
    if preview.is_file():
        encoded = base64.b64encode(preview.read_bytes()).decode()
        metadata["preview"] = dg.MetadataValue.md(f"![{key} preview](data:image/jpeg;base64,{encoded})")
    if manifest.dataset == "synthetic":
        facts = synthetic.load_subject_facts(out.folder)
        metadata.update(sex=facts["sex"], height_m=facts["height_m"], mass_kg=facts["mass_kg"],
                        n_video_frames=facts["n_video_frames"],
                        trials=", ".join(t["name"] for t in facts["trials"]))
    elif manifest.dataset == "lab":
        facts = lab.read_subject_toml(manifest.folder(root, lab_root=dataset.lab_root) / lab.SUBJECT_FILE)
        metadata.update(sex=facts["sex"] or "unknown", height_m=facts["height_m"], mass_kg=facts["mass_kg"],
                        trials=", ".join(sorted({Path(n).stem for n in manifest.files if n.startswith("mocap/")}
                                                - {lab.STATIC_TRIAL})))
    return out.result(metadata)
