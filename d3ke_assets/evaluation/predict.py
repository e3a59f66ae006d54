"""Run a trained model on a user's video: OpenSim coordinates, a scaled model, an overlay.

A frame model predicts each frame alone; a sequence model (its checkpoint carries the frame model it
refines) then refines those outputs over the video's frames in order, as it was trained to.

The network sees a square box of every frame (by default the centred square; any frame rate and
resolution), resized to the size it was trained at.  It estimates pelvis-relative kinematics in
the camera frame; the `.mot` expresses the pelvis orientation in a y-up frame that is the camera
turned upright (x right, y up, z towards the viewer) and puts the pelvis at a standing height at
the origin, as a single camera cannot tell where the person is.  The `.osim` is the project's
generic model scaled by the mean predicted scale factors, so OpenSim loads the two together.  The
overlay is the original video at its own resolution with the box the network saw and the predicted
skeleton drawn in it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from d3ke_assets.errors import D3keError

CAMERA_TO_UPRIGHT = np.diag([1.0, -1.0, -1.0])  # camera (y down, z ahead) -> y up, z towards the viewer


@dataclass
class PredictResult:
    mot: Path
    osim: Path
    overlay: Path
    n_frames: int
    fps: float
    seconds_total: float
    seconds_network: float


def parse_box(text: str | None, width_px: int, height_px: int, video: Path) -> np.ndarray:
    """`x,y,w,h` in video pixels (None: the centred square) -> the square box (x0, y0, size) the
    network sees: centred on the given box, its longer side."""
    if text is None:
        side = min(width_px, height_px)
        return np.array([(width_px - side) // 2, (height_px - side) // 2, side])
    try:
        x, y, w, h = (int(round(float(v))) for v in text.split(","))
    except ValueError:
        raise D3keError(f"--box {text!r}: give four numbers x,y,w,h in pixels") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width_px or y + h > height_px:
        raise D3keError(f"--box {text}: outside the {width_px}x{height_px} frame of {video}: give x,y,w,h with "
                        f"0 <= x, x+w <= {width_px}, 0 <= y, y+h <= {height_px}")
    side = max(w, h)
    return np.array([x + w // 2 - side // 2, y + h // 2 - side // 2, side])


def resolve_checkpoint(model: str, workdir: Path, tracking_uri: str | None = None) -> Path:
    """A checkpoint file, or an MLflow URI (`models:/NAME/VERSION`, `runs:/RUN_ID/checkpoint`) whose
    artifact holds one, downloaded into `workdir`."""
    path = Path(model)
    if path.is_file():
        return path
    if not model.startswith(("models:/", "runs:/")):
        raise D3keError(f"--model {model}: no such checkpoint file, and not an MLflow URI (models:/NAME/VERSION "
                        f"or runs:/RUN_ID/checkpoint)")
    import mlflow

    try:
        if model.startswith("models:/"):
            name, _, version = model[len("models:/"):].partition("/")
            client = mlflow.MlflowClient(tracking_uri)
            source = client.get_model_version(name, version or "1").source
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(workdir),
                                                        tracking_uri=tracking_uri)
        else:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(workdir),
                                                        tracking_uri=tracking_uri)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; the user needs the URI and the store
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise D3keError(f"--model {model}: does not resolve in the MLflow store {tracking_uri} ({first[:200]})") \
            from None
    found = [Path(local)] if Path(local).is_file() else sorted(Path(local).rglob("*.pt"))
    if not found:
        raise D3keError(f"--model {model}: the artifact holds no checkpoint (.pt)")
    return found[0]


def pelvis_angles(rotation_upright: np.ndarray) -> np.ndarray:
    """(N, 3, 3) pelvis-to-ground rotations -> (N, 3) pelvis tilt, list, rotation in radians for the
    project's `ground_pelvis` joint: body-fixed rotations about z, then x, then y."""
    r = rotation_upright
    tilt = np.arctan2(-r[:, 0, 1], r[:, 1, 1])
    list_ = np.arcsin(np.clip(r[:, 2, 1], -1.0, 1.0))
    rot = np.arctan2(-r[:, 2, 0], r[:, 2, 2])
    return np.stack([tilt, list_, rot], axis=1)


def root_angles(rotation_upright: np.ndarray, root) -> np.ndarray:
    """(N, 3, 3) root-body-to-ground rotations -> (N, 3) the root joint's rotation coordinates (radians):
    body-fixed rotations about its three axes in order, which must be ground axes (x, y or z, either sign)."""
    letters, signs = "", []
    for axis in root.rotation_axes:
        k = int(np.argmax(np.abs(axis)))
        if abs(abs(axis[k]) - 1.0) > 1e-6:
            raise D3keError(f"root joint {root.name}: rotation axis {axis} is not a ground axis: d3ke predict "
                            f"can only write the root orientation of joints that turn about x, y and z")
        letters += "XYZ"[k]
        signs.append(float(np.sign(axis[k])))
    if letters == "ZXY" and signs == [1.0, 1.0, 1.0]:  # the project's ground_pelvis: the closed form
        return pelvis_angles(rotation_upright)
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(rotation_upright).as_euler(letters) * np.array(signs)


