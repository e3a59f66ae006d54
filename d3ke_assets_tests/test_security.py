"""Security defaults: crafted names cannot leave the data root, and nothing the project loads can
run code hidden in a pickle (checkpoints with weights_only=True, AMASS object arrays restricted)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from d3ke_assets.biomech.trials import TRIALS_FILE, read_subject_mocap
from d3ke_assets.defs.resources import DataRootResource
from d3ke_assets.errors import D3keError, RawDataError
from d3ke_assets.learning import training
from d3ke_assets.learning.model import build_backbone
from d3ke_assets.sources.amass_markers import _object_array_without_code


class _OpensAFile:
    """Unpickling this creates `path`: the side effect proves whether code ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.mark.parametrize("key", ["../../etc", "Subject_1/../../x", "/etc", "Subject_0", "subject_1", ""])
def test_a_crafted_partition_key_cannot_name_a_folder(tmp_path, key):
    data_root = DataRootResource(path=str(tmp_path))
    with pytest.raises(D3keError, match="is not a subject key like Subject_1"):
        data_root.asset_dir("frames", key)
    assert data_root.asset_dir("frames", "Subject_12") == tmp_path.resolve() / "frames" / "Subject_12"


@pytest.mark.parametrize("field,value", [("name", "../../escape"), ("trc", "/etc/passwd"), ("name", "a/b"),
                                         ("trc", "..")])
def test_a_crafted_trial_name_in_the_data_is_refused(tmp_path, field, value):
    trial = {"name": "walking", "trc": "walking.trc", field: value}
    (tmp_path / TRIALS_FILE).write_text(json.dumps({
        "subject": "Subject_1", "mass_kg": 70.0, "static": {"name": "static", "trc": "static.trc"}, "trials": [trial]}))
    with pytest.raises(D3keError, match=rf"{TRIALS_FILE}: .* is not a plain name"):
        read_subject_mocap(tmp_path)


def test_checkpoints_and_weights_files_never_run_pickled_code(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "last.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 0, "extra": _OpensAFile(marker)}, evil)
    with pytest.raises(D3keError, match="only plain state_dict bundles are loaded"):
        training.load_checkpoint(evil)
    with pytest.raises(D3keError, match="not a mobilenet_v3_small state_dict"):
        build_backbone("mobilenet_v3_small", evil)
    assert not marker.exists()
    plain = tmp_path / "plain.pt"  # the same bundle without the object loads
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, plain)
    assert training.load_checkpoint(plain)["epoch"] == 3


def _npz_with_object_array(path: Path, key: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{key}.npy", buf.getvalue())


def test_amass_object_arrays_are_read_without_running_code(tmp_path):
    good = tmp_path / "good_poses.npz"
    _npz_with_object_array(good, "gender", np.array("female", dtype=object))
    assert _object_array_without_code(good, "gender").item() == "female"
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil_poses.npz"
    _npz_with_object_array(evil, "gender", np.array([_OpensAFile(marker)], dtype=object))
    with pytest.raises(RawDataError, match=r"evil_poses.npz: 'gender' is not a plain array \(refused to load"):
        _object_array_without_code(evil, "gender")
    assert not marker.exists()
