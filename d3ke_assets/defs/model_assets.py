"""`opensim_model`: the generic full-body model every later stage uses."""

import hashlib
from pathlib import Path

import dagster as dg

from d3ke_assets.biomech import model_builder, model_files
from d3ke_assets.biomech.skeletal_layer import read_model_spec
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.constants import CODE_VERSIONS, OPENSIM_MODEL
from d3ke_assets.defs.pools import OPENSIM_POOL
from d3ke_assets.defs.resources import DataRootResource, DatasetResource
from d3ke_assets.defs.versioned import build_versioned
from d3ke_assets.errors import D3keError


def _file_digest(path: str | None, variable: str) -> str | None:
    if not path:
        return None
    if not Path(path).is_file():
        raise D3keError(f"{path}: file does not exist: fix {variable}")
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dg.asset(key=OPENSIM_MODEL, code_version=CODE_VERSIONS[OPENSIM_MODEL], group_name="biomech", kinds={"opensim"},
          pool=OPENSIM_POOL)
def opensim_model(context: dg.AssetExecutionContext, data_root: DataRootResource,
                  dataset: DatasetResource) -> dg.MaterializeResult:
    """The generic OpenSim model (.osim): the project's, built by code, or yours (D3KE_MODEL) with its
    optional Setup_Scale.xml, IK task weights and left/right map."""
    with user_errors_as_failures():
        if not dataset.model:
            # the project's model: the config stays {} so existing outputs keep their stamps
            out = build_versioned(context, data_root, {},
                                  lambda tmp: model_builder.write_model(model_builder.model_file(tmp)))
        else:
            # the files' contents are the config: an edited model or setup makes everything downstream stale
            config = {"model": _file_digest(dataset.model, "D3KE_MODEL"),
                      "scale_setup": _file_digest(dataset.model_scale_setup, "D3KE_MODEL_SCALE_SETUP"),
                      "ik_tasks": _file_digest(dataset.model_ik_tasks, "D3KE_MODEL_IK_TASKS"),
                      "mirror_map": _file_digest(dataset.mirror_map, "D3KE_MIRROR_MAP")}
            out = build_versioned(context, data_root, config, lambda tmp: model_files.install(
                tmp, dataset.model, dataset.model_scale_setup, dataset.model_ik_tasks, dataset.mirror_map))
        files = model_files.ModelFiles.in_folder(out.folder)
        spec = read_model_spec(files.osim)
    if files.project:
        coords = model_builder.coordinates()
        return out.result({
            "path": dg.MetadataValue.path(str(files.osim)),
            "n_coordinates": len(coords),
            "n_markers": len(model_builder.marker_table()),
            "n_bodies": len(model_builder.real_bodies()),
            "mass_kg": model_builder.GENERIC_MASS_KG,
            "coordinates": dg.MetadataValue.md(
                "| coordinate | range |\n|---|---|\n" + "\n".join(
                    f"| {c.name} | {c.range_deg or c.range_m} {'deg' if c.rotational else 'm'} |" for c in coords)),
        })
    return out.result({
        "path": dg.MetadataValue.path(str(files.osim)), "n_coordinates": len(spec.coordinates),
        "n_markers": len(spec.markers), "n_bodies": len(spec.bodies),
        "root_joint": model_files.root_joint(spec).name,
        "scale_setup": str(files.scale_setup or "automatic (two markers per body)"),
        "ik_tasks": str(files.ik_tasks or "every marker, weight 1"),
        "coordinates": dg.MetadataValue.md("| coordinate | range |\n|---|---|\n" + "\n".join(
            f"| {c.name} | {c.range[0]:.3g} to {c.range[1]:.3g} {'rad' if c.rotational else 'm'} |"
            for c in spec.coordinates)),
    })
