"""Registered models as an MLflow user reaches for them, and `d3ke predict` with either model.

The smoke preset's frame and sequence models are trained through Dagster once; then the registered
versions load with `mlflow.pyfunc.load_model("models:/NAME/1")`, one is served with
`mlflow models serve --env-manager local` on 127.0.0.1, and their answers are held to the numbers
`d3ke predict` writes into its `.mot` for the same crops (the crops cut from the video as predict
cuts them)."""

from __future__ import annotations

import json

import dagster as dg
import mlflow
import numpy as np
import pytest
import torch

from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.definitions import ALL_ASSETS
from d3ke_assets_tests.support.servers import listening_addresses, mlflow_model_server, rest

SUBJECTS = ["Subject_1", "Subject_2", "Subject_3"]  # smoke split: train, validation, test
FRAME_URI, SEQUENCE_URI = "models:/d3ke_frame_model_synthetic/1", "models:/d3ke_sequence_model_synthetic/1"


def _materialize(selection, root, partition=None):
    resources = {"data_root": DataRootResource(path=str(root)),
                 "dataset": DatasetResource(name="synthetic", preset="smoke"),
                 "mlflow": MlflowTrackingResource(data_root=str(root))}
    result = dg.materialize(ALL_ASSETS, selection=selection, partition_key=partition,
                            instance=dg.DagsterInstance.ephemeral(), resources=resources)
    assert result.success
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data root, {asset: its materialization's metadata}) with both models trained and registered."""
    root = tmp_path_factory.mktemp("served")
    _materialize(["opensim_model"], root)
    for subject in SUBJECTS:
        _materialize(["raw_subject", "mocap_markers", "opensim_gt", "frames"], root, subject)
    result = _materialize(["frame_model", "sequence_model"], root)
    metadata = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}
    mlflow.set_tracking_uri(MlflowTrackingResource(data_root=str(root)).tracking_uri)
    return root, metadata


def _video(root):
    from d3ke_assets.sources import raw

    return raw.camera_videos(root, "Subject_3")[0].video  # the test subject, camera PG1: 160x120


def _crops(video, crop_px: int) -> np.ndarray:
    """The crops `d3ke predict` feeds the network: the centred square of every frame, at the training size."""
    from d3ke_assets.evaluation.predict import parse_box
    from d3ke_assets.frames.processing import crop_square
    from d3ke_assets.media.video import decode_frames, probe_video

    info = probe_video(video)
    box = parse_box(None, info.width_px, info.height_px, video)
    return np.stack([np.asarray(crop_square(f, box, crop_px)) for f in decode_frames(video)])


def _predict_mot(root, video, model: str, out) -> dict[str, np.ndarray]:
    """`d3ke predict`'s .mot, column -> values (degrees for rotational coordinates, metres otherwise)."""
    from d3ke_assets.biomech.formats import read_mot
    from d3ke_assets.cli import main

    assert main(["predict", str(video), "--model", model, "--out", str(out), "--data-root", str(root)]) == 0
    _, names, values, in_degrees = read_mot(out / f"{video.stem}.mot")
    assert in_degrees
    return dict(zip(names, values.T))


def _same_as_mot(table, mot: dict[str, np.ndarray], layer) -> None:
    """Each coordinate column of a served/pyfunc table equals the .mot's column (8 decimals there)."""
    assert len(table) == len(next(iter(mot.values())))
    for name, rotational in zip(layer.coordinate_names, layer.rotational):
        column = f"{name}_deg" if rotational else f"{name}_m"
        np.testing.assert_allclose(np.asarray(table[column], np.float64), mot[name], atol=2e-5, err_msg=column)


