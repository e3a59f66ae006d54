"""The UIs as a user meets them: the Dagster webserver (and daemon) on the project's workspace.yaml, driven
through GraphQL and rendered by headless Chromium, and the MLflow server on the project's store, read
through its REST API. Every server listens on 127.0.0.1 and runs on temporary folders."""

from __future__ import annotations

import json
import re

import pytest

from d3ke_assets.errors import D3keError
from d3ke_assets.evaluation.backbones import STUDY_BACKBONES
from d3ke_assets.benchmarks.load import load_environment, run_load
from d3ke_assets.sources.subjects import split_for
from d3ke_assets.ui import graphql as gql
from d3ke_assets.ui import servers
from d3ke_assets_tests.support import chromium as browser
from d3ke_assets_tests.support.servers import listening_addresses, mlflow_server, require_program, rest

N_SUBJECTS = 4  # one more than the smoke preset's three: D3KE_SYNTHETIC_SUBJECTS reaches the servers
SUBJECT_ASSETS = ["raw_subject", "mocap_markers", "opensim_gt", "frames"]


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    """(webserver, data root) of a webserver + daemon on a temporary DAGSTER_HOME and data root."""
    tmp = tmp_path_factory.mktemp("dagster_ui")
    root, home = tmp / "data", tmp / "dagster"
    root.mkdir()
    with servers.dagster_services(home, root, env=load_environment(N_SUBJECTS)) as (web, daemon):
        yield web, root


