"""Every asset check seen failing, not only passing: the subject assets materialized through Dagster
(smoke preset), then a threshold set below the real error, or stored outputs altered on disk the
way a broken run or a damaged file would leave them, and the checks' evaluations read back."""

import io
import json
import shutil

import dagster as dg
import numpy as np
import pytest

from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.definitions import ALL_ASSETS

SUBJECT = "Subject_1"
CHECKS = {"ik_marker_error_below_threshold", "labels_have_no_nan", "label_frames_match_video",
          "labelled_frames_stored"}


def _materialize(selection, root, partition=None, run_config=None):
    resources = {"data_root": DataRootResource(path=str(root)),
                 "dataset": DatasetResource(name="synthetic", preset="smoke"),
                 "mlflow": MlflowTrackingResource(data_root=str(root))}
    return dg.materialize(ALL_ASSETS, selection=selection, partition_key=partition,
                          instance=dg.DagsterInstance.ephemeral(), resources=resources,
                          run_config=run_config, raise_on_error=False)


def _evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _meta(evaluation: dg.AssetCheckEvaluation) -> dict:
    return {k: v.value for k, v in evaluation.metadata.items()}


@pytest.fixture(scope="module")
def materialized_subject(tmp_path_factory):
    """A data root with Subject_1 materialized up to frames, every check passing."""
    root = tmp_path_factory.mktemp("checked")
    assert _materialize(["opensim_model"], root).success
    result = _materialize(["raw_subject", "mocap_markers", "opensim_gt", "frames"], root, SUBJECT)
    assert result.success
    evaluations = _evaluations(result)
    assert set(evaluations) == CHECKS
    assert all(e.passed for e in evaluations.values()), {n: _meta(e) for n, e in evaluations.items()}
    return root


@pytest.fixture
def root(materialized_subject, tmp_path):
    """A copy of the materialized data root this test may alter."""
    copy = tmp_path / "data"
    shutil.copytree(materialized_subject, copy)
    return copy


def _rewrite_labels(gt_dir, change) -> None:
    with np.load(gt_dir / "labels.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    (gt_dir / "labels.npz").write_bytes(buf.getvalue())


def _materialized_assets(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def _blocked_frames(result) -> None:
    """A blocking check of opensim_gt failed: its step fails, opensim_gt is recorded, frames never runs."""
    assert not result.success
    assert _materialized_assets(result) == {"opensim_gt"}
    assert "frames" not in {e.step_key for e in result.all_events if e.is_step_start}
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert "blocking asset check" in failure.event_specific_data.error.message
    from d3ke_assets.defs.runner import _failure_message

    assert _failure_message(result).startswith("opensim_gt failed its blocking check ")  # d3ke demo's line


def test_ik_error_above_the_threshold_fails_its_check(root):
    """The configured threshold set below the real IK error (a config that does not change the output);
    the check blocks frames."""
    with np.load(root / "opensim_gt" / SUBJECT / "labels.npz", allow_pickle=False) as data:
        error, trial = data["marker_error_m"].astype(np.float64), data["trial_index"]
    # the worst trial's RMS marker error, from the per-frame errors stored with the labels
    worst_mm = 1000 * max(np.sqrt(np.nanmean(error[trial == t] ** 2)) for t in np.unique(trial))
    assert 0.5 < worst_mm < 20
    threshold_m = float(worst_mm / 2 / 1000)
    result = _materialize(["opensim_gt", "frames"], root, SUBJECT,
                          {"ops": {"opensim_gt": {"config": {"max_trial_rms_error_m": threshold_m}}}})
    _blocked_frames(result)
    evaluations = _evaluations(result)
    failed = evaluations["ik_marker_error_below_threshold"]
    assert failed.passed is False
    meta = _meta(failed)
    assert meta["worst_trial_rms_error_mm"] == pytest.approx(worst_mm, abs=0.01)
    assert meta["threshold_mm"] == pytest.approx(worst_mm / 2)
    assert evaluations["labels_have_no_nan"].passed and evaluations["label_frames_match_video"].passed


def test_nan_in_stored_labels_fails_its_check(root):
    """NaN written into the stamped labels.npz (as a bad solve or a damaged file would leave it); the
    check blocks frames."""
    gt_dir = root / "opensim_gt" / SUBJECT

    def add_nan(arrays):
        arrays["coordinates"][0, 3] = np.nan
        arrays["markers_m"][2, 0, :] = np.nan  # three values

    _rewrite_labels(gt_dir, add_nan)
    result = _materialize(["opensim_gt", "frames"], root, SUBJECT)
    _blocked_frames(result)
    evaluations = _evaluations(result)
    assert evaluations["labels_have_no_nan"].passed is False
    assert _meta(evaluations["labels_have_no_nan"]) == {"n_nan": 4}
    assert evaluations["ik_marker_error_below_threshold"].passed
    assert evaluations["label_frames_match_video"].passed


def test_labels_short_of_the_video_fail_both_frame_count_checks(root):
    """opensim_gt's stored labels one video frame short (the summary says so too): its own check
    fails, and the frames stored for the full video no longer match the labels."""
    gt_dir = root / "opensim_gt" / SUBJECT
    summary = json.loads((gt_dir / "summary.json").read_text())
    n_video = summary["n_video_frames"]
    assert summary["n_label_frames"] == n_video > 1

    def drop_last_frame(arrays):
        for name, values in arrays.items():
            assert len(values) == n_video, name
            arrays[name] = values[:-1]

    _rewrite_labels(gt_dir, drop_last_frame)
    summary["n_label_frames"] = n_video - 1
    (gt_dir / "summary.json").write_text(json.dumps(summary))
    result = _materialize(["opensim_gt", "frames"], root, SUBJECT)
    assert result.success  # label_frames_match_video does not block: frames' own check reports the mismatch
    evaluations = _evaluations(result)
    assert set(evaluations) == CHECKS
    assert evaluations["label_frames_match_video"].passed is False
    assert _meta(evaluations["label_frames_match_video"]) == {"n_label_frames": n_video - 1, "n_video_frames": n_video}
    assert evaluations["labelled_frames_stored"].passed is False
    # two cameras: the stored frames cover every video frame, the labels one fewer
    assert _meta(evaluations["labelled_frames_stored"]) == {"n_frames": 2 * n_video, "n_expected": 2 * (n_video - 1)}
    assert evaluations["labels_have_no_nan"].passed and evaluations["ik_marker_error_below_threshold"].passed
