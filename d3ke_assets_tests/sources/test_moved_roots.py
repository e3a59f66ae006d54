"""A data root (or MoVi root) that is copied, moved or mounted elsewhere is verified where it is.

Each test deletes the original after copying it, and flips a byte with its modification time put back,
so neither the original's files nor the original's cached hashes (the hash cache is copied with the
data root) can make the copy pass.
"""

import hashlib
import json
import os
import shutil

import pytest

from d3ke_assets.cli import main
from d3ke_assets.errors import D3keError, RawDataError
from d3ke_assets.sources import checksums, movi, raw
from d3ke_assets_tests.conftest import SMOKE
from d3ke_assets_tests.defs.test_dagster_assets import _fake_movi

VIDEO = "F_PG1_Subject_1_L.avi"


def _flip_a_byte(path) -> tuple[str, str]:
    """Flip one byte in the middle of `path`, keeping its size and modification time: (sha256 before, after)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    before = hashlib.sha256(data).hexdigest()
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return before, hashlib.sha256(data).hexdigest()


@pytest.fixture
def original(tmp_path, smoke_root, generic_model):
    """A data root of its own (to delete), with the reuse check run there: its hash cache holds the
    original's paths."""
    root = tmp_path / "original"
    shutil.copytree(smoke_root, root)
    assert main(["verify", "--data-root", str(root), "--write-manifest"]) == 0  # recorded here, as if made here
    assert raw.synthetic_subject(root, "Subject_1", SMOKE, 0, generic_model[0]).reused
    return root


def _move(src, dst):
    shutil.copytree(src, dst)
    shutil.rmtree(src)
    return dst


def test_a_manifest_names_no_absolute_path_and_its_digest_does_not_depend_on_the_root(original, tmp_path):
    text = (original / "raw_subject" / "Subject_1" / "manifest.json").read_text()
    recorded = json.loads(text)
    assert (recorded["root"], recorded["base"]) == ("data_root", "raw_subject/Subject_1")
    assert str(tmp_path) not in text and "base_dir" not in text
    digest = checksums.Manifest.read(original / "raw_subject" / "Subject_1" / "manifest.json").digest
    copy = _move(original, tmp_path / "elsewhere")
    assert raw.synthetic_subject(copy, "Subject_1", SMOKE, 0, "unused.osim").data_version == digest


def test_verify_of_a_copied_data_root_passes_with_the_original_gone(original, tmp_path, capsys):
    copy = _move(original, tmp_path / "copy")
    n_files = len(raw.listed_files(copy / "raw_subject" / "Subject_1"))
    assert main(["verify", "--data-root", str(copy)]) == 0
    assert f"all {n_files} raw files of 1 subjects match" in capsys.readouterr().out


