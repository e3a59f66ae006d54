"""The `d3ke` command: bad input gets one line, the demo runs through Dagster."""

import os
import subprocess
import sys


from d3ke_assets.cli import main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("d3ke: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_unknown_dataset_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("D3KE_DATASET", "kinetics")
    assert main(["demo", "--data-root", str(tmp_path)]) == 2
    assert "'kinetics'" in _one_line_error(capsys)


def test_data_root_that_does_not_exist_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["verify", "--data-root", str(missing)]) == 2
    err = _one_line_error(capsys)
    assert str(missing) in err and "D3KE_DATA_ROOT" in err


def test_data_root_that_is_not_writable_is_one_line(tmp_path, capsys):
    # /proc refuses new files even to root, so this holds in CI containers too
    assert main(["demo", "--data-root", "/proc"]) == 2
    assert "not writable" in _one_line_error(capsys)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["verify", "--data-root", str(a_file)]) == 2
    assert "not a folder" in _one_line_error(capsys)


def test_unknown_subject_key_is_one_line(tmp_path, capsys):
    assert main(["demo", "--preset", "smoke", "--data-root", str(tmp_path), "--subjects", "Subject_99"]) == 2
    assert "Subject_99" in _one_line_error(capsys)
    assert main(["demo", "--preset", "smoke", "--data-root", str(tmp_path), "--subjects", "../../etc"]) == 2
    assert "not valid" in _one_line_error(capsys)


def test_demo_materializes_through_a_persistent_instance(tmp_path):
    """The README's main job on the smoke preset (train, validation and test subject), from a separate process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("D3KE_", "DAGSTER_"))}
    cmd = [sys.executable, "-m", "d3ke_assets.cli", "demo", "--preset", "smoke", "--data-root", str(tmp_path),
           "--subjects", "Subject_1", "Subject_2", "Subject_3"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the model, three subjects, training, the test subject's scoring, then the evaluation and the report:
    # one line each
    assert "7 runs: 7 wrote outputs, 0 reused them, 0 failed, 0 skipped, 0 interrupted" in proc.stdout
    stages = ["opensim_model"] + [f"raw_subject, mocap_markers, opensim_gt, frames [Subject_{k}]" for k in (1, 2, 3)] \
        + ["frame_model, sequence_model", "subject_evaluation [Subject_3]", "evaluation, robustness_report"]
    for stage in stages:
        lines = [line for line in proc.stdout.splitlines() if line.startswith(stage + " ")]
        assert len(lines) == 1 and lines[0].split()[len(stage.split())] == "ok", (stage, proc.stdout)
    assert "127.0.0.1" in proc.stdout
    # OpenSim's model printouts, Dagster's event lines and MLflow's go to the log file the terminal names
    terminal = proc.stdout + proc.stderr
    for noise in ("contact geometries", " - dagster - ", "mlflow."):
        assert noise not in terminal, noise
    logs = list((tmp_path / "logs").glob("demo-*.log"))
    assert len(logs) == 1 and str(logs[0]) in proc.stdout
    log = logs[0].read_text()
    assert "contact geometries" in log and "MODEL: Subject_1" in log and " - dagster - INFO - " in log
    # the runs are in the instance under the data root, so `dagster dev` shows them
    import dagster as dg

    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        recs = instance.fetch_materializations(dg.AssetKey("raw_subject"), limit=10).records
        assert {r.partition_key for r in recs} == {"Subject_1", "Subject_2", "Subject_3"}
        for asset in ("frame_model", "sequence_model", "subject_evaluation", "evaluation", "robustness_report"):
            assert instance.fetch_materializations(dg.AssetKey(asset), limit=1).records, asset
    assert (tmp_path / "raw_subject" / "Subject_2" / "F_PG1_Subject_2_L.avi").is_file()


def test_unknown_benchmark_is_one_line_naming_every_benchmark(capsys):
    assert main(["bench", "nope"]) == 2
    err = _one_line_error(capsys)
    for name in ("verify", "ik", "fk", "frames", "rerun", "train", "predict", "scale", "load", "seeds", "rescore"):
        assert name in err


def test_benchmark_registry_does_not_import_the_servers_benchmarks():
    """`d3ke bench verify` must work without the `scale` extra: the registry imports scale and load
    (Celery, PostgreSQL, the Dagster servers) only when one of them runs."""
    code = ("import sys; from d3ke_assets.benchmarks import BENCHMARKS; "
            "print(sorted(BENCHMARKS)); print([m for m in ('dagster_celery', 'd3ke_assets.benchmarks.scale', "
            "'d3ke_assets.benchmarks.load', 'd3ke_assets.deploy.services') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.splitlines()
    assert out == ["['fk', 'frames', 'ik', 'load', 'predict', 'rerun', 'rescore', 'scale', 'seeds', 'train', "
                   "'verify']", "[]"]
