"""The training settings of a run, from its preset (`settings.PRESETS`, the one preset table) and
the backbone weights file its settings name."""

from __future__ import annotations

from pathlib import Path

from d3ke_assets.errors import D3keError
from d3ke_assets.frames.augmentations import augment_policy
from d3ke_assets.learning.sequence import SequenceConfig
from d3ke_assets.learning.training import TrainConfig
from d3ke_assets.settings import Settings


def train_config(settings: Settings, **overrides) -> TrainConfig:
    """The frame model's training: the preset's, with `overrides`, starting from the settings'
    backbone weights (`backbone_weights`: a local torchvision state_dict, or "none")."""
    preset = settings.preset_settings()
    values = {**preset.train, **overrides}
    weights = settings.backbone_weights
    if weights and weights.lower() != "none":
        values.setdefault("weights_file", weights)
    elif preset.needs_pretrained and not weights:
        raise D3keError(f"preset {preset.name} trains {values['backbone']} from ImageNet weights, which are not "
                        f"downloaded at run time: set D3KE_BACKBONE_WEIGHTS to a local torchvision state_dict "
                        f"file (or to 'none' to train from scratch)")
    if values.get("weights_file") and not Path(values["weights_file"]).is_file():
        raise D3keError(f"D3KE_BACKBONE_WEIGHTS={values['weights_file']}: no such file")
    augment_policy(values.get("augment_policy", "current"))  # a policy that exists, said before training
    return TrainConfig(**values)


def sequence_config(settings: Settings, **overrides) -> SequenceConfig:
    """The preset's temporal stage; `overrides` whose value is None are ignored."""
    preset = settings.preset_settings()
    config = SequenceConfig(**{**preset.sequence, **{k: v for k, v in overrides.items() if v is not None}})
    config.check()
    augment_policy(config.augment_policy)
    return config


def study_train_config(settings: Settings, backbone: str, budget_overrides: dict) -> TrainConfig:
    """The backbone study's frame model: the preset's training with `backbone` and the budget's fields
    (`evaluation.backbones.StudyBudget.train_overrides`).  Every backbone starts alike: from ImageNet
    weights when `backbone_weights` names a folder holding `<backbone>.pth` for each, else from scratch."""
    preset = settings.preset_settings()
    values = {**preset.train, **budget_overrides, "backbone": backbone, "weights_file": None}
    folder = Path(settings.backbone_weights) if settings.backbone_weights else None
    if folder is not None and folder.is_dir():
        weights = folder / f"{backbone}.pth"
        if not weights.is_file():
            raise D3keError(f"{weights}: no such file: the backbone study starts every backbone from the weights "
                            f"in D3KE_BACKBONE_WEIGHTS={folder} (one <backbone>.pth each), or all from scratch "
                            f"when it names no folder")
        values["weights_file"] = str(weights)
    augment_policy(values.get("augment_policy", "current"))
    return TrainConfig(**values)
