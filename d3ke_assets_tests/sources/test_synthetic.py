"""The synthetic generator against its own known truth, OpenSim and PyAV."""

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import opensim as osim
import pytest

from d3ke_assets.biomech import model_builder as mb
from d3ke_assets.biomech.formats import read_mot
from d3ke_assets.settings import SyntheticSize
from d3ke_assets.sources import synthetic
from d3ke_assets.sources.camera import Camera
from d3ke_assets.sources.checksums import Manifest
from d3ke_assets_tests.conftest import SMOKE

TINY = SyntheticSize(n_subjects=3, trial_seconds=0.4, static_seconds=0.2, video_width_px=96, video_height_px=72)


def _facts(folder: Path) -> dict:
    return json.loads((folder / "subject.json").read_text())


def _generate(folder: Path, seed: int, model: Path) -> dict[str, str]:
    synthetic.generate_subject("Subject_2", folder, TINY, seed, model)
    return {str(p.relative_to(folder)): __import__("hashlib").sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, generic_model):
    a = _generate(tmp_path / "a", 7, generic_model[0])
    b = _generate(tmp_path / "b", 7, generic_model[0])
    c = _generate(tmp_path / "c", 8, generic_model[0])
    assert a == b
    assert any(name.endswith(".avi") for name in a)
    for name in ("F_PG1_Subject_2_L.avi", "mocap/Subject_2_walking.trc", "truth/scaled_model.osim"):
        assert a[name] != c[name], name


def test_layout_is_shaped_like_movi(smoke_subject):
    facts = _facts(smoke_subject)
    for cam in ("PG1", "PG2"):
        assert (smoke_subject / f"F_{cam}_Subject_1_L.avi").is_file()
        assert (smoke_subject / "cameras" / f"{cam}.json").is_file()
    names = [t["name"] for t in facts["trials"]]
    assert names == ["static", "walking", "squat", "arm_raises", "jumping_jacks", "random_motion"]
    assert facts["capture_rate_hz"] / facts["video_fps"] == 4
    # trials follow each other in the video without gaps or overlap
    video_trials = [t for t in facts["trials"] if t["name"] != "static"]
    assert video_trials[0]["video_start_frame"] == 0
    for prev, nxt in zip(video_trials, video_trials[1:]):
        assert nxt["video_start_frame"] == prev["video_end_frame"]
    for t in video_trials:
        assert (t["video_end_frame"] - t["video_start_frame"]) * 4 == t["n_capture_frames"]
    assert video_trials[-1]["video_end_frame"] == facts["n_video_frames"]


def test_anthropometrics_are_plausible_and_scaled_model_matches_them(smoke_subject, generic_model):
    facts = _facts(smoke_subject)
    assert 1.45 < facts["height_m"] < 2.05 and 18 < facts["mass_kg"] / facts["height_m"] ** 2 < 29
    factors = json.loads((smoke_subject / "truth" / "scale_factors.json").read_text())
    generic = osim.Model(str(generic_model[0]))
    scaled = osim.Model(str(smoke_subject / "truth" / "scaled_model.osim"))
    s_state = scaled.initSystem()
    assert scaled.getTotalMass(s_state) == pytest.approx(facts["mass_kg"], rel=1e-6)
    for joint, body in (("knee_r", "femur_r"), ("ankle_l", "tibia_l"), ("elbow_r", "humerus_r")):
        g = generic.getJointSet().get(joint).get_frames(0).get_translation().to_numpy()
        s = scaled.getJointSet().get(joint).get_frames(0).get_translation().to_numpy()
        np.testing.assert_allclose(s, g * np.array(factors[body]), rtol=1e-9, atol=1e-12, err_msg=joint)
        assert 0.8 < factors[body][1] < 1.25


