"""The benchmarks of the graph's stages (`d3ke bench verify|ik|fk|frames|rerun|train|predict`):
ratios measured side by side in one run.

Not tests: they print figures for closing notes and regressions, and do not
assert.  Each repeats its measurements interleaved and keeps the best of each,
because this kind of machine is noisy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from d3ke_assets.sources.checksums import DATA_ROOT, Manifest, present_files, sha256_files
from d3ke_assets.sources.raw import manifests_under


def _files_to_hash(data_root: Path | None, min_bytes: int) -> tuple[list[Path], Path | None]:
    """Raw files under the data root if there are enough, else generated files in a temp folder."""
    files: list[Path] = []
    if data_root is not None:
        for mpath in manifests_under(data_root):
            m = Manifest.read(mpath)
            if m.root == DATA_ROOT:  # generated files; a real dataset's root need not be configured here
                files += list(present_files(m, m.folder(data_root)).values())
    if sum(f.stat().st_size for f in files) >= min_bytes:
        return files, None
    tmp = Path(tempfile.mkdtemp(prefix="d3ke-bench-verify-"))
    chunk = os.urandom(1 << 20)
    n_files, per_file = 8, max(1, min_bytes // 8 // (1 << 20))
    for i in range(n_files):
        with open(tmp / f"file_{i}.bin", "wb") as fh:
            for k in range(per_file):
                fh.write(chunk[k % 7:] + chunk[:k % 7])
    return sorted(tmp.iterdir()), tmp


def _timed(fn: Callable[[], object], seconds: list[float]) -> None:
    start = time.perf_counter()
    fn()
    seconds.append(time.perf_counter() - start)


def bench_verify(data_root: Path | None = None, min_bytes: int = 512 << 20, rounds: int = 3) -> dict:
    """Hashing throughput of `d3ke verify` next to coreutils `sha256sum` on the same files."""
    if shutil.which("sha256sum") is None:
        raise RuntimeError("sha256sum (coreutils) is not on PATH")
    files, tmp = _files_to_hash(data_root, min_bytes)
    try:
        total = sum(f.stat().st_size for f in files)
        for f in files:  # warm the page cache so both read from memory
            with open(f, "rb") as fh:
                while fh.read(1 << 22):
                    pass
        t_ref: list[float] = []
        t_verify: list[float] = []
        t_single: list[float] = []
        for _ in range(rounds):
            _timed(lambda: subprocess.run(["sha256sum", *map(str, files)], check=True,
                                                 stdout=subprocess.DEVNULL), t_ref)
            _timed(lambda: sha256_files(files), t_verify)
            _timed(lambda: sha256_files(files, workers=1), t_single)
        mb = total / 1e6
        ref, ver, single = mb / min(t_ref), mb / min(t_verify), mb / min(t_single)
        return {
            "benchmark": "verify",
            "files": len(files),
            "bytes": total,
            "source": "data root raw files" if tmp is None else "generated files",
            "rounds": rounds,
            "sha256sum_MB_per_s": round(ref, 1),
            "verify_MB_per_s": round(ver, 1),
            "verify_single_thread_MB_per_s": round(single, 1),
            "ratio_verify_to_sha256sum": round(ver / ref, 3),
            "ratio_single_thread_to_sha256sum": round(single / ref, 3),
            "cpu_count": os.cpu_count(),
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _synthetic_subjects(root: Path, n: int, size) -> tuple[Path, list[Path]]:
    """A generic model and `n` synthetic subjects' mocap folders under `root`."""
    from d3ke_assets.biomech import model_builder
    from d3ke_assets.sources import mocap, raw

    model = model_builder.ensure_model(root / "opensim_model")
    folders = []
    for i in range(1, n + 1):
        key = f"Subject_{i}"
        raw.synthetic_subject(root, key, size, 0, model)
        out = root / "mocap_markers" / key
        if not (out / "trials.json").is_file():
            out.mkdir(parents=True, exist_ok=True)
            mocap.synthetic_mocap(raw.raw_dir(root, key), out)
        folders.append(out)
    return model, folders


def _ground_truth_job(args: tuple[str, str, str]) -> float:
    from d3ke_assets.biomech import ground_truth

    mocap_dir, model, out = args
    shutil.rmtree(out, ignore_errors=True)
    return ground_truth.compute_subject(mocap_dir, model, out).seconds


