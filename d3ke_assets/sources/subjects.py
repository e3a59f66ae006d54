"""Subject ids, partition keys and the train / validation / test split.

Partition keys are `Subject_<ID>` as in the BML-MoVi file names, for both the
real and the synthetic dataset.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from d3ke_assets.errors import D3keError

SPLITS = ("train", "validation", "test")
_KEY = re.compile(r"^Subject_([1-9][0-9]{0,2})$")


def movi_video_name(camera: str, key: str) -> str:
    """BML-MoVi's name for a subject's round-F video of one camera (PG1, PG2)."""
    return f"F_{camera}_Subject_{subject_id(key)}_L.avi"


def subject_key(subject_id: int) -> str:
    return f"Subject_{int(subject_id)}"


def subject_id(key: str) -> int:
    """Parse and validate a partition key; a crafted key never reaches a path."""
    m = _KEY.match(key)
    if not m:
        raise D3keError(f"subject key {key!r} is not valid: use Subject_<number>, e.g. Subject_1")
    return int(m.group(1))


def is_subject_key(key: str) -> bool:
    return _KEY.match(key) is not None


@dataclass(frozen=True)
class SubjectSplit:
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(sorted(self.train + self.validation + self.test, key=subject_id))

    def split_of(self, key: str) -> str:
        for name in SPLITS:
            if key in getattr(self, name):
                return name
        raise D3keError(f"subject {key!r} is not in this dataset: use one of {', '.join(self.all)}")

    def check(self, key: str) -> str:
        subject_id(key)
        self.split_of(key)
        return key


def movi_split() -> SubjectSplit:
    """The split published with the D3KE code (subject 12 is absent)."""
    text = resources.files("d3ke_assets.sources").joinpath("d3ke_subject_split.json").read_text()
    raw = json.loads(text)
    return SubjectSplit(*(tuple(subject_key(i) for i in raw[name]) for name in SPLITS))


def synthetic_split(n_subjects: int) -> SubjectSplit:
    """Roughly the published proportions (75/5/20 %), at least one subject in each."""
    if n_subjects < 3:
        raise D3keError(f"the synthetic dataset needs at least 3 subjects (got {n_subjects})")
    keys = [subject_key(i) for i in range(1, n_subjects + 1)]
    n_test = max(1, round(0.2 * n_subjects))
    n_val = max(1, round(0.05 * n_subjects))
    n_train = n_subjects - n_test - n_val
    return SubjectSplit(tuple(keys[:n_train]), tuple(keys[n_train:n_train + n_val]), tuple(keys[n_train + n_val:]))


def split_for(dataset: str, n_synthetic_subjects: int, lab_root: str | Path | None = None) -> SubjectSplit:
    """The subjects of `dataset`: MoVi's published split, the synthetic one's, or a lab's subject folders
    (`sources.lab`: each subject.toml's `split`; `lab_root` is the configured D3KE_LAB_ROOT)."""
    if dataset == "lab":
        from d3ke_assets import settings
        from d3ke_assets.sources import lab

        return lab.lab_split(settings.lab_root(lab_root))
    return movi_split() if dataset == "movi" else synthetic_split(n_synthetic_subjects)
