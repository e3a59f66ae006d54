"""A lab's own data (`D3KE_DATASET=lab`): synthetic subjects exported into the lab layout give the
synthetic path's labels; timed trials (100 Hz capture, 30 fps video, frame 0 at a non-zero time)
are labelled at the right times; each bad input fails its subject alone, in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from d3ke_assets.biomech import ground_truth as gt
from d3ke_assets.biomech.formats import MarkerTrajectories, read_mot, read_trc, write_trc
from d3ke_assets.errors import D3keError, RawDataError
from d3ke_assets.frames import processing as fp
from d3ke_assets.media.camera import Camera
from d3ke_assets.media.video import decode_frames, write_video
from d3ke_assets.sources import lab, mocap, raw, synthetic
from d3ke_assets.sources.checksums import LAB_ROOT, Manifest

KEY = "Subject_1"
LOWER_BODY = ["pelvis_tilt", "pelvis_list", "pelvis_rotation", "hip_flexion_r", "hip_adduction_r", "hip_rotation_r",
              "knee_angle_r", "ankle_angle_r", "hip_flexion_l", "hip_adduction_l", "hip_rotation_l", "knee_angle_l",
              "ankle_angle_l"]


def export_to_lab(raw_dir: Path, lab_root: Path, key: str, trials: list[str] | None = None,
                  retime=None, split: str | None = "train") -> Path:
    """Write the synthetic subject in `raw_dir` as a lab subject `lab_root/key`: subject.toml,
    calibration.toml from its cameras, its .trc files and one video per trial and camera cut from
    its videos.  `retime(trial, MarkerTrajectories) -> (MarkerTrajectories, video_start_time_s)`
    rewrites a trial's capture (rate, clock) instead of copying it."""
    facts = synthetic.load_subject_facts(raw_dir)
    folder = lab_root / key
    (folder / "mocap").mkdir(parents=True)
    (folder / "videos").mkdir()
    toml = f'mass_kg = {facts["mass_kg"]}\nheight_m = {facts["height_m"]}\nsex = "{facts["sex"]}"\n'
    toml += f'split = "{split}"\n' if split else ""
    cameras = {c: Camera.from_json(raw_dir / f["calibration"]) for c, f in facts["cameras"].items()}
    (folder / lab.CALIBRATION_FILE).write_text("[metadata]\nadjusted = false\n\n"
                                               + lab.calibration_toml(list(cameras.values())))
    shutil.copyfile(raw_dir / facts["static_trial"], folder / "mocap" / "static.trc")
    chosen = [t for t in facts["trials"] if "video_start_frame" in t and (trials is None or t["name"] in trials)]
    frames = {c: list(decode_frames(raw_dir / f["video"])) for c, f in facts["cameras"].items()}
    for t in chosen:
        trc = folder / "mocap" / f"{t['name']}.trc"
        if retime is None:
            shutil.copyfile(raw_dir / t["mocap_file"], trc)
        else:
            markers, start = retime(t["name"], read_trc(raw_dir / t["mocap_file"]))
            write_trc(trc, markers)
            toml += f"\n[trials.{t['name']}]\nvideo_start_time_s = {start!r}\n"
        for c, cam in cameras.items():
            clip = frames[c][t["video_start_frame"]:t["video_end_frame"]]
            write_video(folder / "videos" / f"{t['name']}_{c}.mp4", clip, synthetic.VIDEO_FPS, cam.width_px,
                        cam.height_px)
    (folder / lab.SUBJECT_FILE).write_text(toml)
    return folder


def lab_ground_truth(data_root: Path, lab_root: Path, key: str, generic_model: Path, base: Path):
    """raw_subject, mocap_markers and opensim_gt of one lab subject, as the assets run them."""
    raw.lab_subject(data_root, key, lab_root)
    (base / "mocap").mkdir(parents=True)
    mocap.lab_mocap(lab.index_subject(lab_root, key), base / "mocap")
    gt.compute_subject(base / "mocap", generic_model, base / "gt")
    return gt.load_labels(base / "gt")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, smoke_subject, smoke_frames, generic_model):
    """Synthetic Subject_1 through the lab path, next to its synthetic-path labels (`smoke_frames`)."""
    base = tmp_path_factory.mktemp("lab")
    export_to_lab(smoke_subject, base / "lab", KEY)
    labels, names = lab_ground_truth(base / "data", base / "lab", KEY, generic_model[0], base)
    return base, labels, names


