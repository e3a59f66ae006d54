"""D3KE's temporal stage: a network over a window of the frame model's outputs that refines the
centre frame's coordinates, scale factors and pelvis orientation.

The input of each frame is the frame model's unsquashed head output (what its sigmoid and 6D
rotation read), so the sequence model sees exactly what the frame model decided.  It predicts the
centre frame's head output as a learned filter over the window plus a network's correction (the
filter starts at the centre frame and the correction at zero: an untrained sequence model
reproduces the frame model), which the same decoding and skeletal layer turn into markers
and joint centres, so it trains with the frame model's losses.

Variants: `tcn` (VideoPose3D-style dilated temporal convolutions; the receptive field is a power
of 3, the paper's 243 = 3^5), `lstm` (bidirectional) and `transformer` (encoder with learned
positions); the last two accept any odd receptive field.  Windows never cross a trial or a camera;
at a trial's ends the edge frame is repeated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.errors import D3keError
from d3ke_assets.frames.augmentations import apply_train_augmentation, draw_train_augmentation
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning.losses import LossWeights
from d3ke_assets.learning.model import (FrameModel, camera_frame_targets, decode_head_outputs,
                                        head_output_size, normalise, predicted_coordinates)
from d3ke_assets.learning.training import (EpochRecord, _Config, choose_device, fit, load_checkpoint, mirrored_targets,
                                           training_mirror)

VARIANTS = ("tcn", "lstm", "transformer")
FILTER_GAIN = 10.0


@dataclass
class SequenceConfig(_Config):
    variant: str = "tcn"
    receptive_field: int = 243  # frames; the paper's
    hidden: int = 256
    layers: int = 2  # of the LSTM or the transformer encoder
    dropout: float = 0.1
    input_noise: float = 0.0  # std of noise on the inputs while training: train-set outputs are better than test's
    # the frame model's training policy (`frames.augmentations.POLICIES`), drawn once per video of the
    # train subjects for each of `augmented_copies` passes of the frame model over them; each window
    # is read from one pass, drawn at random.  `current`: the frame model's outputs on the frames as
    # they are (one pass)
    augment_policy: str = "current"
    augmented_copies: int = 2
    epochs: int = 30
    batch_size: int = 256
    lr_start: float = 1e-3
    lr_mid: float = 1e-4
    lr_tail_start: float = 5e-5
    lr_end: float = 1e-5
    tail_fraction: float = 2 / 30
    weight_decay: float = 1e-3
    loss_weights: LossWeights = field(default_factory=LossWeights)
    seed: int = 0
    num_workers: int = 0  # the windows are in memory

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise D3keError(f"sequence model variant {self.variant!r} does not exist: use one of {', '.join(VARIANTS)}")
        rf = self.receptive_field
        if rf < 1 or rf % 2 == 0:
            raise D3keError(f"receptive_field {rf} must be a positive odd number of frames (the centre frame is "
                            f"the one refined)")
        if self.augmented_copies < 1:
            raise D3keError(f"augmented_copies {self.augmented_copies}: give at least 1 pass of the frame model")
        if self.variant == "tcn" and 3 ** round(math.log(rf, 3)) != rf:
            raise D3keError(f"receptive_field {rf} is not a power of 3, as the tcn variant needs (27, 81, 243, ...): "
                            f"change it or use the lstm or transformer variant")


class _TemporalConvNet(torch.nn.Module):
    """Dilated convolutions (kernel 3, dilations 1, 3, 9, ...) that shrink R = 3^k frames to one."""

    def __init__(self, hidden: int, receptive_field: int, dropout: float):
        super().__init__()
        depth = round(math.log(receptive_field, 3))
        self.expand = torch.nn.Conv1d(hidden, hidden, 3) if depth else torch.nn.Identity()
        self.blocks = torch.nn.ModuleList()
        for i in range(1, depth):
            self.blocks.append(torch.nn.Sequential(
                torch.nn.Conv1d(hidden, hidden, 3, dilation=3 ** i), torch.nn.BatchNorm1d(hidden),
                torch.nn.ReLU(), torch.nn.Dropout(dropout),
                torch.nn.Conv1d(hidden, hidden, 1), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(),
                torch.nn.Dropout(dropout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, R, H) -> (B, H)
        x = torch.relu(self.expand(x.transpose(1, 2)))
        for i, block in enumerate(self.blocks, start=1):
            d = 3 ** i
            x = x[:, :, d:-d] + block(x)  # the residual is the centre part the convolution kept
        return x[:, :, 0]


class _Recurrent(torch.nn.Module):
    def __init__(self, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.lstm = torch.nn.LSTM(hidden, hidden // 2, num_layers=layers, batch_first=True, bidirectional=True,
                                  dropout=dropout if layers > 1 else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0][:, x.shape[1] // 2]


class _Attention(torch.nn.Module):
    def __init__(self, hidden: int, layers: int, dropout: float, receptive_field: int):
        super().__init__()
        self.position = torch.nn.Parameter(torch.randn(1, receptive_field, hidden) * 0.02)
        block = torch.nn.TransformerEncoderLayer(hidden, nhead=4, dim_feedforward=2 * hidden, dropout=dropout,
                                                 batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(block, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x + self.position)[:, x.shape[1] // 2]


class SequenceModel(torch.nn.Module):
    """(B, R, F) windows of frame-model head outputs -> predictions for the centre frames."""

    def __init__(self, layer: SkeletalModel, config: SequenceConfig):
        super().__init__()
        config.check()
        self.layer = layer
        self.variant, self.receptive_field = config.variant, config.receptive_field
        self.predicted, lo, span = predicted_coordinates(layer)
        self.register_buffer("range_lo", lo)
        self.register_buffer("range_span", span)
        n_features = head_output_size(layer)  # the frame model's head outputs
        self.n_features = n_features
        h = config.hidden
        # a per-output filter over the window, starting as "the centre frame only": averaging out
        # per-frame noise is then one easy step away, the network below learns the rest
        centre_only = torch.zeros(config.receptive_field, n_features)
        centre_only[config.receptive_field // 2] = 1.0
        self.register_buffer("centre_only", centre_only, persistent=False)
        self.filter_change = torch.nn.Parameter(torch.zeros(config.receptive_field, n_features))
        self.embed = torch.nn.Linear(n_features, h)
        if config.variant == "tcn":
            self.temporal = _TemporalConvNet(h, config.receptive_field, config.dropout)
        elif config.variant == "lstm":
            self.temporal = _Recurrent(h, config.layers, config.dropout)
        else:
            self.temporal = _Attention(h, config.layers, config.dropout, config.receptive_field)
        self.correction = torch.nn.Linear(h, n_features)
        torch.nn.init.zeros_(self.correction.weight)  # start as the frame model
        torch.nn.init.zeros_(self.correction.bias)

    def filter(self) -> torch.Tensor:
        """(R, F) weights of each frame in the window.  The change is scaled up so that Adam, whose
        steps are about the learning rate whatever the gradient, moves weights of order 1/R within
        a few hundred steps."""
        return self.centre_only + FILTER_GAIN * self.filter_change

    def forward(self, windows: torch.Tensor) -> dict[str, torch.Tensor]:
        if windows.shape[1] != self.receptive_field or windows.shape[2] != self.n_features:
            raise D3keError(f"sequence model expects windows of {self.receptive_field} frames x {self.n_features} "
                            f"outputs, got {tuple(windows.shape[1:])}")
        filtered = (windows * self.filter()).sum(dim=1)
        refined = filtered + self.correction(self.temporal(self.embed(windows)))
        return decode_head_outputs(refined, self.layer, self.predicted, self.range_lo, self.range_span)


@torch.no_grad()
def predict_head_outputs(model: FrameModel, frames: FrameDataset, batch_size: int = 64,
                         log: Callable[[str], None] = lambda m: None) -> np.ndarray:
    """(N, F) float32 head outputs of the frame model for every frame of `frames`, in its order."""
    device = choose_device()
    model.to(device).eval()
    out = []
    loader = torch.utils.data.DataLoader(frames, batch_size=batch_size, num_workers=0)
    every = max(1, len(loader) // 10)
    for step, batch in enumerate(loader):
        out.append(model.head_outputs(normalise(batch["image"].to(device))).cpu().numpy())
        if (step + 1) % every == 0:
            log(f"frame model outputs: {min((step + 1) * batch_size, len(frames))}/{len(frames)} frames")
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.n_outputs), np.float32)


def window_rows(frames: FrameDataset, receptive_field: int) -> np.ndarray:
    """(N, R) row indices of each frame's window: the same subject, trial and camera, in frame order,
    the edge frame repeated past a trial's ends."""
    n = len(frames)
    order = np.lexsort((frames.frame, frames.camera, frames.trial, frames.folder_index))
    key = np.stack([frames.folder_index[order].astype(str), frames.trial[order].astype(str),
                    frames.camera[order].astype(str)], axis=1)
    new_group = np.ones(n, bool)
    new_group[1:] = (key[1:] != key[:-1]).any(axis=1)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    ends = np.flatnonzero(np.append(new_group[1:], True))  # last position of each group
    group_end = ends[np.cumsum(new_group) - 1]
    half = receptive_field // 2
    positions = np.arange(n)[:, None] + np.arange(-half, half + 1)[None, :]
    positions = np.clip(positions, group_start[:, None], group_end[:, None])
    windows = np.empty((n, receptive_field), np.int64)
    windows[order] = order[positions]
    return windows


