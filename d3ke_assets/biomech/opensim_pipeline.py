"""OpenSim scaling and inverse kinematics, run from setup files a biomechanist can reopen.

Every tool run gets its own working folder holding its setup XML, its inputs
(or the names of files beside it) and its outputs, with paths relative to that
folder: the folder can be moved, rerun in the OpenSim GUI, and several run in
parallel without sharing anything.  User setup files are followed (marker
weights, measurement sets, time ranges, accuracy); only the file names are
rewritten to point at this run's files.
"""

from __future__ import annotations

import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from d3ke_assets.biomech.formats import MarkerTrajectories, read_mot, write_trc
from d3ke_assets.biomech.opensim_tools import load_model, native_stdout_to_stderr, opensim_module
from d3ke_assets.errors import D3keError
from d3ke_assets.settings import ik_backend_name

SCALE_SETUP = "Setup_Scale.xml"
IK_SETUP = "Setup_IK.xml"
SCALED_MODEL = "scaled.osim"
SCALE_FACTORS = "scale_factors.xml"
UNPLACED_MODEL = "scaled_unplaced.osim"


@dataclass
class Measurement:
    """Scale `bodies` along `axes` by the mean distance ratio of these marker pairs."""

    name: str
    marker_pairs: list[tuple[str, str]]
    bodies: list[str]
    axes: str  # e.g. "X Y Z" or "Y"


@dataclass
class ScaleResult:
    model_path: Path  # scaled and markers placed
    scale_factors: dict[str, tuple[float, float, float]]
    seconds: float


@dataclass
class IkResult:
    mot_path: Path
    time_s: np.ndarray
    coordinate_names: list[str]
    values: np.ndarray  # radians / metres
    seconds: float  # inside OpenSim's InverseKinematicsTool.run


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrib) -> ET.Element:
    e = ET.SubElement(parent, tag, attrib)
    if text is not None:
        e.text = text
    return e


def _task_set(parent: ET.Element, name: str, weights: dict[str, float],
              coordinate_weights: dict[str, float] | None = None) -> None:
    tasks = _el(_el(parent, "IKTaskSet", name=name), "objects")
    for marker, w in weights.items():
        t = _el(tasks, "IKMarkerTask", name=marker)
        _el(t, "apply", "true" if w > 0 else "false")  # listed untracked: OpenSim weighs unlisted markers 1
        _el(t, "weight", f"{w:g}")
    for coordinate, w in (coordinate_weights or {}).items():
        t = _el(tasks, "IKCoordinateTask", name=coordinate)
        _el(t, "apply", "true")
        _el(t, "weight", f"{w:g}")
        _el(t, "value_type", "from_file")


def write_scale_setup(path: Path, generic_model: str, static_trc: str, time_range: tuple[float, float],
                      mass_kg: float, measurements: list[Measurement], marker_weights: dict[str, float],
                      name: str = "subject", place_markers: bool = True, coordinate_file: str | None = None,
                      coordinate_weights: dict[str, float] | None = None) -> Path:
    """An OpenSim ScaleTool setup: measurement-based scaling, then marker placement on the static trial.

    Without marker placement the ModelScaler writes `UNPLACED_MODEL`.  With a `coordinate_file`
    (a static-pose `.mot`), marker placement is guided towards that pose by coordinate tasks.
    """
    root = ET.Element("OpenSimDocument", Version="40000")
    tool = _el(root, "ScaleTool", name=name)
    _el(tool, "mass", f"{mass_kg:.4f}")
    gmm = _el(tool, "GenericModelMaker")
    _el(gmm, "model_file", generic_model)
    _el(gmm, "marker_set_file", "Unassigned")
    scaler = _el(tool, "ModelScaler")
    _el(scaler, "apply", "true")
    _el(scaler, "scaling_order", "measurements")
    mset = _el(_el(scaler, "MeasurementSet", name="measurements"), "objects")
    for m in measurements:
        me = _el(mset, "Measurement", name=m.name)
        _el(me, "apply", "true")
        pairs = _el(_el(me, "MarkerPairSet"), "objects")
        for a, b in m.marker_pairs:
            _el(_el(pairs, "MarkerPair"), "markers", f"{a} {b}")
        scales = _el(_el(me, "BodyScaleSet"), "objects")
        for body in m.bodies:
            _el(_el(scales, "BodyScale", name=body), "axes", m.axes)
    _el(scaler, "marker_file", static_trc)
    _el(scaler, "time_range", f"{time_range[0]:.6f} {time_range[1]:.6f}")
    _el(scaler, "preserve_mass_distribution", "true")
    _el(scaler, "output_scale_file", SCALE_FACTORS)
    if not place_markers:
        _el(scaler, "output_model_file", UNPLACED_MODEL)
    placer = _el(tool, "MarkerPlacer")
    _el(placer, "apply", "true" if place_markers else "false")
    _task_set(placer, "static_tasks", marker_weights, coordinate_weights if coordinate_file else None)
    _el(placer, "marker_file", static_trc)
    if coordinate_file:
        _el(placer, "coordinate_file", coordinate_file)
    _el(placer, "time_range", f"{time_range[0]:.6f} {time_range[1]:.6f}")
    _el(placer, "output_model_file", SCALED_MODEL)
    _el(placer, "max_marker_movement", "-1")
    ET.indent(root)
    path.write_bytes(ET.tostring(root, encoding="UTF-8", xml_declaration=True))
    return path


