"""What `d3ke ik` and `d3ke fk` do, as plain functions (the CLI only parses arguments)."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from d3ke_assets.biomech import ground_truth as gt
from d3ke_assets.biomech import opensim_pipeline as op
from d3ke_assets.biomech.formats import read_mot, read_trc, write_sto
from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.biomech.torch_ik import read_ik_task_set
from d3ke_assets.errors import D3keError
from d3ke_assets.settings import ik_backend_name

DEFAULT_MASS_KG = 75.0


def _task_weights(setup: Path, section: str | None) -> dict[str, float]:
    root = ET.parse(setup).getroot()
    scope = root.find(f".//{section}") if section else root
    weights = {}
    for task in (scope.iter("IKMarkerTask") if scope is not None else []):
        apply = (task.findtext("apply") or "true").strip().lower() == "true"
        weights[task.get("name")] = float(task.findtext("weight") or 1.0) if apply else 0.0
    return weights


@dataclass
class IkCommandResult:
    scaled_model: Path
    mot: Path
    errors: Path
    n_frames: int
    rms_error_m: float
    ik_seconds: float


def _copy_into(src: Path, workdir: Path) -> str:
    if not src.is_file():
        raise D3keError(f"{src}: file does not exist")
    dst = workdir / src.name
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    return src.name


def _scale(model: Path, static: Path, out: Path, mass_kg: float | None, scale_setup: Path | None,
           layer: SkeletalModel) -> tuple[Path, list[str]]:
    """OpenSim's ScaleTool on `static` in `out`: (the scaled model, its markers)."""
    static_name = _copy_into(static, out)
    static_trc = read_trc(out / static_name)
    model_markers = layer.marker_names
    if scale_setup is not None:
        setup = op.adapt_scale_setup(scale_setup, out, str(model), static_name, mass_kg)
        # markers of a separate marker set file join the model's before scaling, as in OpenSim's GenericModelMaker
        model_markers = [*model_markers, *(m for m in op.scale_setup_marker_set(setup) if m not in model_markers)]
        weights = _task_weights(setup, "MarkerPlacer") or gt.project_marker_weights(model_markers)
        time_range = op.setup_time_range(setup, "MarkerPlacer") or op.setup_time_range(setup, "ModelScaler")
    else:
        common = [m for m in model_markers if m in static_trc.marker_names]
        measurements = [ms for ms in gt.PROJECT_MEASUREMENTS
                        if all(a in common and b in common for pair in ms.marker_pairs for a, b in [pair])]
        if not measurements:
            raise D3keError(f"{static}: no marker pair of the project's scale measurements is in both the file "
                            f"and {model.name}: give --scale-setup")
        weights = gt.project_marker_weights(common)
        time_range = (float(static_trc.time_s[0]), float(static_trc.time_s[-1]))
        setup = op.write_scale_setup(out / op.SCALE_SETUP, str(model), static_name, time_range,
                                     mass_kg or DEFAULT_MASS_KG, measurements, weights, name=model.stem)
    op.check_markers(static_trc, out / static_name, model_markers, weights, time_range)
    return op.run_scale(setup).model_path, model_markers


