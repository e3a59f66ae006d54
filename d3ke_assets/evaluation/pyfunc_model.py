"""The code MLflow runs to load a registered d3ke model (MLflow's models-from-code: the model is this
file plus its artifacts, never a pickle).  `serving.save_pyfunc_model` saves it; the signature and
what the model answers are described in `serving`.  Not imported by the package: MLflow executes it."""

from pathlib import Path

import mlflow.pyfunc
import numpy as np
from mlflow.models import set_model

from d3ke_assets.evaluation import serving


class D3keModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from d3ke_assets.learning.training import choose_device

        artifacts = context.artifacts
        self.predictor = serving.load_predictor(Path(artifacts[serving.CHECKPOINT_ARTIFACT]),
                                                Path(artifacts[serving.OSIM_ARTIFACT])).to(choose_device())

    # the hint tells MLflow to infer nothing from it: the saved signature (a uint8 tensor) is the schema
    def predict(self, context, model_input: np.ndarray, params=None):
        return serving.predict_crops(self.predictor, model_input)


set_model(D3keModel())
