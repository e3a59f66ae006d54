"""The embedded synthetic dataset: one subject's raw files, shaped like BML-MoVi + mocap.

Deterministic by (seed, subject id).  Per subject:

- anthropometrics (sex, height, mass) and per-segment scale factors; the
  generic model is scaled with OpenSim;
- motion trials (walking, squat, arm raises, jumping jacks, random motion) and
  a static trial as coordinate trajectories at 120 Hz;
- virtual markers from OpenSim forward kinematics of the scaled model plus
  soft-tissue noise, written as `.trc` (mm) in `mocap/`;
- two calibrated cameras like MoVi's PG1 (frontal) and PG2 (side), JSON in `cameras/`;
- one video per camera with all motion trials in sequence at 30 fps, named as
  MoVi names them (`F_PG1_Subject_<ID>_L.avi`), rendered from the scaled
  model's segment geometry;
- `subject.json`: subject facts and, per trial, its capture frames and its
  first and last video frame (MoVi's v3d `flags30`);
- `truth/`: the true coordinates (`.mot`), scale factors and scaled model,
  so later stages can be checked against the truth.

Any OpenSim model with markers can stand in for the project's (`D3KE_MODEL`, see
`biomech.model_files`), so the whole graph runs on it without real data: its bodies are scaled by
the groups its measurement set scales together, drawn as ellipsoids around each body's joints and
markers, and moved by the motions of `motions` on the coordinates it shares with the project's
model (plus a random motion of all of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from d3ke_assets.biomech import model_builder as mb
from d3ke_assets.biomech import model_files
from d3ke_assets.biomech.formats import MarkerTrajectories, read_trc, write_mot, write_trc
from d3ke_assets.biomech.opensim_tools import KinematicsResult, OpenSimKinematics, scale_model
from d3ke_assets.media.camera import Camera, look_at_camera
from d3ke_assets.media.video import write_video
from d3ke_assets.settings import SyntheticSize
from d3ke_assets.sources import motions, render
from d3ke_assets.sources.subjects import movi_video_name, subject_id
from d3ke_assets.storage import atomic_write_json, read_json

GENERATOR_CODE_VERSION = "2"
VIDEO_FPS = 30
CAPTURE_PER_VIDEO_FRAME = int(motions.CAPTURE_RATE_HZ) // VIDEO_FPS  # 4, as in BML-MoVi
CAMERAS = ("PG1", "PG2")
TRIALS = motions.MOTIONS
STATIC_TRIAL = "static"
FOOT_BODIES = ("calcn_r", "toes_r", "calcn_l", "toes_l")

# Segment groups scaled together: (bodies, which axis is the segment's length, or None for a
# uniform factor).  Pelvis, feet and hands scale uniformly: a static trial's markers cannot tell
# their proportions apart (clinically the hip-joint-centre depth is predicted from pelvis width);
# forearms take the upper arm's width because no wrist marker pair lies on one body.
SEGMENT_GROUPS: dict[str, tuple[tuple[str, ...], int | None]] = {
    "pelvis": (("pelvis",), None),
    "thigh": (("femur_r", "femur_l"), 1),
    "shank": (("tibia_r", "tibia_l", "talus_r", "talus_l"), 1),
    "foot": (("calcn_r", "calcn_l", "toes_r", "toes_l"), None),
    "trunk": (("torso",), 1),
    "upper_arm": (("humerus_r", "humerus_l"), 1),
    "forearm": (("ulna_r", "ulna_l", "radius_r", "radius_l"), 1),
    "hand": (("hand_r", "hand_l"), None),
}
WIDTH_SHARED_WITH = {"forearm": "upper_arm"}


def trc_name(key: str, trial: str) -> str:
    return f"{key}_{trial}.trc"


@dataclass
class Anthropometrics:
    sex: str
    height_m: float
    mass_kg: float
    scale_factors: dict[str, tuple[float, float, float]]


def draw_anthropometrics(rng: np.random.Generator) -> Anthropometrics:
    sex = "female" if rng.random() < 0.5 else "male"
    mean_h = 1.65 if sex == "female" else 1.78
    height = float(np.clip(rng.normal(mean_h, 0.06), mean_h - 0.15, mean_h + 0.15))
    bmi = float(rng.uniform(19.0, 28.0))
    mass = bmi * height ** 2
    overall = height / mb.GENERIC_HEIGHT_M
    girth = math.sqrt(bmi / 23.0)
    factors: dict[str, tuple[float, float, float]] = {}
    widths: dict[str, float] = {}
    for group, (bodies, length_axis) in SEGMENT_GROUPS.items():
        length = overall * float(np.clip(rng.normal(1.0, 0.03), 0.92, 1.08))
        width = overall * girth * float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1))
        width = widths[group] = widths.get(WIDTH_SHARED_WITH.get(group, ""), width)
        if length_axis is None:
            f = [width, width, width] if group == "pelvis" else [length, length, length]
        else:
            f = [width, width, width]
            f[length_axis] = length
        for b in bodies:
            factors[b] = (round(f[0], 4), round(f[1], 4), round(f[2], 4))
    return Anthropometrics(sex, round(height, 4), round(mass, 2), factors)


@dataclass(frozen=True)
class GeneratorModel:
    """What the generator needs of a model: the project's own tables, or ones derived from a user's model."""

    files: model_files.ModelFiles
    motion: motions.MotionModel
    geometry: list  # (body, colour group, model_builder.Ellipsoid)
    coordinate_names: list[str]
    rotational: list[bool]
    vertical: str  # the root translation along y
    foot_bodies: tuple[str, ...]  # whose lowest surface stands on the floor
    measurements: list  # the groups scaled together (user models)
    name: str

    @classmethod
    def load(cls, generic_model: str | Path) -> "GeneratorModel":
        files = model_files.ModelFiles.for_path(generic_model)
        if files.project:
            coords = mb.coordinates()
            return cls(files, motions.MotionModel.project(), mb.geometry_table(), [c.name for c in coords],
                       [c.rotational for c in coords], "pelvis_ty", FOOT_BODIES, [], mb.MODEL_NAME)
        from d3ke_assets.biomech.ground_truth import ModelRules
        from d3ke_assets.biomech.skeletal_layer import SkeletalModel

        spec = model_files.check_model(files.osim)
        root = model_files.root_joint(spec)
        rules = ModelRules.for_model(files, SkeletalModel(spec))
        return cls(files, motions.MotionModel.from_spec(spec, root), derived_geometry(spec),
                   [c.name for c in spec.coordinates], [c.rotational for c in spec.coordinates],
                   root.translation_along(1), tuple(spec.bodies), rules.measurements, spec.name)


ELLIPSOID_MARGIN_M = 0.02
MIN_RADIUS_M = 0.03


def _side_group(body: str) -> str:
    if body.endswith(("_r", "_R")) or body.startswith("r_"):
        return "right"
    if body.endswith(("_l", "_L")) or body.startswith("l_"):
        return "left"
    return "trunk"


def derived_geometry(spec) -> list:
    """Per body, one ellipsoid around its origin, its children's joints and its markers (body frame):
    a user's model draws with these when its own geometry is meshes the generator cannot read."""
    out = []
    for body in spec.bodies:
        points = [np.zeros(3)]
        points += [j.parent.translation_m for j in spec.joints if j.parent.body == body]
        points += [f.translation_m for _, f in spec.markers if f.body == body]
        p = np.array(points, float)
        lo, hi = p.min(axis=0), p.max(axis=0)
        radii = np.maximum((hi - lo) / 2, MIN_RADIUS_M) + ELLIPSOID_MARGIN_M
        out.append((body, _side_group(body), mb.Ellipsoid(tuple((lo + hi) / 2), tuple(radii))))
    return out