@dataclass
class OutputPass:
    """The frame model's head outputs for every frame of a FrameDataset, in its order, with the camera
    rotations their labels are turned by and which frames it saw mirrored."""

    head_outputs: np.ndarray  # (N, F) float32
    camera_R: np.ndarray  # (N, 3, 3)
    mirrored: np.ndarray  # (N,) bool


def video_groups(frames: FrameDataset) -> np.ndarray:
    """(N,) the index of each frame's video: subject, trial and camera."""
    key = [f"{f}|{t}|{c}" for f, t, c in zip(frames.folder_index.tolist(), frames.trial.tolist(),
                                              frames.camera.tolist())]
    return np.unique(np.array(key, dtype=object), return_inverse=True)[1].reshape(-1).astype(np.int64)


def frame_draw_config(frame_config: dict, policy: str):
    """What the draws read (the frame model's shift, scale, rotation and colour ranges) under `policy`."""
    from d3ke_assets.learning.training import TrainConfig

    known = {k: v for k, v in frame_config.items() if k in TrainConfig.__dataclass_fields__ and k != "loss_weights"}
    return replace(TrainConfig(**known), augment_policy=policy, augment=True)


@torch.no_grad()
def augmented_passes(model: FrameModel, frames: FrameDataset, draw_config, copies: int, seed: int,
                     batch_size: int = 64, log: Callable[[str], None] = lambda m: None) -> list[OutputPass]:
    """`copies` passes of the frame model over `frames`, each video (`video_groups`) augmented by one
    draw of `draw_config`'s policy for all its frames, as a whole video would be flipped or resized."""
    device = choose_device()
    model.to(device).eval()
    mirror = training_mirror(model.layer, draw_config, log)
    groups = torch.from_numpy(video_groups(frames))
    passes = []
    for copy in range(copies):
        draws = draw_train_augmentation(int(groups.max()) + 1 if len(groups) else 0, draw_config,
                                        torch.Generator().manual_seed(seed * 1000 + 700 + copy),
                                        can_mirror=mirror is not None)
        per_frame = draws.take(groups)
        outputs, rotations, mirrored = [], [], []
        loader = torch.utils.data.DataLoader(frames, batch_size=batch_size, num_workers=0)
        for batch in loader:
            images, camera_R, flipped = apply_train_augmentation(batch["image"], batch["camera_R"],
                                                                 per_frame.take(batch["index"]))
            outputs.append(model.head_outputs(normalise(images.to(device))).cpu().numpy())
            rotations.append(camera_R.numpy())
            mirrored.append(flipped.numpy())
        log(f"augmented pass {copy + 1}/{copies}: {len(frames)} frames, {int(draws.flip.sum())} of "
            f"{len(draws.flip)} videos mirrored")
        passes.append(OutputPass(np.concatenate(outputs).astype(np.float32), np.concatenate(rotations),
                                 np.concatenate(mirrored)))
    return passes


