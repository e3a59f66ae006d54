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


# Per-frame metrics: their sums over frames (`sum.<name>`) add up across subjects
FRAME_METRICS = ("marker_error_mm", "mpjpe_mm", "pa_mpjpe_mm", "pck150_percent", "scale_error")
SUM = "sum."
# what `aggregate` adds up over subjects; everything else in a row names the group
ADDITIVE = ("n_frames", "network_seconds", "ik_seconds")


def score_sums(pred: dict[str, np.ndarray], true: dict[str, np.ndarray], scored: np.ndarray,
               marker_mask: np.ndarray, coordinate_names: list[str]) -> dict[str, float]:
    """What `score` averages, as sums over the frames: the sums of each test subject add up to those of
    all of them, so a subject is scored once and the tables are the aggregation (`scores_from_sums`)."""
    mask = true["coordinate_mask"].astype(np.float64) * scored
    err = np.degrees(pred["coordinates"].astype(np.float64) - true["coordinates"].astype(np.float64))
    joints_mm = M.position_errors_mm(pred["joint_centres_m"], true["joint_centres_m"])
    per_frame = {
        "marker_error_mm": M.position_errors_mm(pred["markers_m"][:, marker_mask],
                                                true["markers_m"][:, marker_mask]).mean(axis=1),
        "mpjpe_mm": joints_mm.mean(axis=1),
        "pa_mpjpe_mm": M.position_errors_mm(M.similarity_align(pred["joint_centres_m"], true["joint_centres_m"]),
                                            true["joint_centres_m"]).mean(axis=1),
        "pck150_percent": 100 * (joints_mm <= M.PCK_THRESHOLD_MM).mean(axis=1),
        # (N, bodies, axes) or (N, bodies): one mean per frame
        "scale_error": np.abs(pred["scale_factors"] - true["scale_factors"]).reshape(len(err), -1).mean(axis=1)}
    row = {"n_frames": len(err), f"{SUM}coordinate_weight": float(mask.sum()),
           f"{SUM}coordinate_abs_deg": float((np.abs(err) * mask).sum()),
           f"{SUM}coordinate_sq_deg2": float((err ** 2 * mask).sum()),
           **{f"{SUM}{name}": float(values.sum()) for name, values in per_frame.items()}}
    for i, name in enumerate(coordinate_names):
        if scored[i]:
            row[f"{SUM}abs_deg.{name}"] = float((np.abs(err[:, i]) * mask[:, i]).sum())
            row[f"{SUM}weight.{name}"] = float(mask[:, i].sum())
    return row


def scores_from_sums(row) -> dict[str, float]:
    """The metrics of `score` from `score_sums` (of one subject, or added up over several)."""
    n, weight = max(row["n_frames"], 1), row[f"{SUM}coordinate_weight"]
    out = {"coordinate_mae_deg": row[f"{SUM}coordinate_abs_deg"] / max(weight, 1.0),
           "coordinate_rmse_deg": float(np.sqrt(row[f"{SUM}coordinate_sq_deg2"] / max(weight, 1.0))),
           **{name: row[f"{SUM}{name}"] / n for name in FRAME_METRICS}}
    for key in row.keys():
        if key.startswith(f"{SUM}abs_deg."):
            name = key[len(f"{SUM}abs_deg."):]
            counted = row[f"{SUM}weight.{name}"]
            out[f"mae_deg.{name}"] = row[key] / counted if counted > 0 else float("nan")
    return out


def score(pred: dict[str, np.ndarray], true: dict[str, np.ndarray], scored: np.ndarray,
          marker_mask: np.ndarray, coordinate_names: list[str]) -> dict[str, float]:
    """The metrics of one set of predictions against camera-frame labels."""
    return scores_from_sums(score_sums(pred, true, scored, marker_mask, coordinate_names))