def mot_coordinates(pred: dict, layer) -> np.ndarray:
    """(N, C) every coordinate of the model as the `.mot` holds it (radians, metres; `write_mot`
    turns the rotational ones into degrees) from a frame or sequence model's predictions: the root's
    angles from the predicted pelvis orientation in the camera turned upright, its vertical
    translation at a standing height, its horizontal ones at 0."""
    from d3ke_assets.biomech.model_builder import STANDING_PELVIS_HEIGHT_M
    from d3ke_assets.biomech.model_files import root_joint

    names = list(layer.coordinate_names)
    q = np.asarray(pred["coordinates"], np.float64).copy()
    upright = np.einsum("ij,njk->nik", CAMERA_TO_UPRIGHT, np.asarray(pred["pelvis_rotation"], np.float64))
    root = root_joint(layer.spec)
    angles = root_angles(upright, root)
    for i, name in enumerate(root.rotations):
        q[:, names.index(name)] = angles[:, i]
    vertical = root.translation_along(1)
    default_height = layer.spec.coordinates[names.index(vertical)].default_value
    q[:, names.index(vertical)] = default_height if default_height > 0.3 else STANDING_PELVIS_HEIGHT_M
    return q


def draw_skeleton(frame: np.ndarray, box: np.ndarray, joints_cam_m: np.ndarray, pairs: list[tuple[int, int]]):
    """The skeleton drawn on the original video frame (its own resolution), inside the square `box`
    (x0, y0, size) the network saw, which is outlined.  Weak perspective: the skeleton scaled to 80%
    of the box's height and centred in it (no camera calibration is known for a user's video)."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame)
    x0, y0, size = (float(v) for v in box)
    xy = joints_cam_m[:, :2]
    extent = max(float(np.ptp(xy[:, 1])), 0.5)
    scale = 0.8 * size / (extent * 1.25)  # the head is above the highest joint centre
    centre = (xy.max(axis=0) + xy.min(axis=0)) / 2
    uv = (xy - centre) * scale + np.array([x0 + size / 2, y0 + size / 2])
    draw = ImageDraw.Draw(image)
    width = max(1, int(size) // 100)
    draw.rectangle([x0, y0, x0 + size - 1, y0 + size - 1], outline=(0, 200, 255), width=width)
    for a, b in pairs:
        draw.line([tuple(uv[a]), tuple(uv[b])], fill=(255, 230, 0), width=max(1, int(size) // 100 + 1))
    return np.asarray(image)


def predict_video(video: Path, checkpoint: Path, generic_osim: Path, out_dir: Path, box_text: str | None = None,
                  batch_size: int = 32, log: Callable[[str], None] = lambda m: None) -> PredictResult:
    """A frame model, or a sequence model that refines its frame model's outputs over the video's
    frames in order (`serving.load_predictor` tells the checkpoints apart)."""
    from d3ke_assets.biomech.formats import write_mot
    from d3ke_assets.biomech.opensim_tools import scale_model
    from d3ke_assets.evaluation.report import bones
    from d3ke_assets.evaluation.serving import load_predictor
    from d3ke_assets.frames.processing import crop_square
    from d3ke_assets.media.video import decode_frames, probe_video, write_video
    from d3ke_assets.learning.training import choose_device

    t_start = time.perf_counter()
    video = Path(video)
    if not video.is_file():
        raise D3keError(f"{video}: no such video file")
    info = probe_video(video)
    if info.n_frames == 0:
        raise D3keError(f"{video}: the video has no frames")
    box = parse_box(box_text, info.width_px, info.height_px, video)
    device = choose_device()
    predictor = load_predictor(checkpoint, generic_osim).to(device)
    log(f"{video.name}: {predictor.kind} at {predictor.crop_px} px")
    layer = predictor.layer
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = video.stem
    heads: list[np.ndarray] = []
    t_network = 0.0

    def run(crops):
        nonlocal t_network
        t0 = time.perf_counter()
        heads.append(predictor.head_outputs(np.stack(crops)))  # on the CPU when it returns
        t_network += time.perf_counter() - t0

    crops = []
    for k, rgb in enumerate(decode_frames(video)):
        crops.append(np.asarray(crop_square(rgb, box, predictor.crop_px)))
        if len(crops) == batch_size:
            run(crops)
            crops = []
            log(f"{stem}: {k + 1}/{info.n_frames} frames")
    if crops:
        run(crops)
    t0 = time.perf_counter()
    pred = predictor.decode(np.concatenate(heads))  # the sequence model refines over the whole video
    t_network += time.perf_counter() - t0
    n = len(pred["coordinates"])
    names = list(layer.coordinate_names)
    q = mot_coordinates(pred, layer)
    mot = out_dir / f"{stem}.mot"
    write_mot(mot, np.arange(n) / info.fps, names, q, list(layer.rotational), title=stem)
    osim = out_dir / f"{stem}.osim"
    mean_scales = pred["scale_factors"].mean(axis=0)
    scale_model(generic_osim, {b: tuple(mean_scales[i]) for i, b in enumerate(layer.body_names)}, 75.0, osim,
                name=stem)
    overlay = out_dir / f"{stem}_overlay.mp4"
    pairs = bones(layer)
    # the original frames at their own size (even, as the encoder's 4:2:0 chroma needs): a second pass,
    # so a long video is never held in memory
    width, height = info.width_px - info.width_px % 2, info.height_px - info.height_px % 2
    drawn = (draw_skeleton(rgb, box, joints, pairs)[:height, :width]
             for rgb, joints in zip(decode_frames(video), pred["joint_centres_m"]))
    write_video(overlay, drawn, max(1, int(round(info.fps))), width, height)
    return PredictResult(mot, osim, overlay, n, info.fps, time.perf_counter() - t_start, t_network)