class SequenceDataset(torch.utils.data.Dataset):
    """Windows of head outputs centred on the frames of `frames` (only D3KE's moving ones when
    `used_only`), with the centre frames' labels.  Given several `passes` (`augmented_passes`), each
    window is read from one of them, drawn at random, with that pass's camera rotation and mirroring."""

    def __init__(self, head_outputs: np.ndarray | None, frames: FrameDataset, receptive_field: int,
                 used_only: bool = True, passes: list[OutputPass] | None = None):
        if passes is None:
            passes = [OutputPass(head_outputs, frames.camera_R, np.zeros(len(frames), bool))]
        for p in passes:
            if len(p.head_outputs) != len(frames):
                raise D3keError(f"{len(p.head_outputs)} frame-model outputs for {len(frames)} frames: compute them "
                                f"again")
        self.outputs = [torch.from_numpy(np.ascontiguousarray(p.head_outputs, np.float32)) for p in passes]
        self.camera_R = [torch.from_numpy(np.ascontiguousarray(p.camera_R, np.float32)) for p in passes]
        self.mirrored = [torch.from_numpy(p.mirrored.astype(bool)) for p in passes]
        self.windows = torch.from_numpy(window_rows(frames, receptive_field))
        self.centres = np.flatnonzero(frames.used) if used_only else np.arange(len(frames))
        self.labels = {k: torch.from_numpy(v) for k, v in frames.labels.items()}

    def __len__(self) -> int:
        return len(self.centres)

    def __getitem__(self, i: int) -> dict:
        row = int(self.centres[i])
        # the pass: drawn from torch's global generator, which the training seeds
        k = int(torch.randint(len(self.outputs), ())) if len(self.outputs) > 1 else 0
        item = {key: v[row] for key, v in self.labels.items()}
        item["window"] = self.outputs[k][self.windows[row]]
        item["camera_R"] = self.camera_R[k][row]
        item["mirrored"] = self.mirrored[k][row]
        item["index"] = row
        return item