HAMNER = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "opensim-hamner-running"


def _backend_copy(setup: Path, backend: str) -> Path:
    """`setup` beside itself, writing `<backend>_<motion>.mot`: each backend's output kept apart."""
    import xml.etree.ElementTree as ET

    tree = ET.parse(setup)
    tool = tree.getroot().find("InverseKinematicsTool")
    mot = tool.find("output_motion_file")
    mot.text = f"{backend}_{Path(mot.text.strip()).name}"
    for tag, value in (("results_directory", "."), ("report_errors", "false"), ("report_marker_locations", "false")):
        if tool.find(tag) is not None:  # the same outputs from both: the .mot, beside the setup
            tool.find(tag).text = value
    out = setup.with_name(f"{backend}_{setup.name}")
    tree.write(out, encoding="UTF-8", xml_declaration=True)
    return out


def _backends_side_by_side(setups: list[Path], rounds: int) -> dict:
    """Both IK backends on the same setups, interleaved, best of `rounds` per trial: each timed over
    the whole `run_ik` call (model loading plus solving plus writing the .mot; imports excluded)."""
    import numpy as np

    from d3ke_assets.biomech.opensim_pipeline import run_ik
    from d3ke_assets.biomech.opensim_tools import load_model

    best: dict[str, list[float]] = {"opensim": [np.inf] * len(setups), "torch": [np.inf] * len(setups)}
    copies = {backend: [_backend_copy(setup, backend) for setup in setups] for backend in best}
    results: dict = {}
    for _ in range(rounds):
        for backend in ("opensim", "torch"):
            for i, copy in enumerate(copies[backend]):
                start = time.perf_counter()
                results[backend, i] = run_ik(copy, backend)
                best[backend][i] = min(best[backend][i], time.perf_counter() - start)
    frames = sum(len(results["opensim", i].time_s) for i in range(len(setups)))
    rms_deg, worst = [], {}
    for i, setup in enumerate(setups):
        ours, theirs = results["torch", i], results["opensim", i]
        model = load_model(setup.parent / _setup_text(setup, "model_file"))
        state, coordinates = model.initSystem(), model.getCoordinateSet()
        for name in theirs.coordinate_names:
            c = coordinates.get(name)
            if c.getMotionType() != 1 or c.getLocked(state):  # rotational, free
                continue
            diff = ours.values[:, ours.coordinate_names.index(name)] - theirs.values[:, theirs.coordinate_names.index(name)]
            rms = float(np.degrees(np.sqrt(np.mean(diff ** 2))))
            rms_deg.append(rms)
            worst[name] = max(worst.get(name, 0.0), rms)
    opensim_s, torch_s = sum(best["opensim"]), sum(best["torch"])
    return {"trials": len(setups), "frames": frames,
            "opensim_frames_per_s": round(frames / opensim_s, 1), "torch_frames_per_s": round(frames / torch_s, 1),
            "torch_to_opensim_speedup": round(opensim_s / torch_s, 3),
            "torch_vs_opensim_mean_rms_deg": round(float(np.mean(rms_deg)), 3),
            "torch_vs_opensim_worst_coordinates_rms_deg": {k: round(v, 2) for k, v in
                                                           sorted(worst.items(), key=lambda kv: -kv[1])[:5]}}


def _setup_text(setup: Path, tag: str) -> str:
    from d3ke_assets.biomech.opensim_pipeline import _parse_setup, _tool_element

    return (_tool_element(_parse_setup(setup).getroot(), "InverseKinematicsTool", setup).findtext(tag) or "").strip()


