"""The backbone study, outside the main job: `backbone_study` (one partition per backbone) trains the
frame model with that backbone on the main job's data under the preset's study budget and scores it
like `evaluation`; `backbone_comparison` puts the backbones side by side (table and plot).

Materialize on request, e.g. `dg launch --assets backbone_study --partition resnet18` per backbone,
then `dg launch --assets backbone_comparison`; or select both in the UI.
"""


import base64
import json
import time
from typing import Optional

import dagster as dg
import torch

from d3ke_assets.biomech import model_files
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.constants import (BACKBONE_COMPARISON, BACKBONE_STUDY, CODE_VERSIONS, FRAMES, OPENSIM_MODEL,
                                        folder_name)
from d3ke_assets.defs.evaluation_assets import HEADLINE, RESULTS, RUN_INFO, _table_metadata, _test_dirs
from d3ke_assets.defs.pools import GPU_OP_TAGS, GPU_POOL
from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.defs.training_assets import HISTORY, _train_and_val_dirs, train_frame_model_in
from d3ke_assets.defs.versioned import version_on_disk, versioned_output
from d3ke_assets.errors import D3keError
from d3ke_assets.evaluation import backbones
from d3ke_assets.frames.augmentations import AUGMENTATIONS
from d3ke_assets.learning import presets, training
from d3ke_assets.learning.tracking import TrackedRun, log_evaluation_run

BACKBONE_PARTITIONS = dg.StaticPartitionsDefinition(list(backbones.STUDY_BACKBONES))
SUMMARY = "summary.json"
FRAME_DIR = "frame_model"
COMPARISON_PARQUET, COMPARISON_CSV, COMPARISON_PNG = "comparison.parquet", "comparison.csv", "comparison.png"


class BackboneStudyConfig(dg.Config):
    """The study's budget per backbone: the preset's (`settings.Preset.study`), with these set where given.
    Every backbone of one comparison should share it."""

    epochs: Optional[int] = None
    frame_stride: Optional[int] = None
    test_subjects: Optional[int] = None


def study_budget(dataset: DatasetResource, config: BackboneStudyConfig) -> backbones.StudyBudget:
    given = {k: v for k, v in config.model_dump().items() if v is not None}
    return backbones.StudyBudget(**{**dataset.preset_settings().study, **given}).check()


@dg.asset(key=BACKBONE_STUDY, partitions_def=BACKBONE_PARTITIONS,
          deps=[dg.AssetDep(FRAMES, partition_mapping=dg.AllPartitionMapping()), OPENSIM_MODEL],
          code_version=CODE_VERSIONS[BACKBONE_STUDY], group_name="studies", kinds={"pytorch", "mlflow", "parquet"},
          pool=GPU_POOL, op_tags=GPU_OP_TAGS)