def draw_scale_factors(rng: np.random.Generator, bodies: list[str], measurements: list,
                       height_m: float, generic_height_m: float) -> dict[str, tuple[float, float, float]]:
    """A user's model: the bodies each measurement scales get one factor on its axes (so scaling with
    that measurement set can find it again); bodies it does not scale keep 1."""
    overall = height_m / generic_height_m
    factors = {b: [1.0, 1.0, 1.0] for b in bodies}
    for me in measurements:
        f = overall * float(np.clip(rng.normal(1.0, 0.03), 0.92, 1.08))
        for b in me.bodies:
            for axis in me.axes.split():
                factors[b]["XYZ".index(axis)] = f
    return {b: tuple(round(v, 4) for v in f) for b, f in factors.items() if f != [1.0, 1.0, 1.0]}


def generic_height_m(kin: OpenSimKinematics, names: list[str], default: np.ndarray) -> float:
    """Standing height of the generic model: its highest marker above its lowest, plus a head's top."""
    markers = kin.compute(default[None], names, with_bodies=False).markers_m[0]
    return float(np.ptp(markers[:, 1])) + 0.05


def subject_geometry(kin: OpenSimKinematics, factors: dict[str, tuple[float, float, float]],
                     rng: np.random.Generator, table: list | None = None) -> render.BodyGeometry:
    """The model's ellipsoids scaled like OpenSim scales attached geometry, with colours."""
    clothing = rng.uniform(0.15, 0.85, 3)
    skin = np.array([0.9, 0.72, 0.6]) * rng.uniform(0.55, 1.0)
    right = np.array([rng.uniform(0.75, 0.95), rng.uniform(0.15, 0.35), rng.uniform(0.1, 0.3)])
    left = np.array([rng.uniform(0.1, 0.3), rng.uniform(0.3, 0.5), rng.uniform(0.75, 0.95)])
    colour = {"trunk": clothing, "head": skin, "right": right, "left": left}
    idx, centres, radii, colours = [], [], [], []
    for body, group, e in (mb.geometry_table() if table is None else table):
        f = np.asarray(factors.get(body, (1.0, 1.0, 1.0)))
        idx.append(kin.body_names.index(body))
        centres.append(np.asarray(e.centre) * f)
        radii.append(np.asarray(e.radii) * f)
        colours.append(colour[group])
    return render.BodyGeometry(np.array(idx), np.array(centres), np.array(radii), np.array(colours))