def train_sequence_model(model: SequenceModel, train_set: SequenceDataset, val_set: SequenceDataset,
                         config: SequenceConfig, checkpoint_dir: Path, log: Callable[[str], None] = print,
                         on_epoch: Callable[[EpochRecord], None] = lambda r: None,
                         resume_key: str = "") -> list[EpochRecord]:
    """Train (or resume) the sequence model with the frame model's losses (see `training.fit`)."""
    if len(train_set) == 0:
        raise D3keError("no training windows: the train subjects have no frames with labels")

    mirror = training_mirror(model.layer, config, log) if any(m.any() for m in train_set.mirrored) else None

    def prepare(batch, generator, device):
        windows = batch["window"].to(device)
        if generator is not None and config.input_noise > 0:
            windows = windows + config.input_noise * torch.randn(windows.shape, generator=generator).to(device)
        targets = camera_frame_targets({k: v.to(device) for k, v in batch.items() if k != "window"},
                                       batch["camera_R"].to(device), model.layer)
        return windows, mirrored_targets(targets, batch["mirrored"].to(device), mirror)

    return fit(model, train_set, val_set, config, checkpoint_dir, prepare, log, on_epoch, resume_key)


@torch.no_grad()
def predict_sequence(model: SequenceModel, head_outputs: np.ndarray, frames: FrameDataset,
                     batch_size: int = 512) -> dict[str, np.ndarray]:
    """The sequence model's predictions for every frame of `frames` (coordinates, scale factors, ...)."""
    device = choose_device()
    model.to(device).eval()
    data = SequenceDataset(head_outputs, frames, model.receptive_field, used_only=False)
    parts: dict[str, list] = {}
    for batch in torch.utils.data.DataLoader(data, batch_size=batch_size):
        for k, v in model(batch["window"].to(device)).items():
            parts.setdefault(k, []).append(v.cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def load_trained_sequence_model(checkpoint: Path, osim_path: Path, bundle: dict | None = None) -> SequenceModel:
    """`bundle`: the checkpoint's contents when already loaded."""
    bundle = bundle if bundle is not None else load_checkpoint(checkpoint)
    settings = {k: v for k, v in bundle.get("config", {}).items() if k != "loss_weights"}
    if "variant" not in settings:
        raise D3keError(f"{checkpoint}: not a sequence-model checkpoint (no variant in its configuration)")
    model = SequenceModel(SkeletalModel.from_osim(osim_path), SequenceConfig(**settings))
    model.load_state_dict(bundle["model"])
    return model.eval()


@torch.no_grad()
def refine_video(model: SequenceModel, head_outputs: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
    """The sequence model over one video's frames in order (a user's video: one trial, one camera),
    the edge frames repeated past its ends as in training; predictions per frame, as numpy arrays."""
    device = next(model.parameters()).device
    n, half = len(head_outputs), model.receptive_field // 2
    rows = np.clip(np.arange(n)[:, None] + np.arange(-half, half + 1)[None, :], 0, max(n - 1, 0))
    outputs = torch.from_numpy(np.ascontiguousarray(head_outputs, np.float32))
    parts: dict[str, list] = {}
    for start in range(0, n, batch_size):
        windows = outputs[torch.from_numpy(rows[start:start + batch_size])].to(device)
        for k, v in model(windows).items():
            parts.setdefault(k, []).append(v.cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


FRAME_MODEL_KEY = "frame_model"  # in a sequence checkpoint: the frame model it refines, so it runs on its own


def attach_frame_model(checkpoint: Path, frame_checkpoint: Path) -> None:
    """Put the frame model a sequence model was trained on (its predicting weights, configuration and
    input size) into the sequence checkpoint, so `d3ke predict` and a served model need that file alone."""
    from d3ke_assets.learning.training import save_checkpoint

    bundle = load_checkpoint(checkpoint)
    frame = load_checkpoint(frame_checkpoint)
    bundle[FRAME_MODEL_KEY] = {k: frame[k] for k in ("model", "config", "crop_px") if k in frame}
    save_checkpoint(checkpoint, bundle)