def bench_ik(data_root: Path | None = None, n_subjects: int = 4, trial_seconds: float = 10.0,
             rounds: int = 2, hamner: Path | None = None) -> dict:
    """OpenSim IK speed, the ground-truth stage's overhead around it, and 1 vs 2 parallel workers;
    then both IK backends (`settings.IK_BACKENDS`) side by side on one subject's trials, and on the
    Hamner running trial with its shipped setup and registered model where the shared reference is.

    Subjects have the `paper` preset's trial length (10 s of each motion) with a small video,
    since IK does not look at the video and rendering 800x600 would dominate set-up time.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from d3ke_assets.biomech import ground_truth
    from d3ke_assets.settings import SyntheticSize

    size = SyntheticSize(n_subjects, trial_seconds, 2.0, 160, 120)
    root = Path(tempfile.mkdtemp(prefix="d3ke-bench-ik-"))
    try:
        model, folders = _synthetic_subjects(root, n_subjects, size)
        one = ground_truth.compute_subject(folders[0], model, root / "gt_one")
        frames = sum(t.n_ik_frames for t in one.trials)
        jobs = [(str(f), str(model), str(root / "gt" / f.name)) for f in folders]
        walls: dict[int, list[float]] = {1: [], 2: []}
        ctx = multiprocessing.get_context("spawn")
        for _ in range(rounds):  # interleaved, best of each: the machine is noisy
            for workers in (1, 2):
                with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                    list(pool.map(_ground_truth_job, jobs[:workers]))  # start the workers (imports) first
                    start = time.perf_counter()
                    list(pool.map(_ground_truth_job, jobs))
                    walls[workers].append(time.perf_counter() - start)
        walls = {k: min(v) for k, v in walls.items()}
        return {
            "benchmark": "ik",
            "trial_seconds": trial_seconds,
            "ik_frames_one_subject": frames,
            "ik_frames_per_s": round(frames / one.ik_seconds, 1),
            "opensim_gt_wall_s_one_subject": round(one.seconds, 2),
            "inside_opensim_ik_s": round(one.ik_seconds, 2),
            "inside_opensim_scale_s": round(one.scale_seconds, 2),
            "overhead_ratio_wall_to_ik": round(one.seconds / one.ik_seconds, 3),
            "overhead_ratio_wall_to_ik_plus_scale": round(one.seconds / (one.ik_seconds + one.scale_seconds), 3),
            "subjects_parallel": n_subjects,
            "wall_s_1_worker": round(walls[1], 2),
            "wall_s_2_workers": round(walls[2], 2),
            "speedup_2_workers": round(walls[1] / walls[2], 3),
            "backends_synthetic": _backends_side_by_side(sorted((root / "gt_one" / "ik").glob("*/Setup_IK.xml")),
                                                         rounds),
            "backends_hamner": _hamner_backends(root, hamner or HAMNER, rounds),
            "cpu_count": os.cpu_count(),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _hamner_backends(root: Path, hamner: Path, rounds: int) -> dict | str:
    """The shipped running trial (about 600 frames) on its registered model with the shipped setup."""
    if not (hamner / "Setup_IK.xml").is_file():
        return f"not run: {hamner} is missing (the shared reference data)"
    folder = root / "hamner"
    folder.mkdir()
    for name in ("Setup_IK.xml", "subject02_running.trc"):
        shutil.copy(hamner / name, folder / name)
    shutil.copy(hamner / "outputReference" / "subject02_registered.osim", folder / _setup_text(folder / "Setup_IK.xml",
                                                                                         "model_file"))
    return _backends_side_by_side([folder / "Setup_IK.xml"], rounds)


def bench_fk(data_root: Path | None = None, batch: int = 4096, rounds: int = 5) -> dict:
    """Skeletal layer poses per second at a training-size batch, next to OpenSim's own FK."""
    import numpy as np
    import torch

    from d3ke_assets.biomech import model_builder
    from d3ke_assets.biomech.opensim_tools import OpenSimKinematics
    from d3ke_assets.biomech.skeletal_layer import SkeletalModel

    tmp = Path(tempfile.mkdtemp(prefix="d3ke-bench-fk-"))
    try:
        model = model_builder.ensure_model(tmp)
        layer = SkeletalModel.from_osim(model, torch.float32)
        rng = np.random.default_rng(0)
        lo = np.array([max(c.range[0], -np.pi) for c in layer.spec.coordinates])
        hi = np.array([min(c.range[1], np.pi) for c in layer.spec.coordinates])
        q = torch.tensor(rng.uniform(lo, hi, (batch, len(lo))), dtype=torch.float32)
        s = torch.tensor(rng.uniform(0.9, 1.1, (batch, layer.n_bodies, 3)), dtype=torch.float32)
        kin = OpenSimKinematics(model)
        q_osim = q[:200].double().numpy()
        t_fwd, t_bwd, t_osim = [], [], []
        for _ in range(rounds):
            with torch.no_grad():
                _timed(lambda: layer(q, s), t_fwd)
            qg, sg = q.clone().requires_grad_(True), s.clone().requires_grad_(True)

            def forward_backward():
                pose = layer(qg, sg)
                (pose.markers_m.sum() + pose.joint_centres_m.sum()).backward()

            _timed(forward_backward, t_bwd)
            _timed(lambda: kin.compute(q_osim, layer.coordinate_names, with_bodies=False), t_osim)
        fwd, bwd, osim_rate = batch / min(t_fwd), batch / min(t_bwd), len(q_osim) / min(t_osim)
        return {
            "benchmark": "fk",
            "batch": batch,
            "dtype": "float32",
            "device": "cpu",
            "torch_threads": torch.get_num_threads(),
            "forward_poses_per_s": round(fwd),
            "forward_backward_poses_per_s": round(bwd),
            "opensim_fk_poses_per_s": round(osim_rate),
            "ratio_forward_to_opensim": round(fwd / osim_rate, 1),
            "n_markers": len(layer.marker_names),
            "n_coordinates": len(layer.coordinate_names),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _frames_subject(root: Path, size, crop_px: int) -> tuple[list, dict, dict, Path]:
    """One synthetic subject of `size` with its labels: (cameras, labels, label names, labels path)."""
    from d3ke_assets.biomech import ground_truth
    from d3ke_assets.sources import raw

    model, folders = _synthetic_subjects(root, 1, size)
    gt_dir = root / "opensim_gt" / "Subject_1"
    if not (gt_dir / "labels.npz").is_file():
        ground_truth.compute_subject(folders[0], model, gt_dir)
    labels, names = ground_truth.load_labels(gt_dir)
    return raw.camera_videos(root, "Subject_1"), labels, names, gt_dir / "labels.npz"


def _decode_only_fps(cameras: list) -> tuple[float, list]:
    """PyAV decoding of the same videos, nothing else, with the same parallelism as `frames`
    (one thread per camera); also returns a few frames as arrays."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from d3ke_assets.media.video import decode_images

    def decode(video):
        kept, n = [], 0
        for image in decode_images(video):
            if n % 50 == 0:
                kept.append(np.asarray(image))
            n += 1
        return n, kept

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(len(cameras), os.cpu_count() or 1))) as pool:
        results = list(pool.map(decode, [c.video for c in cameras]))
    seconds = time.perf_counter() - start
    return sum(n for n, _ in results) / seconds, [k for _, kept in results for k in kept]


def bench_frames(data_root: Path | None = None, rounds: int = 2) -> dict:
    """`frames` end to end next to decode-only, its storage next to the original layout, and the reader."""
    import zlib

    import numpy as np
    import torch

    from d3ke_assets.frames import processing
    from d3ke_assets.frames.reader import FrameDataset
    from d3ke_assets.settings import PRESETS, SyntheticSize

    root = Path(tempfile.mkdtemp(prefix="d3ke-bench-frames-"))
    out: dict = {"benchmark": "frames"}
    try:
        cases = {"demo": (PRESETS["demo"].synthetic, PRESETS["demo"].crop_px),
                 # the paper's video and crop sizes, with short trials to keep set-up short
                 "paper": (SyntheticSize(1, 1.0, 1.0, 800, 600), PRESETS["paper"].crop_px)}
        for name, (size, crop_px) in cases.items():
            case_root = root / name
            cameras, labels, names, labels_path = _frames_subject(case_root, size, crop_px)
            t_frames, t_decode = [], []
            for r in range(rounds):  # interleaved, best of each
                dest = case_root / f"frames_{r}"
                dest.mkdir()
                t0 = time.perf_counter()
                summary = processing.process_subject("Subject_1", cameras, labels, names, labels_path, dest, crop_px)
                t_frames.append(time.perf_counter() - t0)
                fps, kept = _decode_only_fps(cameras)
                t_decode.append(summary["n_decoded"] / fps)
            frames_fps = summary["n_frames"] / min(t_frames)
            decode_fps = summary["n_decoded"] / min(t_decode)
            # the original layout: every full frame, gzip level 9 in HDF5 chunked per frame (deflate per chunk)
            original = np.mean([len(zlib.compress(k.tobytes(), 9)) for k in kept])
            stored = sum(p.stat().st_size for p in dest.iterdir())  # shards + index + cameras
            per_frame = stored / summary["n_frames"]
            out[name] = {
                "video_px": f"{size.video_width_px}x{size.video_height_px}", "crop_px": crop_px,
                "n_frames": summary["n_frames"],
                "frames_per_s": round(frames_fps, 1), "decode_only_frames_per_s": round(decode_fps, 1),
                "ratio_frames_to_decode": round(frames_fps / decode_fps, 3),
                "stored_bytes_per_frame": round(per_frame), "original_layout_bytes_per_frame": round(original),
                "ratio_stored_to_original": round(per_frame / original, 4),
            }
        # random access with JPEG decoding at the demo resolution
        ds = FrameDataset([root / "demo" / "frames_0"], used_only=False)
        order = np.random.default_rng(0).permutation(np.resize(np.arange(len(ds)), 4000))
        start = time.perf_counter()
        for i in order:
            ds[int(i)]
        single = len(order) / (time.perf_counter() - start)
        loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=2,
                                             sampler=torch.utils.data.RandomSampler(ds, num_samples=8000))
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["image"])
        two_workers = n / (time.perf_counter() - start)
        out["reader"] = {"crop_px": ds.crop_px, "random_access_frames_per_s_1_process": round(single),
                         "dataloader_2_workers_frames_per_s": round(two_workers)}
        out["cpu_count"] = os.cpu_count()
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


# `d3ke bench rerun` as it was until issue 16: the demo preset's 72 subjects and both trainings, a
# fresh run then two reruns; on 2 cores it did not finish within 15 minutes, and no figures of it
# were ever recorded (README and docs/deploy name none)
RERUN_BEFORE = {"preset": "demo", "subjects": 72, "runs": "fresh, no-op (only stale), forced no-op",
                "wall_s": "> 900 (did not finish in 15 minutes on 2 cores)", "figures": "none recorded"}


def _seconds_by_stage(summary) -> dict[str, dict]:
    """The runs of a graph run grouped by stage (the assets a run materialized): runs, seconds summed,
    outputs written."""
    out: dict[str, dict] = {}
    for r in summary.results:
        stage = out.setdefault(", ".join(r.assets), {"runs": 0, "s": 0.0, "outputs_written": 0})
        stage["runs"] += 1
        stage["s"] += r.seconds
        stage["outputs_written"] += len(r.recomputed)
    return out


def _seconds_by_asset(instance, summary) -> dict[str, float]:
    """Seconds inside each asset's step (STEP_START to STEP_SUCCESS) over a graph run's runs."""
    import dagster as dg

    out: dict[str, float] = {}
    for r in summary.results:
        if r.run_id is None:
            continue
        starts = {}
        for record in instance.all_logs(r.run_id, of_type={dg.DagsterEventType.STEP_START,
                                                           dg.DagsterEventType.STEP_SUCCESS}):
            if record.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                starts[record.step_key] = record.timestamp
            elif record.step_key in starts:
                out[record.step_key] = out.get(record.step_key, 0.0) + record.timestamp - starts[record.step_key]
    return out


def bench_rerun(data_root: Path | None = None, preset: str = "smoke") -> dict:
    """Each stage of the whole graph (every asset, both trainings, evaluation) on a fresh data root,
    then again with nothing changed: the rerun that launches only stale runs (none), and the forced
    rerun that launches every run anyway, where each reuses its outputs; per stage, the forced
    rerun's seconds next to the fresh run's.

    The smoke preset (3 subjects: train, validation, test; the project's real training code with
    few epochs) keeps it to minutes on 2 cores while every stage still computes for real: the
    per-stage ratio is Dagster's and the stamps' cost of a run that reuses its outputs against the
    stage's work. Before issue 16 it ran the demo preset (RERUN_BEFORE), which took over 15 minutes."""
    import dagster as dg

    from d3ke_assets.defs.automation import stale_assets_by_partition
    from d3ke_assets.defs.partitions import subject_split
    from d3ke_assets.defs.runner import materialize_graph
    from d3ke_assets.definitions import build_definitions
    from d3ke_assets.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="d3ke-bench-rerun-", dir=str(data_root) if data_root else None))
    try:
        run = Settings(data_root=str(root), preset=preset)
        defs = build_definitions(run)
        subjects = list(subject_split(run).all)
        quiet = lambda m: None  # noqa: E731
        with dg.instance_for_test() as instance:
            start = time.perf_counter()
            full = materialize_graph(defs, instance, subjects, log=quiet)
            full_s = time.perf_counter() - start
            start = time.perf_counter()
            again = materialize_graph(defs, instance, subjects, log=quiet, only_stale=True)
            again_s = time.perf_counter() - start
            start = time.perf_counter()  # every run launched anyway: each reuses its outputs
            forced = materialize_graph(defs, instance, subjects, log=quiet)
            forced_s = time.perf_counter() - start
            start = time.perf_counter()
            stale = stale_assets_by_partition(instance, list(defs.assets), subjects)
            check_s = time.perf_counter() - start
            fresh_steps, forced_steps = _seconds_by_asset(instance, full), _seconds_by_asset(instance, forced)
        fresh_stages, forced_stages = _seconds_by_stage(full), _seconds_by_stage(forced)
        stages = {}
        for name, fresh in fresh_stages.items():
            rerun = forced_stages.get(name, {"runs": 0, "s": 0.0, "outputs_written": 0})
            stages[name] = {"runs": fresh["runs"], "fresh_s": round(fresh["s"], 2),
                            "forced_noop_s": round(rerun["s"], 2),
                            "ratio_forced_noop_to_fresh": round(rerun["s"] / fresh["s"], 4) if fresh["s"] else None,
                            "fresh_outputs_written": fresh["outputs_written"],
                            "forced_noop_outputs_written": rerun["outputs_written"]}
        now = {
            "preset": preset, "subjects": len(subjects),
            "full_run_s": round(full_s, 2), "full_run_outputs_written": len(full.recomputed),
            "noop_rerun_s": round(again_s, 2), "noop_rerun_runs_launched": len(again.results),
            "noop_rerun_outputs_recomputed": len(again.recomputed),
            "ratio_noop_to_full": round(again_s / full_s, 4),
            "forced_noop_rerun_s": round(forced_s, 2), "forced_noop_rerun_runs_launched": len(forced.results),
            "forced_noop_rerun_outputs_recomputed": len(forced.recomputed),
            "ratio_forced_noop_to_full": round(forced_s / full_s, 4),
            "stale_check_s": round(check_s, 3), "stale_partitions_after_rerun": len(stale),
            "failed_runs": len(full.failed) + len(again.failed) + len(forced.failed),
            "stages": stages,
            # inside each asset's step, all its partitions summed: the work next to a step that reuses it
            "asset_steps": {a: {"fresh_s": round(t, 2), "forced_noop_s": round(forced_steps.get(a, 0.0), 2),
                                "ratio_forced_noop_to_fresh": round(forced_steps.get(a, 0.0) / t, 4) if t else None}
                            for a, t in fresh_steps.items()},
        }
        return {"benchmark": "rerun", **now, "cpu_count": os.cpu_count(), "before_issue_16": RERUN_BEFORE}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _train_steps(model, dataset, config, steps: int) -> tuple[float, float]:
    """(images per second, share of wall time waiting for the DataLoader) over `steps` steps of the
    training's own `train_step` (augmentation, targets, forward, loss, backward, AdamW, weight
    average when the preset keeps one), set up as `fit` sets it up."""
    import torch

    from d3ke_assets.learning.training import frame_prepare, seed_everything, setup_optimisation, train_step

    seed_everything(config.seed)
    opt = setup_optimisation(model, config, channels_last=True)
    model.train()
    prepare = frame_prepare(model, config)
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=(steps + 1) * config.batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                                         num_workers=config.num_workers, pin_memory=opt.device.type == "cuda")
    generator = torch.Generator().manual_seed(0)
    waited, images, start = 0.0, 0, None
    t_wait = time.perf_counter()
    for step, batch in enumerate(loader):
        if step == 1:  # the first step warms up workers and kernels: not counted
            waited, images, start = 0.0, 0, time.perf_counter()
        elif step > 1:
            waited += time.perf_counter() - t_wait
        loss, _, b = train_step(model, batch, prepare, generator, opt, config)
        loss.item()  # the loop reads the loss every step, which waits for the device
        if step >= 1:
            images += b
        t_wait = time.perf_counter()
    wall = time.perf_counter() - start
    return images / wall, waited / wall


