"""A `smoke` training through Dagster: it logs to MLflow and registers a model version."""

from __future__ import annotations

import dagster as dg
import mlflow
import numpy as np
import pytest
import torch

from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.defs.runner import materialize_graph
from d3ke_assets.cli import main
from d3ke_assets.definitions import ASSETS
from d3ke_assets.defs.partitions import partitioned_by_subject, subject_partitions
from d3ke_assets.learning import training
from d3ke_assets.settings import Settings


# 8 synthetic subjects split 5/1/2: two test subjects, so a change to one can be seen to leave the
# other's scoring alone; only one train subject is materialized (training leaves out the others)
N_SUBJECTS = 8
TRAIN, VALIDATION, TESTS = "Subject_1", "Subject_6", ("Subject_7", "Subject_8")
SUBJECTS = [TRAIN, VALIDATION, *TESTS]
ALL_ASSETS = partitioned_by_subject(ASSETS, subject_partitions(Settings(preset="smoke", synthetic_subjects=N_SUBJECTS)))


def _metadata(instance, asset: str) -> dict:
    return instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0].asset_materialization.metadata


@pytest.fixture(scope="module")
def trained_smoke_root(tmp_path_factory):
    """The smoke preset's subjects `SUBJECTS` (train, validation, two test) through every asset, with MLflow."""
    tmp_path = tmp_path_factory.mktemp("trained")
    resources = {"data_root": DataRootResource(path=str(tmp_path)),
                 "dataset": DatasetResource(name="synthetic", preset="smoke", synthetic_subjects=N_SUBJECTS),
                 "mlflow": MlflowTrackingResource(data_root=str(tmp_path))}
    defs = dg.Definitions(assets=ALL_ASSETS, resources=resources)
    with dg.instance_for_test() as instance:
        summary = materialize_graph(defs, instance, SUBJECTS, log=lambda m: None)
        assert not summary.failed, [r.error for r in summary.failed]
        metadata = {a: _metadata(instance, a) for a in ("frame_model", "sequence_model", "evaluation",
                                                      "robustness_report")}
        yield tmp_path, resources, metadata, instance


def test_smoke_training_through_dagster_is_tracked_in_mlflow(trained_smoke_root):
    tmp_path, resources, metadata, _ = trained_smoke_root
    meta, seq_meta = metadata["frame_model"], metadata["sequence_model"]
    assert meta["epochs"].value == 2 and meta["backbone"].value == "mobilenet_v3_small"
    assert meta["learning_curve"].value.startswith("![learning curve](data:image/png;base64,")
    client = mlflow.MlflowClient(resources["mlflow"].tracking_uri)
    run_id = meta["mlflow_run"].value.rsplit("/", 1)[-1]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["backbone"] == "mobilenet_v3_small" and run.data.params["settings.preset"] == "smoke"
    assert "input_data_versions.frames/Subject_1" in run.data.params and "dagster_run_id" in run.data.params
    assert run.data.params["validation_subjects"] == VALIDATION
    assert [m.step for m in client.get_metric_history(run_id, "val_coordinate_mae_deg")] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "learning_curve.png", "checkpoint"} <= artifacts
    versions = client.search_model_versions("name='d3ke_frame_model_synthetic'")
    assert [v.run_id for v in versions] == [run_id]
    checkpoint = tmp_path / "frame_model" / training.CHECKPOINT
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1  # a state_dict bundle, no pickle
    # the temporal stage: its own run, trained on the frame model's outputs, its own registered model
    assert seq_meta["variant"].value == "tcn" and seq_meta["receptive_field"].value == 9
    seq_run = client.get_run(seq_meta["mlflow_run"].value.rsplit("/", 1)[-1])
    assert seq_run.info.status == "FINISHED" and seq_run.info.run_id != run_id
    assert "input_data_versions.frame_model" in seq_run.data.params
    seq_versions = client.search_model_versions("name='d3ke_sequence_model_synthetic'")
    assert [v.run_id for v in seq_versions] == [seq_run.info.run_id]
    assert not (tmp_path / "sequence_model" / "mlflow_run_active.json").exists()


