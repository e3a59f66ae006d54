"""sha256 manifests, the hash cache and `d3ke verify`."""

import hashlib
import multiprocessing
import os
import shutil
import sqlite3

import pytest

from d3ke_assets.cli import main
from d3ke_assets.sources.checksums import DATA_ROOT, HashCache, build_manifest, sha256_file, sha256_files


def test_sha256_matches_the_published_test_vector(tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")  # FIPS 180-2 example
    assert sha256_file(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    (tmp_path / "big").write_bytes(big)
    assert sha256_files([tmp_path / "big", tmp_path / "abc"], workers=2)[0] == hashlib.sha256(big).hexdigest()


def test_hash_cache_rereads_nothing_for_unchanged_files(tmp_path):
    files = []
    for i in range(4):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(os.urandom(10_000 + i))
        files.append(p)
    cache = HashCache(tmp_path / "cache.sqlite")
    first = cache.digests(files)
    assert cache.files_hashed == 4
    assert all(first[p.resolve()] == hashlib.sha256(p.read_bytes()).hexdigest() for p in files)

    again = HashCache(tmp_path / "cache.sqlite")  # a new process would open the same store
    assert again.digests(files) == first
    assert again.files_hashed == 0 and again.bytes_hashed == 0

    files[2].write_bytes(os.urandom(10_002))  # same size, new content, new mtime
    st = files[2].stat()
    os.utime(files[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    third = again.digests(files)
    assert again.files_hashed == 1
    assert third[files[2].resolve()] == hashlib.sha256(files[2].read_bytes()).hexdigest() != first[files[2].resolve()]


def _open_and_hash(db_path, path, barrier, results):
    barrier.wait()  # every process opens the fresh cache at the same moment
    try:
        results.put(HashCache(db_path).digests([path])[path.resolve()])
    except Exception as exc:  # the parent asserts on it
        results.put(repr(exc))


def test_hash_cache_created_by_several_processes_at_once(tmp_path):
    """Runs that start together on a fresh data root all create the hash cache: each must get it.
    (Before the retry, SQLite refused the journal-mode switch in about half of these trials.)"""
    data = os.urandom(5000)
    (tmp_path / "x.bin").write_bytes(data)
    ctx = multiprocessing.get_context("fork")
    for trial in range(8):
        db_path = tmp_path / f"trial{trial}" / "hashes.sqlite"
        barrier, results = ctx.Barrier(6), ctx.Queue()
        processes = [ctx.Process(target=_open_and_hash, args=(db_path, tmp_path / "x.bin", barrier, results))
                     for _ in range(6)]
        for process in processes:
            process.start()
        got = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join()
        assert got == [hashlib.sha256(data).hexdigest()] * 6, f"trial {trial}: {got}"
        with sqlite3.connect(db_path) as con:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.fixture
def copied_root(tmp_path, smoke_root):
    root = tmp_path / "root"
    shutil.copytree(smoke_root / "raw_subject", root / "raw_subject")  # its manifests name files relative to it
    return root


def test_verify_passes_on_intact_files(copied_root, capsys):
    assert main(["verify", "--data-root", str(copied_root)]) == 0
    assert "match their manifests" in capsys.readouterr().out


def test_verify_catches_a_flipped_byte_and_a_missing_file(copied_root, capsys):
    subject = copied_root / "raw_subject" / "Subject_1"
    video = subject / "F_PG2_Subject_1_L.avi"
    expected = hashlib.sha256(video.read_bytes()).hexdigest()
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0x01
    video.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    (subject / "cameras" / "PG1.json").unlink()

    assert main(["verify", "--data-root", str(copied_root)]) == 1
    out = capsys.readouterr().out
    assert "Subject_1:" in out
    assert f"corrupt {video}" in out
    assert expected in out and actual in out
    assert f"missing {subject / 'cameras' / 'PG1.json'}" in out


def test_manifest_digest_changes_with_any_file(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode() * 100)
    cache = HashCache(tmp_path / "c.sqlite")
    before = build_manifest("Subject_1", "synthetic", tmp_path, ["a", "b"], cache, DATA_ROOT, "raw_subject/Subject_1").digest
    (tmp_path / "b").write_bytes(b"B" * 100)
    after = build_manifest("Subject_1", "synthetic", tmp_path, ["a", "b"], cache, DATA_ROOT, "raw_subject/Subject_1").digest
    assert before != after
    assert build_manifest("Subject_1", "synthetic", tmp_path, ["b", "a"], cache, DATA_ROOT, "raw_subject/Subject_1").digest == after


def test_verify_ignores_a_temporary_left_by_an_interrupted_write(copied_root, capsys):
    leftover = copied_root / "raw_subject" / "Subject_1.tmp-deadbeef"
    shutil.copytree(copied_root / "raw_subject" / "Subject_1", leftover)
    (leftover / "F_PG1_Subject_1_L.avi").write_bytes(b"half")
    assert main(["verify", "--data-root", str(copied_root), "--write-manifest"]) == 0
    assert "of 1 subjects" in capsys.readouterr().out