def write_ik_setup(path: Path, model_file: str, trc_file: str, time_range: tuple[float, float],
                   mot_file: str, marker_weights: dict[str, float], accuracy: float = 1e-5) -> Path:
    root = ET.Element("OpenSimDocument", Version="40000")
    tool = _el(root, "InverseKinematicsTool", name=Path(mot_file).stem)
    _el(tool, "results_directory", ".")
    _el(tool, "model_file", model_file)
    _el(tool, "constraint_weight", "Inf")
    _el(tool, "accuracy", f"{accuracy:g}")
    _task_set(tool, "ik_tasks", marker_weights)
    _el(tool, "marker_file", trc_file)
    _el(tool, "time_range", f"{time_range[0]:.6f} {time_range[1]:.6f}")
    _el(tool, "report_errors", "false")
    _el(tool, "output_motion_file", mot_file)
    _el(tool, "report_marker_locations", "false")
    ET.indent(root)
    path.write_bytes(ET.tostring(root, encoding="UTF-8", xml_declaration=True))
    return path


def _tool_element(root: ET.Element, tag: str, path: Path) -> ET.Element:
    tool = root if root.tag == tag else root.find(tag)
    if tool is None:
        raise D3keError(f"{path}: no <{tag}> element: not an OpenSim {tag} setup file")
    return tool


def _set(parent: ET.Element, tag: str, text: str) -> None:
    e = parent.find(tag)
    if e is None:
        e = ET.SubElement(parent, tag)
    e.text = text


def _copy_referenced_files(root: ET.Element, source_dir: Path, workdir: Path) -> None:
    """Task or measurement sets kept in files beside a user's setup (`<IKTaskSet file=...>`) come along."""
    for e in root.iter():
        ref = e.get("file")
        if ref and ref != "Unassigned":
            src = (source_dir / ref).resolve()
            if not src.is_file():
                raise D3keError(f"{source_dir}: setup refers to {ref}, which does not exist")
            shutil.copy2(src, workdir / Path(ref).name)
            e.set("file", Path(ref).name)


def adapt_scale_setup(user_setup: Path, workdir: Path, generic_model: str, static_trc: str,
                      mass_kg: float | None) -> Path:
    """A user's ScaleTool setup, rewritten to this run's model, static trial and output names."""
    tree = _parse_setup(user_setup)
    tool = _tool_element(tree.getroot(), "ScaleTool", user_setup)
    _copy_referenced_files(tree.getroot(), user_setup.parent, workdir)
    if mass_kg is not None:
        _set(tool, "mass", f"{mass_kg:.4f}")
    gmm = tool.find("GenericModelMaker")
    if gmm is None:
        gmm = ET.SubElement(tool, "GenericModelMaker")
    _set(gmm, "model_file", generic_model)
    marker_set = _text_or_none(gmm.find("marker_set_file"))
    if marker_set is not None:
        # OpenSim's GenericModelMaker reads it from the setup's folder: it comes along into this run's folder
        src = user_setup.parent / marker_set
        if not src.is_file():
            raise D3keError(f"{user_setup}: <marker_set_file> {marker_set} does not exist beside the setup: "
                            f"give its path from {user_setup.parent} or set it to Unassigned")
        shutil.copy2(src, workdir / src.name)
        gmm.find("marker_set_file").text = src.name
    for part in ("ModelScaler", "MarkerPlacer"):
        el = tool.find(part)
        if el is None:
            continue
        _set(el, "marker_file", static_trc)
        for tag in ("output_model_file", "output_motion_file", "output_marker_file", "output_joint_file",
                    "output_muscle_file"):
            if el.find(tag) is not None:
                el.find(tag).text = "Unassigned"
        if part == "ModelScaler":
            _set(el, "output_scale_file", SCALE_FACTORS)
        else:
            _set(el, "output_model_file", SCALED_MODEL)
    placer = tool.find("MarkerPlacer")
    if placer is None or (placer.findtext("apply") or "true").strip().lower() != "true":
        # without marker placement the scaled model is the ModelScaler's output
        _set(tool.find("ModelScaler"), "output_model_file", SCALED_MODEL)
    out = workdir / SCALE_SETUP
    tree.write(out, encoding="UTF-8", xml_declaration=True)
    return out


