"""`frame_model` (the D3KE network on single frames) and `sequence_model` (the temporal stage),
trained on the train subjects, validated on the validation subjects, tracked in MLflow."""

import base64
import json
import tempfile
from pathlib import Path

import dagster as dg

from d3ke_assets.biomech import model_files
from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.pools import GPU_OP_TAGS, GPU_POOL
from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.defs.constants import (CODE_VERSIONS, FRAME_MODEL, FRAMES, OPENSIM_MODEL, SEQUENCE_MODEL,
                                        folder_name)
from d3ke_assets.defs.versioned import VersionedOutput, versioned_output
from d3ke_assets.errors import D3keError
from d3ke_assets.evaluation import serving
from d3ke_assets.frames.processing import INDEX_NAME
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning import presets, quality, sequence, training
from d3ke_assets.learning.model import FrameModel
from d3ke_assets.learning.tracking import TrackedRun, TrainingTracker, learning_curve_png

HISTORY = "history.json"
RUN_INFO = "mlflow_run.json"
ACTIVE_RUN = "mlflow_run_active.json"  # the MLflow run of a training under way, continued if it is resumed


def _subject_frames(data_root: DataRootResource, keys, role: str, log) -> list:
    folders = [data_root.asset_dir(folder_name(FRAMES), k) for k in keys]
    present = [f for f in folders if (f / INDEX_NAME).is_file()]
    missing = [f.name for f in folders if f not in present]
    if missing:
        log(f"{role} subjects without frames (left out): {', '.join(missing)}")
    return present


def _train_and_val_dirs(data_root: DataRootResource, dataset: DatasetResource, log) -> tuple[list, list]:
    split = dataset.split()
    train_dirs = _subject_frames(data_root, split.train, "train", log)
    val_dirs = _subject_frames(data_root, split.validation, "validation", log)
    if not train_dirs:
        raise D3keError("no training frames: materialize frames for the train subjects "
                        f"({', '.join(split.train) or 'the split has none'})")
    if not val_dirs:
        raise D3keError("the validation set is empty: materialize frames for a validation subject "
                        f"({', '.join(split.validation) or 'the split has none: use a preset with more subjects'})")
    return train_dirs, val_dirs


def _input_datasets(data_root: DataRootResource, inputs: dict[str, str], train_dirs, val_dirs):
    """(data versions, context, folder) of each input, for MLflow's dataset inputs."""
    roles = {**{f"{folder_name(FRAMES)}/{d.name}": "training" for d in train_dirs},
             **{f"{folder_name(FRAMES)}/{d.name}": "validation" for d in val_dirs}}
    contexts = {name: roles.get(name, "model") for name in inputs}
    folders = {name: data_root.asset_dir(*name.split("/")) for name in inputs}
    return inputs, contexts, folders


def _tracked_training(context, mlflow: MlflowTrackingResource, dataset: DatasetResource, out, stamp: str,
                      asset: str, run_name: str, params: dict, train, osim, datasets) -> None:
    """Run `train(on_epoch)` inside one MLflow run (continued when the training resumes), then log
    the inputs' data versions as dataset inputs (`datasets`: `_input_datasets`), the artifacts, and the
    checkpoint as a pyfunc model registered as a version of `d3ke_<asset>_<dataset>`."""
    active = out / ACTIVE_RUN
    previous = json.loads(active.read_text()) if active.is_file() else None
    resume = previous["run_id"] if previous and previous.get("stamp") == stamp else None
    tracker = TrainingTracker(mlflow.tracking_uri, mlflow.experiment_id(dataset.checked_name()), run_name,
                              {**params, "dagster_run_id": context.run.run_id},
                              tags={"dagster_run_id": context.run.run_id, "asset": asset}, resume_run_id=resume)
    if previous and previous["run_id"] != tracker.run.run_id:
        tracker.end_stale(previous["run_id"])
    active.write_text(json.dumps({"run_id": tracker.run.run_id, "stamp": stamp}))
    try:
        history, config = train(tracker.log_epoch)
    except BaseException:
        tracker.fail()
        raise
    tracker.log_data_versions(*datasets)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = serving.save_pyfunc_model(Path(tmp) / "model", out / training.CHECKPOINT, osim)
        run = tracker.finish(out / training.CHECKPOINT, config, history, f"d3ke_{asset}_{dataset.checked_name()}",
                             model_dir=model_dir)
    (out / HISTORY).write_text(json.dumps([h.__dict__ for h in history], indent=1))
    (out / RUN_INFO).write_text(json.dumps(run.__dict__, indent=1))
    active.unlink()


