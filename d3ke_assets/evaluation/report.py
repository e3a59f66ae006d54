"""The robustness report: error against severity per augmentation, predicted and true coordinate
curves for a few test trials, test frames with the predicted skeleton drawn over them, and one
Markdown file that links them all."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from d3ke_assets.frames.augmentations import AUGMENTATIONS
from d3ke_assets.frames.processing import to_crop_px
from d3ke_assets.frames.reader import FrameDataset

CURVE_COORDINATES = ("hip_flexion_r", "knee_angle_r", "arm_add_r", "elbow_flex_r")
SEVERITY_PNG, CURVES_PNG, OVERLAY_PNG, REPORT_MD = "error_vs_severity.png", "trial_curves.png", "overlays.png", \
    "report.md"
POLICY_PNG, POLICY_CSV = "augmentation_policies.png", "augmentation_policies.csv"
PNGS = (SEVERITY_PNG, CURVES_PNG, OVERLAY_PNG)

# targets of the training-time augmentation (the robust policy against the current one, same data and seed)
FLIP_TO_CLEAN_MAX = 1.2  # mirrored frames: MAE at most this times the clean MAE
RISE_SHARE_MAX = 0.5  # other conditions: rise over clean at most this share of the current policy's ...
RISE_NEGLIGIBLE_DEG = 0.1  # ... or within this of clean
CLEAN_TO_CURRENT_MAX = 1.03  # clean frames: at most this times the current policy's MAE


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def severity_png(table, path: Path, metric: str = "coordinate_mae_deg") -> Path:
    """One panel per augmentation: `metric` against severity per model and view, the clean value dashed."""
    plt = _pyplot()
    names = [n for n in AUGMENTATIONS if n != "clean"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        for (model, view), group in table.groupby(["model", "view"]):
            clean = group[group.augmentation == "clean"][metric].mean()
            rows = group[group.augmentation == name].sort_values("severity")
            line, = ax.plot(rows.severity, rows[metric], "o-", label=f"{model} {view}")
            ax.axhline(clean, color=line.get_color(), ls="--", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("severity")
    np.atleast_1d(axes)[0].set_ylabel(metric.replace("_", " "))
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def policy_comparison(robust, current, metric: str = "coordinate_mae_deg"):
    """Per model, view, augmentation and severity: `metric` under both training policies, the rise over
    each policy's clean value, the target that applies and whether the robust policy meets it."""
    import pandas as pd

    keys = ["model", "view", "augmentation", "severity"]
    both = robust[keys + [metric]].merge(current[keys + [metric]], on=keys, suffixes=("_robust", "_current"))
    clean = both[both.augmentation == "clean"].set_index(["model", "view"])
    rows = []
    for r in both.itertuples(index=False):
        base = clean.loc[(r.model, r.view)]
        rob, cur = getattr(r, f"{metric}_robust"), getattr(r, f"{metric}_current")
        rob_clean, cur_clean = base[f"{metric}_robust"], base[f"{metric}_current"]
        rise_rob, rise_cur = rob - rob_clean, cur - cur_clean
        if r.augmentation == "clean":
            target, met = f"<= {CLEAN_TO_CURRENT_MAX:g} x current", rob <= CLEAN_TO_CURRENT_MAX * cur
        elif r.augmentation == "flip":
            target, met = f"<= {FLIP_TO_CLEAN_MAX:g} x clean", rob <= FLIP_TO_CLEAN_MAX * rob_clean
        else:
            target = f"rise <= {RISE_SHARE_MAX:g} x current's or <= {RISE_NEGLIGIBLE_DEG:g}"
            met = rise_rob <= RISE_SHARE_MAX * rise_cur or abs(rise_rob) <= RISE_NEGLIGIBLE_DEG
        rows.append({"model": r.model, "view": r.view, "augmentation": r.augmentation, "severity": r.severity,
                     f"current_{metric}": cur, f"robust_{metric}": rob, "current_rise": rise_cur,
                     "robust_rise": rise_rob, "current_to_clean": cur / cur_clean, "robust_to_clean": rob / rob_clean,
                     "target": target, "met": bool(met)})
    return pd.DataFrame(rows)


