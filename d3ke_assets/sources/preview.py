"""A contact sheet of a subject's videos, with projected markers where they are known.

One look tells whether cameras, calibration and motion capture line up, which
no table does.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from d3ke_assets.media.video import decode_frames


def pick_frames(video: str | Path, indices: list[int]) -> dict[int, np.ndarray]:
    wanted = set(indices)
    out: dict[int, np.ndarray] = {}
    for i, frame in enumerate(decode_frames(video)):
        if i in wanted:
            out[i] = frame
            if len(out) == len(wanted):
                break
    return out


def contact_sheet(rows: list[list[tuple[np.ndarray, np.ndarray | None, str]]], tile_height_px: int = 150) -> bytes:
    """JPEG of a grid of (frame, marker pixels (N, 2) or None, caption) tiles."""
    from PIL import Image, ImageDraw

    tiles = []
    for row in rows:
        row_imgs = []
        for frame, uv, caption in row:
            scale = tile_height_px / frame.shape[0]
            img = Image.fromarray(frame).resize((round(frame.shape[1] * scale), tile_height_px))
            draw = ImageDraw.Draw(img)
            if uv is not None:
                for u, v in uv * scale:
                    draw.ellipse([u - 2, v - 2, u + 2, v + 2], fill=(255, 255, 0), outline=(0, 0, 0))
            draw.rectangle([0, 0, 7 * len(caption) + 6, 14], fill=(0, 0, 0))
            draw.text((3, 1), caption, fill=(255, 255, 255))
            row_imgs.append(img)
        tiles.append(row_imgs)
    width = max(sum(i.width for i in row) for row in tiles)
    sheet = Image.new("RGB", (width, tile_height_px * len(tiles)), (30, 30, 30))
    for r, row in enumerate(tiles):
        x = 0
        for img in row:
            sheet.paste(img, (x, r * tile_height_px))
            x += img.width
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
