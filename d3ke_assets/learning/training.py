"""One readable training loop for the frame model, as torchvision's reference scripts have it.

Every hyperparameter is a field of `TrainConfig`.  The device is chosen automatically (CUDA
when present, then mixed precision and channels-last).  A checkpoint (`last.pt`, a plain
state_dict bundle loaded with `weights_only=True`) is written atomically after every epoch; a
training started again with the same configuration resumes from it.  A NaN loss stops the
training with a message and never overwrites the last good checkpoint.  Each batch is one
`train_step`, the function `d3ke bench train` times; the train-time augmentation is in
`frames/augmentations.py` and the validation's coordinate error in `learning/metrics.py`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from d3ke_assets.errors import D3keError
from d3ke_assets.frames.augmentations import apply_train_augmentation, draw_train_augmentation
from d3ke_assets.learning.losses import LossWeights, d3ke_loss
from d3ke_assets.learning.metrics import coordinate_mae_deg, scored_coordinates
from d3ke_assets.learning.mirror import Mirror
from d3ke_assets.learning.model import FrameModel, camera_frame_targets, normalise  # noqa: F401 (re-exported)
from d3ke_assets.storage import atomic_path
from d3ke_assets.versioning import canonical_hash

CHECKPOINT = "last.pt"


class _Config:
    """What both trainings' configurations share: a flat dict and a resume fingerprint."""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["loss_weights"] = self.loss_weights.as_dict()
        return d

    def fingerprint(self) -> str:
        """What a resumed training must share with the one that wrote the checkpoint."""
        d = self.as_dict()
        d.pop("num_workers")
        return canonical_hash(d)


@dataclass
class TrainConfig(_Config):
    backbone: str = "resnet18"
    epochs: int = 30
    batch_size: int = 64
    lr_start: float = 5e-4  # the paper: 5e-4 -> 3.33e-5 over the first 28 of 30 epochs ...
    lr_mid: float = 3.33e-5
    lr_tail_start: float = 3.33e-6  # ... then 3.33e-6 -> 1e-6 over the last 2
    lr_end: float = 1e-6
    tail_fraction: float = 2 / 30
    weight_decay: float = 1e-3
    loss_weights: LossWeights = field(default_factory=LossWeights)
    augment: bool = True
    # `current`: small shifts, scales, rotations and colour; `robust`: also mirroring (with mirrored
    # labels), resolution loss, box offset and zoom, strong brightness and contrast
    # (`frames.augmentations.POLICIES`)
    augment_policy: str = "current"
    max_shift: float = 0.1  # of the crop size
    max_scale: float = 0.1
    max_rotation_deg: float = 15.0
    colour: float = 0.2
    seed: int = 0
    num_workers: int = 2
    weights_file: str | None = None
    # train on every n-th frame per epoch (a different offset each epoch): neighbouring video
    # frames are nearly the same picture, new people and poses are what generalises
    frame_stride: int = 1
    # validate and keep an exponential moving average of the weights (torchvision's reference
    # scripts' --model-ema), updated every step; 0 keeps the last step's weights
    ema_decay: float = 0.0


def learning_rate(config: TrainConfig, epoch_progress: float) -> float:
    """The two-step exponential decay, at a fractional epoch in [0, epochs)."""
    tail = max(1, round(config.epochs * config.tail_fraction)) if config.epochs > 1 else 0
    head = config.epochs - tail
    if epoch_progress < head:
        f = epoch_progress / head
        return config.lr_start * (config.lr_mid / config.lr_start) ** f
    f = (epoch_progress - head) / max(tail, 1)
    return config.lr_tail_start * (config.lr_end / config.lr_tail_start) ** min(f, 1.0)


def choose_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    terms: dict[str, float]
    val_loss: float
    val_coordinate_mae_deg: float
    val_marker_error_mm: float
    lr: float
    seconds: float
    data_wait_share: float


