"""Virtual motion-capture markers from AMASS SMPL+H parameters (real BML-MoVi path).

AMASS ships BML-MoVi as SMPL+H parameters per trial
(`Subject_<ID>_F_MoSh/Subject_<ID>_F_<n>_poses.npz`: `poses` (F, 156) axis-angle
for 52 joints, `trans` (F, 3) m, `betas` (16,), `gender`, `mocap_framerate`).
Posing the SMPL+H body with `smplx` and reading a fixed mesh vertex per marker
gives the project's 47 Plug-in-Gait-like markers, which OpenSim's scaling and
inverse kinematics then consume like measured markers.

The body model is not redistributable: the user downloads the "Extended SMPL+H
model" (the one AMASS uses) from https://mano.is.tue.mpg.de after registering and
points `D3KE_SMPLH_DIR` at the folder holding `female/`, `male/`, `neutral/`
`model.npz`.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from d3ke_assets.biomech.formats import MarkerTrajectories, write_trc
from d3ke_assets.errors import D3keError, RawDataError

SMPLH_DIR_ENV = "D3KE_SMPLH_DIR"
GENDERS = ("female", "male", "neutral")
N_VERTICES = 6890  # SMPL and SMPL+H share this mesh
N_BODY_POSE = 66  # global orient 3 + 21 body joints x 3
N_FULL_POSE = 156  # + 15 joints per hand x 3, both hands
MODEL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
SMPLH_SOURCE = ("the 'Extended SMPL+H model' (used by AMASS) from https://mano.is.tue.mpg.de "
                "after free registration")

# One SMPL / SMPL+H template vertex per marker, in the project model's marker order.
# Source: the MoSh++ marker superset of the AMASS authors (nghorbani/moshpp,
# src/moshpp/marker_layout/marker_vids.py, `all_marker_vids['smpl']`, which is also
# used for 'smplh'), read through MoSh++'s own label map (marker_layout/labels_map.py)
# for names that differ from Plug-in-Gait:
#   ASI = FWT (front waist), PSI = BWT (back waist), KNM = KNI (inner knee),
#   MED = HEEI (medial malleolus, "ANKIN"), ELM = ELBIN (inner elbow),
#   WRA = IWR (inner/radial wrist), WRB = OWR (outer/ulnar wrist).
# None chosen by judgement. Left and right entries are the same named landmark
# labelled on each side by MoSh++; their mirror symmetry could not be checked
# numerically here because the SMPL mesh itself is licence-restricted.
MARKER_VERTICES: dict[str, int] = {
    "RASI": 4343, "LASI": 857, "RPSI": 6544, "LPSI": 3122,
    "RTHI": 4927, "RKNE": 4538, "RKNM": 4544, "RTIB": 4598, "RANK": 6728, "RMED": 6832,
    "RHEE": 6786, "RMT5": 6747, "RTOE": 6633,
    "LTHI": 1454, "LKNE": 1053, "LKNM": 1058, "LTIB": 1112, "LANK": 3327, "LMED": 3432,
    "LHEE": 3387, "LMT5": 3346, "LTOE": 3233,
    "C7": 3470, "T10": 3016, "CLAV": 3171, "STRN": 3506, "RBAK": 5273,
    "RSHO": 5322, "LSHO": 1861,
    "RFHD": 3512, "LFHD": 0, "RBHD": 3694, "LBHD": 182,
    "RUPA": 4918, "RELB": 5135, "RELM": 5194, "RWRB": 5568, "RFRM": 5037, "RWRA": 5573, "RFIN": 5635,
    "LUPA": 1443, "LELB": 1666, "LELM": 1725, "LWRB": 2108, "LFRM": 1568, "LWRA": 2112, "LFIN": 2174,
}

# AMASS is Z-up. A body with zero pose faces +z_smpl with its left on +x_smpl (Y-up);
# AMASS stands it up with a +90 deg root rotation about x, so a subject at heading zero
# faces -y_amass with the left side on +x_amass. OpenSim is Y-up, X forward, Z right,
# hence (x, y, z)_opensim = (-y, z, -x)_amass: a proper rotation (det +1), not a mirror,
# so left markers stay on the left.
AMASS_TO_OPENSIM = np.array([[0.0, -1.0, 0.0],
                             [0.0, 0.0, 1.0],
                             [-1.0, 0.0, 0.0]])


SMPLH_VERTICES = 6890


def read_vertex_table(path: str | Path) -> dict[str, int]:
    """A user's marker set on the SMPL+H body: marker name -> vertex id, as JSON (`{"RASI": 3156, ...}`)
    or CSV (`marker,vertex` rows, a header line allowed), for a model whose markers are not the
    project's 47 (`D3KE_AMASS_MARKERS`)."""
    path = Path(path)
    fix = "give marker name -> SMPL+H vertex id (0-6889) as JSON or as CSV rows marker,vertex (D3KE_AMASS_MARKERS)"
    try:
        text = path.read_text()
    except OSError as exc:
        raise D3keError(f"{path}: cannot read the vertex table ({exc.strerror}): {fix}") from None
    try:
        if path.suffix.lower() == ".json":
            table = json.loads(text)
            pairs = list(table.items()) if isinstance(table, dict) else None
        else:
            rows = [line.split(",") for line in text.splitlines() if line.strip()]
            if rows and not rows[0][-1].strip().isdigit():
                rows = rows[1:]  # a header
            pairs = [(r[0].strip(), r[1].strip()) for r in rows] if all(len(r) == 2 for r in rows) else None
        table = {str(m): int(v) for m, v in pairs} if pairs else None
    except (ValueError, TypeError):
        table = None
    if not table:
        raise D3keError(f"{path}: not a vertex table: {fix}")
    bad = {m: v for m, v in table.items() if not 0 <= v < SMPLH_VERTICES}
    if bad:
        raise D3keError(f"{path}: vertex ids {bad} are not SMPL+H vertices: {fix}")
    return table