def test_markers_agree_with_opensim_forward_kinematics(smoke_subject):
    """Markers in the .trc (read by OpenSim) = OpenSim FK of the true coordinates + ~2 mm skin noise."""
    scaled = osim.Model(str(smoke_subject / "truth" / "scaled_model.osim"))
    state = scaled.initSystem()
    for trial in ("walking", "jumping_jacks", "static"):
        table = osim.TimeSeriesTableVec3(str(smoke_subject / "mocap" / f"Subject_1_{trial}.trc"))
        assert table.getTableMetaDataAsString("Units") == "mm"
        labels = list(table.getColumnLabels())
        time, names, values, in_degrees = read_mot(smoke_subject / "truth" / f"{trial}.mot")
        assert in_degrees and table.getNumRows() == len(time)
        diffs = []
        for row in range(0, len(time), 7):
            for name, v in zip(names, values[row]):
                c = scaled.getCoordinateSet().get(name)
                rotational = c.getMotionType() == osim.Coordinate.Rotational
                c.setValue(state, math.radians(v) if rotational else v, False)
            scaled.realizePosition(state)
            measured = table.getRowAtIndex(row)
            for k, label in enumerate(labels):
                model_pos = scaled.getMarkerSet().get(label).getLocationInGround(state).to_numpy()
                trc_pos = np.array([measured[k][j] for j in range(3)]) / 1000.0
                diffs.append(np.linalg.norm(trc_pos - model_pos))
        diffs = np.array(diffs)
        rms = float(np.sqrt(np.mean(diffs ** 2)))
        assert 0.0005 < rms < 0.004, (trial, rms)  # noise is there, and small
        assert diffs.max() < 0.012, trial


def test_true_coordinates_stay_in_range_and_feet_touch_the_floor(smoke_subject):
    ranges = {c.name: c for c in mb.coordinates()}
    for trial in ("walking", "squat", "arm_raises", "jumping_jacks", "random_motion"):
        _t, names, values, _ = read_mot(smoke_subject / "truth" / f"{trial}.mot")
        for k, name in enumerate(names):
            c = ranges[name]
            lo, hi = c.range_deg if c.rotational else c.range_m
            assert values[:, k].min() >= lo - 1e-6 and values[:, k].max() <= hi + 1e-6, (trial, name)
        table = osim.TimeSeriesTableVec3(str(smoke_subject / "mocap" / f"Subject_1_{trial}.trc"))
        labels = list(table.getColumnLabels())
        k = labels.index("RHEE")
        heel_y_mm = np.array([table.getRowAtIndex(i)[k][1] for i in range(table.getNumRows())])
        assert heel_y_mm.min() < 60, trial  # on the floor (the heel marker is a few cm up)
        assert heel_y_mm.min() > -5, trial


def test_videos_decode_with_expected_count_rate_and_size(smoke_subject):
    facts = _facts(smoke_subject)
    for cam in ("PG1", "PG2"):
        with av.open(str(smoke_subject / f"F_{cam}_Subject_1_L.avi")) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            assert stream.average_rate == Fraction(30)
        assert len(frames) == facts["n_video_frames"]
        assert frames[0].shape == (SMOKE.video_height_px, SMOKE.video_width_px, 3)
        # a textured background, not a flat colour
        assert frames[0].reshape(-1, 3).std(0).min() > 8


