"""The state of one application run, handed from operator to operator, and the result.json it becomes.

Statuses (``result.json`` ``status``) and exit codes:

=================  =========  ===========================================================================
status             exit code  meaning
=================  =========  ===========================================================================
``tumour_found``   0          a sacral tumour was segmented and classified
``no_tumour``      0          hip bones found, no tumour segmented
``not_applicable`` 0          the series cannot be analysed (e.g. no hip bone in the field of view);
                              the reason is in ``warnings``
``error``          2          unusable input (no CT series, unreadable files only, refused geometry)
``error``          3          a model is missing or fails its sha256 check
``error``          4          the outputs could not be written (read-only or full output folder)
``error``          1          an unexpected internal failure
=================  =========  ===========================================================================
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.status import Status

SCHEMA = "sacral-tumour-result/2"
#: ``outputs`` of a run that wrote no DICOM (an error): the file name of each output role, or none
NO_OUTPUTS: dict[str, Any] = {"seg": None, "sr": None, "kos": None, "key_images": []}

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_MODEL = 3
EXIT_OUTPUT = 4


class RunFailure(Exception):
    """Ends a run with status ``error``: ``reason`` is one identifier-free line, ``exit_code`` non-zero."""

    def __init__(self, reason: str, exit_code: int = EXIT_INTERNAL) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


@dataclass
class RunState:
    """Everything one run has found so far. Arrays are D-H-W on the selected series' grid."""

    input_dir: Path
    output_dir: Path
    config: dict[str, Any]
    status: str | None = None            # set once the outcome is known
    reason: str | None = None            # one-line reason for ``error``
    exit_code: int = EXIT_OK
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    # inputs
    selection: Any = None                # core.dicom_input.Selection
    loaded: Any = None                   # core.dicom_input.LoadedSeries (volume + sorted headers)
    # segmentation
    model_grids: dict[tuple, Any] = field(default_factory=dict)  # canonical CT grids by spacing (core.segment)
    hip_labels: np.ndarray | None = None      # uint8, values 1 (left) / 2 (right)
    tumour_labels: np.ndarray | None = None   # uint8, value 3
    sacral_region: Any = None            # core.hip_frame.FrameRegion from the tumour model's metadata, or None
    labels: Any = None                   # core.volume.Volume, combined and cleaned label map
    # findings
    hip_bone: dict[str, Any] | None = None
    tumour: dict[str, Any] | None = None
    clinical: dict[str, Any] | None = None
    tabular: dict[str, float | None] | None = None
    predicted_class: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    ablation: dict[str, dict[str, float]] = field(default_factory=dict)
    models: dict[str, dict[str, str]] = field(default_factory=dict)
    hip_frame: Any = None                # core.hip_frame.HipFrame when a tumour was located
    segment_numbers: dict[str, int] = field(default_factory=dict)
    seg_dataset: Any = None              # highdicom Segmentation, referenced by the SR
    sr_dataset: Any = None               # the TID 1500 SR, referenced by the KOS
    key_image_datasets: list[Any] = field(default_factory=list)  # Secondary Capture key images
    # outputs staged in a private temporary folder, published together at the end
    staged: dict[str, Path] = field(default_factory=dict)       # role ("seg", "sr", "kos") -> staged file
    staged_key_images: list[Path] = field(default_factory=list)
    dicom_outputs: list[dict[str, str]] = field(default_factory=list)  # links of the staged DICOM files
    staging_dir: Path | None = None

    @property
    def finished(self) -> bool:
        """True once the outcome is decided (an error, or not_applicable): later analysis steps pass."""
        return self.status is not None and Status(self.status).final

    def staging(self) -> Path:
        """The run's private staging folder (created on first use, removed by the publisher)."""
        if self.staging_dir is None:
            self.staging_dir = Path(tempfile.mkdtemp(prefix="sacral-tumour-"))
        return self.staging_dir

    def fail(self, reason: str, exit_code: int) -> None:
        self.status, self.reason, self.exit_code = Status.ERROR, reason, exit_code

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def stage_dicom(self, role: str, name: str, ds: Any) -> Path:
        """Write ``ds`` into the staging folder as ``name`` and record its link for result.json.

        ``role`` is ``seg``, ``sr``, ``kos`` or ``key_image``; the link holds the file name, SOP Class,
        SOP Instance and Series Instance UIDs and the modality (read from ``ds``).
        """
        path = self.staging() / name
        ds.save_as(path)
        if role == "key_image":
            self.staged_key_images.append(path)
        else:
            self.staged[role] = path
        self.dicom_outputs.append({
            "role": role, "file": name, "modality": str(ds.Modality), "sop_class_uid": str(ds.SOPClassUID),
            "sop_instance_uid": str(ds.SOPInstanceUID), "series_instance_uid": str(ds.SeriesInstanceUID)})
        return path

    def timed(self, stage: str, seconds: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + seconds, 3)

    @property
    def study_instance_uid(self) -> str | None:
        """The study of the series used (as referenced by the outputs)."""
        if self.loaded is not None:
            return str(self.loaded.datasets[0].StudyInstanceUID)
        return getattr(getattr(self.selection, "series", None), "study_instance_uid", None)

    @property
    def series_instance_uid(self) -> str | None:
        """The series used (as referenced by the outputs)."""
        if self.loaded is not None:
            return str(self.loaded.datasets[0].SeriesInstanceUID)
        return getattr(getattr(self.selection, "series", None), "series_instance_uid", None)


def output_files(outputs: dict[str, Any]) -> list[str]:
    """Every file name an ``outputs`` object of result.json names (SEG, SR, KOS, key images)."""
    names: list[str] = []
    for value in (outputs or {}).values():
        if isinstance(value, str) and value:
            names.append(value)
        elif isinstance(value, list):
            names += [v for v in value if v]
    return names


def result_document(state: RunState, outputs: dict[str, Any],
                    dicom_outputs: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The ``result.json`` document (schema ``sacral-tumour-result/2``) for a run.

    Schema 2 keeps every field of schema 1 and adds ``outputs.kos`` (file name or null),
    ``outputs.key_images`` (file names), ``dicom_outputs`` (one link per published DICOM file: role, file,
    modality, SOP Class / SOP Instance / Series Instance UID) and ``segment_numbers`` (SEG segment label ->
    segment number; empty without a SEG).
    """
    timings = dict(state.timings)
    timings["total"] = round(time.perf_counter() - state.started, 3)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "status": state.status,
        "study_instance_uid": state.study_instance_uid,
        "series_instance_uid": state.series_instance_uid,
        "predicted_class": state.predicted_class,
        "probabilities": dict(state.probabilities),
        "tumour": state.tumour,
        "hip_bone": state.hip_bone,
        "clinical": state.clinical,
        "warnings": list(state.warnings),
        "models": state.models,
        "timings_s": timings,
        "outputs": outputs,
        "dicom_outputs": list(dicom_outputs or []),
        "segment_numbers": dict(state.segment_numbers) if outputs.get("seg") else {},
    }
    if state.status == Status.ERROR:
        doc["reason"] = state.reason
    if state.ablation:
        doc["ablation"] = state.ablation
    return doc