def test_lab_path_gives_the_synthetic_paths_labels(exported, smoke_frames, smoke_subject):
    base, lab_labels, lab_names = exported
    syn, syn_names = smoke_frames["labels"], smoke_frames["names"]
    assert sorted(lab_names["trials"]) == sorted(syn_names["trials"])  # the lab's in name order
    assert lab_names["coordinates"] == syn_names["coordinates"] and lab_names["markers"] == syn_names["markers"]
    # the same frames: each lab trial's video frames are the synthetic video's, counted from the trial's start
    starts = {t["name"]: t["video_start_frame"] for t in synthetic.load_subject_facts(smoke_subject)["trials"]
              if "video_start_frame" in t}
    lab_global = lab_labels["video_frame"] + np.array([starts[lab_names["trials"][i]] for i in lab_labels["trial_index"]])
    order = np.argsort(lab_global, kind="stable")
    lab_labels = {k: v[order] for k, v in lab_labels.items()}
    np.testing.assert_array_equal(lab_global[order], syn["video_frame"])
    assert [lab_names["trials"][i] for i in lab_labels["trial_index"]] == \
        [syn_names["trials"][i] for i in syn["trial_index"]]
    np.testing.assert_allclose(lab_labels["time_s"], syn["time_s"], atol=1e-6)  # k / 30 s against the .trc's times
    d_coord = np.abs(lab_labels["coordinates"] - syn["coordinates"]).max()
    d_scale = np.abs(lab_labels["scale_factors"] - syn["scale_factors"]).max()
    d_marker = np.abs(lab_labels["markers_m"] - syn["markers_m"]).max()
    print(f"lab vs synthetic labels, max |difference|: coordinates {d_coord:.3g} (rad/m), scale factors "
          f"{d_scale:.3g}, markers {1000 * d_marker:.3g} mm over {len(syn['time_s'])} frames")
    # IK tolerance: the solver's accuracy is 1e-5; the same inputs must give the same labels
    assert d_coord <= 1e-4 and d_scale <= 1e-6 and d_marker <= 1e-4


def test_lab_manifest_is_relative_to_the_lab_root(exported):
    base = exported[0]
    manifest = Manifest.read(raw.raw_dir(base / "data", KEY) / raw.MANIFEST_NAME)
    assert (manifest.dataset, manifest.root, manifest.base) == ("lab", LAB_ROOT, KEY)
    assert {"subject.toml", "calibration.toml", "mocap/static.trc", "mocap/walking.trc",
            "videos/walking_PG1.mp4"} <= set(manifest.files)
    assert manifest.folder(base / "data", lab_root=base / "lab") == base / "lab" / KEY
    digests = raw.subject_digests(base / "data", "lab", [KEY], lab_root=base / "lab")
    assert digests == {KEY: manifest.digest}


def test_frames_of_a_lab_subject_come_from_each_trials_videos(exported, smoke_frames, smoke_root):
    """frames runs unchanged on per-trial videos: the same crops' boxes as the synthetic path."""
    base, labels, names = exported
    cameras = raw.camera_videos(base / "data", KEY, lab_root=base / "lab")
    assert {(c.name, c.trial) for c in cameras} == {(c, t) for c in ("PG1", "PG2") for t in names["trials"]}
    out = base / "frames"
    out.mkdir()
    fp.process_subject(KEY, cameras, labels, names, base / "gt" / "labels.npz", out, 64)
    ours, theirs = fp.read_index(out).to_pandas(), fp.read_index(smoke_frames["base"] / "frames").to_pandas()
    assert len(ours) == fp.expected_rows(cameras, labels, names) == len(theirs)
    key = ["camera", "trial", "time_s"]
    ours, theirs = ours.sort_values(key).reset_index(drop=True), theirs.sort_values(key).reset_index(drop=True)
    for col in ("box_x0_px", "box_y0_px", "box_size_px"):
        assert np.abs(ours[col].to_numpy() - theirs[col].to_numpy()).max() <= 1, col
    assert (ours["used"] == theirs["used"]).all()


# --- a timed trial: 100 Hz capture on its own clock, 30 fps video ------------------------------

CLOCK_OFFSET_S = 0.37  # mocap time = synthetic trial time + this: frame 0 lies before the capture starts
CAPTURE_START_S = 0.40
TIMED_TRIALS = ["jumping_jacks", "walking"]


