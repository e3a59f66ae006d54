"""Batched inverse kinematics on the skeletal layer against OpenSim's InverseKinematicsTool itself.

OpenSim is run at a tight accuracy (1e-8): at its usual 1e-4 to 1e-5 its optimizer stops before
the minimum in weakly seen directions (forearm rotation moves degrees for a 0.1% lower error), and
the comparison would measure OpenSim's tolerance rather than the solver."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from d3ke_assets.biomech import formats
from d3ke_assets.biomech.commands import _task_weights
from d3ke_assets.biomech.opensim_pipeline import run_ik, write_ik_setup
from d3ke_assets.biomech.skeletal_layer import SkeletalModel
from d3ke_assets.biomech.torch_ik import BatchedIk, IkTasks
from d3ke_assets_tests.biomech.test_skeletal_layer import _toy_model

TIGHT = 1e-8


def _opensim_ik(workdir: Path, model: Path, trc: formats.MarkerTrajectories, weights: dict[str, float]) -> np.ndarray:
    """OpenSim's coordinates (frames, coordinates in the layer's order; radians, metres)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, workdir / "model.osim")
    formats.write_trc(workdir / "trial.trc", trc)
    write_ik_setup(workdir / "setup.xml", "model.osim", "trial.trc", (trc.time_s[0], trc.time_s[-1]), "trial.mot",
                   weights, TIGHT)
    result = run_ik(workdir / "setup.xml")
    assert len(result.time_s) == len(trc.time_s)
    return result


def _compare(layer: SkeletalModel, torch_q: np.ndarray, result) -> np.ndarray:
    """Per rotational free coordinate: RMS difference in degrees."""
    rot = [i for i, c in enumerate(layer.spec.coordinates) if c.rotational and not c.locked]
    theirs = np.stack([result.values[:, result.coordinate_names.index(layer.coordinate_names[i])] for i in rot], 1)
    return np.degrees(np.sqrt(np.mean((torch_q[:, rot] - theirs) ** 2, 0)))


def _cost(ik: BatchedIk, q: np.ndarray, measured: np.ndarray) -> float:
    x = torch.as_tensor(q[:, ik.free])
    markers, _ = ik._markers(x, False)
    present = torch.isfinite(torch.as_tensor(measured)).all(-1)
    weight = ik._marker_w[None] * present
    return float(ik._cost(markers, x, torch.as_tensor(measured), weight / weight.sum(-1, keepdim=True)).mean())


@pytest.mark.parametrize("which", ["toy", "generic"])
def test_the_jacobian_from_the_joint_axes_equals_autograds(which, tmp_path, generic_model):
    """Every joint type, a coupled and a locked coordinate, spline and polynomial axis functions."""
    path = _toy_model(tmp_path / "toy.osim") if which == "toy" else generic_model[0]
    layer = SkeletalModel.from_osim(path, torch.float64)
    ik = BatchedIk(layer, IkTasks({m: 1.0 for m in layer.marker_names}))
    x = ik._defaults[ik._free][None].repeat(3, 1) + 0.4 * torch.randn(3, len(ik.free), dtype=torch.float64,
                                                                          generator=torch.Generator().manual_seed(1))
    _, jac = ik._markers(x, True)
    full = torch.autograd.functional.jacobian(lambda v: ik._markers(v, False)[0], x)
    assert torch.allclose(jac, torch.stack([full[b, :, :, b] for b in range(3)]), atol=1e-10)


def test_coupled_and_locked_coordinates_are_recovered_on_every_joint_type(tmp_path):
    path = _toy_model(tmp_path / "toy.osim")
    layer = SkeletalModel.from_osim(path, torch.float64)
    ik = BatchedIk(layer, IkTasks({m: 1.0 for m in layer.marker_names}))
    rng = np.random.default_rng(3)
    steps = np.cumsum(rng.normal(0, 0.03, (40, len(layer.coordinate_names))), 0)  # a smooth path from the default
    q = layer.full_coordinates(layer.default_values[None] + torch.as_tensor(steps)).numpy()
    measured = layer(torch.as_tensor(q)).markers_m.numpy()
    solution = ik.solve(measured[:, [layer.marker_names.index(m) for m in ik.marker_names]])
    assert np.abs(solution.coordinates - q).max() < 1e-5
    assert np.allclose(solution.coordinates[:, layer.coordinate_names.index("j3_coord_1")], 0.4)  # locked
    assert np.allclose(solution.coordinates[:, layer.coordinate_names.index("j8_coord_0")],
                       -0.5 * solution.coordinates[:, layer.coordinate_names.index("j1_coord_0")] + 0.2)
    assert solution.error_columns()["marker_error_max"].max() < 1e-6


