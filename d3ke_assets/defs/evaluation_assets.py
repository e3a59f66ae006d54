"""`subject_evaluation`: both trained models on one test subject, per view, clean and augmented, kept as
sums over its frames; `evaluation`: those sums added up over the test subjects into the tables.  A
changed test subject costs its own scoring and the aggregation; a changed model rescores every one."""

import base64
import json
import tempfile
from pathlib import Path

import dagster as dg

from d3ke_assets.biomech import model_files
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.pools import GPU_OP_TAGS, GPU_POOL
from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource
from d3ke_assets.defs.constants import (CODE_VERSIONS, CURRENT_POLICY_EVALUATION, EVALUATION, FRAME_MODEL, FRAMES,
                                        OPENSIM_MODEL, ROBUSTNESS_REPORT, SEQUENCE_MODEL, SUBJECT_EVALUATION,
                                        folder_name)
from d3ke_assets.defs.training_assets import _subject_frames, require_gate_passed
from d3ke_assets.defs.versioned import version_on_disk, versioned_output
from d3ke_assets.errors import D3keError
from d3ke_assets.evaluation import report
from d3ke_assets.frames.augmentations import AUGMENTATIONS
from d3ke_assets.evaluation.evaluate import RESULT_GROUP, aggregate, claim_table, subject_claim_sums, subject_sums
from d3ke_assets.frames.reader import FrameDataset
from d3ke_assets.learning import sequence, training
from d3ke_assets.learning.tracking import TrackedRun, log_evaluation_run

RESULTS = "results.parquet"
RESULTS_BY_SUBJECT = "results_by_subject.parquet"
SUBJECT_SUMS = "score_sums.parquet"  # subject_evaluation: `evaluate.score_sums` rows
SUBJECT_CLAIM_SUMS = "direct_vs_multistep_sums.parquet"
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


def _trained_models(data_root: DataRootResource, osim):
    """The trained frame and sequence models, on the device the training chose."""
    frame = training.load_trained_frame_model(data_root.asset_dir(folder_name(FRAME_MODEL)) / training.CHECKPOINT, osim)
    seq = sequence.load_trained_sequence_model(data_root.asset_dir(folder_name(SEQUENCE_MODEL)) / training.CHECKPOINT,
                                               osim)
    return frame, seq


def _table_metadata(table, columns: list[str]) -> dg.TableMetadataValue:
    text = ("model", "view", "augmentation", "method", "backbone")
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


def _evaluation_config(dataset: DatasetResource) -> dict:
    config = {"augmentations": {k: list(v) for k, v in AUGMENTATIONS.items()}}
    if dataset.ik_backend != "opensim":  # the multi-step baseline's IK; named only when not the default
        config["ik_backend"] = dataset.ik_backend
    return config


@dg.asset(key=SUBJECT_EVALUATION, deps=[FRAME_MODEL, SEQUENCE_MODEL, OPENSIM_MODEL, FRAMES],
          code_version=CODE_VERSIONS[SUBJECT_EVALUATION], group_name="evaluation", kinds={"pytorch", "parquet"},
          pool=GPU_POOL, op_tags=GPU_OP_TAGS)
def subject_evaluation(context: dg.AssetExecutionContext, data_root: DataRootResource,
                       dataset: DatasetResource) -> dg.MaterializeResult:
    """One test subject scored by both trained models, per camera view, clean and under each
    augmentation and severity, and the direct-versus-multi-step claim on its clean frames: sums over
    its frames (`evaluate.score_sums`), which `evaluation` adds up.  Test subjects only."""
    import pandas as pd

    key = context.partition_key
    with user_errors_as_failures():
        split = dataset.split()
        if key not in split.test:
            raise D3keError(f"{key} is not a test subject: subject_evaluation scores the test subjects only "
                            f"({', '.join(split.test)}); materialize one of those partitions")
        require_gate_passed(data_root, dataset, context.log.warning)  # also when frame_model ran in another run
        frames_dir = data_root.asset_dir(folder_name(FRAMES), key)
        out = versioned_output(context, data_root, _evaluation_config(dataset))
        osim = model_files.ModelFiles.in_folder(data_root.asset_dir(folder_name(OPENSIM_MODEL))).osim

        def build(folder):
            frame, seq = _trained_models(data_root, osim)
            clean_outputs: dict = {}  # the network runs once per frame and condition: the claim reuses the clean ones
            subject_sums(frame, frames_dir, seq, log=context.log.info, clean_outputs=clean_outputs
                         ).to_parquet(folder / SUBJECT_SUMS, index=False)
            with tempfile.TemporaryDirectory() as work:  # OpenSim's IK files are not kept
                subject_claim_sums(frame, frames_dir, osim, Path(work), log=context.log.info,
                                   clean_outputs=clean_outputs, ik_backend=dataset.ik_backend
                                   ).to_parquet(folder / SUBJECT_CLAIM_SUMS, index=False)

        folder = out.build(build, log=context.log.info).folder
        table = aggregate(pd.read_parquet(folder / SUBJECT_SUMS), RESULT_GROUP)
    return out.result({"rows": len(table), **{k: round(float(v), 3) for k, v in _headline(table).items()},
                       "results": _table_metadata(table, HEADLINE)})


