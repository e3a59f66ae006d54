"""Concurrency pools of the assets (`pool=` on the asset), their limits, and the GPU request of the
GPU assets on Kubernetes.

- `opensim`: OpenSim scaling and IK (opensim_model, opensim_gt), one process each; at most as many
  at once as the machine has CPUs, whichever runs and executors they come from.
- `gpu`: training and evaluation of the networks (frame_model, sequence_model, subject_evaluation,
  robustness_report); one at a time, so two never share the GPU's memory.

Dagster keeps a pool's limit in the instance's storage, not in dagster.yaml (which only has
`concurrency: pools: default_limit`, one value for every pool): `ensure_pool_limits` writes them,
and `d3ke demo` / `d3ke ui dagster` call it on the instance they use, with `release_dead_claims`.
By hand: `dagster instance concurrency set gpu 1`.

The limits and claimed slots are read and written through `instance.event_log_storage`
(`get_pool_limits`, `set_concurrency_slots`, `get_concurrency_info`,
`free_concurrency_slots_for_run`): Dagster 1.13 has no public `DagsterInstance` method for pools,
and these storage methods are what its own `dagster instance concurrency` CLI and the UI call.
"""

from __future__ import annotations

import os

from d3ke_assets.errors import D3keError

OPENSIM_POOL = "opensim"
GPU_POOL = "gpu"

# Op tags of the GPU assets: with dagster-k8s (k8s_job_executor or K8sRunLauncher), the step's pod
# asks for one NVIDIA GPU and tolerates the usual taint of GPU nodes.  Plain data: no dagster-k8s
# import is needed, and other executors ignore the tag.
GPU_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"nvidia.com/gpu": "1"},
                "limits": {"nvidia.com/gpu": "1"},
            },
        },
        "pod_spec_config": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    },
}


def pool_limits() -> dict[str, int]:
    """Each pool's limit on this machine."""
    return {OPENSIM_POOL: os.cpu_count() or 1, GPU_POOL: 1}


def ensure_pool_limits(instance, limits: dict[str, int] | None = None, replace: bool = False) -> dict[str, int]:
    """Give each pool its limit in the instance, unless it already has one (a limit set in the UI
    or with `dagster instance concurrency set` is kept; `replace` overwrites it).  Returns the
    limits in effect afterwards."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        raise D3keError(f"the Dagster instance at {instance.root_directory} has no concurrency tables: "
                        "run `dagster instance migrate` with that DAGSTER_HOME")
    wanted = pool_limits() if limits is None else limits
    current = {p.name: p for p in storage.get_pool_limits()}
    for name, limit in wanted.items():
        if replace or name not in current or current[name].from_default:
            storage.set_concurrency_slots(name, limit)
    return {p.name: p.limit for p in storage.get_pool_limits() if p.name in wanted}


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def release_dead_claims(instance, launched_by: str = "d3ke demo") -> list[str]:
    """Free the pool slots (and queue places) of runs that can no longer free them.

    A run frees its slots when it ends, even on failure; a run whose process was killed outright
    (SIGKILL, out of memory) keeps them, and with `gpu` at 1 every later training would wait for
    it forever.  Freed here: runs that are finished, and runs `d3ke demo` executed in its own
    process (tag `d3ke/launched_by`) whose process is gone; those are marked failed.  Runs of
    other launchers are left to Dagster's run monitoring (the daemon).  Returns the run ids freed.
    """
    import dagster as dg

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders: set[str] = set()
    for pool in (OPENSIM_POOL, GPU_POOL):
        info = storage.get_concurrency_info(pool)
        holders |= {slot.run_id for slot in info.claimed_slots} | {step.run_id for step in info.pending_steps}
    freed = []
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            if run.tags.get("d3ke/launched_by") != launched_by:
                continue
            last = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.RUN_START})
            pids = [r.dagster_event.pid for r in last if r.dagster_event is not None and r.dagster_event.pid]
            if not pids or _alive(pids[-1]):
                continue
            instance.report_run_failed(run, f"the {launched_by} process that ran it (pid {pids[-1]}) is gone; "
                                            "its pool slots were freed")
        storage.free_concurrency_slots_for_run(run_id)
        freed.append(run_id)
    return freed
