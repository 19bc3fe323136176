"""The state of one application run, handed from operator to operator, and the result.json it becomes.

Statuses are :class:`core.status.Status` (its docstring tables what each means); a run ends with exit code 0
unless its status is ``error``, whose exit code names the cause:

=========  ======================================================================================
exit code  cause of ``error``
=========  ======================================================================================
2          unusable input (no CT series, unreadable files only, refused geometry)
3          a model is missing or fails its sha256 check
4          the outputs could not be written (read-only or full output or temporary folder); nothing
           is left in the output folder
1          an unexpected internal failure
=========  ======================================================================================
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from core.config import AppConfig
from core.status import Status

if TYPE_CHECKING:  # types only: these modules import nothing from here
    from pydicom.dataset import Dataset

    from core.dicom_input import LoadedSeries
    from core.hip_frame import FrameRegion, HipFrame
    from core.series_selection import Selection
    from core.volume import Volume

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


class HipBoneFindings(TypedDict):
    """``hip_bone`` of result.json: segmented volumes (mL) and whether the bone touches the scan's edge."""

    left_volume_ml: float
    right_volume_ml: float
    truncated: bool


class TumourFindings(TypedDict):
    """``tumour`` of result.json: volume (mL), centroid (LPS mm) and location in the hip frame
    (dimensionless u, v, w and mm), see :func:`core.hip_frame.tumour_location`."""

    volume_ml: float
    centroid_lps_mm: list[float]
    location_hip_frame: list[float]
    location_hip_frame_mm: list[float]
    mean_probability: float | None    # mean tumour-model probability over the tumour's voxels (0-1)


class ClinicalFindings(TypedDict):
    """``clinical`` of result.json: age (years) and sex from the header, the variables imputed."""

    age_years: float | None
    sex: str | None
    imputed: list[str]


#: the classifier's tabular inputs by name (sex as the header's code, numbers in the units of their names)
Tabular = dict[str, float | str | None]


@dataclass
class RunState:
    """Everything one run has found so far. Arrays are D-H-W on the selected series' grid."""

    input_dir: Path
    output_dir: Path
    config: AppConfig
    status: Status | None = None         # set once the outcome is known
    reason: str | None = None            # one-line reason for ``error``
    exit_code: int = EXIT_OK
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    # inputs
    selection: Selection | None = None
    loaded: LoadedSeries | None = None   # volume + sorted headers
    # segmentation
    # canonical CT grids by (spacing mm..., antialias), shared by the two segmentations (core.segment)
    model_grids: dict[tuple[float | bool, ...], Volume] = field(default_factory=dict)
    hip_labels: np.ndarray | None = None      # uint8, values 1 (left) / 2 (right)
    tumour_labels: np.ndarray | None = None   # uint8, value 3
    sacral_region: FrameRegion | None = None  # from the tumour model's metadata
    tumour_grid_mm: float | None = None       # the tumour model's largest grid spacing (its metadata), mm
    tumour_probability: Volume | None = None  # tumour model probability, float32, model grid (until located)
    tumour_min_mean_probability: float | None = None  # the tumour model's confidence rule (its metadata)
    labels: Volume | None = None              # combined and cleaned label map
    # findings
    hip_bone: HipBoneFindings | None = None
    tumour: TumourFindings | None = None
    clinical: ClinicalFindings | None = None
    tabular: Tabular | None = None
    predicted_class: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    ablation: dict[str, dict[str, float]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the hip frame of the cleaned hip bones, built once by the post-processing step (core.postprocess), or why not
    hip_frame: HipFrame | None = None
    hip_frame_error: str | None = None
    segment_numbers: dict[str, int] = field(default_factory=dict)
    seg_dataset: Dataset | None = None   # the highdicom Segmentation, referenced by the SR
    sr_dataset: Dataset | None = None    # the TID 1500 SR, referenced by the KOS
    key_image_datasets: list[Dataset] = field(default_factory=list)  # Secondary Capture key images
    # outputs staged in a private temporary folder, published together at the end (core.publishing)
    staged: dict[str, Path] = field(default_factory=dict)       # role ("seg", "sr", "kos") -> staged file
    staged_key_images: list[Path] = field(default_factory=list)
    dicom_outputs: list[dict[str, str]] = field(default_factory=list)  # links of the staged DICOM files
    staging_dir: Path | None = None

    @property
    def finished(self) -> bool:
        """True once the outcome is decided (an error, or not_applicable): later analysis steps pass."""
        return self.status is not None and Status(self.status).final

    def require_loaded(self) -> LoadedSeries:
        """The loaded series (for the stages after loading; a RuntimeError, an internal error, before it)."""
        if self.loaded is None:
            raise RuntimeError("no series loaded")
        return self.loaded

    def require_labels(self) -> Volume:
        """The combined label map (for the stages after post-processing)."""
        if self.labels is None:
            raise RuntimeError("no label map")
        return self.labels

    def fail(self, reason: str, exit_code: int) -> None:
        self.status, self.reason, self.exit_code = Status.ERROR, reason, exit_code

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def timed(self, stage: str, seconds: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + seconds, 3)

    @property
    def study_instance_uid(self) -> str | None:
        """The study of the series used (as referenced by the outputs)."""
        if self.loaded is not None:
            return str(self.loaded.datasets[0].StudyInstanceUID)
        series = self.selection.series if self.selection is not None else None
        return series.study_instance_uid if series is not None else None

    @property
    def series_instance_uid(self) -> str | None:
        """The series used (as referenced by the outputs)."""
        if self.loaded is not None:
            return str(self.loaded.datasets[0].SeriesInstanceUID)
        series = self.selection.series if self.selection is not None else None
        return series.series_instance_uid if series is not None else None


def output_files(outputs: dict[str, Any]) -> list[str]:
    """Every file name an ``outputs`` object of result.json names (SEG, SR, KOS, key images)."""
    names: list[str] = []
    for value in (outputs or {}).values():
        if isinstance(value, str) and value:
            names.append(value)
        elif isinstance(value, list):
            names += [v for v in value if v]
    return names


class Findings(TypedDict):
    """What a run found, as result.json states it and the SR and the key images report it."""

    status: Status | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    predicted_class: str | None
    probabilities: dict[str, float]      # class key (the classifier's metadata) -> probability
    tumour: TumourFindings | None
    hip_bone: HipBoneFindings | None
    clinical: ClinicalFindings | None
    warnings: list[str]
    models: dict[str, dict[str, Any]]    # model name -> version, sha256, device (str); precision, flip_average
    segment_numbers: dict[str, int]      # SEG segment label -> segment number (empty without a SEG)


def findings(state: RunState) -> Findings:
    """The run's findings (copies): the one value behind result.json, the SR and the key images."""
    return Findings(status=state.status, study_instance_uid=state.study_instance_uid,
                    series_instance_uid=state.series_instance_uid, predicted_class=state.predicted_class,
                    probabilities=dict(state.probabilities), tumour=state.tumour, hip_bone=state.hip_bone,
                    clinical=state.clinical, warnings=list(state.warnings), models=state.models,
                    segment_numbers=dict(state.segment_numbers))


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
    f = findings(state)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        **{k: v for k, v in f.items() if k != "segment_numbers"},
        "timings_s": timings,
        "outputs": outputs,
        "dicom_outputs": list(dicom_outputs or []),
        "segment_numbers": f["segment_numbers"] if outputs.get("seg") else {},
    }
    if state.status == Status.ERROR:
        doc["reason"] = state.reason
    if state.ablation:
        doc["ablation"] = state.ablation
    return doc
