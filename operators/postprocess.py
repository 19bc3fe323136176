"""Step 4: combine the two segmentations, keep the largest component of each structure, check the hip bones.

The tumour is the largest candidate inside the sacral region of the hip frame (``core.postprocess``); the
hip-bone plausibility rules are :func:`core.assessment.assess_hip_bones`: not applicable when a hip bone is
missing (no pelvis in the field of view) or the two hip bones are implausibly unequal (a segmentation outside
its domain), and a warning for a hip bone cut by the edge of the scan.
"""
from __future__ import annotations

import numpy as np

from core import assessment, hip_frame
from core.postprocess import HIP_LEFT, HIP_RIGHT, merge_structures
from core.run_state import RunState
from core.status import Status
from operators.base import StageOperator


class LargestComponentOperator(StageOperator):
    stage = "postprocess"
    inputs = ("hip", "tumour")

    def run(self, state: RunState) -> None:
        assert state.hip_labels is not None and state.tumour_labels is not None  # both segmentations ran
        ct, analysis = state.require_loaded().volume, state.config.analysis
        merged = merge_structures(state.hip_labels, state.tumour_labels, affine=ct.affine, region=state.sacral_region)
        labels = merged.labels
        state.labels = ct.with_array(labels)
        state.hip_frame, state.hip_frame_error = merged.frame, merged.frame_error
        state.hip_labels = state.tumour_labels = None  # free memory
        state.model_grids.clear()
        warning = assessment.rejected_candidates_warning(merged.rejected_tumour_ml, analysis, located=merged.located)
        if warning:
            state.warn(warning)
        counts = np.bincount(labels.ravel(), minlength=max(HIP_LEFT, HIP_RIGHT) + 1)  # one pass for both sides
        left, right = (float(counts[v] * ct.voxel_volume_ml) for v in (HIP_LEFT, HIP_RIGHT))
        faces = hip_frame.truncated_faces(state.labels, (HIP_LEFT, HIP_RIGHT))
        state.hip_bone = {"left_volume_ml": round(left, 2), "right_volume_ml": round(right, 2),
                          "truncated": bool(faces)}
        verdict = assessment.assess_hip_bones(left, right, faces, analysis)
        for w in verdict.warnings:
            state.warn(w)
        if not verdict.applicable:
            state.status = Status.NOT_APPLICABLE
