"""`frames`: square crops of both cameras' videos around the subject, with a label index."""

import dagster as dg
import numpy as np

from d3ke_assets.biomech import ground_truth
from d3ke_assets.defs.automation import on_changed_data_versions
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.resources import DataRootResource, DatasetResource
from d3ke_assets.defs.constants import CODE_VERSIONS, FRAMES, OPENSIM_GT, RAW_SUBJECT, folder_name
from d3ke_assets.defs.versioned import versioned_output
from d3ke_assets.frames import processing
from d3ke_assets.sources import raw
from d3ke_assets.storage import ensure_free_space


@dg.asset(key=FRAMES, deps=[RAW_SUBJECT, OPENSIM_GT],  # partitioned by subject in definitions
          code_version=CODE_VERSIONS[FRAMES],
          automation_condition=on_changed_data_versions(), group_name="frames", kinds={"video", "parquet"},
          check_specs=[dg.AssetCheckSpec("labelled_frames_stored", asset=FRAMES)])
def frames(context: dg.AssetExecutionContext, data_root: DataRootResource, dataset: DatasetResource):
    """Both cameras' video frames cropped around the subject (JPEG shards) and a Parquet index of their labels."""
    key = context.partition_key
    crop_px = dataset.crop_px()
    with user_errors_as_failures():
        cameras = raw.camera_videos(data_root.root(), key, dataset.movi_root, dataset.lab_root)
        config = {"crop_px": crop_px, "margin": processing.BOX_MARGIN, "jpeg_quality": processing.JPEG_QUALITY}
        out = versioned_output(context, data_root, config)  # its inputs are complete (stamped), never a killed run's
        gt_dir = data_root.asset_dir(folder_name(OPENSIM_GT), key)
        labels, names = ground_truth.load_labels(gt_dir)
        ensure_free_space(out.folder, processing.estimate_bytes(len(labels["video_frame"]), len(cameras), crop_px),
                          f"frames for {key}")
        summary: dict = {}
        out.build(lambda tmp: summary.update(processing.process_subject(
            key, cameras, labels, names, gt_dir / "labels.npz", tmp, crop_px, log=context.log.info)), log=context.log.info)
    index = processing.read_index(out.folder)
    n_expected = processing.expected_rows(cameras, labels, names)
    stored = sum(p.stat().st_size for p in out.folder.glob("*.jpgs"))
    yield out.result({
        "n_frames": index.num_rows, "n_used": int(np.sum(index.column("used").to_numpy())),
        "crop_px": crop_px, "stored_mb": round(stored / 1e6, 2),
        "bytes_per_frame": round(stored / max(index.num_rows, 1)),
        "frames_per_s": round(summary["frames_per_s"], 1) if summary else None,
        "index": dg.MetadataValue.path(str(out.folder / processing.INDEX_NAME)),
    })
    yield dg.AssetCheckResult(check_name="labelled_frames_stored", passed=index.num_rows == n_expected,
                              metadata={"n_frames": index.num_rows, "n_expected": n_expected})
