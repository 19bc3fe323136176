"""DICOM input: build the CT volume of the one selected series (HU, D-H-W, LPS), checking its geometry.

Headers are scanned by :mod:`core.dicom_header` (:func:`core.dicom_header.scan_folder`, no pixel data) and the
series chosen by :func:`core.series_selection.select_series`; this module decodes the pixels of that series only.

Why not the SDK's ``DICOMDataLoaderOperator`` -> ``DICOMSeriesSelectorOperator`` -> ``DICOMSeriesToVolumeOperator``:

* the loader reads the pixel data of *every* file in the input (localizers, other series, other studies),
  although only one series is used; the scan reads headers only and :func:`load_volume` decodes
  pixels of the selected series only;
* its selector matches attributes by regex but cannot *prefer* (noncontrast over contrast-enhanced, soft-tissue
  kernel over bone kernel, thinner slices, ...) and says nothing about why a series was not taken;
  :func:`core.series_selection.select_series` ranks, and reports a reason for every rejection;
* its series-to-volume step trusts slice order and geometry: no check of gantry tilt, missing or duplicate
  slices, non-uniform spacing or inconsistent orientation/size. :func:`load_volume` sorts slices by their
  position along the slice normal (never by file name or InstanceNumber) and refuses geometry it cannot
  represent with one affine, with a one-line, identifier-free :class:`InputError`.

Pixel decoding is pydicom 3's: native little/big endian and RLE built in, JPEG 2000 via pylibjpeg-openjpeg,
JPEG lossless (process 14) via pylibjpeg-libjpeg, JPEG-LS via pyjpegls (installed with highdicom). HU =
stored value x RescaleSlope + RescaleIntercept per slice, in float32.

Volumes follow ``core.volume``: ``array`` D-H-W float32 HU, ``affine`` (d, h, w, 1) -> LPS mm, ``d`` along
``cross(row_dir, col_dir)`` of ImageOrientationPatient, i.e. towards the head for a standard axial series.

Enhanced CT (1.2.840.10008.5.1.4.1.1.2.1) and Legacy Converted Enhanced CT (1.2.840.10008.5.1.4.1.1.2.2):
one multi-frame instance whose frames are the slices. Each frame's position, orientation, pixel spacing and
rescale come from its Per-Frame Functional Groups, else the Shared Functional Groups, else the top level
(PS3.3 C.7.6.16; :func:`functional_group_value`); the frames then go through the *same* sorting and geometry
checks as the files of a classic series (same ``InputError`` codes and reasons), and pydicom decodes them
one at a time, straight into the volume, after the checks. The scan flattens the first frame's
functional-group values (orientation, thickness, kernel, contrast agent) into the reduced header, so that
series selection applies the same rules to both forms. A series split over several multi-frame objects
(concatenations) is refused (``multiframe_split``). Derived objects reference the one source instance and
its frame numbers (:attr:`LoadedSeries.source_frames`).

Volume-check rules are configuration (``app.yaml`` ``series_selection.volume``), defaults in
:data:`core.dicom_header.DEFAULT_RULES`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels.utils import iter_pixels, pixel_array
from pydicom.uid import UID

from core.dicom_header import (
    ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE, InputError, SeriesInfo, _float_or_none, _str,
    functional_group_value, merge_rules,
)
from core.volume import Volume, affine_from_dicom

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ volume loading

@dataclass
class LoadedSeries:
    """The selected series as a volume.

    ``volume``: float32 HU, D-H-W, affine (d, h, w, 1) -> LPS mm. ``datasets``: full headers without pixel
    data: for a classic series one per slice, in the same ``d`` order (for SEG/SR references); for a multi-frame
    series the one instance. ``source_frames``: for a multi-frame series, the 1-based frame numbers of that
    instance at each ``d`` (one, or more for identical duplicate frames); None for a classic series.
    ``warnings``: one line each, no identifiers.
    """

    volume: Volume
    datasets: list[Dataset]
    warnings: list[str]
    source_frames: list[list[int]] | None = None


@dataclass
class _Planes:
    """The image planes of one series before sorting: the files of a classic series, or the frames of one
    multi-frame instance. Per plane: ``iop`` (N, 6) ImageOrientationPatient, ``ipp`` (N, 3) ImagePositionPatient
    in LPS mm, ``pixel_spacing`` (N, 2) mm (row spacing, column spacing), ``size`` (rows, columns),
    ``samples`` SamplesPerPixel, ``rescale`` (slope or None, intercept or None, RescaleType), ``tiebreak``
    (sort key after the position: SOP Instance UID and path, or the frame number)."""

    iop: np.ndarray
    ipp: np.ndarray
    pixel_spacing: np.ndarray
    size: list[tuple[int, int]]
    samples: list[int]
    rescale: list[tuple[float | None, float | None, str]]
    tiebreak: list[tuple[Any, ...]]
    headers: list[Dataset]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _vec(value: Any, kw: str, n: int) -> np.ndarray:
    try:
        arr = np.asarray([float(x) for x in value], dtype=float)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise InputError("missing_geometry", f"a slice has no valid {kw}")
    return arr


def _classic_planes(series: SeriesInfo) -> _Planes:
    """One plane per file (full headers, no pixel data read)."""
    headers: list[Dataset] = []
    for f in series.files:
        try:
            headers.append(pydicom.dcmread(f, stop_before_pixels=True))
        except Exception as exc:
            raise InputError("unreadable_file", f"a file of the series cannot be read ({type(exc).__name__})") from None
    return _Planes(
        iop=np.stack([_vec(d.get("ImageOrientationPatient"), "ImageOrientationPatient", 6) for d in headers]),
        ipp=np.stack([_vec(d.get("ImagePositionPatient"), "ImagePositionPatient", 3) for d in headers]),
        pixel_spacing=np.stack([_vec(d.get("PixelSpacing"), "PixelSpacing", 2) for d in headers]),
        size=[(int(d.get("Rows") or 0), int(d.get("Columns") or 0)) for d in headers],
        samples=[int(d.get("SamplesPerPixel") or 1) for d in headers],
        rescale=[(_float_or_none(d.get("RescaleSlope")), _float_or_none(d.get("RescaleIntercept")),
                  _str(d.get("RescaleType")).upper()) for d in headers],
        tiebreak=[(_str(d.get("SOPInstanceUID")), str(f)) for d, f in zip(headers, series.files)],
        headers=headers,
    )


def _multiframe_planes(series: SeriesInfo) -> _Planes:
    """One plane per frame of the series' single multi-frame instance, from its functional groups."""
    if len(series.files) != 1:
        raise InputError("multiframe_split", f"the multi-frame series is split over {len(series.files)} objects "
                         "(concatenation): not supported, export it as one object or as CT Image Storage")
    try:
        ds = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    except Exception as exc:
        raise InputError("unreadable_file", f"a file of the series cannot be read ({type(exc).__name__})") from None
    n = int(_float_or_none(ds.get("NumberOfFrames")) or 1)
    fg = [{kw: functional_group_value(ds, kw, i) for kw in (
        "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept",
        "RescaleType")} for i in range(n)]
    size = (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
    return _Planes(
        iop=np.stack([_vec(v["ImageOrientationPatient"], "ImageOrientationPatient", 6) for v in fg]),
        ipp=np.stack([_vec(v["ImagePositionPatient"], "ImagePositionPatient", 3) for v in fg]),
        pixel_spacing=np.stack([_vec(v["PixelSpacing"], "PixelSpacing", 2) for v in fg]),
        size=[size] * n,
        samples=[int(ds.get("SamplesPerPixel") or 1)] * n,
        rescale=[(_float_or_none(v["RescaleSlope"]), _float_or_none(v["RescaleIntercept"]),
                  _str(v["RescaleType"]).upper()) for v in fg],
        tiebreak=[(i,) for i in range(n)],
        headers=[ds],
    )


def load_volume(series: SeriesInfo, rules: Mapping[str, Any] | None = None) -> LoadedSeries:
    """Decode the pixel data of ``series`` into a float32 HU volume (see module docstring for the checks).

    Image planes (the files of a classic series, the frames of an Enhanced / Legacy Converted Enhanced CT
    instance) are sorted by ImagePositionPatient projected on ``cross(row_dir, col_dir)``; ``d`` increases along
    that normal. The slice spacing of the affine is (last - first position) / (slices - 1) in mm. All
    geometry is checked from the headers before any pixel data is decoded.
    Raises :class:`InputError` for geometry that one affine cannot represent.
    """
    vr = merge_rules(rules)["volume"]
    warnings: list[str] = []
    if not series.files:
        raise InputError("empty_series", "the series has no files")
    multiframe = series.multiframe or series.sop_class_uid in (ENHANCED_CT_IMAGE_STORAGE,
                                                               LEGACY_ENHANCED_CT_IMAGE_STORAGE)

    # pass 1: full headers, no pixels; all geometry checks before any decoding
    planes = _multiframe_planes(series) if multiframe else _classic_planes(series)
    iops = planes.iop
    if np.max(np.abs(iops - iops[0])) > vr["orientation_tolerance"]:
        raise InputError("inconsistent_orientation", "slices of the series have different ImageOrientationPatient")
    row, col = iops[0, :3], iops[0, 3:]
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise InputError("invalid_orientation", "ImageOrientationPatient is not two orthogonal unit vectors")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)

    sizes = set(planes.size)
    if len(sizes) != 1:
        raise InputError("inconsistent_dimensions", f"slices have different sizes: {sorted(sizes)}")
    rows, cols = sizes.pop()
    if rows < 1 or cols < 1:
        raise InputError("missing_geometry", "slices have no Rows/Columns")
    ps = planes.pixel_spacing
    if np.max(np.abs(ps - ps[0])) > vr["pixel_spacing_tolerance_mm"]:
        raise InputError("inconsistent_pixel_spacing", "slices of the series have different PixelSpacing")
    if np.any(ps[0] <= 0):
        raise InputError("missing_geometry", "PixelSpacing is not positive")
    if any(s != 1 for s in planes.samples):
        raise InputError("not_greyscale", "the series is not greyscale (SamplesPerPixel != 1)")

    ipp = planes.ipp
    proj = ipp @ normal
    order = sorted(range(len(proj)), key=lambda i: (proj[i], *planes.tiebreak[i]))

    # group coincident positions (duplicates)
    slots: list[list[int]] = []
    for i in order:
        if slots and abs(proj[i] - proj[slots[-1][0]]) < vr["duplicate_tolerance_mm"]:
            slots[-1].append(i)
        else:
            slots.append([i])
    firsts = [s[0] for s in slots]
    n = len(slots)
    if n < 2:
        raise InputError("too_few_slices", f"the series has {n} distinct slice position(s)")
    u_ipp, u_proj = ipp[firsts], proj[firsts]

    # gantry tilt / positions off the stack line
    span_vec = u_ipp[-1] - u_ipp[0]
    span = float(span_vec @ normal)
    offset = float(np.linalg.norm(span_vec - span * normal))
    tilt = math.degrees(math.atan2(offset, span))
    if tilt > vr["max_tilt_deg"]:
        raise InputError("gantry_tilt", f"slice positions deviate {tilt:.1f} degrees from the slice normal "
                         "(gantry tilt): resample to an orthogonal grid first")
    t = (u_proj - u_proj[0]) / span
    resid = np.linalg.norm(u_ipp - (u_ipp[0] + t[:, None] * span_vec), axis=1)
    if resid.max() > vr["max_inplane_deviation_px"] * float(ps[0].min()):
        raise InputError("inconsistent_positions",
                         f"slice positions leave the stack line by up to {_fmt(float(resid.max()))} mm")

    diffs = np.diff(u_proj)
    med = float(np.median(diffs))
    big = diffs > vr["max_gap_factor"] * med
    if big.any():
        g = float(diffs[big].max())
        raise InputError("missing_slices", f"missing slices: gap of {_fmt(g)} mm where the slice spacing is "
                         f"{_fmt(med)} mm ({int(big.sum())} gap(s))")
    variation = float((diffs.max() - diffs.min()) / med)
    if variation > vr["max_spacing_variation"]:
        raise InputError("non_uniform_spacing", f"non-uniform slice spacing: {_fmt(float(diffs.min()))} to "
                         f"{_fmt(float(diffs.max()))} mm")
    spacing = span / (n - 1)

    # pass 2: decode pixels, straight into the float32 volume (one plane at a time)
    vol = np.empty((n, rows, cols), dtype=np.float32)
    slot_of = {i: k for k, members in enumerate(slots) for i in members}
    filled = np.zeros(n, dtype=bool)
    missing_rescale = False
    n_dropped = 0
    planes_in_order = [i for members in slots for i in members]
    decoded = _decode_frames(series.files[0], planes, sorted(planes_in_order), rows, cols) if multiframe else \
        ((i, _decode_file(series.files[i], planes.headers[i], rows, cols)) for i in planes_in_order)
    for i, stored in decoded:
        hu, no_rescale = _to_hu(stored, planes.rescale[i])
        missing_rescale |= no_rescale
        k = slot_of[i]
        if not filled[k]:
            vol[k] = hu
            filled[k] = True
        elif np.array_equal(hu, vol[k]):
            n_dropped += 1
        else:
            raise InputError("conflicting_duplicates",
                             f"two slices at the same position ({_fmt(float(proj[i]))} mm along the normal) "
                             "have different pixel data")
    if n_dropped:
        warnings.append(f"{n_dropped} duplicate slice(s) with identical pixel data dropped")
    if missing_rescale:
        warnings.append("RescaleSlope/RescaleIntercept absent: stored values taken as HU")
    rtypes = {planes.rescale[i][2] for i in firsts} - {"", "HU"}
    if rtypes:
        warnings.append(f"RescaleType {'/'.join(sorted(rtypes))} instead of HU")

    datasets = planes.headers if multiframe else [planes.headers[i] for i in firsts]
    for d in datasets:  # fill empty SOP UIDs from the file meta (identical by definition)
        fm = getattr(d, "file_meta", None)
        if not _str(d.get("SOPClassUID")) and fm is not None and fm.get("MediaStorageSOPClassUID"):
            d.SOPClassUID = fm.MediaStorageSOPClassUID
        if not _str(d.get("SOPInstanceUID")) and fm is not None and fm.get("MediaStorageSOPInstanceUID"):
            d.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
    source_frames = [[i + 1 for i in members] for members in slots] if multiframe else None

    affine = affine_from_dicom(u_ipp[0], row, col, normal, (float(ps[0, 0]), float(ps[0, 1])), spacing)
    meta = {
        "series_instance_uid": series.series_instance_uid,
        "study_instance_uid": series.study_instance_uid,
        "series_key": series.key,
        "frame_of_reference_uid": _str(datasets[0].get("FrameOfReferenceUID")),
        "sop_instance_uids": [_str(d.get("SOPInstanceUID")) for d in datasets],
        "source_frame_numbers": [f[0] for f in source_frames] if source_frames else None,
        "multiframe": multiframe,
        "modality": series.modality,
        "slice_thickness_mm": series.slice_thickness_mm,
        "slice_spacing_mm": spacing,
        "pixel_spacing_mm": (float(ps[0, 0]), float(ps[0, 1])),
        "contrast": series.contrast,
        "convolution_kernel": series.convolution_kernel,
        "units": "HU",
        "warnings": list(warnings),
    }
    log.info("loaded %s series: %d slices %dx%d, spacing %.3g mm, %d warning(s)",
             "multi-frame" if multiframe else "single-frame", n, rows, cols, spacing, len(warnings))
    return LoadedSeries(volume=Volume(vol, affine, meta), datasets=datasets, warnings=warnings,
                        source_frames=source_frames)


def _decode_error(header: Dataset, exc: Exception) -> InputError:
    ts = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    name = UID(ts).name if ts else "unknown transfer syntax"
    return InputError("decode_failed", f"cannot decode pixel data ({name}): {type(exc).__name__}")


def _decode_file(path: Path, header: Dataset, rows: int, cols: int) -> np.ndarray:
    """The stored values of one single-frame file (H-W)."""
    try:
        arr = pixel_array(path)
    except Exception as exc:
        raise _decode_error(header, exc) from None
    if arr.shape != (rows, cols):
        raise InputError("inconsistent_dimensions", f"decoded slice is {arr.shape}, header says {(rows, cols)}")
    return arr


def _decode_frames(path: Path, planes: _Planes, indices: list[int], rows: int, cols: int
                   ) -> Any:
    """Yield (frame index, stored values H-W) for the 0-based ``indices`` (increasing) of a multi-frame file;
    pydicom reads and decodes only those frames, one at a time."""
    try:
        for i, arr in zip(indices, iter_pixels(path, indices=indices)):
            if arr.shape != (rows, cols):
                raise InputError("inconsistent_dimensions",
                                 f"decoded frame is {arr.shape}, header says {(rows, cols)}")
            yield i, arr
    except InputError:
        raise
    except Exception as exc:
        raise _decode_error(planes.headers[0], exc) from None