def test_a_resumed_training_continues_its_mlflow_run(tmp_path):
    """A killed training leaves its run RUNNING; the resumed one logs into it and ends it."""
    from d3ke_assets.learning.tracking import TrainingTracker

    uri = MlflowTrackingResource(data_root=str(tmp_path)).tracking_uri
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("resume")
    first = TrainingTracker(uri, experiment, "frame_model", {"preset": "smoke"})
    client.log_metric(first.run.run_id, "val_loss", 1.0, step=0)  # epoch 0, then the process dies
    resumed = TrainingTracker(uri, experiment, "frame_model", {"preset": "smoke"}, resume_run_id=first.run.run_id)
    assert resumed.run.run_id == first.run.run_id
    client.log_metric(resumed.run.run_id, "val_loss", 0.5, step=1)
    client.set_terminated(resumed.run.run_id, "FINISHED")
    run = client.get_run(first.run.run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1]
    stale = TrainingTracker(uri, experiment, "frame_model", {"preset": "smoke"})
    other = TrainingTracker(uri, experiment, "frame_model", {"preset": "smoke"})
    other.end_stale(stale.run.run_id)  # inputs changed: the interrupted run is not continued
    assert client.get_run(stale.run.run_id).info.status == "KILLED"


def test_quality_report_of_the_trained_models(trained_smoke_root, monkeypatch):
    """`d3ke quality`'s numbers against a hand computation: the trained network run on the test frames'
    JPEGs (decoded here with PIL), then the mean absolute error in degrees over the rotational
    coordinates the head predicts, where the label mask is 1; the baseline always predicts the
    training frames' mean coordinates.  Missing test frames get a clear error."""
    import io

    from PIL import Image

    from d3ke_assets.biomech import model_builder
    from d3ke_assets.cli import main
    from d3ke_assets.frames.reader import FrameDataset
    from d3ke_assets.learning.model import normalise
    from d3ke_assets.learning.quality import quality_report

    root = trained_smoke_root[0]
    osim = model_builder.model_file(root / "opensim_model")
    report = quality_report(root, osim, [TRAIN], [VALIDATION])
    frame = training.load_trained_frame_model(root / "frame_model" / training.CHECKPOINT, osim).cpu().eval()
    test = FrameDataset([root / "frames" / VALIDATION], used_only=False)
    train = FrameDataset([root / "frames" / TRAIN])
    images = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(test.jpeg_bytes(i))).convert("RGB")))
                          .permute(2, 0, 1) for i in range(len(test))])
    with torch.no_grad():
        predicted = frame(normalise(images))["coordinates"].double().numpy()
    true, mask = test.labels["coordinates"].astype(np.float64), test.labels["coordinate_mask"].astype(np.float64)
    scored = [i for i in frame.predicted if frame.layer.rotational[i]]
    assert len(scored) >= 20 and "pelvis_tilt" not in [frame.layer.coordinate_names[i] for i in scored]

    def mae_deg(guess: np.ndarray) -> float:
        errors = np.degrees(np.abs(guess[:, scored] - true[:, scored])) * mask[:, scored]
        return float(errors.sum() / mask[:, scored].sum())

    mean = train.labels["coordinates"].astype(np.float64).mean(axis=0)
    assert report["n_test_frames"] == len(test) > 0
    assert report["frame_model_coordinate_mae_deg"] == pytest.approx(mae_deg(predicted), rel=1e-4)
    assert report["mean_baseline_coordinate_mae_deg"] == pytest.approx(mae_deg(np.tile(mean, (len(test), 1))),
                                                                       rel=1e-6)
    assert report["sequence_model"] == "tcn rf9" and report["sequence_model_coordinate_mae_deg"] > 0
    monkeypatch.setenv("D3KE_SYNTHETIC_SUBJECTS", str(N_SUBJECTS))
    assert main(["quality", "--preset", "smoke", "--data-root", str(root)]) == 0  # on the test subjects
    empty = root / "untrained"
    empty.mkdir()
    assert main(["quality", "--preset", "smoke", "--data-root", str(empty)]) == 2  # no model: a one-line error