def test_verify_of_a_copied_data_root_names_the_byte_flipped_in_the_copy(original, tmp_path, capsys):
    copy = _move(original, tmp_path / "copy")
    video = copy / "raw_subject" / "Subject_1" / VIDEO
    expected, actual = _flip_a_byte(video)
    assert main(["verify", "--data-root", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"1 of {len(raw.listed_files(video.parent))} raw files are missing or corrupt" in out
    assert f"corrupt {video}\n          expected sha256 {expected}\n          actual   sha256 {actual}" in out


def test_the_reuse_check_of_a_copied_data_root_checks_the_copy(original, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)  # the original stays, intact: it must not answer for the copy
    video = copy / "raw_subject" / "Subject_1" / VIDEO
    _flip_a_byte(video)
    with pytest.raises(RawDataError, match=f"{video} is corrupt"):
        raw.synthetic_subject(copy, "Subject_1", SMOKE, 0, "unused.osim")
    with pytest.raises(RawDataError, match=f"{video} is corrupt"):
        raw.check_synthetic_subject(copy, "Subject_1", raw.hash_cache(copy))
    shutil.rmtree(original)
    with pytest.raises(RawDataError, match=f"{video} is corrupt"):  # and with the original gone
        raw.synthetic_subject(copy, "Subject_1", SMOKE, 0, "unused.osim")


def test_a_manifest_of_the_old_format_is_read_relative_to_where_it_is(original, tmp_path, capsys):
    """Format 1 held an absolute `base_dir`: a synthetic one is read as the files beside it."""
    path = original / "raw_subject" / "Subject_1" / "manifest.json"
    new = json.loads(path.read_text())
    old = {"subject": "Subject_1", "dataset": "synthetic", "base_dir": str(path.parent), "files": new["files"],
           "digest": new["digest"]}
    path.write_text(json.dumps(old))
    copy = _move(original, tmp_path / "copy")
    manifest = checksums.Manifest.read(copy / "raw_subject" / "Subject_1" / "manifest.json")
    assert manifest.folder(copy) == copy / "raw_subject" / "Subject_1" and manifest.digest == new["digest"]
    assert main(["verify", "--data-root", str(copy)]) == 0
    _, _ = capsys.readouterr(), _flip_a_byte(copy / "raw_subject" / "Subject_1" / VIDEO)
    assert main(["verify", "--data-root", str(copy)]) == 1
    assert f"corrupt {copy / 'raw_subject' / 'Subject_1' / VIDEO}" in capsys.readouterr().out


def test_a_manifest_whose_base_leaves_its_root_is_refused(original):
    path = original / "raw_subject" / "Subject_1" / "manifest.json"
    recorded = json.loads(path.read_text())
    path.write_text(json.dumps({**recorded, "base": "../../elsewhere"}))
    with pytest.raises(D3keError, match=f"{path}: manifest is not valid .*not a folder inside its root.*"
                                        "--write-manifest"):
        checksums.Manifest.read(path)


@pytest.fixture
def movi_subject(tmp_path, monkeypatch):
    """(data root, MoVi root) with Subject_1's manifest recorded; D3KE_MOVI_ROOT unset."""
    monkeypatch.delenv("D3KE_MOVI_ROOT", raising=False)
    movi_root, root = tmp_path / "movi", tmp_path / "root"
    _fake_movi(movi_root, [1], subject_without_pg2=3)
    root.mkdir()
    raw.movi_subject(root, "Subject_1", movi.MoviIndex.scan(movi_root))
    return root, movi_root


def test_a_movi_manifest_names_its_files_relative_to_the_movi_root(movi_subject):
    root, movi_root = movi_subject
    text = (root / "raw_subject" / "Subject_1" / "manifest.json").read_text()
    assert (json.loads(text)["root"], json.loads(text)["base"]) == ("movi_root", "")
    assert str(movi_root) not in text


def test_verify_of_a_moved_movi_root_checks_it_where_it_is(movi_subject, tmp_path, monkeypatch, capsys):
    root, movi_root = movi_subject
    moved = _move(movi_root, tmp_path / "mounted" / "movi")
    monkeypatch.setenv("D3KE_MOVI_ROOT", str(moved))
    assert main(["verify", "--data-root", str(root)]) == 0
    n_files = len(checksums.Manifest.read(root / "raw_subject" / "Subject_1" / "manifest.json").files)
    assert f"all {n_files} raw files of 1 subjects match" in capsys.readouterr().out

    video = moved / "dataverse_files" / VIDEO
    expected, actual = _flip_a_byte(video)
    assert main(["verify", "--data-root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"corrupt {video}\n          expected sha256 {expected}\n          actual   sha256 {actual}" in out


def test_verify_of_movi_manifests_without_the_movi_root_names_the_setting(movi_subject, capsys):
    root, _ = movi_subject
    assert main(["verify", "--data-root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "D3KE_MOVI_ROOT is not set" in err and "Subject_1" in err and len(err.splitlines()) == 1


def test_a_moved_movi_root_is_no_change_but_a_flipped_byte_in_it_is(movi_subject, tmp_path):
    root, movi_root = movi_subject
    manifest_path = root / "raw_subject" / "Subject_1" / "manifest.json"
    recorded = manifest_path.read_bytes()
    flipped = tmp_path / "flipped"
    shutil.copytree(movi_root, flipped)
    copy = _move(movi_root, tmp_path / "copy")
    again = raw.movi_subject(root, "Subject_1", movi.MoviIndex.scan(copy))
    assert again.reused and again.changed_files == []
    assert manifest_path.read_bytes() == recorded  # nothing to record: same names, same contents
    videos = raw.camera_videos(root, "Subject_1", copy)
    assert {v.video for v in videos} == {copy / "dataverse_files" / f"F_{c}_Subject_1_L.avi" for c in ("PG1", "PG2")}
    with pytest.raises(D3keError, match="D3KE_MOVI_ROOT is not set"):
        raw.camera_videos(root, "Subject_1")

    # a copy never hashed before, with a byte flipped and its mtime put back: the hash cache holds the
    # original's paths (and the first copy's), never this file's
    video = flipped / "dataverse_files" / VIDEO
    _flip_a_byte(video)
    with pytest.raises(RawDataError, match=f"{video} is corrupt.*--write-manifest"):
        raw.movi_subject(root, "Subject_1", movi.MoviIndex.scan(flipped))
    assert manifest_path.read_bytes() == recorded


def test_an_old_movi_manifest_is_read_under_the_movi_root_configured_now(movi_subject, tmp_path):
    root, movi_root = movi_subject
    path = root / "raw_subject" / "Subject_1" / "manifest.json"
    new = json.loads(path.read_text())
    path.write_text(json.dumps({"subject": "Subject_1", "dataset": "movi", "base_dir": str(movi_root),
                                "files": new["files"], "digest": new["digest"]}))
    copy = _move(movi_root, tmp_path / "copy")
    again = raw.movi_subject(root, "Subject_1", movi.MoviIndex.scan(copy))
    assert again.reused and again.data_version == new["digest"]
    assert json.loads(path.read_text()) == new  # rewritten in the current format
