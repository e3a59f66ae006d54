"""Random access to processed frames for training: `FrameDataset` (a PyTorch Dataset).

The index of every subject is read once; each item reads its JPEG bytes from a
shard with one positioned read and decodes them, so decoding happens in the
DataLoader's workers.  File handles are opened lazily per process, so a Dataset
made in the main process works in forked or spawned workers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from d3ke_assets.errors import D3keError
from d3ke_assets.frames.processing import CAMERAS_NAME, INDEX_NAME, LABEL_COLUMNS
from d3ke_assets.media.camera import Camera


def _column(table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    width = col.type.list_size
    return col.flatten().to_numpy().reshape(len(col), width)


class FrameDataset(torch.utils.data.Dataset):
    """Frames of some subjects (folders of the `frames` asset); `used_only` keeps D3KE's moving frames."""

    def __init__(self, folders: list[str | Path], used_only: bool = True, cameras: tuple[str, ...] | None = None):
        self.folders = [Path(f) for f in folders]
        parts = []
        for k, folder in enumerate(self.folders):
            path = folder / INDEX_NAME
            if not path.is_file():
                raise D3keError(f"{path}: missing: materialize frames for this subject")
            table = pq.read_table(path)
            mask = np.ones(table.num_rows, bool)
            if used_only:
                mask &= table.column("used").to_numpy()
            if cameras is not None:
                mask &= np.isin(table.column("camera").to_numpy(zero_copy_only=False), cameras)
            parts.append((k, table.filter(mask)))
        if not parts:
            raise D3keError("FrameDataset: no subject folders given")
        meta = parts[0][1].schema.metadata or {}
        self.crop_px = int(meta.get(b"crop_px", b"0"))
        self.label_names = json.loads(meta.get(b"label_names", b"{}"))
        self.folder_index = np.concatenate([np.full(t.num_rows, k, np.int32) for k, t in parts])
        cat = lambda name, f: np.concatenate([f(t, name) for _, t in parts])  # noqa: E731
        plain = lambda t, name: t.column(name).to_numpy(zero_copy_only=False)  # noqa: E731
        self.shard = cat("shard", plain)
        self.offset = cat("offset", plain)
        self.length = cat("length", plain)
        self.subject = cat("subject", plain)
        self.trial = cat("trial", plain)
        self.camera = cat("camera", plain)
        self.frame = cat("frame", plain)
        self.used = cat("used", plain).astype(bool)  # D3KE's moving frames
        self.box = np.column_stack([cat(c, plain) for c in ("box_x0_px", "box_y0_px", "box_size_px")])
        self.labels = {name: cat(name, _column) for name in LABEL_COLUMNS}
        # each frame's camera rotation (world -> camera), for labels in the camera frame
        rotations = {}
        for k, folder in enumerate(self.folders):
            for cam, facts in json.loads((folder / CAMERAS_NAME).read_text()).items():
                rotations[(k, cam)] = np.asarray(facts["R"], np.float32)
        self.camera_R = np.stack([rotations[(int(k), str(c))] for k, c in zip(self.folder_index, self.camera)]) \
            if len(self.folder_index) else np.zeros((0, 3, 3), np.float32)
        self._files: dict[tuple[int, str], int] = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.offset)

    def camera_model(self, i: int) -> Camera:
        facts = json.loads((self.folders[self.folder_index[i]] / CAMERAS_NAME).read_text())[self.camera[i]]
        return Camera(facts["name"], facts["width_px"], facts["height_px"], np.array(facts["K"]),
                      np.array(facts["R"]), np.array(facts["t_m"]), np.array(facts["dist"]), facts["fps"])

    def jpeg_bytes(self, i: int) -> bytes:
        if self._pid != os.getpid():  # a new worker process: its own file handles
            self._files, self._pid = {}, os.getpid()
        key = (int(self.folder_index[i]), str(self.shard[i]))
        fd = self._files.get(key)
        if fd is None:
            fd = self._files[key] = os.open(self.folders[key[0]] / key[1], os.O_RDONLY)
        data = os.pread(fd, int(self.length[i]), int(self.offset[i]))
        if len(data) != self.length[i]:
            raise D3keError(f"{self.folders[key[0]] / key[1]}: shard is shorter than its index says: "
                            f"materialize frames for {self.subject[i]} again")
        return data

    def image(self, i: int) -> torch.Tensor:
        """(3, S, S) uint8."""
        # TorchCodec: torchvision.io's decoders are deprecated since 0.29 in its favour (same libjpeg-turbo
        # pixels and speed; its image decoders do not need FFmpeg)
        from torchcodec.decoders import decode_jpeg

        return decode_jpeg(self.jpeg_bytes(i))

    def __getitem__(self, i: int) -> dict:
        item = {name: torch.from_numpy(values[i]) for name, values in self.labels.items()}
        item["image"] = self.image(i)
        item["camera_R"] = torch.from_numpy(self.camera_R[i])
        item["index"] = i
        return item

    def __del__(self):
        for fd in getattr(self, "_files", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass
