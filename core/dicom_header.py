"""DICOM headers: scan a study folder (headers only, no pixel data) into series summaries.

A leaf module (no import from other ``core`` modules): :mod:`core.series_selection` chooses among the
:class:`SeriesInfo` found here by its rules, and :mod:`core.dicom_input` builds the volume of the chosen one.

Holds what both need: the CT SOP classes, :class:`InputError`, the series-selection rules' defaults
(:data:`DEFAULT_RULES`, the ``series_selection:`` section of app.yaml) with :func:`merge_rules`, orientation
classification (:func:`classify_orientation`), the contrast test (:func:`is_contrast`) and multi-frame
functional-group look-up (:func:`functional_group_value`). Multi-frame objects (Enhanced CT, Legacy Converted
Enhanced CT) have their first frame's geometry, thickness, kernel and contrast agent flattened into the reduced
header, so that selection applies the same rules to both forms.

Anonymised files with an empty SeriesInstanceUID (seen in real vendor exports) are grouped by a synthetic key
(study, frame of reference, series number and description, modality, SOP class, image size); empty
SOPClassUID / SOPInstanceUID are taken from the file meta information (identical by definition).
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"

#: Defaults of the ``series_selection:`` section of app.yaml (plain YAML types only).
DEFAULT_RULES: dict[str, Any] = {
    # hard criteria: a series failing any of them is rejected with the reason
    "modalities": ["CT"],
    "sop_class_uids": [CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE],
    "image_type_required": ["ORIGINAL", "PRIMARY"],
    "image_type_forbidden": ["LOCALIZER"],
    "orientation": "axial",               # axial | coronal | sagittal | any
    "orientation_tolerance_deg": 10.0,    # angle between slice normal and the axis
    "slice_thickness_mm": [0.5, 6.0],     # inclusive; a series without SliceThickness is not rejected
    "slice_count": [20, 2000],            # inclusive
    "contrast": {
        # avoid: contrast-enhanced series used only when nothing else qualifies (with a warning);
        # reject: never used; allow: no preference
        "policy": "avoid",
        # ContrastBolusAgent/Route/Ingredient values that mean "no contrast" (upper-cased, stripped)
        "negative_values": ["", "NONE", "NO", "N", "NIL", "N/A", "NA", "NO CONTRAST", "NON-CONTRAST", "0"],
    },
    # preferences among qualifying series, applied in this order
    "kernel": {
        "prefer": "soft",                 # soft | sharp | none
        # regular expressions (case-insensitive, searched in the first ConvolutionKernel value)
        "sharp_patterns": ["BONE", "LUNG", "EDGE", "SHARP", "DETAIL", "^[A-Z]{1,2}[5-9][0-9]",
                           "^FC[3-9][0-9]", "^(YD|YE|D|E|L)$"],
        "soft_patterns": ["STANDARD", "STND", "SOFT", "BODY", "^[A-Z]{1,2}[0-4][0-9]", "^FC[0-2][0-9]",
                          "^(A|B|C|UB|YA|YB|YC)$"],
    },
    "preferred_slice_thickness_mm": [0.5, 3.0],  # inside beats outside; then thinner; then more slices
    # several studies in the input: take the best qualifying series over all, warn about the others
    "multiple_studies": "best_overall",
    # volume construction checks (load_volume)
    "volume": {
        "orientation_tolerance": 1.0e-3,   # max |difference| between IOP components within a series
        "pixel_spacing_tolerance_mm": 1.0e-3,
        "duplicate_tolerance_mm": 0.01,    # positions closer than this are the same slice
        "max_gap_factor": 1.5,             # a spacing > factor x median spacing = missing slices
        "max_spacing_variation": 0.10,     # (max - min) / median spacing
        "max_tilt_deg": 0.5,               # slice positions vs slice normal
        "max_inplane_deviation_px": 0.5,   # positions off the straight stack line, in pixels
    },
}


class InputError(Exception):
    """Unusable input. ``code``: short slug for programs; ``reason``: one line for people, no identifiers."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def merge_rules(rules: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep-merge a (partial) rules dict over :data:`DEFAULT_RULES`; unknown keys raise ``ValueError``."""

    def merge(base: dict[str, Any], over: dict[str, Any], path: str) -> dict[str, Any]:
        out = copy.deepcopy(base)
        for k, v in over.items():
            if k not in base:
                raise ValueError(f"unknown series_selection rule '{path}{k}'")
            if isinstance(base[k], dict):
                if not isinstance(v, dict):
                    raise ValueError(f"series_selection rule '{path}{k}' must be a mapping")
                out[k] = merge(base[k], v, f"{path}{k}.")
            else:
                out[k] = copy.deepcopy(v)
        return out

    return merge(DEFAULT_RULES, dict(rules or {}), "")


