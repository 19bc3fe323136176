"""Step 7: classify the tumour into six types, fusing the CT crop, clinical variables and location.

The classifier's metadata gives the class order, the tabular feature order with its standardisation and
imputation, and the crop; its ablation variants (image only, clinical only, clinical + location) run too
and are reported under ``ablation`` in result.json for validation runs.
"""
from __future__ import annotations

import torch

from core import clinical
from core.classify import probabilities_by_class, tumour_crop
from core.inference import predict_proba
from core.models import LoadedModel, load_variant
from core.postprocess import TUMOUR
from core.run_state import RunState
from core.status import Status
from operators.base import ModelStageOperator


class TumourClassifierOperator(ModelStageOperator):
    stage = "classification"

    _variants: dict[str, torch.jit.ScriptModule]

    def on_load(self, model: LoadedModel) -> None:
        self._variants = {v: load_variant(model, v) for v in model.metadata.clf.variants}

    def run(self, state: RunState) -> None:
        m = self.model(state)
        if state.status != Status.TUMOUR_FOUND:
            return
        spec = m.metadata.clf
        crop = tumour_crop(state.require_loaded().volume, state.require_labels().array == TUMOUR, spec.crop)
        tab, _ = clinical.standardise(state.tabular or {}, spec.features)
        p = predict_proba(m.module, crop, tab, m.device)
        state.probabilities = probabilities_by_class(p, spec.classes)
        state.predicted_class = spec.classes[int(p.argmax())]
        state.ablation = {v: probabilities_by_class(predict_proba(mod, crop, tab, m.device), spec.classes)
                          for v, mod in self._variants.items()}
