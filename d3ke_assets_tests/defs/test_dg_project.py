"""The repository is a `dg` project ([tool.dg] in pyproject.toml): `dg check defs` and `dg list defs`
run from the repository root with the venv's `dg` and find the project's definitions."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ASSETS = ["opensim_model", "raw_subject", "mocap_markers", "opensim_gt", "frames", "frame_model",
          "sequence_model", "subject_evaluation", "evaluation", "robustness_report", "current_policy_evaluation",
          "backbone_study", "backbone_comparison"]


def _dg(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    dg = Path(sys.executable).parent / "dg"  # the venv's, installed with dagster-dg-cli
    if not dg.is_file():
        pytest.fail(f"{dg} is missing: install the project's dependencies (dagster-dg-cli) into this venv")
    env = {**os.environ, "D3KE_DATA_ROOT": str(tmp_path / "data"), "D3KE_PRESET": "smoke",
           "DAGSTER_HOME": str(tmp_path / "dagster"), "PYTHONPATH": str(REPO), "NO_COLOR": "1",
           "DAGSTER_DISABLE_TELEMETRY": "1"}
    (tmp_path / "dagster").mkdir(exist_ok=True)
    return subprocess.run([str(dg), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_dg_check_defs_passes(tmp_path):
    done = _dg("check", "defs", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_dg_list_defs_lists_the_assets_and_their_checks(tmp_path):
    done = _dg("list", "defs", "--json", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = json.loads(done.stdout)
    assert sorted(a["asset_key"] for a in listed["assets"]) == sorted(ASSETS)
    deps = {a["asset_key"]: sorted(a["dependency_keys"]) for a in listed["assets"]}
    assert deps["opensim_gt"] == ["mocap_markers", "opensim_model"]
    assert deps["subject_evaluation"] == ["frame_model", "frames", "opensim_model", "sequence_model"]
    assert deps["evaluation"] == ["subject_evaluation"]
    assert sorted(c["key"] for c in listed["asset_checks"]) == [
        "frame_model:validation_error_below_gate", "frames:labelled_frames_stored",
        "opensim_gt:ik_marker_error_below_threshold", "opensim_gt:label_frames_match_video",
        "opensim_gt:labels_have_no_nan", "sequence_model:sequence_model_not_worse_than_frame_model"]
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())  # listing writes no data
