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
    # IK fits the model to the predicted markers: its markers are at least near the direct prediction's
    assert (tmp_path / "Subject_1" / "PG1" / "predicted.mot").is_file()


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