# ----------------------------------------------------------------------------------------------- scanning

@dataclass
class SeriesInfo:
    """Summary of one series from headers only (no pixel data read).

    ``orientation`` is 'axial' | 'coronal' | 'sagittal' | 'oblique' (10 degree tolerance) or 'unknown'
    (no ImageOrientationPatient). ``key`` is the SeriesInstanceUID, or a synthetic ``nouid-...`` key when the
    UID is empty. ``header`` is the first file's header reduced to the scanned tags. ``contrast`` is True when any
    file has a ContrastBolusAgent/Route/Ingredient value (all distinct values in ``contrast_values``) other
    than the default "no contrast" values; :func:`core.series_selection.select_series` returns the selected
    series with ``contrast`` decided by the configured values instead.
    """

    study_instance_uid: str
    series_instance_uid: str
    modality: str
    sop_class_uid: str
    image_type: tuple[str, ...]
    description: str
    n_files: int
    files: list[Path]
    slice_thickness_mm: float | None
    contrast: bool
    orientation: str
    convolution_kernel: str
    multiframe: bool
    header: Dataset
    key: str = ""
    series_number: int | None = None
    n_frames: int = 0
    contrast_values: tuple[str, ...] = ()

    @property
    def n_slices(self) -> int:
        """Number of image planes: frames of a multi-frame object, else files."""
        return self.n_frames if self.multiframe else self.n_files


@dataclass
class StudyScan:
    """What :func:`scan_folder` found. ``non_dicom``: ignored files; ``unreadable``: corrupted/truncated DICOM."""

    series: list[SeriesInfo]
    unreadable: list[Path] = field(default_factory=list)
    non_dicom: list[Path] = field(default_factory=list)

    @property
    def study_uids(self) -> list[str]:
        return sorted({s.study_instance_uid for s in self.series})


_SCAN_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber",
    "SeriesDescription", "ImageType", "SliceThickness", "ContrastBolusAgent", "ContrastBolusRoute",
    "ContrastBolusIngredient", "ImageOrientationPatient", "ImagePositionPatient", "ConvolutionKernel",
    "NumberOfFrames", "Rows", "Columns", "PixelSpacing", "FrameOfReferenceUID", "BitsAllocated",
    "SamplesPerPixel", "PixelRepresentation", "AcquisitionNumber", "BodyPartExamined",
    # multi-frame (Enhanced / Legacy Converted Enhanced CT): geometry, kernel, thickness and contrast live here
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "ContrastBolusAgentSequence",
]

#: Top-level attributes that :func:`_flatten_functional_groups` fills from frame 1's functional groups.
_FLATTENED = ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness",
              "ConvolutionKernel")


def functional_group_value(ds: Dataset, keyword: str, frame_index: int = 0) -> Any:
    """Value of ``keyword`` for one frame of a multi-frame image (``frame_index`` 0-based), else None.

    Looked up, as PS3.3 C.7.6.16 defines, in the frame's item of PerFrameFunctionalGroupsSequence, then in
    SharedFunctionalGroupsSequence, each searched through its functional-group macros (e.g. ImagePositionPatient
    in PlanePositionSequence, RescaleSlope in PixelValueTransformationSequence, ConvolutionKernel in
    CTReconstructionSequence or a Legacy Converted object's Unassigned ... Converted Attributes Sequence); then
    at the top level (single-frame images, and attributes that stay there).
    """
    groups: list[Dataset] = []
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and 0 <= frame_index < len(per):
        groups.append(per[frame_index])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        for elem in group:
            if elem.VR == "SQ" and elem.value and keyword in elem.value[0]:
                return elem.value[0][keyword].value
    return ds.get(keyword)


def _flatten_functional_groups(ds: Dataset) -> None:
    """In a (reduced, scan-only) multi-frame header: copy frame 1's geometry, thickness and kernel to the top
    level, record a coded contrast agent as ContrastBolusAgent, and drop the functional-group sequences."""
    for kw in _FLATTENED:
        if kw not in ds or ds[kw].value in (None, ""):
            value = functional_group_value(ds, kw, 0)
            if value is not None:
                setattr(ds, kw, value)
    if not _str(ds.get("ContrastBolusAgent")):
        agents = [_str(item.get("CodeMeaning")) or _str(item.get("CodeValue")) or "AGENT"
                  for item in ds.get("ContrastBolusAgentSequence") or []]
        if agents:
            ds.ContrastBolusAgent = "/".join(agents)[:64]
    for kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "ContrastBolusAgentSequence"):
        if kw in ds:
            del ds[kw]


