"""Video files through PyAV: write, probe, decode; a camera's video checked against its calibration."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from d3ke_assets.errors import D3keError
from d3ke_assets.media.camera import Camera
from d3ke_assets.storage import atomic_path

FPS_TOLERANCE = 0.01


@dataclass
class CameraVideo:
    """One camera of a subject: its video and the calibration it was filmed with."""
    name: str
    video: Path
    camera: Camera
    calibration: Path
    trial: str | None = None  # a video of this trial only (a lab's); None: every trial, in sequence


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int
    fps: float
    width_px: int
    height_px: int
    codec: str


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int, width_px: int, height_px: int,
                codec: str = "mpeg4", bit_rate: int | None = None) -> int:
    """Encode uint8 RGB frames (H, W, 3); single-threaded so output bytes are reproducible."""
    import av

    path = Path(path)
    n = 0
    try:
        with atomic_path(path) as tmp:
            # bitexact: no encoder version strings, so the bytes depend only on the frames
            with av.open(str(tmp), mode="w", options={"fflags": "+bitexact"}) as container:
                stream = container.add_stream(codec, rate=Fraction(fps))
                stream.width, stream.height = width_px, height_px
                stream.pix_fmt = "yuv420p"
                stream.bit_rate = bit_rate or int(width_px * height_px * fps * 1.2)
                stream.codec_context.thread_count = 1
                stream.codec_context.options = {"flags": "+bitexact"}
                for rgb in frames:
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                    for packet in stream.encode(frame):
                        container.mux(packet)
                    n += 1
                for packet in stream.encode():
                    container.mux(packet)
    except (av.error.FFmpegError, ValueError) as exc:
        raise D3keError(f"{path}: cannot write video with codec {codec} ({exc})") from None
    return n


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count (by decoding: container counts can lie), rate and size."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            n = sum(1 for _ in container.decode(stream))
            return VideoInfo(n, float(stream.average_rate or stream.base_rate), stream.codec_context.width,
                             stream.codec_context.height, stream.codec_context.name)
    except (av.error.FFmpegError, IndexError) as exc:
        raise D3keError(f"{path}: cannot decode video ({exc})") from None


def decode_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield uint8 RGB frames."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise D3keError(f"{path}: cannot decode video ({exc})") from None


def container_info(path: Path) -> tuple[int, int, float]:
    """Width, height and frame rate from the container, without decoding."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return (stream.codec_context.width, stream.codec_context.height,
                    float(stream.average_rate or stream.base_rate or 0))
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise D3keError(f"{path}: cannot open video ({exc}): download, export or regenerate it") from None


def check_video(cam: CameraVideo) -> float:
    """Size and frame rate from the container, before decoding; returns the frame rate."""
    width, height, fps = container_info(cam.video)
    if (width, height) != (cam.camera.width_px, cam.camera.height_px):
        raise D3keError(f"{cam.video}: video is {width}x{height} but its calibration {cam.calibration.name} is "
                        f"{cam.camera.width_px}x{cam.camera.height_px}: the video or the calibration is the wrong one")
    if abs(fps - cam.camera.fps) > FPS_TOLERANCE * cam.camera.fps:
        raise D3keError(f"{cam.video}: video runs at {fps:g} fps but the capture expects {cam.camera.fps:g} fps")
    return fps


def decode_images(video: Path):
    """The video's frames as PIL RGB images, in order (PyAV converts straight to PIL: one copy)."""
    import av

    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_image()
    except av.error.FFmpegError as exc:
        raise D3keError(f"{video}: video is truncated or damaged ({exc}): download or regenerate it") from None
