"""A child process for the fault tests: materialize one asset (partition), optionally stopping at a
chosen point in the middle of its write so the test can SIGKILL it there.

    python fault_child.py ROOT ASSET PARTITION|- [PAUSE [SECONDS]]

PAUSE names where to stop, after printing PAUSED (the process then sleeps for SECONDS, forever
by default, and carries on after that; SECONDS `SIGUSR1` waits until that signal arrives):
- `second_trial`: opensim_gt, when the second trial's IK starts (the first trial is solved and
  kept, the second's temporary folder is half-written, the subject has no stamp);
- `third_shard_frame`: frames, after the third crop is written to a temporary shard;
- `epoch_2`: frame_model, at the second training step after the first epoch's checkpoint.
The points are reached by wrapping the project's own functions in this process only.
"""

from __future__ import annotations

import os
import signal
import sys
import time

os.environ.setdefault("D3KE_PRESET", "smoke")

import dagster as dg  # noqa: E402

from d3ke_assets.biomech import ground_truth  # noqa: E402
from d3ke_assets.defs.resources import DataRootResource, DatasetResource, MlflowTrackingResource  # noqa: E402
from d3ke_assets.definitions import ALL_ASSETS  # noqa: E402
from d3ke_assets.frames import processing  # noqa: E402
from d3ke_assets.learning import training  # noqa: E402


_resumed = False


def _resume(signum, frame) -> None:
    global _resumed
    _resumed = True


def _pause(seconds: float | str | None) -> None:
    print("PAUSED", flush=True)
    if seconds == "SIGUSR1":  # the test resumes it when it has seen what it waits for
        while not _resumed:
            time.sleep(0.05)
        return
    if seconds is None:
        while True:
            time.sleep(60)
    time.sleep(seconds)


def install_pause(point: str, seconds: float | str | None) -> None:
    if point == "second_trial":
        solve, calls = ground_truth._solve_trial, []

        def paused_solve(setup, *backend):
            calls.append(setup)
            if len(calls) == 2:
                _pause(seconds)
            return solve(setup, *backend)
        ground_truth._solve_trial = paused_solve
    elif point == "third_shard_frame":
        add, calls = processing.ShardWriter.add, []

        def paused_add(self, data):
            where = add(self, data)
            calls.append(where)
            if len(calls) == 3:
                self.fh.flush()
                _pause(seconds)
            return where
        processing.ShardWriter.add = paused_add
    elif point == "epoch_2":
        save, loss, state = training.save_checkpoint, training.d3ke_loss, {"saved": 0, "steps": 0}

        def counted_save(path, bundle):
            save(path, bundle)
            state["saved"] += 1

        def paused_loss(*args, **kwargs):
            if state["saved"] == 1:
                state["steps"] += 1
                if state["steps"] == 2:
                    _pause(seconds)
            return loss(*args, **kwargs)
        training.save_checkpoint, training.d3ke_loss = counted_save, paused_loss
    elif point != "none":
        raise SystemExit(f"unknown pause point {point!r}")


def main(argv: list[str]) -> int:
    root, asset, partition = argv[:3]
    point = argv[3] if len(argv) > 3 else "none"
    seconds = (argv[4] if argv[4] == "SIGUSR1" else float(argv[4])) if len(argv) > 4 else None
    if seconds == "SIGUSR1":  # caught (not the default, which ends the process) before PAUSED is printed
        signal.signal(signal.SIGUSR1, _resume)
    install_pause(point, seconds)
    resources = {"data_root": DataRootResource(path=root), "dataset": DatasetResource(name="synthetic", preset="smoke"),
                 "mlflow": MlflowTrackingResource(data_root=root)}
    result = dg.materialize(ALL_ASSETS, selection=[asset], partition_key=None if partition == "-" else partition,
                            resources=resources, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    for mat in result.asset_materializations_for_node(asset):  # an asset's node is named after its key
        print(f"MATERIALIZED {mat.asset_key.to_user_string()} version={mat.tags['dagster/data_version']} "
              f"reused={mat.metadata['reused'].value}", flush=True)
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                data = event.step_failure_data
                print("FAILED", (data.user_failure_data.description if data.user_failure_data else data.error.message)
                      .strip().splitlines()[0], flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
