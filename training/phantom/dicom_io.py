"""DICOM and NIfTI writing: one CT Image Storage file per slice (plus optional localizer and contrast series) and
the label map as NIfTI on exactly the series' grid. Identifiers are synthetic; UIDs are deterministic.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from core.volume import Volume, to_sitk
from training.phantom.params import LABELS, PatientParams, ScanParams
from training.phantom.tumour import MANIFEST_FIELDS

TRANSFER_SYNTAXES = {
    "explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian,
    "jpeg2000": JPEG2000Lossless, "j2k": JPEG2000Lossless, "rle": RLELossless,
}


def _uid(p: PatientParams, *parts: Any) -> str:
    """Deterministic UUID-derived UID (2.25.<128-bit int>) from the patient's uid_seed and ``parts``."""
    h = hashlib.sha256("|".join(["sacral-phantom", p.uid_seed, *map(str, parts)]).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:16], "big") >> 1)


def study_uids(p: PatientParams) -> dict[str, str]:
    """Deterministic StudyInstanceUID and FrameOfReferenceUID of ``p``'s study."""
    return {"study": _uid(p, "study"), "frame_of_reference": _uid(p, "for")}


def _ds_str(v: float) -> str:
    s = f"{v:.6g}"
    return s if len(s) <= 16 else f"{v:.4f}"[:16]


def _base_dataset(p: PatientParams, scan: ScanParams, series_uid: str, image_type: list[str], series_number: int,
                  description: str, contrast: bool) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = image_type
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = p.study_date
    ds.InstanceCreationDate = p.study_date
    ds.StudyTime = p.study_time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ds.InstanceCreationTime = p.study_time
    ds.AccessionNumber = p.accession_number
    ds.Modality = "CT"
    ds.Manufacturer = scan.manufacturer
    ds.InstitutionName = scan.institution
    ds.ReferringPhysicianName = ""
    ds.StationName = f"{scan.site}CT1"
    ds.StudyDescription = "CT PELVIS"
    ds.SeriesDescription = description
    ds.ManufacturerModelName = scan.model
    ds.PatientName = p.patient_name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.PatientAge = f"{p.age:03d}Y"
    ds.PatientSize = round(1.72 * p.scale if p.sex == "M" else 1.62 * p.scale, 2)
    ds.PatientWeight = round((78.0 if p.sex == "M" else 66.0) * p.scale ** 3 * (0.8 + p.body.fat_mm / 100.0), 1)
    ds.PatientIdentityRemoved = "NO"
    if contrast:
        ds.ContrastBolusAgent = scan.contrast_agent
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = 100
    ds.BodyPartExamined = "PELVIS"
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = _ds_str(scan.slice_thickness_mm)
    ds.KVP = _ds_str(scan.kvp)
    ds.SpacingBetweenSlices = _ds_str(scan.slice_spacing_mm)
    ds.DataCollectionDiameter = 500
    ds.SoftwareVersions = "sacral-phantom 1.0"
    ds.ProtocolName = "PELVIS ROUTINE"
    ds.ReconstructionDiameter = _ds_str(scan.fov_mm)
    ds.GantryDetectorTilt = 0
    ds.TableHeight = _ds_str(scan.table_height_mm)
    ds.RotationDirection = "CW"
    ds.ExposureTime = 500
    ds.XRayTubeCurrent = int(150 + 150 * (p.scale - 0.85))
    ds.Exposure = int(ds.XRayTubeCurrent * 0.5)
    ds.FilterType = "BODY FILTER"
    ds.ConvolutionKernel = scan.kernel
    ds.PatientPosition = scan.patient_position
    ds.StudyInstanceUID = study_uids(p)["study"]
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = p.accession_number[-6:]
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = study_uids(p)["frame_of_reference"]
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = int(scan.pixel_representation)
    ds.RescaleIntercept = -1024 if scan.pixel_representation == 0 else 0
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    return ds


