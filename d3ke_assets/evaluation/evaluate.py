"""Score the trained models on test frames, per camera view, clean and under each augmentation.

Images are decoded once per chunk and every condition is run on the chunk, so a JPEG is read once
whatever the number of conditions.  The sequence model reads the frame model's outputs under the
same condition (a whole video flipped, resized, ...).  One row per model x view x augmentation x
severity, with the metrics of `metrics.py` and the network's time per frame.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from d3ke_assets.evaluation import metrics as M
from d3ke_assets.frames.augmentations import augment_images, conditions
from d3ke_assets.errors import D3keError
from d3ke_assets.learning.mirror import Mirror
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning.model import FrameModel, camera_frame_targets, decode_to_numpy, normalise
from d3ke_assets.learning.training import choose_device

LABEL_KEYS = ("coordinates", "coordinate_mask", "scale_factors", "markers_m", "joint_centres_m", "pelvis_rotation")


def camera_labels(frames: FrameDataset, layer) -> dict[str, np.ndarray]:
    """Every frame's labels as the models predict them: camera frame, pelvis-relative."""
    batch = {k: torch.from_numpy(v) for k, v in frames.labels.items()}
    targets = camera_frame_targets(batch, torch.from_numpy(frames.camera_R), layer)
    return {k: targets[k].numpy().astype(np.float64) for k in LABEL_KEYS}


def score(pred: dict[str, np.ndarray], true: dict[str, np.ndarray], scored: np.ndarray,
          marker_mask: np.ndarray, coordinate_names: list[str]) -> dict[str, float]:
    """The metrics of one set of predictions against camera-frame labels."""
    mask = true["coordinate_mask"] * scored
    per = M.coordinate_errors_deg(pred["coordinates"], true["coordinates"], mask)
    sq = np.degrees(pred["coordinates"] - true["coordinates"]) ** 2
    row = {"coordinate_mae_deg": M.coordinate_mae_deg(pred["coordinates"], true["coordinates"], mask, scored),
           "coordinate_rmse_deg": float(np.sqrt((sq * mask).sum() / max(mask.sum(), 1))),
           "marker_error_mm": M.mpjpe_mm(pred["markers_m"][:, marker_mask], true["markers_m"][:, marker_mask]),
           "mpjpe_mm": M.mpjpe_mm(pred["joint_centres_m"], true["joint_centres_m"]),
           "pa_mpjpe_mm": M.pa_mpjpe_mm(pred["joint_centres_m"], true["joint_centres_m"]),
           "pck150_percent": M.pck_percent(pred["joint_centres_m"], true["joint_centres_m"]),
           "scale_error": M.scale_error(pred["scale_factors"], true["scale_factors"])}
    for i, name in enumerate(coordinate_names):
        if scored[i]:
            row[f"mae_deg.{name}"] = float(per["mae_deg"][i])
    return row


@torch.no_grad()
def head_outputs_by_condition(model: FrameModel, frames: FrameDataset, chunk: int = 256,
                              log: Callable[[str], None] = lambda m: None
                              ) -> tuple[dict[tuple[str, float], np.ndarray], dict[tuple[str, float], float]]:
    """Frame-model head outputs of every frame under every condition, and seconds per frame in the network."""
    device = choose_device()
    model.to(device).eval()
    outputs: dict[tuple[str, float], list] = {c: [] for c in conditions()}
    seconds = {c: 0.0 for c in conditions()}
    loader = torch.utils.data.DataLoader(frames, batch_size=chunk, num_workers=0)
    for step, batch in enumerate(loader):
        for condition in conditions():
            images = augment_images(batch["image"], *condition)
            t0 = time.perf_counter()
            out = model.head_outputs(normalise(images.to(device)))
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[condition] += time.perf_counter() - t0
            outputs[condition].append(out.cpu().numpy())
        log(f"{min((step + 1) * chunk, len(frames))}/{len(frames)} frames under {len(outputs)} conditions")
    n = max(len(frames), 1)
    return ({c: np.concatenate(v).astype(np.float32) for c, v in outputs.items()},
            {c: s / n for c, s in seconds.items()})


