"""Step 8b: the coded TID 1500 Comprehensive 3D SR, staged for publication.

Not the SDK's DICOMTextSRWriterOperator, which writes one free-text item (Basic Text SR): the findings here
are coded measurements that reference the SEG's segments (``core.sr_output``).
"""
from __future__ import annotations

from core import provenance
from core.publishing import stage_dataset
from core.run_state import RunState, findings
from core.sr_output import build_sr
from operators.base import StageOperator

SR_FILE = "sacral_tumour_sr.dcm"


class DicomSRWriterOperator(StageOperator):
    stage = "write_sr"
    runs_when_finished = True  # a not_applicable run gets an SR that says why

    def run(self, state: RunState) -> None:
        app = state.config.application
        sr = build_sr(state.require_loaded().datasets, state.seg_dataset, findings(state),
                      algorithm_name=app.title, algorithm_version=app.version,
                      software_versions=provenance.software_versions(app.version))
        stage_dataset(state, "sr", SR_FILE, sr)
        state.sr_dataset = sr
