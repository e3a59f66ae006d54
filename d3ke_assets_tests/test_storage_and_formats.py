"""Atomic writes and OpenSim file formats."""

import numpy as np
import opensim as osim
import pytest

from d3ke_assets.biomech.formats import MarkerTrajectories, read_mot, read_trc, write_mot, write_trc
from d3ke_assets.errors import D3keError
from d3ke_assets.storage import atomic_dir, atomic_write_text


def test_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "complete")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "half").write_text("half")
            raise RuntimeError("killed")
    assert not (tmp_path / "folder").exists()
    assert target.read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_dir_replaces_a_complete_folder_only_when_the_new_one_is_complete(tmp_path):
    with atomic_dir(tmp_path / "f") as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "f") as tmp:
            (tmp / "v").write_text("2")
            raise RuntimeError
    assert (tmp_path / "f" / "v").read_text() == "1"
    with atomic_dir(tmp_path / "f") as tmp:
        (tmp / "v").write_text("3")
    assert (tmp_path / "f" / "v").read_text() == "3"


def test_a_stop_signal_between_the_two_renames_puts_the_complete_folder_back(tmp_path, monkeypatch):
    """Ctrl-C / SIGTERM raise KeyboardInterrupt at any bytecode: here just after the old folder moved aside."""
    import os

    from d3ke_assets import storage

    with atomic_dir(tmp_path / "f") as tmp:
        (tmp / "v").write_text("1")
    real_replace, calls = os.replace, []

    def replace_then_interrupt(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the new folder is about to move in
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "f") as tmp:
            (tmp / "v").write_text("2")
    monkeypatch.undo()
    assert (tmp_path / "f" / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no temporaries


def test_trc_round_trip_with_gaps_and_opensim_reads_it(tmp_path):
    pos = np.random.default_rng(1).normal(0, 0.5, (12, 3, 3))
    pos[4, 1] = np.nan  # a gap
    traj = MarkerTrajectories(["A", "B", "C"], np.arange(12) / 120.0, pos, 120.0)
    write_trc(tmp_path / "m.trc", traj)
    back = read_trc(tmp_path / "m.trc")
    np.testing.assert_allclose(back.positions_m, pos, atol=1e-8)
    table = osim.TimeSeriesTableVec3(str(tmp_path / "m.trc"))
    assert table.getNumRows() == 12 and list(table.getColumnLabels()) == ["A", "B", "C"]
    assert table.getRowAtIndex(2)[0][1] == pytest.approx(pos[2, 0, 1] * 1000, abs=1e-4)


def test_mot_is_degrees_for_rotations_and_opensim_reads_it(tmp_path):
    t = np.arange(5) / 30.0
    values = np.column_stack([np.linspace(0, np.pi / 2, 5), np.linspace(0.9, 1.0, 5)])
    write_mot(tmp_path / "q.mot", t, ["knee_angle_r", "pelvis_ty"], values, [True, False])
    _, names, back, in_degrees = read_mot(tmp_path / "q.mot")
    assert in_degrees and names == ["knee_angle_r", "pelvis_ty"]
    assert back[-1, 0] == pytest.approx(90.0) and back[-1, 1] == pytest.approx(1.0)
    table = osim.TimeSeriesTable(str(tmp_path / "q.mot"))
    assert table.getNumRows() == 5 and table.getDependentColumn("knee_angle_r")[4] == pytest.approx(90.0)


def test_trc_with_unknown_units_names_the_file(tmp_path):
    traj = MarkerTrajectories(["A"], np.zeros(1), np.zeros((1, 1, 3)), 120.0)
    write_trc(tmp_path / "m.trc", traj)
    text = (tmp_path / "m.trc").read_text().replace("\tmm\t", "\tinches\t")
    (tmp_path / "m.trc").write_text(text)
    with pytest.raises(D3keError, match="m.trc.*units"):
        read_trc(tmp_path / "m.trc")


def test_unreadable_numbers_name_the_file_and_line(tmp_path):
    traj = MarkerTrajectories(["A"], np.arange(3) / 120.0, np.zeros((3, 1, 3)), 120.0)
    write_trc(tmp_path / "m.trc", traj)
    lines = (tmp_path / "m.trc").read_text().splitlines()
    lines[7] = lines[7].replace("0.00000", "abc", 1)
    (tmp_path / "m.trc").write_text("\n".join(lines) + "\n")
    with pytest.raises(D3keError, match=r"m.trc: line 8 is not numbers"):
        read_trc(tmp_path / "m.trc")
    with pytest.raises(D3keError, match="q.mot"):
        read_mot(tmp_path / "q.mot")
