"""The quality gates seen failing: a deliberately untrained frame model (learning rate ~0) with the
demo's gate ratio fails frame_model's blocking check, so the sequence model in the same run never
trains; without a gate (the smoke preset) the same model goes on, and the sequence model's warning
check compares the two trainings' validation figures.  The figures are checked against a hand
computation (the mean-pose baseline) and the checkpoints' own histories."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
import numpy as np
import pytest
import torch

from d3ke_assets import settings
from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.definitions import ALL_ASSETS

SUBJECTS = ["Subject_1", "Subject_2", "Subject_3"]  # smoke split: train, validation, test


def _materialize(selection, root, partition=None):
    resources = {"data_root": DataRootResource(path=str(root)),
                 "dataset": DatasetResource(name="synthetic", preset="smoke"),
                 "mlflow": MlflowTrackingResource(data_root=str(root))}
    return dg.materialize(ALL_ASSETS, selection=selection, partition_key=partition,
                          instance=dg.DagsterInstance.ephemeral(), resources=resources, raise_on_error=False)


@pytest.fixture(scope="module")
def framed_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("gated")
    assert _materialize(["opensim_model"], root).success
    for subject in SUBJECTS:
        assert _materialize(["raw_subject", "mocap_markers", "opensim_gt", "frames"], root, subject).success
    return root


@pytest.fixture
def untrained_smoke(monkeypatch):
    """The smoke preset with a learning rate too small to learn anything, and a gate of `ratio`."""
    base = settings.PRESETS["smoke"]
    train = {**base.train, "epochs": 1, "lr_start": 1e-12, "lr_mid": 1e-12, "lr_tail_start": 1e-12,
             "lr_end": 1e-12}

    def use(ratio):
        monkeypatch.setitem(settings.PRESETS, "smoke", replace(base, train=train, gate_ratio=ratio))

    return use


def _meta(evaluation) -> dict:
    return {k: v.value for k, v in evaluation.metadata.items()}


def _val_mae_from_history(path) -> float:
    return torch.load(path, weights_only=True)["history"][-1]["val_coordinate_mae_deg"]


def _hand_baseline_deg(root) -> float:
    """The mean training coordinates scored on the validation subject's used frames, by hand."""
    import pandas as pd

    from d3ke_assets.frames.reader import FrameDataset
    from d3ke_assets.biomech import model_builder
    from d3ke_assets.biomech.skeletal_layer import SkeletalModel

    train = FrameDataset([root / "frames" / "Subject_1"])
    val = FrameDataset([root / "frames" / "Subject_2"])
    assert len(val) == int(pd.read_parquet(root / "frames" / "Subject_2" / "index.parquet")["used"].sum())
    layer = SkeletalModel.from_osim(model_builder.model_file(root / "opensim_model"))
    root_coordinates = {"pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx", "pelvis_ty", "pelvis_tz"}
    scored = [i for i, n in enumerate(layer.coordinate_names) if layer.rotational[i] and n not in root_coordinates]
    mean = train.labels["coordinates"].astype(np.float64).mean(axis=0)
    true = val.labels["coordinates"].astype(np.float64)[:, scored]
    mask = val.labels["coordinate_mask"].astype(np.float64)[:, scored]
    return float((np.degrees(np.abs(true - mean[scored])) * mask).sum() / mask.sum())


def test_an_untrained_frame_model_fails_the_gate_and_blocks_the_sequence_model(framed_root, untrained_smoke):
    untrained_smoke(0.7)  # the demo's and paper's ratio
    result = _materialize(["frame_model", "sequence_model"], framed_root)
    assert not result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"frame_model"}  # recorded, with its failed check; nothing downstream ran
    assert "sequence_model" not in {e.step_key for e in result.all_events if e.is_step_start}
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert "blocking asset check" in failure.event_specific_data.error.message
    [gate] = result.get_asset_check_evaluations()
    assert gate.check_name == "validation_error_below_gate" and gate.passed is False
    meta = _meta(gate)
    model_mae = _val_mae_from_history(framed_root / "frame_model" / "last.pt")
    baseline = _hand_baseline_deg(framed_root)
    assert meta["validation_frame_model_coordinate_mae_deg"] == pytest.approx(model_mae, abs=1e-4)
    assert meta["validation_mean_baseline_coordinate_mae_deg"] == pytest.approx(baseline, abs=1e-4)
    assert meta["validation_ratio_model_to_baseline"] == pytest.approx(model_mae / baseline, abs=1e-4)
    assert meta["gate_ratio"] == 0.7 and model_mae / baseline > 0.7 and meta["gate_passed"] is False
    # d3ke demo's line for the failed run names the asset, the check and the figures
    from d3ke_assets.defs.runner import _failure_message

    line = _failure_message(result)
    assert line.startswith("frame_model failed its blocking check validation_error_below_gate: validation "
                           f"coordinate MAE {model_mae:.2f} deg, {model_mae / baseline:.3f} of the mean-pose "
                           f"baseline's {baseline:.2f} deg, above the gate 0.7") and "\n" not in line, line

    # the test subject's scoring launched in a later run (the UI's Materialize on it alone) refuses it too
    evaluated = _materialize(["subject_evaluation"], framed_root, "Subject_3")
    assert not evaluated.success
    from d3ke_assets.defs.runner import _failure_message

    assert _failure_message(evaluated).startswith("the trained frame model fails its quality gate")
    assert not (framed_root / "subject_evaluation").exists()
    # a partition that is not a test subject's is refused, naming the test subjects
    train_partition = _materialize(["subject_evaluation"], framed_root, "Subject_1")
    assert _failure_message(train_partition) == ("Subject_1 is not a test subject: subject_evaluation scores the "
                                                 "test subjects only (Subject_3); materialize one of those partitions")

    # `d3ke quality` shows the same validation figures beside the test figures
    from d3ke_assets.biomech import model_builder
    from d3ke_assets.learning.quality import quality_report

    report = quality_report(framed_root, model_builder.model_file(framed_root / "opensim_model"), ["Subject_1"],
                            ["Subject_3"], validation_subjects=["Subject_2"], gate_ratio=0.7)
    assert report["validation_frame_model_coordinate_mae_deg"] == pytest.approx(model_mae, abs=1e-6)
    assert report["validation_mean_baseline_coordinate_mae_deg"] == pytest.approx(baseline, abs=1e-6)
    assert report["gate_passed"] is False and "frame_model_coordinate_mae_deg" in report

    # no gate (the smoke preset's): the same training (reused) passes, the sequence model trains and
    # its warning check compares both validation figures
    untrained_smoke(None)
    result = _materialize(["frame_model", "sequence_model"], framed_root)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["validation_error_below_gate"].passed and _meta(checks["validation_error_below_gate"])[
        "gate_ratio"] == "off"
    seq_check = checks["sequence_model_not_worse_than_frame_model"]
    assert seq_check.severity == dg.AssetCheckSeverity.WARN
    seq_mae = _val_mae_from_history(framed_root / "sequence_model" / "last.pt")
    assert _meta(seq_check)["validation_sequence_model_coordinate_mae_deg"] == pytest.approx(seq_mae, abs=1e-4)
    assert _meta(seq_check)["validation_frame_model_coordinate_mae_deg"] == pytest.approx(model_mae, abs=1e-4)
    assert seq_check.passed == (seq_mae <= model_mae)
