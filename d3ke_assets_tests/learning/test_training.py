"""The frame model and its training loop: schedule, resume, NaN guard, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.errors import D3keError
from d3ke_assets.frames.augmentations import train_augment
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning import training as T
from d3ke_assets.learning.model import FrameModel, rotation_6d_to_matrix


@pytest.fixture(scope="module")
def frames_dir(smoke_frames):
    return smoke_frames["base"] / "frames"


def _config(**kw):
    base = dict(backbone="mobilenet_v3_small", epochs=2, batch_size=16, num_workers=0, seed=3)
    return T.TrainConfig(**{**base, **kw})


def _model(generic_model, backbone="mobilenet_v3_small"):
    torch.manual_seed(0)
    return FrameModel(SkeletalModel.from_osim(generic_model[0]), backbone)


def test_the_papers_learning_rate_schedule():
    c = T.TrainConfig(epochs=30)
    assert math.isclose(T.learning_rate(c, 0), 5e-4)
    assert math.isclose(T.learning_rate(c, 27.9999), 3.33e-5, rel_tol=1e-3)
    assert math.isclose(T.learning_rate(c, 28), 3.33e-6)
    assert math.isclose(T.learning_rate(c, 29.9999), 1e-6, rel_tol=1e-3)
    assert math.isclose(T.learning_rate(c, 14), math.sqrt(5e-4 * 3.33e-5), rel_tol=1e-6)  # exponential


def test_6d_rotation_is_a_rotation_and_the_head_starts_at_identity(generic_model):
    r = rotation_6d_to_matrix(torch.randn(5, 6))
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(r), torch.ones(5), atol=1e-5)
    model = _model(generic_model)
    torch.nn.init.zeros_(model.head.weight)
    out = model(torch.zeros(2, 3, 64, 64))
    assert torch.allclose(out["pelvis_rotation"], torch.eye(3).expand(2, 3, 3), atol=1e-6)
    lo = model.range_lo
    assert torch.allclose(out["coordinates"][:, model.predicted], lo + model.range_span / 2)  # sigmoid(0)
    assert out["markers_m"].shape == (2, len(model.layer.marker_names), 3)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_a_killed_training_resumes_from_its_checkpoint_and_ends_where_an_unbroken_one_does(
        frames_dir, generic_model, tmp_path, ema_decay):
    train = FrameDataset([frames_dir], used_only=False, cameras=("PG1",))
    val = FrameDataset([frames_dir], used_only=False, cameras=("PG2",))
    config = _config(ema_decay=ema_decay)
    unbroken = _model(generic_model)
    history = T.train_frame_model(unbroken, train, val, config, tmp_path / "a", log=lambda m: None)
    assert [h.epoch for h in history] == [0, 1]

    def killed(record):
        raise KeyboardInterrupt("killed after the first epoch")

    with pytest.raises(KeyboardInterrupt):
        T.train_frame_model(_model(generic_model), train, val, config, tmp_path / "b", log=lambda m: None,
                            on_epoch=killed)
    saved = T.load_checkpoint(tmp_path / "b" / T.CHECKPOINT)
    assert saved["epoch"] == 0 and saved["optimizer"]["state"]  # AdamW moments are in the checkpoint
    messages = []
    resumed_model = _model(generic_model)
    resumed = T.train_frame_model(resumed_model, train, val, config, tmp_path / "b", log=messages.append)
    assert any("resuming" in m and "after epoch 1" in m for m in messages)
    assert [h.epoch for h in resumed] == [0, 1]
    assert resumed[0].train_loss == history[0].train_loss
    for (name, a), (_, b) in zip(unbroken.state_dict().items(), resumed_model.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name
    # the weights predictions use: the average (resumed with its own state) when there is one
    final_a, final_b = (T.load_checkpoint(tmp_path / d / T.CHECKPOINT) for d in ("a", "b"))
    for name, a in final_a["model"].items():
        assert torch.allclose(a.float(), final_b["model"][name].float(), atol=1e-5), name
    differs = any(not torch.equal(a, unbroken.state_dict()[n]) for n, a in final_a["model"].items())
    assert differs == bool(ema_decay), "the checkpoint keeps the average, and only when asked to"


def test_the_weight_average_is_an_exponential_moving_average_of_weights_and_batchnorm_statistics():
    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    assert T.weight_average(net, 0.0) is None
    with pytest.raises(D3keError, match="ema_decay=1.5"):
        T.weight_average(net, 1.5)
    average = T.weight_average(net, 0.75)
    for value in (4.0, 8.0, 0.0):  # the first update copies; then avg = 0.75 avg + 0.25 new
        with torch.no_grad():
            net[0].weight.fill_(value)
            net[1].running_mean.fill_(-value)
        average.update_parameters(net)
    expected = 0.75 * (0.75 * 4.0 + 0.25 * 8.0) + 0.25 * 0.0  # 3.75
    assert average.module[0].weight.item() == pytest.approx(expected)
    assert average.module[1].running_mean.item() == pytest.approx(-expected)


def test_a_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(frames_dir, generic_model, tmp_path,
                                                                            monkeypatch):
    train = FrameDataset([frames_dir], used_only=False, cameras=("PG1",))
    val = FrameDataset([frames_dir], used_only=False, cameras=("PG2",))
    def killed(record):
        raise KeyboardInterrupt("killed after the first epoch")

    with pytest.raises(KeyboardInterrupt):
        T.train_frame_model(_model(generic_model), train, val, _config(), tmp_path, log=lambda m: None,
                            on_epoch=killed)
    good = (tmp_path / T.CHECKPOINT).read_bytes()
    original = T.d3ke_loss

    def nan_loss(*args, **kwargs):
        loss, terms = original(*args, **kwargs)
        return loss * float("nan"), terms

    monkeypatch.setattr(T, "d3ke_loss", nan_loss)
    with pytest.raises(D3keError, match=r"the loss became nan at epoch 2, step 1: lower lr_start .* is kept"):
        T.train_frame_model(_model(generic_model), train, val, _config(), tmp_path, log=lambda m: None)
    assert (tmp_path / T.CHECKPOINT).read_bytes() == good


def test_bad_training_input_says_what_to_change(frames_dir, generic_model, tmp_path):
    train = FrameDataset([frames_dir], used_only=False, cameras=("PG1",))
    empty = FrameDataset([frames_dir], used_only=False, cameras=("PG9",))
    with pytest.raises(D3keError, match="no training frames: materialize frames for the train subjects"):
        T.train_frame_model(_model(generic_model), empty, train, _config(), tmp_path)
    with pytest.raises(D3keError, match="the validation set is empty"):
        T.train_frame_model(_model(generic_model), train, empty, _config(), tmp_path)
    with pytest.raises(D3keError, match="backbone 'resnet1000' does not exist: use one of"):
        _model(generic_model, "resnet1000")
    with pytest.raises(D3keError, match="nothing is downloaded at run time"):
        FrameModel(SkeletalModel.from_osim(generic_model[0]), "resnet18", tmp_path / "absent.pth")


def test_camera_frame_targets_match_the_labels_geometry(frames_dir, generic_model):
    """Rotating the labels into a camera keeps pelvis-relative distances (a rigid motion)."""
    from d3ke_assets.learning.model import camera_frame_targets

    ds = FrameDataset([frames_dir], used_only=False)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    layer = SkeletalModel.from_osim(generic_model[0])
    targets = camera_frame_targets(batch, batch["camera_R"], layer)
    world = batch["markers_m"].view(4, -1, 3) - batch["pelvis_origin_m"].view(4, 1, 3)
    assert torch.allclose(targets["markers_m"].norm(dim=-1), world.norm(dim=-1), atol=1e-5)
    assert np.allclose(torch.det(targets["pelvis_rotation"]).numpy(), 1.0, atol=1e-4)


def test_augmentation_turns_labels_with_the_image():
    """A dot drawn where a camera-frame point projects moves, under the augmentation's in-plane
    rotation, to where the augmented label projects (pinhole centred on the crop)."""
    size, f = 65, 40.0
    centre = (size - 1) / 2
    point = torch.tensor([0.5, 0.2, 2.0])  # camera frame: right, down, ahead
    u, v = centre + f * point[0] / point[2], centre + f * point[1] / point[2]
    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    image[0, :, int(round(v.item())), int(round(u.item()))] = 255
    config = T.TrainConfig(max_shift=0.0, max_scale=0.0, max_rotation_deg=40.0, colour=0.0)
    for seed in range(4):
        out, R, mirrored = train_augment(image, torch.eye(3).unsqueeze(0), config, torch.Generator().manual_seed(seed))
        assert not mirrored.any()  # the current policy never mirrors
        moved = R[0] @ point
        expected = centre + f * moved[0] / moved[2], centre + f * moved[1] / moved[2]
        ys, xs = torch.nonzero(out[0, 0] > 40, as_tuple=True)
        found = xs.float().mean(), ys.float().mean()
        assert abs(found[0] - expected[0]) < 1.0 and abs(found[1] - expected[1]) < 1.0, (seed, found, expected)


def test_a_checkpoint_of_other_code_or_data_is_not_resumed(frames_dir, generic_model, tmp_path):
    train = FrameDataset([frames_dir], used_only=False, cameras=("PG1",))
    val = FrameDataset([frames_dir], used_only=False, cameras=("PG2",))
    T.train_frame_model(_model(generic_model), train, val, _config(epochs=1), tmp_path, log=lambda m: None,
                        resume_key="inputs v1")
    messages = []
    history = T.train_frame_model(_model(generic_model), train, val, _config(epochs=1), tmp_path,
                                  log=messages.append, resume_key="inputs v2")
    assert any("another configuration: starting over" in m for m in messages) and len(history) == 1


def test_bench_train_times_the_trainings_own_step(frames_dir, generic_model, monkeypatch):
    """`d3ke bench train` runs `train_step`, the function `fit` runs, once per step (one warm-up step
    more), and that step trains: the weights change."""
    from d3ke_assets.benchmarks.stages import _train_steps

    calls = []
    real = T.train_step

    def counted(*args, **kwargs):
        calls.append(args[1]["image"].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "train_step", counted)
    model = _model(generic_model)
    before = model.head.weight.detach().clone()
    images_per_s, wait = _train_steps(model, FrameDataset([frames_dir], used_only=False), _config(batch_size=4), 2)
    assert calls == [4, 4, 4]
    assert images_per_s > 0 and 0 <= wait < 1
    assert not torch.equal(model.head.weight.detach(), before)