def aggregate(sums, by: list[str]):
    """Rows of `score_sums` (one per subject and group) added up per group of `by`, then scored: one row
    per group, in the order the groups first appear, with `n_frames`, the metrics and the time per frame
    (`ms_per_frame` from `network_seconds`, `ik_ms_per_frame` from `ik_seconds`, where present)."""
    import pandas as pd

    additive = [c for c in sums.columns if c.startswith(SUM) or c in ADDITIVE]
    totals = sums.groupby(by, sort=False)[additive].sum(min_count=1).reset_index()
    rows = []
    for total in totals.to_dict("records"):
        row = {k: total[k] for k in by}
        row["n_frames"] = int(total["n_frames"])
        row.update(scores_from_sums(total))
        for seconds, column in (("network_seconds", "ms_per_frame"), ("ik_seconds", "ik_ms_per_frame")):
            if seconds in total:  # NaN where the group has none (the direct method's IK)
                row[column] = 1000 * total[seconds] / max(row["n_frames"], 1)
        rows.append(row)
    return pd.DataFrame(rows)


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


def view_sums(frame_model: FrameModel, frames: FrameDataset, sequence_model=None,
              log: Callable[[str], None] = lambda m: None, clean_outputs: dict | None = None) -> list[dict]:
    """`score_sums` rows for the frame model (and the sequence model) on `frames` (one view), one per
    model x augmentation x severity, with the seconds the networks took (`network_seconds`).
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
        base = {"augmentation": name, "severity": severity}
        network_seconds = seconds[(name, severity)] * len(frames)
        rows.append({"model": "frame_model", **base, "network_seconds": network_seconds,
                     **score_sums(decode_to_numpy(frame_model, out), true, scored, markers, names)})
        if sequence_model is not None:
            t0 = time.perf_counter()
            pred = predict_sequence(sequence_model, out, frames)
            extra = time.perf_counter() - t0
            pred = {k: v.astype(np.float64) for k, v in pred.items()}
            rows.append({"model": "sequence_model", **base, "network_seconds": network_seconds + extra,
                         **score_sums(pred, true, scored, markers, names)})
    return rows


def evaluate_view(frame_model: FrameModel, frames: FrameDataset, sequence_model=None,
                  log: Callable[[str], None] = lambda m: None, clean_outputs: dict | None = None) -> list[dict]:
    """Rows for the frame model (and the sequence model) on `frames` (one view of the test subjects):
    model, augmentation, severity, n_frames, the metrics of `score` and `ms_per_frame`."""
    import pandas as pd

    sums = pd.DataFrame(view_sums(frame_model, frames, sequence_model, log=log, clean_outputs=clean_outputs))
    return aggregate(sums, ["model", "augmentation", "severity"]).to_dict("records")


RESULT_GROUP = ["model", "view", "augmentation", "severity"]


def _subject_of(frames: FrameDataset) -> str:
    """The subject of one subject's frames, as its frame index names it."""
    return str(frames.subject[0])


def _views(frames_dirs: list) -> list[str]:
    return sorted(set(FrameDataset(frames_dirs, used_only=False).camera.tolist()))


def subject_sums(frame_model: FrameModel, frames_dir: Path, sequence_model=None,
                 log: Callable[[str], None] = lambda m: None, clean_outputs: dict | None = None):
    """One test subject's `view_sums` rows for every view (columns `subject`, `view` first): what
    `aggregate(..., RESULT_GROUP)` adds up over subjects.  `clean_outputs` gets, per view, the frame
    model's head outputs on the clean frames, which `subject_claim_sums` then reuses."""
    import pandas as pd

    rows = []
    for view in _views([frames_dir]):
        frames = FrameDataset([frames_dir], used_only=False, cameras=(view,))
        log(f"{_subject_of(frames)} {view}: {len(frames)} frames")
        kept: dict = {}
        rows += [{"subject": _subject_of(frames), "view": view, **r}
                 for r in view_sums(frame_model, frames, sequence_model, log=lambda m, v=view: log(f"{v}: {m}"),
                                    clean_outputs=kept)]
        if clean_outputs is not None:
            clean_outputs[view] = kept["clean"]
    return pd.DataFrame(rows)


def evaluate_test_subjects(frame_model: FrameModel, test_dirs: list, sequence_model=None,
                           log: Callable[[str], None] = lambda m: None):
    """A DataFrame with one row per model x view x augmentation x severity over the test subjects:
    each subject scored alone (`subject_sums`), then aggregated."""
    import pandas as pd

    return aggregate(pd.concat([subject_sums(frame_model, Path(d), sequence_model, log=log) for d in test_dirs],
                               ignore_index=True), RESULT_GROUP)


