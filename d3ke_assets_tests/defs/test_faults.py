"""Surviving faults: SIGKILL in the middle of opensim_gt, frames and training, two runs on one
partition at once, and a disk that fills up during a write.

The truth is an uninterrupted run of the same assets on a copy of the same inputs: after a kill
and a rerun, the outputs must be identical to it (same data versions, same arrays and bytes),
and at no point may a half-written output be taken for complete.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.defs.runner import materialize_graph
from d3ke_assets.defs.constants import FRAMES, OPENSIM_GT, SUBJECT_ASSETS
from d3ke_assets.defs.versioned import input_version
from d3ke_assets.definitions import ALL_ASSETS
from d3ke_assets.errors import D3keError
from d3ke_assets.frames import processing
from d3ke_assets.learning import training
from d3ke_assets.storage import TMP_MARK, atomic_write_bytes
from d3ke_assets.versioning import is_complete, recorded_data_version

CHILD = Path(__file__).with_name("fault_child.py")
SUBJECTS = ["Subject_1", "Subject_2", "Subject_3"]  # smoke: train, validation, test
PER_SUBJECT = ["raw_subject", "mocap_markers", "opensim_gt", "frames"]


def _resources(root: Path) -> dict:
    return {"data_root": DataRootResource(path=str(root)), "dataset": DatasetResource(name="synthetic", preset="smoke"),
            "mlflow": MlflowTrackingResource(data_root=str(root))}


def _start(root: Path, asset: str, partition: str | None, pause: str = "none",
           seconds: float | str | None = None) -> subprocess.Popen:
    args = [sys.executable, str(CHILD), str(root), asset, partition or "-", pause]
    if seconds is not None:
        args.append(str(seconds))
    env = {**os.environ, "D3KE_PRESET": "smoke", "D3KE_DATA_ROOT": str(root)}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for_line(proc: subprocess.Popen, prefix: str, timeout_s: float = 240.0, anywhere: bool = False) -> list[str]:
    """Lines the child printed up to one starting with `prefix` (containing it, with `anywhere`);
    its stdout is read line by line."""
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"child exited (code {proc.wait()}) before {prefix}:\n" + "".join(lines[-30:]))
        lines.append(line)
        if line.startswith(prefix) or (anywhere and prefix in line):
            return lines
    proc.kill()
    raise AssertionError(f"no {prefix} within {timeout_s} s:\n" + "".join(lines[-30:]))


def _wait_until_blocked_on_lock(proc: subprocess.Popen) -> list[str]:
    """Lines a second run printed up to saying it waits for the writer of the same folder; it must
    still be running (waiting, not taking the half-written folder)."""
    lines = _wait_for_line(proc, "being written by another run: waiting", anywhere=True)
    assert proc.poll() is None, "".join(lines[-30:])
    return lines


def _kill_when_paused(root: Path, asset: str, partition: str | None, pause: str) -> None:
    proc = _start(root, asset, partition, pause)
    _wait_for_line(proc, "PAUSED")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _run(root: Path, asset: str, partition: str | None) -> tuple[str, str]:
    """Materialize in a child process: (data version, everything it printed)."""
    proc = _start(root, asset, partition)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    line = [x for x in out.splitlines() if x.startswith(f"MATERIALIZED {asset} ")][-1]
    return line.split("version=")[1].split()[0], out


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"*{TMP_MARK}*")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of every per-subject asset for three subjects, then the frame model;
    and a pristine copy of the inputs (model, raw, mocap) to rerun from."""
    root = tmp_path_factory.mktemp("uninterrupted")
    assets = [a for a in ALL_ASSETS if a.key in SUBJECT_ASSETS or a.key.to_user_string() == "opensim_model"]
    with dg.instance_for_test() as instance:
        summary = materialize_graph(dg.Definitions(assets=assets, resources=_resources(root)), instance, SUBJECTS,
                                    log=lambda m: None)
    assert not summary.failed, [r.error for r in summary.failed]
    inputs = tmp_path_factory.mktemp("inputs")
    for name in ("opensim_model", "raw_subject", "mocap_markers"):
        shutil.copytree(root / name, inputs / name)
    model_version, _ = _run(root, "frame_model", None)
    return {"root": root, "inputs": inputs, "frame_model_version": model_version}


