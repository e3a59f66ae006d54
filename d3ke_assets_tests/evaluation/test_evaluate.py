"""The evaluation table: every model x augmentation x severity, scored as the independent paths score it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.evaluation.evaluate import evaluate_view
from d3ke_assets.frames import augmentations as A
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning import sequence as S
from d3ke_assets.learning.model import FrameModel
from d3ke_assets.learning.quality import frame_model_vs_mean_baseline


def test_every_condition_is_scored_and_clean_matches_the_quality_report(smoke_frames, generic_model):
    frames_dir = smoke_frames["base"] / "frames"
    view = FrameDataset([frames_dir], used_only=False, cameras=("PG1",))
    layer = SkeletalModel.from_osim(generic_model[0])
    torch.manual_seed(0)
    frame = FrameModel(layer, "mobilenet_v3_small").eval()
    seq = S.SequenceModel(layer, S.SequenceConfig(receptive_field=9, hidden=16)).eval()
    rows = evaluate_view(frame, view, seq)
    expected = {(n, s) for n, sev in A.AUGMENTATIONS.items() for s in sev}
    for model in ("frame_model", "sequence_model"):
        got = {(r["augmentation"], r["severity"]) for r in rows if r["model"] == model}
        assert got == expected
    assert all(len([s for s in sev]) >= 3 for n, sev in A.AUGMENTATIONS.items() if n not in ("clean", "flip"))
    assert all(np.isfinite(r["pa_mpjpe_mm"]) and 0 <= r["pck150_percent"] <= 100 for r in rows)
    clean = next(r for r in rows if r["model"] == "frame_model" and r["augmentation"] == "clean")
    direct = frame_model_vs_mean_baseline(frame, view, view)
    assert clean["coordinate_mae_deg"] == pytest.approx(direct["frame_model_coordinate_mae_deg"], rel=1e-4)
    # an untrained sequence model is the frame model
    seq_clean = next(r for r in rows if r["model"] == "sequence_model" and r["augmentation"] == "clean")
    assert seq_clean["mpjpe_mm"] == pytest.approx(clean["mpjpe_mm"], rel=1e-4)


def test_augmentations_change_the_picture_as_named():
    img = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    img[0, :, :, :8] = 200  # a bright band on the left
    assert A.augment_images(img, "flip", 1.0)[0, 0, 0, -1] == 200
    assert A.augment_images(img, "brightness", 2.0).float().mean() > img.float().mean()
    assert A.augment_images(img, "resize", 0.25).shape == img.shape
    with pytest.raises(ValueError, match="augmentation 'blur' does not exist"):
        A.augment_images(img, "blur", 1.0)


def test_direct_versus_multistep_table(smoke_frames, generic_model, tmp_path):
    from d3ke_assets.evaluation.evaluate import direct_versus_multistep

    layer = SkeletalModel.from_osim(generic_model[0])
    torch.manual_seed(0)
    frame = FrameModel(layer, "mobilenet_v3_small").eval()
    table = direct_versus_multistep(frame, [smoke_frames["base"] / "frames"], generic_model[0], tmp_path)
    assert sorted(zip(table.method, table.view)) == [("direct", "PG1"), ("direct", "PG2"),
                                                     ("multi_step", "PG1"), ("multi_step", "PG2")]
    assert table.coordinate_mae_deg.notna().all() and table.mpjpe_mm.notna().all()
    assert table[table.method == "multi_step"].ik_ms_per_frame.gt(0).all()
    # IK fits the model to the predicted markers: with OpenSim's own kinematics of the scaled model,
    # the IK solution is a least-squares fit of the predicted markers (moving any coordinate either way
    # makes the weighted marker error larger) and far nearer to them than the model's default pose
    for view in ("PG1", "PG2"):
        fit = _ik_fit_of_predicted_markers(tmp_path / "Subject_1" / view)
        assert fit["rms_m"] < fit["default_pose_rms_m"] / 10, (view, fit)
        assert fit["perturbations_that_fit_better"] == [], (view, fit)


def test_the_report_lists_every_augmentation_and_links_its_plots(smoke_frames, generic_model, tmp_path):
    import pandas as pd

    from d3ke_assets.evaluation import report as R
    from d3ke_assets.evaluation.evaluate import evaluate_view

    layer = SkeletalModel.from_osim(generic_model[0])
    torch.manual_seed(0)
    frame = FrameModel(layer, "mobilenet_v3_small").eval()
    view = FrameDataset([smoke_frames["base"] / "frames"], used_only=False, cameras=("PG1",))
    table = pd.DataFrame([{"view": "PG1", **r} for r in evaluate_view(frame, view)])
    claim = pd.DataFrame([{"method": m, "view": "PG1", "coordinate_mae_deg": 1.0, "mpjpe_mm": 2.0, "pa_mpjpe_mm": 3.0}
                          for m in ("direct", "multi_step")])
    path = R.write_report(table, claim, tmp_path, view, frame, test_subjects=["Subject_1"])
    text = path.read_text()
    for name in A.AUGMENTATIONS:
        assert f"| frame_model | {name} |" in text
    for png in (R.SEVERITY_PNG, R.CURVES_PNG, R.OVERLAY_PNG):
        assert f"]({png})" in text and (tmp_path / png).stat().st_size > 5000
    # the bones join joints whose bodies are connected: the knee's parent joint is the hip
    names = layer.joint_names
    assert (names.index("hip_r"), names.index("knee_r")) in R.bones(layer)


def _ik_fit_of_predicted_markers(work, step_rad: float = 0.02, step_m: float = 0.005) -> dict:
    """The predicted markers IK was given (predicted.trc) against the scaled model's markers
    (OpenSim) at the IK solution (predicted.mot): the RMS distance (m), the same at the model's
    default pose, and on three frames each coordinate moved by +-step (within its range) whose
    weighted squared marker error (the project's IK weights) is lower than the solution's."""
    from d3ke_assets.biomech.formats import read_mot, read_trc
    from d3ke_assets.biomech.ground_truth import project_marker_weights
    from d3ke_assets.biomech.opensim_tools import opensim_module

    osim = opensim_module()
    target = read_trc(work / "predicted.trc")
    _, columns, values, in_degrees = read_mot(work / "predicted.mot")
    assert len(values) == len(target.positions_m)
    weights = np.array([project_marker_weights(target.marker_names)[m] for m in target.marker_names])
    model = osim.Model(str(work / "scaled.osim"))
    state = model.initSystem()
    coordinate_set, marker_set = model.getCoordinateSet(), model.getMarkerSet()
    coordinates = [coordinate_set.get(name) for name in columns]
    rotational = [c.getMotionType() == 1 for c in coordinates]

    def markers_at(q: np.ndarray) -> np.ndarray:
        for coordinate, value in zip(coordinates, q):
            coordinate.setValue(state, float(value), False)
        model.realizePosition(state)
        return np.array([marker_set.get(m).getLocationInGround(state).to_numpy() for m in target.marker_names])

    model.realizePosition(state)
    default = np.array([marker_set.get(m).getLocationInGround(state).to_numpy() for m in target.marker_names])
    solution = np.where(rotational, np.radians(values), values) if in_degrees else values
    squared = [((markers_at(q) - wanted) ** 2).sum(axis=1) for q, wanted in zip(solution, target.positions_m)]
    squared_default = [((default - wanted) ** 2).sum(axis=1) for wanted in target.positions_m]
    better = []
    for f in (0, len(solution) // 2, len(solution) - 1):
        wanted = target.positions_m[f]
        cost = float((weights * ((markers_at(solution[f]) - wanted) ** 2).sum(axis=1)).sum())
        for k, coordinate in enumerate(coordinates):
            for sign in (-1.0, 1.0):
                q = solution[f].copy()
                q[k] += sign * (step_rad if rotational[k] else step_m)
                if not coordinate.getRangeMin() <= q[k] <= coordinate.getRangeMax():
                    continue
                moved = float((weights * ((markers_at(q) - wanted) ** 2).sum(axis=1)).sum())
                if moved < cost * (1 - 1e-6):
                    better.append((f, columns[k], sign, cost, moved))
    return {"rms_m": float(np.sqrt(np.mean(squared))), "default_pose_rms_m": float(np.sqrt(np.mean(squared_default))),
            "perturbations_that_fit_better": better}


def test_subjects_scored_alone_add_up_to_the_metrics_of_all_of_them():
    """`score_sums` of uneven parts, aggregated, give what the metric functions give on all the frames."""
    import pandas as pd

    from d3ke_assets.evaluation import metrics as M
    from d3ke_assets.evaluation.evaluate import aggregate, score_sums

    rng = np.random.default_rng(3)
    n, c, k, j, b = 23, 5, 7, 4, 3
    names = [f"q{i}" for i in range(c)]
    scored = np.array([True, True, False, True, True])
    true = {"coordinates": rng.normal(size=(n, c)), "coordinate_mask": (rng.random((n, c)) > 0.2).astype(float),
            "markers_m": rng.normal(size=(n, k, 3)) * 0.3, "joint_centres_m": rng.normal(size=(n, j, 3)) * 0.3,
            "scale_factors": rng.normal(1, 0.1, size=(n, b, 3))}  # per body and axis, as the layer's
    true["coordinate_mask"][:, 4] = 0  # a coordinate no frame labels: NaN, as coordinate_errors_deg says
    pred = {key: v + rng.normal(size=v.shape) * 0.1 if key != "coordinate_mask" else v for key, v in true.items()}
    markers = np.array([True, False, True, True, True, False, True])
    parts = [slice(0, 4), slice(4, 15), slice(15, n)]
    sums = pd.DataFrame([{"model": "m", "subject": f"S{i}", **score_sums({key: v[p] for key, v in pred.items()},
                                                                          {key: v[p] for key, v in true.items()},
                                                                          scored, markers, names)}
                         for i, p in enumerate(parts)])
    row = aggregate(sums, ["model"]).iloc[0]
    mask = true["coordinate_mask"] * scored
    per = M.coordinate_errors_deg(pred["coordinates"], true["coordinates"], mask)
    assert row.n_frames == n
    assert row.coordinate_mae_deg == pytest.approx(
        M.coordinate_mae_deg(pred["coordinates"], true["coordinates"], mask, scored), rel=1e-12)
    assert row.coordinate_rmse_deg == pytest.approx(
        np.sqrt(np.nansum(per["rmse_deg"] ** 2 * per["n_frames"]) / per["n_frames"].sum()), rel=1e-12)
    assert row.marker_error_mm == pytest.approx(M.mpjpe_mm(pred["markers_m"][:, markers],
                                                           true["markers_m"][:, markers]), rel=1e-12)
    assert row.mpjpe_mm == pytest.approx(M.mpjpe_mm(pred["joint_centres_m"], true["joint_centres_m"]), rel=1e-12)
    assert row.pa_mpjpe_mm == pytest.approx(M.pa_mpjpe_mm(pred["joint_centres_m"], true["joint_centres_m"]),
                                            rel=1e-12)
    assert row.pck150_percent == pytest.approx(M.pck_percent(pred["joint_centres_m"], true["joint_centres_m"]))
    assert row.scale_error == pytest.approx(M.scale_error(pred["scale_factors"], true["scale_factors"]), rel=1e-12)
    for i in (0, 1, 3):
        assert row[f"mae_deg.q{i}"] == pytest.approx(per["mae_deg"][i], rel=1e-12)
    assert np.isnan(row["mae_deg.q4"]) and "mae_deg.q2" not in row  # unlabelled: NaN; not scored: absent