def _body_pixels(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    diff = np.abs(frame.astype(float) - background * 255).sum(-1)
    body = diff > 60
    # dilate by one pixel: a marker on the outline counts as on the body
    padded = np.pad(body, 1)
    return np.max([padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


def test_projected_markers_land_on_rendered_body_pixels(smoke_subject):
    facts = _facts(smoke_subject)
    rng = np.random.default_rng(0)
    on_body, off_body_controls = [], []
    for cam_name in ("PG1", "PG2"):
        cam = Camera.from_json(smoke_subject / "cameras" / f"{cam_name}.json")
        background = synthetic.background_for(cam, facts["seed"], "Subject_1")
        with av.open(str(smoke_subject / f"F_{cam_name}_Subject_1_L.avi")) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        for trial in facts["trials"][1:]:
            table = osim.TimeSeriesTableVec3(str(smoke_subject / trial["mocap_file"]))
            for j in range(trial["video_start_frame"], trial["video_end_frame"], 5):
                row = table.getRowAtIndex((j - trial["video_start_frame"]) * 4)
                markers = np.array([[row[k][i] for i in range(3)] for k in range(row.size())]) / 1000.0
                uv = np.round(cam.project(markers)).astype(int)
                body = _body_pixels(frames[j], background)
                inside = (uv[:, 0] >= 0) & (uv[:, 0] < cam.width_px) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height_px)
                assert inside.all()
                on_body.extend(body[uv[:, 1], uv[:, 0]])
                # control: the same points shifted far sideways mostly miss the body
                shifted = uv + np.array([cam.width_px // 3 * rng.choice([-1, 1]), 0])
                ok = (shifted[:, 0] >= 0) & (shifted[:, 0] < cam.width_px)
                off_body_controls.extend(body[shifted[ok, 1], shifted[ok, 0]])
    assert np.mean(on_body) > 0.95, np.mean(on_body)
    assert np.mean(off_body_controls) < 0.3, np.mean(off_body_controls)


def test_manifest_lists_every_generated_file(smoke_subject):
    manifest = Manifest.read(smoke_subject / "manifest.json")
    on_disk = {str(p.relative_to(smoke_subject)) for p in smoke_subject.rglob("*")
               if p.is_file() and p.name not in ("manifest.json", "_stamp.json", "_preview.jpg")}
    assert set(manifest.files) == on_disk
    assert (smoke_subject / "_preview.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    for name, meta in manifest.files.items():
        assert meta["size"] == (smoke_subject / name).stat().st_size


@pytest.mark.parametrize("duration_s", [1.0, 3.0, 10.0])
def test_walking_heads_where_it_goes_at_every_preset_length(duration_s):
    """The pelvis faces along its path (no sideways walking from a clipped heading)."""
    from d3ke_assets.sources import motions

    t, q, _ = motions.generate("walking", duration_s, np.random.default_rng(3))
    names = mb.coordinate_names()
    heading = q[:, names.index("pelvis_rotation")]
    velocity = np.gradient(q[:, [names.index("pelvis_tx"), names.index("pelvis_tz")]], t, axis=0)
    forward = np.column_stack([np.cos(heading), -np.sin(heading)])  # body x axis rotated about y
    cos_angle = (velocity * forward).sum(1) / np.linalg.norm(velocity, axis=1)
    assert cos_angle.min() > 0.999
    lo, hi = next(c for c in mb.coordinates() if c.name == "pelvis_rotation").range
    assert lo < heading.min() and heading.max() < hi


def test_probe_and_write_video_other_containers_and_errors(tmp_path, smoke_subject):
    from d3ke_assets.errors import D3keError
    from d3ke_assets.frames.video import probe_video, write_video

    facts = _facts(smoke_subject)
    info = probe_video(smoke_subject / "F_PG1_Subject_1_L.avi")
    assert (info.n_frames, info.fps, info.width_px, info.height_px) == (
        facts["n_video_frames"], 30.0, SMOKE.video_width_px, SMOKE.video_height_px)
    frames = [np.full((48, 64, 3), k * 20, np.uint8) for k in range(6)]
    assert write_video(tmp_path / "clip.mp4", frames, 30, 64, 48, codec="libx264") == 6
    assert probe_video(tmp_path / "clip.mp4").n_frames == 6
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary left
    (tmp_path / "junk.avi").write_bytes(b"not a video")
    with pytest.raises(D3keError, match="junk.avi"):
        probe_video(tmp_path / "junk.avi")
    with pytest.raises(D3keError, match="clip.xyz"):
        write_video(tmp_path / "clip.xyz", frames, 30, 64, 48)


def test_generation_checks_free_disk_space_first(tmp_path, monkeypatch, generic_model, smoke_subject):
    import shutil

    from d3ke_assets import storage
    from d3ke_assets.errors import D3keError
    from d3ke_assets.settings import PRESETS
    from d3ke_assets.sources import raw, synthetic

    size = PRESETS["smoke"].synthetic
    written = sum(p.stat().st_size for p in smoke_subject.rglob("*") if p.is_file())
    assert written <= synthetic.estimate_bytes(size)  # the estimate is an upper bound
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, 1 << 40, 4096))
    with pytest.raises(D3keError, match=r"raw_subject for Subject_2 needs about \d+ MB at .* are free there"):
        raw.synthetic_subject(tmp_path, "Subject_2", size, 0, generic_model[0])
    assert not (tmp_path / "raw_subject" / "Subject_2").exists()