def evaluate_view(frame_model: FrameModel, frames: FrameDataset, sequence_model=None,
                  log: Callable[[str], None] = lambda m: None, clean_outputs: dict | None = None) -> list[dict]:
    """Rows for the frame model (and the sequence model) on `frames` (one view of the test subjects).
    `clean_outputs`: a dict that gets the frame model's head outputs on the clean frames under "clean"."""
    from d3ke_assets.learning.sequence import predict_sequence

    layer = frame_model.layer
    clean = camera_labels(frames, layer)
    try:
        mirror = Mirror.for_layer(layer)
        flipped = mirror.camera_labels(clean)
    except D3keError as exc:  # a model without left/right pairs: no guessed mirror image
        mirror = flipped = None
        log(f"flip not scored: {exc}")
    scored = M.scored_coordinates(frame_model)
    names = list(layer.coordinate_names)
    all_markers = np.ones(len(layer.marker_names), bool)
    outputs, seconds = head_outputs_by_condition(frame_model, frames, log=log)
    if clean_outputs is not None:
        clean_outputs["clean"] = outputs[("clean", 0.0)]
    rows = []
    for (name, severity), out in outputs.items():
        if name == "flip" and mirror is None:
            continue
        true, markers = (flipped, mirror.marker_paired) if name == "flip" else (clean, all_markers)
        base = {"augmentation": name, "severity": severity, "n_frames": len(frames)}
        rows.append({"model": "frame_model", **base, **score(decode_to_numpy(frame_model, out), true, scored, markers, names),
                     "ms_per_frame": 1000 * seconds[(name, severity)]})
        if sequence_model is not None:
            t0 = time.perf_counter()
            pred = predict_sequence(sequence_model, out, frames)
            extra = (time.perf_counter() - t0) / max(len(frames), 1)
            pred = {k: v.astype(np.float64) for k, v in pred.items()}
            rows.append({"model": "sequence_model", **base, **score(pred, true, scored, markers, names),
                         "ms_per_frame": 1000 * (seconds[(name, severity)] + extra)})
    return rows


def evaluate_test_subjects(frame_model: FrameModel, test_dirs: list, sequence_model=None,
                           log: Callable[[str], None] = lambda m: None, clean_outputs: dict | None = None):
    """A DataFrame with one row per model x view x augmentation x severity over the test subjects.
    `clean_outputs`: a dict that gets, per view, the frame model's head outputs on the clean frames
    (in the order of `FrameDataset(test_dirs, used_only=False, cameras=(view,))`), which
    `direct_versus_multistep` then reuses rather than running the network again."""
    import pandas as pd

    views = sorted(set(FrameDataset(test_dirs, used_only=False).camera.tolist()))
    rows = []
    for view in views:
        frames = FrameDataset(test_dirs, used_only=False, cameras=(view,))
        log(f"view {view}: {len(frames)} frames")
        kept: dict = {}
        rows += [{"view": view, **r} for r in evaluate_view(frame_model, frames, sequence_model,
                                                            log=lambda m, v=view: log(f"{v}: {m}"), clean_outputs=kept)]
        if clean_outputs is not None:
            clean_outputs[view] = kept["clean"]
    first = ["model", "view", "augmentation", "severity", "n_frames"]
    table = pd.DataFrame(rows)
    return table[first + [c for c in table.columns if c not in first]]


def _camera_pose(layer, q: np.ndarray, scales: np.ndarray, camera_R: np.ndarray) -> dict[str, np.ndarray]:
    """Markers and joint centres of coordinates `q` (pelvis included), pelvis-relative in the camera frame."""
    with torch.no_grad():
        pose = layer(torch.from_numpy(q).to(layer_dtype(layer)), torch.from_numpy(scales).to(layer_dtype(layer)))
    pelvis = pose.body_origins_m[:, 0:1].double().numpy()  # body 0 is the pelvis
    to_cam = lambda p: np.einsum("nmj,nij->nmi", p.double().numpy() - pelvis, camera_R)  # noqa: E731
    return {"markers_m": to_cam(pose.markers_m), "joint_centres_m": to_cam(pose.joint_centres_m)}