def _training_result(out: VersionedOutput, extra: dict) -> dg.MaterializeResult:
    folder = out.folder
    history = [training.EpochRecord(**h) for h in json.loads((folder / HISTORY).read_text())]
    run = TrackedRun.from_file(folder / RUN_INFO)
    last = history[-1]
    curve = learning_curve_png(history, folder / "learning_curve.png")
    encoded = base64.b64encode(curve.read_bytes()).decode()
    return out.result({
        **extra, "epochs": len(history),
        "val_coordinate_mae_deg": round(last.val_coordinate_mae_deg, 2),
        "val_marker_error_mm": round(last.val_marker_error_mm, 1),
        "train_loss": round(last.train_loss, 4), "val_loss": round(last.val_loss, 4),
        "data_wait_share": round(last.data_wait_share, 3),
        "mlflow_run": dg.MetadataValue.url(run.ui_url()),
        "mlflow_experiment": dg.MetadataValue.url(run.experiment_url()),
        "registered_model": f"{run.model_name} v{run.model_version}",
        "learning_curve": dg.MetadataValue.md(f"![learning curve](data:image/png;base64,{encoded})"),
        "checkpoint": dg.MetadataValue.path(str(folder / training.CHECKPOINT)),
    })


def _params(out: VersionedOutput, config, train_dirs, val_dirs) -> dict:
    """The run's whole effective configuration as MLflow params: its settings and the training's."""
    inputs = out.inputs
    return {**{f"settings.{k}": v for k, v in out.run_settings.items()}, **config.as_dict(),
            "input_data_versions": {k: v[:16] for k, v in inputs.items()},
            "train_subjects": ",".join(d.name for d in train_dirs),
            "validation_subjects": ",".join(d.name for d in val_dirs)}


def train_frame_model_in(folder: Path, config: training.TrainConfig, train_dirs, val_dirs, model_path: Path,
                         log, on_epoch, resume_key: str) -> list:
    """Train (or resume) the frame model of `config` into `folder` on the train subjects' frames."""
    training.seed_everything(config.seed)  # the initial weights too: a rerun is bit-identical on CPU
    model = FrameModel(SkeletalModel.from_osim(model_path), config.backbone, config.weights_file)
    return training.train_frame_model(model, FrameDataset(train_dirs), FrameDataset(val_dirs), config, folder,
                                      log=log, on_epoch=on_epoch, resume_key=resume_key)


def train_sequence_model_in(folder: Path, settings: sequence.SequenceConfig, frame_checkpoint: Path, train_dirs,
                            val_dirs, model_path: Path, log, on_epoch, resume_key: str) -> list:
    """Train (or resume) the sequence model of `settings` into `folder` on the outputs of the frame model
    at `frame_checkpoint`: under `settings.augment_policy` for the train subjects (augmented passes
    unless `current`), as they are for the validation subjects."""
    bundle = training.load_checkpoint(frame_checkpoint)
    frame = training.load_trained_frame_model(frame_checkpoint, model_path, bundle)
    sets = []
    for role, dirs in (("train", train_dirs), ("validation", val_dirs)):
        frames_all = FrameDataset(dirs, used_only=False)  # windows need every frame of a trial
        role_log = lambda m, role=role: log(f"{role}: {m}")  # noqa: E731
        if role == "train" and settings.augment_policy != "current":
            passes = sequence.augmented_passes(
                frame, frames_all, sequence.frame_draw_config(bundle["config"], settings.augment_policy),
                settings.augmented_copies, settings.seed, log=role_log)
            sets.append(sequence.SequenceDataset(None, frames_all, settings.receptive_field, passes=passes))
        else:
            outputs = sequence.predict_head_outputs(frame, frames_all, log=role_log)
            sets.append(sequence.SequenceDataset(outputs, frames_all, settings.receptive_field))
    training.seed_everything(settings.seed)
    model = sequence.SequenceModel(SkeletalModel.from_osim(model_path), settings)
    history = sequence.train_sequence_model(model, *sets, settings, folder, log=log, on_epoch=on_epoch,
                                            resume_key=resume_key)
    # the checkpoint then runs on its own (d3ke predict, the served model)
    sequence.attach_frame_model(folder / training.CHECKPOINT, frame_checkpoint)
    return history


