"""Ctrl-C (SIGINT) and SIGTERM stop a running `d3ke demo` / `d3ke bench rerun`: the run in progress
fails as interrupted, no further run is launched, the summary says so, the exit code is 130 / 143,
and nothing half-written is left.  Every wait is on an event (a line printed, a file written, the
process ending); the time limits only keep a broken build from hanging the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

STAGE = "raw_subject, mocap_markers, opensim_gt, frames"
GUARD_S = 900  # a hang guard, not a performance assertion


class Command:
    """A `d3ke` subprocess whose stdout and stderr are collected as they come."""

    def __init__(self, args: list[str], env_extra: dict | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("D3KE_", "DAGSTER_"))}
        env.update(env_extra or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "d3ke_assets.cli", *args], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=lambda s=s, d=d: d.extend(s), daemon=True)
                         for s, d in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    def wait_until(self, predicate, what: str) -> None:
        deadline = time.monotonic() + GUARD_S
        while not predicate():
            assert self.proc.poll() is None, f"d3ke ended before {what}:\n{''.join(self.out)}{''.join(self.err)[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} after {GUARD_S} s"
            time.sleep(0.1)

    def finish(self) -> int:
        code = self.proc.wait(timeout=GUARD_S)
        for t in self._readers:
            t.join(timeout=60)
        return code


def _runs(root: Path) -> list:
    with dg.DagsterInstance.from_config(str(root / "dagster")) as instance:
        return [(r.dagster_run.tags.get("dagster/partition"), r.dagster_run.status, r.start_time,
                 [e.dagster_event.step_failure_data.error.cls_name
                  for e in instance.all_logs(r.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)])
                for r in reversed(instance.get_run_records())]


def _assert_nothing_half_written(root: Path, reference: str, subject: str) -> None:
    """No temporaries are left, and every stamped folder of `subject` holds the same files as
    `reference`'s (a subject the demo completed before the signal; synthetic subjects have the same layout)."""
    leftovers = [p for p in root.rglob("*") if ".tmp-" in p.name]
    assert not leftovers, leftovers
    stamped = [p.parent for p in root.glob(f"*/{subject}/**/_stamp.json")]
    for folder in stamped:
        twin = Path(str(folder).replace(subject, reference))
        files = sorted(str(p.relative_to(folder)).replace(subject, reference) for p in folder.rglob("*") if p.is_file())
        assert files == sorted(str(p.relative_to(twin)) for p in twin.rglob("*") if p.is_file()), folder


@pytest.mark.parametrize("sig, code, reference, subject", [(signal.SIGTERM, 143, "Subject_1", "Subject_2"),
                                                           (signal.SIGINT, 130, None, "Subject_1")])
def test_a_stop_signal_ends_the_demo_at_the_run_in_progress(tmp_path, sig, code, reference, subject):
    demo = Command(["demo", "--preset", "smoke", "--data-root", str(tmp_path)])
    # the subject's run is under way: its first asset is written, the others are being computed
    demo.wait_until(lambda: (tmp_path / "raw_subject" / subject / "_stamp.json").is_file(), f"{subject}'s raw_subject")
    sent_at = time.time()
    demo.proc.send_signal(sig)
    assert demo.finish() == code, "".join(demo.out) + "".join(demo.err)[-3000:]
    out = "".join(demo.out)

    runs = _runs(tmp_path)
    assert all(start <= sent_at for _, _, start, _ in runs), "a run was launched after the signal"
    *before, stopped = runs
    assert [(p, s) for p, s, _, _ in before] == ([(None, dg.DagsterRunStatus.SUCCESS)] +
                                               ([(reference, dg.DagsterRunStatus.SUCCESS)] if reference else []))
    # (before each asset checked for a stop itself, a signal swallowed by a finalizer let this run end
    # SUCCESS in 2 of 3 full-suite runs; the demo's log shows where a signal went)
    logs = "".join(p.read_text(errors="replace")[-3000:] for p in sorted((tmp_path / "logs").glob("*.log")))
    assert stopped[:2] == (subject, dg.DagsterRunStatus.FAILURE), out + logs
    assert stopped[3] == ["DagsterExecutionInterruptedError"]

    # one line per run, the stopped one says so; the summary names the signal and what was not launched
    run_lines = [line for line in out.splitlines() if line.startswith(STAGE)]
    assert [line.split()[4:6] for line in run_lines] == (
        [[f"[{reference}]", "ok"]] if reference else []) + [[f"[{subject}]", "interrupted"]]
    assert f"Interrupted by {sig.name}" in out and "no further runs were launched" in out
    not_launched = next(line for line in out.splitlines() if line.startswith("Not launched:"))
    assert "[Subject_3]" in not_launched and "frame_model" in not_launched

    leftovers = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert not leftovers, leftovers
    if reference:
        _assert_nothing_half_written(tmp_path, reference, subject)


def test_a_stop_signal_ends_bench_rerun_without_figures(tmp_path):
    """`d3ke bench rerun` launches three graph runs in a row: none after the signal, and no figures."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    bench = Command(["bench", "rerun", "--json"], {"TMPDIR": str(tmp)})
    bench.wait_until(lambda: any(tmp.glob("*/raw_subject/*/_stamp.json")), "a subject's raw_subject")
    bench.proc.send_signal(signal.SIGTERM)
    assert bench.finish() == 143, "".join(bench.err)[-3000:]
    assert "".join(bench.out) == ""  # the figures of a stopped benchmark would mean nothing
    assert "interrupted by SIGTERM" in "".join(bench.err)
    assert not [p for p in tmp.rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_any_command_stops_on_a_stop_signal_with_its_exit_code(monkeypatch, capsys, sig, code):
    """Outside a Dagster run (verify, quality, ...) the signal ends the command at once: one line, 128 + signal."""
    from d3ke_assets import cli

    reached = []

    def long_verify(args):
        os.kill(os.getpid(), sig)
        for _ in range(300):  # not stopped: returns 0 after 30 s
            time.sleep(0.1)
        reached.append("end")
        return 0

    monkeypatch.setattr(cli, "cmd_verify", long_verify)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert cli.main(["verify"]) == code
    assert not reached
    assert capsys.readouterr().err.strip() == f"d3ke: verify: interrupted by {sig.name}"
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # pytest's own handlers are back
