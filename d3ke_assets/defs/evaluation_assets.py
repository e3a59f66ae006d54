"""`evaluation`: both trained models on the test subjects, per view, clean and augmented."""

import base64
import json
import tempfile
from pathlib import Path

import dagster as dg

from d3ke_assets.biomech import model_builder
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.frames_assets import frames
from d3ke_assets.defs.pools import GPU_OP_TAGS, GPU_POOL
from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.defs.training_assets import _subject_frames, frame_model, sequence_model
from d3ke_assets.defs.versioned import code_version_of, input_version, input_versions_metadata
from d3ke_assets.errors import D3keError
from d3ke_assets.evaluation import report
from d3ke_assets.frames.augmentations import AUGMENTATIONS
from d3ke_assets.evaluation.evaluate import direct_versus_multistep, evaluate_test_subjects
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning import sequence, training
from d3ke_assets.learning.tracking import TrackedRun, log_evaluation_run
from d3ke_assets.versioning import build_if_stale, version_stamp

EVALUATION_CODE_VERSION = "1"
REPORT_CODE_VERSION = "1"
RESULTS = "results.parquet"
RUN_INFO = "mlflow_run.json"
MULTISTEP = "direct_vs_multistep.parquet"
CLAIM_COLUMNS = ["method", "view", "coordinate_mae_deg", "coordinate_rmse_deg", "marker_error_mm", "mpjpe_mm",
                 "pa_mpjpe_mm", "pck150_percent"]
HEADLINE = ["model", "view", "augmentation", "severity", "coordinate_mae_deg", "marker_error_mm", "mpjpe_mm",
            "pa_mpjpe_mm", "pck150_percent", "ms_per_frame"]


def _test_dirs(data_root: DataRootResource, dataset: DatasetResource, log) -> list:
    split = dataset.split()
    test_dirs = _subject_frames(data_root, split.test, "test", log)
    if not test_dirs:
        raise D3keError(f"no test subject has frames ({', '.join(split.test)}): materialize frames for them")
    return test_dirs


def _table_metadata(table, columns: list[str]) -> dg.TableMetadataValue:
    text = ("model", "view", "augmentation", "method")
    records = [dg.TableRecord({k: (v if k in text else round(float(v), 3)) for k, v in row.items()})
               for row in table[columns].to_dict("records")]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string" if c in text else "float") for c in columns])
    return dg.MetadataValue.table(records, schema=schema)


def _claim_headline(claim) -> dict[str, float]:
    return {f"{r.method}.{r.view}.coordinate_mae_deg": r.coordinate_mae_deg for r in claim.itertuples()}


def _headline(table) -> dict[str, float]:
    """Clean-frame errors per model and view: the figures to compare runs by."""
    clean = table[table.augmentation == "clean"]
    out = {f"{r.model}.{r.view}.coordinate_mae_deg": r.coordinate_mae_deg for r in clean.itertuples()}
    out.update({f"{r.model}.{r.view}.mpjpe_mm": r.mpjpe_mm for r in clean.itertuples()})
    return out


@dg.asset(deps=[frame_model, sequence_model, dg.AssetDep(frames, partition_mapping=dg.AllPartitionMapping())],
          code_version=EVALUATION_CODE_VERSION, group_name="evaluation", kinds={"pytorch", "mlflow", "parquet"},
          pool=GPU_POOL, op_tags=GPU_OP_TAGS)
