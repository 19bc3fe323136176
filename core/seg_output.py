"""DICOM Segmentation (BINARY) of the label map, built with highdicom.

The label map is on the grid of the CT series it was computed from: ``labels[d, h, w]`` with ``d`` the
index of ``source_datasets[d]`` (the slices sorted along the volume's d axis, see ``core/volume.py``),
``h`` the DICOM row and ``w`` the DICOM column. For a multi-frame source (one Enhanced or Legacy Converted
Enhanced CT instance), ``source_frames[d]`` names its frame(s) at slice ``d`` instead; the SEG then has one
frame per source frame and its derivation references carry the source frame numbers. Label value ``n`` is
the segment whose metadata entry has ``"value": n``; 0 is background.

Only the non-empty segments are written, numbered 1..K in increasing order of their label value (DICOM
requires consecutive segment numbers); the mapping label value -> segment number is returned with the
SEG (:func:`segment_number_map`) so that the SR and ``result.json`` can refer to the segments.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from highdicom.sr import CodedConcept
from pydicom.uid import ExplicitVRLittleEndian

from core import codes, provenance

log = logging.getLogger(__name__)

SEG_SERIES_DESCRIPTION = "RESEARCH USE ONLY: sacral tumour AI segmentation"

#: Default segment metadata (the app passes the model metadata's list, which has the same form).
SEGMENT_DEFAULTS: tuple[dict[str, Any], ...] = (
    {
        "value": 1, "label": "hip bone left",
        "category": {"scheme": "SCT", "value": "91723000", "meaning": "Anatomical Structure"},
        "type": {"scheme": "SCT", "value": "29836001", "meaning": "Hip"},
        "laterality": {"scheme": "SCT", "value": "7771000", "meaning": "Left"},
    },
    {
        "value": 2, "label": "hip bone right",
        "category": {"scheme": "SCT", "value": "91723000", "meaning": "Anatomical Structure"},
        "type": {"scheme": "SCT", "value": "29836001", "meaning": "Hip"},
        "laterality": {"scheme": "SCT", "value": "24028007", "meaning": "Right"},
    },
    {
        "value": 3, "label": "sacral tumour",
        "category": {"scheme": "SCT", "value": "49755003", "meaning": "Morphologically Abnormal Structure"},
        "type": {"scheme": "SCT", "value": "108369006", "meaning": "Neoplasm"},
        "anatomic_region": {"scheme": "SCT", "value": "54735007", "meaning": "Sacrum"},
    },
)

# Recommended display colours (CIELab via sRGB): hip bones ivory/beige, tumour red.
_COLOURS = {1: (241, 214, 145), 2: (216, 186, 120), 3: (230, 40, 40)}


def _coded(entry: Mapping[str, Any], what: str) -> CodedConcept:
    """The code of a metadata entry; its meaning is pydicom's (DICOM PS3.16) where pydicom has the code."""
    try:
        return codes.standard_code(str(entry["scheme"]), str(entry["value"]), str(entry["meaning"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"segment {what} must be a dict with scheme, value and meaning, got {entry!r}") from exc


def segment_algorithm(entry: Mapping[str, Any], default: hd.AlgorithmIdentificationSequence
                      ) -> hd.AlgorithmIdentificationSequence:
    """The algorithm of one segment: the model that produced it when the entry names one.

    ``entry["algorithm"]`` (optional): ``{"name": model name, "version": model version, "sha256": hex}``;
    the sha256 goes into Algorithm Parameters (``sha256=<hex>``).
    """
    algo = entry.get("algorithm")
    if not algo:
        return default
    params = {"sha256": str(algo["sha256"])} if algo.get("sha256") else None
    return hd.AlgorithmIdentificationSequence(name=str(algo["name"])[:64], version=str(algo["version"])[:64],
                                              family=codes.ARTIFICIAL_INTELLIGENCE, parameters=params)


def segment_description(
    segment_number: int, entry: Mapping[str, Any], *, algorithm: hd.AlgorithmIdentificationSequence,
) -> hd.seg.SegmentDescription:
    """SegmentDescription of one metadata entry (category, type, optional laterality / anatomic region).

    ``algorithm`` is used unless the entry names its own (``entry["algorithm"]``, see :func:`segment_algorithm`).
    """
    algorithm = segment_algorithm(entry, algorithm)
    desc = hd.seg.SegmentDescription(
        segment_number=segment_number,
        segment_label=str(entry["label"]),
        segmented_property_category=_coded(entry["category"], "category"),
        segmented_property_type=_coded(entry["type"], "type"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[_coded(entry["anatomic_region"], "anatomic_region")]
        if entry.get("anatomic_region") else None,
        display_color=hd.color.CIELabColor.from_rgb(*_COLOURS[int(entry["value"])])
        if int(entry["value"]) in _COLOURS else None,
    )
    if entry.get("laterality"):
        # Laterality qualifies the property type (PS3.3 C.8.20.2: Segmented Property Type Modifier
        # Code Sequence, CID 244 Laterality), as TotalSegmentator/dcmqi do; highdicom has no argument.
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _coded(entry["laterality"], "laterality")]
    return desc


def build_seg(
    source_datasets: Sequence[pydicom.Dataset],
    labels: np.ndarray,
    segments: Sequence[Mapping[str, Any]],
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_number: int = 900,
    manufacturer: str = provenance.MANUFACTURER,
    manufacturer_model_name: str = provenance.MANUFACTURER_MODEL_NAME,
    software_versions: str | None = None,
    device_serial_number: str = provenance.DEVICE_SERIAL_NUMBER,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    source_frames: Sequence[Sequence[int]] | None = None,
) -> hd.seg.Segmentation:
    """BINARY DICOM SEG of a label map, only non-empty segments, empty frames omitted.

    Args:
        source_datasets: CT slice datasets of one series, sorted along the volume's d axis (the order
            of ``labels[d]``). Headers suffice: pixel data may be absent (read with
            ``stop_before_pixels=True``).
        labels: D-H-W integer label map (uint8 preferred; values 0..255) on exactly that grid
            (``labels[d, h, w]`` = row h, column w of ``source_datasets[d]``); value n = the segment whose
            entry has ``"value": n``.
        segments: one dict per label value: ``value``, ``label``, ``category``, ``type`` and optional
            ``laterality`` / ``anatomic_region`` (each a dict with ``scheme``, ``value``, ``meaning``;
            meanings are replaced by pydicom's where it has the code), and optional ``algorithm``
            (``{"name", "version", "sha256"}`` of the model that produced the segment).
        algorithm_name, algorithm_version: the segmentation algorithm of segments without their own
            ``algorithm`` (family Artificial Intelligence, type AUTOMATIC).
        software_versions: Software Versions (the application's version); default
            ``"<algorithm_name> <algorithm_version>"``.
        source_frames: only for a multi-frame source: ``source_datasets`` is then that one instance and
            ``source_frames[d]`` lists the 1-based frame number(s) of it at slice ``d`` (more than one only
            for identical duplicate frames); every frame must be listed once
            (``core.dicom_input.LoadedSeries.source_frames``).

    The SEG is written in UTF-8 (``provenance.OUTPUT_CHARACTER_SET``, like every output) and carries the
    source's Body Part Examined.

    Returns:
        the Segmentation. ``segment_number_map(seg)`` gives segment label -> SEG segment number (the
        ``segment_numbers`` of result.json), ``label_value_map(seg, segments)`` label value -> number.

    Raises:
        ValueError: inconsistent shapes, a label value without metadata, or no non-empty segment
            (a SEG needs at least one segment: the caller then writes the SR without a SEG).
    """
    if len(source_datasets) == 0:
        raise ValueError("no source datasets")
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be D-H-W, got shape {labels.shape}")
    if labels.dtype.kind not in "uib":
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.dtype.kind == "i" and labels.size and int(labels.min()) < 0:
        raise ValueError("labels must not be negative")
    rows, cols = int(source_datasets[0].Rows), int(source_datasets[0].Columns)
    n_slices = len(source_datasets) if source_frames is None else len(source_frames)
    if labels.shape != (n_slices, rows, cols):
        raise ValueError(f"labels shape {labels.shape} does not match the series ({n_slices}, {rows}, {cols})")
    if source_frames is not None:
        labels = _in_frame_order(labels, source_datasets, source_frames)
    series_uids = {str(ds.SeriesInstanceUID) for ds in source_datasets}
    if len(series_uids) != 1:
        raise ValueError(f"source datasets come from {len(series_uids)} series, expected one")

    by_value = {int(s["value"]): s for s in segments}
    # One C-contiguous uint8 copy at most: highdicom is ~2x slower on a Fortran-ordered (transposed) array.
    if labels.size and int(labels.max()) > 255:
        raise ValueError("label values above 255 are not supported")
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    counts = np.bincount(labels.reshape(-1), minlength=256)
    present = [int(v) for v in np.flatnonzero(counts[1:]) + 1]
    unknown = [v for v in present if v not in by_value]
    if unknown:
        raise ValueError(f"label values {unknown} have no segment metadata")
    if not present:
        raise ValueError("the label map is empty: no segment to write")

    number_of = {value: i + 1 for i, value in enumerate(present)}  # label value -> segment number
    if any(v != n for v, n in number_of.items()):
        lut = np.zeros(256, dtype=np.uint8)
        for v, n in number_of.items():
            lut[v] = n
        pixel_array = lut[labels]
    else:
        pixel_array = labels

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=algorithm_version, family=codes.ARTIFICIAL_INTELLIGENCE)
    descriptions = [segment_description(number_of[v], by_value[v], algorithm=algorithm) for v in present]

    seg = hd.seg.Segmentation(
        source_images=list(source_datasets),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name=manufacturer_model_name,
        software_versions=software_versions or f"{algorithm_name} {algorithm_version}",
        device_serial_number=device_serial_number,
        content_description="AI segmentation (research use only)",
        content_label="SACRAL_AI",
        content_creator_name="SacralTumourAI^Algorithm",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        omit_empty_frames=True,
        series_description=SEG_SERIES_DESCRIPTION,
        content_qualification="RESEARCH",
        specific_character_set=provenance.OUTPUT_CHARACTER_SET,
    )
    part = provenance.body_part_examined(source_datasets)
    if part:  # no Laterality: the segments carry theirs (dciodvfy errs on a General Series one here)
        seg.BodyPartExamined = part
    codes.normalise_meanings(seg)
    log.info("SEG built: %d segments (label values %s), %d frames", len(present), present,
             int(seg.NumberOfFrames))
    return seg


def _in_frame_order(labels: np.ndarray, source_datasets: Sequence[pydicom.Dataset],
                    source_frames: Sequence[Sequence[int]]) -> np.ndarray:
    """The D-H-W label map re-indexed to the frames of one multi-frame source: (NumberOfFrames, H, W)."""
    if len(source_datasets) != 1:
        raise ValueError("source_frames needs exactly one multi-frame source instance")
    n_frames = int(source_datasets[0].get("NumberOfFrames") or 1)
    slice_of = np.full(n_frames, -1, dtype=np.int64)
    for d, frames in enumerate(source_frames):
        for f in frames:
            if not 1 <= int(f) <= n_frames or slice_of[int(f) - 1] >= 0:
                raise ValueError(f"source frame {f} is out of range (1..{n_frames}) or listed twice")
            slice_of[int(f) - 1] = d
    if (slice_of < 0).any():
        raise ValueError(f"{int((slice_of < 0).sum())} source frame(s) have no slice")
    return labels[slice_of]


def label_value_map(seg: pydicom.Dataset, segments: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Label value (in the label map) -> SEG segment number, matching SEG segment labels to ``segments``."""
    value_of = {str(s["label"]): int(s["value"]) for s in segments}
    return {value_of[str(item.SegmentLabel)]: int(item.SegmentNumber) for item in seg.SegmentSequence}


def segment_number_map(seg: pydicom.Dataset, segments: Sequence[Mapping[str, Any]] | None = None
                       ) -> dict[str, int]:
    """Segment label -> SEG segment number, read from the SEG's SegmentSequence.

    ``segments`` (the metadata list) is unused for the lookup but, when given, the labels must belong
    to it (a consistency check).
    """
    out = {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}
    if segments is not None:
        known = {str(s["label"]) for s in segments}
        if not set(out) <= known:
            raise ValueError(f"SEG segments {sorted(set(out) - known)} are not in the metadata")
    return out
