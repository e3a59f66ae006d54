"""`mocap_markers` and `opensim_gt`: per-subject markers, then OpenSim scaling, IK and labels."""

import dagster as dg
import numpy as np

from d3ke_assets import settings
from d3ke_assets.biomech import ground_truth, model_files, trials
from d3ke_assets.defs.automation import on_changed_data_versions
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.pools import OPENSIM_POOL
from d3ke_assets.defs.resources import DataRootResource, DatasetResource
from d3ke_assets.defs.constants import CODE_VERSIONS, MOCAP_MARKERS, OPENSIM_GT, OPENSIM_MODEL, RAW_SUBJECT, folder_name
from d3ke_assets.defs.versioned import build_versioned
from d3ke_assets.sources import amass_markers, lab, mocap, movi, raw
from d3ke_assets.storage import ensure_free_space


@dg.asset(key=MOCAP_MARKERS, deps=[RAW_SUBJECT],  # partitioned by subject in definitions
          code_version=CODE_VERSIONS[MOCAP_MARKERS],
          automation_condition=on_changed_data_versions(), group_name="biomech", kinds={"mocap"})
def mocap_markers(context: dg.AssetExecutionContext, data_root: DataRootResource,
                  dataset: DatasetResource) -> dg.MaterializeResult:
    """Marker trajectories per trial (.trc) and the trials' video frames (trials.json).

    Synthetic: the generator's markers.  movi: virtual markers on the AMASS SMPL+H
    body (needs the SMPL+H model files, D3KE_SMPLH_DIR).  lab: the lab's .trc files, each
    trial's video frames timed by its videos' frame rate and video_start_time_s.
    """
    key = context.partition_key
    with user_errors_as_failures():
        raw_folder = raw.raw_dir(data_root.root(), key)
        name = dataset.checked_name()
        facts: dict = {}
        if name == "synthetic":
            build = lambda tmp: facts.update(mocap.synthetic_mocap(raw_folder, tmp, log=context.log.info))  # noqa: E731
        elif name == "lab":
            subject = lab.index_subject(settings.lab_root(dataset.lab_root), key)
            build = lambda tmp: facts.update(mocap.lab_mocap(subject, tmp, log=context.log.info))  # noqa: E731
        else:
            smplh = amass_markers.smplh_dir(dataset.smplh_dir)
            motions = movi.index_subject(movi.MoviIndex.scan(settings.movi_root(dataset.movi_root)), key)
            # a user's vertex table (D3KE_AMASS_MARKERS) for a model with other markers than the project's 47
            vertices = amass_markers.read_vertex_table(dataset.amass_markers) if dataset.amass_markers else None
            build = lambda tmp: facts.update(mocap.movi_mocap(motions, smplh, tmp, log=context.log.info,  # noqa: E731
                                                              vertices=vertices))
        # movi outputs made before issue 17 paired motions by file-name text order: the rule is in the
        # config so that they (and only they, not synthetic ones) are rebuilt
        config = {"dataset": name, **({"motion_pairing": "by motion number"} if name == "movi" else {})}
        if name == "movi" and dataset.amass_markers:  # the default table keeps the stamps it had
            config["amass_markers"] = vertices
        out = build_versioned(context, data_root, config, build)
        subject = trials.read_subject_mocap(out.folder)
    return out.result({
        "n_trials": len(subject.trials), "n_video_frames": subject.n_video_frames,
        "clamped_video_frames": sum(t.clamped_video_frames for t in subject.trials),
        "trials": ", ".join(t.name for t in subject.trials), "path": dg.MetadataValue.path(str(out.folder)),
        **{k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v for k, v in facts.items()}})


class OpenSimGtConfig(dg.Config):
    ik_rate: str = "video"  # "video": IK only at video frames; or a rate in Hz, e.g. "120"
    accuracy: float = 1e-5
    trial_workers: int = 1  # trials of this subject solved in parallel processes
    max_trial_rms_error_m: float = 0.02