def _camera_pose(layer, q: np.ndarray, scales: np.ndarray, camera_R: np.ndarray) -> dict[str, np.ndarray]:
    """Markers and joint centres of coordinates `q` (pelvis included), pelvis-relative in the camera frame."""
    with torch.no_grad():
        pose = layer(torch.from_numpy(q).to(layer_dtype(layer)), torch.from_numpy(scales).to(layer_dtype(layer)))
    pelvis = pose.body_origins_m[:, 0:1].double().numpy()  # body 0 is the pelvis
    to_cam = lambda p: np.einsum("nmj,nij->nmi", p.double().numpy() - pelvis, camera_R)  # noqa: E731
    return {"markers_m": to_cam(pose.markers_m), "joint_centres_m": to_cam(pose.joint_centres_m)}


def layer_dtype(layer) -> torch.dtype:
    return next(iter(layer.buffers())).dtype


CLAIM_GROUP = ["method", "view"]


def subject_claim_sums(frame_model: FrameModel, frames_dir: Path, osim_path, workdir,
                       log: Callable[[str], None] = lambda m: None, clean_outputs: dict | None = None,
                       ik_backend: str = "opensim"):
    """D3KE's claim on one test subject: the frame model's coordinates against OpenSim IK on its own
    predicted markers (model scaled by its predicted scale factors), on the same clean frames, per view.
    `score_sums` rows per method x view, with IK's seconds (`ik_seconds`); `clean_outputs`: per view,
    the frame model's head outputs `subject_sums` kept (else they are computed).  `ik_backend`: who
    solves the IK (`settings.IK_BACKENDS`)."""
    import pandas as pd

    from d3ke_assets.evaluation.multistep import inverse_kinematics_on_predictions
    from d3ke_assets.learning.sequence import predict_head_outputs

    layer = frame_model.layer
    scored = M.scored_coordinates(frame_model)
    names = list(layer.coordinate_names)
    all_markers = np.ones(len(layer.marker_names), bool)
    rows = []
    for view in _views([frames_dir]):
        frames = FrameDataset([frames_dir], used_only=False, cameras=(view,))
        subject = _subject_of(frames)
        outputs = (clean_outputs or {}).get(view)
        if outputs is None or len(outputs) != len(frames):
            outputs = predict_head_outputs(frame_model, frames)
        true = camera_labels(frames, layer)
        direct = decode_to_numpy(frame_model, outputs)
        log(f"{subject} {view}: IK ({ik_backend}) on {len(frames)} frames of predicted markers")
        ik = inverse_kinematics_on_predictions(
            Path(osim_path), list(layer.marker_names), direct["markers_m"], frames.camera_R,
            direct["scale_factors"], list(layer.body_names), names, Path(workdir) / subject / view,
            ik_backend=ik_backend)
        mean_scales = np.repeat(direct["scale_factors"].mean(axis=0, keepdims=True), len(frames), axis=0)
        multi = {"coordinates": ik.coordinates, "scale_factors": mean_scales,
                 **_camera_pose(layer, ik.coordinates, mean_scales, frames.camera_R)}
        base = {"subject": subject, "view": view}
        rows.append({"method": "direct", **base, **score_sums(direct, true, scored, all_markers, names)})
        rows.append({"method": "multi_step", **base, "ik_seconds": ik.ik_seconds,
                     **score_sums(multi, true, scored, all_markers, names)})
    return pd.DataFrame(rows)


def direct_versus_multistep(frame_model: FrameModel, test_dirs: list, osim_path, workdir,
                            log: Callable[[str], None] = lambda m: None, ik_backend: str = "opensim"):
    """`subject_claim_sums` of every test subject, aggregated: one row per method x view with the
    metrics of `score` and IK's time per frame."""
    import pandas as pd

    sums = pd.concat([subject_claim_sums(frame_model, Path(d), osim_path, workdir, log=log, ik_backend=ik_backend)
                      for d in test_dirs], ignore_index=True)
    return claim_table(sums)


def claim_table(sums):
    """The claim's table from `subject_claim_sums` rows (of one subject or several), method by view."""
    return aggregate(sums, CLAIM_GROUP).sort_values(CLAIM_GROUP, ignore_index=True)