def _fresh_from_inputs(reference, tmp_path: Path, *extra: str) -> Path:
    """A data root holding the pristine inputs plus copies of `extra` reference outputs."""
    root = tmp_path / "data"
    shutil.copytree(reference["inputs"], root)
    for name in extra:
        shutil.copytree(reference["root"] / name, root / name)
    return root


def test_sigkill_during_opensim_gt_then_rerun_matches_an_uninterrupted_run(reference, tmp_path):
    root = _fresh_from_inputs(reference, tmp_path)
    _kill_when_paused(root, "opensim_gt", "Subject_1", "second_trial")
    out = root / "opensim_gt" / "Subject_1"
    # killed mid-subject: one trial solved and kept, the subject not complete
    assert not is_complete(out)
    solved = [d.name for d in (out / "ik").iterdir() if is_complete(d)]
    assert len(solved) == 1, solved
    assert _temporaries(root), "the half-written trial should be left in a temporary folder"
    with pytest.raises(D3keError, match="opensim_gt is not materialized for Subject_1"):
        input_version(DataRootResource(path=str(root)), OPENSIM_GT, "Subject_1")
    frames_run = _start(root, "frames", "Subject_1")  # downstream refuses the incomplete output
    out_text, _ = frames_run.communicate(timeout=300)
    assert frames_run.returncode == 1 and "opensim_gt is not materialized for Subject_1" in out_text

    version, log = _run(root, "opensim_gt", "Subject_1")
    ref = reference["root"] / "opensim_gt" / "Subject_1"
    assert version == recorded_data_version(ref) == recorded_data_version(out)
    assert "reused=False" in log
    summary = json.loads((out / "summary.json").read_text())  # the rerun kept what the killed run finished
    assert summary["scale_reused"] is True
    assert {t["name"]: t["reused"] for t in summary["trials"]}[solved[0]] is True
    assert sum(t["reused"] for t in summary["trials"]) == 1
    with np.load(out / "labels.npz") as got, np.load(ref / "labels.npz") as want:
        assert sorted(got.files) == sorted(want.files)
        for name in want.files:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert (out / "labels.json").read_text() == (ref / "labels.json").read_text()
    assert not _temporaries(root)


def test_sigkill_during_frames_then_rerun_matches_an_uninterrupted_run(reference, tmp_path):
    root = _fresh_from_inputs(reference, tmp_path, "opensim_gt")
    _kill_when_paused(root, "frames", "Subject_1", "third_shard_frame")
    assert not (root / "frames" / "Subject_1").exists()  # only a temporary sibling was written
    partial = [p for p in _temporaries(root) if p.parent == root / "frames"]
    assert partial and any(p.suffix == ".jpgs" for p in partial[0].iterdir())
    with pytest.raises(D3keError, match="frames is not materialized for Subject_1"):
        input_version(DataRootResource(path=str(root)), FRAMES, "Subject_1")

    version, _ = _run(root, "frames", "Subject_1")
    out, ref = root / "frames" / "Subject_1", reference["root"] / "frames" / "Subject_1"
    assert version == recorded_data_version(ref)
    assert processing.read_index(out).equals(processing.read_index(ref))
    shards = sorted(p.name for p in ref.glob("*.jpgs"))
    assert shards and sorted(p.name for p in out.glob("*.jpgs")) == shards
    for name in shards:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert not _temporaries(root)


def test_sigkill_during_training_resumes_from_its_checkpoint_and_matches(reference, tmp_path):
    root = _fresh_from_inputs(reference, tmp_path, "opensim_gt", "frames")
    _kill_when_paused(root, "frame_model", None, "epoch_2")
    folder = root / "frame_model"
    assert not is_complete(folder)
    assert training.load_checkpoint(folder / training.CHECKPOINT)["epoch"] == 0  # epoch 1 of 2 was saved

    version, log = _run(root, "frame_model", None)
    assert "resuming from" in log and "after epoch 1" in log
    assert version == reference["frame_model_version"]
    got = training.load_checkpoint(folder / training.CHECKPOINT)
    want = training.load_checkpoint(reference["root"] / "frame_model" / training.CHECKPOINT)
    assert got["epoch"] == want["epoch"] == 1
    for name, tensor in want["model"].items():
        torch.testing.assert_close(got["model"][name], tensor, rtol=0, atol=0, msg=name)
    assert not _temporaries(root)