def adapt_ik_setup(user_setup: Path, workdir: Path, model_file: str, trc_file: str, mot_file: str,
                   time_range: tuple[float, float] | None) -> Path:
    """A user's InverseKinematicsTool setup, rewritten to this run's model, markers and output."""
    tree = _parse_setup(user_setup)
    tool = _tool_element(tree.getroot(), "InverseKinematicsTool", user_setup)
    _copy_referenced_files(tree.getroot(), user_setup.parent, workdir)
    _set(tool, "model_file", model_file)
    _set(tool, "marker_file", trc_file)
    _set(tool, "results_directory", ".")
    _set(tool, "output_motion_file", mot_file)
    _set(tool, "report_marker_locations", "false")
    _set(tool, "report_errors", "false")
    if tool.find("coordinate_file") is not None:
        tool.find("coordinate_file").text = "Unassigned"
    if time_range is not None:
        _set(tool, "time_range", f"{time_range[0]:.6f} {time_range[1]:.6f}")
    out = workdir / IK_SETUP
    tree.write(out, encoding="UTF-8", xml_declaration=True)
    return out


def _text_or_none(element: ET.Element | None) -> str | None:
    """A setup's file name, or None where OpenSim reads none (absent, empty or `Unassigned`)."""
    text = (element.text or "").strip() if element is not None else ""
    return None if text in ("", "Unassigned") else text


def scale_setup_marker_set(setup: Path) -> list[str]:
    """Markers of the setup's `<marker_set_file>`, which ScaleTool adds to the generic model
    (`Model::updateMarkerSet`: a marker of the same name is replaced, others are added)."""
    gmm = _tool_element(_parse_setup(setup).getroot(), "ScaleTool", setup).find("GenericModelMaker")
    name = _text_or_none(gmm.find("marker_set_file") if gmm is not None else None)
    if name is None:
        return []
    path = setup.parent / name
    marker_set = _parse_setup(path).getroot()
    marker_set = marker_set if marker_set.tag == "MarkerSet" else marker_set.find("MarkerSet")
    if marker_set is None:
        raise D3keError(f"{path}: no <MarkerSet> element: not an OpenSim marker set file")
    return [m.get("name") for m in marker_set.iter("Marker") if m.get("name")]


def _parse_setup(path: Path) -> ET.ElementTree:
    try:
        return ET.parse(path)
    except FileNotFoundError:
        raise D3keError(f"{path}: setup file does not exist") from None
    except ET.ParseError as exc:
        raise D3keError(f"{path}: not valid XML ({exc})") from None


def setup_time_range(setup: Path, tag: str) -> tuple[float, float] | None:
    tree = _parse_setup(setup)
    el = tree.getroot().find(f".//{tag}/time_range") if tag != "InverseKinematicsTool" else \
        _tool_element(tree.getroot(), tag, setup).find("time_range")
    if el is None or not (el.text or "").split():
        return None
    a, b = (float(v) for v in el.text.split()[:2])
    return a, b


def check_markers(trc: MarkerTrajectories, path: Path, model_markers: list[str], weights: dict[str, float],
                  time_range: tuple[float, float] | None = None) -> None:
    """One-line errors for marker files OpenSim would fail on, or silently solve badly."""
    used = [m for m, w in weights.items() if w > 0]
    missing = [m for m in used if m not in trc.marker_names]
    if missing:
        raise D3keError(f"{path}: markers {missing} of the model's marker set are not in the file: "
                        f"name them as the model does or give them weight 0 in the IK setup")
    not_in_model = [m for m in used if m not in model_markers]
    if not_in_model:
        raise D3keError(f"{path}: the setup weights markers {not_in_model} that the model does not have")
    if time_range is not None:
        inside = (trc.time_s >= time_range[0] - 1e-9) & (trc.time_s <= time_range[1] + 1e-9)
        if not inside.any():
            raise D3keError(f"{path}: no frames in the time range {time_range[0]:g}-{time_range[1]:g} s "
                            f"(the file covers {trc.time_s[0]:g}-{trc.time_s[-1]:g} s)")
    else:
        inside = np.ones(len(trc.time_s), bool)
    idx = [trc.marker_names.index(m) for m in used]
    block = trc.positions_m[inside][:, idx]
    gaps = [used[k] for k in np.flatnonzero(np.isnan(block).any(axis=(0, 2)))]
    if gaps:
        raise D3keError(f"{path}: markers {gaps} have gaps (empty or NaN cells): fill the gaps or give them "
                        f"weight 0 in the IK setup")
    extent = np.nanmax(np.abs(block))
    if extent > 50.0 or extent < 0.05:  # metres: a body is not 50 m across, nor smaller than 5 cm
        raise D3keError(f"{path}: marker coordinates reach {extent:g} m: the Units header "
                        f"({'m' if extent > 50 else 'mm'}?) does not match the numbers")


