"""Run a trained frame model on a user's video: OpenSim coordinates, a scaled model, an overlay.

The network sees a square box of every frame (by default the centred square; any frame rate and
resolution), resized to the size it was trained at.  It estimates pelvis-relative kinematics in
the camera frame; the `.mot` expresses the pelvis orientation in a y-up frame that is the camera
turned upright (x right, y up, z towards the viewer) and puts the pelvis at a standing height at
the origin, as a single camera cannot tell where the person is.  The `.osim` is the project's
generic model scaled by the mean predicted scale factors, so OpenSim loads the two together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from d3ke_assets.errors import D3keError

CAMERA_TO_UPRIGHT = np.diag([1.0, -1.0, -1.0])  # camera (y down, z ahead) -> y up, z towards the viewer
DEFAULT_CROP_PX = 256


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


def _draw_skeleton(crop, joints_cam_m: np.ndarray, pairs: list[tuple[int, int]]):
    """Weak perspective: the skeleton scaled to 80% of the crop's height and centred (no camera
    calibration is known for a user's video)."""
    from PIL import ImageDraw

    size = crop.size[0]
    xy = joints_cam_m[:, :2]
    extent = max(float(np.ptp(xy[:, 1])), 0.5)
    scale = 0.8 * size / (extent * 1.25)  # the head is above the highest joint centre
    centre = (xy.max(axis=0) + xy.min(axis=0)) / 2
    uv = (xy - centre) * scale + size / 2
    draw = ImageDraw.Draw(crop)
    for a, b in pairs:
        draw.line([tuple(uv[a]), tuple(uv[b])], fill=(255, 230, 0), width=max(1, size // 100))
    return crop


def predict_video(video: Path, checkpoint: Path, generic_osim: Path, out_dir: Path, box_text: str | None = None,
                  batch_size: int = 32, log: Callable[[str], None] = lambda m: None) -> PredictResult:
    from d3ke_assets.biomech.formats import write_mot
    from d3ke_assets.biomech.model_builder import STANDING_PELVIS_HEIGHT_M
    from d3ke_assets.biomech.model_files import root_joint
    from d3ke_assets.biomech.opensim_tools import scale_model
    from d3ke_assets.evaluation.report import bones
    from d3ke_assets.frames.processing import crop_square
    from d3ke_assets.media.video import decode_frames, probe_video, write_video
    from d3ke_assets.learning.model import normalise
    from d3ke_assets.learning.training import choose_device, load_checkpoint, load_trained_frame_model

    t_start = time.perf_counter()
    video = Path(video)
    if not video.is_file():
        raise D3keError(f"{video}: no such video file")
    info = probe_video(video)
    if info.n_frames == 0:
        raise D3keError(f"{video}: the video has no frames")
    box = parse_box(box_text, info.width_px, info.height_px, video)
    crop_px = int(load_checkpoint(checkpoint).get("crop_px") or DEFAULT_CROP_PX)
    model = load_trained_frame_model(checkpoint, generic_osim)
    device = choose_device()
    model.to(device).eval()
    layer = model.layer
    pairs = bones(layer)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = video.stem
    predictions: dict[str, list] = {}
    overlay_frames: list[np.ndarray] = []
    t_network = 0.0

    def run(crops):
        nonlocal t_network
        images = torch.from_numpy(np.stack([np.asarray(c) for c in crops])).permute(0, 3, 1, 2)
        t0 = time.perf_counter()
        with torch.no_grad():
            pred = model(normalise(images.to(device)))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_network += time.perf_counter() - t0
        for k, v in pred.items():
            predictions.setdefault(k, []).append(v.cpu().numpy())
        for crop, joints in zip(crops, pred["joint_centres_m"].cpu().numpy()):
            overlay_frames.append(np.asarray(_draw_skeleton(crop, joints, pairs)))

    crops = []
    for k, rgb in enumerate(decode_frames(video)):
        crops.append(crop_square(rgb, box, crop_px))
        if len(crops) == batch_size:
            run(crops)
            crops = []
            log(f"{stem}: {k + 1}/{info.n_frames} frames")
    if crops:
        run(crops)
    pred = {k: np.concatenate(v) for k, v in predictions.items()}
    n = len(pred["coordinates"])
    names = list(layer.coordinate_names)
    q = pred["coordinates"].astype(np.float64).copy()
    upright = np.einsum("ij,njk->nik", CAMERA_TO_UPRIGHT, pred["pelvis_rotation"].astype(np.float64))
    root = root_joint(layer.spec)
    angles = root_angles(upright, root)
    for i, name in enumerate(root.rotations):
        q[:, names.index(name)] = angles[:, i]
    vertical = root.translation_along(1)
    default_height = layer.spec.coordinates[names.index(vertical)].default_value
    q[:, names.index(vertical)] = default_height if default_height > 0.3 else STANDING_PELVIS_HEIGHT_M
    mot = out_dir / f"{stem}.mot"
    write_mot(mot, np.arange(n) / info.fps, names, q, list(layer.rotational), title=stem)
    osim = out_dir / f"{stem}.osim"
    mean_scales = pred["scale_factors"].mean(axis=0)
    scale_model(generic_osim, {b: tuple(mean_scales[i]) for i, b in enumerate(layer.body_names)}, 75.0, osim,
                name=stem)
    overlay = out_dir / f"{stem}_overlay.mp4"
    fps = max(1, int(round(info.fps)))
    write_video(overlay, overlay_frames, fps, crop_px, crop_px)
    return PredictResult(mot, osim, overlay, n, info.fps, time.perf_counter() - t_start, t_network)
