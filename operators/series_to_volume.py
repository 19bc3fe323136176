"""Step 2: decode the selected series into a CT volume in patient coordinates (HU, D-H-W, LPS).

Replaces the SDK's DICOMSeriesToVolumeOperator, which trusts slice order and geometry: ``core.dicom_input
.load_volume`` sorts by position along the slice normal and refuses tilt, gaps, duplicates and uneven
spacing with a reason. A scan shorter along the patient axis than ``analysis.min_coverage_mm`` cannot hold a
pelvis and ends ``not_applicable`` without running the models. Before any pixel is decoded, a memory guard refuses a series whose voxel count
(rows x columns x slices, from the headers) exceeds ``analysis.max_voxels`` of app.yaml.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from core.dicom_input import (
    InputError,
    SeriesInfo,
    ensure_copied_attributes,
    ensure_reference_uids,
    load_volume,
)
from core.run_state import EXIT_INPUT, RunFailure, RunState
from core.status import Status
from core.volume import Volume
from operators.base import StageOperator


class SeriesToVolumeOperator(StageOperator):
    stage = "load_volume"

    def run(self, state: RunState) -> None:
        check_size(state.selection.series, state.config)
        try:
            state.loaded = load_volume(state.selection.series, state.config.get("series_selection"))
        except InputError as e:
            raise RunFailure(e.reason, EXIT_INPUT) from None
        state.loaded.warnings.extend(ensure_reference_uids(state.loaded.datasets, state.selection.series.key))
        state.loaded.warnings.extend(ensure_copied_attributes(state.loaded.datasets))
        for w in state.loaded.warnings:
            state.warn(w)
        coverage = coverage_mm(state.loaded.volume)
        min_mm = float(state.config.get("analysis", {}).get("min_coverage_mm", 0.0))
        if coverage < min_mm:
            state.warn(f"not applicable: the scan covers {coverage:.0f} mm along the patient axis, "
                       f"less than the {min_mm:.0f} mm a pelvis needs")
            state.status = Status.NOT_APPLICABLE


def coverage_mm(volume: Volume) -> float:
    """Extent of the scanned grid along the patient's superior axis (LPS z), centre of first to last voxel, mm."""
    corners = np.array([[d, h, w] for d in (0, volume.shape[0] - 1) for h in (0, volume.shape[1] - 1)
                        for w in (0, volume.shape[2] - 1)], float)
    z = volume.index_to_lps(corners)[:, 2]
    return float(z.max() - z.min())


#: peak memory = BASELINE_BYTES + BYTES_PER_VOXEL x voxels of the selected series (measured by ``python -m bench``,
#: see docs/robustness.md); used for the memory guard's message and checked against resources.memory by the tests
BASELINE_BYTES = 1.5 * 2**30
BYTES_PER_VOXEL = 24


def check_size(series: SeriesInfo, config: dict[str, Any]) -> None:
    """Refuse (exit 2) a series larger than ``analysis.max_voxels`` before decoding any pixel data."""
    limit = config.get("analysis", {}).get("max_voxels")
    if not limit:
        return
    rows, cols = int(series.header.get("Rows") or 0), int(series.header.get("Columns") or 0)
    voxels = rows * cols * series.n_slices
    if voxels > int(limit):
        need = (BASELINE_BYTES + voxels * BYTES_PER_VOXEL) / 2**30
        memory = config.get("resources", {}).get("memory", "?")
        raise RunFailure(f"series too large: {rows} x {cols} x {series.n_slices} = {voxels / 1e6:.1f} M voxels, "
                         f"above the limit of {int(limit) / 1e6:.1f} M (analysis.max_voxels; about {need:.1f} GiB "
                         f"would be needed, the package requests {memory})", EXIT_INPUT)