def test_evaluation_table_in_dagster_and_mlflow(trained_smoke_root):
    import pandas as pd

    from d3ke_assets.frames.augmentations import AUGMENTATIONS

    tmp_path, resources, metadata, _ = trained_smoke_root
    meta = metadata["evaluation"]
    table = pd.read_parquet(tmp_path / "evaluation" / "results.parquet")
    n_conditions = sum(len(v) for v in AUGMENTATIONS.values())
    assert len(table) == 2 * 2 * n_conditions == meta["rows"].value  # 2 models x 2 views
    assert set(table.view) == {"PG1", "PG2"} and set(table.model) == {"frame_model", "sequence_model"}
    assert len(meta["results"].value.records) == len(table)
    client = mlflow.MlflowClient(resources["mlflow"].tracking_uri)
    run = client.get_run(meta["mlflow_run"].value.rsplit("/", 1)[-1])
    assert run.info.status == "FINISHED" and run.data.params["test_subjects"] == ",".join(TESTS)
    assert {"results.parquet", "direct_vs_multistep.parquet"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    claim = pd.read_parquet(tmp_path / "evaluation" / "direct_vs_multistep.parquet")
    assert set(claim.method) == {"direct", "multi_step"} and len(meta["direct_versus_multi_step"].value.records) == 4


def test_robustness_report_in_dagster_and_mlflow(trained_smoke_root):
    tmp_path, resources, metadata, _ = trained_smoke_root
    meta = metadata["robustness_report"]
    assert meta["report"].value.count("data:image/png;base64,") == 3
    client = mlflow.MlflowClient(resources["mlflow"].tracking_uri)
    run = client.get_run(meta["mlflow_run"].value.rsplit("/", 1)[-1])
    assert {"report.md", "error_vs_severity.png", "trial_curves.png", "overlays.png"} <= \
        {a.path for a in client.list_artifacts(run.info.run_id)}


def test_predict_on_a_video_writes_what_opensim_loads(trained_smoke_root, tmp_path, capsys):
    from d3ke_assets.biomech.opensim_tools import opensim_module
    from d3ke_assets.cli import main
    from d3ke_assets.media.video import probe_video
    from d3ke_assets.sources import raw

    root = trained_smoke_root[0]
    video = raw.camera_videos(root, TESTS[0])[0].video
    info = probe_video(video)
    assert main(["predict", str(video), "--model", "models:/d3ke_frame_model_synthetic/1", "--out",
                 str(tmp_path / "a"), "--data-root", str(root)]) == 0
    osim = opensim_module()
    mot, model_file = tmp_path / "a" / f"{video.stem}.mot", tmp_path / "a" / f"{video.stem}.osim"
    model = osim.Model(str(model_file))
    model.initSystem()
    table = osim.TimeSeriesTable(str(mot))
    names = [model.getCoordinateSet().get(i).getName() for i in range(model.getCoordinateSet().getSize())]
    assert sorted(table.getColumnLabels()) == sorted(names)
    assert table.getNumRows() == info.n_frames
    assert probe_video(tmp_path / "a" / f"{video.stem}_overlay.mp4").n_frames == info.n_frames
    # a checkpoint file and a box work too
    checkpoint = root / "frame_model" / training.CHECKPOINT
    assert main(["predict", str(video), "--model", str(checkpoint), "--out", str(tmp_path / "b"), "--box",
                 "10,5,80,100", "--data-root", str(root)]) == 0
    # another frame rate and resolution than training's
    from PIL import Image

    from d3ke_assets.biomech.formats import read_mot
    from d3ke_assets.media.video import decode_frames, write_video

    frames_25 = [np.asarray(Image.fromarray(f).resize((200, 150))) for _, f in zip(range(20), decode_frames(video))]
    other = tmp_path / "other_rate.avi"
    write_video(other, frames_25, 25, 200, 150)
    assert main(["predict", str(other), "--model", str(checkpoint), "--out", str(tmp_path / "d"),
                 "--data-root", str(root)]) == 0
    t, _, _, _ = read_mot(tmp_path / "d" / "other_rate.mot")
    assert len(t) == 20 and np.allclose(np.diff(t), 1 / 25)
    capsys.readouterr()
    # bad input: a one-line error naming what is wrong
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"not a video at all" * 100)
    import av

    empty = tmp_path / "empty.avi"  # a video stream with no frames
    with av.open(str(empty), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    cases = [([str(garbage), "--model", str(checkpoint)], "garbage.avi: cannot decode video"),
             ([str(empty), "--model", str(checkpoint)], "empty.avi: the video has no frames"),
             ([str(video), "--model", "models:/no_such_model/1"], "does not resolve in the MLflow store"),
             ([str(video), "--model", str(checkpoint), "--box", "150,100,50,50"], "outside the 160x120 frame")]
    for argv, message in cases:
        assert main(["predict", *argv, "--out", str(tmp_path / "c"), "--data-root", str(root)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and len(err[-1]) < 400, err


def test_a_changed_test_subject_rescores_only_its_own_partition(trained_smoke_root, monkeypatch):
    """One test subject's raw file changed and recorded: the rerun of stale runs rebuilds that subject's
    data and scoring and the aggregation, and leaves the other test subject's scoring alone; the
    tables are the sums of both subjects' scores again."""
    import pandas as pd

    from d3ke_assets.defs.evaluation_assets import SUBJECT_SUMS
    from d3ke_assets.evaluation.evaluate import RESULT_GROUP, aggregate
    from d3ke_assets.versioning import recorded_data_version

    root, resources, _, instance = trained_smoke_root
    changed, kept = TESTS[1], TESTS[0]
    kept_version = recorded_data_version(root / "subject_evaluation" / kept)
    changed_version = recorded_data_version(root / "subject_evaluation" / changed)
    trc = root / "raw_subject" / changed / "mocap" / f"{changed}_squat.trc"
    lines = trc.read_text().splitlines()
    cells = lines[10].split("\t")
    cells[5] = f"{float(cells[5]) + 1.0:.5f}"  # one marker coordinate moved by 1 mm
    lines[10] = "\t".join(cells)
    trc.write_text("\n".join(lines) + "\n")
    for var in ("D3KE_DATASET", "D3KE_LAB_ROOT", "D3KE_MOVI_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("D3KE_PRESET", "smoke")
    monkeypatch.setenv("D3KE_SYNTHETIC_SUBJECTS", str(N_SUBJECTS))
    assert main(["verify", "--write-manifest", "--data-root", str(root)]) == 0  # the change recorded

    defs = dg.Definitions(assets=ALL_ASSETS, resources=resources)
    rerun = materialize_graph(defs, instance, SUBJECTS, log=lambda m: None, only_stale=True)
    assert not rerun.failed, [r.error for r in rerun.failed]
    assert set(rerun.recomputed) == {("mocap_markers", changed), ("opensim_gt", changed), ("frames", changed),
                                     ("subject_evaluation", changed), ("evaluation", None),
                                     ("robustness_report", None)}
    launched = {(a, r.partition) for r in rerun.results for a in r.assets}
    assert ("subject_evaluation", kept) not in launched and ("frame_model", None) not in launched
    assert recorded_data_version(root / "subject_evaluation" / kept) == kept_version
    assert recorded_data_version(root / "subject_evaluation" / changed) != changed_version
    sums = pd.concat([pd.read_parquet(root / "subject_evaluation" / s / SUBJECT_SUMS) for s in TESTS])
    table = pd.read_parquet(root / "evaluation" / "results.parquet")
    pd.testing.assert_frame_equal(table, aggregate(sums, RESULT_GROUP))
    by_subject = pd.read_parquet(root / "evaluation" / "results_by_subject.parquet")
    assert sorted(set(by_subject.subject)) == list(TESTS) and len(by_subject) == 2 * len(table)


def test_a_changed_subject_makes_exactly_the_models_that_read_it_stale(trained_smoke_root):
    """The schedule's staleness: new frames of a test subject make its scoring, the evaluation and the
    report stale; new frames of a train subject both models, then every test subject's scoring, the
    evaluation and the report."""
    from d3ke_assets.defs.automation import DATA_VERSION_TAG, stale_assets_by_partition

    instance = trained_smoke_root[3]
    assert stale_assets_by_partition(instance, ALL_ASSETS, SUBJECTS, test_subjects=TESTS) == {}
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "frames", partition=TESTS[0], tags={DATA_VERSION_TAG: "new test frames"}))
    # (the hand-made materializations carry no code version, so those frames partitions count as stale too)
    stale = stale_assets_by_partition(instance, ALL_ASSETS, SUBJECTS, test_subjects=TESTS)
    assert stale == {TESTS[0]: ["frames", "subject_evaluation"], None: ["evaluation", "robustness_report"]}
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "frames", partition=TRAIN, tags={DATA_VERSION_TAG: "new train frames"}))
    stale = stale_assets_by_partition(instance, ALL_ASSETS, SUBJECTS, test_subjects=TESTS)
    assert stale[None] == ["frame_model", "sequence_model", "evaluation", "robustness_report"]
    assert stale[TESTS[1]] == ["subject_evaluation"] and stale[TRAIN] == ["frames"]
    assert VALIDATION not in stale  # a partition subject_evaluation does not apply to