def to_100_hz(trial: str, markers: MarkerTrajectories) -> tuple[MarkerTrajectories, float]:
    """The synthetic 120 Hz capture as a 100 Hz one on a clock CLOCK_OFFSET_S ahead, starting at
    CAPTURE_START_S (so video frame 0 is before it); video frame 0 at mocap time CLOCK_OFFSET_S."""
    t_lab = np.arange(CAPTURE_START_S, markers.time_s[-1] + CLOCK_OFFSET_S + 1e-9, 0.01)
    tau = t_lab - CLOCK_OFFSET_S
    flat = markers.positions_m.reshape(len(markers.time_s), -1)
    pos = np.stack([np.interp(tau, markers.time_s, flat[:, k]) for k in range(flat.shape[1])], axis=1)
    return MarkerTrajectories(markers.marker_names, t_lab, pos.reshape(len(tau), -1, 3), 100.0), CLOCK_OFFSET_S


@pytest.fixture(scope="module")
def timed(tmp_path_factory, smoke_subject, generic_model):
    base = tmp_path_factory.mktemp("lab_timed")
    export_to_lab(smoke_subject, base / "lab", KEY, TIMED_TRIALS, retime=to_100_hz)
    labels, names = lab_ground_truth(base / "data", base / "lab", KEY, generic_model[0], base)
    return base, labels, names


def test_timed_trials_are_labelled_at_their_video_frames_times(timed, smoke_subject):
    base, labels, names = timed
    trials = {t.name: t for t in gt.read_subject_mocap(base / "mocap").trials}
    for ti, name in enumerate(names["trials"]):
        sel = labels["trial_index"] == ti
        frames = labels["video_frame"][sel]
        # frame 0 (0.37 s) is before the capture (0.40 s): labels start at frame 1 (0.4033 s); the
        # capture ends at 1.36 s, so the last is frame 29 (1.3367 s)
        np.testing.assert_array_equal(frames, np.arange(1, 30))
        np.testing.assert_allclose(labels["time_s"][sel], CLOCK_OFFSET_S + frames / 30.0, atol=1e-9)
        assert trials[name].video_fps == 30.0 and trials[name].video_start_time_s == CLOCK_OFFSET_S
        # the markers IK solved are the 100 Hz capture interpolated by hand at those times
        capture = read_trc(base / "lab" / KEY / "mocap" / f"{name}.trc")
        solved = read_trc(base / "gt" / "ik" / name / f"{name}.trc")
        flat = capture.positions_m.reshape(len(capture.time_s), -1)
        by_hand = np.stack([np.interp(CLOCK_OFFSET_S + frames / 30.0, capture.time_s, flat[:, k])
                            for k in range(flat.shape[1])], axis=1)
        assert np.abs(solved.positions_m.reshape(len(frames), -1) - by_hand).max() <= 1e-5  # .trc: 0.01 mm
        np.testing.assert_allclose(solved.time_s, CLOCK_OFFSET_S + frames / 30.0, atol=1e-6)


def _rms_deg(labels, names, raw_dir: Path, shift_s: float) -> float:
    """Lower-limb coordinates' RMS (deg) against the generator's truth at each label's time - offset + shift."""
    errs = []
    for ti, name in enumerate(names["trials"]):
        t, cols, values, _ = read_mot(raw_dir / "truth" / f"{name}.mot")
        sel = labels["trial_index"] == ti
        tau = labels["time_s"][sel] - CLOCK_OFFSET_S + shift_s
        for c in ("hip_flexion_r", "knee_angle_r", "hip_flexion_l", "knee_angle_l", "hip_adduction_r"):
            truth = np.interp(tau, t, values[:, cols.index(c)])
            ours = np.degrees(labels["coordinates"][sel][:, names["coordinates"].index(c)])
            errs.append(ours - truth)
    return float(np.sqrt(np.mean(np.concatenate(errs) ** 2)))