def test_registered_versions_are_pyfunc_models_with_their_inputs(trained):
    """Both registered versions load with mlflow.pyfunc.load_model; their signature names the crops in and
    the coordinates and scale factors out; nothing in them is pickled; the runs hold their inputs' data
    versions as dataset inputs; the experiment is typed so the UI opens it on its runs."""
    from d3ke_assets.biomech import model_builder
    from d3ke_assets.biomech.skeletal_layer import SkeletalModel

    root, metadata = trained
    layer = SkeletalModel.from_osim(model_builder.model_file(root / "opensim_model"))
    client = mlflow.MlflowClient()
    for asset, uri in (("frame_model", FRAME_URI), ("sequence_model", SEQUENCE_URI)):
        model = mlflow.pyfunc.load_model(uri)
        inputs, outputs = model.metadata.signature.inputs, model.metadata.signature.outputs
        assert not inputs.has_input_names() and inputs.inputs[0].shape == (-1, 64, 64, 3)
        assert inputs.inputs[0].type == np.dtype(np.uint8)
        names = outputs.input_names()
        assert names[:len(layer.coordinate_names)] == [f"{n}_deg" if r else f"{n}_m" for n, r in
                                                       zip(layer.coordinate_names, layer.rotational)]
        assert names[len(layer.coordinate_names):] == [f"{b}_scale_{a}" for b in layer.body_names for a in "xyz"]
        # models-from-code: the loader runs the project's code file, no python_model.pkl
        flavor = model.metadata.flavors["python_function"]
        assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model" and flavor["model_code_path"]
        version = client.get_model_version(uri.split("/")[1], "1")
        local = mlflow.artifacts.download_artifacts(version.source)
        from pathlib import Path

        files = [p for p in Path(local).rglob("*") if p.is_file()]
        assert not [p for p in files if p.suffix in (".pkl", ".pickle")], files
        checkpoint = [p for p in files if p.suffix == ".pt"]
        assert len(checkpoint) == 1 and "model" in torch.load(checkpoint[0], weights_only=True)
        # dataset inputs: every input of the asset's stamp, with its version as the digest
        run = client.get_run(version.run_id)
        stamped = metadata[asset]["input_data_versions"]
        logged = {d.dataset.name: d for d in run.inputs.dataset_inputs}
        assert set(logged) == set(stamped) and len(logged) >= 3  # frames of 2 subjects, the OpenSim model
        assert all(logged[n].dataset.digest == v[:32] for n, v in stamped.items())
        contexts = {n: {t.value for t in d.tags if t.key == "mlflow.data.context"} for n, d in logged.items()}
        assert contexts["frames/Subject_1"] == {"training"} and contexts["frames/Subject_2"] == {"validation"}
        experiment = client.get_experiment(run.info.experiment_id)
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_served_frame_model_answers_what_d3ke_predict_writes(trained, tmp_path):
    root, _ = trained
    video = _video(root)
    crops = _crops(video, 64)
    mot = _predict_mot(root, video, FRAME_URI, tmp_path / "predicted")
    from d3ke_assets.biomech import model_builder
    from d3ke_assets.biomech.skeletal_layer import SkeletalModel

    layer = SkeletalModel.from_osim(model_builder.model_file(root / "opensim_model"))
    with mlflow_model_server(root, FRAME_URI, tmp_path / "serve.log") as server:
        assert listening_addresses(server.port) == {"127.0.0.1"}
        answer = rest(f"{server.url}/invocations", {"inputs": crops.tolist()}, timeout_s=120)
    import pandas as pd

    table = pd.DataFrame(answer["predictions"])
    _same_as_mot(table, mot, layer)
    scales = table[[f"{b}_scale_{a}" for b in layer.body_names for a in "xyz"]].to_numpy()
    assert ((scales >= 0.7) & (scales <= 1.3)).all()


def test_predict_with_the_sequence_model_refines_the_frame_model_over_time(trained, tmp_path):
    """The sequence model's checkpoint and its registered version give the same .mot, which the
    pyfunc model reproduces, and which differs from the frame model's own (the refinement ran)."""
    from d3ke_assets.biomech import model_builder
    from d3ke_assets.biomech.skeletal_layer import SkeletalModel

    root, _ = trained
    video = _video(root)
    layer = SkeletalModel.from_osim(model_builder.model_file(root / "opensim_model"))
    by_file = _predict_mot(root, video, str(root / "sequence_model" / "last.pt"), tmp_path / "file")
    by_uri = _predict_mot(root, video, SEQUENCE_URI, tmp_path / "uri")
    frame = _predict_mot(root, video, str(root / "frame_model" / "last.pt"), tmp_path / "frame")
    for name in layer.coordinate_names:
        np.testing.assert_array_equal(by_file[name], by_uri[name])
    moved = max(np.abs(by_file[n] - frame[n]).max() for n, r in zip(layer.coordinate_names, layer.rotational) if r)
    assert moved > 1e-3
    table = mlflow.pyfunc.load_model(SEQUENCE_URI).predict(_crops(video, 64))
    _same_as_mot(table, by_file, layer)


def test_predict_overlay_is_the_original_video_with_the_skeleton_in_the_box(trained, tmp_path):
    from d3ke_assets.media.video import decode_frames, probe_video

    root, _ = trained
    video = _video(root)
    from d3ke_assets.cli import main

    assert main(["predict", str(video), "--model", str(root / "frame_model" / "last.pt"), "--out", str(tmp_path),
                 "--box", "40,10,60,90", "--data-root", str(root)]) == 0
    overlay = tmp_path / f"{video.stem}_overlay.mp4"
    info, drawn = probe_video(video), probe_video(overlay)
    assert (drawn.width_px, drawn.height_px, drawn.n_frames) == (info.width_px, info.height_px, info.n_frames)
    # the square box the network saw: side 90 centred on the given box, x 25-115, y 10-100
    for original, frame in zip(decode_frames(video), decode_frames(overlay)):
        changed = np.abs(frame.astype(int) - original.astype(int)).max(axis=2) > 80  # drawn lines, not codec noise
        ys, xs = np.nonzero(changed)
        assert len(ys) > 50
        assert xs.min() >= 25 - 2 and xs.max() <= 115 + 2 and ys.min() >= 10 - 2 and ys.max() <= 100 + 2


def test_predict_refuses_other_files_in_one_line(trained, tmp_path, capsys):
    from d3ke_assets.cli import main

    root, _ = trained
    video = _video(root)
    not_a_model = tmp_path / "tensor.pt"
    torch.save({"weights": torch.zeros(3)}, not_a_model)
    old_sequence = tmp_path / "old_sequence.pt"
    bundle = torch.load(root / "sequence_model" / "last.pt", weights_only=True)
    bundle.pop("frame_model")
    torch.save(bundle, old_sequence)
    cases = [(root / "frame_model" / "history.json", "cannot load the checkpoint"),
             (not_a_model, "not a d3ke model checkpoint"),
             (old_sequence, "without the frame model it refines")]
    for path, message in cases:
        capsys.readouterr()
        assert main(["predict", str(video), "--model", str(path), "--out", str(tmp_path / "x"),
                     "--data-root", str(root)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and str(path) in err[-1] and len(err) == 1, err
    assert json.loads((root / "frame_model" / "history.json").read_text())  # the refused file is untouched