def policy_png(comparison, path: Path, metric: str = "coordinate_mae_deg") -> Path:
    """One panel per augmentation: the frame model's `metric` against severity under each training
    policy, per view (current dashed, robust solid), each policy's clean value as a dotted line."""
    plt = _pyplot()
    names = [n for n in AUGMENTATIONS if n != "clean"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), sharey=True)
    frame = comparison[comparison.model == "frame_model"]
    for ax, name in zip(np.atleast_1d(axes), names):
        for k, (view, group) in enumerate(frame.groupby("view")):
            rows = group[group.augmentation == name].sort_values("severity")
            clean = group[group.augmentation == "clean"]
            for policy, style in (("current", "--"), ("robust", "-")):
                colour = f"C{2 * k + (policy == 'robust')}"
                ax.plot(rows.severity, rows[f"{policy}_{metric}"], "o" + style, color=colour, label=f"{policy} {view}")
                ax.axhline(float(clean[f"{policy}_{metric}"].iloc[0]), color=colour, ls=":", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("severity")
    np.atleast_1d(axes)[0].set_ylabel(f"frame model {metric.replace('_', ' ')}")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.suptitle("training-time augmentation: current (dashed) against robust (solid); clean dotted", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def policy_markdown(comparison) -> list[str]:
    """The comparison as a Markdown table, with how many conditions meet their target."""
    met = comparison[comparison.augmentation != "clean"]
    lines = [f"Conditions meeting their target: {int(comparison.met.sum())} of {len(comparison)} "
             f"(flip and the other augmentations: {int(met.met.sum())} of {len(met)}).", "",
             "| model | view | augmentation | severity | current MAE (deg) | robust MAE (deg) | current rise | "
             "robust rise | target | met |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.model} | {r.view} | {r.augmentation} | {r.severity:g} | {r.current_coordinate_mae_deg:.2f} | "
              f"{r.robust_coordinate_mae_deg:.2f} | {r.current_rise:+.2f} | {r.robust_rise:+.2f} | {r.target} | "
              f"{'yes' if r.met else 'no'} |" for r in comparison.itertuples()]
    return lines


def curves_png(frames: FrameDataset, coordinate_names: list[str], frame_q: np.ndarray, sequence_q: np.ndarray | None,
               path: Path, max_trials: int = 2) -> Path:
    """Predicted and true coordinates over time, for the first trials of `frames` (one subject, one view)."""
    plt = _pyplot()
    trials = list(dict.fromkeys(frames.trial.tolist()))[:max_trials]
    # a model without the project's coordinate names: the coordinates that vary most in the labels
    shown = [c for c in CURVE_COORDINATES if c in coordinate_names] or [
        coordinate_names[i] for i in np.argsort(-frames.labels["coordinates"].std(axis=0))[:len(CURVE_COORDINATES)]]
    fig, axes = plt.subplots(len(trials), len(shown), figsize=(3.2 * len(shown), 2.6 * len(trials)), squeeze=False)
    true = frames.labels["coordinates"]
    for r, trial in enumerate(trials):
        rows = np.flatnonzero(frames.trial == trial)
        rows = rows[np.argsort(frames.frame[rows])]
        for c, name in enumerate(shown):
            i = coordinate_names.index(name)
            ax = axes[r, c]
            ax.plot(np.degrees(true[rows, i]), "k-", lw=1.5, label="true (OpenSim IK)")
            ax.plot(np.degrees(frame_q[rows, i]), "-", lw=1, label="frame model")
            if sequence_q is not None:
                ax.plot(np.degrees(sequence_q[rows, i]), "-", lw=1, label="sequence model")
            ax.set_title(f"{trial}: {name}", fontsize=8)
            ax.set_xlabel("video frame")
    axes[0, 0].set_ylabel("degrees")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def bones(layer) -> list[tuple[int, int]]:
    """(parent joint, child joint) index pairs: a line from the joint that carries a body to each
    joint on that body."""
    spec = layer.spec
    carried_by = {j.child.body: k for k, j in enumerate(spec.joints)}
    return [(carried_by[j.parent.body], k) for k, j in enumerate(spec.joints) if j.parent.body in carried_by]


def overlay_png(frames: FrameDataset, layer, joints_cam_m: np.ndarray, path: Path, n: int = 4) -> Path:
    """`n` frames spread over `frames` with the predicted joint centres drawn on the crop.  The
    prediction is pelvis-relative, so it is placed at the true pelvis (the network does not
    estimate the distance to the camera)."""
    plt = _pyplot()
    rows = np.linspace(0, len(frames) - 1, n).round().astype(int)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8))
    pairs = bones(layer)
    for ax, i in zip(np.atleast_1d(axes), rows):
        cam = frames.camera_model(int(i))
        pelvis = frames.labels["pelvis_origin_m"][i].reshape(3)
        world = pelvis + joints_cam_m[i] @ np.asarray(frames.camera_R[i], float)  # camera -> ground rotation
        true_world = frames.labels["joint_centres_m"][i].reshape(-1, 3)
        crop = frames.crop_px
        uv = to_crop_px(cam.project(world), frames.box[i].astype(float), crop)
        uv_true = to_crop_px(cam.project(true_world), frames.box[i].astype(float), crop)
        ax.imshow(frames.image(int(i)).permute(1, 2, 0).numpy())
        for a, b in pairs:
            ax.plot(uv_true[[a, b], 0], uv_true[[a, b], 1], "-", color="white", lw=2.5, alpha=0.6)
            ax.plot(uv[[a, b], 0], uv[[a, b], 1], "-", color="yellow", lw=1.2)
        ax.set_title(f"{frames.subject[i]} {frames.camera[i]} {frames.trial[i]} {frames.frame[i]}", fontsize=6)
        ax.set_xlim(0, crop)
        ax.set_ylim(crop, 0)
        ax.axis("off")
    fig.suptitle("predicted skeleton (yellow) over the true one (white)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(table, claim, out: Path, frames: FrameDataset, frame_model, sequence_model=None,
                 test_subjects: list[str] = (), current_policy_table=None) -> Path:
    """All plots and `report.md` into `out`; `frames`: one test subject and view for curves and overlays;
    `current_policy_table`: the same evaluation of models trained with the `current` augmentation
    policy (`table`'s were trained with the preset's), compared side by side when given."""
    from d3ke_assets.learning.model import decode_to_numpy
    from d3ke_assets.learning.sequence import predict_head_outputs, predict_sequence

    severity_png(table, out / SEVERITY_PNG)
    outputs = predict_head_outputs(frame_model, frames)
    pred = decode_to_numpy(frame_model, outputs)
    seq_q = predict_sequence(sequence_model, outputs, frames)["coordinates"] if sequence_model is not None else None
    names = list(frame_model.layer.coordinate_names)
    curves_png(frames, names, pred["coordinates"], seq_q, out / CURVES_PNG)
    overlay_png(frames, frame_model.layer, pred["joint_centres_m"], out / OVERLAY_PNG)
    lines = ["# D3KE robustness report", "",
             f"Test subjects: {', '.join(test_subjects)}; "
             f"augmentations: {', '.join(a for a in AUGMENTATIONS if a != 'clean')}.", "",
             "## Error against severity", "", f"![error against severity]({SEVERITY_PNG})", ""]
    summary = table.groupby(["model", "augmentation", "severity"]).coordinate_mae_deg.mean().reset_index()
    lines += ["| model | augmentation | severity | coordinate MAE (deg) |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.model} | {r.augmentation} | {r.severity:g} | {r.coordinate_mae_deg:.2f} |"
              for r in summary.itertuples()]
    if current_policy_table is not None:
        comparison = policy_comparison(table, current_policy_table)
        comparison.to_csv(out / POLICY_CSV, index=False)
        policy_png(comparison, out / POLICY_PNG)
        lines += ["", "## Training-time augmentation: current against robust", "",
                  "The same evaluation of models trained on the same data with the same seed, with the `current` "
                  "policy (small shifts, scales, rotations, colour) and with the preset's `robust` one.", "",
                  f"![augmentation policies]({POLICY_PNG})", ""] + policy_markdown(comparison)
    lines += ["", "## Direct estimation against markers + OpenSim IK", "",
              "| method | view | coordinate MAE (deg) | MPJPE (mm) | PA-MPJPE (mm) |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.method} | {r.view} | {r.coordinate_mae_deg:.2f} | {r.mpjpe_mm:.1f} | {r.pa_mpjpe_mm:.1f} |"
              for r in claim.itertuples()]
    lines += ["", f"## Predicted and true coordinates ({frames.subject[0]}, {frames.camera[0]})", "",
              f"![trial curves]({CURVES_PNG})", "", "## Predicted skeletons", "", f"![overlays]({OVERLAY_PNG})", ""]
    path = out / REPORT_MD
    path.write_text("\n".join(lines))
    return path
