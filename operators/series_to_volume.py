"""Step 2: decode the selected series into a CT volume in patient coordinates (HU, D-H-W, LPS).

Replaces the SDK's DICOMSeriesToVolumeOperator, which trusts slice order and geometry: ``core.dicom_input
.load_volume`` sorts by position along the slice normal and refuses tilt, gaps, duplicates and uneven
spacing with a reason.
"""
from __future__ import annotations

from core.dicom_input import InputError, ensure_reference_uids, load_volume
from core.run_state import EXIT_INPUT, RunFailure, RunState
from operators.base import StageOperator


class SeriesToVolumeOperator(StageOperator):
    stage = "load_volume"

    def run(self, state: RunState) -> None:
        try:
            state.loaded = load_volume(state.selection.series, state.config.get("series_selection"))
        except InputError as e:
            raise RunFailure(e.reason, EXIT_INPUT) from None
        state.loaded.warnings.extend(ensure_reference_uids(state.loaded.datasets, state.selection.series.key))
        for w in state.loaded.warnings:
            state.warn(w)