QUALITY_GATE = "validation_error_below_gate"
SEQUENCE_NOT_WORSE = "sequence_model_not_worse_than_frame_model"


def _gate(dataset: DatasetResource, folder, model_path, train_dirs, val_dirs) -> dict:
    return quality.validation_gate(folder / training.CHECKPOINT, model_path, FrameDataset(train_dirs),
                                   FrameDataset(val_dirs), dataset.preset_settings().gate_ratio)


def require_gate_passed(data_root: DataRootResource, dataset: DatasetResource, log) -> None:
    """For a stage launched in a later run than frame_model's (Dagster's blocking holds within a run):
    a D3keError when the trained frame model fails the preset's gate."""
    if dataset.preset_settings().gate_ratio is None:
        return
    train_dirs, val_dirs = _train_and_val_dirs(data_root, dataset, log)
    model_path = model_files.ModelFiles.in_folder(data_root.asset_dir(folder_name(OPENSIM_MODEL))).osim
    gate = _gate(dataset, data_root.asset_dir(folder_name(FRAME_MODEL)), model_path, train_dirs, val_dirs)
    if not gate["gate_passed"]:
        raise D3keError(f"the trained frame model fails its quality gate (validation MAE "
                        f"{gate['validation_ratio_model_to_baseline']:.3f} of the mean-pose baseline's, gate "
                        f"{gate['gate_ratio']:g}): it is not evaluated; train it again (materialize frame_model)")


def _quality_gate(dataset: DatasetResource, folder, model_path, train_dirs, val_dirs) -> dg.AssetCheckResult:
    """frame_model's blocking check: `quality.validation_gate` at the preset's `gate_ratio`."""
    gate_ratio = dataset.preset_settings().gate_ratio
    gate = _gate(dataset, folder, model_path, train_dirs, val_dirs)
    figures = (f"validation coordinate MAE {gate['validation_frame_model_coordinate_mae_deg']:.2f} deg, "
               f"{gate['validation_ratio_model_to_baseline']:.3f} of the mean-pose baseline's "
               f"{gate['validation_mean_baseline_coordinate_mae_deg']:.2f} deg")
    if gate_ratio is None:
        description = f"{figures}; no gate in preset {dataset.preset}"
    elif gate["gate_passed"]:
        description = f"{figures}, within the gate {gate_ratio:g}"
    else:
        description = (f"{figures}, above the gate {gate_ratio:g}: the training did not learn enough to be "
                       f"evaluated (d3ke quality shows the figures)")
    return dg.AssetCheckResult(
        check_name=QUALITY_GATE, passed=bool(gate["gate_passed"]), severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={k: (round(v, 4) if isinstance(v, float) else ("off" if v is None else v))
                  for k, v in gate.items()})


@dg.asset(key=FRAME_MODEL, deps=[dg.AssetDep(FRAMES, partition_mapping=dg.AllPartitionMapping()), OPENSIM_MODEL],
          code_version=CODE_VERSIONS[FRAME_MODEL], group_name="learning", kinds={"pytorch", "mlflow"},
          pool=GPU_POOL, op_tags=GPU_OP_TAGS,
          # blocking: a training that fails the gate is not scored by evaluation nor refined over time
          check_specs=[dg.AssetCheckSpec(QUALITY_GATE, asset=FRAME_MODEL, blocking=True,
                                         description="validation coordinate MAE at most the preset's gate_ratio "
                                                     "times the mean-pose baseline's on the validation subjects")])
