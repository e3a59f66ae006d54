"""Processed frames: square crops around the subject, stored compactly, with a label index.

For each camera of a subject, the video is decoded once, in order.  Every video
frame that has labels (from `opensim_gt`) gets a square box around the model
markers projected with the camera calibration (plus a margin), is cropped,
resized to the preset's size and JPEG-encoded into a few large shard files.
`index.parquet` holds one row per stored frame: where its bytes are, its box,
and its labels.  Unlike the original layout (every full frame, gzip in HDF5),
only what training needs is kept.

Pixel convention (OpenCV's, as in `media.camera`): pixel i is centred at i.
A point at video pixel u lands in the crop at `(u - x0 + 0.5) * S / size - 0.5`
(`to_crop_px`), S being the crop size.
"""

from __future__ import annotations

import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from d3ke_assets.errors import D3keError
from d3ke_assets.media.video import CameraVideo, check_video, decode_images

FRAMES_CODE_VERSION = "2"  # bump on any change to what is written
INDEX_NAME = "index.parquet"
CAMERAS_NAME = "cameras.json"
BOX_MARGIN = 0.25  # box side = marker extent * (1 + margin): hands, feet and head stick out of the markers
USED_MOVEMENT_M = 0.02  # D3KE: a frame is used when some marker moved > 20 mm since the last used frame
JPEG_QUALITY = 90
SHARD_BYTES = 256 << 20
# Label arrays copied from opensim_gt into the index, one list column each (float32).
LABEL_COLUMNS = ("coordinates", "coordinate_mask", "scale_factors", "markers_m", "joint_centres_m",
                 "pelvis_rotation", "pelvis_origin_m")


def to_crop_px(uv: np.ndarray, box: np.ndarray, crop_px: int) -> np.ndarray:
    """Video pixel coordinates (..., 2) -> crop pixel coordinates, for boxes (..., 3) = (x0, y0, size)."""
    scale = crop_px / box[..., 2:3]
    return (uv - box[..., :2] + 0.5) * scale - 0.5


def square_boxes(points_px: np.ndarray, margin: float = BOX_MARGIN, min_size_px: int = 16) -> np.ndarray:
    """(F, M, 2) projected points -> (F, 3) integer boxes (x0, y0, size) centred on the points' extent."""
    lo = np.nanmin(points_px, axis=1)
    hi = np.nanmax(points_px, axis=1)
    centre = (lo + hi) / 2
    size = np.maximum(np.ceil((hi - lo).max(axis=1) * (1 + margin)), min_size_px)
    x0y0 = np.round(centre - size[:, None] / 2)
    return np.column_stack([x0y0, size]).astype(np.int64)


def used_flags(trial_index: np.ndarray, markers_m: np.ndarray, threshold_m: float = USED_MOVEMENT_M) -> np.ndarray:
    """First frame of each trial, then every frame where a marker moved > threshold since the last used one."""
    used = np.zeros(len(trial_index), bool)
    last = None
    for i in range(len(trial_index)):
        if i == 0 or trial_index[i] != trial_index[i - 1]:
            used[i], last = True, markers_m[i]
            continue
        if np.nanmax(np.linalg.norm(markers_m[i] - last, axis=-1)) > threshold_m:
            used[i], last = True, markers_m[i]
    return used


