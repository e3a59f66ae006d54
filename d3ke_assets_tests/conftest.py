"""Shared fixtures: a generated generic model and one synthetic subject (smoke preset)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

# Tests never touch the repository's data/ or the user's Dagster home.
os.environ["D3KE_PRESET"] = "smoke"
os.environ.pop("D3KE_DATASET", None)

from d3ke_assets.biomech import model_builder  # noqa: E402
from d3ke_assets.settings import PRESETS  # noqa: E402
from d3ke_assets.sources import raw  # noqa: E402

SMOKE = PRESETS["smoke"].synthetic


@pytest.fixture(scope="session")
def generic_model(tmp_path_factory) -> tuple[Path, str]:
    """(path, data version) of the generic model."""
    path = model_builder.ensure_model(tmp_path_factory.mktemp("model"))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory, generic_model) -> Path:
    """A data root holding synthetic Subject_1 (smoke size, seed 0)."""
    root = tmp_path_factory.mktemp("data")
    raw.synthetic_subject(root, "Subject_1", SMOKE, 0, generic_model[0])
    return root


@pytest.fixture(scope="session")
def smoke_subject(smoke_root) -> Path:
    return raw.raw_dir(smoke_root, "Subject_1")


SMOKE_CROP_PX = 64


@pytest.fixture(scope="session")
def smoke_frames(tmp_path_factory, smoke_root, smoke_subject, generic_model) -> dict:
    """Subject_1's labels (opensim_gt) and frames at 64 px: {base, cameras, labels, names, summary}."""
    from d3ke_assets.biomech import ground_truth as gt
    from d3ke_assets.frames import processing as fp
    from d3ke_assets.sources import mocap

    base = tmp_path_factory.mktemp("smoke_frames")
    (base / "mocap").mkdir()
    mocap.synthetic_mocap(smoke_subject, base / "mocap")
    gt.compute_subject(base / "mocap", generic_model[0], base / "gt")
    labels, names = gt.load_labels(base / "gt")
    cameras = raw.camera_videos(smoke_root, "Subject_1")
    (base / "frames").mkdir()
    summary = fp.process_subject("Subject_1", cameras, labels, names, base / "gt" / "labels.npz", base / "frames",
                                 SMOKE_CROP_PX)
    return {"base": base, "cameras": cameras, "labels": labels, "names": names, "summary": summary}