PICKLE_OPCODES = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # PROTO n: the start of a pickle stream


def test_nothing_persisted_is_a_pickle(trained_smoke_root):
    """Every file the whole graph wrote (MLflow's store and artifacts included) is a plain format; the
    checkpoints are state_dict bundles that load with weights_only=True, and .npz arrays without pickle."""
    import zipfile

    tmp_path = trained_smoke_root[0]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "dagster" not in p.relative_to(tmp_path).parts[:1]]
    assert len(files) > 50
    checkpoints = [p for p in files if p.suffix == ".pt"]
    assert {p.parent.name for p in checkpoints} >= {"frame_model", "sequence_model"}
    for path in files:
        assert path.suffix not in {".pkl", ".pickle", ".joblib"}, path
        if path.suffix == ".pt":
            assert "model" in torch.load(path, map_location="cpu", weights_only=True), path
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                for name in data.files:
                    data[name]  # raises for an object array
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                assert not [n for n in archive.namelist() if n.endswith((".pkl", ".pickle"))], path
        else:
            assert not path.read_bytes()[:2] in PICKLE_OPCODES, path


def test_the_current_policy_control_runs_on_request_and_the_report_compares_both_policies(trained_smoke_root):
    """The main job leaves current_policy_evaluation alone; materialized on request it trains both
    models with the `current` policy (the preset's is `robust`) and scores them; robustness_report is
    then stale and, rebuilt, puts both policies' figures side by side, each taken from its table."""
    import pandas as pd

    from d3ke_assets.defs.automation import stale_assets_by_partition
    from d3ke_assets.evaluation import report

    tmp_path, resources, _, instance = trained_smoke_root
    subjects = SUBJECTS
    assert not instance.fetch_materializations(dg.AssetKey("current_policy_evaluation"), limit=1).records
    assert "current_policy_evaluation" not in stale_assets_by_partition(instance, ALL_ASSETS, subjects).get(None, [])
    result = dg.materialize(ALL_ASSETS, instance=instance, resources=resources,
                            selection=[dg.AssetKey("current_policy_evaluation")])
    assert result.success
    control = tmp_path / "current_policy_evaluation"
    for model in ("frame_model", "sequence_model"):
        bundle = torch.load(control / model / training.CHECKPOINT, weights_only=True)
        assert bundle["config"]["augment_policy"] == "current"
    assert torch.load(tmp_path / "frame_model" / training.CHECKPOINT,
                      weights_only=True)["config"]["augment_policy"] == "robust"
    stale = stale_assets_by_partition(instance, ALL_ASSETS, subjects).get(None, [])
    assert "robustness_report" in stale and "current_policy_evaluation" not in stale
    assert dg.materialize(ALL_ASSETS, instance=instance, resources=resources,
                          selection=[dg.AssetKey("robustness_report")]).success
    comparison = pd.read_csv(tmp_path / "robustness_report" / report.POLICY_CSV)
    robust = pd.read_parquet(tmp_path / "evaluation" / "results.parquet")
    current = pd.read_parquet(control / "results.parquet")
    assert len(comparison) == len(robust) == len(current)
    keys = ["model", "view", "augmentation", "severity"]
    merged = comparison.merge(robust[keys + ["coordinate_mae_deg"]], on=keys).merge(
        current[keys + ["coordinate_mae_deg"]], on=keys, suffixes=("_robust", "_current"))
    assert np.allclose(merged.robust_coordinate_mae_deg, merged.coordinate_mae_deg_robust)
    assert np.allclose(merged.current_coordinate_mae_deg, merged.coordinate_mae_deg_current)
    text = (tmp_path / "robustness_report" / report.REPORT_MD).read_text()
    assert "## Training-time augmentation: current against robust" in text and report.POLICY_PNG in text
    assert (tmp_path / "robustness_report" / report.POLICY_PNG).stat().st_size > 10_000