def _feet_on_floor(kin_result: KinematicsResult, geometry: render.BodyGeometry, body_names: list[str],
                   lift_m: np.ndarray, foot_bodies: tuple[str, ...] = FOOT_BODIES) -> np.ndarray:
    """Vertical shift per frame that puts the lowest foot surface on y = 0, plus any jump."""
    foot_idx = {body_names.index(b) for b in foot_bodies}
    lows = []
    for e, b in enumerate(geometry.body_index):
        if b not in foot_idx:
            continue
        R = kin_result.body_rotations[:, b]  # (F, 3, 3)
        centre_y = (R[:, 1, :] @ geometry.centres_m[e]) + kin_result.body_origins_m[:, b, 1]
        half_height = np.sqrt(((R[:, 1, :] * geometry.radii_m[e]) ** 2).sum(-1))
        lows.append(centre_y - half_height)
    return -np.min(lows, axis=0) + lift_m


def _soft_tissue_noise(rng: np.random.Generator, n_frames: int, n_markers: int) -> np.ndarray:
    """Smooth per-marker skin motion (~2 mm) plus 0.5 mm measurement noise, metres."""
    t = np.arange(n_frames) / motions.CAPTURE_RATE_HZ
    smooth = np.zeros((n_frames, n_markers, 3))
    for _ in range(3):
        freq = rng.uniform(0.2, 2.0, (n_markers, 3))
        phase = rng.uniform(0, 2 * np.pi, (n_markers, 3))
        smooth += np.sin(2 * np.pi * freq[None] * t[:, None, None] + phase[None])
    return 0.0012 * smooth + rng.normal(0, 0.0005, (n_frames, n_markers, 3))


def make_cameras(size: SyntheticSize) -> dict[str, Camera]:
    """PG1 in front of the capture volume, PG2 at the subject's right side."""
    w, h = size.video_width_px, size.video_height_px
    target = (0.0, 0.9, 0.0)
    return {
        "PG1": look_at_camera("PG1", (5.0, 1.3, 0.3), target, w, h, vertical_fov_deg=36.0, fps=VIDEO_FPS),
        "PG2": look_at_camera("PG2", (0.4, 1.3, 5.0), target, w, h, vertical_fov_deg=36.0, fps=VIDEO_FPS),
    }


@dataclass
class Trial:
    name: str
    time_s: np.ndarray
    coordinates: np.ndarray  # (F, C) radians / metres, after floor contact
    kinematics: KinematicsResult  # noise-free markers and body poses