def test_webserver_shows_the_graph_and_materializes_a_subject_through_graphql(dagster_ui):
    from d3ke_assets.definitions import ALL_ASSETS

    web, root = dagster_ui
    assert listening_addresses(web.port) == {"127.0.0.1"}  # loopback only, not every interface
    subjects = list(split_for("synthetic", N_SUBJECTS).all)
    nodes = gql.graphql(web.url, """{ assetNodes { assetKey { path } isPartitioned partitionKeys
        dependencyKeys { path } } }""")["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert set(by_key) == {a.key.to_user_string() for a in ALL_ASSETS}
    for asset in ALL_ASSETS:
        node = by_key[asset.key.to_user_string()]
        assert {"/".join(d["path"]) for d in node["dependencyKeys"]} == {
            k.to_user_string() for k in asset.asset_deps[asset.key]}
        if asset.partitions_def is None:
            assert not node["isPartitioned"] and node["partitionKeys"] == []
        elif asset.key.to_user_string() == "backbone_study":  # one partition per backbone studied
            assert node["isPartitioned"] and node["partitionKeys"] == list(STUDY_BACKBONES)
        else:
            assert node["isPartitioned"] and node["partitionKeys"] == subjects

    # before the generic model exists a subject cannot be generated: the run fails with the asset's error
    failed_run = gql.launch_asset_run(web.url, ["raw_subject"], partition="Subject_4")
    with pytest.raises(D3keError, match=r"ended FAILURE: .*opensim_model is not materialized: materialize it first"):
        gql.wait_for_run(web.url, failed_run, timeout_s=300)

    model_run = gql.launch_asset_run(web.url, ["opensim_model"])
    gql.wait_for_run(web.url, model_run, timeout_s=300)  # queued: the daemon launches it
    subject_run = gql.launch_asset_run(web.url, SUBJECT_ASSETS, partition="Subject_1")
    record = gql.wait_for_run(web.url, subject_run, timeout_s=420)
    assert {"key": "dagster/partition", "value": "Subject_1"} in record["tags"]

    assert (root / "opensim_model" / "_stamp.json").is_file()
    for asset in SUBJECT_ASSETS:
        assert (root / asset / "Subject_1" / "_stamp.json").is_file(), asset
        assert not (root / asset / "Subject_2").exists(), f"{asset}: only the launched partition is built"
    seen = gql.graphql(web.url, """query Seen($keys: [AssetKeyInput!]!) { assetNodes(assetKeys: $keys) {
        assetKey { path } partitionStats { numMaterialized numPartitions numFailed }
        assetMaterializations(limit: 5) { partition runId tags { key value } } } }""",
                      {"keys": [{"path": [a]} for a in ["opensim_model", *SUBJECT_ASSETS]]})["assetNodes"]
    seen = {"/".join(n["assetKey"]["path"]): n for n in seen}
    for asset, run_id, partition in [("opensim_model", model_run, None),
                                     *[(a, subject_run, "Subject_1") for a in SUBJECT_ASSETS]]:
        events = seen[asset]["assetMaterializations"]
        assert [(e["runId"], e["partition"]) for e in events] == [(run_id, partition)], asset
        tags = {t["key"]: t["value"] for t in events[0]["tags"]}
        folder = root / asset / partition if partition else root / asset
        stamp = json.loads((folder / "_stamp.json").read_text())
        assert tags["dagster/data_version"] == stamp["data_version"], asset  # the version Dagster shows is on disk
        if partition:
            assert seen[asset]["partitionStats"] == {"numMaterialized": 1, "numPartitions": N_SUBJECTS,
                                                     "numFailed": int(asset == "raw_subject")}  # Subject_4


def _location_name(url: str) -> str:
    """The name of the webserver's only code location."""
    data = gql.graphql(url, """{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name
        location { name } } } ... on PythonError { message } } }""")["repositoriesOrError"]
    (node,) = gql.expect(data, "RepositoryConnection", "listing repositories")["nodes"]
    return node["location"]["name"]


def _names_missing(text: str, names: list[str]) -> list[str]:
    return [n for n in names if not re.search(rf"\b{re.escape(n)}\b", text)]


def test_asset_catalog_and_lineage_render_in_headless_chromium(dagster_ui, tmp_path):
    from d3ke_assets.definitions import ALL_ASSETS

    chromium = require_program("chromium")
    web, _ = dagster_ui
    catalog = browser.visible_text(browser.chromium_dom(f"{web.url}/assets", chromium=chromium))
    assert "Catalog" in catalog  # the app rendered, not only its HTML shell
    missing = _names_missing(catalog, [a.key.to_user_string() for a in ALL_ASSETS])
    assert not missing, f"asset names not in the rendered catalog: {missing}"
    assert "Join the Dagster community" not in catalog  # dagster.yaml's nux: enabled: false

    # the asset graph of one group: its assets as nodes, their neighbours in other groups as links
    location = _location_name(web.url)
    lineage_url = f"{web.url}/locations/{location}/asset-groups/biomech"
    lineage = browser.visible_text(browser.chromium_dom(lineage_url, chromium=chromium))
    missing = _names_missing(lineage, ["opensim_model", "mocap_markers", "opensim_gt", "raw_subject", "frames"])
    assert not missing, f"asset names not in the rendered biomech lineage: {missing}"
    stats = gql.graphql(web.url, """{ assetNodes(assetKeys: [{path: ["mocap_markers"]}]) {
        partitionStats { numMaterialized numPartitions } } }""")["assetNodes"][0]["partitionStats"]
    filled = 100 * stats["numMaterialized"] // stats["numPartitions"]  # 25 after the first test, else 0
    assert f"{filled}% filled" in lineage  # the node shows the instance's partition state
    png = browser.chromium_screenshot(lineage_url, tmp_path / "dagster_biomech_lineage.png", chromium=chromium)
    assert browser.png_size(png) == (1600, 1000)
    assert png.stat().st_size > 30_000  # a blank 1600x1000 page compresses to a few kB
    browser.copy_screenshot(png)  # kept when D3KE_SCREENSHOT_DIR is set


def test_backfill_of_every_subject_runs_through_the_daemon(dagster_ui):
    """`d3ke bench load`'s code path on four subjects: launchPartitionBackfill, run by the daemon."""
    web, root = dagster_ui
    subjects = list(split_for("synthetic", N_SUBJECTS).all)
    model_done = (root / "opensim_model" / "_stamp.json").is_file()  # by the first test, unless run alone
    result = run_load(web.url, root, subjects, ["raw_subject"], probe=False, materialize_model=not model_done)
    assert result["backfill_status"] == "COMPLETED_SUCCESS"
    assert result["backfill_runs"] == N_SUBJECTS  # one run per partition, launched by the daemon
    assert result["partitions_materialized"] == {"raw_subject": N_SUBJECTS}
    assert result["partitions_failed"] == {"raw_subject": 0}
    assert result["outputs_on_disk"] == {"raw_subject": N_SUBJECTS}
    latency = result["query_latency_during_backfill"]
    # the summary of every query is the union of the per-query timings: each query once per round
    per_query = {name: stats for name, stats in latency.items() if name != "all"}
    assert set(per_query) == {"asset_graph", "asset_graph_live", "partition_health", "asset_events"}
    rounds = per_query["partition_health"]["n"]
    assert rounds >= 1 and all(stats["n"] == rounds for stats in per_query.values()), per_query
    assert latency["all"]["n"] == 4 * rounds
    slowest = max(stats["max_ms"] for stats in per_query.values())
    assert latency["all"]["max_ms"] == slowest > 0
    for stats in per_query.values():
        assert 0 < stats["median_ms"] <= stats["p95_ms"] <= stats["max_ms"], stats
    # the 1 s verdict names the slowest single query, whichever it was
    assert result["max_query_under_1s"] is (slowest < 1000)


@pytest.fixture(scope="module")
def tracked_store(tmp_path_factory):
    """A store with what the training and evaluation assets log (their tracking code, tiny inputs)."""
    import torch

    from d3ke_assets.defs.resources import MlflowTrackingResource
    from d3ke_assets.learning.tracking import TrainingTracker, log_evaluation_run
    from d3ke_assets.learning.training import EpochRecord

    root = tmp_path_factory.mktemp("mlflow_store")
    mlflow = MlflowTrackingResource(data_root=str(root))
    experiment = mlflow.experiment_id("synthetic")
    params = {"preset": "smoke", "dataset": "synthetic", "backbone": "mobilenet_v3_small", "epochs": 2,
              "input_data_versions": {"frames/Subject_1": "a" * 16}, "train_subjects": "Subject_1",
              "validation_subjects": "Subject_2", "dagster_run_id": "run-123"}
    tracker = TrainingTracker(mlflow.tracking_uri, experiment, "frame_model mobilenet_v3_small", params,
                              tags={"dagster_run_id": "run-123", "asset": "frame_model"})
    history = [EpochRecord(epoch=e, train_loss=1.0 / (e + 1), terms={"coordinate": 0.5 / (e + 1)},
                           val_loss=1.5 / (e + 1), val_coordinate_mae_deg=20.0 - e, val_marker_error_mm=80.0 - e,
                           lr=1e-3, seconds=1.0, data_wait_share=0.1) for e in range(2)]
    for record in history:
        tracker.log_epoch(record)
    checkpoint = root / "last.pt"
    torch.save({"model": {"weight": torch.zeros(3)}, "epoch": 1}, checkpoint)
    training = tracker.finish(checkpoint, {"backbone": "mobilenet_v3_small"}, history, "d3ke_frame_model_synthetic")
    results = root / "results.parquet"
    results.write_bytes(b"PAR1")  # stands for the evaluation table; only its presence is checked
    evaluation = log_evaluation_run(mlflow.tracking_uri, experiment, "evaluation",
                                    {"test_subjects": "Subject_3", "dagster_run_id": "run-456"},
                                    {"frame_model_coordinate_mae_deg": 12.5}, [results], tags={"asset": "evaluation"})
    return root, experiment, training, evaluation, history


@pytest.fixture(scope="module")
def mlflow_ui(tracked_store):
    with mlflow_server(tracked_store[0]) as server:
        yield server, tracked_store


def test_mlflow_server_serves_the_tracked_runs(mlflow_ui):
    server, (root, experiment, training, evaluation, history) = mlflow_ui
    assert listening_addresses(server.port) == {"127.0.0.1"}
    api = f"{server.url}/api/2.0/mlflow"
    found = rest(f"{api}/experiments/get-by-name?experiment_name=synthetic")["experiment"]
    assert found["experiment_id"] == experiment
    assert found["artifact_location"] == (root / "mlflow" / "artifacts" / "synthetic").as_uri()
    runs = rest(f"{api}/runs/search", {"experiment_ids": [experiment], "filter": "tags.asset = 'frame_model'"})
    assert [r["info"]["run_id"] for r in runs["runs"]] == [training.run_id]
    run = runs["runs"][0]
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "frame_model mobilenet_v3_small"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["backbone"] == "mobilenet_v3_small" and params["preset"] == "smoke"
    assert params["input_data_versions.frames/Subject_1"] == "a" * 16 and params["dagster_run_id"] == "run-123"
    metrics = {m["key"]: m for m in run["data"]["metrics"]}
    assert metrics["val_loss"]["value"] == pytest.approx(history[-1].val_loss) and metrics["val_loss"]["step"] == 1
    assert metrics["train_loss_coordinate"]["value"] == pytest.approx(0.25)
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["dagster_run_id"] == "run-123" and tags["asset"] == "frame_model"
    steps = rest(f"{api}/metrics/get-history?run_id={training.run_id}&metric_key=val_coordinate_mae_deg")
    assert [(m["step"], m["value"]) for m in steps["metrics"]] == [(0, 20.0), (1, 19.0)]
    files = {f["path"] for f in rest(f"{api}/artifacts/list?run_id={training.run_id}")["files"]}
    assert {"config.json", "learning_curve.png", "checkpoint"} <= files
    versions = rest(f"{api}/model-versions/search?filter=name%3D%27d3ke_frame_model_synthetic%27")
    assert [(v["run_id"], v["version"]) for v in versions["model_versions"]] == [(training.run_id, "1")]
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/get-artifact?path=config.json&run_uuid={training.run_id}") as r:
        assert json.loads(r.read()) == {"backbone": "mobilenet_v3_small"}  # read from the store's artifacts
    evaluated = rest(f"{api}/runs/get?run_id={evaluation.run_id}")["run"]
    assert {m["key"]: m["value"] for m in evaluated["data"]["metrics"]} == {"frame_model_coordinate_mae_deg": 12.5}
    assert not list(root.glob("**/mlartifacts")) and not list(root.parent.glob("mlartifacts"))


def test_mlflow_run_page_renders_in_headless_chromium(mlflow_ui):
    chromium = require_program("chromium")
    server, (_, _, training, _, _) = mlflow_ui
    text = browser.visible_text(browser.chromium_dom(training.ui_url(server.url), chromium=chromium))
    assert "frame_model mobilenet_v3_small" in text  # the run the asset metadata links to
    assert "val_coordinate_mae_deg" in text or "Metrics" in text


def test_mlflow_experiment_page_opens_on_its_training_runs(mlflow_ui):
    """The experiment link the project gives (asset metadata `mlflow_experiment`) opens MLflow 3's UI on
    the experiment's runs table, not on the GenAI traces overview it shows by default; the experiment
    also carries the kind tag earlier MLflow 3 UIs read."""
    chromium = require_program("chromium")
    server, (_, experiment, training, _, _) = mlflow_ui
    url = training.experiment_url(server.url)
    text = browser.visible_text(browser.chromium_dom(url, chromium=chromium))
    assert "frame_model mobilenet_v3_small" in text and "evaluation" in text, text[:2000]
    tags = rest(f"{server.url}/api/2.0/mlflow/experiments/get?experiment_id={experiment}")["experiment"]["tags"]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in tags


# --- the DAGSTER_HOME `d3ke demo` / `d3ke ui` / the servers above use ---------------------------

def _with_users_concurrency(home, text: str):
    """`text` as dagster.yaml, plus what a user adds under `concurrency:` (pool settings and a run
    tag limit, from Dagster's concurrency guide); the instance loaded from it."""
    import dagster as dg
    import yaml

    config = yaml.safe_load(text)
    concurrency = config.setdefault("concurrency", {})
    concurrency["pools"] = {"granularity": "op", "default_limit": 3}
    concurrency.setdefault("runs", {})["tag_concurrency_limits"] = [{"key": "dagster/backfill", "limit": 4}]
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(home))


def test_generated_dagster_yaml_takes_a_users_concurrency_settings(tmp_path):
    home = servers.prepare_dagster_home(tmp_path / "home", max_concurrent_runs=3, dequeue_interval_s=1)
    with _with_users_concurrency(home, (home / "dagster.yaml").read_text()) as instance:
        runs = instance.get_concurrency_config().run_queue_config
        assert runs.max_concurrent_runs == 3  # ours, kept beside the user's keys
        assert [dict(t) for t in runs.tag_concurrency_limits] == [{"key": "dagster/backfill", "limit": 4}]
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 3
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_coordinator.dequeue_interval_seconds == 1
    # the form written before (the limit in the run coordinator's config) fails with the same addition
    old = ("run_coordinator:\n  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n"
           "  config:\n    max_concurrent_runs: 3\n    dequeue_interval_seconds: 1\n")
    import dagster as dg

    with pytest.raises(dg.DagsterInvalidConfigError, match="incompatible with the `concurrency > runs` config"):
        _with_users_concurrency(tmp_path / "old_home", old)
