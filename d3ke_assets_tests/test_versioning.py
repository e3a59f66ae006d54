"""The one versioned path: stamps, reuse, failed builds, and who may touch a stamp."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from d3ke_assets import versioning

PACKAGE = Path(versioning.__file__).parent


def test_only_the_versioning_module_reads_or_writes_a_stamp():
    """Every other module goes through `versioning` (the assets through `defs/versioned.py`)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == Path(versioning.__file__):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            literal = isinstance(node, ast.Constant) and isinstance(node.value, str) and "_stamp.json" in node.value
            name = (isinstance(node, ast.Name) and node.id == "STAMP_NAME") or \
                (isinstance(node, (ast.Attribute)) and node.attr in ("STAMP_NAME", "_read", "_write")) or \
                (isinstance(node, ast.alias) and node.name in ("STAMP_NAME", "_read", "_write"))
            if literal or name:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert offenders == []


def test_every_asset_builds_through_the_one_entry_point():
    from d3ke_assets.definitions import ALL_ASSETS

    assert len(ALL_ASSETS) == 13
    for asset in ALL_ASSETS:
        source = Path(asset.op.compute_fn.decorated_fn.__code__.co_filename).read_text()
        body = ast.get_source_segment(source, next(
            n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == asset.op.name))
        assert "build_versioned(" in body or "versioned_output(" in body, asset.key


def test_build_reuses_a_current_output_and_rebuilds_a_changed_one(tmp_path):
    folder = tmp_path / "out"
    calls = []

    def build(target: Path):
        calls.append(target)
        (target / "value.txt").write_text(str(len(calls)))

    stamp = versioning.version_stamp("1", {"a": 1}, {"input": "v1"})
    assert versioning.build_if_stale(folder, stamp, build) == (stamp, False)
    assert calls[0] != folder  # written to a temporary sibling, then swapped in
    assert versioning.build_if_stale(folder, stamp, build) == (stamp, True)
    assert len(calls) == 1 and versioning.recorded_data_version(folder) == stamp
    changed = versioning.version_stamp("1", {"a": 1}, {"input": "v2"})
    assert changed != stamp
    assert versioning.build_if_stale(folder, changed, build) == (changed, False)
    assert (folder / "value.txt").read_text() == "2"


def test_a_failed_build_keeps_the_previous_complete_output(tmp_path):
    folder = tmp_path / "out"
    versioning.build_if_stale(folder, "s1", lambda t: (t / "x").write_text("old"))

    def dies(target: Path):
        (target / "x").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        versioning.build_if_stale(folder, "s2", dies)
    assert (folder / "x").read_text() == "old" and versioning.is_current(folder, "s1")
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["out"]  # no temporary left


def test_an_in_place_build_is_not_complete_while_it_runs_and_keeps_its_parts(tmp_path):
    folder = tmp_path / "out"
    versioning.build_if_stale(folder, "s1", lambda f: (f / "part").write_text("kept"), in_place=True)
    seen = {}

    def dies(target: Path):
        seen["complete_during_build"] = versioning.is_complete(target)
        seen["part"] = (target / "part").read_text()
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        versioning.build_if_stale(folder, "s2", dies, in_place=True)
    assert seen == {"complete_during_build": False, "part": "kept"}
    assert not versioning.is_complete(folder)  # neither s1 nor s2: the folder was being rewritten


def test_content_versioned_outputs_report_their_content_even_when_reused(tmp_path):
    folder = tmp_path / "raw"
    content = lambda f: (f / "manifest.txt").read_text()  # noqa: E731
    assert versioning.build_if_stale(folder, "s", lambda t: (t / "manifest.txt").write_text("d1"),
                                     content_version=content) == ("d1", False)
    (folder / "manifest.txt").write_text("d2")  # e.g. `d3ke verify --write-manifest` after a deliberate change
    checked = []
    assert versioning.build_if_stale(folder, "s", lambda t: None, content_version=content,
                                     on_reuse=checked.append) == ("d2", True)
    assert checked == [folder]


def test_units_inside_an_output_use_the_same_stamps(tmp_path):
    unit = tmp_path / "ik" / "walking"
    with versioning.stamped_dir(unit, "trial-1") as tmp:
        assert not versioning.is_current(unit, "trial-1")
        (tmp / "walking.mot").write_text("solved")
    assert versioning.is_current(unit, "trial-1") and not versioning.is_current(unit, "trial-2")
    with pytest.raises(RuntimeError):
        with versioning.stamped_dir(unit, "trial-2") as tmp:
            raise RuntimeError("IK failed")
    assert versioning.is_current(unit, "trial-1") and (unit / "walking.mot").read_text() == "solved"