def backbone_study(context: dg.AssetExecutionContext, config: BackboneStudyConfig, data_root: DataRootResource,
                   dataset: DatasetResource, mlflow: MlflowTrackingResource) -> dg.MaterializeResult:
    """The frame model with this partition's backbone, trained on the main job's train subjects under the
    study budget and scored on the first test subjects like `evaluation` (the frame model, every view and
    condition): `results.parquet`, `summary.json` (accuracy, parameters, ms per frame), one MLflow run."""
    import pandas as pd

    from d3ke_assets.evaluation.evaluate import RESULT_GROUP, aggregate, subject_sums
    from d3ke_assets.frames.reader import FrameDataset

    backbone = context.partition_key
    log = context.log.info
    with user_errors_as_failures():
        backbones.check_backbone(backbone)
        budget = study_budget(dataset, config)
        train_dirs, val_dirs = _train_and_val_dirs(data_root, dataset, context.log.warning)
        test_dirs = _test_dirs(data_root, dataset, context.log.warning)[:budget.test_subjects]
        run_settings = dataset.run_settings()
        train_config = presets.study_train_config(run_settings, backbone, budget.train_overrides())
        asset_config = {"budget": budget.as_dict(), "frame_model": train_config.as_dict(),
                        "augmentations": {k: list(v) for k, v in AUGMENTATIONS.items()}}
        out = versioned_output(context, data_root, asset_config,
                               {FRAMES: [d.name for d in [*train_dirs, *val_dirs, *test_dirs]]})
        osim = model_files.ModelFiles.in_folder(data_root.asset_dir(folder_name(OPENSIM_MODEL))).osim

        def build(folder):
            start = time.perf_counter()
            history = train_frame_model_in(folder / FRAME_DIR, train_config, train_dirs, val_dirs, osim,
                                           lambda m: log(f"{backbone}: {m}"), lambda r: None, out.stamp)
            train_minutes = (time.perf_counter() - start) / 60
            (folder / HISTORY).write_text(json.dumps([h.__dict__ for h in history], indent=1))
            frame = training.load_trained_frame_model(folder / FRAME_DIR / training.CHECKPOINT, osim)
            sums = pd.concat([subject_sums(frame, d, None, log=lambda m: log(f"{backbone}: {m}")) for d in test_dirs],
                             ignore_index=True)
            table = aggregate(sums, RESULT_GROUP)
            table.insert(0, "backbone", backbone)
            table.to_parquet(folder / RESULTS, index=False)
            cpu_ms = backbones.ms_per_frame(frame, dataset.crop_px(), torch.device("cpu"))
            gpu_ms = backbones.ms_per_frame(frame, dataset.crop_px(), torch.device("cuda")) \
                if torch.cuda.is_available() else None
            n_train = len(FrameDataset(train_dirs))
            row = backbones.summary_row(backbone, table, backbones.parameter_count(frame), cpu_ms, gpu_ms,
                                        train_minutes, budget.epochs, budget.epochs * -(-n_train // budget.frame_stride))
            row["val_coordinate_mae_deg"] = history[-1].val_coordinate_mae_deg
            (folder / SUMMARY).write_text(json.dumps(row, indent=1))
            log(f"{backbone}: clean coordinate MAE {row['clean_coordinate_mae_deg']:.2f} deg, "
                f"{cpu_ms:.1f} ms per frame on the CPU, {row['parameters_m']:.1f} M parameters")
            run = log_evaluation_run(mlflow.tracking_uri, mlflow.experiment_id(dataset.checked_name()),
                                     f"{folder_name(BACKBONE_STUDY)} {backbone}",
                                     {"backbone": backbone, **asset_config,
                                      "input_data_versions": {k: v[:16] for k, v in out.inputs.items()},
                                      "test_subjects": ",".join(d.name for d in test_dirs),
                                      "dagster_run_id": context.run.run_id},
                                     {k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None},
                                     [folder / RESULTS, folder / SUMMARY, folder / HISTORY],
                                     tags={"asset": folder_name(BACKBONE_STUDY), "backbone": backbone})
            (folder / RUN_INFO).write_text(json.dumps(run.__dict__))

        # in place: a killed training's per-epoch checkpoint is resumed
        folder = out.build(build, in_place=True, log=log).folder
        summary = json.loads((folder / SUMMARY).read_text())
        table = pd.read_parquet(folder / RESULTS)
        run = TrackedRun.from_file(folder / RUN_INFO)
    return out.result({
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in summary.items() if v is not None},
        "results": _table_metadata(table, HEADLINE),
        "mlflow_run": dg.MetadataValue.url(run.ui_url()),
    })


@dg.asset(key=BACKBONE_COMPARISON,
          deps=[dg.AssetDep(BACKBONE_STUDY, partition_mapping=dg.AllPartitionMapping())],
          code_version=CODE_VERSIONS[BACKBONE_COMPARISON], group_name="studies", kinds={"mlflow", "parquet"})
def backbone_comparison(context: dg.AssetExecutionContext, data_root: DataRootResource, dataset: DatasetResource,
                        mlflow: MlflowTrackingResource) -> dg.MaterializeResult:
    """The backbones studied so far side by side: clean and augmented coordinate MAE, MPJPE, PA-MPJPE,
    PCK@150, parameters and ms per frame (`comparison.parquet`/`.csv`), a plot of accuracy against
    CPU time per frame (`comparison.png`), and one MLflow run."""
    import pandas as pd

    with user_errors_as_failures():
        studied = [b for b in backbones.STUDY_BACKBONES if version_on_disk(data_root, BACKBONE_STUDY, b) is not None]
        if not studied:
            raise D3keError(f"no backbone is studied yet: materialize backbone_study for some of "
                            f"{', '.join(backbones.STUDY_BACKBONES)}")
        missing = [b for b in backbones.STUDY_BACKBONES if b not in studied]
        if missing:
            context.log.warning(f"backbones not studied yet (left out): {', '.join(missing)}")
        out = versioned_output(context, data_root, {}, {BACKBONE_STUDY: studied})

        def build(folder):
            rows = [json.loads((data_root.asset_dir(folder_name(BACKBONE_STUDY), b) / SUMMARY).read_text())
                    for b in studied]
            table = backbones.comparison_table(rows)
            table.to_parquet(folder / COMPARISON_PARQUET, index=False)
            table.to_csv(folder / COMPARISON_CSV, index=False)
            backbones.comparison_png(table, folder / COMPARISON_PNG)
            run = log_evaluation_run(mlflow.tracking_uri, mlflow.experiment_id(dataset.checked_name()),
                                     folder_name(BACKBONE_COMPARISON),
                                     {"backbones": ",".join(studied),
                                      "input_data_versions": {k: v[:16] for k, v in out.inputs.items()},
                                      "dagster_run_id": context.run.run_id},
                                     {f"{r.backbone}.clean_coordinate_mae_deg": r.clean_coordinate_mae_deg
                                      for r in table.itertuples()},
                                     [folder / COMPARISON_CSV, folder / COMPARISON_PNG],
                                     tags={"asset": folder_name(BACKBONE_COMPARISON)})
            (folder / RUN_INFO).write_text(json.dumps(run.__dict__))

        folder = out.build(build, log=context.log.info).folder
        table = pd.read_parquet(folder / COMPARISON_PARQUET)
        run = TrackedRun.from_file(folder / RUN_INFO)
    png = base64.b64encode((folder / COMPARISON_PNG).read_bytes()).decode()
    columns = [c for c in backbones.SUMMARY_COLUMNS if table[c].notna().any()]
    return out.result({
        "backbones": len(table),
        "comparison": _table_metadata(table, columns),
        "plot": dg.MetadataValue.md(f"![accuracy against time per frame](data:image/png;base64,{png})"),
        "comparison_file": dg.MetadataValue.path(str(folder / COMPARISON_CSV)),
        "mlflow_run": dg.MetadataValue.url(run.ui_url()),
    })
