"""Processed frames against the synthetic generator's known cameras, backgrounds and labels."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from d3ke_assets.errors import D3keError
from d3ke_assets.frames import processing as fp
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.media.video import CameraVideo
from d3ke_assets.sources import synthetic

CROP = 64


@pytest.fixture(scope="module")
def subject(smoke_frames):
    """Subject_1's raw files, labels (opensim_gt) and frames, in one folder."""
    f = smoke_frames
    return f["base"], f["cameras"], f["labels"], f["names"], f["summary"]


def test_to_crop_px_hand_computed():
    box = np.array([10.0, 20.0, 40.0])  # a 40 px square at (10, 20) resized to 80 px: scale 2
    assert np.allclose(fp.to_crop_px(np.array([10.0, 20.0]), box, 80), [0.5, 0.5])  # pixel 10's centre
    assert np.allclose(fp.to_crop_px(np.array([29.5, 39.5]), box, 80), [39.5, 39.5])  # the box centre


def test_used_flags_follow_20_mm_of_movement():
    markers = np.zeros((6, 2, 3))
    markers[:, 1, 0] = [0.0, 0.015, 0.025, 0.03, 0.05, 0.0]  # one marker moving along x
    trial = np.array([0, 0, 0, 0, 0, 1])
    # frame 2 moved 25 mm from frame 0; frame 3 only 5 mm from frame 2; frame 4 25 mm; frame 5 opens a trial
    assert fp.used_flags(trial, markers).tolist() == [True, False, True, False, True, True]


def test_every_labelled_frame_of_both_cameras_is_stored_compactly(subject):
    base, cameras, labels, _, summary = subject
    index = fp.read_index(base / "frames")
    assert index.num_rows == summary["n_frames"] == len(labels["video_frame"]) * len(cameras)
    shards = list((base / "frames").glob("*.jpgs"))
    assert 1 <= len(shards) <= 2 * len(cameras)  # a few large files, not one per frame
    assert sum(p.stat().st_size for p in shards) == summary["bytes"]


def test_projected_labels_land_on_the_body_in_their_crop(subject, smoke_subject):
    """Each crop's labelled joint centres fall on body pixels: the crop differs there from the empty room."""
    base, cameras, _, _, _ = subject
    ds = FrameDataset([base / "frames"], used_only=False)
    by_cam = {c.name: c for c in cameras}
    backgrounds = {c.name: synthetic.background_for(c.camera, 0, "Subject_1") for c in cameras}
    pelvis_knees = [ds.label_names["joints"].index(j) for j in ("ground_pelvis", "knee_r", "knee_l")]
    checked = 0
    for i in np.linspace(0, len(ds) - 1, 12).astype(int):
        cam = by_cam[ds.camera[i]]
        image = ds.image(i).permute(1, 2, 0).numpy().astype(float)
        room = (backgrounds[cam.name] * 255).clip(0, 255).astype(np.uint8)
        room_crop = np.asarray(Image.open(io.BytesIO(fp.crop_to_jpeg(room, ds.box[i], CROP))), float)
        joints = ds.labels["joint_centres_m"][i].reshape(-1, 3)[pelvis_knees].astype(float)
        uv = fp.to_crop_px(cam.camera.project(joints), ds.box[i].astype(float), CROP)
        markers = fp.to_crop_px(cam.camera.project(ds.labels["markers_m"][i].reshape(-1, 3).astype(float)),
                                ds.box[i].astype(float), CROP)
        assert np.all((markers > 0) & (markers < CROP - 1))  # the whole marker set inside its crop
        for u, v in np.round(uv).astype(int):
            difference = np.abs(image[v - 1:v + 2, u - 1:u + 2] - room_crop[v - 1:v + 2, u - 1:u + 2]).mean()
            # the room itself differs by ~2 levels (sensor noise, JPEG); a body pixel by ~20 or more
            assert difference > 10, (i, ds.camera[i], difference)
            checked += 1
    assert checked == 36