def test_timed_labels_follow_the_true_motion_at_those_times(timed, smoke_subject, smoke_frames):
    base, labels, names = timed
    at_time = _rms_deg(labels, names, smoke_subject, 0.0)
    one_frame_off = _rms_deg(labels, names, smoke_subject, 1 / 30)
    # next to the synthetic path's labels of the same video frames (120 Hz capture, frame k at k / 30 s)
    syn, syn_names = smoke_frames["labels"], smoke_frames["names"]
    starts = {t["name"]: t["video_start_frame"] for t in synthetic.load_subject_facts(smoke_subject)["trials"]
              if "video_start_frame" in t}
    rot = np.array(names["rotational"])
    d = []
    for ti, name in enumerate(names["trials"]):
        sel = labels["trial_index"] == ti
        rows = np.searchsorted(syn["video_frame"], starts[name] + labels["video_frame"][sel])
        assert (syn["trial_index"][rows] == syn_names["trials"].index(name)).all()
        d.append(np.abs(labels["coordinates"][sel] - syn["coordinates"][rows]))
    d = np.concatenate(d)
    print(f"timed trials: {at_time:.2f} deg RMS against the truth at the labels' times, {one_frame_off:.2f} deg "
          f"one video frame later; against the synthetic path's labels: max {np.degrees(d[:, rot].max()):.2f} deg "
          f"({np.array(names['coordinates'])[rot][d[:, rot].max(axis=0).argmax()]}), "
          f"RMS {np.degrees(np.sqrt((d[:, rot] ** 2).mean())):.3f} deg, translations max {1000 * d[:, ~rot].max():.2f} mm")
    assert at_time <= 2.0 and one_frame_off >= 2 * at_time
    assert np.degrees(np.sqrt((d[:, rot] ** 2).mean())) <= 1.0


# --- one clear error per bad input, only that subject fails --------------------------------------

@pytest.fixture()
def two_subjects(tmp_path, smoke_subject):
    """A lab root with two good copies of Subject_1 (as Subject_1 and Subject_2), one trial each."""
    root = tmp_path / "lab"
    export_to_lab(smoke_subject, root, "Subject_1", ["walking"])
    shutil.copytree(root / "Subject_1", root / "Subject_2")
    return tmp_path / "data", root


def _only_subject_1_fails(data_root: Path, root: Path, stage) -> str:
    with pytest.raises(RawDataError) as exc:
        stage(data_root, root, "Subject_1")
    stage(data_root, root, "Subject_2")  # the other subject goes through
    message = str(exc.value)
    assert "\n" not in message
    return message


def _raw(data_root, root, key):
    raw.scan_lab_subject(data_root, key, root)


def _mocap(data_root, root, key):
    out = data_root / "mocap" / key
    out.mkdir(parents=True, exist_ok=True)
    mocap.lab_mocap(lab.index_subject(root, key), out)


def test_a_calibration_without_a_videos_camera(two_subjects):
    data_root, root = two_subjects
    calibration = root / "Subject_1" / lab.CALIBRATION_FILE
    text = calibration.read_text()
    calibration.write_text(text[:text.index("[PG2]")])
    message = _only_subject_1_fails(data_root, root, _raw)
    assert str(calibration) in message and "no camera 'PG2'" in message and "walking_PG2.mp4" in message


def test_a_video_shorter_than_its_mocap(two_subjects):
    data_root, root = two_subjects
    video = root / "Subject_1" / "videos" / "walking_PG1.mp4"
    frames = list(decode_frames(video))[:20]
    write_video(video, frames, 30, frames[0].shape[1], frames[0].shape[0])
    message = _only_subject_1_fails(data_root, root, _mocap)
    assert str(video) in message and "shorter than its mocap" in message and "video_start_time_s" in message


def test_a_calibration_of_another_size_than_its_video(two_subjects):
    data_root, root = two_subjects
    calibration = root / "Subject_1" / lab.CALIBRATION_FILE
    calibration.write_text(calibration.read_text().replace("size = [160.0, 120.0]", "size = [1920.0, 1080.0]", 1))
    message = _only_subject_1_fails(data_root, root, _mocap)
    assert "walking_PG1.mp4: video is 160x120 but camera PG1 of calibration.toml has size 1920x1080" in message


def test_unknown_units_in_a_trc(two_subjects):
    data_root, root = two_subjects
    trc = root / "Subject_1" / "mocap" / "walking.trc"
    lines = trc.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace("\tmm\t", "\tin\t")
    trc.write_text("".join(lines))
    with pytest.raises(D3keError) as exc:
        raw.scan_lab_subject(data_root, "Subject_1", root)
    raw.scan_lab_subject(data_root, "Subject_2", root)
    assert str(trc) in str(exc.value) and "'in'" in str(exc.value) and "\n" not in str(exc.value)


def test_a_subject_toml_without_mass(two_subjects):
    data_root, root = two_subjects
    path = root / "Subject_1" / lab.SUBJECT_FILE
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("mass_kg")))
    message = _only_subject_1_fails(data_root, root, _raw)
    assert str(path) in message and "no mass_kg: add mass_kg = " in message