def _scored_test_subjects(data_root: DataRootResource, dataset: DatasetResource, log) -> list[str]:
    """The test subjects whose subject_evaluation is on disk; the others are named in the log."""
    split = dataset.split()
    scored = [s for s in split.test if version_on_disk(data_root, SUBJECT_EVALUATION, s) is not None]
    missing = [s for s in split.test if s not in scored]
    if not scored:
        raise D3keError(f"no test subject is scored ({', '.join(split.test)}): materialize subject_evaluation "
                        f"for them")
    if missing:
        log(f"test subjects without subject_evaluation (left out): {', '.join(missing)}")
    return scored


@dg.asset(key=EVALUATION,
          deps=[dg.AssetDep(SUBJECT_EVALUATION, partition_mapping=dg.AllPartitionMapping())],
          code_version=CODE_VERSIONS[EVALUATION], group_name="evaluation", kinds={"mlflow", "parquet"})
def evaluation(context: dg.AssetExecutionContext, data_root: DataRootResource, dataset: DatasetResource,
               mlflow: MlflowTrackingResource) -> dg.MaterializeResult:
    """The test subjects' subject_evaluation added up: one row per model x view x augmentation x
    severity in `results.parquet` (and per subject in `results_by_subject.parquet`), the claim in
    `direct_vs_multistep.parquet`, and an MLflow run."""
    import pandas as pd

    with user_errors_as_failures():
        subjects = _scored_test_subjects(data_root, dataset, context.log.warning)
        out = versioned_output(context, data_root, {}, {SUBJECT_EVALUATION: subjects})
        scored = [data_root.asset_dir(folder_name(SUBJECT_EVALUATION), s) for s in subjects]

        def build(folder):
            sums = pd.concat([pd.read_parquet(d / SUBJECT_SUMS) for d in scored], ignore_index=True)
            table = aggregate(sums, RESULT_GROUP)
            table.to_parquet(folder / RESULTS, index=False)
            aggregate(sums, ["subject", *RESULT_GROUP]).to_parquet(folder / RESULTS_BY_SUBJECT, index=False)
            claim = claim_table(pd.concat([pd.read_parquet(d / SUBJECT_CLAIM_SUMS) for d in scored],
                                          ignore_index=True))
            claim.to_parquet(folder / MULTISTEP, index=False)
            context.log.info(f"evaluation: {len(subjects)} test subjects added up, {len(table)} rows")
            run = log_evaluation_run(mlflow.tracking_uri, mlflow.experiment_id(dataset.checked_name()), folder_name(EVALUATION),
                                     {"input_data_versions": {k: v[:16] for k, v in out.inputs.items()},
                                      "test_subjects": ",".join(subjects),
                                      "dagster_run_id": context.run.run_id},
                                     {**_headline(table), **_claim_headline(claim)},
                                     [folder / RESULTS, folder / RESULTS_BY_SUBJECT, folder / MULTISTEP],
                                     tags={"asset": folder_name(EVALUATION)})
            (folder / RUN_INFO).write_text(json.dumps(run.__dict__))

        folder = out.build(build, log=context.log.info).folder
        table = pd.read_parquet(folder / RESULTS)
        claim = pd.read_parquet(folder / MULTISTEP)
        run = TrackedRun.from_file(folder / RUN_INFO)
    return out.result({
        "rows": len(table),
        "test_subjects": len(subjects),
        **{k: round(float(v), 3) for k, v in {**_headline(table), **_claim_headline(claim)}.items()},
        "direct_versus_multi_step": _table_metadata(claim, CLAIM_COLUMNS),
        "mlflow_run": dg.MetadataValue.url(run.ui_url()),
        "results": _table_metadata(table, HEADLINE),
        "results_file": dg.MetadataValue.path(str(folder / RESULTS)),
    })


