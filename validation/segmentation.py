"""Segmentation accuracy of one study: the app's DICOM SEG read back and compared with a reference label map.

Grid: the SEG is read with highdicom (``get_pixels_by_source_instance``) in the order of the source CT slices
sorted as ``core.dicom_input.load_volume`` sorts them (ImagePositionPatient projected on the slice normal, then
SOPInstanceUID, then path; coincident positions kept once), so that ``pred[d, h, w]`` is row h, column w of
the d-th slice: the D-H-W grid of the analysis. The reference NIfTI (label values 1 hip bone left, 2 hip bone
right, 3 tumour) is read with SimpleITK (``core.volume.from_sitk``) and must be on that grid (same shape, and
an affine equal within 0.01 mm / 1e-4); it is not resampled.

Per structure: Dice (nan when both masks are empty), reference and predicted volume (mL) and the volume error
(predicted - reference, mL).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from core.dicom_header import merge_rules
from core.volume import affine_from_dicom, from_sitk, lattice_view
from validation.metrics import dice

#: structure -> (label value in the reference map, SEG segment label written by core.seg_output)
STRUCTURES: dict[str, tuple[int, str]] = {
    "tumour": (3, "sacral tumour"),
    "hip_bone_left": (1, "hip bone left"),
    "hip_bone_right": (2, "hip bone right"),
}


class SegEvaluationError(ValueError):
    """The SEG or the reference cannot be compared (missing series, different grid...)."""


def sorted_source_headers(dicom_dir: Path, series_instance_uid: str) -> tuple[list[pydicom.Dataset], np.ndarray]:
    """Headers of the series' slices in the analysis order (see module docstring) and the D-H-W -> LPS affine."""
    files = []
    for dirpath, dirnames, filenames in os.walk(dicom_dir):
        dirnames.sort()
        files.extend(Path(dirpath) / f for f in sorted(filenames))
    headers, paths = [], []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, AttributeError, EOFError):
            continue
        if str(ds.get("SeriesInstanceUID", "")) == series_instance_uid and "ImagePositionPatient" in ds:
            headers.append(ds)
            paths.append(str(f))
    if len(headers) < 2:
        raise SegEvaluationError("the analysed series was not found in the study folder")
    iop = np.asarray([float(x) for x in headers[0].ImageOrientationPatient])
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    ipp = np.asarray([[float(x) for x in d.ImagePositionPatient] for d in headers])
    proj = ipp @ normal
    order = sorted(range(len(headers)), key=lambda i: (proj[i], str(headers[i].SOPInstanceUID), paths[i]))
    tol = merge_rules(None)["volume"]["duplicate_tolerance_mm"]
    firsts: list[int] = []
    for i in order:
        if not firsts or abs(proj[i] - proj[firsts[-1]]) >= tol:
            firsts.append(i)
    spacing = float((proj[firsts[-1]] - proj[firsts[0]]) / (len(firsts) - 1))
    ps = [float(x) for x in headers[0].PixelSpacing]
    affine = affine_from_dicom(ipp[firsts[0]], row, col, normal, (ps[0], ps[1]), spacing)
    return [headers[i] for i in firsts], affine


def read_seg_labels(seg_path: Path, sources: list[pydicom.Dataset]) -> np.ndarray:
    """The SEG as a D-H-W uint8 label map (values of :data:`STRUCTURES`) on the grid of ``sources``."""
    seg = hd.seg.segread(seg_path)
    value_of = {label: value for value, label in STRUCTURES.values()}
    numbers = [(int(s.SegmentNumber), value_of[str(s.SegmentLabel)]) for s in seg.SegmentSequence
               if str(s.SegmentLabel) in value_of]
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    out = np.zeros((len(sources), rows, cols), dtype=np.uint8)
    if not numbers:
        return out
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(d.SOPInstanceUID) for d in sources],
        segment_numbers=[n for n, _ in numbers], combine_segments=False,
        assert_missing_frames_are_empty=True)
    for k, (_, value) in enumerate(numbers):
        out[pixels[..., k] > 0] = value
    return out


def read_reference(label_path: Path, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The reference label map as a D-H-W array on the analysis grid (``affine``, ``shape``).

    The label map must hold exactly the grid's voxels: the same affine, or the same lattice with its axes in
    another order or direction (it is then re-indexed, no interpolation: :func:`core.volume.lattice_view`).
    Anything else raises :class:`SegEvaluationError`: a reference on another grid is not resampled behind the
    caller's back.
    """
    ref = from_sitk(sitk.ReadImage(str(label_path)))
    if ref.array.size != int(np.prod(shape)):
        raise SegEvaluationError(f"reference label map {ref.array.shape} does not cover the DICOM grid {tuple(shape)} "
                                 f"voxel for voxel")
    arr = lattice_view(ref, affine, shape)
    if arr is None:
        raise SegEvaluationError("reference label map is not on the DICOM grid (origin/spacing/direction differ)")
    return np.ascontiguousarray(arr)


def compare(pred: np.ndarray, ref: np.ndarray, voxel_ml: float) -> dict[str, dict[str, float]]:
    """Per structure: dice, reference_ml, predicted_ml, volume_error_ml (pred - ref) of two D-H-W label maps."""
    out = {}
    for name, (value, _) in STRUCTURES.items():
        p, r = pred == value, ref == value
        ref_ml, pred_ml = float(r.sum()) * voxel_ml, float(p.sum()) * voxel_ml
        out[name] = {"dice": dice(p, r), "reference_ml": ref_ml, "predicted_ml": pred_ml,
                     "volume_error_ml": pred_ml - ref_ml}
    return out


def evaluate_case(run_dir: Path, result: dict[str, Any], dicom_dir: Path, label_path: Path) -> dict[str, Any]:
    """Compare the SEG of a finished run with the reference. A run without a SEG (nothing segmented) counts
    as an empty prediction. Returns :func:`compare`'s dict; raises SegEvaluationError."""
    series = result.get("series_instance_uid")
    if not series:
        raise SegEvaluationError("result.json names no analysed series")
    sources, affine = sorted_source_headers(dicom_dir, str(series))
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    seg_name = (result.get("outputs") or {}).get("seg")
    pred = read_seg_labels(run_dir / seg_name, sources) if seg_name else np.zeros(shape, dtype=np.uint8)
    ref = read_reference(label_path, affine, shape)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    return compare(pred, ref, voxel_ml)