def crop_to_jpeg(image, box: np.ndarray, crop_px: int, quality: int = JPEG_QUALITY) -> bytes:
    """Crop (zero padding outside the frame), resize with antialiasing, encode as JPEG.

    `image`: a PIL image (as PyAV decodes it) or an (H, W, 3) uint8 array."""
    buf = io.BytesIO()
    crop_square(image, box, crop_px).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def crop_square(image, box: np.ndarray, crop_px: int):
    """The square `box` (x0, y0, size) of `image` (PIL or (H, W, 3) uint8), zero outside the frame,
    resized to `crop_px`: what the network sees."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    x0, y0, size = (int(v) for v in box)
    # shrinking: area averaging (antialiased, half the cost of bilinear); enlarging: bilinear
    resample = Image.BOX if size >= crop_px else Image.BILINEAR
    return image.crop((x0, y0, x0 + size, y0 + size)).resize((crop_px, crop_px), resample)


class ShardWriter:
    """Appends encoded frames to a few large files; returns where each one went."""

    def __init__(self, folder: Path, prefix: str, shard_bytes: int = SHARD_BYTES):
        self.folder, self.prefix, self.shard_bytes = folder, prefix, shard_bytes
        self.index, self.offset, self.fh = -1, 0, None

    def add(self, data: bytes) -> tuple[str, int, int]:
        if self.fh is None or self.offset + len(data) > self.shard_bytes:
            self.close()
            self.index += 1
            self.fh = open(self.folder / self.name, "wb")
            self.offset = 0
        where = (self.name, self.offset, len(data))
        self.fh.write(data)
        self.offset += len(data)
        return where

    @property
    def name(self) -> str:
        return f"{self.prefix}_{self.index:03d}.jpgs"

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _rows_of_video(cam: CameraVideo, labels: dict[str, np.ndarray], label_names: dict, labels_path: Path
                   ) -> np.ndarray:
    """The label rows a camera's video shows: all of them, or its trial's (a video per trial)."""
    if cam.trial is None:
        return np.arange(len(labels["video_frame"]))
    if cam.trial not in label_names["trials"]:
        raise D3keError(f"{labels_path}: no labels of trial {cam.trial}, which {cam.video.name} films: "
                        f"materialize mocap_markers and opensim_gt for this subject again")
    return np.flatnonzero(labels["trial_index"] == label_names["trials"].index(cam.trial))


def expected_rows(cameras: list[CameraVideo], labels: dict[str, np.ndarray], label_names: dict) -> int:
    """Index rows `process_subject` stores: every label frame once per camera video that shows it."""
    return sum(len(_rows_of_video(cam, labels, label_names, Path())) for cam in cameras)


def _crop_camera(cam: CameraVideo, frames: np.ndarray, boxes: np.ndarray, crop_px: int, out_dir: Path):
    """Decode one camera's video once and store the crop of every wanted frame; (where, n decoded)."""
    writer = ShardWriter(out_dir, cam.name if cam.trial is None else f"{cam.name}_{cam.trial}")
    where, want, n_decoded = [], 0, 0
    try:
        for index, image in enumerate(decode_images(cam.video)):
            n_decoded += 1
            while want < len(frames) and frames[want] == index:
                where.append(writer.add(crop_to_jpeg(image, boxes[want], crop_px)))
                want += 1
            if want == len(frames):
                break
    finally:
        writer.close()
    if want < len(frames):
        raise D3keError(f"{cam.video}: video has {n_decoded} frames but the capture needs {int(frames.max()) + 1}: "
                        f"the video is truncated or shorter than its motion capture")
    return where, n_decoded


def _fixed_list(values: np.ndarray) -> pa.Array:
    flat = np.ascontiguousarray(values, np.float32).reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])


