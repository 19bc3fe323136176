"""Step 5: locate the tumour in the hip-bone reference frame (definition: ``core/hip_frame.py``)."""
from __future__ import annotations

from core import hip_frame
from core.postprocess import HIP_LEFT, HIP_RIGHT, TUMOUR
from core.run_state import RunState
from core.status import Status
from operators.base import StageOperator


class HipFrameLocationOperator(StageOperator):
    stage = "hip_frame_location"

    def run(self, state: RunState) -> None:
        labels = state.labels
        min_ml = float(state.config.get("analysis", {}).get("min_tumour_volume_ml", 10.0))
        tumour_ml = float((labels.array == TUMOUR).sum() * labels.voxel_volume_ml)
        if tumour_ml < min_ml:
            labels.array[labels.array == TUMOUR] = 0  # the SEG then agrees with the SR: no tumour segment
            state.status = Status.NO_TUMOUR
            return
        try:
            frame = hip_frame.hip_frame_from_labels(labels, HIP_LEFT, HIP_RIGHT)
        except hip_frame.HipFrameError as e:
            state.warn(f"not applicable: {e}")
            state.status = Status.NOT_APPLICABLE
            return
        state.hip_frame = frame
        loc = hip_frame.tumour_location(labels, TUMOUR, frame)
        cut = hip_frame.truncated_faces(labels, (TUMOUR,))
        if cut:
            state.warn(f"sacral tumour touches the edge of the scan ({', '.join(cut)}): its volume and location "
                       "may be underestimated")
        state.tumour = {"volume_ml": round(tumour_ml, 3),
                        **{k: [round(float(x), 4) for x in v] for k, v in loc.items()}}
        state.status = Status.TUMOUR_FOUND
