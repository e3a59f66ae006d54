"""`opensim_model`: the generic full-body model every later stage uses."""

import dagster as dg

from d3ke_assets.biomech import model_builder
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.constants import CODE_VERSIONS, OPENSIM_MODEL
from d3ke_assets.defs.pools import OPENSIM_POOL
from d3ke_assets.defs.resources import DataRootResource
from d3ke_assets.defs.versioned import build_versioned


@dg.asset(key=OPENSIM_MODEL, code_version=CODE_VERSIONS[OPENSIM_MODEL], group_name="biomech", kinds={"opensim"},
          pool=OPENSIM_POOL)
def opensim_model(context: dg.AssetExecutionContext, data_root: DataRootResource) -> dg.MaterializeResult:
    """The project's generic OpenSim full-body model (.osim), built by code."""
    with user_errors_as_failures():
        out = build_versioned(context, data_root, {}, lambda tmp: model_builder.write_model(model_builder.model_file(tmp)))
    coords = model_builder.coordinates()
    return out.result({
        "path": dg.MetadataValue.path(str(model_builder.model_file(out.folder))),
        "n_coordinates": len(coords),
        "n_markers": len(model_builder.marker_table()),
        "n_bodies": len(model_builder.real_bodies()),
        "mass_kg": model_builder.GENERIC_MASS_KG,
        "coordinates": dg.MetadataValue.md(
            "| coordinate | range |\n|---|---|\n" + "\n".join(
                f"| {c.name} | {c.range_deg or c.range_m} {'deg' if c.rotational else 'm'} |" for c in coords)),
    })
