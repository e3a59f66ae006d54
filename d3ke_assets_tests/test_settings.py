"""One configuration: resolved once at the edge, passed down, the same for partitions and resources."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg
import pytest

from d3ke_assets import settings
from d3ke_assets.errors import D3keError

PACKAGE = Path(settings.__file__).parent
EDGE = {"cli.py", "definitions.py"}  # where the environment is read, once


def test_no_module_below_the_edge_reads_the_environment():
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if str(rel) in EDGE or rel.parts[0] in ("deploy", "benchmarks", "ui"):
            continue  # servers and benchmarks start processes with environments of their own
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                if "MLFLOW_DISABLE_TELEMETRY" in lines[node.lineno - 1]:
                    continue  # switches MLflow's own telemetry off for its client: no setting of ours
                readers.append(f"{rel}:{node.lineno}")
    assert readers == []


def test_settings_from_the_environment_then_arguments():
    env = {"D3KE_PRESET": "smoke", "D3KE_SEED": "7", "D3KE_DATASET": "synthetic", "UNRELATED": "x"}
    run = settings.Settings.from_environment(env, preset="demo")
    assert (run.preset, run.seed, run.dataset, run.data_root) == ("demo", 7, "synthetic", "data")
    assert settings.Settings.from_environment_sources(env) == {
        "preset": "D3KE_PRESET", "seed": "D3KE_SEED", "dataset": "D3KE_DATASET"}
    with pytest.raises(D3keError, match="'kinetics'"):
        settings.Settings.from_environment({"D3KE_DATASET": "kinetics"})
    with pytest.raises(D3keError, match="preset 'huge'"):
        settings.Settings(preset="huge")
    assert settings.Settings.from_environment({"D3KE_IK_BACKEND": "torch"}).ik_backend == "torch"
    with pytest.raises(D3keError, match="ik_backend 'ceres': choose one of opensim, torch"):
        settings.Settings.from_environment({"D3KE_IK_BACKEND": "ceres"})


def test_one_preset_table_holds_data_training_and_sequence_settings():
    from d3ke_assets.learning import presets

    for name, preset in settings.PRESETS.items():
        run = settings.Settings(preset=name, backbone_weights="none")
        train = presets.train_config(run)
        assert train.backbone == preset.train["backbone"] and train.epochs == preset.train["epochs"]
        assert presets.sequence_config(run).receptive_field == preset.sequence["receptive_field"]
    with pytest.raises(D3keError, match="D3KE_BACKBONE_WEIGHTS"):
        presets.train_config(settings.Settings(preset="paper"))  # needs ImageNet weights, not downloaded


def test_partitions_and_resources_come_from_the_same_settings(tmp_path):
    from d3ke_assets.definitions import build_definitions

    run = settings.Settings(data_root=str(tmp_path), preset="smoke", synthetic_subjects=5, ik_backend="torch")
    defs = build_definitions(run)
    graph = defs.resolve_asset_graph()
    keys = graph.get(dg.AssetKey("raw_subject")).partitions_def.get_partition_keys()
    assert keys == [f"Subject_{i}" for i in range(1, 6)]
    dataset = defs.resources["dataset"]
    assert dataset.split().all == tuple(keys) and dataset.run_settings(str(tmp_path)) == run


def test_environment_values_reach_resources_as_env_vars(tmp_path):
    from d3ke_assets.definitions import build_definitions

    run = settings.Settings(data_root=str(tmp_path), preset="smoke")
    defs = build_definitions(run, {"preset": "D3KE_PRESET", "data_root": "D3KE_DATA_ROOT"})
    assert defs.resources["dataset"].preset == dg.EnvVar("D3KE_PRESET")
    assert defs.resources["data_root"].path == dg.EnvVar("D3KE_DATA_ROOT")
    assert defs.resources["dataset"].name == "synthetic"  # not from the environment: the value itself
