"""Step 3: one 3-D CNN segmentation (hip bones or sacral tumour) on the GPU when present, else the CPU.

Not the SDK's MonaiSegInferenceOperator: its spacing, window and sliding-window settings are code, whereas
here they come from the model's ``metadata.json``, and its probabilities are inverted to the series grid for
every voxel (10 s and 5.5 GiB at 512x512x300); ``core.segment`` resamples only the foreground region. Models
are loaded with ``core.models.load_model`` (sha256 checked before loading) rather than the SDK's model
factory, which accepts only one file per model folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment

from core.models import LoadedModel, ModelError, load_model, pick_device
from core.run_state import EXIT_MODEL, RunFailure, RunState
from core.segment import segment
from operators.base import StageOperator


class SegmentationOperator(StageOperator):
    """Runs model ``model_name`` and stores its label map (uint8, D-H-W, series grid) in ``state.<target>``."""

    def __init__(self, fragment: Fragment, *args: Any, models_dir: Path, model_name: str, target: str,
                 device: str = "auto", **kwargs: Any) -> None:
        self.models_dir, self.model_name, self.target, self.device_pref = Path(models_dir), model_name, target, device
        self.stage = f"segment_{model_name}"
        self._model: LoadedModel | None = None
        super().__init__(fragment, *args, **kwargs)

    def model(self) -> LoadedModel:
        if self._model is None:
            try:
                self._model = load_model(self.models_dir, self.model_name, pick_device(self.device_pref))
            except ModelError as e:
                raise RunFailure(str(e), EXIT_MODEL) from None
        return self._model

    def run(self, state: RunState) -> None:
        m = self.model()
        state.models[m.name] = {"version": m.version, "sha256": m.sha256, "device": m.device.type}
        labels = segment(state.loaded.volume, m.module, m.metadata, m.device)
        setattr(state, self.target, labels)
