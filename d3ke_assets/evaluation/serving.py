"""A trained model as `d3ke predict` and MLflow users run it: crops in, OpenSim coordinates and
scale factors out.

`Predictor` is a frame model, or a sequence model with the frame model it refines (a sequence
checkpoint carries its frame model: `sequence.attach_frame_model`).  `load_predictor` tells the
checkpoints apart and refuses any other file with one line.

The same predictor is an MLflow pyfunc model (`save_pyfunc_model`), saved with MLflow's
models-from-code (`pyfunc_model.py` is the code MLflow runs to load it; nothing is pickled): the checkpoint and the
OpenSim model are its artifacts, and its signature is

- input: one uint8 tensor (batch, S, S, 3): RGB crops of S pixels (the size it was trained at; `S` in
  the signature), as `d3ke predict` cuts them from a video's frames (a sequence model reads the batch
  as one video's consecutive frames);
- output: one row per crop, one column per coordinate of the OpenSim model, `<coordinate>_deg` for
  rotational ones and `<coordinate>_m` for translational ones, the numbers `d3ke predict`'s `.mot`
  holds, then `<body>_scale_x`, `_y`, `_z`: the predicted per-body scale factors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from d3ke_assets.errors import D3keError

DEFAULT_CROP_PX = 256  # checkpoints written before the input size was recorded
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
CHECKPOINT_ARTIFACT, OSIM_ARTIFACT = "checkpoint", "osim"


@dataclass
class Predictor:
    frame: torch.nn.Module  # learning.model.FrameModel
    crop_px: int
    sequence: torch.nn.Module | None = None  # learning.sequence.SequenceModel

    @property
    def layer(self):
        return self.frame.layer

    @property
    def kind(self) -> str:
        return "sequence model" if self.sequence is not None else "frame model"

    def to(self, device) -> "Predictor":
        self.frame.to(device).eval()
        if self.sequence is not None:
            self.sequence.to(device).eval()
        return self

    @torch.no_grad()
    def head_outputs(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB crops -> (N, F) the frame model's head outputs."""
        from d3ke_assets.learning.model import normalise

        device = next(self.frame.parameters()).device
        images = torch.from_numpy(np.ascontiguousarray(crops, np.uint8)).permute(0, 3, 1, 2)
        return self.frame.head_outputs(normalise(images.to(device))).cpu().numpy()

    def decode(self, head_outputs: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions of every frame from the frame model's head outputs of a whole video, in order:
        the frame model's own, or the sequence model's refinement over time."""
        from d3ke_assets.learning.model import decode_to_numpy
        from d3ke_assets.learning.sequence import refine_video

        if self.sequence is None:
            return decode_to_numpy(self.frame, head_outputs)
        return {k: v.astype(np.float64) for k, v in refine_video(self.sequence, head_outputs).items()}


def load_predictor(checkpoint: Path, osim_path: Path) -> Predictor:
    """The frame model or sequence model in `checkpoint`; any other file is one line saying what it is."""
    from d3ke_assets.learning import sequence, training

    bundle = training.load_checkpoint(checkpoint)
    config = bundle.get("config") if isinstance(bundle, dict) else None
    if not isinstance(config, dict) or "model" not in bundle:
        raise D3keError(f"{checkpoint}: not a d3ke model checkpoint (no model and configuration in it): give "
                        f"frame_model/last.pt or sequence_model/last.pt, or a models:/ URI")
    if "backbone" in config:
        return Predictor(training.load_trained_frame_model(checkpoint, osim_path, bundle),
                         int(bundle.get("crop_px") or DEFAULT_CROP_PX))
    if "variant" in config:
        frame = bundle.get(sequence.FRAME_MODEL_KEY)
        if frame is None:
            raise D3keError(f"{checkpoint}: a sequence-model checkpoint without the frame model it refines (written "
                            f"before d3ke kept it there): materialize sequence_model again, or give the frame "
                            f"model's checkpoint")
        return Predictor(training.load_trained_frame_model(checkpoint, osim_path, frame),
                         int(frame.get("crop_px") or DEFAULT_CROP_PX),
                         sequence.load_trained_sequence_model(checkpoint, osim_path, bundle))
    raise D3keError(f"{checkpoint}: a checkpoint of neither a frame model nor a sequence model")


def coordinate_columns(layer) -> list[str]:
    return [f"{n}_deg" if rot else f"{n}_m" for n, rot in zip(layer.coordinate_names, layer.rotational)]


def scale_columns(layer) -> list[str]:
    return [f"{b}_scale_{a}" for b in layer.body_names for a in "xyz"]


def prediction_table(pred: dict, layer):
    """Predictions -> the served table: every coordinate as the `.mot` holds it (degrees, metres),
    then the per-body scale factors."""
    import pandas as pd

    from d3ke_assets.evaluation.predict import mot_coordinates

    q = mot_coordinates(pred, layer)
    q[:, list(map(bool, layer.rotational))] = np.degrees(q[:, list(map(bool, layer.rotational))])
    scales = np.asarray(pred["scale_factors"], np.float64).reshape(len(q), -1)
    return pd.DataFrame(np.concatenate([q, scales], axis=1), columns=coordinate_columns(layer) + scale_columns(layer))


def signature(layer, crop_px: int):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, crop_px, crop_px, 3))])  # /invocations: {"inputs": crops}
    outputs = Schema([ColSpec("double", c) for c in coordinate_columns(layer) + scale_columns(layer)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def predict_crops(predictor: Predictor, crops: np.ndarray):
    """What the served model answers: (N, S, S, 3) uint8 RGB crops -> the table."""
    crops = np.asarray(crops)
    size = predictor.crop_px
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
        raise D3keError(f"crops of shape {crops.shape}: give (batch, {size}, {size}, 3) uint8 RGB crops")
    return prediction_table(predictor.decode(predictor.head_outputs(crops.astype(np.uint8))), predictor.layer)


def save_pyfunc_model(folder: Path, checkpoint: Path, osim_path: Path) -> Path:
    """`checkpoint` (a frame or sequence model) as an MLflow pyfunc model in `folder` (which must not
    exist): models-from-code, the checkpoint and OpenSim model as artifacts, the signature above."""
    from importlib.metadata import PackageNotFoundError, version

    import mlflow
    import mlflow.pyfunc

    try:
        own = f"d3ke_assets=={version('d3ke_assets')}"
    except PackageNotFoundError:
        own = "d3ke_assets"
    predictor = load_predictor(checkpoint, osim_path)
    mlflow.pyfunc.save_model(
        str(folder), python_model=str(MODEL_CODE),
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint), OSIM_ARTIFACT: str(osim_path)},
        signature=signature(predictor.layer, predictor.crop_px),
        # named, not inferred: inferring imports the model in a subprocess; the package itself comes
        # from the environment the model is served in (`--env-manager local`)
        pip_requirements=[own, f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"])
    return folder
