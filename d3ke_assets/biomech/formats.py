"""OpenSim text formats: `.trc` (marker trajectories) and `.mot`/`.sto` (coordinates).

Writers follow OpenSim's own conventions so OpenSim's readers accept the files:
`.trc` positions in millimetres by default; `.mot` rotations in degrees with
`inDegrees=yes`, translations in metres.

Readers follow OpenSim 4.6's readers, so a user's file means here what it means
in OpenSim: `.trc` units as `OpenSim::Units` spells them, and the degree rule of
`OpenSim::Storage` for `.mot`/`.sto` in both header styles (see `read_mot`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from d3ke_assets.errors import D3keError
from d3ke_assets.storage import atomic_write_text


@dataclass
class MarkerTrajectories:
    """Marker positions over time, in metres, shape (frames, markers, 3)."""

    marker_names: list[str]
    time_s: np.ndarray
    positions_m: np.ndarray
    rate_hz: float


# Length units of a .trc header as OpenSim::Units parses them (all lower or all upper case, measured
# on OpenSim 4.6: "Meters", "Mm" or "in" are unknown and its InverseKinematicsTool refuses the file).
TRC_UNITS_M = {spelling: metres for names, metres in ((("m", "meters"), 1.0), (("cm", "centimeters"), 0.01),
                                                      (("mm", "millimeters"), 0.001))
               for name in names for spelling in (name, name.upper())}


def write_trc(path: str | Path, traj: MarkerTrajectories, units: str = "mm") -> None:
    scale = {"mm": 1000.0, "m": 1.0}[units]
    n_frames, n_markers, _ = traj.positions_m.shape
    out = io.StringIO()
    out.write(f"PathFileType\t4\t(X/Y/Z)\t{Path(path).name}\n")
    out.write("DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames\n")
    r = f"{traj.rate_hz:.2f}"
    out.write(f"{r}\t{r}\t{n_frames}\t{n_markers}\t{units}\t{r}\t1\t{n_frames}\n")
    out.write("Frame#\tTime\t" + "\t".join(f"{m}\t\t" for m in traj.marker_names).rstrip("\t") + "\n")
    out.write("\t\t" + "\t".join(f"X{i + 1}\tY{i + 1}\tZ{i + 1}" for i in range(n_markers)) + "\n\n")
    values = traj.positions_m.reshape(n_frames, -1) * scale
    table = np.column_stack([np.arange(1, n_frames + 1), traj.time_s, values])
    body = io.StringIO()
    np.savetxt(body, table, fmt=["%d", "%.6f"] + ["%.5f"] * values.shape[1], delimiter="\t")
    # gaps are empty cells in a .trc (numpy writes "nan")
    out.write(body.getvalue().replace("\tnan", "\t"))
    atomic_write_text(path, out.getvalue())


def read_trc(path: str | Path) -> MarkerTrajectories:
    """Read a `.trc` file into metres. Empty cells (gaps) become NaN."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise D3keError(f"{path}: cannot read marker file ({exc.strerror})") from None
    try:
        header_keys = lines[1].split("\t")
        header_vals = lines[2].split("\t")
        meta = dict(zip(header_keys, header_vals))
        units = meta["Units"].strip()
        rate = float(meta["DataRate"])
        names = [n for n in lines[3].split("\t")[2:] if n.strip()]
    except (IndexError, KeyError, ValueError):
        raise D3keError(f"{path}: not a .trc file (header lines 2-4 are malformed)") from None
    if units not in TRC_UNITS_M:
        raise D3keError(f"{path}: Units {units!r} in the header is not a length OpenSim reads (its IK stops on "
                        f"'unspecified units'): write mm, cm or m")
    scale = TRC_UNITS_M[units]
    width = 2 + 3 * len(names)
    data = "\n".join(ln for ln in lines[5:] if ln.strip())
    if not data:
        raise D3keError(f"{path}: the file has no frames")
    try:  # empty cells (gaps) become NaN
        table = pd.read_csv(io.StringIO(data), sep="\t", header=None, usecols=range(min(width, data.split("\n")[0].count("\t") + 1)),
                            dtype=float, engine="c")
    except ValueError:
        raise D3keError(_first_bad_line(path, lines)) from None
    arr = table.to_numpy()
    if arr.shape[1] < width:
        arr = np.hstack([arr, np.full((arr.shape[0], width - arr.shape[1]), np.nan)])
    n = arr.shape[0]
    return MarkerTrajectories(names, arr[:, 1], arr[:, 2:width].reshape(n, len(names), 3) * scale, rate)


