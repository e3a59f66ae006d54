"""The `d3ke` command.

    d3ke demo [--preset demo] [--subjects Subject_1 ...]   materialize every asset through Dagster
    d3ke verify [--data-root DIR] [--write-manifest]       check raw files against their sha256 manifests
    d3ke movi-index [--movi-root DIR] [--json]             what the platform finds in your MoVi + AMASS files
    d3ke ik --model M.osim [--static S.trc] --motion T.trc --out DIR [--backend opensim|torch]   scaling + IK
    d3ke fk --model M.osim --motion T.mot --out MARKERS.sto         marker positions (skeletal layer)
    d3ke bench NAME [--json]                               benchmarks (see d3ke_assets.benchmarks)
    d3ke ui dagster|mlflow                                 open the UIs on 127.0.0.1
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from d3ke_assets import settings
from d3ke_assets.errors import D3keError


def _run_settings(args: argparse.Namespace) -> tuple[settings.Settings, dict[str, str]]:
    """The run's settings: the environment's `D3KE_*` values, then the command's arguments; and which
    fields came from the environment (shown as such in the Dagster UI)."""
    overrides = {name: getattr(args, name, None) for name in ("preset", "dataset")}
    overrides["data_root"] = str(settings.data_root(getattr(args, "data_root", None) or
                                                    os.environ.get("D3KE_DATA_ROOT") or settings.DEFAULT_DATA_ROOT))
    run = settings.Settings.from_environment(os.environ, **overrides)
    sources = {k: v for k, v in settings.Settings.from_environment_sources(os.environ).items() if overrides.get(k) is None}
    return run, sources


def _prepare_instance(run: settings.Settings) -> Path:
    """The persistent Dagster instance under the data root (or DAGSTER_HOME), with the pool limits set."""
    from d3ke_assets.ui.servers import prepare_dagster_home

    # runs launched from the UI queue for the daemon, as many at once as there are CPUs
    home = prepare_dagster_home(Path(os.environ.get("DAGSTER_HOME") or Path(run.data_root) / "dagster"),
                                max_concurrent_runs=os.cpu_count() or 1)
    import dagster as dg

    from d3ke_assets.defs.pools import ensure_pool_limits, release_dead_claims

    with dg.DagsterInstance.from_config(str(home)) as instance:  # pool limits live in the instance's storage
        ensure_pool_limits(instance)
        release_dead_claims(instance)  # a killed demo's slots: the next training would wait for them forever
    return home


def _child_environment(run: settings.Settings, home: Path) -> dict[str, str]:
    """The environment of a server the command starts: the run's settings as `D3KE_*` variables."""
    env = dict(os.environ)
    for name, var in settings.Settings.ENVIRONMENT.items():
        value = getattr(run, name)
        if value is not None:
            env[var] = str(value)
    env["DAGSTER_HOME"] = str(home)
    return env


def cmd_demo(args: argparse.Namespace) -> int:
    run, sources = _run_settings(args)
    home = _prepare_instance(run)
    import dagster as dg

    from d3ke_assets import console, interrupts
    from d3ke_assets.defs.partitions import subject_split
    from d3ke_assets.defs.runner import materialize_graph
    from d3ke_assets.definitions import build_definitions

    split = subject_split(run)
    subjects = [split.check(s) for s in args.subjects] if args.subjects else list(split.all)
    log_path = console.new_log_file(Path(run.data_root), "demo")
    # OpenSim's model printouts, Dagster's per-event lines, MLflow and warnings go to the log file
    with console.output_to_log(log_path) as term:
        defs = build_definitions(run, sources)
        term.say(f"d3ke demo: dataset={run.dataset} preset={run.preset} subjects={len(subjects)} "
                 f"data root={run.data_root}" + (f" model={run.model}" if run.model else ""))
        term.say(f"Dagster instance: DAGSTER_HOME={home}")
        term.say(f"log (OpenSim, Dagster, MLflow output): {log_path}\n")

        def started(label: str) -> None:
            print(f"\n==== d3ke demo: launching {label}", flush=True)  # to the log: where each run's output begins
            term.status(f"{label} ...")

        start = time.perf_counter()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            summary = materialize_graph(defs, instance, subjects, only_stale=not args.force, log=term.say,
                                        started=started)
        wall = time.perf_counter() - start
        code = _print_demo_summary(term, summary, wall, log_path, interrupts.stop_requested())
    return code


