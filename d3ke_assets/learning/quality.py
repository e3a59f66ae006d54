"""Coordinate error of the trained models on the test subjects, next to the trivial baseline D3KE
must beat.

The baseline always predicts the training subjects' mean coordinates.  Errors are
`learning.metrics.coordinate_mae_deg` (degrees over the scored coordinates where the coordinate
mask is 1) over every labelled frame of the test subjects' videos (the sequence model needs whole
trials).  The quality gate (`validation_gate`, frame_model's blocking asset check) compares the
same kind of figures on the validation subjects, which training reads and the test never does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from d3ke_assets.errors import D3keError
from d3ke_assets.frames.processing import INDEX_NAME
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning.metrics import coordinate_mae_deg, scored_coordinates
from d3ke_assets.learning.model import FrameModel, decode_to_numpy
from d3ke_assets.learning.training import CHECKPOINT, load_checkpoint, load_trained_frame_model


def predict_coordinates(model: FrameModel, dataset: FrameDataset) -> np.ndarray:
    from d3ke_assets.learning.sequence import predict_head_outputs

    return decode_to_numpy(model, predict_head_outputs(model, dataset))["coordinates"]


def mean_baseline_mae_deg(train: FrameDataset, frames: FrameDataset, scored: np.ndarray) -> float:
    """Coordinate MAE on `frames` of the baseline that always predicts `train`'s mean coordinates."""
    true = frames.labels["coordinates"].astype(np.float64)
    mean = train.labels["coordinates"].astype(np.float64).mean(axis=0, keepdims=True)
    return coordinate_mae_deg(np.repeat(mean, len(true), 0), true,
                              frames.labels["coordinate_mask"].astype(np.float64), scored)


def frame_model_vs_mean_baseline(model: FrameModel, train: FrameDataset, test: FrameDataset,
                                 predicted: np.ndarray | None = None) -> dict:
    """`predicted`: the model's coordinates on `test` when already computed."""
    scored = scored_coordinates(model)
    true = test.labels["coordinates"].astype(np.float64)
    mask = test.labels["coordinate_mask"].astype(np.float64)
    if predicted is None:
        predicted = predict_coordinates(model, test)
    model_mae = coordinate_mae_deg(predicted, true, mask, scored)
    baseline_mae = mean_baseline_mae_deg(train, test, scored)
    return {"frame_model_coordinate_mae_deg": model_mae, "mean_baseline_coordinate_mae_deg": baseline_mae,
            "ratio_model_to_baseline": model_mae / baseline_mae, "n_test_frames": len(true)}


def validation_mae_deg(checkpoint: Path) -> float:
    """The last epoch's validation coordinate MAE a training recorded in its checkpoint: the figure
    of the weights it keeps (the average when there is one), on the validation subjects' used frames."""
    history = load_checkpoint(checkpoint).get("history") or []
    if not history:
        raise D3keError(f"{checkpoint}: the checkpoint records no finished epoch: train the model again")
    return float(history[-1]["val_coordinate_mae_deg"])


def validation_gate(checkpoint: Path, osim_path: Path, train: FrameDataset, validation: FrameDataset,
                    gate_ratio: float | None) -> dict:
    """The frame model's quality gate: its validation coordinate MAE against `gate_ratio` times the
    mean-pose baseline's on the same frames (`validation`: the validation subjects' used frames, as
    training validates).  `passed` is True when there is no gate (`gate_ratio` None)."""
    from types import SimpleNamespace

    from d3ke_assets.biomech.skeletal_layer import SkeletalModel
    from d3ke_assets.learning.model import predicted_coordinates

    layer = SkeletalModel.from_osim(osim_path)
    scored = scored_coordinates(SimpleNamespace(layer=layer, predicted=predicted_coordinates(layer)[0]))
    model_mae = validation_mae_deg(checkpoint)
    baseline_mae = mean_baseline_mae_deg(train, validation, scored)
    ratio = model_mae / baseline_mae if baseline_mae > 0 else float("inf")
    return {"validation_frame_model_coordinate_mae_deg": model_mae,
            "validation_mean_baseline_coordinate_mae_deg": baseline_mae,
            "validation_ratio_model_to_baseline": ratio, "gate_ratio": gate_ratio,
            "gate_passed": gate_ratio is None or ratio <= gate_ratio, "n_validation_frames": len(validation)}


def frames_of(data_root: Path, subjects, role: str) -> list[Path]:
    """The frames folders of those of `subjects` that have frames; a clear error when none has."""
    dirs = [data_root / "frames" / s for s in subjects if (data_root / "frames" / s / INDEX_NAME).is_file()]
    if not dirs:
        raise D3keError(f"no {role} subject has frames under {data_root / 'frames'} ({', '.join(subjects)}): "
                        f"materialize frames for them first (d3ke demo)")
    return dirs


def quality_report(data_root: Path, osim_path: Path, train_subjects: list[str], test_subjects: list[str],
                   log=lambda m: None, validation_subjects: list[str] | None = None,
                   gate_ratio: float | None = None) -> dict:
    """The frame model, the sequence model (when trained) and the mean baseline on the test subjects;
    with `validation_subjects`, first the quality gate's figures on them (`validation_gate`)."""
    from d3ke_assets.learning import sequence

    checkpoint = data_root / "frame_model" / CHECKPOINT
    if not checkpoint.is_file():
        raise D3keError(f"{checkpoint}: no trained frame model: materialize frame_model first (d3ke demo)")
    frame = load_trained_frame_model(checkpoint, osim_path)
    train = FrameDataset(frames_of(data_root, train_subjects, "train"))
    test = FrameDataset(frames_of(data_root, test_subjects, "test"), used_only=False)
    log(f"frame model on {len(test)} test frames")
    outputs = sequence.predict_head_outputs(frame, test, log=log)
    frame_q = decode_to_numpy(frame, outputs)["coordinates"]
    report = {}
    if validation_subjects:
        validation = FrameDataset(frames_of(data_root, validation_subjects, "validation"))
        report.update({"validation_subjects": ",".join(validation_subjects),
                       **validation_gate(checkpoint, osim_path, train, validation, gate_ratio)})
    report.update({"test_subjects": ",".join(test_subjects),
                   **frame_model_vs_mean_baseline(frame, train, test, predicted=frame_q)})
    seq_checkpoint = data_root / "sequence_model" / CHECKPOINT
    if seq_checkpoint.is_file():
        seq = sequence.load_trained_sequence_model(seq_checkpoint, osim_path)
        seq_q = sequence.predict_sequence(seq, outputs, test)["coordinates"]
        mae = coordinate_mae_deg(seq_q, test.labels["coordinates"].astype(np.float64),
                                 test.labels["coordinate_mask"].astype(np.float64), scored_coordinates(frame))
        report.update({"sequence_model": f"{seq.variant} rf{seq.receptive_field}",
                       "sequence_model_coordinate_mae_deg": mae,
                       "ratio_sequence_to_frame_model": mae / report["frame_model_coordinate_mae_deg"]})
    return report
