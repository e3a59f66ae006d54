"""`frame_model`: the D3KE network trained on the train subjects' frames, tracked in MLflow."""

import base64
import json

import dagster as dg

from d3ke_assets.biomech import model_builder
from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.frames_assets import frames
from d3ke_assets.defs.model_assets import opensim_model
from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.defs.versioned import code_version_of, input_version, input_versions_metadata
from d3ke_assets.errors import D3keError
from d3ke_assets.frames.processing import INDEX_NAME
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning import presets, training
from d3ke_assets.learning.model import FrameModel
from d3ke_assets.learning.tracking import TrainingTracker, learning_curve_png
from d3ke_assets.versioning import build_in_place_if_stale, version_stamp

FRAME_MODEL_CODE_VERSION = "2"  # bump when training changes what it learns
HISTORY = "history.json"
RUN_INFO = "mlflow_run.json"


def _subject_frames(data_root: DataRootResource, keys, role: str, log) -> list:
    folders = [data_root.asset_dir("frames", k) for k in keys]
    present = [f for f in folders if (f / INDEX_NAME).is_file()]
    missing = [f.name for f in folders if f not in present]
    if missing:
        log(f"{role} subjects without frames (left out): {', '.join(missing)}")
    return present


@dg.asset(deps=[dg.AssetDep(frames, partition_mapping=dg.AllPartitionMapping()), opensim_model],
          code_version=FRAME_MODEL_CODE_VERSION, group_name="learning", kinds={"pytorch", "mlflow"})
def frame_model(context: dg.AssetExecutionContext, data_root: DataRootResource, dataset: DatasetResource,
                mlflow: MlflowTrackingResource) -> dg.MaterializeResult:
    """The frame model (backbone + head + skeletal layer) of the preset, trained on the train
    subjects and validated on the validation subjects; the test subjects are never read here."""
    with user_errors_as_failures():
        split = dataset.split()
        train_dirs = _subject_frames(data_root, split.train, "train", context.log.warning)
        val_dirs = _subject_frames(data_root, split.validation, "validation", context.log.warning)
        if not train_dirs:
            raise D3keError("no training frames: materialize frames for the train subjects "
                            f"({', '.join(split.train) or 'the split has none'})")
        if not val_dirs:
            raise D3keError("the validation set is empty: materialize frames for a validation subject "
                            f"({', '.join(split.validation) or 'the split has none: use a preset with more subjects'})")
        config = presets.train_config(dataset.preset)
        inputs = {f"frames/{d.name}": input_version(data_root, "frames", d.name) for d in [*train_dirs, *val_dirs]}
        inputs["opensim_model"] = input_version(data_root, "opensim_model", None)
        stamp = version_stamp(code_version_of(context), config.as_dict(), inputs)
        folder = data_root.asset_dir("frame_model")
        model_path = model_builder.model_file(data_root.asset_dir("opensim_model"))

        def build(out):
            model = FrameModel(SkeletalModel.from_osim(model_path), config.backbone, config.weights_file)
            params = {"preset": dataset.preset, "dataset": dataset.checked_name(), **config.as_dict(),
                      "input_data_versions": {k: v[:16] for k, v in inputs.items()}, "dagster_run_id": context.run_id,
                      "train_subjects": ",".join(d.name for d in train_dirs),
                      "validation_subjects": ",".join(d.name for d in val_dirs)}
            tracker = TrainingTracker(mlflow.tracking_uri, mlflow.experiment_id(dataset.checked_name()),
                                      f"frame_model {config.backbone}", params,
                                      tags={"dagster_run_id": context.run_id, "asset": "frame_model"})
            try:
                history = training.train_frame_model(
                    model, FrameDataset(train_dirs), FrameDataset(val_dirs), config, out, log=context.log.info,
                    on_epoch=tracker.log_epoch, resume_key=stamp)
            except BaseException:
                tracker.fail()
                raise
            run = tracker.finish(out / training.CHECKPOINT, config.as_dict(), history,
                                 f"d3ke_frame_model_{dataset.checked_name()}")
            (out / HISTORY).write_text(json.dumps([h.__dict__ for h in history], indent=1))
            (out / RUN_INFO).write_text(json.dumps(run.__dict__, indent=1))

        # in place: the per-epoch checkpoint must survive a killed run so the next one resumes
        data_version, reused = build_in_place_if_stale(folder, stamp, build)
        history = [training.EpochRecord(**h) for h in json.loads((folder / HISTORY).read_text())]
        run = json.loads((folder / RUN_INFO).read_text())
    last = history[-1]
    curve = learning_curve_png(history, folder / "learning_curve.png")
    encoded = base64.b64encode(curve.read_bytes()).decode()
    url = f"http://127.0.0.1:5000/#/experiments/{run['experiment_id']}/runs/{run['run_id']}"
    return dg.MaterializeResult(data_version=dg.DataVersion(data_version), metadata={
        "reused": reused, **input_versions_metadata(inputs), "backbone": config.backbone, "epochs": len(history),
        "val_coordinate_mae_deg": round(last.val_coordinate_mae_deg, 2),
        "val_marker_error_mm": round(last.val_marker_error_mm, 1),
        "train_loss": round(last.train_loss, 4), "val_loss": round(last.val_loss, 4),
        "data_wait_share": round(last.data_wait_share, 3),
        "mlflow_run": dg.MetadataValue.url(url),
        "registered_model": f"{run['model_name']} v{run['model_version']}",
        "learning_curve": dg.MetadataValue.md(f"![learning curve](data:image/png;base64,{encoded})"),
        "checkpoint": dg.MetadataValue.path(str(folder / training.CHECKPOINT)),
    })