def _print_demo_summary(term, summary, wall: float, log_path: Path, signum: int | None) -> int:
    """The counts, failed and interrupted runs again (the lines above may have scrolled away); the exit code."""
    from d3ke_assets import interrupts

    results = summary.results
    term.say("\nSummary")
    if not results and not summary.interrupted:
        term.say("nothing to do: every asset partition is up to date (use --force to launch every run anyway)")
    else:
        count = {s: sum(1 for r in results if r.status == s) for s in ("ok", "reused", "FAILED", "skipped",
                                                                         "interrupted")}
        term.say(f"{len(results)} runs: {count['ok']} wrote outputs, {count['reused']} reused them, "
                 f"{count['FAILED']} failed, {count['skipped']} skipped, {count['interrupted']} interrupted; "
                 f"{wall:.0f} s in all.")
    for r in results:
        if r.status == "FAILED":
            term.say(f"  FAILED {r.label}: {r.error}")
    term.say(f"Details (OpenSim, Dagster, MLflow output): {log_path}")
    if summary.interrupted:
        stopped = next((r.label for r in results if r.interrupted), None)
        term.say(f"\nInterrupted by {interrupts.signal_name(signum)}: "
                 + (f"the run of {stopped} was stopped and failed as interrupted; " if stopped else "")
                 + "no further runs were launched.")
        if summary.not_launched:
            term.say(f"Not launched: {'; '.join(summary.not_launched)}.")
        term.say("Outputs are complete or absent; `d3ke demo` again goes on from here.")
        return 128 + (signum or signal.SIGINT)
    from d3ke_assets.learning.tracking import WORKFLOW_QUERY

    term.say("\nOpen the UIs (each on 127.0.0.1):")
    term.say("  .venv/bin/d3ke ui dagster    # Dagster at http://127.0.0.1:3000: assets, runs, partitions")
    term.say("  .venv/bin/d3ke ui mlflow     # MLflow at http://127.0.0.1:5000: experiments and runs "
             f"(choose 'Model training' at the top of its sidebar, or open ...:5000/#/experiments?{WORKFLOW_QUERY})")
    return 1 if summary.failed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from d3ke_assets.sources import checksums, raw

    run, _ = _run_settings(args)
    root = Path(run.data_root)
    if args.write_manifest:
        written = _write_manifests(root, run)
        print(f"wrote {written} manifest(s) under {root / raw.ASSET_DIR}")
    manifests = raw.manifests_under(root)
    if not manifests:
        raise D3keError(f"no manifests under {root / raw.ASSET_DIR}: materialize raw_subject "
                        f"(d3ke demo) or run `d3ke verify --write-manifest`")
    start = time.perf_counter()
    n_files = n_bytes = 0
    by_subject: dict[str, list[checksums.FileProblem]] = {}
    for mpath in manifests:
        manifest = checksums.Manifest.read(mpath)
        n_files += len(manifest.files)
        n_bytes += sum(f["size"] for f in manifest.files.values())
        # the files where they are now: under this data root, or under the MoVi or lab root configured now
        problems = checksums.verify_manifest(manifest, manifest.folder(root, run.movi_root, run.lab_root))
        if problems:
            by_subject[manifest.subject] = problems
    seconds = time.perf_counter() - start
    if by_subject:
        n_bad = sum(len(v) for v in by_subject.values())
        print(f"{n_bad} of {n_files} raw files are missing or corrupt:")
        for subject, problems in sorted(by_subject.items()):
            print(f"{subject}:")
            for p in problems:
                line = f"  {p.problem:<8}{p.path}\n          expected sha256 {p.expected_sha256}"
                if p.actual_sha256:
                    line += f"\n          actual   sha256 {p.actual_sha256}"
                print(line)
        print("Fix: download the files again (movi) or delete the subject's raw_subject folder and "
              "materialize it again (synthetic).")
        return 1
    print(f"all {n_files} raw files of {len(manifests)} subjects match their manifests "
          f"({n_bytes / 1e9:.2f} GB in {seconds:.1f} s)")
    return 0


def _write_manifests(root: Path, run: settings.Settings) -> int:
    """Record the current raw files' hashes as the manifests (after a fresh download)."""
    from d3ke_assets.sources import checksums, movi, raw
    from d3ke_assets.sources.subjects import split_for

    if run.dataset in ("movi", "lab"):
        if run.dataset == "movi":
            index = movi.MoviIndex.scan(settings.movi_root(run.movi_root))
            keys = split_for("movi", 0).all
            record = lambda key: raw.movi_subject(root, key, index, accept_changes=True)  # noqa: E731
        else:
            lab_root = settings.lab_root(run.lab_root)
            keys = split_for("lab", 0, lab_root).all
            record = lambda key: raw.lab_subject(root, key, lab_root, accept_changes=True)  # noqa: E731
        written = 0
        for key in keys:
            try:
                record(key)
                written += 1
            except D3keError as exc:  # a subject's bad file; the others are recorded
                print(f"skipped: {exc}", file=sys.stderr)
        return written
    written = 0
    cache = raw.hash_cache(root)
    for folder in raw.subject_folders(root):
        raw.synthetic_manifest(folder, folder.name, cache).write(folder / checksums.MANIFEST_NAME)
        written += 1
    return written


def _print_figures(figures: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(figures, indent=2))
    else:
        for k, v in figures.items():
            print(f"{k:<40}{round(v, 3) if isinstance(v, float) else v}")


def cmd_bench(args: argparse.Namespace) -> int:
    from d3ke_assets import interrupts
    from d3ke_assets.benchmarks import BENCHMARKS

    if args.name not in BENCHMARKS:
        raise D3keError(f"no benchmark {args.name!r}: use one of {', '.join(BENCHMARKS)}")
    from d3ke_assets.biomech.opensim_tools import native_stdout_to_stderr

    root = settings.data_root(args.data_root) if args.data_root else None
    with native_stdout_to_stderr():  # stdout carries only the figures (OpenSim logs to stdout)
        result = BENCHMARKS[args.name](data_root=root)
    signum = interrupts.stop_requested()
    if signum:  # a stopped graph run returns early: its figures mean nothing
        raise interrupts.Interrupted(signum)
    _print_figures(result, args.json)
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    """The trained models' coordinate error on the test subjects next to the mean baseline, after the
    quality gate's figures on the validation subjects."""
    from d3ke_assets.biomech import model_files
    from d3ke_assets.defs.constants import OPENSIM_MODEL, folder_name
    from d3ke_assets.learning.quality import quality_report
    from d3ke_assets.sources.subjects import split_for

    run, _ = _run_settings(args)
    root = Path(run.data_root)
    split = split_for(run.dataset, run.preset_settings().synthetic.n_subjects, run.lab_root)
    osim = model_files.ModelFiles.in_folder(root / folder_name(OPENSIM_MODEL)).osim
    report = quality_report(root, osim, list(split.train), list(split.test),
                            log=lambda m: print(m, file=sys.stderr), validation_subjects=list(split.validation),
                            gate_ratio=run.preset_settings().gate_ratio)
    _print_figures(report, args.json)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """A trained frame or sequence model on a video: <video>.mot, <video>.osim and an overlay video in --out."""
    import tempfile

    from d3ke_assets.biomech import model_builder, model_files
    from d3ke_assets.defs.constants import OPENSIM_MODEL, folder_name
    from d3ke_assets.evaluation.predict import predict_video, resolve_checkpoint
    from d3ke_assets.learning.tracking import MlflowStore

    root = Path(_run_settings(args)[0].data_root)
    tracking_uri = MlflowStore(root).tracking_uri  # for models:/ URIs
    with tempfile.TemporaryDirectory() as tmp:
        osim = model_files.ModelFiles.in_folder(root / folder_name(OPENSIM_MODEL)).osim
        if not osim.is_file():  # the generic model is built by code: the same anywhere
            osim = model_builder.ensure_model(Path(tmp) / "model")
        checkpoint = resolve_checkpoint(args.model, Path(tmp), tracking_uri)
        r = predict_video(Path(args.video), checkpoint, osim, Path(args.out), args.box,
                          log=lambda m: print(m, file=sys.stderr))
    print(f"coordinates:   {r.mot} ({r.n_frames} frames at {r.fps:g} fps)")
    print(f"scaled model:  {r.osim}")
    print(f"overlay:       {r.overlay}")
    print(f"speed:         {r.n_frames / r.seconds_total:.1f} frames/s, {100 * r.seconds_network / r.seconds_total:.0f}% "
          f"of the time in the network")
    return 0