def _first_bad_line(path: Path, lines: list[str]) -> str:
    """Slow path, only after the fast parser failed: which line is not numbers."""
    for number, ln in enumerate(lines[5:], start=6):
        for cell in ln.split("\t"):
            try:
                float(cell) if cell.strip() else None
            except ValueError:
                return f"{path}: line {number} is not numbers ({cell.strip()!r})"
    return f"{path}: the marker table is not numbers"


def write_mot(path: str | Path, time_s: np.ndarray, names: list[str], values: np.ndarray,
              rotational: list[bool], title: str = "Coordinates") -> None:
    """Write coordinates (radians / metres in `values`) as an OpenSim `.mot` in degrees."""
    values = np.array(values, float, copy=True)
    rot = np.asarray(rotational, bool)
    values[:, rot] = np.degrees(values[:, rot])
    out = io.StringIO()
    out.write(f"{title}\nversion=1\nnRows={len(time_s)}\nnColumns={len(names) + 1}\ninDegrees=yes\n")
    out.write("\nUnits are S.I. units (second, meters, Newtons, ...)\nAngles are in degrees.\n\nendheader\n")
    out.write("time\t" + "\t".join(names) + "\n")
    for t, row in zip(time_s, values):
        out.write(f"{t:.8f}\t" + "\t".join(f"{v:.8f}" for v in row) + "\n")
    atomic_write_text(path, out.getvalue())


def read_mot(path: str | Path) -> tuple[np.ndarray, list[str], np.ndarray, bool]:
    """Return (time, column names, values as written, in_degrees).

    `in_degrees` follows OpenSim's Storage: a header with a `version=` line of 1 or more
    says degrees only with `inDegrees=yes`; an older header (no version line: OpenSim's
    `nRows=`/`nColumns=` or SIMM's `datarows`/`datacolumns`) always holds degrees, whatever
    its inDegrees line says.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise D3keError(f"{path}: cannot read coordinates file ({exc.strerror})") from None
    version, sized, in_degrees_line = None, False, False
    for i, ln in enumerate(lines):
        key, _, value = ln.partition("=")
        key = key.strip()
        if ln.strip().lower() == "endheader":
            header_end = i
            break
        if key == "version":
            try:
                version = int(value.strip())
            except ValueError:
                raise D3keError(f"{path}: line {i + 1} {ln.strip()!r} is not a whole version number") from None
        elif key == "inDegrees":  # Storage matches this key's case and reads any value starting with y as yes
            in_degrees_line = value.strip().lower().startswith("y")
        elif key == "nRows" or ln.split()[:1] == ["datarows"]:
            sized = True
    else:
        raise D3keError(f"{path}: no 'endheader' line: not an OpenSim .mot/.sto file")
    if version is None and not sized:
        raise D3keError(f"{path}: the header has neither a 'version=' nor an 'nRows='/'datarows' line, so OpenSim "
                        f"cannot read it: add 'version=1' and 'inDegrees=yes' (or 'no') above 'endheader'")
    in_degrees = in_degrees_line if version is not None and version >= 1 else True
    label_line = lines[header_end + 1] if header_end + 1 < len(lines) else ""
    cols = [c.strip() for c in (label_line.split("\t") if "\t" in label_line else label_line.split())]
    try:
        data = np.loadtxt(io.StringIO("\n".join(lines[header_end + 2:])), ndmin=2)
    except ValueError as exc:
        raise D3keError(f"{path}: the table after 'endheader' is not numbers ({exc})") from None
    if data.size == 0:
        raise D3keError(f"{path}: no rows after the column names")
    if data.shape[1] != len(cols):
        raise D3keError(f"{path}: {len(cols)} column names but {data.shape[1]} columns of data")
    return data[:, 0], cols[1:], data[:, 1:], in_degrees


def write_sto(path: str | Path, time_s: np.ndarray, names: list[str], values: np.ndarray,
              title: str = "Table") -> None:
    """An OpenSim `.sto` table of plain numbers (no degree conversion: `inDegrees=no`)."""
    out = io.StringIO()
    out.write(f"{title}\nversion=1\nnRows={len(time_s)}\nnColumns={len(names) + 1}\ninDegrees=no\nendheader\n")
    out.write("time\t" + "\t".join(names) + "\n")
    for t, row in zip(time_s, np.asarray(values, float)):
        out.write(f"{t:.8f}\t" + "\t".join(f"{v:.9g}" for v in row) + "\n")
    atomic_write_text(path, out.getvalue())