def smplh_dir(value: str | Path | None) -> Path:
    """The SMPL+H model folder the settings name (`D3KE_SMPLH_DIR`)."""
    value = str(value or "").strip()
    if not value:
        raise D3keError(
            f"{SMPLH_DIR_ENV} is not set: point it at the folder holding "
            f"female/model.npz, male/model.npz, neutral/model.npz ({SMPLH_SOURCE})")
    return Path(value).expanduser()


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays of plain values and nothing else: a crafted file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module, name)


def _object_array_without_code(path: Path, key: str) -> np.ndarray:
    """An object array of an .npz (AMASS stores `gender` so) read without numpy's unrestricted unpickling."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            read_header(fh)
            return np.asarray(_ArrayOnlyUnpickler(fh).load())
    except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, ValueError, EOFError) as exc:
        raise RawDataError(f"{path}: '{key}' is not a plain array ({exc}): download the BMLmovi SMPL+H archive "
                           f"again") from None


def _gender_text(value, path: Path) -> str:
    """AMASS stores gender as a 0-d str array, bytes, or (rarely) an object array."""
    value = np.asarray(value)
    if value.size != 1:
        raise RawDataError(f"{path}: 'gender' holds {value.size} values, expected one string")
    item = value.reshape(()).item()
    if isinstance(item, bytes):
        item = item.decode("utf-8", "replace")
    gender = str(item).strip().lower()
    if gender not in GENDERS:
        raise RawDataError(f"{path}: gender {gender!r} is not one of {', '.join(GENDERS)}")
    return gender


def load_amass_trial(path: str | Path) -> dict:
    """poses (F, >=66), trans (F, 3), betas, gender, rate_hz of one AMASS trial, validated."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise RawDataError(f"{path}: AMASS pose file not found") from None
    except Exception as exc:  # numpy raises several types for a damaged zip
        raise RawDataError(f"{path}: cannot be read as .npz ({type(exc).__name__}): download it again") from None
    with data:
        missing = [k for k in ("poses", "trans", "betas", "gender", "mocap_framerate") if k not in data.files]
        if missing:
            raise RawDataError(f"{path}: AMASS pose file lacks {missing}: download the BMLmovi SMPL+H archive again")
        try:
            poses = np.asarray(data["poses"], float)
            trans = np.asarray(data["trans"], float)
            betas = np.asarray(data["betas"], float).reshape(-1)
            rate = float(np.asarray(data["mocap_framerate"]).reshape(()))
        except (ValueError, TypeError) as exc:
            raise RawDataError(f"{path}: poses/trans/betas/mocap_framerate are not numbers ({exc})") from None
        try:
            gender_raw = data["gender"]
        except ValueError:
            gender_raw = None  # an object array: needs pickle, read it below
    if gender_raw is None:
        gender_raw = _object_array_without_code(path, "gender")
    gender = _gender_text(gender_raw, path)

    if poses.ndim != 2 or poses.shape[1] < N_BODY_POSE:
        raise RawDataError(f"{path}: 'poses' has shape {poses.shape}, expected (frames, 156) SMPL+H axis-angle")
    if poses.shape[0] == 0:
        raise RawDataError(f"{path}: the trial has zero frames")
    if trans.shape != (poses.shape[0], 3):
        raise RawDataError(f"{path}: 'trans' has shape {trans.shape}, expected ({poses.shape[0]}, 3)")
    if not (rate > 0 and np.isfinite(rate)):
        raise RawDataError(f"{path}: mocap_framerate {rate} is not a positive rate")
    for name, arr in (("poses", poses), ("trans", trans), ("betas", betas)):
        if not np.all(np.isfinite(arr)):
            raise RawDataError(f"{path}: '{name}' contains NaN or infinite values")
    return {"poses": poses, "trans": trans, "betas": betas, "gender": gender, "rate_hz": rate}