def _checkpoint_bundle(model, optimizer, epoch: int, history: list[EpochRecord], config: TrainConfig,
                       resume_key: str, ema=None) -> dict:
    """`model`: the weights predictions use (the average when there is one); `trained_model`: the
    optimizer's own weights, which a resumed training continues from."""
    bundle = {"model": (ema.module if ema is not None else model).state_dict(),
              "optimizer": optimizer.state_dict(), "epoch": epoch,
              "fingerprint": canonical_hash([config.fingerprint(), resume_key]), "config": config.as_dict(),
              "history": [asdict(h) for h in history]}
    if ema is not None:
        bundle["trained_model"] = model.state_dict()
        bundle["ema_updates"] = int(ema.n_averaged.item())
    return bundle


def weight_average(model, decay: float):
    """An exponential moving average of `model`'s weights and BatchNorm statistics, or None for decay 0."""
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise D3keError(f"ema_decay={decay}: use a value in (0, 1), e.g. 0.995, or 0 for no weight average")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def save_checkpoint(path: Path, bundle: dict) -> None:
    with atomic_path(path) as tmp:  # a killed save never leaves a half-written last.pt
        torch.save(bundle, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise D3keError(f"{path}: cannot load the checkpoint ({type(exc).__name__}): only plain state_dict bundles "
                        f"are loaded (torch.load weights_only=True, nothing else is unpickled); delete it to start "
                        f"over") from None


# prepare(batch, generator, device) -> (model input, targets); generator is None when evaluating
Prepare = Callable[[dict, "torch.Generator | None", torch.device], tuple[torch.Tensor, dict]]


def load_trained_frame_model(checkpoint: Path, osim_path: Path, bundle: dict | None = None) -> FrameModel:
    """A trained frame model from its checkpoint (the backbone is read from the checkpoint's config);
    `bundle`: the checkpoint's contents when already loaded (or a sequence checkpoint's frame model)."""
    from d3ke_assets.biomech.skeletal_layer import SkeletalModel

    bundle = bundle if bundle is not None else load_checkpoint(checkpoint)
    if "config" not in bundle:
        raise D3keError(f"{checkpoint}: written by an older d3ke without its configuration: train the model again")
    model = FrameModel(SkeletalModel.from_osim(osim_path), bundle["config"]["backbone"])
    try:
        model.load_state_dict(bundle["model"])
    except RuntimeError:  # the head's size follows the model's coordinates and bodies
        raise D3keError(f"{checkpoint}: trained on another OpenSim model than {osim_path} (its outputs do not match "
                        f"that model's coordinates and bodies): use the model it was trained with (D3KE_MODEL)") from None
    return model.eval()


@torch.no_grad()
def evaluate(model, loader, config, device: torch.device, rotational: torch.Tensor,
             prepare: Prepare) -> tuple[float, float, float]:
    """(loss, coordinate MAE in degrees (`learning.metrics.coordinate_mae_deg`), marker error in mm)."""
    model.eval()
    total, n, marker_mm = 0.0, 0, 0.0
    pred_q, true_q, masks = [], [], []
    for batch in loader:
        inputs, targets = prepare(batch, None, device)
        pred = model(inputs)
        loss, _ = d3ke_loss(pred, targets, config.loss_weights, rotational)
        b = inputs.shape[0]
        total += loss.item() * b
        n += b
        pred_q.append(pred["coordinates"].float().cpu())
        true_q.append(targets["coordinates"].float().cpu())
        masks.append(targets["coordinate_mask"].float().cpu())
        marker_mm += 1000 * (pred["markers_m"] - targets["markers_m"]).norm(dim=-1).mean(dim=1).sum().item()
    model.train()
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mae = coordinate_mae_deg(torch.cat(pred_q).numpy(), torch.cat(true_q).numpy(), torch.cat(masks).numpy(),
                             scored_coordinates(model))
    return total / n, mae, marker_mm / n


def training_mirror(layer, config, log: Callable[[str], None] = print) -> Mirror | None:
    """The mirror a policy that flips pictures needs, or None (no flips) for a model without
    left/right pairs, which is said once."""
    from d3ke_assets.frames.augmentations import augment_policy

    if not getattr(config, "augment", True) or augment_policy(config.augment_policy).flip_probability == 0:
        return None
    try:
        return Mirror.for_layer(layer)
    except D3keError as exc:
        log(f"augmentation policy {config.augment_policy}: no mirrored pictures ({exc})")
        return None


def mirrored_targets(targets: dict, mirrored: torch.Tensor, mirror: Mirror | None) -> dict:
    """`targets` with the mirrored samples' labels mirrored (the picture shows a mirrored person)."""
    if mirror is None or not bool(mirrored.any()):
        return targets
    return mirror.camera_targets(targets, mirrored)


def frame_prepare(model: FrameModel, config: TrainConfig, log: Callable[[str], None] = print) -> Prepare:
    """The frame model's `prepare`: train-time augmentation by `config.augment_policy` (when a
    generator is given and `config.augment`), normalised images (channels-last on CUDA) and
    camera-frame targets, mirrored for the mirrored samples."""
    mirror = training_mirror(model.layer, config, log)

    def prepare(batch, generator, device):
        images, camera_R = batch["image"], batch["camera_R"]
        mirrored = torch.zeros(images.shape[0], dtype=torch.bool)
        if generator is not None and config.augment:
            draws = draw_train_augmentation(images.shape[0], config, generator, can_mirror=mirror is not None)
            images, camera_R, mirrored = apply_train_augmentation(images, camera_R, draws)
        images = normalise(images.to(device, non_blocking=True))
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        targets = camera_frame_targets({k: v.to(device) for k, v in batch.items() if k != "image"},
                                       camera_R.to(device), model.layer)
        return images, mirrored_targets(targets, mirrored.to(device), mirror)

    return prepare


class NonFiniteLoss(D3keError):
    """The loss of a step was NaN or infinite; raised before the step touches the weights."""

    def __init__(self, value: float):
        super().__init__(f"the loss became {value}")
        self.value = value


@dataclass
class Optimisation:
    """What every training step needs besides the model and the batch (see `setup_optimisation`)."""
    device: torch.device
    rotational: torch.Tensor
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: object | None = None


def setup_optimisation(model, config, channels_last: bool = False) -> Optimisation:
    """The device (the model moved there), AdamW, the gradient scaler and the weight average a
    training uses."""
    device = choose_device()
    model.to(device)
    if device.type == "cuda" and channels_last:
        model.to(memory_format=torch.channels_last)
    rotational = torch.tensor(model.layer.rotational, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr_start, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    return Optimisation(device, rotational, optimizer, scaler, weight_average(model, getattr(config, "ema_decay", 0.0)))


def train_step(model, batch: dict, prepare: Prepare, generator: torch.Generator | None, opt: Optimisation,
               config) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """One training step, as `fit` runs it: prepare the batch (augmentation, targets), forward
    (autocast on CUDA), loss, backward, optimizer step, weight average.  Returns (loss, loss terms,
    batch size); raises NonFiniteLoss before any weight changes."""
    inputs, targets = prepare(batch, generator, opt.device)
    with torch.autocast(opt.device.type, enabled=opt.device.type == "cuda"):
        pred = model(inputs)
    loss, terms = d3ke_loss(pred, targets, config.loss_weights, opt.rotational)
    if not torch.isfinite(loss):
        raise NonFiniteLoss(loss.item())
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    if opt.ema is not None:
        opt.ema.update_parameters(model)
    return loss, terms, inputs.shape[0]


def train_frame_model(model: FrameModel, train_set, val_set, config: TrainConfig, checkpoint_dir: Path,
                      log: Callable[[str], None] = print,
                      on_epoch: Callable[[EpochRecord], None] = lambda r: None,
                      resume_key: str = "") -> list[EpochRecord]:
    """Train (or resume) the frame model and return the per-epoch history (see `fit`)."""
    if len(train_set) == 0:
        raise D3keError("no training frames: materialize frames for the train subjects (or use a preset with more "
                        "subjects)")
    return fit(model, train_set, val_set, config, checkpoint_dir, frame_prepare(model, config, log), log, on_epoch,
               resume_key, channels_last=True)


def fit(model, train_set, val_set, config, checkpoint_dir: Path, prepare: Prepare,
        log: Callable[[str], None] = print, on_epoch: Callable[[EpochRecord], None] = lambda r: None,
        resume_key: str = "", channels_last: bool = False) -> list[EpochRecord]:
    """The loop both models train with: AdamW, the two-step schedule per step, `train_step` on each
    batch, a checkpoint every epoch, validation metrics every epoch.

    A checkpoint is resumed only when it was written with the same configuration and `resume_key`
    (the caller's version of code and inputs): new data or code starts over."""
    if len(val_set) == 0:
        raise D3keError("the validation set is empty: the subject split needs at least one validation subject "
                        "with frames")
    seed_everything(config.seed)
    opt = setup_optimisation(model, config, channels_last)
    device, rotational, optimizer, ema = opt.device, opt.rotational, opt.optimizer, opt.ema
    history: list[EpochRecord] = []
    start_epoch = 0
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / CHECKPOINT
    if path.is_file():
        bundle = load_checkpoint(path)
        if bundle.get("fingerprint") == canonical_hash([config.fingerprint(), resume_key]):
            model.load_state_dict(bundle.get("trained_model", bundle["model"]))
            if ema is not None:
                ema.module.load_state_dict(bundle["model"])
                ema.n_averaged.fill_(bundle["ema_updates"])
            optimizer.load_state_dict(bundle["optimizer"])
            history = [EpochRecord(**h) for h in bundle["history"]]
            start_epoch = int(bundle["epoch"]) + 1
            log(f"resuming from {path} after epoch {start_epoch}")
        else:
            log(f"{path} was written with another configuration: starting over")
    loader_kw = dict(batch_size=config.batch_size, num_workers=config.num_workers,
                     persistent_workers=config.num_workers > 0, pin_memory=device.type == "cuda")
    val_loader = torch.utils.data.DataLoader(val_set, shuffle=False, **loader_kw)
    steps = max(1, math.ceil(len(train_set) / getattr(config, "frame_stride", 1) / config.batch_size))
    for epoch in range(start_epoch, config.epochs):
        # the same shuffle for an epoch whether or not the run was resumed
        order = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch + 500)  # augmentation draws
        stride = getattr(config, "frame_stride", 1)
        epoch_set = train_set if stride == 1 else \
            torch.utils.data.Subset(train_set, range(epoch % stride, len(train_set), stride))
        loader = torch.utils.data.DataLoader(epoch_set, shuffle=True, generator=order, drop_last=False, **loader_kw)
        model.train()
        t0, waited, total, seen = time.perf_counter(), 0.0, 0.0, 0
        sums: dict[str, float] = {}
        t_wait = time.perf_counter()
        for step, batch in enumerate(loader):
            waited += time.perf_counter() - t_wait
            lr = learning_rate(config, epoch + step / steps)
            for g in optimizer.param_groups:
                g["lr"] = lr
            try:
                loss, terms, b = train_step(model, batch, prepare, generator, opt, config)
            except NonFiniteLoss as exc:
                raise D3keError(f"the loss became {exc.value} at epoch {epoch + 1}, step {step + 1}: lower "
                                f"lr_start (now {config.lr_start:g}) or check the labels; the last good checkpoint "
                                f"{path} is kept") from None
            total += loss.item() * b
            seen += b
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item() * b
            t_wait = time.perf_counter()
        val_loss, val_mae, val_mm = evaluate(ema.module if ema is not None else model, val_loader, config, device,
                                             rotational, prepare)
        seconds = time.perf_counter() - t0
        record = EpochRecord(epoch, total / seen, {k: v / seen for k, v in sums.items()}, val_loss, val_mae, val_mm,
                             lr, seconds, waited / seconds)
        history.append(record)
        bundle = _checkpoint_bundle(model, optimizer, epoch, history, config, resume_key, ema)
        bundle["crop_px"] = int(getattr(train_set, "crop_px", 0))  # the input size predict must use
        save_checkpoint(path, bundle)
        log(f"epoch {epoch + 1}/{config.epochs}: loss {record.train_loss:.4f}, val loss {val_loss:.4f}, "
            f"val coordinate MAE {val_mae:.2f} deg, val marker error {val_mm:.1f} mm ({seconds:.1f} s)")
        on_epoch(record)
    return history
