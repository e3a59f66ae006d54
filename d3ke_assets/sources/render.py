"""Render the scaled model's segment geometry into camera images.

Ray casting against the model's ellipsoids (exact, per pixel, only inside each
ellipsoid's projected bounding box), Lambert shading from one light, a
z-buffer, over a per-subject textured room (tiled floor, panelled wall, fractal
noise), plus mild sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from d3ke_assets.media.camera import Camera

LIGHT_DIR = np.array([0.4, 0.8, 0.45]) / np.linalg.norm([0.4, 0.8, 0.45])


@dataclass
class BodyGeometry:
    """Ellipsoids of one subject in body frames, already scaled."""

    body_index: np.ndarray  # (E,) index into the body list of the kinematics
    centres_m: np.ndarray  # (E, 3) in the body frame
    radii_m: np.ndarray  # (E, 3) along the body axes
    colours: np.ndarray  # (E, 3) RGB in 0..1


def _fractal_noise(rng: np.random.Generator, h: int, w: int, octaves: int = 5) -> np.ndarray:
    """Smooth value noise in [-1, 1] from bilinearly upsampled random grids."""
    out = np.zeros((h, w))
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 2 ** (o + 2)
        grid = rng.uniform(-1, 1, (cells + 1, cells + 1))
        ys = np.linspace(0, cells, h, endpoint=False)
        xs = np.linspace(0, cells, w, endpoint=False)
        y0, x0 = ys.astype(int), xs.astype(int)
        fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
        g00 = grid[y0][:, x0]
        g01 = grid[y0][:, x0 + 1]
        g10 = grid[y0 + 1][:, x0]
        g11 = grid[y0 + 1][:, x0 + 1]
        out += amp * ((g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy)
        total += amp
        amp *= 0.55
    return out / total


def render_background(camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """A room seen by `camera`: tiled floor (y = 0) and a panelled back wall. float RGB 0..1."""
    h, w = camera.height_px, camera.width_px
    d = camera.pixel_rays()
    c = camera.centre_m
    floor_rgb = rng.uniform(0.25, 0.65, 3)
    grout_rgb = floor_rgb * rng.uniform(0.4, 0.7)
    wall_rgb = rng.uniform(0.35, 0.8, 3)
    tile_m = rng.uniform(0.3, 0.6)
    panel_m = rng.uniform(0.4, 1.0)
    # wall plane: perpendicular to the camera's horizontal view direction, 3 m behind the centre
    view = camera.R[2].copy()
    view[1] = 0
    view /= np.linalg.norm(view)
    wall_point = view * 3.0
    # distance along each ray to the floor and to the wall (inf where the ray never meets it)
    t_floor = np.full((h, w), np.inf)
    down = d[..., 1] < -1e-9
    t_floor[down] = -c[1] / d[..., 1][down]
    t_wall = np.full((h, w), np.inf)
    towards = d @ view > 1e-9
    t_wall[towards] = ((wall_point - c) @ view) / (d @ view)[towards]
    on_floor = t_floor < t_wall
    t_hit = np.where(on_floor, t_floor, t_wall)
    p = c + d * t_hit[..., None]
    # floor: tiles with grout lines
    fx, fz = p[..., 0] / tile_m, p[..., 2] / tile_m
    grout = (np.abs(fx - np.round(fx)) < 0.03) | (np.abs(fz - np.round(fz)) < 0.03)
    checker = ((np.floor(fx) + np.floor(fz)) % 2)[..., None] * 0.08
    floor = np.where(grout[..., None], grout_rgb, floor_rgb * (0.92 + checker))
    # wall: vertical panels, a skirting board, darker towards the ceiling
    lateral = p @ np.cross([0.0, 1.0, 0.0], view)
    panel_edge = np.abs(lateral / panel_m - np.round(lateral / panel_m)) < 0.02
    wall = wall_rgb * (1.0 - 0.15 * np.clip(p[..., 1] / 3.0, 0, 1))[..., None]
    wall = np.where(panel_edge[..., None], wall * 0.75, wall)
    wall = np.where((p[..., 1] < 0.12)[..., None], wall_rgb * 0.5, wall)
    img = np.where(on_floor[..., None], floor, wall)
    # distance fall-off and fractal noise for structure at every scale
    img = img * np.clip(1.15 - 0.04 * t_hit, 0.6, 1.1)[..., None]
    noise = _fractal_noise(rng, h, w)[..., None]
    tint = rng.uniform(-1, 1, 3) * 0.04
    img = img * (1 + 0.22 * noise) + tint * noise
    return np.clip(img, 0, 1)


def render_body(camera: Camera, rays: np.ndarray, geometry: BodyGeometry, rotations: np.ndarray,
                origins_m: np.ndarray, image: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
    """Draw the ellipsoids into `image` (float RGB, modified in place); returns the body mask.

    `rotations` (B, 3, 3) body -> world and `origins_m` (B, 3): body poses in world.
    """
    h, w = camera.height_px, camera.width_px
    if depth is None:
        depth = np.full((h, w), np.inf)
    mask = np.zeros((h, w), bool)
    cam_c = camera.centre_m
    corners_unit = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    for e in range(len(geometry.body_index)):
        b = geometry.body_index[e]
        Rb = rotations[b]
        centre = Rb @ geometry.centres_m[e] + origins_m[b]
        radii = geometry.radii_m[e]
        corners = centre + (corners_unit * radii) @ Rb.T
        pc = camera.to_camera(corners)
        if np.any(pc[:, 2] <= 0.05):
            continue  # behind or too close to the camera
        uv = camera.project(corners)
        u0, v0 = np.floor(uv.min(0)).astype(int)
        u1, v1 = np.ceil(uv.max(0)).astype(int)
        u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, w), min(v1, h)
        if u0 >= u1 or v0 >= v1:
            continue
        d = rays[v0:v1, u0:u1]
        # into the ellipsoid's unit-sphere frame
        o = (Rb.T @ (cam_c - centre)) / radii
        dl = (d @ Rb) / radii
        a = np.einsum("...i,...i", dl, dl)
        bq = 2 * dl @ o
        cq = o @ o - 1.0
        disc = bq * bq - 4 * a * cq
        hit = disc > 0
        if not hit.any():
            continue
        t = (-bq - np.sqrt(np.where(hit, disc, 0))) / (2 * a)
        zbuf = depth[v0:v1, u0:u1]
        hit &= (t > 0) & (t < zbuf)
        if not hit.any():
            continue
        p_local = o + t[..., None] * dl  # on the unit sphere
        normal = (p_local / radii) @ Rb.T
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        lambert = np.clip(normal @ LIGHT_DIR, 0, 1)
        shade = (0.35 + 0.65 * lambert)[..., None] * geometry.colours[e]
        region = image[v0:v1, u0:u1]
        region[hit] = shade[hit]
        zbuf[hit] = t[hit]
        mask[v0:v1, u0:u1] |= hit
    return mask


def add_sensor_noise(image: np.ndarray, rng: np.random.Generator, sigma: float = 0.012) -> np.ndarray:
    """Float RGB -> uint8 with Gaussian read noise."""
    noisy = image + rng.normal(0, sigma, image.shape)
    return np.clip(noisy * 255 + 0.5, 0, 255).astype(np.uint8)