def test_splits_come_from_subject_toml(tmp_path):
    for key, text in (("Subject_1", 'split = "test"'), ("Subject_2", ""), ("Subject_3", 'split = "validation"'),
                      ("Subject_4", "not toml ["), ("Subject_10", 'split = "test"')):
        (tmp_path / key).mkdir()
        (tmp_path / key / lab.SUBJECT_FILE).write_text(f"mass_kg = 70\nheight_m = 1.7\n{text}\n")
    (tmp_path / "pilot").mkdir()  # not a subject folder
    split = lab.lab_split(tmp_path)
    assert split.train == ("Subject_2", "Subject_4") and split.validation == ("Subject_3",)
    assert split.test == ("Subject_1", "Subject_10")


def test_calibration_convention_by_hand(tmp_path):
    """x_cam = R X + t with R = Rodrigues(rotation): a quarter turn about y, 5 m away."""
    path = tmp_path / "calibration.toml"
    path.write_text('[cam_01]\nname = "front"\nsize = [640.0, 480.0]\n'
                    'matrix = [[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]]\n'
                    'distortions = [0.0, 0.0, 0.0, 0.0]\nrotation = [0.0, 1.5707963267948966, 0.0]\n'
                    'translation = [0.0, 0.0, 5.0]\nfisheye = false\n\n[metadata]\nadjusted = false\n')
    cam = lab.read_calibration(path)["front"]
    # R = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]: X = (-1, 0, 0) goes to (0, 0, 1) + t, on the optical axis
    # 6 m ahead; X = (-1, 0.1, 0) is 0.1 m further down the image (camera y down): v + 500 * 0.1 / 6
    np.testing.assert_allclose(cam.project(np.array([[-1.0, 0, 0], [-1.0, 0.1, 0]])),
                               [[319.5, 239.5], [319.5, 239.5 + 500 * 0.1 / 6]], atol=1e-9)
    assert (cam.width_px, cam.height_px) == (640, 480)
    again = lab.read_calibration(_written(tmp_path, lab.calibration_toml([cam])))["front"]
    np.testing.assert_allclose(again.R, cam.R, atol=1e-12)
    np.testing.assert_allclose(again.K, cam.K) and np.testing.assert_allclose(again.t_m, cam.t_m)


def _written(folder: Path, text: str) -> Path:
    path = folder / "again.toml"
    path.write_text(text)
    return path