def ik_command(model: Path, static: Path | None, motion: Path, out: Path, mass_kg: float | None = None,
               scale_setup: Path | None = None, ik_setup: Path | None = None,
               backend: str = "opensim") -> IkCommandResult:
    """Scale `model` on `static`, then IK on `motion`; all setup and result files land in `out`.
    Without `static`, `model` is taken as already scaled: IK only.  `backend` solves the IK
    (`settings.IK_BACKENDS`); the scaling is OpenSim's ScaleTool either way.

    Relative paths are taken from the current folder, as typed; they are made absolute here
    because OpenSim's tools resolve a setup's file names from the setup's own folder."""
    ik_backend_name(backend)
    if static is None and (scale_setup is not None or mass_kg is not None):
        raise D3keError("--scale-setup and --mass scale the model on a static trial: give --static too "
                        "(without it the model is taken as already scaled)")
    model, motion, out = (Path(p).resolve() for p in (model, motion, out))
    static = Path(static).resolve() if static is not None else None
    scale_setup, ik_setup = (Path(p).resolve() if p is not None else None for p in (scale_setup, ik_setup))
    layer = SkeletalModel.from_osim(model, torch.float64)  # also a clear error for a model that does not load
    out.mkdir(parents=True, exist_ok=True)
    motion_name = _copy_into(Path(motion), out)
    motion_trc = read_trc(out / motion_name)
    model_markers = layer.marker_names
    if static is None:
        ik_model = out / _copy_into(model, out)
    else:
        ik_model, model_markers = _scale(model, static, out, mass_kg, scale_setup, layer)

    mot_name = f"{Path(motion_name).stem}.mot"
    if ik_setup is not None:
        ik_time = op.setup_time_range(ik_setup, "InverseKinematicsTool")
        setup = op.adapt_ik_setup(ik_setup, out, ik_model.name, motion_name, mot_name, ik_time)
        # OpenSim 4 tracks only the markers of applied tasks; the task set may be a file of its own
        ik_weights = read_ik_task_set(setup, markers_only=True).marker_weights or \
            gt.project_marker_weights(model_markers)
    else:
        ik_time = (float(motion_trc.time_s[0]), float(motion_trc.time_s[-1]))
        ik_weights = gt.project_marker_weights([m for m in model_markers if m in motion_trc.marker_names])
        setup = op.write_ik_setup(out / op.IK_SETUP, ik_model.name, motion_name, ik_time, mot_name, ik_weights)
    op.check_markers(motion_trc, out / motion_name, model_markers, ik_weights, ik_time)
    ik = op.run_ik(setup, backend)

    # Marker errors at each IK frame, from the scaled model's kinematics.
    scaled = SkeletalModel.from_osim(ik_model, torch.float64)
    q = np.stack([ik.values[:, ik.coordinate_names.index(n)] if n in ik.coordinate_names
                  else np.full(len(ik.time_s), c.default_value)
                  for n, c in zip(scaled.coordinate_names, scaled.spec.coordinates)], 1)
    model_pos = scaled(torch.tensor(q)).markers_m.numpy()
    used = [m for m, w in ik_weights.items() if w > 0 and m in scaled.marker_names]
    rows = np.searchsorted(motion_trc.time_s, ik.time_s - 1e-9)
    rows = np.clip(rows, 0, len(motion_trc.time_s) - 1)
    measured = motion_trc.positions_m[rows][:, [motion_trc.marker_names.index(m) for m in used]]
    err = np.linalg.norm(model_pos[:, [scaled.marker_names.index(m) for m in used]] - measured, axis=-1)
    rms = np.sqrt(np.mean(err ** 2, axis=1))
    errors = out / f"{Path(motion_name).stem}_ik_marker_errors.sto"
    write_sto(errors, ik.time_s, [*used, "marker_error_RMS", "marker_error_max"],
              np.column_stack([err, rms, err.max(axis=1)]), title="IK marker errors (m)")
    return IkCommandResult(ik_model, ik.mot_path, errors, len(ik.time_s), float(np.sqrt(np.mean(err ** 2))),
                           ik.seconds)


def fk_command(model: Path, motion: Path, out: Path) -> tuple[int, int, list[str]]:
    """Marker positions (m) from a `.mot` with the skeletal layer, as an OpenSim `.sto`.

    Returns (frames, markers, coordinates missing from the motion, which stay at their default)."""
    layer = SkeletalModel.from_osim(model, torch.float64)
    t, cols, values, in_degrees = read_mot(motion)
    q = np.empty((len(t), len(layer.coordinate_names)))
    missing = []
    for i, (name, spec) in enumerate(zip(layer.coordinate_names, layer.spec.coordinates)):
        if name in cols:
            v = values[:, cols.index(name)]
            q[:, i] = np.radians(v) if (in_degrees and spec.rotational) else v
        else:
            q[:, i] = spec.default_value
            missing.append(name)
    if len(missing) == len(layer.coordinate_names):
        raise D3keError(f"{motion}: none of the columns are coordinates of {Path(model).name}")
    markers = layer(torch.tensor(q)).markers_m.numpy()
    names = [f"{m}_t{a}" for m in layer.marker_names for a in "xyz"]
    write_sto(out, t, names, markers.reshape(len(t), -1), title="Model marker locations (m)")
    return len(t), len(layer.marker_names), missing
