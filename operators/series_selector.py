"""Step 1: scan the input folder (headers only) and select the CT series to analyse.

Replaces the SDK's DICOMDataLoaderOperator + DICOMSeriesSelectorOperator: the SDK loader decodes the pixel
data of every file in the folder, and its selector cannot prefer a noncontrast series or say why a series
was rejected. Rules come from ``app.yaml`` (``series_selection:``), see ``core.series_selection``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment

from core.dicom_header import scan_folder
from core.config import AppConfig
from core.publishing import check_output_writable
from core.run_state import EXIT_INPUT, RunFailure, RunState
from core.series_selection import select_series
from operators.base import StageOperator


class SeriesSelectorOperator(StageOperator):
    """Source operator: creates the :class:`RunState` and fills ``state.selection``."""

    stage = "series_selection"
    inputs = ()

    def __init__(self, fragment: Fragment, *args: Any, input_dir: Path, output_dir: Path,
                 config: AppConfig, **kwargs: Any) -> None:
        self.input_dir, self.output_dir, self.config = Path(input_dir), Path(output_dir), config
        super().__init__(fragment, *args, **kwargs)

    def receive_state(self, op_input: Any) -> RunState:
        return RunState(self.input_dir, self.output_dir, self.config)

    def run(self, state: RunState) -> None:
        if not state.input_dir.is_dir():
            raise RunFailure("input folder does not exist or is not a folder", EXIT_INPUT)
        check_output_writable(state.output_dir)  # fail before the analysis, not after it
        scan = scan_folder(state.input_dir)
        if scan.unreadable:
            names = ", ".join(sorted(str(p.relative_to(state.input_dir)) for p in scan.unreadable)[:10])
            more = "" if len(scan.unreadable) <= 10 else f" and {len(scan.unreadable) - 10} more"
            state.warn(f"{len(scan.unreadable)} unreadable DICOM file(s) ignored: {names}{more}")
        selection = select_series(scan, state.config.series_selection)
        state.selection = selection
        for w in selection.warnings:
            if not (scan.unreadable and "unreadable DICOM file" in w):  # already said above, with the names
                state.warn(w)
        if selection.series is None:
            if not scan.series and scan.unreadable:
                raise RunFailure(f"no readable DICOM: {len(scan.unreadable)} unreadable file(s)", EXIT_INPUT)
            raise RunFailure(selection.reason, EXIT_INPUT)