def _str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(x) for x in v)
    return str(v).strip()


def _float_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def classify_orientation(iop: Any, tolerance_deg: float = 10.0) -> str:
    """'axial' | 'coronal' | 'sagittal' | 'oblique' from ImageOrientationPatient; 'unknown' if absent/invalid."""
    try:
        v = np.asarray([float(x) for x in iop], dtype=float)
    except (TypeError, ValueError):
        return "unknown"
    if v.shape != (6,):
        return "unknown"
    n = np.cross(v[:3], v[3:])
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        return "unknown"
    n = np.abs(n / norm)
    cos_tol = math.cos(math.radians(tolerance_deg))
    for axis, name in ((2, "axial"), (1, "coronal"), (0, "sagittal")):
        if n[axis] >= cos_tol:
            return name
    return "oblique"


def _contrast_values(ds: Dataset) -> set[str]:
    """Non-empty ContrastBolusAgent/Route/Ingredient values, upper-cased."""
    vals = {_str(ds.get(kw)).upper() for kw in ("ContrastBolusAgent", "ContrastBolusRoute", "ContrastBolusIngredient")}
    return vals - {""}


def is_contrast(values: Any, negative_values: list[str]) -> bool:
    """True if any contrast attribute value is not one of the "no contrast" values."""
    neg = {x.strip().upper() for x in negative_values}
    return any(v not in neg for v in values)


def _looks_like_dicom(path: Path) -> tuple[bool, bool]:
    """(is DICOM with preamble, might be DICOM without preamble)."""
    with open(path, "rb") as fp:
        head = fp.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True, False
    # no preamble: a little-endian dataset starting with a group 0002 or 0008 element
    return False, len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00")


def _pixel_data_problem(fp: Any, ds: Dataset, file_size: int) -> str | None:
    """After a ``stop_before_pixels`` read (``fp`` at the pixel data element), check it is complete.

    Walks encapsulated fragments with seeks only; never reads pixel bytes.
    """
    pos = fp.tell()
    if pos > file_size:  # pydicom returns a partial header for files cut inside an element
        return "truncated header"
    if pos == file_size:  # no pixel data: fine for SR & co, not for an image
        sop = _sop_class(ds)
        if "Rows" in ds or "Image Storage" in UID(sop).name or sop == "1.2.840.10008.5.1.4.1.1.66.4":
            return "image without pixel data (truncated?)"
        return None
    try:
        implicit, little = ds.original_encoding
    except Exception:  # pragma: no cover - pydicom always sets it after a read
        return None
    if implicit is None or little is None:
        return None
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsuid is not None and UID(tsuid).is_deflated:
        return None
    end = "<" if little else ">"
    hdr = fp.read(8)
    if len(hdr) < 8:
        return "truncated before pixel data"
    group, elem = struct.unpack(end + "HH", hdr[:4])
    if (group, elem) != (0x7FE0, 0x0010):
        return None
    if implicit:
        length = struct.unpack(end + "L", hdr[4:8])[0]
        start = pos + 8
    else:
        ext = fp.read(4)
        if len(ext) < 4:
            return "truncated in pixel data header"
        length = struct.unpack(end + "L", ext)[0]
        start = pos + 12
    if length != 0xFFFFFFFF:
        if start + length > file_size:
            return "pixel data truncated"
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        bits = int(ds.get("BitsAllocated") or 0)
        spp = int(ds.get("SamplesPerPixel") or 1)
        frames = int(_float_or_none(ds.get("NumberOfFrames")) or 1)
        expected = rows * cols * spp * frames * bits
        expected = (expected + 7) // 8
        if length < expected:
            return "pixel data shorter than the image size"
        return None
    # encapsulated: items (FFFE,E000) until the sequence delimiter (FFFE,E0DD)
    fp.seek(start)
    while True:
        item = fp.read(8)
        if len(item) < 8:
            return "encapsulated pixel data truncated"
        g, e, ln = struct.unpack(end + "HHL", item)
        if (g, e) == (0xFFFE, 0xE0DD):
            return None
        if (g, e) != (0xFFFE, 0xE000) or ln == 0xFFFFFFFF:
            return "encapsulated pixel data corrupted"
        if fp.tell() + ln > file_size:
            return "encapsulated pixel data truncated"
        fp.seek(ln, os.SEEK_CUR)