def _simulate_trial(name: str, duration_s: float, rng: np.random.Generator, kin: OpenSimKinematics,
                    geometry: render.BodyGeometry, model: GeneratorModel) -> Trial:
    t, q, lift = motions.generate(name, duration_s, rng, model.motion)
    names = model.coordinate_names
    res = kin.compute(q, names)
    dy = _feet_on_floor(res, geometry, kin.body_names, lift, model.foot_bodies)
    q = q.copy()
    q[:, names.index(model.vertical)] += dy
    # pelvis_ty only translates everything vertically: shift instead of recomputing
    res.markers_m[..., 1] += dy[:, None]
    res.body_origins_m[..., 1] += dy[:, None]
    return Trial(name, t, q, res)


def generate_subject(key: str, out_dir: str | Path, size: SyntheticSize, seed: int,
                     generic_model: str | Path, log: Callable[[str], None] = lambda m: None) -> dict:
    """Write one synthetic subject's raw files into `out_dir` (an empty folder)."""
    out = Path(out_dir)
    sid = subject_id(key)
    rng = np.random.default_rng([int(seed), sid])
    model = GeneratorModel.load(generic_model)
    anthro = draw_anthropometrics(rng) if model.files.project else _user_anthropometrics(rng, model)
    for sub in ("mocap", "cameras", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    scaled = out / "truth" / "scaled_model.osim"
    scale_model(generic_model, anthro.scale_factors, anthro.mass_kg, scaled, name=f"{model.name}_{key}")
    kin = OpenSimKinematics(scaled)
    geometry = subject_geometry(kin, anthro.scale_factors, rng, model.geometry)
    names = model.coordinate_names
    rotational = model.rotational

    trials: list[Trial] = []
    trial_facts = []
    video_frame = 0
    for name in (STATIC_TRIAL, *TRIALS):
        duration = size.static_seconds if name == STATIC_TRIAL else size.trial_seconds
        trial = _simulate_trial(name, duration, rng, kin, geometry, model)
        noisy = trial.kinematics.markers_m + _soft_tissue_noise(rng, *trial.kinematics.markers_m.shape[:2])
        write_trc(out / "mocap" / trc_name(key, name),
                  MarkerTrajectories(kin.marker_names, trial.time_s, noisy, motions.CAPTURE_RATE_HZ))
        write_mot(out / "truth" / f"{name}.mot", trial.time_s, names, trial.coordinates, rotational,
                  title=f"{key} {name} true coordinates")
        facts = {"name": name, "mocap_file": f"mocap/{trc_name(key, name)}",
                 "capture_rate_hz": motions.CAPTURE_RATE_HZ, "n_capture_frames": len(trial.time_s)}
        if name != STATIC_TRIAL:
            n_video = len(trial.time_s) // CAPTURE_PER_VIDEO_FRAME
            facts.update(video_start_frame=video_frame, video_end_frame=video_frame + n_video)
            video_frame += n_video
            trials.append(trial)
        trial_facts.append(facts)
        log(f"{key}: trial {name}: {len(trial.time_s)} capture frames")

    cameras = make_cameras(size)
    for cam_name, cam in cameras.items():
        cam.write_json(out / "cameras" / f"{cam_name}.json")
        cam_rng = _camera_rng(seed, key, cam_name)
        n = write_video(out / movi_video_name(cam_name, key), _render_frames(cam, cam_rng, geometry, trials),
                        VIDEO_FPS, cam.width_px, cam.height_px)
        log(f"{key}: video {cam_name}: {n} frames at {cam.width_px}x{cam.height_px}")

    atomic_write_json(out / "truth" / "scale_factors.json", anthro.scale_factors)
    facts = {
        "subject": key, "dataset": "synthetic", "seed": int(seed), "generator_version": GENERATOR_CODE_VERSION,
        "sex": anthro.sex, "height_m": anthro.height_m, "mass_kg": anthro.mass_kg,
        "video_fps": VIDEO_FPS, "capture_rate_hz": motions.CAPTURE_RATE_HZ,
        "n_video_frames": video_frame, "cameras": {c: {"video": movi_video_name(c, key), "calibration": f"cameras/{c}.json"}
                                                   for c in CAMERAS},
        "static_trial": f"mocap/{trc_name(key, STATIC_TRIAL)}",
        "trials": trial_facts,
        "truth": {"scaled_model": "truth/scaled_model.osim", "scale_factors": "truth/scale_factors.json"},
    }
    atomic_write_json(out / "subject.json", facts)
    return facts


def _user_anthropometrics(rng: np.random.Generator, model: GeneratorModel) -> Anthropometrics:
    """Sex, height and mass as for the project's model; scale factors by the model's measurement groups."""
    sex = "female" if rng.random() < 0.5 else "male"
    generic = OpenSimKinematics(model.files.osim)
    default = np.array([c.default for c in model.motion.coords])
    generic_height = generic_height_m(generic, model.coordinate_names, default)
    height = float(np.clip(rng.normal(generic_height, 0.06), generic_height - 0.15, generic_height + 0.15))
    mass = float(rng.uniform(19.0, 28.0)) * height ** 2
    factors = draw_scale_factors(rng, generic.body_names, model.measurements, height, generic_height)
    return Anthropometrics(sex, round(height, 4), round(mass, 2), factors)


def estimate_bytes(size: SyntheticSize) -> int:
    """Upper bound of one subject's files: two MPEG-4 videos (well under 0.1 byte per pixel) and
    the .trc files (47 markers, 120 Hz, ~50 bytes a value)."""
    video_frames = len(TRIALS) * size.trial_seconds * VIDEO_FPS
    capture_frames = (len(TRIALS) * size.trial_seconds + size.static_seconds) * motions.CAPTURE_RATE_HZ
    return int(len(CAMERAS) * video_frames * size.video_width_px * size.video_height_px * 0.1
               + capture_frames * 47 * 3 * 12 + (2 << 20))


def background_for(camera: Camera, seed: int, key: str) -> np.ndarray:
    """The subject's empty room as seen by `camera` (float RGB), as used in its video."""
    return render.render_background(camera, _camera_rng(seed, key, camera.name))


def _camera_rng(seed: int, key: str, camera: str) -> np.random.Generator:
    """Background, then sensor noise, of one camera: its own stream so videos are independent."""
    return np.random.default_rng([int(seed), subject_id(key), CAMERAS.index(camera) + 1])


def _render_frames(cam: Camera, cam_rng: np.random.Generator, geometry: render.BodyGeometry,
                   trials: list[Trial]) -> Iterator[np.ndarray]:
    background = render.render_background(cam, cam_rng)
    rays = cam.pixel_rays()
    for trial in trials:
        kin = trial.kinematics
        for f in range(0, len(trial.time_s), CAPTURE_PER_VIDEO_FRAME):
            img = background.copy()
            render.render_body(cam, rays, geometry, kin.body_rotations[f], kin.body_origins_m[f], img)
            yield render.add_sensor_noise(img, cam_rng)


def preview_jpeg(raw_dir: str | Path, trials: tuple[str, ...] = ("walking", "squat", "jumping_jacks")) -> bytes:
    """Mid-trial frames of both cameras with the trial's markers projected on them."""
    from d3ke_assets.sources.preview import contact_sheet, pick_frames

    raw_dir = Path(raw_dir)
    facts = load_subject_facts(raw_dir)
    chosen = [t for t in facts["trials"] if t["name"] in trials]
    mids = {t["name"]: (t["video_start_frame"] + t["video_end_frame"]) // 2 for t in chosen}
    # markers at each chosen video frame, read once for both cameras
    markers = {t["name"]: read_trc(raw_dir / t["mocap_file"]).positions_m[
        (mids[t["name"]] - t["video_start_frame"]) * CAPTURE_PER_VIDEO_FRAME] for t in chosen}
    rows = []
    for cam_name, files in facts["cameras"].items():
        cam = Camera.from_json(raw_dir / files["calibration"])
        frames = pick_frames(raw_dir / files["video"], list(mids.values()))
        rows.append([(frames[mids[name]], cam.project(markers[name]), f"{cam_name} {name}") for name in mids])
    return contact_sheet(rows)


def load_subject_facts(raw_dir: str | Path) -> dict:
    return read_json(Path(raw_dir) / "subject.json", "materialize raw_subject for this subject")