def test_the_readmes_example_calibration_means_what_it_says(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Your own lab's data"):]
    block = section[section.index("[cam_01]"):]
    path = tmp_path / "calibration.toml"
    path.write_text(block[:block.index("```")])
    cams = lab.read_calibration(path)
    assert set(cams) == {"cam1", "cam2"}
    for name, centre, forward in (("cam1", [4.2, 1.2, 0.0], [-1.0, 0, 0]), ("cam2", [0.0, 1.2, 4.6], [0, 0, -1.0])):
        cam = cams[name]
        np.testing.assert_allclose(cam.centre_m, centre, atol=1e-5)
        np.testing.assert_allclose(cam.R[2], forward, atol=1e-5)  # the optical axis, in world axes
        np.testing.assert_allclose(cam.R[1], [0, -1.0, 0], atol=1e-5)  # image down is world down
        np.testing.assert_allclose(cam.project(np.array([0.0, 1.2, 0.0])), cam.K[:2, 2], atol=1e-3)
        assert (cam.width_px, cam.height_px) == (1920, 1080)


def test_verify_records_and_checks_lab_files_where_the_lab_root_is_now(two_subjects, tmp_path, monkeypatch, capsys):
    from d3ke_assets.cli import main

    data_root, root = two_subjects
    data_root.mkdir()
    bad = root / "Subject_2" / lab.SUBJECT_FILE
    bad.write_text(bad.read_text().replace("mass_kg", "weight_kg"))
    monkeypatch.setenv("D3KE_DATASET", "lab")
    monkeypatch.setenv("D3KE_LAB_ROOT", str(root))
    assert main(["verify", "--data-root", str(data_root), "--write-manifest"]) == 0
    captured = capsys.readouterr()
    assert "wrote 1 manifest(s)" in captured.out and f"skipped: {bad}: no mass_kg" in captured.err
    moved = tmp_path / "mounted" / "lab"
    moved.parent.mkdir()
    shutil.move(root, moved)
    monkeypatch.setenv("D3KE_LAB_ROOT", str(moved))
    assert main(["verify", "--data-root", str(data_root)]) == 0
    assert "all 6 raw files of 1 subjects match" in capsys.readouterr().out  # 2 .toml, 2 .trc, 2 videos
    video = moved / "Subject_1" / "videos" / "walking_PG2.mp4"
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF
    video.write_bytes(bytes(data))
    assert main(["verify", "--data-root", str(data_root)]) == 1
    assert f"corrupt {video}" in capsys.readouterr().out


def test_timed_trials_with_an_ik_rate_solve_the_grid_too(timed, generic_model):
    """ik_rate "50": IK also on a 50 Hz grid of the capture; the labels stay the video frames'."""
    base, labels, names = timed
    result = gt.compute_subject(base / "mocap", generic_model[0], base / "gt50", gt.GroundTruthConfig(ik_rate="50"))
    again, _ = gt.load_labels(base / "gt50")
    np.testing.assert_array_equal(again["video_frame"], labels["video_frame"])
    np.testing.assert_allclose(again["time_s"], labels["time_s"])
    # the legs' and pelvis' coordinates, which the markers determine well (arm rotations differ with
    # IK's start pose, the previous frame solved)
    legs = [names["coordinates"].index(c) for c in LOWER_BODY]
    d_legs = np.degrees(np.abs(again["coordinates"][:, legs] - labels["coordinates"][:, legs]).max())
    print(f"ik_rate 50 against video-only IK: legs and pelvis max {d_legs:.3f} deg")
    assert d_legs <= 1.0  # hip rotation: an axis the markers determine weakly
    for outcome in result.trials:
        solved = read_trc(base / "gt50" / "ik" / outcome.name / f"{outcome.name}.trc").time_s
        grid = np.arange(CAPTURE_START_S, 1.36 + 1e-9, 0.02)
        video = CLOCK_OFFSET_S + np.arange(1, 30) / 30.0
        expected = np.union1d(video, grid[np.abs(grid[:, None] - video[None]).min(axis=1) > 1e-5])
        np.testing.assert_allclose(solved, expected, atol=1e-6)
        assert outcome.n_ik_frames == len(expected)


def test_frames_of_timed_trials_are_the_labelled_video_frames(timed, smoke_frames, smoke_subject):
    """Frame 0 (before the capture) is left out; frame k is cropped where the synthetic path crops its frame k."""
    base, labels, names = timed
    cameras = raw.camera_videos(base / "data", KEY, lab_root=base / "lab")
    out = base / "frames"
    out.mkdir()
    fp.process_subject(KEY, cameras, labels, names, base / "gt" / "labels.npz", out, 64)
    ours = fp.read_index(out).to_pandas()
    assert len(ours) == 2 * len(TIMED_TRIALS) * 29
    theirs = fp.read_index(smoke_frames["base"] / "frames").to_pandas()
    starts = {t["name"]: t["video_start_frame"] for t in synthetic.load_subject_facts(smoke_subject)["trials"]
              if "video_start_frame" in t}
    for (cam, trial), rows in ours.groupby(["camera", "trial"]):
        assert rows["frame"].tolist() == list(range(1, 30))
        match = theirs[(theirs.camera == cam) & theirs.frame.isin(rows["frame"] + starts[trial])].sort_values("frame")
        for col in ("box_x0_px", "box_y0_px", "box_size_px"):
            assert np.abs(rows[col].to_numpy() - match[col].to_numpy()).max() <= 2, (cam, trial, col)


def test_markers_outside_the_capture_are_refused_in_one_line(tmp_path):
    from d3ke_assets.biomech.trials import markers_at_times

    markers = MarkerTrajectories(["A"], np.array([0.5, 0.51, 0.52]), np.arange(9.0).reshape(3, 1, 3) / 10, 100.0)
    at = markers_at_times(markers, np.array([0.5, 0.505, 0.5200001]), tmp_path / "t.trc")
    np.testing.assert_allclose(at.positions_m[:, 0], [[0, 0.1, 0.2], [0.15, 0.25, 0.35], [0.6, 0.7, 0.8]])
    with pytest.raises(D3keError) as exc:
        markers_at_times(markers, np.array([0.49, 0.5]), tmp_path / "t.trc")
    assert str(exc.value).startswith(f"{tmp_path / 't.trc'}: the capture covers 0.5-0.52 s") and \
        "video_start_time_s" in str(exc.value) and "\n" not in str(exc.value)