def _import_smplx():
    try:
        import smplx  # heavy and optional: only the real-data path needs it
    except ImportError:
        raise D3keError("the SMPL+H body model needs the 'smplx' package: pip install 'd3ke_assets[smpl]'") from None
    return smplx


def smplh_model_path(smplh_dir: str | Path, gender: str) -> Path:
    """`<dir>/<gender>/model.npz` (AMASS layout) or `<dir>/SMPLH_<GENDER>.npz` (smplx layout)."""
    smplh_dir = Path(smplh_dir)
    candidates = [smplh_dir / gender / "model.npz", smplh_dir / f"SMPLH_{gender.upper()}.npz"]
    for c in candidates:
        if c.is_file():
            return c
    raise D3keError(
        f"SMPL+H model missing: {candidates[0]} (nor {candidates[1]}); download {SMPLH_SOURCE} and unpack it "
        f"so that {smplh_dir} (set by {SMPLH_DIR_ENV}) holds {gender}/model.npz")


def _read_model(path: Path) -> SimpleNamespace:
    """The arrays smplx's SMPLH needs; hand PCA fields are absent in AMASS's files, so zero them."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise D3keError(f"{path}: cannot be read as an SMPL+H .npz ({type(exc).__name__}): download it again") from None
    with data:
        missing = [k for k in MODEL_KEYS if k not in data.files]
        if missing:
            raise D3keError(f"{path}: SMPL+H model lacks {missing}: it must be {SMPLH_SOURCE}")
        arrays = {k: np.asarray(data[k]) for k in MODEL_KEYS}
    n_joints = arrays["J_regressor"].shape[0]
    if arrays["v_template"].shape != (N_VERTICES, 3) or n_joints != 52 or arrays["weights"].shape != (N_VERTICES, 52):
        raise D3keError(
            f"{path}: not an SMPL+H model (v_template {arrays['v_template'].shape}, "
            f"{n_joints} joints; expected ({N_VERTICES}, 3) and 52)")
    # Used only because smplx slices them; AMASS hand poses are absolute (flat_hand_mean).
    arrays["hands_componentsl"] = np.zeros((45, 45))
    arrays["hands_componentsr"] = np.zeros((45, 45))
    arrays["hands_meanl"] = np.zeros(45)
    arrays["hands_meanr"] = np.zeros(45)
    return SimpleNamespace(**arrays)


def shaped_template(model: SimpleNamespace, betas: np.ndarray, source: Path) -> np.ndarray:
    """v_template + shapedirs @ betas (the SMPL shape blend), float64."""
    shapedirs = np.asarray(model.shapedirs, float)
    if betas.size > shapedirs.shape[-1]:
        raise RawDataError(
            f"{source}: {betas.size} betas but the SMPL+H model has {shapedirs.shape[-1]} shape components")
    return np.asarray(model.v_template, float) + shapedirs[:, :, :betas.size] @ betas


def virtual_markers(poses_npz: str | Path, smplh_dir: str | Path, gender: str | None = None,
                    batch_frames: int = 512, vertices: dict[str, int] | None = None) -> MarkerTrajectories:
    """The markers of one AMASS trial (the project's 47, or `vertices`: name -> SMPL+H vertex id),
    metres, OpenSim frame (Y up, X forward, Z right)."""
    vertices = vertices or MARKER_VERTICES
    trial = load_amass_trial(poses_npz)
    gender = (gender or trial["gender"]).strip().lower()
    if gender not in GENDERS:
        raise D3keError(f"gender {gender!r} is not one of {', '.join(GENDERS)}")
    model_path = smplh_model_path(smplh_dir, gender)
    smplx = _import_smplx()
    import torch

    model_data = _read_model(model_path)
    # smplx 0.1.28 caps any model with < 300 shape components at 10 betas, but AMASS
    # BMLmovi uses 16: apply the shape blend here and hand smplx the shaped template
    # (identical maths, betas constant over a trial), posing it with zero betas.
    v_shaped = shaped_template(model_data, trial["betas"], Path(poses_npz))
    with contextlib.redirect_stdout(io.StringIO()):  # silence that cap's misleading warning
        body = smplx.SMPLH(
            model_path=str(model_path), data_struct=model_data, gender=gender, v_template=v_shaped,
            use_pca=False, flat_hand_mean=True, num_betas=16, batch_size=1,
            create_transl=False, dtype=torch.float32)
    body.eval()

    poses = trial["poses"]
    n_frames = poses.shape[0]
    # 156 columns = SMPL+H; other widths (e.g. 165 for SMPL-X) share only the first 66.
    hands = poses[:, N_BODY_POSE:N_FULL_POSE] if poses.shape[1] == N_FULL_POSE else np.zeros((n_frames, 90))
    idx = torch.as_tensor(list(vertices.values()), dtype=torch.long)
    out = np.empty((n_frames, len(vertices), 3))
    step = max(1, int(batch_frames))

    def f32(a: np.ndarray):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)

    with torch.no_grad():
        for start in range(0, n_frames, step):
            sl = slice(start, min(start + step, n_frames))
            b = sl.stop - sl.start
            res = body(
                betas=torch.zeros((b, body.num_betas)),
                global_orient=f32(poses[sl, 0:3]), body_pose=f32(poses[sl, 3:N_BODY_POSE]),
                left_hand_pose=f32(hands[sl, :45]), right_hand_pose=f32(hands[sl, 45:]),
                return_verts=True)
            out[sl] = res.vertices[:, idx, :].double().numpy()
    # Translation in float64 so metres-away trials keep sub-micrometre precision.
    out += trial["trans"][:, None, :]
    positions = out @ AMASS_TO_OPENSIM.T
    rate = trial["rate_hz"]
    return MarkerTrajectories(list(vertices), np.arange(n_frames) / rate, positions, rate)


def write_trial_trc(poses_npz: str | Path, smplh_dir: str | Path, out_trc: str | Path,
                    gender: str | None = None, vertices: dict[str, int] | None = None) -> MarkerTrajectories:
    """Virtual markers of one AMASS trial written as an OpenSim `.trc` in millimetres."""
    traj = virtual_markers(poses_npz, smplh_dir, gender=gender, vertices=vertices)
    write_trc(out_trc, traj, units="mm")
    return traj
