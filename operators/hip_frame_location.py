"""Step 5: locate the tumour in the hip-bone reference frame (definition: ``core/hip_frame.py``).

Without a hip frame the study is not applicable (there is no sacral region in which to look, so neither a
tumour nor its absence can be reported). A tumour below ``analysis.min_tumour_volume_ml`` counts as none
(:func:`core.assessment.tumour_present`), and so does one below the tumour model's confidence rule
(:func:`core.assessment.tumour_confident`, with a warning; a tumour cut by the scan edge is exempt and reported
with a truncation warning instead). In these cases the tumour voxels are removed, so that
the SEG agrees with the SR (no tumour segment).
"""
from __future__ import annotations

from core import assessment, hip_frame
from core.postprocess import TUMOUR
from core.run_state import RunState
from core.segment import mean_probability_in
from core.status import Status
from operators.base import StageOperator


class HipFrameLocationOperator(StageOperator):
    stage = "hip_frame_location"

    def run(self, state: RunState) -> None:
        labels = state.labels
        assert labels is not None
        frame = state.hip_frame  # built by the post-processing step from the same hip bones
        if frame is None:  # first: without a frame there is no sacral region, so "no tumour" could not be said either
            labels.array[labels.array == TUMOUR] = 0  # a tumour that cannot be located is not drawn in the SEG
            state.warn(f"{assessment.NOT_APPLICABLE}{state.hip_frame_error or 'no hip frame'}")
            state.status = Status.NOT_APPLICABLE
            return
        mask = labels.array == TUMOUR
        tumour_ml = float(mask.sum() * labels.voxel_volume_ml)
        if not assessment.tumour_present(tumour_ml, state.config.analysis):
            labels.array[mask] = 0
            state.status = Status.NO_TUMOUR
            return
        margin = assessment.tumour_edge_margins_mm(state.config.analysis, state.tumour_grid_mm,
                                                 [float(s) for s in labels.spacing])
        faces = hip_frame.truncated_faces(labels, (TUMOUR,), margin)
        # the tumour's confidence (core.segment), measured only for a tumour that passed the volume threshold
        probability, state.tumour_probability = state.tumour_probability, None  # freed once used
        p = None if probability is None else mean_probability_in(labels.with_array(mask), probability)
        rule = state.tumour_min_mean_probability
        if not assessment.tumour_confident(p, rule, cut_by_edge=bool(faces)):
            assert rule is not None
            labels.array[mask] = 0
            state.warn(assessment.low_confidence_warning(tumour_ml, p, rule))
            state.status = Status.NO_TUMOUR
            return
        loc = hip_frame.tumour_location(labels, TUMOUR, frame)
        warning = assessment.tumour_truncation_warning(faces)
        if warning:
            state.warn(warning)
        r = {k: [round(float(x), 4) for x in v] for k, v in loc.items()}
        state.tumour = {"volume_ml": round(tumour_ml, 3), "centroid_lps_mm": r["centroid_lps_mm"],
                        "location_hip_frame": r["location_hip_frame"],
                        "location_hip_frame_mm": r["location_hip_frame_mm"],
                        "mean_probability": None if p is None else round(p, 4)}
        state.status = Status.TUMOUR_FOUND
