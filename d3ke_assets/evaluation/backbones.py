"""The backbone study: the frame model with each backbone trained on the same data under the same
budget, scored by the same evaluation, and compared (accuracy against size and time per frame).

A budget (`StudyBudget`) sets what every backbone gets alike: epochs, the share of frames seen per
epoch, and how many test subjects are scored.  Its per-preset default (`settings.Preset.study`) lets
the whole study run on two CPU cores within the preset's time; more is configuration.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from d3ke_assets.errors import D3keError
from d3ke_assets.learning.model import BACKBONES, FrameModel

# the paper's backbone, the lighter one a second study compared it with, and two small ones
STUDY_BACKBONES = ("resnext50_32x4d", "efficientnet_v2_s", "resnet18", "mobilenet_v3_small")
SUMMARY_COLUMNS = ["backbone", "parameters_m", "clean_coordinate_mae_deg", "augmented_coordinate_mae_deg",
                   "mpjpe_mm", "pa_mpjpe_mm", "pck150_percent", "cpu_ms_per_frame", "gpu_ms_per_frame",
                   "train_minutes", "epochs", "train_images"]


@dataclass(frozen=True)
class StudyBudget:
    """What each backbone gets: `epochs` over the train subjects' frames, every `frame_stride`-th
    frame per epoch, then scoring on the first `test_subjects` test subjects (None: all).
    `ema_decay`: the weights' moving average; off by default, since over a short training it would
    still hold much of the initial weights."""

    epochs: int
    frame_stride: int = 1
    test_subjects: int | None = None
    ema_decay: float = 0.0

    def train_overrides(self) -> dict:
        """The `TrainConfig` fields the budget sets."""
        return {"epochs": self.epochs, "frame_stride": self.frame_stride, "ema_decay": self.ema_decay}

    def check(self) -> "StudyBudget":
        if self.epochs < 1 or self.frame_stride < 1 or (self.test_subjects is not None and self.test_subjects < 1):
            raise D3keError(f"backbone study budget {asdict(self)}: epochs, frame_stride and test_subjects "
                            f"must be at least 1")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def check_backbone(name: str) -> str:
    if name not in STUDY_BACKBONES or name not in BACKBONES:
        raise D3keError(f"backbone {name!r} is not in the backbone study: use one of {', '.join(STUDY_BACKBONES)}")
    return name


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def ms_per_frame(model: FrameModel, crop_px: int, device: torch.device, batch: int = 8, rounds: int = 3) -> float:
    """The network's milliseconds per frame on `device` (best of `rounds` batches after a warm-up),
    in inference mode at the training's crop size."""
    model = model.to(device).eval()
    images = torch.rand(batch, 3, crop_px, crop_px, device=device)
    model.head_outputs(images)  # warm-up: allocation, cuDNN's choice of algorithms
    best = float("inf")
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.head_outputs(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 1000 * best / batch


def summary_row(backbone: str, results, parameters: int, cpu_ms: float, gpu_ms: float | None, train_minutes: float,
                epochs: int, train_images: int) -> dict:
    """One backbone's line of the comparison, from its evaluation table (`evaluate.aggregate` rows of
    the frame model): clean figures averaged over the views, and the coordinate MAE over every
    augmented condition."""
    frame = results[results.model == "frame_model"]
    clean = frame[frame.augmentation == "clean"]
    augmented = frame[frame.augmentation != "clean"]
    weighted = lambda rows, metric: float(np.average(rows[metric], weights=rows.n_frames))  # noqa: E731
    return {"backbone": backbone, "parameters_m": parameters / 1e6,
            "clean_coordinate_mae_deg": weighted(clean, "coordinate_mae_deg"),
            "augmented_coordinate_mae_deg": weighted(augmented, "coordinate_mae_deg"),
            "mpjpe_mm": weighted(clean, "mpjpe_mm"), "pa_mpjpe_mm": weighted(clean, "pa_mpjpe_mm"),
            "pck150_percent": weighted(clean, "pck150_percent"), "cpu_ms_per_frame": cpu_ms,
            "gpu_ms_per_frame": gpu_ms, "train_minutes": train_minutes, "epochs": epochs,
            "train_images": train_images}


def comparison_table(rows: list[dict]):
    """The summary rows in the study's order of backbones."""
    import pandas as pd

    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    order = {b: i for i, b in enumerate(STUDY_BACKBONES)}
    return table.sort_values("backbone", key=lambda s: s.map(order)).reset_index(drop=True)


def comparison_png(table, path: Path) -> Path:
    """Accuracy against CPU time per frame (one point per backbone, sized by its parameters), and the
    clean and augmented coordinate MAE side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.scatter(table.cpu_ms_per_frame, table.clean_coordinate_mae_deg, s=20 + 4 * table.parameters_m)
    for r in table.itertuples():
        a.annotate(f"{r.backbone} ({r.parameters_m:.1f} M)", (r.cpu_ms_per_frame, r.clean_coordinate_mae_deg),
                   fontsize=7, xytext=(4, 4), textcoords="offset points")
    a.set_xlabel("CPU ms per frame")
    a.set_ylabel("clean coordinate MAE (deg)")
    x = np.arange(len(table))
    b.bar(x - 0.2, table.clean_coordinate_mae_deg, 0.4, label="clean")
    b.bar(x + 0.2, table.augmented_coordinate_mae_deg, 0.4, label="augmented (mean)")
    b.set_xticks(x, table.backbone, rotation=20, fontsize=7)
    b.set_ylabel("coordinate MAE (deg)")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