def test_hamner_running_agrees_with_opensim(hamner, tmp_path):
    """The real running trial, the registered model (clamped ranges, locked wrists, spline knees) and
    the shipped weights: the same coordinates and a marker error no larger than OpenSim's."""
    model = hamner / "outputReference" / "subject02_registered.osim"
    trc = formats.read_trc(hamner / "subject02_running.trc")
    frames = slice(100, 124)
    trc = formats.MarkerTrajectories(trc.marker_names, trc.time_s[frames], trc.positions_m[frames], trc.rate_hz)
    weights = {m: w for m, w in _task_weights(hamner / "Tasks_IK.xml", None).items() if m in trc.marker_names}
    opensim = _opensim_ik(tmp_path / "opensim", model, trc, weights)
    layer = SkeletalModel.from_osim(model, torch.float64)
    ik = BatchedIk(layer, IkTasks(weights))
    measured = trc.positions_m[:, [trc.marker_names.index(m) for m in ik.marker_names]]
    solution = ik.solve(measured)
    rms = _compare(layer, solution.coordinates, opensim)
    assert rms.mean() < 0.05 and rms.max() < 0.5, rms
    theirs = np.stack([opensim.values[:, opensim.coordinate_names.index(c)] for c in layer.coordinate_names], 1)
    assert _cost(ik, solution.coordinates, measured) <= _cost(ik, theirs, measured) * (1 + 1e-6)
    for i, c in enumerate(layer.spec.coordinates):
        if c.locked:
            assert np.allclose(solution.coordinates[:, i], c.default_value)
        elif c.clamped:
            assert (solution.coordinates[:, i] >= c.range[0] - 1e-9).all()
            assert (solution.coordinates[:, i] <= c.range[1] + 1e-9).all()


def test_a_synthetic_subject_with_missing_markers_agrees_with_opensim(smoke_frames, smoke_subject, tmp_path):
    """Markers missing in some frames are left out of those frames, as OpenSim does; both land as
    close to the generator's truth."""
    gt = smoke_frames["base"] / "gt"
    trial = "walking"
    trc = formats.read_trc(gt / "ik" / trial / f"{trial}.trc")
    positions = trc.positions_m.copy()
    positions[3:7, trc.marker_names.index("RKNE")] = np.nan
    positions[10:12, trc.marker_names.index("LWRA")] = np.nan
    positions[5, trc.marker_names.index("C7")] = np.nan
    trc = formats.MarkerTrajectories(trc.marker_names, trc.time_s, positions, trc.rate_hz)
    weights = _task_weights(gt / "ik" / trial / "Setup_IK.xml", None)
    opensim = _opensim_ik(tmp_path / "opensim", gt / "scaled.osim", trc, weights)
    layer = SkeletalModel.from_osim(gt / "scaled.osim", torch.float64)
    ik = BatchedIk(layer, IkTasks(weights))
    measured = positions[:, [trc.marker_names.index(m) for m in ik.marker_names]]
    solution = ik.solve(measured)
    assert np.isnan(solution.marker_errors_m[3:7, ik.marker_names.index("RKNE")]).all()
    rms = _compare(layer, solution.coordinates, opensim)
    assert rms.mean() < 0.05 and rms.max() < 0.5, rms
    t, names, values, _ = formats.read_mot(smoke_subject / "truth" / f"{trial}.mot")
    rows = [int(np.argmin(np.abs(t - s))) for s in trc.time_s]
    truth = np.stack([np.radians(values[rows, names.index(c)]) if r else values[rows, names.index(c)]
                      for c, r in zip(layer.coordinate_names, layer.rotational)], 1)
    to_truth = _compare(layer, solution.coordinates, type(opensim)(None, trc.time_s, layer.coordinate_names, truth, 0))
    opensim_to_truth = _compare(layer, np.stack([opensim.values[:, opensim.coordinate_names.index(c)]
                                                 for c in layer.coordinate_names], 1),
                                type(opensim)(None, trc.time_s, layer.coordinate_names, truth, 0))
    assert abs(to_truth.mean() - opensim_to_truth.mean()) < 0.1
