"""`d3ke bench seeds`: how much the frame model's headline figure (its test coordinate MAE as a
share of the mean-pose baseline's) moves with the training seed alone.

Runs on a data root the main job has filled (`./scripts/demo.sh`): the same frames, split and
preset, one frame-model training per seed in a scratch folder; nothing under the data root is
written.  The seed the main job trained with is not trained again when its checkpoint is there
with the same configuration: that training is read as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from d3ke_assets import settings

DEFAULT_SEEDS = (0, 1, 2)


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # tuples read back as lists


def bench_seeds(data_root: Path | None = None, seeds=DEFAULT_SEEDS) -> dict:
    """Per seed: the frame model's test MAE, the baseline's, their ratio and the training's minutes;
    then the ratio's mean, range and standard deviation over the seeds."""
    from d3ke_assets.biomech import model_files
    from d3ke_assets.biomech.skeletal_layer import SkeletalModel
    from d3ke_assets.defs.constants import OPENSIM_MODEL, folder_name
    from d3ke_assets.frames.reader import FrameDataset
    from d3ke_assets.learning import training
    from d3ke_assets.learning.model import FrameModel
    from d3ke_assets.learning.presets import train_config
    from d3ke_assets.learning.quality import frame_model_vs_mean_baseline, frames_of
    from d3ke_assets.sources.subjects import split_for

    root = settings.data_root(data_root or os.environ.get("D3KE_DATA_ROOT") or settings.DEFAULT_DATA_ROOT)
    run = settings.Settings.from_environment(os.environ, data_root=str(root))
    split = split_for(run.dataset, run.preset_settings().synthetic.n_subjects, run.lab_root)
    osim = model_files.ModelFiles.in_folder(root / folder_name(OPENSIM_MODEL)).osim
    train_set = FrameDataset(frames_of(root, split.train, "train"))
    val_set = FrameDataset(frames_of(root, split.validation, "validation"))
    test_set = FrameDataset(frames_of(root, split.test, "test"), used_only=False)
    main_job = root / "frame_model" / training.CHECKPOINT
    out: dict = {"benchmark": "seeds", "preset": run.preset, "data_root": str(root), "n_train_frames": len(train_set),
                 "n_test_frames": len(test_set), "seeds": {}}
    scratch = Path(tempfile.mkdtemp(prefix="d3ke-bench-seeds-"))
    try:
        for seed in seeds:
            config = train_config(run, seed=seed)
            start = time.perf_counter()
            bundle = training.load_checkpoint(main_job) if main_job.is_file() else {}
            if _same(bundle.get("config"), config.as_dict()):
                model, source = training.load_trained_frame_model(main_job, osim, bundle), "main job's frame_model"
            else:
                training.seed_everything(seed)  # the initial weights too, as the frame_model asset does
                model = FrameModel(SkeletalModel.from_osim(osim), config.backbone, config.weights_file)
                training.train_frame_model(model, train_set, val_set, config, scratch / f"seed{seed}",
                                           log=lambda m, s=seed: print(f"seed {s}: {m}", flush=True))
                model, source = training.load_trained_frame_model(scratch / f"seed{seed}" / training.CHECKPOINT,
                                                                  osim), "trained here"
            figures = frame_model_vs_mean_baseline(model, train_set, test_set)
            out["seeds"][str(seed)] = {"source": source, "train_minutes": round((time.perf_counter() - start) / 60, 1),
                                       **{k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}}
        ratios = [s["ratio_model_to_baseline"] for s in out["seeds"].values()]
        out.update({"ratio_mean": round(statistics.fmean(ratios), 4), "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                    "ratio_std": round(statistics.stdev(ratios), 4) if len(ratios) > 1 else 0.0})
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
