"""Calibrated pinhole cameras (OpenCV conventions) and their JSON files.

World frame = OpenSim ground (x anterior, y up, z right), metres.  Camera frame:
x right, y down, z forward; `x_cam = R @ x_world + t`.  Distortion uses
OpenCV's (k1, k2, p1, p2, k3).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from d3ke_assets.errors import D3keError
from d3ke_assets.storage import atomic_write_json


@dataclass
class Camera:
    name: str
    width_px: int
    height_px: int
    K: np.ndarray  # 3x3 intrinsics
    R: np.ndarray  # 3x3 world -> camera
    t_m: np.ndarray  # 3, world -> camera translation
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))  # k1 k2 p1 p2 k3
    fps: float = 30.0

    @property
    def centre_m(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return -self.R.T @ self.t_m

    def to_camera(self, points_world: np.ndarray) -> np.ndarray:
        return points_world @ self.R.T + self.t_m

    def project(self, points_world: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (..., 2) pixel coordinates (u right, v down); NaN behind the camera."""
        pc = self.to_camera(np.asarray(points_world, float))
        z = np.where(pc[..., 2] > 0, pc[..., 2], np.nan)
        x = pc[..., 0] / z
        y = pc[..., 1] / z
        k1, k2, p1, p2, k3 = self.dist
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 ** 3
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        u = self.K[0, 0] * xd + self.K[0, 1] * yd + self.K[0, 2]
        v = self.K[1, 1] * yd + self.K[1, 2]
        return np.stack([u, v], axis=-1)

    def pixel_rays(self) -> np.ndarray:
        """Unit ray direction in world for every pixel centre, (H, W, 3). No distortion."""
        if np.any(self.dist != 0):
            raise D3keError(f"camera {self.name}: rendering supports distortion-free cameras only")
        # OpenCV convention: the centre of pixel column i is at u = i
        u, v = np.meshgrid(np.arange(self.width_px), np.arange(self.height_px))
        y = (v - self.K[1, 2]) / self.K[1, 1]
        x = (u - self.K[0, 2] - self.K[0, 1] * y) / self.K[0, 0]
        d_cam = np.stack([x, y, np.ones_like(x)], axis=-1)
        d = d_cam @ self.R  # R.T @ d for each pixel
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def to_json_dict(self) -> dict:
        d = asdict(self)
        for k in ("K", "R", "t_m", "dist"):
            d[k] = np.asarray(getattr(self, k)).tolist()
        d["convention"] = "OpenCV pinhole; x_cam = R @ x_world + t_m; world = OpenSim ground (y up), metres"
        return d

    def write_json(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_json_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> "Camera":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            cam = cls(d["name"], int(d["width_px"]), int(d["height_px"]), np.array(d["K"], float),
                      np.array(d["R"], float), np.array(d["t_m"], float), np.array(d["dist"], float),
                      float(d.get("fps", 30.0)))
        except FileNotFoundError:
            raise D3keError(f"{path}: camera calibration file is missing") from None
        except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
            raise D3keError(f"{path}: not a valid camera file ({exc})") from None
        if cam.K.shape != (3, 3) or cam.R.shape != (3, 3) or cam.t_m.shape != (3,) or cam.dist.shape != (5,):
            raise D3keError(f"{path}: K and R must be 3x3, t_m 3 values and dist 5 (k1 k2 p1 p2 k3)")
        return cam


def look_at_camera(name: str, centre_m, target_m, width_px: int, height_px: int,
                   vertical_fov_deg: float, fps: float = 30.0) -> Camera:
    """A camera at `centre_m` looking at `target_m` with the world's +y up in the image."""
    c = np.asarray(centre_m, float)
    forward = np.asarray(target_m, float) - c
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    f = (height_px / 2) / np.tan(np.radians(vertical_fov_deg) / 2)
    K = np.array([[f, 0, (width_px - 1) / 2], [0, f, (height_px - 1) / 2], [0, 0, 1.0]])
    return Camera(name, width_px, height_px, K, R, -R @ c, np.zeros(5), fps)


def camera_from_movi(name: str, intrinsics_npz: str | Path, extrinsics_npz: str | Path,
                     width_px: int = 800, height_px: int = 600) -> Camera:
    """BML-MoVi's `cameraParams_PGn.npz` + `Extrinsics_PGn.npz` (MATLAB conventions).

    MATLAB's camera calibrator stores the transposed intrinsic matrix and row-vector
    extrinsics (`x_cam_row = x_world_row @ R + t`) in millimetres.  MoVi's world
    frame is z-up; OpenSim's ground is y-up, so world points are rotated first.
    """
    try:
        intr = np.load(intrinsics_npz)
        extr = np.load(extrinsics_npz)
        K = np.asarray(intr["IntrinsicMatrix"], float).T
        radial = np.ravel(intr["RadialDistortion"]) if "RadialDistortion" in intr else np.zeros(2)
        tang = np.ravel(intr["TangentialDistortion"]) if "TangentialDistortion" in intr else np.zeros(2)
        R_m = np.asarray(extr["rotationMatrix"], float).T
        t_m = np.ravel(extr["translationVector"]).astype(float) / 1000.0
    except FileNotFoundError as exc:
        raise D3keError(f"{exc.filename}: camera parameter file is missing") from None
    except Exception as exc:  # numpy raises several types for damaged or foreign files
        raise D3keError(f"{intrinsics_npz} / {extrinsics_npz}: not readable as MoVi camera parameters "
                        f"({type(exc).__name__}: {exc}); unpack 'Camera Parameters.tar' again") from None
    # MoVi world (x, y, z-up) -> OpenSim ground (x, z-up as y, -y as z)
    zup_to_yup = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    R = R_m @ zup_to_yup.T
    dist = np.array([radial[0] if len(radial) > 0 else 0, radial[1] if len(radial) > 1 else 0,
                     tang[0], tang[1], radial[2] if len(radial) > 2 else 0])
    K[0, 2] -= 1.0  # MATLAB pixel centres are 1-based
    K[1, 2] -= 1.0
    return Camera(name, width_px, height_px, K, R, t_m, dist, 30.0)