def bench_train(data_root: Path | None = None, steps: int = 6) -> dict:
    """Training images per second of each backbone at its preset's resolution, and the share of
    each step spent waiting for data (DataLoader with the preset's workers).  Each step is the
    training's own `learning.training.train_step`."""
    import torch

    from d3ke_assets.biomech import model_builder
    from d3ke_assets.biomech.skeletal_layer import SkeletalModel
    from d3ke_assets.frames import processing
    from d3ke_assets.frames.reader import FrameDataset
    from d3ke_assets.learning.model import FrameModel
    from d3ke_assets.learning.presets import train_config
    from d3ke_assets.settings import PRESETS

    root = Path(tempfile.mkdtemp(prefix="d3ke-bench-train-"))
    cases = [("smoke", "mobilenet_v3_small"), ("demo", "resnet18"), ("demo", "efficientnet_v2_s"),
             ("paper", "efficientnet_v2_s"), ("paper", "resnext50_32x4d")]
    out: dict = {"benchmark": "train", "device": "cuda" if torch.cuda.is_available() else "cpu",
                 "torch_threads": torch.get_num_threads(), "steps_timed": steps}
    try:
        cameras, labels, names, labels_path = _frames_subject(root, PRESETS["demo"].synthetic, 128)
        model_path = model_builder.model_file(root / "opensim_model")
        folders = {}
        for preset in {p for p, _ in cases}:
            crop = PRESETS[preset].crop_px
            folders[preset] = root / f"frames_{crop}"
            folders[preset].mkdir(exist_ok=True)
            processing.process_subject("Subject_1", cameras, labels, names, labels_path, folders[preset], crop)
        for preset, backbone in cases:
            config = train_config(preset, backbone=backbone, weights_file=None) if preset != "paper" else \
                train_config("smoke", backbone=backbone, batch_size=16, num_workers=2)
            torch.manual_seed(0)
            model = FrameModel(SkeletalModel.from_osim(model_path), backbone)
            images_per_s, wait = _train_steps(model, FrameDataset([folders[preset]], used_only=False), config,
                                              steps if preset != "paper" else 3)
            out[f"{preset}/{backbone}"] = {"crop_px": PRESETS[preset].crop_px, "batch_size": config.batch_size,
                                           "workers": config.num_workers, "train_images_per_s": round(images_per_s, 1),
                                           "data_wait_share": round(wait, 4)}
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_predict(data_root: Path | None = None) -> dict:
    """`d3ke predict` frames per second on a demo-size synthetic video (320x240, 30 fps) for each
    backbone at its preset's resolution, and the share of the time spent outside the network
    (decoding, cropping, drawing, writing the .mot, the scaled .osim and the overlay video).
    Weights are untrained: the speed does not depend on them."""
    import torch

    from d3ke_assets.biomech import model_builder
    from d3ke_assets.biomech.skeletal_layer import SkeletalModel
    from d3ke_assets.evaluation.predict import predict_video
    from d3ke_assets.learning.model import FrameModel
    from d3ke_assets.learning.training import TrainConfig
    from d3ke_assets.settings import PRESETS
    from d3ke_assets.sources import raw

    root = Path(tempfile.mkdtemp(prefix="d3ke-bench-predict-"))
    cases = [("smoke", "mobilenet_v3_small"), ("demo", "resnet18"), ("demo", "efficientnet_v2_s"),
             ("paper", "efficientnet_v2_s"), ("paper", "resnext50_32x4d")]
    out: dict = {"benchmark": "predict", "device": "cuda" if torch.cuda.is_available() else "cpu",
                 "torch_threads": torch.get_num_threads()}
    try:
        model_path, _ = _synthetic_subjects(root, 1, PRESETS["demo"].synthetic)
        video = raw.camera_videos(root, "Subject_1")[0].video
        layer_path = model_builder.model_file(root / "opensim_model")
        for preset, backbone in cases:
            torch.manual_seed(0)
            model = FrameModel(SkeletalModel.from_osim(layer_path), backbone)
            checkpoint = root / f"{backbone}_{preset}.pt"
            torch.save({"model": model.state_dict(), "config": TrainConfig(backbone=backbone).as_dict(),
                        "crop_px": PRESETS[preset].crop_px}, checkpoint)
            r = predict_video(video, checkpoint, model_path, root / "out" / f"{preset}_{backbone}")
            out[f"{preset}/{backbone}"] = {
                "crop_px": PRESETS[preset].crop_px, "frames": r.n_frames,
                "frames_per_s": round(r.n_frames / r.seconds_total, 1),
                "network_frames_per_s": round(r.n_frames / r.seconds_network, 1),
                "share_outside_network": round(1 - r.seconds_network / r.seconds_total, 3)}
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)
