"""raw_subject on a data root or MoVi root that was copied or moved: the reuse check looks at the files
where they are now, a moved root is no change, a byte flipped in the copy is."""

import shutil

import dagster as dg

from d3ke_assets_tests.defs.test_dagster_assets import _data_version, _failure, _fake_movi, _materialize
from d3ke_assets_tests.sources.test_moved_roots import _flip_a_byte

VIDEO = "F_PG1_Subject_1_L.avi"


def test_raw_subject_on_a_copied_data_root_reuses_the_copy_and_catches_its_flipped_byte(tmp_path):
    original = tmp_path / "original"
    original.mkdir()
    instance = dg.DagsterInstance.ephemeral()
    assert _materialize(["opensim_model"], original, instance).success
    first = _materialize(["raw_subject"], original, instance, "Subject_1")
    assert first.success
    version, _ = _data_version(first, "raw_subject")
    flipped = tmp_path / "flipped"
    shutil.copytree(original, flipped)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)

    again = _materialize(["raw_subject"], copy, instance, "Subject_1")
    assert again.success
    again_version, meta = _data_version(again, "raw_subject")
    assert again_version == version and meta["reused"].value is True

    video = flipped / "raw_subject" / "Subject_1" / VIDEO
    _flip_a_byte(video)
    bad = _materialize(["raw_subject"], flipped, instance, "Subject_1")
    assert not bad.success
    assert f"{video} is corrupt" in _failure(bad)


def test_raw_subject_of_a_moved_movi_root_is_reused_and_a_flipped_byte_there_fails(tmp_path):
    movi_root, root = tmp_path / "movi", tmp_path / "root"
    _fake_movi(movi_root, [1], subject_without_pg2=3)
    root.mkdir()
    instance = dg.DagsterInstance.ephemeral()
    first = _materialize(["raw_subject"], root, instance, "Subject_1", name="movi", movi_root=str(movi_root))
    assert first.success
    version, _ = _data_version(first, "raw_subject")
    flipped = tmp_path / "flipped"
    shutil.copytree(movi_root, flipped)
    moved = tmp_path / "mounted" / "movi"
    shutil.copytree(movi_root, moved)
    shutil.rmtree(movi_root)

    again = _materialize(["raw_subject"], root, instance, "Subject_1", name="movi", movi_root=str(moved))
    assert again.success
    again_version, meta = _data_version(again, "raw_subject")
    assert again_version == version and meta["reused"].value is True and meta["changed_files"].value == 0

    video = flipped / "dataverse_files" / VIDEO
    _flip_a_byte(video)
    bad = _materialize(["raw_subject"], root, instance, "Subject_1", name="movi", movi_root=str(flipped))
    assert not bad.success
    assert f"{video} is corrupt" in _failure(bad)
