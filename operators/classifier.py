"""Step 7: classify the tumour into six types, fusing the CT crop, clinical variables and location.

The classifier's metadata gives the class order, the tabular feature order with its standardisation and
imputation, and the crop; its ablation variants (image only, clinical only, clinical + location) run too
and are reported under ``ablation`` in result.json for validation runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from monai.deploy.core import Fragment

from core import clinical
from core.classify import probabilities_by_class, tumour_crop
from core.inference import predict_proba
from core.models import LoadedModel, ModelError, load_model, load_variant, pick_device
from core.run_state import EXIT_MODEL, RunFailure, RunState
from operators.base import StageOperator

TUMOUR = 3


class TumourClassifierOperator(StageOperator):
    stage = "classification"

    def __init__(self, fragment: Fragment, *args: Any, models_dir: Path, model_name: str, device: str = "auto",
                 **kwargs: Any) -> None:
        self.models_dir, self.model_name, self.device_pref = Path(models_dir), model_name, device
        self._model: LoadedModel | None = None
        self._variants: dict[str, torch.jit.ScriptModule] = {}
        super().__init__(fragment, *args, **kwargs)

    def model(self) -> LoadedModel:
        if self._model is None:
            try:
                self._model = load_model(self.models_dir, self.model_name, pick_device(self.device_pref))
                self._variants = {v: load_variant(self._model, v) for v in self._model.metadata.get("variants", {})}
            except ModelError as e:
                raise RunFailure(str(e), EXIT_MODEL) from None
        return self._model

    def run(self, state: RunState) -> None:
        m = self.model()
        state.models[m.name] = {"version": m.version, "sha256": m.sha256, "device": m.device.type}
        if state.status != "tumour_found":
            return
        meta = m.metadata
        crop = tumour_crop(state.loaded.volume, state.labels.array == TUMOUR, meta["crop"])
        tab, _ = clinical.standardise(state.tabular, meta["features"])
        p = predict_proba(m.module, crop, tab, m.device)
        state.probabilities = probabilities_by_class(p, meta["classes"])
        state.predicted_class = meta["classes"][int(p.argmax())]
        state.ablation = {v: probabilities_by_class(predict_proba(mod, crop, tab, m.device), meta["classes"])
                          for v, mod in self._variants.items()}
