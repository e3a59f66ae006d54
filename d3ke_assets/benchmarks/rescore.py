"""`d3ke bench rescore`: what the evaluation costs after one test subject changed, scored per subject
(that subject's scoring, then the aggregation of every subject's sums) next to scoring every test
subject again (what the evaluation did before it was split by subject, and what a changed model
still costs).

Runs on a data root the main job has filled (`./scripts/demo.sh`): its trained models and the test
subjects' frames.  Nothing under the data root is written; the IK files go to a scratch folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from d3ke_assets import settings
from d3ke_assets.errors import D3keError


def bench_rescore(data_root: Path | None = None, rounds: int = 1) -> dict:
    """Seconds to score every test subject (both models, every condition, the claim's IK) and build
    the tables, against seconds to score the last test subject alone and build the tables from its
    sums and the others'; the ratio, and whether both give the same tables."""
    import pandas as pd

    from d3ke_assets.biomech import model_files
    from d3ke_assets.defs.constants import FRAME_MODEL, OPENSIM_MODEL, SEQUENCE_MODEL, folder_name
    from d3ke_assets.evaluation.evaluate import RESULT_GROUP, aggregate, claim_table, subject_claim_sums, subject_sums
    from d3ke_assets.learning import sequence, training
    from d3ke_assets.learning.quality import frames_of
    from d3ke_assets.sources.subjects import split_for

    root = settings.data_root(data_root or os.environ.get("D3KE_DATA_ROOT") or settings.DEFAULT_DATA_ROOT)
    run = settings.Settings.from_environment(os.environ, data_root=str(root))
    split = split_for(run.dataset, run.preset_settings().synthetic.n_subjects, run.lab_root)
    test_dirs = frames_of(root, split.test, "test")
    frame_checkpoint = root / folder_name(FRAME_MODEL) / training.CHECKPOINT
    if len(test_dirs) < 2 or not frame_checkpoint.is_file():
        raise D3keError(f"{root}: needs the main job's trained models and at least two test subjects' frames: "
                        f"run ./scripts/demo.sh first")
    osim = model_files.ModelFiles.in_folder(root / folder_name(OPENSIM_MODEL)).osim
    frame = training.load_trained_frame_model(frame_checkpoint, osim)
    seq = sequence.load_trained_sequence_model(root / folder_name(SEQUENCE_MODEL) / training.CHECKPOINT, osim)
    quiet = lambda m: None  # noqa: E731

    def score(frames_dir: Path, work: Path) -> tuple:
        kept: dict = {}
        return (subject_sums(frame, frames_dir, seq, log=quiet, clean_outputs=kept),
                subject_claim_sums(frame, frames_dir, osim, work, log=quiet, clean_outputs=kept))

    def tables(scored: list[tuple]) -> tuple:
        return (aggregate(pd.concat([s for s, _ in scored], ignore_index=True), RESULT_GROUP),
                claim_table(pd.concat([c for _, c in scored], ignore_index=True)))

    scratch = Path(tempfile.mkdtemp(prefix="d3ke-bench-rescore-"))
    every, one = [], []
    try:
        for r in range(rounds):  # interleaved: the machine's noise falls on both
            start = time.perf_counter()
            all_scored = [score(d, scratch / f"all{r}") for d in test_dirs]
            all_tables = tables(all_scored)
            every.append(time.perf_counter() - start)
            start = time.perf_counter()
            changed = score(test_dirs[-1], scratch / f"one{r}")
            one_tables = tables([*all_scored[:-1], changed])  # the others' sums as their partitions keep them
            one.append(time.perf_counter() - start)
        same = all(_close(a, b) for a, b in zip(all_tables, one_tables))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results = all_tables[0]
    n_frames = int(results[(results.model == "frame_model") & (results.augmentation == "clean")].n_frames.sum())
    return {"benchmark": "rescore", "preset": run.preset, "data_root": str(root), "device": str(training.choose_device()),
            "test_subjects": len(test_dirs), "test_frames": n_frames,
            "every_test_subject_s": round(min(every), 1), "one_subject_and_aggregation_s": round(min(one), 1),
            "ratio_one_to_every": round(min(one) / min(every), 4), "same_tables": bool(same), "rounds": rounds}


def _close(a, b) -> bool:
    """The same figures up to float rounding, the times per frame aside."""
    import numpy as np

    numeric = [c for c in a.select_dtypes("number").columns if not c.endswith("ms_per_frame")]
    return list(a.columns) == list(b.columns) and np.allclose(a[numeric], b[numeric], rtol=1e-4, equal_nan=True)
