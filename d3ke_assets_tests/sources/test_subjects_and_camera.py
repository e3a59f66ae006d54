"""Subject split, key validation and camera geometry against hand-computed cases."""

import numpy as np
import pytest

from d3ke_assets.errors import D3keError
from d3ke_assets.sources.camera import Camera, camera_from_movi, look_at_camera
from d3ke_assets.sources.subjects import movi_split, split_for, subject_id, synthetic_split


def test_movi_split_is_the_published_one():
    split = movi_split()
    assert (len(split.train), len(split.validation), len(split.test)) == (67, 4, 18)
    assert "Subject_12" not in split.all
    assert not (set(split.train) & set(split.test)) and not (set(split.train) & set(split.validation))
    with pytest.raises(D3keError, match="Subject_12"):
        split.check("Subject_12")


def test_synthetic_split_has_every_role():
    split = synthetic_split(8)
    assert (len(split.train), len(split.validation), len(split.test)) == (5, 1, 2)
    assert split.all == tuple(f"Subject_{i}" for i in range(1, 9))
    assert synthetic_split(3).validation == ("Subject_2",)


@pytest.mark.parametrize("bad", ["../x", "Subject_1/..", "Subject_01", "subject_1", "Subject_1 ", ""])
def test_crafted_subject_keys_are_rejected(bad):
    with pytest.raises(D3keError):
        subject_id(bad)


def test_projection_of_hand_computed_points():
    # camera 5 m in front (on +x), looking back at the origin, 100 px focal length
    cam = look_at_camera("PG1", (5, 1, 0), (0, 1, 0), 200, 100, vertical_fov_deg=2 * np.degrees(np.arctan(0.5)))
    assert cam.K[0, 0] == pytest.approx(100)
    # the target projects to the image centre (OpenCV: pixel i is centred at i, so (w-1)/2);
    # +z (the subject's right) appears on the image left
    np.testing.assert_allclose(cam.project(np.array([0, 1, 0])), [99.5, 49.5], atol=1e-9)
    np.testing.assert_allclose(cam.project(np.array([0, 1, 1])), [99.5 - 100 * 1 / 5, 49.5], atol=1e-9)
    np.testing.assert_allclose(cam.project(np.array([0, 2, 0])), [99.5, 49.5 - 100 / 5], atol=1e-9)
    assert np.isnan(cam.project(np.array([6.0, 1, 0]))).all()  # behind the camera
    rays = cam.pixel_rays()
    # the ray through a pixel's centre projects back onto that pixel
    for v, u in ((0, 0), (49, 99), (99, 199), (10, 150)):
        np.testing.assert_allclose(cam.project(cam.centre_m + 3.0 * rays[v, u]), [u, v], atol=1e-9)


def test_camera_json_round_trip(tmp_path):
    cam = look_at_camera("PG2", (0.4, 1.3, 5.0), (0, 0.9, 0), 320, 240, 36.0)
    cam.write_json(tmp_path / "PG2.json")
    back = Camera.from_json(tmp_path / "PG2.json")
    pts = np.random.default_rng(0).uniform(-1, 1, (20, 3)) + [0, 1, 0]
    np.testing.assert_allclose(back.project(pts), cam.project(pts), atol=1e-9)
    with pytest.raises(D3keError, match="missing"):
        Camera.from_json(tmp_path / "PG9.json")


def test_movi_camera_conventions(tmp_path):
    """MATLAB stores K transposed, row-vector extrinsics in mm and a z-up world."""
    K = np.array([[500.0, 0, 400], [0, 500, 300], [0, 0, 1]])
    np.savez(tmp_path / "cameraParams_PG1.npz", IntrinsicMatrix=K.T, RadialDistortion=np.zeros(2),
             TangentialDistortion=np.zeros(2))
    # MoVi world z-up; a camera 4000 mm along -y_movi looking along +y_movi, image y down = -z_movi
    R_cols = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # x_cam = R_cols @ X_movi
    t_mm = np.array([0, 0, 4000.0])
    np.savez(tmp_path / "Extrinsics_PG1.npz", rotationMatrix=R_cols.T, translationVector=t_mm)
    cam = camera_from_movi("PG1", tmp_path / "cameraParams_PG1.npz", tmp_path / "Extrinsics_PG1.npz")
    # MoVi point (0, 0, 1 m up) is OpenSim ground (0, 1, 0): 1 m above the optical axis at 4 m
    np.testing.assert_allclose(cam.project(np.array([0, 1.0, 0])), [399, 299 - 500 / 4], atol=1e-9)


def test_synthetic_subject_count_override():
    from d3ke_assets import settings

    run = settings.Settings.from_environment({"D3KE_PRESET": "smoke", "D3KE_SYNTHETIC_SUBJECTS": "90"})
    preset = run.preset_settings()
    assert preset.synthetic.n_subjects == 90
    assert preset.synthetic.trial_seconds == settings.PRESETS["smoke"].synthetic.trial_seconds
    split = split_for("synthetic", preset.synthetic.n_subjects)
    assert len(split.all) == 90 and split.all[-1] == "Subject_90"
    with pytest.raises(D3keError, match="D3KE_SYNTHETIC_SUBJECTS='two'"):
        settings.Settings.from_environment({"D3KE_SYNTHETIC_SUBJECTS": "two"})
    with pytest.raises(D3keError, match="at least 3"):
        settings.Settings.from_environment({"D3KE_SYNTHETIC_SUBJECTS": "2"})