def _to_hu(stored: np.ndarray, rescale: tuple[float | None, float | None, str]) -> tuple[np.ndarray, bool]:
    """One plane in HU (float32, H-W) = stored x slope + intercept, and whether slope/intercept were absent."""
    slope, inter, _ = rescale
    missing = slope is None or inter is None
    slope = 1.0 if slope is None or slope == 0 else slope
    inter = 0.0 if inter is None else inter
    hu = stored.astype(np.float32)
    if slope != 1.0:
        hu *= np.float32(slope)
    if inter != 0.0:
        hu += np.float32(inter)
    return hu, missing


def ensure_reference_uids(datasets: list[Dataset], key: str) -> list[str]:
    """Fill empty Study/Series/FrameOfReference UIDs of ``datasets`` (in memory only) with UIDs derived from
    the series ``key``, so that derived objects (SEG, SR) can reference them. Returns warnings (one line each).
    """
    from pydicom.uid import generate_uid

    warnings = []
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if not str(datasets[0].get(kw, "") or "").strip():
            uid = generate_uid(entropy_srcs=[key, kw])
            for ds in datasets:
                setattr(ds, kw, uid)
            warnings.append(f"source series has no {kw}: a derived UID is used in the outputs")
    return warnings


#: Patient/study attributes that the derived objects (SEG, SR) copy from the source and highdicom parses:
#: keyword -> check of a present value (None: any value is accepted)
_COPIED_ATTRIBUTES: dict[str, Any] = {
    "PatientName": None, "PatientID": None, "AccessionNumber": None, "StudyID": None,
    "PatientBirthDate": "DA", "StudyDate": "DA", "StudyTime": "TM", "PatientSex": ("M", "F", "O"),
}


def ensure_copied_attributes(datasets: list[Dataset]) -> list[str]:
    """Make the patient/study attributes that SEG and SR copy usable (in memory only): an absent one becomes
    empty (DICOM type 2), a malformed date, time or sex becomes empty with a warning naming the attribute
    (never its value). Without this, highdicom refuses to build the outputs.
    """
    from pydicom.valuerep import DA, TM

    malformed: set[str] = set()
    for ds in datasets:
        for kw, check in _COPIED_ATTRIBUTES.items():
            if kw not in ds:
                setattr(ds, kw, "")
                continue
            value = _str(ds.get(kw))
            if not value or check is None:
                continue
            try:
                ok = value.upper() in check if isinstance(check, tuple) else \
                    (DA if check == "DA" else TM)(value) is not None
            except Exception:  # noqa: BLE001 - pydicom raises ValueError (or others) for malformed values
                ok = False
            if not ok:
                setattr(ds, kw, "")
                malformed.add(kw)
    return [f"{kw} malformed in the DICOM header: left empty in the outputs" for kw in sorted(malformed)]
