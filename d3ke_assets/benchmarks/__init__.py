"""Benchmarks (`d3ke bench NAME --json`): ratios measured side by side in one run.

Not tests: they print figures for closing notes and regressions, and do not assert. Each repeats
its measurements interleaved and keeps the best of each, because this kind of machine is noisy.

- `stages`: the graph's stages one by one (hashing, IK, FK, frames, training, prediction) and a
  no-op rerun of the graph next to a fresh run;
- `scale`: subject partitions on 1 and 2 workers (multiprocess executor, Celery executor,
  dagster_celery's run launcher) with Redis and PostgreSQL started for it;
- `seeds`: the frame model's test error over the mean-pose baseline's for several training seeds
  on the main job's data;
- `load`: the UI's GraphQL queries timed while the daemon backfills many subject partitions;
- `rescore`: the evaluation's cost after one test subject changed (its scoring and the aggregation)
  next to scoring every test subject, on the main job's models.

`BENCHMARKS` is the one registry `d3ke bench` reads.
"""

from __future__ import annotations

from typing import Callable

from d3ke_assets.benchmarks.stages import (bench_fk, bench_frames, bench_ik, bench_predict, bench_rerun, bench_train,
                                           bench_verify)


def bench_scale(**kwargs) -> dict:
    """See d3ke_assets.benchmarks.scale.bench_scale (imported when run: it needs the `scale` extra)."""
    from d3ke_assets.benchmarks import scale

    return scale.bench_scale(**kwargs)


def bench_seeds(**kwargs) -> dict:
    """See d3ke_assets.benchmarks.seeds.bench_seeds (needs the main job's frames under the data root)."""
    from d3ke_assets.benchmarks import seeds

    return seeds.bench_seeds(**kwargs)


def bench_load(**kwargs) -> dict:
    """See d3ke_assets.benchmarks.load.bench_load (imported when run: it starts the Dagster servers)."""
    from d3ke_assets.benchmarks import load

    return load.bench_load(**kwargs)


def bench_rescore(**kwargs) -> dict:
    """See d3ke_assets.benchmarks.rescore.bench_rescore (needs the main job's models and test frames)."""
    from d3ke_assets.benchmarks import rescore

    return rescore.bench_rescore(**kwargs)


BENCHMARKS: dict[str, Callable[..., dict]] = {
    "verify": bench_verify, "ik": bench_ik, "fk": bench_fk, "frames": bench_frames, "rerun": bench_rerun,
    "train": bench_train, "predict": bench_predict, "scale": bench_scale, "load": bench_load,
    "seeds": bench_seeds, "rescore": bench_rescore,
}
