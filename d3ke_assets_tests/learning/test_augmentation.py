"""Train-time augmentation policies: mirrored samples get mirrored labels that land on the mirrored
body, draws follow the policy, and the sequence model's passes keep one draw per video."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.errors import D3keError
from d3ke_assets.frames import augmentations as A
from d3ke_assets.frames import processing as fp
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning import training as T
from d3ke_assets.learning.mirror import Mirror
from d3ke_assets.learning.model import camera_frame_targets
from d3ke_assets.sources import synthetic

CROP = 64


@pytest.fixture(scope="module")
def layer(generic_model):
    return SkeletalModel.from_osim(generic_model[0])


def _draws(b: int, flip: bool, resize: float = 1.0, angle: float = 0.0) -> A.TrainDraws:
    one, zero = torch.ones(b), torch.zeros(b)
    return A.TrainDraws(angle_deg=zero + angle, zoom=one, shift_x=zero, shift_y=zero, brightness=one, contrast=one,
                        flip=torch.full((b,), flip), resize=one * resize)


def _mirrored_pinhole(cam, points_cam: np.ndarray) -> np.ndarray:
    """Pixels of camera-frame points in the horizontally flipped video frame: the mirror image of the
    scene (camera x reflected) seen through the camera with its principal point flipped too."""
    assert not np.any(cam.dist), "the synthetic cameras have no lens distortion"
    K = cam.K
    x, y = points_cam[:, 0] / points_cam[:, 2], points_cam[:, 1] / points_cam[:, 2]
    u = K[0, 0] * x - K[0, 1] * y + (cam.width_px - 1 - K[0, 2])
    v = K[1, 1] * y + K[1, 2]
    return np.stack([u, v], axis=1)


def test_mirrored_samples_labels_land_on_the_mirrored_body(smoke_frames, layer):
    """A flipped (and downscaled) crop shows the mirror image of the scene.  The augmented labels,
    placed at the mirrored pelvis and projected through the mirrored camera (an independent route:
    geometry, not the mirror's name pairs), fall inside the crop and their joint centres on body
    pixels; the mirrored right knee lands where the picture shows the flipped left knee; the
    samples not drawn for mirroring keep their labels."""
    ds = FrameDataset([smoke_frames["base"] / "frames"], used_only=False)
    by_cam = {c.name: c for c in smoke_frames["cameras"]}
    rooms = {c.name: (synthetic.background_for(c.camera, 0, "Subject_1") * 255).clip(0, 255).astype(np.uint8)
             for c in smoke_frames["cameras"]}
    rows = np.linspace(0, len(ds) - 1, 8).astype(int)
    batch = torch.utils.data.default_collate([ds[int(i)] for i in rows])
    draws = _draws(len(rows), True, resize=0.5)
    draws.flip[::4] = False  # some samples stay as they are
    images, camera_R, mirrored = A.apply_train_augmentation(batch["image"], batch["camera_R"], draws)
    assert torch.equal(mirrored, draws.flip)
    mirror = Mirror.for_layer(layer)
    targets = mirror.camera_targets(camera_frame_targets(batch, camera_R, layer), mirrored)
    plain = camera_frame_targets(batch, camera_R, layer)
    joints = [list(layer.joint_names).index(j) for j in ("ground_pelvis", "knee_r", "knee_l")]
    knee_r, knee_l = joints[1], joints[2]
    checked = 0
    for k, i in enumerate(rows):
        if not mirrored[k]:
            assert all(torch.equal(targets[key][k], plain[key][k]) for key in plain)
            assert bool(targets["marker_mask"][k].all())
            continue
        cam = ds.camera_model(int(i))
        x0, y0, size = (float(v) for v in ds.box[i])
        flipped_box = np.array([cam.width_px - x0 - size, y0, size])
        pelvis_cam = cam.to_camera(ds.labels["pelvis_origin_m"][i].reshape(3).astype(float))
        pelvis_mirrored = pelvis_cam * np.array([-1.0, 1.0, 1.0])
        to_crop = lambda pts: fp.to_crop_px(_mirrored_pinhole(cam, pelvis_mirrored + pts), flipped_box, CROP)  # noqa: E731
        markers = to_crop(targets["markers_m"][k].double().numpy())
        assert np.all((markers > 0) & (markers < CROP - 1)), i
        image = images[k].permute(1, 2, 0).numpy().astype(float)
        room = torch.from_numpy(np.array(Image.open(io.BytesIO(fp.crop_to_jpeg(rooms[ds.camera[i]], ds.box[i],
                                                                              CROP))))).permute(2, 0, 1)
        room = A.resize_through(A.flip(room), 0.5).permute(1, 2, 0).numpy().astype(float)  # as the crop was
        uv = to_crop(targets["joint_centres_m"][k][joints].double().numpy())
        for u, v in np.round(uv).astype(int):
            difference = np.abs(image[v - 1:v + 2, u - 1:u + 2] - room[v - 1:v + 2, u - 1:u + 2]).mean()
            assert difference > 10, (i, difference)  # the room differs by a few levels, the body by ~20+
            checked += 1
        # the left knee as the original camera sees it, its crop column flipped
        original = fp.to_crop_px(cam.project(ds.labels["joint_centres_m"][i].reshape(-1, 3)[[knee_l]].astype(float)),
                                 ds.box[i].astype(float), CROP)[0]
        assert np.allclose(uv[1], [CROP - 1 - original[0], original[1]], atol=0.05), (uv[1], original)
        assert not bool(targets["marker_mask"][k][~torch.from_numpy(mirror.marker_paired)].any())
    assert checked == 3 * int(mirrored.sum()) > 0
    assert knee_r != knee_l


def test_mirrored_targets_are_the_mirrors_numpy_labels(smoke_frames, layer):
    """The torch mirroring of training targets gives what `camera_labels` (checked against the skeletal
    layer in test_mirror) gives, row by row."""
    ds = FrameDataset([smoke_frames["base"] / "frames"], used_only=False)
    batch = torch.utils.data.default_collate([ds[i] for i in range(6)])
    targets = camera_frame_targets(batch, batch["camera_R"], layer)
    mirror = Mirror.for_layer(layer)
    rows = torch.tensor([True, False, True, True, False, False])
    out = mirror.camera_targets(targets, rows)
    keys = ("coordinates", "coordinate_mask", "scale_factors", "markers_m", "joint_centres_m", "pelvis_rotation")
    expected = mirror.camera_labels({k: targets[k].double().numpy() for k in keys})
    for key in keys:
        want = np.where(rows.numpy().reshape(-1, *[1] * (expected[key].ndim - 1)), expected[key],
                        targets[key].double().numpy())
        assert np.allclose(out[key].double().numpy(), want, atol=1e-6), key


def test_a_dot_turned_then_mirrored_lands_where_its_label_projects():
    """The rotation and the mirror compose as the labels do: rotate the camera-frame point with the
    picture, then reflect the camera's x (pinhole centred on the crop)."""
    size, f = 65, 40.0
    centre = (size - 1) / 2
    point = torch.tensor([0.5, 0.2, 2.0])
    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    v, u = int(round((centre + f * point[1] / point[2]).item())), int(round((centre + f * point[0] / point[2]).item()))
    image[0, :, v - 1:v + 2, u - 1:u + 2] = 255  # 3 x 3: nearest-neighbour rotation can miss a single pixel
    mirror = Mirror.for_names([], [], [], ["C7"])  # a marker without a side: reflected only
    for angle in (-30.0, 25.0):
        out, R, mirrored = A.apply_train_augmentation(image, torch.eye(3).unsqueeze(0), _draws(1, True, angle=angle))
        target = {"coordinates": torch.zeros(1, 0), "coordinate_mask": torch.zeros(1, 0),
                  "scale_factors": torch.zeros(1, 0, 3), "markers_m": (R[0] @ point).view(1, 1, 3),
                  "joint_centres_m": torch.zeros(1, 0, 3), "pelvis_rotation": torch.eye(3).unsqueeze(0)}
        moved = mirror.camera_targets(target, mirrored)["markers_m"][0, 0]
        expected = centre + f * moved[0] / moved[2], centre + f * moved[1] / moved[2]
        ys, xs = torch.nonzero(out[0, 0] > 40, as_tuple=True)
        assert abs(xs.float().mean() - expected[0]) < 1.0 and abs(ys.float().mean() - expected[1]) < 1.0, angle


def test_the_current_policy_draws_nothing_new_and_robust_covers_the_test_severities():
    current = T.TrainConfig()
    robust = T.TrainConfig(augment_policy="robust")
    d = A.draw_train_augmentation(4000, current, torch.Generator().manual_seed(0))
    assert not d.flip.any() and bool((d.resize == 1).all())
    assert float(d.shift_x.abs().max()) <= current.max_shift and float(d.brightness.max()) <= 1 + current.colour
    # the robust policy's first draws are the current policy's: a training's shared draws do not move
    r = A.draw_train_augmentation(4000, robust, torch.Generator().manual_seed(0))
    assert torch.equal(r.angle_deg, d.angle_deg)
    p = A.POLICIES["robust"]
    assert abs(float(r.flip.float().mean()) - p.flip_probability) < 0.03
    assert float(r.resize.min()) < min(A.AUGMENTATIONS["resize"])  # resolution loss beyond the test's 0.25
    assert float(r.shift_x.max()) > max(A.AUGMENTATIONS["crop"])  # box offsets beyond the test's 0.2
    assert float(r.zoom.max()) > 1 + 1.5 * max(A.AUGMENTATIONS["crop"])
    assert float(r.brightness.max()) > max(A.AUGMENTATIONS["brightness"])
    assert float(r.contrast.max()) > max(A.AUGMENTATIONS["contrast"])
    with pytest.raises(D3keError, match="augmentation policy 'strong' does not exist: use one of current, robust"):
        A.draw_train_augmentation(2, T.TrainConfig(augment_policy="strong"), torch.Generator())


def test_the_sequence_models_passes_keep_one_draw_per_video(smoke_frames, generic_model):
    """Every frame of a video is augmented alike in a pass (all mirrored or none, one camera rotation);
    passes differ; the windows of a SequenceDataset carry their pass's mirroring and rotation."""
    from d3ke_assets.learning import sequence as S
    from d3ke_assets.learning.model import FrameModel

    frames = FrameDataset([smoke_frames["base"] / "frames"], used_only=False)
    torch.manual_seed(0)
    model = FrameModel(SkeletalModel.from_osim(generic_model[0]), "mobilenet_v3_small")
    config = S.frame_draw_config(T.TrainConfig(backbone="mobilenet_v3_small").as_dict(), "robust")
    passes = S.augmented_passes(model, frames, config, copies=4, seed=1)
    groups = S.video_groups(frames)
    assert len(set(groups.tolist())) == len(set(zip(frames.trial.tolist(), frames.camera.tolist())))
    for p in passes:
        for g in set(groups.tolist()):
            rows = groups == g
            assert len(set(p.mirrored[rows].tolist())) == 1
            assert np.allclose(p.camera_R[rows] @ np.swapaxes(frames.camera_R[rows], 1, 2),
                               (p.camera_R[rows] @ np.swapaxes(frames.camera_R[rows], 1, 2))[0], atol=1e-5)
    flags = np.stack([p.mirrored for p in passes])
    assert flags.any() and not flags.all()  # drawn, not fixed
    assert not np.allclose(passes[0].head_outputs, passes[1].head_outputs)
    data = S.SequenceDataset(None, frames, 3, used_only=False, passes=passes)
    torch.manual_seed(0)
    seen = set()
    for i in range(40):
        item = data[i % len(data)]
        row = int(item["index"])
        k = next(k for k, p in enumerate(passes) if torch.equal(item["window"][1], torch.from_numpy(p.head_outputs[row])))
        assert bool(item["mirrored"]) == bool(passes[k].mirrored[row])
        assert np.allclose(item["camera_R"].numpy(), passes[k].camera_R[row])
        seen.add(k)
    assert len(seen) > 1