def _read_scan_header(path: Path, preamble: bool) -> Dataset:
    """Header of the scanned tags; raises on unreadable/truncated files."""
    size = path.stat().st_size
    with open(path, "rb") as fp:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=list(_SCAN_TAGS), force=not preamble)
        problem = _pixel_data_problem(fp, ds, size)
    if problem:
        raise ValueError(problem)
    return ds


def _sop_class(ds: Dataset) -> str:
    uid = _str(ds.get("SOPClassUID"))
    if not uid:
        uid = _str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    return uid


def _group_key(ds: Dataset) -> str:
    uid = _str(ds.get("SeriesInstanceUID"))
    if uid:
        return uid
    parts = [_str(ds.get(k)) for k in ("StudyInstanceUID", "FrameOfReferenceUID", "SeriesNumber",
                                       "SeriesDescription", "Modality", "Rows", "Columns")]
    parts.append(_sop_class(ds))
    return "nouid-" + hashlib.sha1("|".join(parts).encode("utf-8", "replace")).hexdigest()[:16]


def scan_folder(root: Path | str) -> StudyScan:
    """Recursively summarise the DICOM series under ``root`` from headers only (no pixel data is read).

    Non-DICOM files are ignored (listed in ``non_dicom``); DICOM files that cannot be parsed or whose pixel
    data is truncated are listed in ``unreadable``. Series are ordered by study, series number, key.
    """
    root = Path(root)
    if not root.exists():
        raise InputError("no_input", "input folder does not exist")
    paths: list[Path] = []
    if root.is_file():
        paths = [root]
    else:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            paths.extend(Path(dirpath) / f for f in sorted(filenames))
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    unreadable: list[Path] = []
    non_dicom: list[Path] = []
    for p in paths:
        try:
            preamble, maybe = _looks_like_dicom(p)
        except OSError:
            unreadable.append(p)
            continue
        if not preamble and not maybe:
            non_dicom.append(p)
            continue
        try:
            ds = _read_scan_header(p, preamble)
        except Exception:
            (unreadable if preamble else non_dicom).append(p)
            continue
        if not _sop_class(ds) and "Modality" not in ds:
            (unreadable if preamble else non_dicom).append(p)
            continue
        if "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds:
            _flatten_functional_groups(ds)
        groups.setdefault(_group_key(ds), []).append((p, ds))

    neg = DEFAULT_RULES["contrast"]["negative_values"]
    series: list[SeriesInfo] = []
    for key, items in groups.items():
        h = items[0][1]
        frames = int(_float_or_none(h.get("NumberOfFrames")) or 1)
        sop = _sop_class(h)
        multiframe = frames > 1 or sop in (ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE)
        kernel = h.get("ConvolutionKernel")
        kernel_s = _str(kernel[0] if isinstance(kernel, pydicom.multival.MultiValue) and len(kernel) else kernel)
        sn = _float_or_none(h.get("SeriesNumber"))
        agents = tuple(sorted(set().union(*(_contrast_values(d) for _, d in items))))
        series.append(SeriesInfo(
            study_instance_uid=_str(h.get("StudyInstanceUID")),
            series_instance_uid=_str(h.get("SeriesInstanceUID")),
            modality=_str(h.get("Modality")).upper(),
            sop_class_uid=sop,
            image_type=tuple(x.strip().upper() for x in _str(h.get("ImageType")).split("\\") if x.strip()),
            description=_str(h.get("SeriesDescription")),
            n_files=len(items),
            files=[p for p, _ in items],
            slice_thickness_mm=_float_or_none(h.get("SliceThickness")),
            contrast=is_contrast(agents, neg),
            orientation=classify_orientation(h.get("ImageOrientationPatient")),
            convolution_kernel=kernel_s,
            multiframe=multiframe,
            header=h,
            key=key,
            series_number=int(sn) if sn is not None else None,
            n_frames=frames * len(items) if multiframe else 0,
            contrast_values=agents,
        ))
    series.sort(key=lambda s: (s.study_instance_uid, s.series_number if s.series_number is not None else 1 << 30,
                               s.key))
    log.info("scanned %d files: %d series, %d unreadable, %d non-DICOM", len(paths), len(series),
             len(unreadable), len(non_dicom))
    return StudyScan(series=series, unreadable=unreadable, non_dicom=non_dicom)