@dg.asset(key=ROBUSTNESS_REPORT,
          deps=[EVALUATION, FRAME_MODEL, SEQUENCE_MODEL, dg.AssetDep(FRAMES, partition_mapping=dg.AllPartitionMapping()),
                CURRENT_POLICY_EVALUATION],
          code_version=CODE_VERSIONS[ROBUSTNESS_REPORT], group_name="evaluation", kinds={"mlflow", "markdown"},
          pool=GPU_POOL, op_tags=GPU_OP_TAGS)
def robustness_report(context: dg.AssetExecutionContext, data_root: DataRootResource, dataset: DatasetResource,
                      mlflow: MlflowTrackingResource) -> dg.MaterializeResult:
    """Plots of the evaluation (error against severity per augmentation, predicted and true curves of
    a test subject's trials, predicted skeletons over test frames) and `report.md` linking them; with
    both augmentation policies side by side once current_policy_evaluation is materialized."""
    import pandas as pd

    with user_errors_as_failures():
        test_dirs = _test_dirs(data_root, dataset, context.log.warning)
        # the control of the augmentation study is an input only once it exists (it is not in the main job)
        control = version_on_disk(data_root, CURRENT_POLICY_EVALUATION, None)
        # the pictures of one test subject's trials: its frames are an input, the others' are not
        out = versioned_output(context, data_root, {}, {FRAMES: [test_dirs[0].name]},
                               unread=() if control else (CURRENT_POLICY_EVALUATION,))
        osim = model_files.ModelFiles.in_folder(data_root.asset_dir(folder_name(OPENSIM_MODEL))).osim
        evaluated = data_root.asset_dir(folder_name(EVALUATION))

        def build(folder):
            frame, seq = _trained_models(data_root, osim)
            first = FrameDataset([test_dirs[0]], used_only=False)
            view = FrameDataset([test_dirs[0]], used_only=False, cameras=(sorted(set(first.camera.tolist()))[0],))
            current = pd.read_parquet(data_root.asset_dir(folder_name(CURRENT_POLICY_EVALUATION)) / RESULTS) \
                if control else None
            if current is None:
                context.log.info("current_policy_evaluation is not materialized: the report shows the preset's "
                                 "policy alone (materialize it to compare both)")
            path = report.write_report(pd.read_parquet(evaluated / RESULTS), pd.read_parquet(evaluated / MULTISTEP),
                                       folder, view, frame, seq, test_subjects=[d.name for d in test_dirs],
                                       current_policy_table=current)
            run = log_evaluation_run(mlflow.tracking_uri, mlflow.experiment_id(dataset.checked_name()),
                                     folder_name(ROBUSTNESS_REPORT),
                                     {"input_data_versions": {k: v[:16] for k, v in out.inputs.items()},
                                      "dagster_run_id": context.run.run_id}, {},
                                     [path, *(p for p in folder.iterdir() if p.suffix in (".png", ".csv"))],
                                     tags={"asset": folder_name(ROBUSTNESS_REPORT)})
            (folder / RUN_INFO).write_text(json.dumps(run.__dict__))

        folder = out.build(build, log=context.log.info).folder
        run = TrackedRun.from_file(folder / RUN_INFO)
    embedded = (folder / report.REPORT_MD).read_text()
    for png in [*report.PNGS, report.POLICY_PNG]:  # the UI shows the report with its pictures inline
        if not (folder / png).is_file():  # the policy plot exists only with the control
            continue
        data = base64.b64encode((folder / png).read_bytes()).decode()
        embedded = embedded.replace(f"]({png})", f"](data:image/png;base64,{data})")
    return out.result({
        "report": dg.MetadataValue.md(embedded),
        "report_file": dg.MetadataValue.path(str(folder / report.REPORT_MD)),
        "mlflow_run": dg.MetadataValue.url(run.ui_url()),
    })