def test_bench_seeds_reads_the_main_jobs_training_and_trains_the_other_seeds(trained_smoke_root, monkeypatch):
    """`d3ke bench seeds`: the seed the main job trained is read, not trained again, and gives
    `d3ke quality`'s figure; another seed trains another model in a scratch folder, leaving the
    data root as it was."""
    import hashlib

    from d3ke_assets.benchmarks.seeds import bench_seeds
    from d3ke_assets.biomech import model_builder
    from d3ke_assets.learning.quality import quality_report
    from d3ke_assets.sources.subjects import split_for

    root = trained_smoke_root[0]
    for var in ("D3KE_DATASET", "D3KE_BACKBONE_WEIGHTS", "D3KE_SEED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("D3KE_PRESET", "smoke")
    monkeypatch.setenv("D3KE_SYNTHETIC_SUBJECTS", str(N_SUBJECTS))
    checkpoint = root / "frame_model" / training.CHECKPOINT
    before = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    listing = sorted(p.relative_to(root) for p in root.rglob("*") if "mlruns" not in p.parts)
    figures = bench_seeds(root, seeds=(0, 1))
    split = split_for("synthetic", N_SUBJECTS, None)
    quality = quality_report(root, model_builder.model_file(root / "opensim_model"), list(split.train),
                             list(split.test))
    main_seed, other = figures["seeds"]["0"], figures["seeds"]["1"]
    assert main_seed["source"] == "main job's frame_model" and other["source"] == "trained here"
    assert main_seed["ratio_model_to_baseline"] == pytest.approx(quality["ratio_model_to_baseline"], abs=1e-4)
    assert other["mean_baseline_coordinate_mae_deg"] == main_seed["mean_baseline_coordinate_mae_deg"]
    assert other["frame_model_coordinate_mae_deg"] != main_seed["frame_model_coordinate_mae_deg"]
    assert figures["ratio_min"] <= figures["ratio_mean"] <= figures["ratio_max"] and figures["ratio_std"] > 0
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == before
    assert sorted(p.relative_to(root) for p in root.rglob("*") if "mlruns" not in p.parts) == listing


def test_the_backbone_study_trains_each_backbone_alike_and_compares_them(trained_smoke_root):
    """Two backbones of the study under the smoke budget: each partition trains its own backbone on the
    same frames with the same budget, scores the first test subject like the evaluation does, and the
    comparison holds each backbone's summary, in the study's order, with a plot and an MLflow run."""
    import json

    import pandas as pd

    from d3ke_assets.biomech import model_builder
    from d3ke_assets.evaluation.backbones import parameter_count
    from d3ke_assets.evaluation.evaluate import RESULT_GROUP, aggregate, subject_sums

    root, resources, _, instance = trained_smoke_root
    studied = ["resnet18", "mobilenet_v3_small"]
    for backbone in studied:
        result = dg.materialize(ALL_ASSETS, instance=instance, resources=resources, partition_key=backbone,
                                selection=[dg.AssetKey("backbone_study")], raise_on_error=False)
        assert result.success, backbone
    osim = model_builder.model_file(root / "opensim_model")
    inputs = []
    for backbone in studied:
        folder = root / "backbone_study" / backbone
        bundle = torch.load(folder / "frame_model" / training.CHECKPOINT, weights_only=True)
        assert bundle["config"]["backbone"] == backbone
        assert (bundle["config"]["epochs"], bundle["config"]["frame_stride"]) == (1, 8)  # the smoke budget
        mat = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("backbone_study"), asset_partitions=[backbone]), limit=1).records[0]
        inputs.append(mat.asset_materialization.metadata["input_data_versions"].value)
        summary = json.loads((folder / "summary.json").read_text())
        frame = training.load_trained_frame_model(folder / "frame_model" / training.CHECKPOINT, osim)
        assert summary["parameters_m"] * 1e6 == parameter_count(frame)
        # the evaluation's own scoring of the checkpoint on the first test subject, clean frames, both views
        # (run again for the small backbone; the larger one's table is the partition's own)
        table = aggregate(subject_sums(frame, root / "frames" / TESTS[0]), RESULT_GROUP) \
            if backbone == "mobilenet_v3_small" else pd.read_parquet(folder / "results.parquet")
        clean = table[(table.model == "frame_model") & (table.augmentation == "clean")]
        expected = float((clean.coordinate_mae_deg * clean.n_frames).sum() / clean.n_frames.sum())
        assert summary["clean_coordinate_mae_deg"] == pytest.approx(expected, rel=1e-4)
        assert summary["cpu_ms_per_frame"] > 0 and summary["gpu_ms_per_frame"] is None
    assert inputs[0] == inputs[1]  # the same frames, the same model
    assert json.loads((root / "backbone_study" / "resnet18" / "summary.json").read_text())["parameters_m"] > \
        json.loads((root / "backbone_study" / "mobilenet_v3_small" / "summary.json").read_text())["parameters_m"]

    assert dg.materialize(ALL_ASSETS, instance=instance, resources=resources,
                          selection=[dg.AssetKey("backbone_comparison")]).success
    comparison = pd.read_csv(root / "backbone_comparison" / "comparison.csv")
    assert list(comparison.backbone) == ["resnet18", "mobilenet_v3_small"]  # the study's order
    for row in comparison.itertuples():
        summary = json.loads((root / "backbone_study" / row.backbone / "summary.json").read_text())
        assert row.clean_coordinate_mae_deg == pytest.approx(summary["clean_coordinate_mae_deg"])
        assert row.augmented_coordinate_mae_deg == pytest.approx(summary["augmented_coordinate_mae_deg"])
    assert (root / "backbone_comparison" / "comparison.png").stat().st_size > 10_000
    meta = _metadata(instance, "backbone_comparison")
    assert meta["plot"].value.startswith("![accuracy against time per frame](data:image/png;base64,")
    client = mlflow.MlflowClient(resources["mlflow"].tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id],
                              "tags.asset = 'backbone_study'")
    assert sorted(r.data.tags["backbone"] for r in runs) == sorted(studied)
