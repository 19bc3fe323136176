"""Step 3: one 3-D CNN segmentation (hip bones or sacral tumour) on the GPU when present, else the CPU.

Not the SDK's MonaiSegInferenceOperator: its spacing, window and sliding-window settings are code, whereas
here they come from the model's ``metadata.json``, and its probabilities are inverted to the series grid for
every voxel (10 s and 5.5 GiB at 512x512x300); ``core.segment`` resamples only the foreground region. Models
are loaded with ``core.models.load_model`` (sha256 checked before loading) rather than the SDK's model
factory, which accepts only one file per model folder.
"""
from __future__ import annotations

from typing import Any

from monai.deploy.core import Fragment

from core.run_state import RunState
from core.segment import segment_with_probability
from operators.base import ModelStageOperator


class SegmentationOperator(ModelStageOperator):
    """Runs model ``model_name`` and stores its label map (uint8, D-H-W, series grid) in ``state.<target>``.

    The tumour model (``target`` ``tumour_labels``) also passes on, from its metadata, its ``sacral_region``
    (``state.sacral_region``; the post-processing step picks the tumour component in it), its grid spacing
    (``state.tumour_grid_mm``, the edge margin of the truncation check) and its confidence rule
    (``state.tumour_min_mean_probability``), and its probability on the model grid (``state.tumour_probability``).
    """

    def __init__(self, fragment: Fragment, *args: Any, target: str, **kwargs: Any) -> None:
        self.target = target
        super().__init__(fragment, *args, **kwargs)
        self.stage = f"segment_{self.model_name}"

    def run(self, state: RunState) -> None:
        m = self.model(state)
        result = segment_with_probability(state.require_loaded().volume, m.module, m.metadata, m.device,
                                          state.model_grids)
        if self.target == "tumour_labels":
            state.sacral_region = m.metadata.frame_region
            state.tumour_grid_mm = max(m.metadata.seg.spacing_mm)
            state.tumour_min_mean_probability = m.metadata.seg.min_mean_probability
            state.tumour_probability = result.probability
        setattr(state, self.target, result.labels)