def frame_model(context: dg.AssetExecutionContext, data_root: DataRootResource, dataset: DatasetResource,
                mlflow: MlflowTrackingResource):
    """The frame model (backbone + head + skeletal layer) of the preset, trained on the train
    subjects and validated on the validation subjects; the test subjects are never read here."""
    with user_errors_as_failures():
        train_dirs, val_dirs = _train_and_val_dirs(data_root, dataset, context.log.warning)
        config = presets.train_config(dataset.run_settings())
        out = versioned_output(context, data_root, config.as_dict(), {FRAMES: [d.name for d in [*train_dirs, *val_dirs]]})
        stamp = out.stamp
        model_path = model_files.ModelFiles.in_folder(data_root.asset_dir(folder_name(OPENSIM_MODEL))).osim

        def build(folder):
            def train(on_epoch):
                history = train_frame_model_in(folder, config, train_dirs, val_dirs, model_path, context.log.info,
                                               on_epoch, stamp)
                return history, config.as_dict()

            _tracked_training(context, mlflow, dataset, folder, stamp, folder_name(FRAME_MODEL),
                              f"frame_model {config.backbone}",
                              _params(out, config, train_dirs, val_dirs), train, model_path,
                              _input_datasets(data_root, out.inputs, train_dirs, val_dirs))

        # in place: the per-epoch checkpoint must survive a killed run so the next one resumes
        out.build(build, in_place=True, log=context.log.info)
        yield _training_result(out, {"backbone": config.backbone})
        yield _quality_gate(dataset, out.folder, model_path, train_dirs, val_dirs)


class SequenceModelConfig(dg.Config):
    """Overrides of the preset's temporal stage (None keeps the preset's value)."""

    variant: str | None = None  # tcn, lstm or transformer
    receptive_field: int | None = None  # frames; odd, a power of 3 for tcn (the paper: 243)


@dg.asset(key=SEQUENCE_MODEL,
          deps=[FRAME_MODEL, dg.AssetDep(FRAMES, partition_mapping=dg.AllPartitionMapping()), OPENSIM_MODEL],
          code_version=CODE_VERSIONS[SEQUENCE_MODEL], group_name="learning", kinds={"pytorch", "mlflow"},
          pool=GPU_POOL, op_tags=GPU_OP_TAGS,
          check_specs=[dg.AssetCheckSpec(SEQUENCE_NOT_WORSE, asset=SEQUENCE_MODEL,
                                         description="validation coordinate MAE not above the frame model's")])
def sequence_model(context: dg.AssetExecutionContext, config: SequenceModelConfig, data_root: DataRootResource,
                   dataset: DatasetResource, mlflow: MlflowTrackingResource):
    """The temporal stage over windows of the frame model's outputs on the train subjects' videos,
    validated on the validation subjects, with the frame model's losses."""
    with user_errors_as_failures():
        train_dirs, val_dirs = _train_and_val_dirs(data_root, dataset, context.log.warning)
        settings = presets.sequence_config(dataset.run_settings(), variant=config.variant,
                                           receptive_field=config.receptive_field)
        out = versioned_output(context, data_root, settings.as_dict(),
                               {FRAMES: [d.name for d in [*train_dirs, *val_dirs]]})
        stamp = out.stamp
        frame_dir = data_root.asset_dir(folder_name(FRAME_MODEL))
        model_path = model_files.ModelFiles.in_folder(data_root.asset_dir(folder_name(OPENSIM_MODEL))).osim

        def build(folder):
            def train(on_epoch):
                history = train_sequence_model_in(folder, settings, frame_dir / training.CHECKPOINT, train_dirs,
                                                  val_dirs, model_path, context.log.info, on_epoch, stamp)
                return history, settings.as_dict()

            _tracked_training(context, mlflow, dataset, folder, stamp, folder_name(SEQUENCE_MODEL),
                              f"sequence_model {settings.variant} rf{settings.receptive_field}",
                              _params(out, settings, train_dirs, val_dirs), train, model_path,
                              _input_datasets(data_root, out.inputs, train_dirs, val_dirs))

        out.build(build, in_place=True, log=context.log.info)
        yield _training_result(out, {"variant": settings.variant, "receptive_field": settings.receptive_field})
        # both figures on the validation subjects' used frames; a warning: the frame model is still usable
        seq_mae = quality.validation_mae_deg(out.folder / training.CHECKPOINT)
        frame_mae = quality.validation_mae_deg(frame_dir / training.CHECKPOINT)
        yield dg.AssetCheckResult(check_name=SEQUENCE_NOT_WORSE, passed=bool(seq_mae <= frame_mae),
                                  severity=dg.AssetCheckSeverity.WARN,
                                  metadata={"validation_sequence_model_coordinate_mae_deg": round(seq_mae, 4),
                                            "validation_frame_model_coordinate_mae_deg": round(frame_mae, 4),
                                            "ratio_sequence_to_frame_model": round(seq_mae / frame_mae, 4)})
