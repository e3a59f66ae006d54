"""The temporal stage: windows, the variants, and that it learns to refine noisy per-frame outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.errors import D3keError
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning import sequence as S
from d3ke_assets.learning.model import SCALE_RANGE, FrameModel, camera_frame_targets, predicted_coordinates
from d3ke_assets.learning.metrics import coordinate_mae_deg


@pytest.fixture(scope="module")
def frames_dir(smoke_frames):
    return smoke_frames["base"] / "frames"


@pytest.fixture(scope="module")
def layer(generic_model):
    return SkeletalModel.from_osim(generic_model[0])


class _Rows:
    """The columns of a FrameDataset that windows are made of."""

    def __init__(self, rows):
        self.folder_index = np.array([r[0] for r in rows])
        self.trial = np.array([r[1] for r in rows], dtype=object)
        self.camera = np.array([r[2] for r in rows], dtype=object)
        self.frame = np.array([r[3] for r in rows])

    def __len__(self):
        return len(self.frame)


def test_windows_stay_in_their_trial_and_camera_and_repeat_the_edges():
    # shuffled rows of two trials x two cameras; trial "b" has frames 10..12, trial "a" 0..3
    rows = [(0, "b", "PG1", 11), (0, "a", "PG2", 1), (0, "a", "PG1", 0), (0, "a", "PG1", 2), (0, "b", "PG1", 10),
            (0, "a", "PG1", 1), (0, "a", "PG1", 3), (0, "b", "PG1", 12), (0, "a", "PG2", 0)]
    w = S.window_rows(_Rows(rows), 5)
    assert w.shape == (9, 5)
    frame = lambda r: rows[r][3]  # noqa: E731
    # a, PG1, frame 1 (row 5): frames -1..3 -> 0 0 1 2 3
    assert [frame(r) for r in w[5]] == [0, 0, 1, 2, 3]
    assert all(rows[r][1:3] == ("a", "PG1") for r in w[5])
    # b, PG1, frame 12 (row 7): 10 11 12 12 12
    assert [frame(r) for r in w[7]] == [10, 11, 12, 12, 12]
    # a, PG2 has two frames: row 1 (frame 1) -> 0 0 0 1 1... i.e. frames -1..3 clipped to 0..1
    assert [frame(r) for r in w[1]] == [0, 0, 1, 1, 1]
    assert all(rows[r][2] == "PG2" for r in w[1])
    assert (w[:, 2] == np.arange(9)).all()  # the centre is the frame itself


def test_bad_sequence_settings_say_what_to_change(layer):
    with pytest.raises(D3keError, match="variant 'gru' does not exist: use one of tcn, lstm, transformer"):
        S.SequenceModel(layer, S.SequenceConfig(variant="gru"))
    with pytest.raises(D3keError, match="receptive_field 100 must be a positive odd number"):
        S.SequenceModel(layer, S.SequenceConfig(variant="lstm", receptive_field=100))
    with pytest.raises(D3keError, match="receptive_field 25 is not a power of 3"):
        S.SequenceModel(layer, S.SequenceConfig(variant="tcn", receptive_field=25))


@pytest.mark.parametrize("variant, rf", [("tcn", 27), ("lstm", 9), ("transformer", 9)])
def test_an_untrained_sequence_model_is_the_frame_model_and_every_frame_of_the_window_counts(
        layer, generic_model, variant, rf):
    torch.manual_seed(0)
    frame = FrameModel(layer, "mobilenet_v3_small").eval()
    images = torch.randn(rf, 3, 64, 64)
    with torch.no_grad():
        outputs = frame.head_outputs(images)
        model = S.SequenceModel(layer, S.SequenceConfig(variant=variant, receptive_field=rf, hidden=32)).eval()
        seq = model(outputs[None])
        direct = frame(images[rf // 2:rf // 2 + 1])
        for k in ("coordinates", "scale_factors", "markers_m", "pelvis_rotation"):
            assert torch.allclose(seq[k], direct[k], atol=1e-5), k
        torch.nn.init.normal_(model.correction.weight, std=0.1)
        base = model(outputs[None])["coordinates"]
        for edge in (0, rf - 1):  # the first and the last frame of the window both move the result
            changed = outputs.clone()
            changed[edge] += 1.0
            assert not torch.allclose(model(changed[None])["coordinates"], base)


def _ideal_head_outputs(frames: FrameDataset, layer: SkeletalModel) -> np.ndarray:
    """The head outputs that decode exactly to the labels (the inverse of the sigmoid mappings)."""
    predicted, lo, span = predicted_coordinates(layer)
    q = frames.labels["coordinates"][:, predicted]
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    u_q = logit(np.clip((q - lo.numpy()) / span.numpy(), 1e-4, 1 - 1e-4))
    s_lo, s_hi = SCALE_RANGE
    u_s = logit(np.clip((frames.labels["scale_factors"] - s_lo) / (s_hi - s_lo), 1e-4, 1 - 1e-4))
    batch = {k: torch.from_numpy(v) for k, v in frames.labels.items()}
    R = camera_frame_targets(batch, torch.from_numpy(frames.camera_R), layer)["pelvis_rotation"].numpy()
    six = np.concatenate([R[:, :, 0], R[:, :, 1]], axis=1)  # the two columns rotation_6d_to_matrix rebuilds
    return np.concatenate([u_q, u_s, six], axis=1).astype(np.float32)


def test_the_sequence_model_learns_to_refine_noisy_frame_outputs(frames_dir, layer, tmp_path):
    """Known truth: inputs are the labels' own head outputs plus independent per-frame noise, as a
    frame model's errors are; over a window the sequence model must beat the noisy centre frame."""
    train_frames = FrameDataset([frames_dir], used_only=False, cameras=("PG1",))
    test_frames = FrameDataset([frames_dir], used_only=False, cameras=("PG2",))
    rng = np.random.default_rng(0)

    def noisy(frames):
        ideal = _ideal_head_outputs(frames, layer)
        return ideal + rng.normal(0, 0.4, ideal.shape).astype(np.float32)

    train_in, test_in = noisy(train_frames), noisy(test_frames)
    config = S.SequenceConfig(variant="tcn", receptive_field=9, hidden=64, epochs=25, batch_size=32,
                              lr_start=2e-3, lr_mid=3e-4, dropout=0.0)
    torch.manual_seed(0)
    model = S.SequenceModel(layer, config)
    train = S.SequenceDataset(train_in, train_frames, 9, used_only=False)
    history = S.train_sequence_model(model, train, S.SequenceDataset(test_in, test_frames, 9, used_only=False),
                                     config, tmp_path, log=lambda m: None)
    assert history[-1].val_loss < history[0].val_loss

    predicted, _, _ = predicted_coordinates(layer)
    scored = np.zeros(len(layer.coordinate_names), bool)
    scored[predicted] = True
    scored &= np.asarray(layer.rotational, bool)
    true, mask = test_frames.labels["coordinates"], test_frames.labels["coordinate_mask"]
    frame_only = S.predict_sequence(S.SequenceModel(layer, config), test_in, test_frames)["coordinates"]
    refined = S.predict_sequence(model, test_in, test_frames)["coordinates"]
    noisy_mae = coordinate_mae_deg(frame_only, true, mask, scored)
    refined_mae = coordinate_mae_deg(refined, true, mask, scored)
    assert refined_mae < 0.6 * noisy_mae, (refined_mae, noisy_mae)


def test_empty_sequence_sets_say_what_to_change(frames_dir, layer, tmp_path):
    frames = FrameDataset([frames_dir], used_only=False, cameras=("PG1",))
    none = FrameDataset([frames_dir], used_only=False, cameras=("PG9",))
    config = S.SequenceConfig(receptive_field=3, hidden=8, epochs=1)
    model = S.SequenceModel(layer, config)
    outputs = np.zeros((len(frames), model.n_features), np.float32)
    full = S.SequenceDataset(outputs, frames, 3, used_only=False)
    empty = S.SequenceDataset(np.zeros((0, model.n_features), np.float32), none, 3)
    with pytest.raises(D3keError, match="no training windows"):
        S.train_sequence_model(model, empty, full, config, tmp_path)
    with pytest.raises(D3keError, match="the validation set is empty"):
        S.train_sequence_model(model, full, empty, config, tmp_path)
