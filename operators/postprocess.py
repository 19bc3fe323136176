"""Step 4: merge the two segmentations and keep the largest connected component of each structure.

The tumour keeps its largest component inside the tumour model's ``sacral_region`` (a box in the hip frame,
``core.hip_frame.FrameRegion``); larger candidates outside it are left out and reported as a warning.

Also decides ``not_applicable`` when a hip bone is missing (no pelvis in the field of view) or the two hip
bones are implausibly unequal (a segmentation outside its domain), and reports a hip bone cut by the edge of
the scan.
"""
from __future__ import annotations

from core import hip_frame
from core.postprocess import HIP_LEFT, HIP_RIGHT, merge_structures
from core.run_state import RunState
from core.status import Status
from operators.base import StageOperator


class LargestComponentOperator(StageOperator):
    stage = "postprocess"
    inputs = ("hip", "tumour")

    def run(self, state: RunState) -> None:
        ct = state.loaded.volume
        labels, rejected = merge_structures(state.hip_labels, state.tumour_labels, affine=ct.affine,
                                            region=state.sacral_region)
        state.labels = ct.with_array(labels)
        # candidates below the tumour threshold would never be reported: not worth a reader's attention
        rejected = [v for v in rejected
                    if v >= float(state.config.get("analysis", {}).get("min_tumour_volume_ml", 10.0))]
        if rejected:
            state.warn(f"{len(rejected)} larger tumour candidate(s) outside the sacral region left out "
                       f"({', '.join(f'{v:.0f}' for v in rejected)} mL)")
        state.hip_labels = state.tumour_labels = None  # free memory
        state.model_grids.clear()
        vox = ct.voxel_volume_ml
        left, right = (float((labels == v).sum() * vox) for v in (HIP_LEFT, HIP_RIGHT))
        min_ml = float(state.config.get("analysis", {}).get("min_hip_bone_volume_ml", 50.0))
        truncated = hip_frame.hip_bone_truncated(state.labels, (HIP_LEFT, HIP_RIGHT)) if (left or right) else False
        state.hip_bone = {"left_volume_ml": round(left, 2), "right_volume_ml": round(right, 2), "truncated": truncated}
        if left < min_ml or right < min_ml:
            missing = " and ".join(s for s, v in (("left", left), ("right", right)) if v < min_ml)
            state.warn(f"not applicable: no {missing} hip bone in the field of view (< {min_ml:g} mL segmented)")
            state.status = Status.NOT_APPLICABLE
            return
        max_ratio = float(state.config.get("analysis", {}).get("max_hip_bone_volume_ratio", 2.0))
        if max(left, right) / min(left, right) > max_ratio:
            state.warn(f"not applicable: implausible hip-bone segmentation (left {left:.0f} mL, right {right:.0f} mL, "
                       f"ratio above {max_ratio:g})")
            state.status = Status.NOT_APPLICABLE
        elif truncated:
            faces = ", ".join(hip_frame.truncated_faces(state.labels, (HIP_LEFT, HIP_RIGHT)))
            state.warn(f"hip bone cut by the edge of the scan ({faces}): the hip-frame location is approximate")
