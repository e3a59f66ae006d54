"""Which OpenSim model the ground truth, the synthetic generator and the network use.

The project's built model (`model_builder`) by default.  A user's model (`D3KE_MODEL`) comes with
an optional ScaleTool setup (its measurement set and its marker placer's weights), optional IK
task weights (an InverseKinematicsTool setup or a bare `IKTaskSet` file) and an optional
left/right map (JSON, name -> partner).  The opensim_model asset copies them into its folder with
a `model.json` naming them, so every later stage reads one folder; the project's model writes no
`model.json`, so its folder (and its version stamp) is what it always was.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from d3ke_assets.biomech import model_builder
from d3ke_assets.biomech.skeletal_layer import ModelSpec, read_model_spec
from d3ke_assets.errors import D3keError
from d3ke_assets.storage import atomic_write_json

MODEL_JSON = "model.json"
SCALE_SETUP_FILE = "Setup_Scale.xml"
IK_TASKS_FILE = "ik_tasks.xml"
MIRROR_MAP_FILE = "mirror_map.json"
MIN_MEASUREMENT_MARKERS = 2  # a marker pair


@dataclass(frozen=True)
class ModelFiles:
    """The model and what comes with it, as the opensim_model folder holds them."""

    osim: Path
    scale_setup: Path | None = None
    ik_tasks: Path | None = None
    mirror_map: dict[str, str] = field(default_factory=dict)
    project: bool = True  # the project's built model: its own measurements, weights and motions

    @classmethod
    def in_folder(cls, folder: str | Path) -> "ModelFiles":
        """The model of an opensim_model folder: a user's (named in `model.json`) or the project's."""
        folder = Path(folder)
        described = folder / MODEL_JSON
        if not described.is_file():
            return cls(model_builder.model_file(folder))
        facts = json.loads(described.read_text())
        opt = lambda key: folder / facts[key] if facts.get(key) else None  # noqa: E731
        mirror = json.loads((folder / facts["mirror_map"]).read_text()) if facts.get("mirror_map") else {}
        return cls(folder / facts["model"], opt("scale_setup"), opt("ik_tasks"), mirror, project=False)

    @classmethod
    def for_path(cls, osim: str | Path) -> "ModelFiles":
        """A model given by its file: as its opensim_model folder describes it, else the project's
        rules for the project's model and a user's model without setup files for any other."""
        osim = Path(osim)
        if (osim.parent / MODEL_JSON).is_file():
            return cls.in_folder(osim.parent)
        return cls(osim, project=osim.name == model_builder.model_file(osim.parent).name)


@dataclass(frozen=True)
class RootJoint:
    """The model's free joint to ground: three rotations and three translations, whatever their names."""

    name: str
    body: str
    rotations: tuple[str, str, str]  # coordinate names, in the joint's rotation order
    rotation_axes: tuple[tuple[float, float, float], ...]
    translations: tuple[str, str, str]  # along the joint's translation axes
    translation_axes: tuple[tuple[float, float, float], ...]

    @property
    def coordinates(self) -> tuple[str, ...]:
        return (*self.rotations, *self.translations)

    def translation_along(self, axis: int) -> str:
        """The translation coordinate along ground axis `axis` (0 x, 1 y up, 2 z)."""
        k = max(range(3), key=lambda i: abs(self.translation_axes[i][axis]))
        return self.translations[k]

    def rotation_about(self, axis: int) -> str:
        k = max(range(3), key=lambda i: abs(self.rotation_axes[i][axis]))
        return self.rotations[k]


def root_joint(spec: ModelSpec) -> RootJoint:
    """The joint from ground whose six coordinates move the whole model; one line when there is none."""
    roots = [j for j in spec.joints if j.parent.body == "ground"]
    for j in roots:
        rot = [a for a in j.rotations if a.coordinate]
        trans = [a for a in j.translations if a.coordinate]
        if len(rot) == 3 and len(trans) == 3:
            return RootJoint(j.name, j.child.body, tuple(a.coordinate for a in rot),
                             tuple(tuple(float(v) for v in a.axis) for a in rot),
                             tuple(a.coordinate for a in trans), tuple(tuple(float(v) for v in a.axis) for a in trans))
    raise D3keError(f"{spec.path}: no free joint to ground (a joint from ground with three rotational and three "
                    f"translational coordinates, such as a CustomJoint or FreeJoint): the network places the model "
                    f"by its root; give the model one")


def check_model(path: Path) -> ModelSpec:
    """A model the whole graph can use: the skeletal layer reads it, it has markers and a free root."""
    spec = read_model_spec(path)
    if not spec.markers:
        raise D3keError(f"{path}: the model has no markers: add a <MarkerSet> matching your .trc marker names "
                        f"(OpenSim's Marker Set editor, or a ScaleTool <marker_set_file>) and set D3KE_MODEL again")
    root_joint(spec)
    return spec