def evaluation(context: dg.AssetExecutionContext, data_root: DataRootResource, dataset: DatasetResource,
               mlflow: MlflowTrackingResource) -> dg.MaterializeResult:
    """The frame and sequence models on the test subjects' frames, per camera view, clean and under
    each augmentation and severity: one row each, in `results.parquet` and an MLflow run."""
    import pandas as pd

    with user_errors_as_failures():
        test_dirs = _test_dirs(data_root, dataset, context.log.warning)
        inputs = {f"frames/{d.name}": input_version(data_root, "frames", d.name) for d in test_dirs}
        inputs["frame_model"] = input_version(data_root, "frame_model", None)
        inputs["sequence_model"] = input_version(data_root, "sequence_model", None)
        config = {"augmentations": {k: list(v) for k, v in AUGMENTATIONS.items()}}
        stamp = version_stamp(code_version_of(context), config, inputs)
        folder = data_root.asset_dir("evaluation")
        osim = model_builder.model_file(data_root.asset_dir("opensim_model"))

        def build(out):
            frame = training.load_trained_frame_model(data_root.asset_dir("frame_model") / training.CHECKPOINT, osim)
            seq = sequence.load_trained_sequence_model(
                data_root.asset_dir("sequence_model") / training.CHECKPOINT, osim)
            table = evaluate_test_subjects(frame, test_dirs, seq, log=context.log.info)
            table.to_parquet(out / RESULTS, index=False)
            with tempfile.TemporaryDirectory() as work:  # OpenSim's IK files are not kept
                claim = direct_versus_multistep(frame, test_dirs, osim, Path(work), log=context.log.info)
            claim.to_parquet(out / MULTISTEP, index=False)
            run = log_evaluation_run(mlflow.tracking_uri, mlflow.experiment_id(dataset.checked_name()), "evaluation",
                                     {"input_data_versions": {k: v[:16] for k, v in inputs.items()},
                                      "test_subjects": ",".join(d.name for d in test_dirs),
                                      "dagster_run_id": context.run_id},
                                     {**_headline(table), **_claim_headline(claim)}, [out / RESULTS, out / MULTISTEP],
                                     tags={"asset": "evaluation"})
            (out / RUN_INFO).write_text(json.dumps(run.__dict__))

        data_version, reused = build_if_stale(folder, stamp, build)
        table = pd.read_parquet(folder / RESULTS)
        claim = pd.read_parquet(folder / MULTISTEP)
        run = TrackedRun.from_file(folder / RUN_INFO)
    return dg.MaterializeResult(data_version=dg.DataVersion(data_version), metadata={
        "reused": reused, **input_versions_metadata(inputs), "rows": len(table),
        **{k: round(float(v), 3) for k, v in {**_headline(table), **_claim_headline(claim)}.items()},
        "direct_versus_multi_step": _table_metadata(claim, CLAIM_COLUMNS),
        "mlflow_run": dg.MetadataValue.url(run.ui_url()),
        "results": _table_metadata(table, HEADLINE),
        "results_file": dg.MetadataValue.path(str(folder / RESULTS)),
    })


@dg.asset(deps=[evaluation, frame_model, sequence_model, dg.AssetDep(frames, partition_mapping=dg.AllPartitionMapping())],
          code_version=REPORT_CODE_VERSION, group_name="evaluation", kinds={"mlflow", "markdown"},
          pool=GPU_POOL, op_tags=GPU_OP_TAGS)
def robustness_report(context: dg.AssetExecutionContext, data_root: DataRootResource, dataset: DatasetResource,
                      mlflow: MlflowTrackingResource) -> dg.MaterializeResult:
    """Plots of the evaluation (error against severity per augmentation, predicted and true curves of
    a test subject's trials, predicted skeletons over test frames) and `report.md` linking them."""
    import pandas as pd

    with user_errors_as_failures():
        test_dirs = _test_dirs(data_root, dataset, context.log.warning)
        inputs = {"evaluation": input_version(data_root, "evaluation", None),
                  "frame_model": input_version(data_root, "frame_model", None),
                  "sequence_model": input_version(data_root, "sequence_model", None),
                  f"frames/{test_dirs[0].name}": input_version(data_root, "frames", test_dirs[0].name)}
        stamp = version_stamp(code_version_of(context), {}, inputs)
        folder = data_root.asset_dir("robustness_report")
        osim = model_builder.model_file(data_root.asset_dir("opensim_model"))
        evaluated = data_root.asset_dir("evaluation")

        def build(out):
            frame = training.load_trained_frame_model(data_root.asset_dir("frame_model") / training.CHECKPOINT, osim)
            seq = sequence.load_trained_sequence_model(
                data_root.asset_dir("sequence_model") / training.CHECKPOINT, osim)
            first = FrameDataset([test_dirs[0]], used_only=False)
            view = FrameDataset([test_dirs[0]], used_only=False, cameras=(sorted(set(first.camera.tolist()))[0],))
            path = report.write_report(pd.read_parquet(evaluated / RESULTS), pd.read_parquet(evaluated / MULTISTEP),
                                       out, view, frame, seq, test_subjects=[d.name for d in test_dirs])
            run = log_evaluation_run(mlflow.tracking_uri, mlflow.experiment_id(dataset.checked_name()),
                                     "robustness_report", {"input_data_versions": {k: v[:16] for k, v in inputs.items()},
                                                           "dagster_run_id": context.run_id}, {},
                                     [path, *(out / p for p in report.PNGS)], tags={"asset": "robustness_report"})
            (out / RUN_INFO).write_text(json.dumps(run.__dict__))

        data_version, reused = build_if_stale(folder, stamp, build)
        run = TrackedRun.from_file(folder / RUN_INFO)
    embedded = (folder / report.REPORT_MD).read_text()
    for png in report.PNGS:  # the UI shows the report with its pictures inline
        data = base64.b64encode((folder / png).read_bytes()).decode()
        embedded = embedded.replace(f"]({png})", f"](data:image/png;base64,{data})")
    return dg.MaterializeResult(data_version=dg.DataVersion(data_version), metadata={
        "reused": reused, **input_versions_metadata(inputs),
        "report": dg.MetadataValue.md(embedded),
        "report_file": dg.MetadataValue.path(str(folder / report.REPORT_MD)),
        "mlflow_run": dg.MetadataValue.url(run.ui_url()),
    })