def test_two_runs_on_one_partition_one_waits_and_reuses(reference, tmp_path):
    root = _fresh_from_inputs(reference, tmp_path, "opensim_gt")
    # the first holds the write lock, paused mid-write until the second says it is waiting for it
    # (a fixed pause raced the second's start-up: importing the project can take longer)
    first = _start(root, "frames", "Subject_2", "third_shard_frame", seconds="SIGUSR1")
    _wait_for_line(first, "PAUSED")
    second = _start(root, "frames", "Subject_2")
    seen = _wait_until_blocked_on_lock(second)
    first.send_signal(signal.SIGUSR1)
    out_first, _ = first.communicate(timeout=300)
    rest, _ = second.communicate(timeout=300)
    out_second = "".join(seen) + rest
    assert first.returncode == 0 and second.returncode == 0, out_first[-2000:] + out_second[-2000:]
    assert "reused=False" in out_first and "reused=True" in out_second
    out, ref = root / "frames" / "Subject_2", reference["root"] / "frames" / "Subject_2"
    assert processing.read_index(out).equals(processing.read_index(ref))
    assert not _temporaries(root)


def test_a_run_waiting_on_a_killed_writer_takes_over(reference, tmp_path):
    root = _fresh_from_inputs(reference, tmp_path, "opensim_gt")
    first = _start(root, "frames", "Subject_3", "third_shard_frame")
    _wait_for_line(first, "PAUSED")
    second = _start(root, "frames", "Subject_3")
    seen = _wait_until_blocked_on_lock(second)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    out_second = "".join(seen) + second.communicate(timeout=300)[0]
    assert second.returncode == 0 and "reused=False" in out_second, out_second[-2000:]
    out, ref = root / "frames" / "Subject_3", reference["root"] / "frames" / "Subject_3"
    assert processing.read_index(out).equals(processing.read_index(ref))
    assert not _temporaries(root)  # the dead writer's temporary folder was removed


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (needs root to mount)."""
    if os.geteuid() != 0:
        if os.environ.get("D3KE_REQUIRE_SERVERS") == "1":
            pytest.fail("the disk-full test mounts a tmpfs and needs root")
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small_disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave_bytes: int) -> None:
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(free - leave_bytes, 0))


def test_a_full_disk_during_a_file_write_keeps_the_old_file(small_disk):
    target = small_disk / "labels.json"
    atomic_write_bytes(target, b"complete\n")
    _fill(small_disk, 16 << 10)
    with pytest.raises(D3keError, match=r"the disk is full: writing .*labels.json failed.*D3KE_DATA_ROOT"):
        atomic_write_bytes(target, b"x" * (1 << 20))
    assert target.read_bytes() == b"complete\n"
    assert not _temporaries(small_disk)


def test_a_full_disk_during_frames_fails_clearly_and_keeps_the_complete_output(reference, tmp_path, small_disk,
                                                                               monkeypatch):
    root = _fresh_from_inputs(reference, tmp_path, "opensim_gt")
    (small_disk / "frames").mkdir()
    shutil.copytree(reference["root"] / "frames" / "Subject_1", small_disk / "frames" / "Subject_1")
    (root / "frames").symlink_to(small_disk / "frames")  # the frames stage writes to the small disk
    before = recorded_data_version(root / "frames" / "Subject_1")
    _fill(small_disk, 20 << 10)
    # the space check before writing passes (another process fills the disk afterwards) ...
    from d3ke_assets.defs import frames_assets
    monkeypatch.setattr(frames_assets, "ensure_free_space", lambda *a, **k: None)
    frames = [a for a in ALL_ASSETS if a.key.to_user_string() == "frames"][0]
    changed = frames.map_asset_specs(lambda spec: spec.replace_attributes(code_version="changed"))  # must rebuild
    result = dg.materialize([changed], partition_key="Subject_1", resources=_resources(root), raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0].step_failure_data.user_failure_data
    assert failure.description.startswith("the disk is full: writing ")
    assert "Subject_1" in failure.description and "nothing was replaced" in failure.description
    # ... and the previous complete output is untouched, with no temporaries left
    assert recorded_data_version(root / "frames" / "Subject_1") == before
    ref = reference["root"] / "frames" / "Subject_1"
    assert processing.read_index(root / "frames" / "Subject_1").equals(processing.read_index(ref))
    assert not _temporaries(small_disk)
    assert pq.read_table(root / "frames" / "Subject_1" / processing.INDEX_NAME).num_rows > 0