def cmd_movi_index(args: argparse.Namespace) -> int:
    from d3ke_assets.sources import movi
    from d3ke_assets.sources.subjects import movi_split

    root = settings.movi_root(args.movi_root or os.environ.get("D3KE_MOVI_ROOT"))
    report = movi.movi_index_report(movi.MoviIndex.scan(root), list(movi_split().all))
    print(json.dumps(report, indent=2) if args.json else movi.format_movi_index(report))
    return 0


def cmd_ik(args: argparse.Namespace) -> int:
    from d3ke_assets.biomech.commands import ik_command

    opt = lambda v: Path(v) if v else None  # noqa: E731
    r = ik_command(Path(args.model), opt(args.static), Path(args.motion), Path(args.out), args.mass,
                   opt(args.scale_setup), opt(args.ik_setup), args.backend)
    print(f"{'scaled model:  ' if args.static else 'model:         '} {r.scaled_model}")
    print(f"coordinates:    {r.mot} ({r.n_frames} frames, {args.backend} IK {r.ik_seconds:.1f} s, "
          f"{r.n_frames / max(r.ik_seconds, 1e-9):.0f} frames/s)")
    print(f"marker errors:  {r.errors} (RMS {1000 * r.rms_error_m:.1f} mm)")
    return 0


def cmd_fk(args: argparse.Namespace) -> int:
    from d3ke_assets.biomech.commands import fk_command

    n_frames, n_markers, missing = fk_command(Path(args.model), Path(args.motion), Path(args.out))
    if missing:
        print(f"note: {len(missing)} coordinates not in {args.motion} stay at their default: {', '.join(missing)}")
    print(f"wrote {args.out}: {n_markers} markers x {n_frames} frames, metres")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    run, _ = _run_settings(args)
    root = Path(run.data_root)
    env = _child_environment(run, _prepare_instance(run))
    bin_dir = Path(sys.executable).parent
    if args.which == "dagster":
        workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
        argv = [str(bin_dir / "dagster"), "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port or 3000)]
    else:
        from d3ke_assets.ui.servers import MLFLOW_SERVER_ENV, mlflow_folder, mlflow_server_command

        mlflow_folder(root).mkdir(parents=True, exist_ok=True)  # the command the UI tests start
        env = {**MLFLOW_SERVER_ENV, **env}
        argv = mlflow_server_command(root, args.port or 5000, host=args.host)
    print(" ".join(argv), flush=True)
    os.execve(argv[0], argv, env)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="d3ke", description="Direct 3D Kinematic Estimation data platform")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="materialize every asset on the embedded dataset through Dagster")
    demo.add_argument("--preset", choices=list(settings.PRESETS), default=None,
                      help="size of the run (default: D3KE_PRESET or demo)")
    demo.add_argument("--dataset", default=None, help="synthetic (default), movi or lab")
    demo.add_argument("--subjects", nargs="+", help="only these partitions, e.g. Subject_1 Subject_2")
    demo.add_argument("--data-root", default=None, help="default: D3KE_DATA_ROOT or ./data")
    demo.add_argument("--force", action="store_true",
                      help="launch every run, not only those of stale or missing asset partitions "
                           "(unchanged outputs are still reused)")
    demo.set_defaults(func=cmd_demo)

    verify = sub.add_parser("verify", help="check every raw file against its sha256 manifest")
    verify.add_argument("--data-root", default=None)
    verify.add_argument("--write-manifest", action="store_true",
                        help="first record the current files as the manifests (after a fresh download)")
    verify.set_defaults(func=cmd_verify)

    movi_index = sub.add_parser("movi-index", help="per subject, the MoVi + AMASS files found and missing, and per "
                                "motion its AMASS file, video frames and capture frames")
    movi_index.add_argument("--movi-root", default=None, help="default: D3KE_MOVI_ROOT")
    movi_index.add_argument("--json", action="store_true", help="machine-readable (0-based half-open ranges)")
    movi_index.set_defaults(func=cmd_movi_index)

    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument("name")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--data-root", default=None)
    bench.set_defaults(func=cmd_bench)

    quality = sub.add_parser("quality", help="coordinate error of the trained frame and sequence models on the "
                                             "test subjects, next to a mean-pose baseline")
    quality.add_argument("--preset", choices=list(settings.PRESETS), default=None,
                         help="the preset the data was made with (default: D3KE_PRESET or demo)")
    quality.add_argument("--dataset", default=None, help="synthetic (default), movi or lab")
    quality.add_argument("--data-root", default=None)
    quality.add_argument("--json", action="store_true")
    quality.set_defaults(func=cmd_quality)

    predict = sub.add_parser("predict", help="run a trained frame model (or a sequence model, which refines "
                                             "it over time) on a video: OpenSim .mot + scaled .osim + an overlay video")
    predict.add_argument("video")
    predict.add_argument("--model", required=True,
                         help="a frame or sequence model's checkpoint (frame_model/last.pt, sequence_model/last.pt) or an "
                              "MLflow URI: models:/d3ke_frame_model_synthetic/1, models:/d3ke_sequence_model_synthetic/1, "
                              "runs:/RUN_ID/checkpoint (the project's store under the data root)")
    predict.add_argument("--out", required=True, help="folder for <video>.mot, <video>.osim, <video>_overlay.mp4")
    predict.add_argument("--box", default=None, help="x,y,w,h of the person in pixels (default: the centred square)")
    predict.add_argument("--data-root", default=None)
    predict.set_defaults(func=cmd_predict)

    ik = sub.add_parser("ik", help="OpenSim scaling on a static trial, then inverse kinematics on a motion "
                                   "(without --static: inverse kinematics only, on a model already scaled)")
    ik.add_argument("--model", required=True, help="generic model (.osim); without --static, the scaled model")
    ik.add_argument("--static", default=None, help="static trial (.trc) to scale the model on")
    ik.add_argument("--backend", default="opensim", choices=settings.IK_BACKENDS,
                    help="who solves the IK: OpenSim's InverseKinematicsTool (default) or the batched torch "
                         "solver on the skeletal layer (CUDA when available); scaling is OpenSim's either way")
    ik.add_argument("--motion", required=True, help="motion trial (.trc)")
    ik.add_argument("--out", required=True, help="folder for setup files, scaled.osim and <motion>.mot")
    ik.add_argument("--mass", type=float, default=None, help="subject mass in kg (default: the setup's, or 75)")
    ik.add_argument("--scale-setup", default=None, help="an OpenSim ScaleTool setup to follow")
    ik.add_argument("--ik-setup", default=None, help="an OpenSim InverseKinematicsTool setup to follow")
    ik.set_defaults(func=cmd_ik)

    fk = sub.add_parser("fk", help="marker positions of a model at the poses of a .mot (skeletal layer)")
    fk.add_argument("--model", required=True)
    fk.add_argument("--motion", required=True)
    fk.add_argument("--out", required=True, help="output .sto (<marker>_tx/_ty/_tz, metres)")
    fk.set_defaults(func=cmd_fk)

    ui = sub.add_parser("ui", help="start the Dagster or MLflow UI on this machine")
    ui.add_argument("which", choices=["dagster", "mlflow"])
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=None)
    ui.add_argument("--data-root", default=None)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    from d3ke_assets import interrupts

    args = build_parser().parse_args(argv)
    with interrupts.stop_on_signals():  # Ctrl-C and SIGTERM end every command within seconds, exit 130 / 143
        try:
            return args.func(args)
        except D3keError as exc:
            print(f"d3ke: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", None) or interrupts.stop_requested() or signal.SIGINT
            print(f"d3ke: {args.command}: interrupted by {interrupts.signal_name(signum)}", file=sys.stderr)
            return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
