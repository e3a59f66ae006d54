"""`frames`: square crops of both cameras' videos around the subject, with a label index."""

import dagster as dg
import numpy as np

from d3ke_assets.biomech import ground_truth
from d3ke_assets.defs.automation import on_changed_data_versions
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.ground_truth_assets import opensim_gt
from d3ke_assets.defs.partitions import subject_partitions
from d3ke_assets.defs.raw_assets import raw_subject
from d3ke_assets.defs.resources import DataRootResource, DatasetResource
from d3ke_assets.defs.versioned import build_versioned, code_version_of, input_version
from d3ke_assets.frames import processing
from d3ke_assets.sources import raw
from d3ke_assets.storage import ensure_free_space


@dg.asset(partitions_def=subject_partitions, deps=[raw_subject, opensim_gt], code_version=processing.FRAMES_CODE_VERSION,
          automation_condition=on_changed_data_versions(), group_name="frames", kinds={"video", "parquet"},
          check_specs=[dg.AssetCheckSpec("labelled_frames_stored", asset="frames")])
def frames(context: dg.AssetExecutionContext, data_root: DataRootResource, dataset: DatasetResource):
    """Both cameras' video frames cropped around the subject (JPEG shards) and a Parquet index of their labels."""
    key = context.partition_key
    crop_px = dataset.crop_px()
    with user_errors_as_failures():
        cameras = raw.camera_videos(data_root.root(), key)
        input_version(data_root, "opensim_gt", key)  # complete (stamped) labels only, never a killed run's
        gt_dir = data_root.asset_dir("opensim_gt", key)
        labels, names = ground_truth.load_labels(gt_dir)
        out_dir = data_root.asset_dir("frames", key)
        ensure_free_space(out_dir, processing.estimate_bytes(len(labels["video_frame"]), len(cameras), crop_px),
                          f"frames for {key}")
        summary: dict = {}
        out = build_versioned(
            data_root, "frames", key, code_version_of(context),
            {"crop_px": crop_px, "margin": processing.BOX_MARGIN, "jpeg_quality": processing.JPEG_QUALITY},
            {"raw_subject": key, "opensim_gt": key},
            lambda tmp: summary.update(processing.process_subject(
                key, cameras, labels, names, gt_dir / "labels.npz", tmp, crop_px, log=context.log.info)))
    index = processing.read_index(out.folder)
    n_expected = len(labels["video_frame"]) * len(cameras)
    stored = sum(p.stat().st_size for p in out.folder.glob("*.jpgs"))
    yield dg.MaterializeResult(data_version=dg.DataVersion(out.data_version), metadata={
        **out.metadata(), "n_frames": index.num_rows, "n_used": int(np.sum(index.column("used").to_numpy())),
        "crop_px": crop_px, "stored_mb": round(stored / 1e6, 2),
        "bytes_per_frame": round(stored / max(index.num_rows, 1)),
        "frames_per_s": round(summary["frames_per_s"], 1) if summary else None,
        "index": dg.MetadataValue.path(str(out.folder / processing.INDEX_NAME)),
    })
    yield dg.AssetCheckResult(check_name="labelled_frames_stored", passed=index.num_rows == n_expected,
                              metadata={"n_frames": index.num_rows, "n_expected": n_expected})
