"""Step 2: decode the selected series into a CT volume in patient coordinates (HU, D-H-W, LPS).

Replaces the SDK's DICOMSeriesToVolumeOperator, which trusts slice order and geometry: ``core.dicom_input
.load_volume`` sorts by position along the slice normal and refuses tilt, gaps, duplicates and uneven
spacing with a reason. Before any pixel is decoded, the memory guard (:func:`core.assessment.size_refusal`)
refuses a series larger than ``analysis.max_voxels``; a scan shorter along the patient axis than
``analysis.min_coverage_mm`` cannot hold a pelvis and ends ``not_applicable`` without running the models
(:func:`core.assessment.assess_coverage`).
"""
from __future__ import annotations

from core import assessment
from core.dicom_header import InputError
from core.dicom_input import ensure_copied_attributes, ensure_reference_uids, load_volume
from core.run_state import EXIT_INPUT, RunFailure, RunState
from core.status import Status
from operators.base import StageOperator


class SeriesToVolumeOperator(StageOperator):
    stage = "load_volume"

    def run(self, state: RunState) -> None:
        assert state.selection is not None and state.selection.series is not None  # the selector's contract
        series, cfg = state.selection.series, state.config
        refusal = assessment.size_refusal(int(series.header.get("Rows") or 0), int(series.header.get("Columns") or 0),
                                          series.n_slices, cfg.analysis, cfg.memory)
        if refusal:
            raise RunFailure(refusal, EXIT_INPUT)
        try:
            loaded = load_volume(series, cfg.series_selection)
        except InputError as e:
            raise RunFailure(e.reason, EXIT_INPUT) from None
        state.loaded = loaded
        loaded.warnings.extend(ensure_reference_uids(loaded.datasets, series.key))
        loaded.warnings.extend(ensure_copied_attributes(loaded.datasets))
        verdict = assessment.assess_coverage(assessment.coverage_mm(loaded.volume), cfg.analysis)
        for w in (*loaded.warnings, *verdict.warnings):
            state.warn(w)
        if not verdict.applicable:
            state.status = Status.NOT_APPLICABLE