def run_scale(setup: Path) -> ScaleResult:
    """Run ScaleTool from `setup` (its folder is the working folder); read back the scale factors."""
    osim = opensim_module()
    start = time.perf_counter()
    try:
        with native_stdout_to_stderr():
            tool = osim.ScaleTool(str(setup))
            ok = tool.run()
    except RuntimeError as exc:
        raise D3keError(f"{setup}: OpenSim ScaleTool failed ({_first_line(exc)})") from None
    seconds = time.perf_counter() - start
    scaled = setup.parent / SCALED_MODEL
    placer = _tool_element(_parse_setup(setup).getroot(), "ScaleTool", setup).find("MarkerPlacer")
    if placer is not None and (placer.findtext("apply") or "").strip().lower() == "false":
        scaled = setup.parent / UNPLACED_MODEL  # ScaleTool.run() says False when it places no markers
        ok = True
    if not ok or not scaled.is_file():
        raise D3keError(f"{setup}: OpenSim ScaleTool did not write {scaled.name}: check the marker names "
                        f"in the measurement set against the static trial")
    return ScaleResult(scaled, read_scale_factors(setup.parent / SCALE_FACTORS), seconds)


def read_scale_factors(path: Path) -> dict[str, tuple[float, float, float]]:
    """OpenSim's ScaleSet file -> body -> (x, y, z)."""
    if not path.is_file():
        return {}
    out = {}
    for s in ET.parse(path).getroot().iter("Scale"):
        body = (s.findtext("segment") or "").strip()
        vals = tuple(float(v) for v in (s.findtext("scales") or "").split())
        if body and len(vals) == 3:
            out[body] = vals
    return out


def run_ik(setup: Path, backend: str = "opensim", log=lambda m: None) -> IkResult:
    """Solve an InverseKinematicsTool setup with `backend` (`settings.IK_BACKENDS`): OpenSim's tool, or
    the batched solver on the skeletal layer (`torch_ik.solve_ik_setup`: the same setup, task set and
    .mot)."""
    if ik_backend_name(backend) == "torch":
        from d3ke_assets.biomech.torch_ik import solve_ik_setup

        return solve_ik_setup(Path(setup), log=log)
    osim = opensim_module()
    tree = _parse_setup(setup)
    tool_el = _tool_element(tree.getroot(), "InverseKinematicsTool", setup)
    mot = setup.parent / (tool_el.findtext("output_motion_file") or "").strip()
    model_file = setup.parent / (tool_el.findtext("model_file") or "").strip()
    model = load_model(model_file)  # held here: the tool does not keep it alive
    start = time.perf_counter()
    try:
        with native_stdout_to_stderr():
            tool = osim.InverseKinematicsTool(str(setup))
            tool.setModel(model)
            ok = tool.run()
    except RuntimeError as exc:
        raise D3keError(f"{setup}: OpenSim InverseKinematicsTool failed ({_first_line(exc)})") from None
    seconds = time.perf_counter() - start
    if not ok or not mot.is_file():
        raise D3keError(f"{setup}: OpenSim InverseKinematicsTool did not write {mot.name}")
    t, names, values, in_degrees = read_mot(mot)
    rotational = _rotational(model, names)
    values = values.copy()
    if in_degrees:
        values[:, rotational] = np.radians(values[:, rotational])
    return IkResult(mot, t, names, values, seconds)


def _rotational(model, names: list[str]) -> np.ndarray:
    cs = model.getCoordinateSet()
    rot = []
    for n in names:
        rot.append(cs.contains(n) and cs.get(n).getMotionType() == 1)  # 1: Rotational
    return np.array(rot, bool)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def subsample_trc(source: MarkerTrajectories, frames: np.ndarray, out: Path) -> MarkerTrajectories:
    """The capture frames IK is asked for (e.g. one per video frame), as a .trc of their own."""
    step = np.diff(source.time_s[frames]).mean() if len(frames) > 1 else 1.0 / source.rate_hz
    sub = MarkerTrajectories(source.marker_names, source.time_s[frames], source.positions_m[frames],
                             float(1.0 / step))
    write_trc(out, sub)
    return sub

