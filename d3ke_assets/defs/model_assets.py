"""`opensim_model`: the generic full-body model every later stage uses."""

import dagster as dg

from d3ke_assets.biomech import model_builder
from d3ke_assets.defs.common import user_errors_as_failures
from d3ke_assets.defs.pools import OPENSIM_POOL
from d3ke_assets.defs.resources import DataRootResource


@dg.asset(code_version=model_builder.MODEL_CODE_VERSION, group_name="biomech", kinds={"opensim"}, pool=OPENSIM_POOL)
def opensim_model(context: dg.AssetExecutionContext, data_root: DataRootResource) -> dg.MaterializeResult:
    """The project's generic OpenSim full-body model (.osim), built by code."""
    with user_errors_as_failures():
        path, version, reused = model_builder.ensure_model(data_root.asset_dir("opensim_model"))
    context.log.info(f"opensim_model {'unchanged' if reused else 'written'}: {path}")
    coords = model_builder.coordinates()
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "n_coordinates": len(coords),
            "n_markers": len(model_builder.marker_table()),
            "n_bodies": len(model_builder.real_bodies()),
            "mass_kg": model_builder.GENERIC_MASS_KG,
            "reused": reused,
            "coordinates": dg.MetadataValue.md(
                "| coordinate | range |\n|---|---|\n" + "\n".join(
                    f"| {c.name} | {c.range_deg or c.range_m} {'deg' if c.rotational else 'm'} |" for c in coords)),
        },
    )