def layer_dtype(layer) -> torch.dtype:
    return next(iter(layer.buffers())).dtype


def direct_versus_multistep(frame_model: FrameModel, test_dirs: list, osim_path, workdir,
                            log: Callable[[str], None] = lambda m: None, clean_outputs: dict | None = None,
                            ik_backend: str = "opensim"):
    """D3KE's claim on this data: the frame model's coordinates against OpenSim IK on its own predicted
    markers (model scaled by its predicted scale factors), on the same clean frames, per subject and view.
    One row per method x view with the metrics of `score` and IK's time per frame.  `clean_outputs`:
    per view, the frame model's head outputs that `evaluate_test_subjects` kept (else they are computed).
    `ik_backend`: who solves the IK (`settings.IK_BACKENDS`)."""
    import pandas as pd

    from d3ke_assets.evaluation.multistep import inverse_kinematics_on_predictions
    from d3ke_assets.learning.sequence import predict_head_outputs

    layer = frame_model.layer
    scored = M.scored_coordinates(frame_model)
    names = list(layer.coordinate_names)
    all_markers = np.ones(len(layer.marker_names), bool)
    rows = []
    views = sorted(set(FrameDataset(test_dirs, used_only=False).camera.tolist()))
    for view in views:
        frames = FrameDataset(test_dirs, used_only=False, cameras=(view,))
        outputs = (clean_outputs or {}).get(view)
        if outputs is None or len(outputs) != len(frames):
            outputs = predict_head_outputs(frame_model, frames)
        true_all = camera_labels(frames, layer)
        direct_all = decode_to_numpy(frame_model, outputs)
        for subject in dict.fromkeys(frames.subject.tolist()):  # in the order of test_dirs
            rows_of = np.flatnonzero(frames.subject == subject)
            true = {k: v[rows_of] for k, v in true_all.items()}
            direct = {k: v[rows_of] for k, v in direct_all.items()}
            camera_R = frames.camera_R[rows_of]
            log(f"{subject} {view}: IK ({ik_backend}) on {len(rows_of)} frames of predicted markers")
            ik = inverse_kinematics_on_predictions(
                Path(osim_path), list(layer.marker_names), direct["markers_m"], camera_R,
                direct["scale_factors"], list(layer.body_names), names, Path(workdir) / str(subject) / view,
                ik_backend=ik_backend)
            mean_scales = np.repeat(direct["scale_factors"].mean(axis=0, keepdims=True), len(rows_of), axis=0)
            multi = {"coordinates": ik.coordinates, "scale_factors": mean_scales,
                     **_camera_pose(layer, ik.coordinates, mean_scales, camera_R)}
            base = {"subject": subject, "view": view, "n_frames": len(rows_of)}
            rows.append({"method": "direct", **base, **score(direct, true, scored, all_markers, names)})
            rows.append({"method": "multi_step", **base, **score(multi, true, scored, all_markers, names),
                         "ik_ms_per_frame": 1000 * ik.ik_seconds / max(len(rows_of), 1)})
    per_subject = pd.DataFrame(rows)
    metric_cols = [c for c in per_subject.columns if c not in ("method", "subject", "view", "n_frames")]
    # frame-weighted means over the subjects, per method and view
    weighted = per_subject[metric_cols].multiply(per_subject.n_frames, axis=0)
    weighted[["method", "view"]] = per_subject[["method", "view"]]
    sums = weighted.groupby(["method", "view"]).sum(min_count=1)
    counts = per_subject.groupby(["method", "view"]).n_frames.sum()
    table = sums.divide(counts, axis=0).reset_index()
    table.insert(2, "n_frames", counts.values)
    return table