def process_subject(key: str, cameras: list[CameraVideo], labels: dict[str, np.ndarray], label_names: dict,
                    labels_path: Path, out_dir: Path, crop_px: int,
                    log: Callable[[str], None] = lambda m: None) -> dict:
    """Crops and index of one subject into `out_dir` (an empty folder); returns a summary."""
    start = time.perf_counter()
    bad = [k for k in LABEL_COLUMNS if np.isnan(labels[k]).any()]
    if bad:
        raise D3keError(f"{labels_path}: labels {bad} contain NaN: fix the subject's motion capture and "
                        f"materialize opensim_gt again")
    per_trial = any(cam.trial is not None for cam in cameras)
    # one video per camera: in video order; a video per trial and camera (a lab's): trial by trial
    order = (np.lexsort((labels["video_frame"], labels["trial_index"])) if per_trial
             else np.argsort(labels["video_frame"], kind="stable"))
    labels = {k: v[order] for k, v in labels.items()}
    used = used_flags(labels["trial_index"], labels["markers_m"])
    rows_of = {id(cam): _rows_of_video(cam, labels, label_names, labels_path) for cam in cameras}
    boxes_by_camera = {}
    for cam in cameras:
        if not cam.calibration.is_file():
            raise D3keError(f"{cam.calibration}: calibration of camera {cam.name} is missing")
        check_video(cam)
        uv = cam.camera.project(labels["markers_m"][rows_of[id(cam)]])
        if np.isnan(uv).all(axis=(1, 2)).any():
            raise D3keError(f"{labels_path}: in some frames every marker is behind camera {cam.name}: "
                            f"check {cam.calibration.name}")
        boxes_by_camera[id(cam)] = square_boxes(uv)
    # cameras in parallel threads: PyAV decoding and PIL resizing/encoding release the GIL
    with ThreadPoolExecutor(max_workers=max(1, min(len(cameras), os.cpu_count() or 1))) as pool:
        futures = [pool.submit(_crop_camera, cam, labels["video_frame"][rows_of[id(cam)]], boxes_by_camera[id(cam)],
                               crop_px, out_dir) for cam in cameras]
        results = [f.result() for f in futures]
    tables, n_decoded, bytes_written, cam_facts = [], 0, 0, {}
    for cam, (where, decoded) in zip(cameras, results):
        rows = rows_of[id(cam)]
        boxes = boxes_by_camera[id(cam)]
        frames = labels["video_frame"][rows]
        n_decoded += decoded
        shards, offsets, lengths = zip(*where) if where else ((), (), ())
        bytes_written += sum(lengths)
        columns = {
            "subject": pa.array([key] * len(frames)),
            "trial": pa.array([label_names["trials"][i] for i in labels["trial_index"][rows]], pa.string()),
            "camera": pa.array([cam.name] * len(frames), pa.string()),
            "frame": pa.array(frames.astype(np.int32)),
            "time_s": pa.array(labels["time_s"][rows].astype(np.float64)),
            "box_x0_px": pa.array(boxes[:, 0].astype(np.int32)),
            "box_y0_px": pa.array(boxes[:, 1].astype(np.int32)),
            "box_size_px": pa.array(boxes[:, 2].astype(np.int32)),
            "used": pa.array(used[rows]),
            "shard": pa.array(list(shards), pa.string()),
            "offset": pa.array(np.asarray(offsets, np.int64)),
            "length": pa.array(np.asarray(lengths, np.int32)),
            **{k: _fixed_list(labels[k][rows]) for k in LABEL_COLUMNS},
        }
        tables.append(pa.table(columns))
        cam_facts[cam.name] = cam.camera.to_json_dict()
        what = f"{cam.name}" + (f" {cam.trial}" if cam.trial else "")
        log(f"{key}: {what}: {len(frames)} frames cropped to {crop_px} px ({sum(lengths) / 1e6:.1f} MB)")
    table = pa.concat_tables(tables)
    table = table.replace_schema_metadata({"crop_px": str(crop_px), "label_names": json.dumps(label_names)})
    pq.write_table(table, out_dir / INDEX_NAME)
    (out_dir / CAMERAS_NAME).write_text(json.dumps(cam_facts, indent=1))
    seconds = time.perf_counter() - start
    return {"n_frames": table.num_rows, "n_used": int(table.column("used").to_numpy().sum()), "n_decoded": n_decoded,
            "bytes": bytes_written, "crop_px": crop_px, "seconds": seconds,
            "frames_per_s": table.num_rows / max(seconds, 1e-9)}


def estimate_bytes(n_label_frames: int, n_cameras: int, crop_px: int) -> int:
    """Output size before writing: these JPEG crops at quality 90 take ~0.2-0.4 byte per pixel."""
    return int(n_label_frames * n_cameras * (crop_px * crop_px * 0.5 + 600)) + (1 << 20)



def read_index(folder: Path) -> pa.Table:
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        raise D3keError(f"{path}: missing: materialize frames for this subject")
    return pq.read_table(path)
