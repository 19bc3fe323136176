"""Step 8d: the Key Object Selection document that flags the run's key images, SEG and SR in PACS.

Title from ``outputs.kos_title`` of app.yaml (CID 7010); left out when ``outputs.key_object_selection`` is
false (``core.kos``).
"""
from __future__ import annotations

from core import codes
from core.kos import build_kos
from core.publishing import stage_dataset
from core.run_state import RunState
from operators.base import StageOperator

KOS_FILE = "sacral_tumour_kos.dcm"


class KosWriterOperator(StageOperator):
    stage = "write_kos"
    runs_when_finished = True

    def run(self, state: RunState) -> None:
        out = state.config.outputs
        if not out.key_object_selection:
            return
        referenced = [*state.key_image_datasets,
                      *(ds for ds in (state.seg_dataset, state.sr_dataset) if ds is not None)]
        if not referenced:
            return
        app = state.config.application
        kos = build_kos(state.require_loaded().datasets, referenced, title=codes.KOS_TITLES[out.kos_title],
                        algorithm_name=app.title, app_version=app.version)
        stage_dataset(state, "kos", KOS_FILE, kos)