@dg.asset(key=OPENSIM_GT, deps=[MOCAP_MARKERS, OPENSIM_MODEL],  # partitioned by subject in definitions
          code_version=CODE_VERSIONS[OPENSIM_GT],
          automation_condition=on_changed_data_versions(), group_name="biomech", kinds={"opensim"}, pool=OPENSIM_POOL,
          # blocking: frames never crops a subject whose labels are NaN or whose IK missed the markers
          check_specs=[dg.AssetCheckSpec("ik_marker_error_below_threshold", asset=OPENSIM_GT, blocking=True),
                       dg.AssetCheckSpec("labels_have_no_nan", asset=OPENSIM_GT, blocking=True),
                       dg.AssetCheckSpec("label_frames_match_video", asset=OPENSIM_GT)])
def opensim_gt(context: dg.AssetExecutionContext, config: OpenSimGtConfig, data_root: DataRootResource,
               dataset: DatasetResource):
    """OpenSim ScaleTool on the static trial, inverse kinematics per trial (at video frames by
    default; OpenSim's InverseKinematicsTool, or the torch solver with D3KE_IK_BACKEND=torch), and per
    video frame the labels the network learns from."""
    key = context.partition_key
    gt_config = ground_truth.GroundTruthConfig(config.ik_rate, config.accuracy, config.trial_workers,
                                               settings.ik_backend_name(dataset.ik_backend))
    with user_errors_as_failures():
        mocap_dir = data_root.asset_dir(folder_name(MOCAP_MARKERS), key)
        model_path = model_files.ModelFiles.in_folder(data_root.asset_dir(folder_name(OPENSIM_MODEL))).osim
        labels_estimate = 4 * sum(p.stat().st_size for p in mocap_dir.glob("*.trc"))  # setups, subsampled .trc, labels
        ensure_free_space(data_root.asset_dir(folder_name(OPENSIM_GT), key), labels_estimate, f"opensim_gt for {key}")
        code_version = CODE_VERSIONS[OPENSIM_GT]
        out = build_versioned(
            context, data_root, gt_config.as_dict(),
            lambda folder: ground_truth.compute_subject(mocap_dir, model_path, folder, gt_config, code_version,
                                                        log=context.log.info),
            in_place=True)  # the scale and per-trial folders survive a failed run and are reused
        summary = ground_truth.read_summary(out.folder)
        arrays, names = ground_truth.load_labels(out.folder)
    trials = summary["trials"]
    worst = max(t["rms_error_m"] for t in trials)
    n_nan = int(sum(np.isnan(v).sum() for v in arrays.values() if v.dtype.kind == "f"))
    table = "| trial | IK frames | IK s | RMS error mm | max error mm |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {t['name']} | {t['n_ik_frames']} | {t['ik_seconds']:.1f} | {1000 * t['rms_error_m']:.1f} | "
        f"{1000 * t['max_error_m']:.1f} |" for t in trials)
    yield out.result({
        "n_label_frames": summary["n_label_frames"], "n_video_frames": summary["n_video_frames"],
        "ik_marker_rms_error_mm_worst_trial": round(1000 * worst, 2),
        "ik_seconds": round(sum(t["ik_seconds"] for t in trials), 2), "seconds": round(summary["seconds"], 2),
        "ik_trials": dg.MetadataValue.md(table), "scaled_model": dg.MetadataValue.path(str(out.folder / "scaled.osim")),
        "masked_coordinate_share": round(float(1 - arrays["coordinate_mask"].mean()), 4),
        "scale_factors": dg.MetadataValue.json({b: list(map(float, f)) for b, f in zip(
            names["bodies"], arrays["scale_factors"][0])} if len(arrays["scale_factors"]) else {}),
    })
    yield dg.AssetCheckResult(check_name="ik_marker_error_below_threshold",
                              passed=bool(worst <= config.max_trial_rms_error_m),
                              metadata={"worst_trial_rms_error_mm": round(1000 * worst, 2),
                                        "threshold_mm": 1000 * config.max_trial_rms_error_m})
    yield dg.AssetCheckResult(check_name="labels_have_no_nan", passed=n_nan == 0, metadata={"n_nan": n_nan})
    yield dg.AssetCheckResult(check_name="label_frames_match_video",
                              passed=summary["n_label_frames"] == summary["n_video_frames"],
                              metadata={"n_label_frames": summary["n_label_frames"],
                                        "n_video_frames": summary["n_video_frames"]})