def _store(ds: Dataset, pixels: np.ndarray, path: Path, ts: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = "SACRALPHANTOM1"
    ds.file_meta = meta
    ds.Rows, ds.Columns = pixels.shape
    if "PixelData" in ds:
        del ds.PixelData
    if ts in (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)):
        meta.TransferSyntaxUID = ts
        ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW"
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(ts, np.ascontiguousarray(pixels), generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def _stored_pixels(hu: np.ndarray, pr: int) -> np.ndarray:
    hu = np.clip(hu.astype(np.int32), -1024, 3071)
    return (hu + 1024).astype(np.uint16) if pr == 0 else hu.astype(np.int16)


def _write_series(p: PatientParams, scan: ScanParams, ct: Volume, folder: Path, prefix: str, tag: str,
                  image_type: list[str], description: str, contrast: bool) -> str:
    series_uid = _uid(p, "series", tag, scan.series_number)
    ds = _base_dataset(p, scan, series_uid, image_type, scan.series_number, description, contrast)
    row_dir = ct.affine[:3, 2] / np.linalg.norm(ct.affine[:3, 2])
    col_dir = ct.affine[:3, 1] / np.linalg.norm(ct.affine[:3, 1])
    ds.ImageOrientationPatient = [_ds_str(float(v)) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [_ds_str(scan.pixel_spacing_mm)] * 2
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ts = scan.transfer_syntax_uid
    for k in range(ct.shape[0]):
        ipp = ct.affine[:3, :3] @ np.array([k, 0, 0]) + ct.affine[:3, 3]
        ds.SOPInstanceUID = _uid(p, "sop", tag, scan.series_number, k)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_str(float(v)) for v in ipp]
        ds.SliceLocation = _ds_str(float(ipp[2]))
        _store(ds, _stored_pixels(ct.array[k], scan.pixel_representation), folder / f"{prefix}{k + 1:04d}.dcm", ts)
    return series_uid


def _write_localizer(p: PatientParams, scan: ScanParams, ct: Volume, folder: Path) -> str:
    """Single-slice AP localizer (coronal projection of the CT), series 1."""
    arr = ct.array.astype(np.float32)
    x_first = float(ct.affine[0, 3])
    if ct.affine[0, 2] < 0:   # feet-first grid: columns run to the right; the localizer is drawn head-first
        arr = arr[:, :, ::-1]
        x_first = float(ct.affine[0, 3] + ct.affine[0, 2] * (ct.shape[2] - 1))
    proj = np.clip(arr + 1000.0, 0, None).mean(axis=1)        # (D, W): mean attenuation along y
    img = proj[::-1] / max(float(proj.max()), 1.0) * 2000.0 - 1000.0   # rows from head to feet
    loc_scan = replace(scan, series_number=1)
    series_uid = _uid(p, "series", "localizer", 1)
    ds = _base_dataset(p, loc_scan, series_uid, ["ORIGINAL", "PRIMARY", "LOCALIZER"], 1, "TOPOGRAM AP", False)
    ys = ct.affine[1, 1] * (ct.shape[1] - 1) / 2.0 + ct.affine[1, 3]
    top = ct.affine[:3, :3] @ np.array([ct.shape[0] - 1, 0, 0]) + ct.affine[:3, 3]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.PixelSpacing = [_ds_str(scan.slice_spacing_mm), _ds_str(scan.pixel_spacing_mm)]
    ds.ImagePositionPatient = [_ds_str(x_first), _ds_str(float(ys)), _ds_str(float(top[2]))]
    ds.SliceThickness = _ds_str(scan.pixel_spacing_mm * ct.shape[1])
    ds.WindowCenter, ds.WindowWidth = 0, 2000
    ds.SOPInstanceUID = _uid(p, "sop", "localizer", 1, 0)
    ds.InstanceNumber = 1
    _store(ds, _stored_pixels(np.rint(img), scan.pixel_representation), folder / "LOC0001.dcm",
           scan.transfer_syntax_uid)
    return series_uid


def write_case(patient: PatientParams, scan: ScanParams, ct: Volume, labels: Volume, out_dir: Path, *,
               localizer: bool = False, contrast_series: bool = False) -> dict[str, Any]:
    """Write one case under ``out_dir/<case_id>/``: ``dicom/`` (one CT Image Storage file per slice, plus
    optional localizer ``LOC0001.dcm`` and contrast-enhanced series ``CE*.dcm`` of the same study) and
    ``labels.nii.gz``. Returns the manifest row (paths relative to ``out_dir``).

    ``ct``/``labels`` must be the output of ``render(patient, scan)``; identifiers come from ``patient``
    (override them with ``dataclasses.replace``), transfer syntax / PixelRepresentation from ``scan``.
    """
    if ct.shape != labels.shape or not np.allclose(ct.affine, labels.affine):
        raise ValueError("ct and labels must share one grid")
    if scan.pixel_representation not in (0, 1):
        raise ValueError("pixel_representation must be 0 or 1")
    out_dir = Path(out_dir)
    case_dir = out_dir / patient.case_id
    dcm_dir = case_dir / "dicom"
    dcm_dir.mkdir(parents=True, exist_ok=True)
    series_uid = _write_series(patient, scan, ct, dcm_dir, "CT", "ct", ["ORIGINAL", "PRIMARY", "AXIAL"],
                               scan.series_description, scan.contrast)
    extra = []
    if localizer:
        _write_localizer(patient, scan, ct, dcm_dir)
        extra.append("localizer")
    if contrast_series:
        ce_scan = replace(scan, contrast=True, series_number=3, noise_seed=scan.noise_seed + 1,
                          series_description=scan.series_description.replace("NONCONTRAST", "CONTRAST"))
        from training.phantom.render import render
        ce, _ = render(patient, ce_scan)
        _write_series(patient, ce_scan, ce, dcm_dir, "CE", "ce", ["ORIGINAL", "PRIMARY", "AXIAL"],
                      ce_scan.series_description, True)
        extra.append("contrast")
    label_path = case_dir / "labels.nii.gz"
    sitk.WriteImage(to_sitk(labels), str(label_path), useCompression=True)
    tmask = labels.array == LABELS["tumour"]
    vol_ml = float(tmask.sum()) * labels.voxel_volume_ml
    if tmask.any():
        cen = labels.index_to_lps(np.argwhere(tmask).mean(axis=0))[0]
    else:
        cen = [float("nan")] * 3
    ts_name = {str(v): k for k, v in TRANSFER_SYNTAXES.items() if k != "j2k"}.get(scan.transfer_syntax_uid,
                                                                                  scan.transfer_syntax_uid)
    uids = study_uids(patient)
    row = {
        "case_id": patient.case_id, "tumour_class": patient.tumour_class, "age": patient.age, "sex": patient.sex,
        "dicom_dir": dcm_dir.relative_to(out_dir).as_posix(), "label_path": label_path.relative_to(out_dir).as_posix(),
        "tumour_volume_ml": round(vol_ml, 3), "tumour_volume_ml_analytic": round(patient.tumour_volume_ml_analytic, 3),
        "tumour_centroid_lps_x": round(float(cen[0]), 2), "tumour_centroid_lps_y": round(float(cen[1]), 2),
        "tumour_centroid_lps_z": round(float(cen[2]), 2),
        **(patient.tumour.manifest_fields() if patient.tumour is not None else {k: "none" for k in MANIFEST_FIELDS}),
        "scale": round(patient.scale, 4),
        "rows": scan.matrix, "cols": scan.matrix, "n_slices": ct.shape[0], "pixel_spacing_mm": scan.pixel_spacing_mm,
        "slice_spacing_mm": scan.slice_spacing_mm, "slice_thickness_mm": scan.slice_thickness_mm,
        "rotation_deg": scan.rotation_deg, "table_offset_x_mm": scan.table_offset_mm[0],
        "table_offset_y_mm": scan.table_offset_mm[1], "table_offset_z_mm": scan.table_offset_mm[2],
        "manufacturer": scan.manufacturer, "model": scan.model, "site": scan.site, "kernel": scan.kernel,
        "transfer_syntax": ts_name, "pixel_representation": scan.pixel_representation,
        "study_instance_uid": uids["study"], "series_instance_uid": series_uid,
        "frame_of_reference_uid": uids["frame_of_reference"], "extra_series": "+".join(extra),
        "coverage": scan.coverage, "patient_position": scan.patient_position, "noise_hu": scan.noise_hu,
        "hip_prosthesis": patient.implants.hip_prosthesis, "spinal_rods": int(patient.implants.spinal_rods),
        "marrow_hu": round(patient.bone.marrow_hu, 1), "arms": patient.body.arms,
    }
    return row


