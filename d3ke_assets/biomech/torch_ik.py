"""Batched inverse kinematics on the skeletal layer: OpenSim's IK problem, many frames at once.

Per frame it minimises what OpenSim's InverseKinematicsSolver minimises: the weighted sum of squared
distances between the model's markers and the measured ones (weights of the IK task set's marker
tasks; a marker missing in a frame is left out of that frame), plus the coordinate tasks' weighted
squared differences, over the model's free coordinates (locked ones stay at their default value,
a coupled one follows its independent coordinate), within the ranges of clamped coordinates.

The solver is Levenberg-Marquardt with the Jacobian built from the joints' axes (`JointMotion`: a
rotation turns every marker below it about the joint's origin, a translation moves them along its
direction; coupler functions chain in), every frame of a batch at once, each frame stopping when
its error stops changing.  Frames are warm-started the way a sequence allows: a coarse pass over
every k-th frame, in chunks each starting from the previous chunk's last solution (the first from
the first frame, solved from the default pose as OpenSim does), then every other frame at once from
the coarse solutions interpolated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from d3ke_assets.biomech.skeletal_layer import JointMotion, SkeletalModel
from d3ke_assets.errors import D3keError


@dataclass
class IkTasks:
    """The IK task set: marker weights, and coordinate tasks as name -> (weight, value in radians or
    metres; None = the coordinate's default value)."""

    marker_weights: dict[str, float]
    coordinate_tasks: dict[str, tuple[float, float | None]] = field(default_factory=dict)


@dataclass
class IkSettings:
    max_iterations: int = 100
    gradient_tolerance: float = 0.0
    relative_tolerance: float = 1e-10  # a frame stops when its error changes by less than this share
    chunk_frames: int = 5  # consecutive frames solved together (0: every frame from the default pose)
    repair_rounds: int = 20  # frames stuck in a local minimum restart from their nearest good neighbour
    repair_ratio: float = 1.5  # "stuck": error above this multiple of the local median
    repair_window: int = 31  # frames over which the local median is taken
    max_batch: int = 4096  # frames per solve (memory)
    max_step: float = 0.2  # largest change of a coordinate in one iteration (rad or m)
    dtype: torch.dtype = torch.float64
    device: str | None = None  # None: CUDA when available


@dataclass
class IkSolution:
    """Per frame: every coordinate (`SkeletalModel.coordinate_names` order; radians, metres) and each
    task marker's distance to its measurement (metres; NaN where the marker is missing)."""

    coordinates: np.ndarray
    coordinate_names: list[str]
    marker_errors_m: np.ndarray
    marker_names: list[str]
    iterations: int

    def error_columns(self) -> dict[str, np.ndarray]:
        """OpenSim's `_ik_marker_errors.sto` columns: the sum of squared marker distances (m^2), their
        RMS and their maximum (m) over the task markers (a marker missing in a frame counts as 0)."""
        squared = np.nan_to_num(self.marker_errors_m ** 2)  # OpenSim counts a missing marker as 0 error
        total = squared.sum(1)
        return {"total_squared_error": total, "marker_error_RMS": np.sqrt(total / squared.shape[1]),
                "marker_error_max": np.sqrt(squared.max(1))}


def pick_device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


class BatchedIk:
    """Inverse kinematics of `layer`'s model for `tasks`; `solve` takes measured markers per frame."""

    def __init__(self, layer: SkeletalModel, tasks: IkTasks, settings: IkSettings | None = None):
        self.settings = settings or IkSettings()
        self.device = pick_device(self.settings.device)
        dtype = self.settings.dtype
        self.layer = layer.to(device=self.device, dtype=dtype)
        names = layer.coordinate_names
        self.marker_names = [m for m in layer.marker_names if tasks.marker_weights.get(m, 0.0) > 0]
        if not self.marker_names:
            raise D3keError(f"{layer.spec.path}: no marker of the IK task set is on the model: check the task "
                            f"set's marker names against the model's MarkerSet")
        marker_index = [layer.marker_names.index(m) for m in self.marker_names]
        self._marker_index = torch.as_tensor(marker_index, device=self.device)
        self._marker_w = torch.as_tensor([tasks.marker_weights[m] for m in self.marker_names], dtype=dtype,
                                         device=self.device)
        self.free = [names.index(n) for n in layer.free_coordinate_names]
        self._free = torch.as_tensor(self.free, device=self.device)
        unknown = [c for c in tasks.coordinate_tasks if c not in names]
        if unknown:
            raise D3keError(f"{layer.spec.path}: coordinate tasks name {unknown}, not coordinates of the model")
        tasks_free = [(self.free.index(names.index(c)), w, v) for c, (w, v) in tasks.coordinate_tasks.items()
                      if w > 0 and names.index(c) in self.free]  # a locked or coupled coordinate cannot move
        defaults = layer.default_values.to(dtype).cpu()
        self._task_cols = torch.as_tensor([i for i, _, _ in tasks_free], dtype=torch.long, device=self.device)
        self._task_w = torch.as_tensor([w for _, w, _ in tasks_free], dtype=dtype, device=self.device)
        self._task_value = torch.as_tensor([float(defaults[self.free[i]]) if v is None else v for i, _, v in tasks_free],
                                           dtype=dtype, device=self.device)
        specs = layer.spec.coordinates
        lo = [specs[i].range[0] if specs[i].clamped else -np.inf for i in self.free]
        hi = [specs[i].range[1] if specs[i].clamped else np.inf for i in self.free]
        self._lo = torch.as_tensor(lo, dtype=dtype, device=self.device)
        self._hi = torch.as_tensor(hi, dtype=dtype, device=self.device)
        self._defaults = defaults.to(self.device)
        # which joints move which task markers, and the chain rule of coupled coordinates
        moves = layer.joint_moves_body()[:, layer.marker_body_index.cpu().numpy()[marker_index]]
        self._moves = torch.as_tensor(moves, dtype=dtype, device=self.device)  # (joints, markers)
        self._couplers = [(dep, ind, layer.functions[f]) for dep, ind, f in layer._couplers]
        self._unbounded_rotations = [k for k, i in enumerate(self.free) if specs[i].rotational and not specs[i].clamped]

    # -- kinematics and Jacobian ---------------------------------------------------------------------

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        q = self._defaults.expand(x.shape[0], -1).clone()
        q[:, self._free] = x
        return q  # locked and coupled values are set by the layer

    def _markers(self, x: torch.Tensor, jacobian: bool):
        """Task markers (B, M, 3) at free coordinates `x` and, with `jacobian`, d markers / d x
        (B, M, 3, free)."""
        motion: list[JointMotion] | None = [] if jacobian else None
        q = self._full(x)
        markers = self.layer(q, motion=motion).markers_m[:, self._marker_index]
        if not jacobian:
            return markers, None
        # d marker / d q_c = sum over the axes t that c drives: rate_t * axis_t x (marker - origin_t) for
        # a rotation, rate_t * direction_t for a translation, where joint t moves the marker.  Summed
        # per (joint, coordinate) pair first: turn part A = sum rate * axis, point part
        # P = sum rate * axis x origin - rate * direction, then J = mask * (A x marker - P).
        pairs: dict[tuple[int, int], list] = {}
        for k, joint in enumerate(motion):
            for axis, ci, rate in joint.turns:
                w = axis * rate[:, None]
                entry = pairs.setdefault((k, ci), [0, 0])
                entry[0] = entry[0] + w
                entry[1] = entry[1] + torch.linalg.cross(w, joint.origin_m)
            for direction, ci, rate in joint.shifts:
                entry = pairs.setdefault((k, ci), [0, 0])
                entry[1] = entry[1] - direction * rate[:, None]
        keys = list(pairs)
        zero = torch.zeros_like(markers[:, 0])
        turn = torch.stack([zero if isinstance(pairs[key][0], int) else pairs[key][0] for key in keys], 2)
        point = torch.stack([zero if isinstance(pairs[key][1], int) else pairs[key][1] for key in keys], 2)
        # A x marker per component, broadcast to (B, M, 3, pairs): the solver's layout
        ax, ay, az = (t[:, None, :] for t in turn.unbind(1))
        mx, my, mz = (t[:, :, None] for t in markers.unbind(-1))
        per_pair = torch.stack([ay * mz - az * my, az * mx - ax * mz, ax * my - ay * mx], 2) - point[:, None]
        per_pair *= self._pair_mask(tuple(k for k, _ in keys))
        coordinates = [c for _, c in keys]
        if not self._couplers and len(set(coordinates)) == len(coordinates):  # one pair per coordinate
            where = {c: i for i, c in enumerate(coordinates)}
            padded = torch.cat([per_pair, torch.zeros_like(per_pair[..., :1])], -1)  # a free coordinate
            return markers, padded[..., [where.get(c, len(keys)) for c in self.free]]  # that moves no marker
        n = len(self.layer.coordinate_names)
        jac = torch.zeros(*markers.shape, n, dtype=x.dtype, device=x.device)
        jac.index_add_(3, torch.as_tensor(coordinates, device=x.device), per_pair)
        if self._couplers:
            q_full = self.layer.full_coordinates(q)
            for dep, ind, fn in self._couplers:  # q_dep = f(q_ind)
                jac[..., ind] += jac[..., dep] * fn.derivative(q_full[:, ind])[:, None, None]
        return markers, jac[..., self._free]  # (B, M, 3, free)

    def _pair_mask(self, joints: tuple[int, ...]) -> torch.Tensor:
        """(1, M, 1, pairs): whether each pair's joint moves each task marker (the same every call)."""
        if getattr(self, "_mask_key", None) != joints:
            self._mask_key, self._mask = joints, self._moves[list(joints)].T[None, :, None, :].contiguous()
        return self._mask

    def _cost(self, markers, x, measured, weight):
        """OpenSim's IK objective (times 2): the marker term is normalised by the frame's total weight."""
        diff = markers - measured
        cost = (weight * (diff.nan_to_num() ** 2).sum(-1)).sum(-1)
        if len(self._task_cols):
            cost = cost + (self._task_w * (x[:, self._task_cols] - self._task_value) ** 2).sum(-1)
        return cost

    # -- the solver ----------------------------------------------------------------------------------

    def _solve_batch(self, x: torch.Tensor, measured: torch.Tensor, weight: torch.Tensor,
                     max_iterations: int) -> tuple[torch.Tensor, int]:
        """Levenberg-Marquardt from `x` (B, free) for measured markers (B, M, 3), per-frame marker
        weights (B, M) (0 where missing); frames stop one by one."""
        s = self.settings
        x = torch.clamp(x, self._lo, self._hi)
        markers, jac = self._markers(x, True)
        cost = self._cost(markers, x, measured, weight)
        damping = torch.full_like(cost, 1e-3)
        active = torch.arange(len(x), device=x.device)
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        iterations = 0
        for iterations in range(1, max_iterations + 1):
            if len(active) == 0:
                break
            xa, ja, wa = x[active], jac[active], weight[active]
            resid = (markers[active] - measured[active]).nan_to_num()  # (A, M, 3)
            jw = ja * wa[:, :, None, None]
            h = torch.einsum("amki,amkj->aij", jw, ja)
            g = torch.einsum("amki,amk->ai", jw, resid)
            if len(self._task_cols):
                h[:, self._task_cols, self._task_cols] += self._task_w
                g[:, self._task_cols] += self._task_w * (xa[:, self._task_cols] - self._task_value)
            if s.gradient_tolerance:  # OpenSim's optimizer stops on a small gradient of its goal
                flat = g.abs().amax(-1) <= s.gradient_tolerance
                if flat.any():
                    active = active[~flat]
                    if len(active) == 0:
                        break
                    xa, ja, wa, h, g = xa[~flat], ja[~flat], wa[~flat], h[~flat], g[~flat]
            # a coordinate at a bound that the descent pushes further out stays put (active set):
            # projecting its step back would stall the others
            held = ((xa <= self._lo + 1e-12) & (g > 0)) | ((xa >= self._hi - 1e-12) & (g < 0))
            if held.any():
                free = (~held).to(h.dtype)
                h = h * free[:, :, None] * free[:, None, :] + torch.diag_embed(held.to(h.dtype))
                g = g * free
            diag = torch.diagonal(h, dim1=1, dim2=2)
            lhs = h + torch.diag_embed(damping[active, None] * diag) + 1e-12 * eye
            step = torch.linalg.solve(lhs, -g)
            # a trust region: a weakly observed coordinate (a wrist seen by two markers) would otherwise
            # spin by whole turns in one step and land on another branch of the same marker fit
            step = step * (s.max_step / step.abs().amax(-1, keepdim=True).clamp_min(s.max_step))
            trial = torch.clamp(xa + step, self._lo, self._hi)
            t_markers, t_jac = self._markers(trial, True)
            t_cost = self._cost(t_markers, trial, measured[active], wa)
            better = t_cost < cost[active]
            keep = active[better]
            change = (cost[active] - t_cost).abs()
            x[keep], markers[keep], jac[keep] = trial[better], t_markers[better], t_jac[better]
            done = better & (change <= s.relative_tolerance * cost[active] + 1e-14)
            done |= (trial - xa).abs().amax(-1) < 1e-10  # the step vanished (a bound, or converged)
            cost[keep] = t_cost[better]
            damping[active] = torch.where(better, damping[active] / 3, damping[active] * 4)
            active = active[~done]
        return x, iterations

    def _solve_frames(self, x, measured, weight, idx, max_iterations) -> int:
        """Solve frames `idx` from `x[idx]` in batches of `max_batch`, writing into `x`."""
        iterations = 0
        for b0 in range(0, len(idx), self.settings.max_batch):
            part = idx[b0:b0 + self.settings.max_batch]
            x[part], it = self._solve_batch(x[part], measured[part], weight[part], max_iterations)
            iterations = max(iterations, it)
        return iterations

    def _track(self, x, measured, weight) -> int:
        """OpenSim's order: the first frame from the default pose, then chunks of consecutive frames,
        each started from the previous chunk's last two solutions extrapolated."""
        s = self.settings
        n = len(x)
        x[:1], iterations = self._solve_batch(x[:1], measured[:1], weight[:1], s.max_iterations)
        for c0 in range(1, n, s.chunk_frames):
            idx = torch.arange(c0, min(n, c0 + s.chunk_frames), device=x.device)
            last = x[c0 - 1]
            velocity = (last - x[c0 - 2]) if c0 >= 2 else torch.zeros_like(last)
            ahead = (idx - (c0 - 1)).to(x.dtype)[:, None]
            x[idx], it = self._solve_batch(last + velocity * ahead, measured[idx], weight[idx], s.max_iterations)
            iterations += it
        return iterations

    def _frame_costs(self, x, measured, weight) -> torch.Tensor:
        s = self.settings
        return torch.cat([self._cost(self._markers(x[b0:b0 + s.max_batch], False)[0], x[b0:b0 + s.max_batch],
                                     measured[b0:b0 + s.max_batch], weight[b0:b0 + s.max_batch])
                          for b0 in range(0, len(x), s.max_batch)])

    def _unwrap(self, x: torch.Tensor) -> torch.Tensor:
        """Unbounded rotations by whole turns along time, the first frame's nearest its default value:
        the same marker fit OpenSim, tracking frame to frame from the default pose, reports."""
        for k in self._unbounded_rotations:
            turns = torch.round((x[1:, k] - x[:-1, k]) / (2 * np.pi))
            x[1:, k] -= 2 * np.pi * torch.cumsum(turns, 0)
            x[:, k] -= 2 * np.pi * torch.round((x[0, k] - self._defaults[self.free[k]]) / (2 * np.pi))
        return x

    def solve(self, measured_m: np.ndarray, log=lambda m: None) -> IkSolution:
        """`measured_m`: (frames, task markers, 3) in `self.marker_names` order, metres in ground, NaN
        where a marker is missing in a frame."""
        if self.device.type != "cpu":
            return self._solve(measured_m, log)
        # one CPU thread: the solve is many small sequential operations, which several threads only
        # slow down (31 Hamner frames: 1.1 s on one thread, 15 s on two beside a training)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._solve(measured_m, log)
        finally:
            torch.set_num_threads(threads)

    def _solve(self, measured_m: np.ndarray, log) -> IkSolution:
        s = self.settings
        dtype, device = s.dtype, self.device
        measured = torch.as_tensor(np.asarray(measured_m, float), dtype=dtype, device=device)
        if measured.ndim != 3 or measured.shape[1:] != (len(self.marker_names), 3):
            raise D3keError(f"inverse kinematics: expected measured markers of shape (frames, "
                            f"{len(self.marker_names)}, 3), got {tuple(measured.shape)}")
        present = torch.isfinite(measured).all(-1)
        weight = self._marker_w[None] * present
        # OpenSim's marker goal is a weighted mean: it matters beside coordinate tasks' weights
        weight = weight / weight.sum(-1, keepdim=True).clamp_min(1e-12)
        n = len(measured)
        every = torch.arange(n, device=device)
        x = self._defaults[self._free][None].repeat(n, 1)
        if s.chunk_frames:
            iterations = self._track(x, measured, weight)
        else:
            iterations = self._solve_frames(x, measured, weight, every, s.max_iterations)
        cost = self._frame_costs(x, measured, weight)
        for round_ in range(s.repair_rounds):
            suspect = self._suspects(cost)
            if not suspect.any() or suspect.all():
                break
            good = every[~suspect]
            idx = every[suspect]
            nearest = good[(idx[:, None] - good[None]).abs().argmin(1)]
            trial = x.clone()
            trial[idx] = x[nearest]
            iterations += self._solve_frames(trial, measured, weight, idx, s.max_iterations)
            t_cost = self._frame_costs(trial[idx], measured[idx], weight[idx])
            better = t_cost < cost[idx] * (1 - 1e-9)
            log(f"inverse kinematics: repair round {round_ + 1}: {int(better.sum())} of {len(idx)} frames "
                f"with a large error improved from a neighbour's solution")
            if not better.any():
                break
            x[idx[better]], cost[idx[better]] = trial[idx[better]], t_cost[better]
        x = self._unwrap(x)
        with torch.no_grad():
            q = self.layer.full_coordinates(self._full(x))
            markers = torch.cat([self.layer(q[b0:b0 + s.max_batch]).markers_m[:, self._marker_index]
                                 for b0 in range(0, n, s.max_batch)])
            errors = torch.linalg.norm(markers - measured, dim=-1)
        return IkSolution(q.cpu().numpy(), list(self.layer.coordinate_names), errors.cpu().numpy(),
                          list(self.marker_names), iterations)

    def _suspects(self, cost: torch.Tensor) -> torch.Tensor:
        """Frames whose error is well above their neighbours' (a local minimum away from the branch
        the sequence follows)."""
        s = self.settings
        half = s.repair_window // 2
        padded = torch.nn.functional.pad(cost[None, None], (half, half), mode="replicate")[0, 0]
        local = padded.unfold(0, 2 * half + 1, 1).median(-1).values
        return cost > s.repair_ratio * local + 1e-12


# -- the `ik_backend: torch` route: an OpenSim InverseKinematicsTool setup, solved here ----------------

def read_ik_task_set(setup: Path, markers_only: bool = False) -> IkTasks:
    """The setup's IKTaskSet as OpenSim 4 reads it: applied marker tasks with their weights (a marker
    without an applied task is not tracked), applied coordinate tasks with `default_value` or
    `manual_value`; an `<IKTaskSet file="...">` is read from that file, beside the setup.  No task
    set: no tasks."""
    from d3ke_assets.biomech.opensim_pipeline import _parse_setup, _tool_element

    tool = _tool_element(_parse_setup(setup).getroot(), "InverseKinematicsTool", setup)
    task_set = tool.find("IKTaskSet")
    if task_set is not None and task_set.get("file"):
        task_set = _parse_setup(setup.parent / task_set.get("file").strip()).getroot()
        task_set = task_set if task_set.tag == "IKTaskSet" else task_set.find("IKTaskSet")
    if task_set is None:
        return IkTasks({})
    markers: dict[str, float] = {}
    coordinates: dict[str, tuple[float, float | None]] = {}
    for task in task_set.iter():
        if task.tag not in ("IKMarkerTask", "IKCoordinateTask"):
            continue
        if (task.findtext("apply") or "true").strip().lower() != "true":
            continue
        weight = float((task.findtext("weight") or "1").strip())
        if task.tag == "IKMarkerTask":
            markers[task.get("name")] = weight
            continue
        if markers_only:
            continue
        kind = (task.findtext("value_type") or "default_value").strip()
        if kind == "manual_value":
            coordinates[task.get("name")] = (weight, float((task.findtext("value") or "0").strip()))
        elif kind == "default_value":
            coordinates[task.get("name")] = (weight, None)
        else:
            raise D3keError(f"{setup}: coordinate task {task.get('name')} takes its value {kind!r}: the torch IK "
                            f"backend follows default_value and manual_value only; use --backend opensim")
    return IkTasks(markers, coordinates)


def solve_ik_setup(setup: Path, settings: IkSettings | None = None, log=lambda m: None):
    """What `InverseKinematicsTool(setup).run()` does, with `BatchedIk`: the setup's model, marker file,
    time range and task set; the `.mot` (degrees) written to its `output_motion_file`.  Returns
    `opensim_pipeline.IkResult`, its `seconds` the model's loading plus the solve."""
    import time

    from d3ke_assets.biomech.formats import read_trc, write_mot
    from d3ke_assets.biomech.opensim_pipeline import IkResult, _parse_setup, _tool_element, setup_time_range

    setup = Path(setup)
    tool = _tool_element(_parse_setup(setup).getroot(), "InverseKinematicsTool", setup)
    files = {tag: (tool.findtext(tag) or "").strip() for tag in ("model_file", "marker_file", "output_motion_file")}
    empty = [tag for tag, name in files.items() if name in ("", "Unassigned")]
    if empty:
        raise D3keError(f"{setup}: {empty} not set: the torch IK backend needs the model, the marker file and "
                        f"the output motion file named in the setup")
    tasks = read_ik_task_set(setup)
    trc = read_trc(setup.parent / files["marker_file"])
    start = time.perf_counter()
    layer = SkeletalModel.from_osim(setup.parent / files["model_file"], torch.float64)
    ik = BatchedIk(layer, IkTasks({m: w for m, w in tasks.marker_weights.items() if m in trc.marker_names},
                                  tasks.coordinate_tasks), settings)
    time_range = setup_time_range(setup, "InverseKinematicsTool")
    rows = np.ones(len(trc.time_s), bool) if time_range is None else \
        (trc.time_s >= time_range[0] - 1e-9) & (trc.time_s <= time_range[1] + 1e-9)
    if not rows.any():
        raise D3keError(f"{setup}: no frame of {files['marker_file']} in the time range {time_range}")
    measured = trc.positions_m[rows][:, [trc.marker_names.index(m) for m in ik.marker_names]]
    solution = ik.solve(measured, log)
    seconds = time.perf_counter() - start
    mot = setup.parent / files["output_motion_file"]
    mot.parent.mkdir(parents=True, exist_ok=True)
    write_mot(mot, trc.time_s[rows], solution.coordinate_names, solution.coordinates, list(layer.rotational))
    log(f"torch IK: {int(rows.sum())} frames in {seconds:.2f} s on {ik.device} ({solution.iterations} iterations)")
    return IkResult(mot, trc.time_s[rows], solution.coordinate_names, solution.coordinates, seconds)