def install(folder: Path, osim: str | Path, scale_setup: str | Path | None = None, ik_tasks: str | Path | None = None,
            mirror_map: str | Path | None = None) -> ModelFiles:
    """Copy a user's model and its setup files into the opensim_model `folder`, checked, with `model.json`."""
    osim = Path(osim)
    if not osim.is_file():
        raise D3keError(f"{osim}: model file does not exist: set D3KE_MODEL to your .osim file")
    spec = check_model(osim)
    facts: dict = {"model": osim.name, "source": str(osim.resolve())}
    shutil.copy2(osim, folder / osim.name)
    if scale_setup:
        src = Path(scale_setup)
        measurements = read_measurements(src)  # checks it is a ScaleTool setup
        unknown = sorted({m for me in measurements for pair in me.marker_pairs for m in pair}
                         - {m for m, _ in spec.markers})
        if unknown:
            raise D3keError(f"{src}: the measurement set names markers {unknown} that {osim.name} does not have: "
                            f"rename them as the model does or remove those marker pairs")
        shutil.copy2(src, folder / SCALE_SETUP_FILE)
        facts["scale_setup"] = SCALE_SETUP_FILE
    if ik_tasks:
        src = Path(ik_tasks)
        read_marker_weights(src)
        shutil.copy2(src, folder / IK_TASKS_FILE)
        facts["ik_tasks"] = IK_TASKS_FILE
    if mirror_map:
        src = Path(mirror_map)
        try:
            mapping = json.loads(src.read_text())
        except (OSError, ValueError) as exc:
            raise D3keError(f"{src}: not a readable JSON object of name -> partner ({exc}): fix D3KE_MIRROR_MAP") from None
        if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise D3keError(f"{src}: the mirror map must be a JSON object of name -> partner name (strings)")
        atomic_write_json(folder / MIRROR_MAP_FILE, mapping)
        facts["mirror_map"] = MIRROR_MAP_FILE
    atomic_write_json(folder / MODEL_JSON, facts)
    return ModelFiles.in_folder(folder)


def _parse(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise D3keError(f"{path}: file does not exist") from None
    except ET.ParseError as exc:
        raise D3keError(f"{path}: not valid XML ({exc})") from None


def _applied(el: ET.Element) -> bool:
    return (el.findtext("apply") or "true").strip().lower() == "true"


def read_measurements(setup: Path) -> list:
    """The applied measurements of a ScaleTool setup's MeasurementSet (manual scales are the
    subject's, not the model's, and are not taken)."""
    from d3ke_assets.biomech.opensim_pipeline import Measurement

    root = _parse(setup)
    tool = root if root.tag == "ScaleTool" else root.find("ScaleTool")
    if tool is None:
        raise D3keError(f"{setup}: no <ScaleTool> element: give an OpenSim ScaleTool setup (D3KE_MODEL_SCALE_SETUP)")
    out = []
    for me in tool.iter("Measurement"):
        if not _applied(me):
            continue
        pairs = [tuple(p.text.split()) for p in me.iter("markers") if p.text and len(p.text.split()) == 2]
        bodies = [(bs.get("name"), " ".join((bs.findtext("axes") or "X Y Z").split())) for bs in me.iter("BodyScale")]
        by_axes: dict[str, list[str]] = {}
        for body, axes in bodies:
            by_axes.setdefault(axes, []).append(body)
        for k, (axes, group) in enumerate(by_axes.items()):  # one op.Measurement per axes set
            name = me.get("name") if len(by_axes) == 1 else f"{me.get('name')}_{k}"
            out.append(Measurement(name, pairs, group, axes))
    if not out:
        raise D3keError(f"{setup}: the ScaleTool setup has no applied measurements: add a MeasurementSet "
                        f"(marker pairs and the bodies they scale)")
    return out


def read_marker_weights(path: Path) -> dict[str, float]:
    """Marker weights of an IK setup, a ScaleTool setup's marker placer or a bare IKTaskSet file
    (a task that is not applied weighs 0)."""
    root = _parse(path)
    placer = root.find(".//MarkerPlacer")
    scope = placer if placer is not None else root
    tasks = {t.get("name"): (float(t.findtext("weight") or 1.0) if _applied(t) else 0.0)
             for t in scope.iter("IKMarkerTask")}
    if not tasks:
        raise D3keError(f"{path}: no <IKMarkerTask> elements: give an IK setup or task set with marker weights")
    return tasks


def automatic_measurements(spec: ModelSpec) -> list:
    """For a model without a ScaleTool setup: each body with two markers or more is scaled uniformly
    by its two markers farthest apart (bodies with fewer keep their size)."""
    import numpy as np

    from d3ke_assets.biomech.opensim_pipeline import Measurement

    out = []
    for body in spec.bodies:
        on = [(m, f.translation_m) for m, f in spec.markers if f.body == body]
        if len(on) < MIN_MEASUREMENT_MARKERS:
            continue
        best = max(((a, b) for i, a in enumerate(on) for b in on[i + 1:]),
                   key=lambda ab: float(np.linalg.norm(ab[0][1] - ab[1][1])))
        out.append(Measurement(f"{body}_size", [(best[0][0], best[1][0])], [body], "X Y Z"))
    return out