def test_reader_returns_the_labels_of_each_frame(subject):
    base, _, labels, _, _ = subject
    ds = FrameDataset([base / "frames"], used_only=False)
    item = ds[5]
    assert item["image"].shape == (3, CROP, CROP) and item["image"].dtype == torch.uint8
    row = int(np.flatnonzero(labels["video_frame"] == ds.frame[5])[0])
    assert np.allclose(item["coordinates"].numpy(), labels["coordinates"][row], atol=1e-6)
    assert np.allclose(item["markers_m"].numpy(), labels["markers_m"][row].ravel(), atol=1e-6)
    used = FrameDataset([base / "frames"])
    assert 0 < len(used) < len(ds)
    loader = torch.utils.data.DataLoader(used, batch_size=8, num_workers=2)
    batch = next(iter(loader))  # decoding in worker processes
    assert batch["image"].shape == (8, 3, CROP, CROP)


def test_reader_decodes_the_pixels_pil_decodes(subject):
    """The reader's JPEG decoder against an independent one (Pillow) on the same stored bytes: every
    pixel of every frame equal, RGB, (3, S, S)."""
    base = subject[0]
    ds = FrameDataset([base / "frames"], used_only=False)
    for i in range(len(ds)):
        with Image.open(io.BytesIO(ds.jpeg_bytes(i))) as picture:
            expected = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(ds.image(i), expected), i


def _process(subject, tmp_path, cameras=None, labels=None):
    _, default_cameras, default_labels, names, _ = subject
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return fp.process_subject("Subject_1", cameras or default_cameras, labels or default_labels, names,
                              tmp_path / "labels.npz", out, CROP)


def test_bad_videos_and_labels_name_the_file(subject, tmp_path):
    _, cameras, labels, _, _ = subject
    cam = cameras[0]
    # truncated: half the bytes
    cut = tmp_path / "cut.avi"
    cut.write_bytes(cam.video.read_bytes()[: cam.video.stat().st_size // 2])
    with pytest.raises(D3keError, match=r"cut.avi: video (has \d+ frames but the capture needs|is truncated)"):
        _process(subject, tmp_path, [CameraVideo(cam.name, cut, cam.camera, cam.calibration)])
    # wrong size: calibration of another resolution
    bigger = CameraVideo(cam.name, cam.video, synthetic.make_cameras(
        synthetic.SyntheticSize(1, 1, 1, 320, 240))[cam.name], cam.calibration)
    with pytest.raises(D3keError, match=r"F_PG1_Subject_1_L.avi: video is 160x120 but its calibration"):
        _process(subject, tmp_path, [bigger])
    # wrong frame rate
    slow = CameraVideo(cam.name, cam.video, synthetic.make_cameras(
        synthetic.SyntheticSize(1, 1, 1, 160, 120))[cam.name], cam.calibration)
    slow.camera.fps = 25.0
    with pytest.raises(D3keError, match=r"video runs at 30 fps but the capture expects 25 fps"):
        _process(subject, tmp_path, [slow])
    # shorter than its capture: labels beyond the last video frame
    longer = dict(labels)
    longer["video_frame"] = labels["video_frame"] + 10
    with pytest.raises(D3keError, match=r"F_PG1_Subject_1_L.avi: video has \d+ frames but the capture needs"):
        _process(subject, tmp_path, [cam], longer)
    # NaN labels
    nan = dict(labels)
    nan["markers_m"] = labels["markers_m"].copy()
    nan["markers_m"][3, 2, 1] = np.nan
    with pytest.raises(D3keError, match=r"labels.npz: labels \['markers_m'\] contain NaN"):
        _process(subject, tmp_path, [cam], nan)
    # missing calibration
    gone = tmp_path / "PG1.json"
    with pytest.raises(D3keError, match=r"PG1.json: calibration of camera PG1 is missing"):
        _process(subject, tmp_path, [CameraVideo(cam.name, cam.video, cam.camera, gone)])


def test_storage_estimate_covers_what_is_written(subject):
    base, cameras, labels, _, summary = subject
    assert summary["bytes"] <= fp.estimate_bytes(len(labels["video_frame"]), len(cameras), CROP)


def test_disk_preflight_names_needed_free_and_where(tmp_path, monkeypatch):
    from d3ke_assets import storage

    monkeypatch.setattr(storage.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 5 << 20))
    with pytest.raises(D3keError, match=r"frames for Subject_1 needs about 100 MB at .*out but only 5 MB are free"):
        storage.ensure_free_space(tmp_path / "out", 100_000_000, "frames for Subject_1")
    storage.ensure_free_space(tmp_path / "out", 1_000_000, "frames for Subject_1")  # fits
