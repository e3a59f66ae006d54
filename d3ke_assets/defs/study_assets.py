"""`current_policy_evaluation`: the robustness study's control, outside the main job.

Both models trained as the preset's (same data, seed and schedule) but with the `current`
augmentation policy, scored by the same evaluation, so `robustness_report` can show what the
training-time augmentation changes.  Materialize it on request:
`dg launch --assets current_policy_evaluation` (or the UI's Materialize button).
"""

import json

import dagster as dg

from d3ke_assets.biomech import model_files
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.constants import (CODE_VERSIONS, CURRENT_POLICY_EVALUATION, FRAMES, OPENSIM_MODEL,
                                        folder_name)
from d3ke_assets.defs.evaluation_assets import HEADLINE, RESULTS, RUN_INFO, _headline, _table_metadata, _test_dirs
from d3ke_assets.defs.pools import GPU_OP_TAGS, GPU_POOL
from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.defs.training_assets import _train_and_val_dirs, train_frame_model_in, train_sequence_model_in
from d3ke_assets.defs.versioned import versioned_output
from d3ke_assets.evaluation.evaluate import evaluate_test_subjects
from d3ke_assets.frames.augmentations import AUGMENTATIONS
from d3ke_assets.learning import presets, sequence, training
from d3ke_assets.learning.tracking import TrackedRun, log_evaluation_run

POLICY = "current"
FRAME_DIR, SEQUENCE_DIR = "frame_model", "sequence_model"


@dg.asset(key=CURRENT_POLICY_EVALUATION,
          deps=[dg.AssetDep(FRAMES, partition_mapping=dg.AllPartitionMapping()), OPENSIM_MODEL],
          code_version=CODE_VERSIONS[CURRENT_POLICY_EVALUATION], group_name="studies",
          kinds={"pytorch", "mlflow", "parquet"}, pool=GPU_POOL, op_tags=GPU_OP_TAGS)
def current_policy_evaluation(context: dg.AssetExecutionContext, data_root: DataRootResource,
                              dataset: DatasetResource, mlflow: MlflowTrackingResource) -> dg.MaterializeResult:
    """Frame and sequence models trained with the `current` augmentation policy (everything else as the
    preset's), scored on the test subjects like `evaluation`: `results.parquet`, one MLflow run.  Not in
    the main job; once materialized, robustness_report compares both policies."""
    import pandas as pd

    with user_errors_as_failures():
        train_dirs, val_dirs = _train_and_val_dirs(data_root, dataset, context.log.warning)
        test_dirs = _test_dirs(data_root, dataset, context.log.warning)
        run_settings = dataset.run_settings()
        frame_config = presets.train_config(run_settings, augment_policy=POLICY)
        sequence_config = presets.sequence_config(run_settings, augment_policy=POLICY)
        config = {"frame_model": frame_config.as_dict(), "sequence_model": sequence_config.as_dict(),
                  "augmentations": {k: list(v) for k, v in AUGMENTATIONS.items()}}
        out = versioned_output(context, data_root, config,
                               {FRAMES: [d.name for d in [*train_dirs, *val_dirs, *test_dirs]]})
        osim = model_files.ModelFiles.in_folder(data_root.asset_dir(folder_name(OPENSIM_MODEL))).osim
        log = context.log.info

        def build(folder):
            frame_dir, sequence_dir = folder / FRAME_DIR, folder / SEQUENCE_DIR
            frame_history = train_frame_model_in(frame_dir, frame_config, train_dirs, val_dirs, osim,
                                                 lambda m: log(f"frame model ({POLICY}): {m}"), lambda r: None,
                                                 out.stamp)
            sequence_history = train_sequence_model_in(sequence_dir, sequence_config, frame_dir / training.CHECKPOINT,
                                                       train_dirs, val_dirs, osim,
                                                       lambda m: log(f"sequence model ({POLICY}): {m}"),
                                                       lambda r: None, out.stamp)
            frame = training.load_trained_frame_model(frame_dir / training.CHECKPOINT, osim)
            seq = sequence.load_trained_sequence_model(sequence_dir / training.CHECKPOINT, osim)
            table = evaluate_test_subjects(frame, test_dirs, seq, log=log)
            table.insert(0, "augment_policy", POLICY)
            table.to_parquet(folder / RESULTS, index=False)
            validation = {"frame_model.val_coordinate_mae_deg": frame_history[-1].val_coordinate_mae_deg,
                          "sequence_model.val_coordinate_mae_deg": sequence_history[-1].val_coordinate_mae_deg}
            run = log_evaluation_run(mlflow.tracking_uri, mlflow.experiment_id(dataset.checked_name()),
                                     folder_name(CURRENT_POLICY_EVALUATION),
                                     {"augment_policy": POLICY, **config,
                                      "input_data_versions": {k: v[:16] for k, v in out.inputs.items()},
                                      "test_subjects": ",".join(d.name for d in test_dirs),
                                      "dagster_run_id": context.run.run_id},
                                     {**_headline(table), **validation}, [folder / RESULTS],
                                     tags={"asset": folder_name(CURRENT_POLICY_EVALUATION)})
            (folder / RUN_INFO).write_text(json.dumps(run.__dict__))

        # in place: the trainings' per-epoch checkpoints survive a killed run and are resumed
        folder = out.build(build, in_place=True, log=log).folder
        table = pd.read_parquet(folder / RESULTS)
        run = TrackedRun.from_file(folder / RUN_INFO)
    return out.result({
        "augment_policy": POLICY,
        **{k: round(float(v), 3) for k, v in _headline(table).items()},
        "results": _table_metadata(table, HEADLINE),
        "mlflow_run": dg.MetadataValue.url(run.ui_url()),
    })
