"""Writes small, real DICOM files with known content and geometry for the input tests.

The CT pattern is ``hu = -1000 + 40*d + 7*h + w`` (HU) where ``d`` is the slice index in geometry order (along
``cross(row_dir, col_dir)``), ``h`` the row and ``w`` the column; every voxel of a 32x32x24 series is unique
enough that a wrong sort, flip or rescale changes the values.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID, ComprehensiveSRStorage, CTImageStorage, EnhancedCTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian,
    JPEGLosslessSV1, MRImageStorage, SegmentationStorage, generate_uid,
)

COMPRESSED = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5",
              "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.81"}


def encode_jpeg_lossless_sv1(img: np.ndarray) -> bytes:
    """Minimal JPEG lossless (process 14, selection value 1) encoder for 16-bit greyscale, for tests."""
    assert img.ndim == 2
    x = img.astype(np.int64) & 0xFFFF
    rows, cols = x.shape
    pred = np.empty_like(x)
    pred[0, 0] = 1 << 15
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = (x - pred) & 0xFFFF
    diff = np.where(diff >= 0x8000, diff - 0x10000, diff)  # -32768..32767 (-32768 coded as 16)
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([16]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big")
    out += bytes([1, 1, 0x11, 0])
    bits = [0] * 16
    bits[4] = 17  # 17 codes of length 5: category n -> code n
    out += b"\xff\xc4" + (2 + 1 + 16 + 17).to_bytes(2, "big") + bytes([0x00]) + bytes(bits) + bytes(range(17))
    out += b"\xff\xda" + (8).to_bytes(2, "big") + bytes([1, 1, 0x00, 1, 0, 0])
    acc, nacc, data = 0, 0, bytearray()

    def put(value: int, n: int) -> None:
        nonlocal acc, nacc
        acc = (acc << n) | (value & ((1 << n) - 1))
        nacc += n
        while nacc >= 8:
            byte = (acc >> (nacc - 8)) & 0xFF
            data.append(byte)
            if byte == 0xFF:
                data.append(0)
            nacc -= 8
        acc &= (1 << nacc) - 1

    for d in diff.ravel().tolist():
        ssss = 16 if d == -32768 else abs(d).bit_length()
        put(ssss, 5)
        if 0 < ssss < 16:
            put(d if d > 0 else d - 1, ssss)
    if nacc:
        put((1 << (8 - nacc)) - 1, 8 - nacc)
    out += data + b"\xff\xd9"
    return bytes(out)


def hu_pattern(n: int, rows: int, cols: int) -> np.ndarray:
    """Expected HU, D-H-W, float32."""
    d, h, w = np.meshgrid(np.arange(n), np.arange(rows), np.arange(cols), indexing="ij")
    return (-1000 + 40 * d + 7 * h + w).astype(np.float32)


@dataclass
class WrittenSeries:
    files: list[Path]          # as written (per slice index in geometry order, incl. duplicates at the end)
    hu: np.ndarray             # expected D-H-W HU of the distinct slices, geometry order
    affine: np.ndarray         # expected (d, h, w, 1) -> LPS
    positions: np.ndarray      # (n, 3) ImagePositionPatient of the distinct slices, geometry order
    study_uid: str
    series_uid: str


def _base(modality: str, sop_class: str, study_uid: str, series_uid: str, ts: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "PHANTOM-001"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.AccessionNumber = "ACC123"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = "20250101"
    ds.StudyID = "1"
    ds.Modality = modality
    ds.Manufacturer = "FACTORY"
    return ds


def write_ct_series(
    folder: Path, *, n: int = 24, rows: int = 32, cols: int = 32,
    pixel_spacing: tuple[float, float] = (0.8, 0.7), slice_step: float = 2.5, thickness: float | None = 2.5,
    origin: Sequence[float] = (-12.0, -11.0, 50.0), iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    modality: str = "CT", sop_class: str = CTImageStorage, study_uid: str | None = None,
    series_uid: str | None = None, series_number: int = 3, description: str = "Pelvis 2.5 mm",
    kernel: str | None = "B30f", image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    contrast: bool = False, transfer_syntax: str = ExplicitVRLittleEndian, pixel_representation: int = 0,
    slope: float = 1.0, intercept: float = -1024.0, tilt_deg: float = 0.0, drop: Sequence[int] = (),
    duplicate: Sequence[int] = (), conflicting_duplicate: bool = False, step_jitter_mm: Sequence[float] | None = None,
    names: str = "ordered", nested: bool = False, seed: int = 0,
) -> WrittenSeries:
    """Write one single-frame series; see the knobs. ``names``: ordered | shuffled | reversed.

    ``drop``: slice indices not written (gaps). ``duplicate``: indices written twice (identical pixels unless
    ``conflicting_duplicate``). ``step_jitter_mm``: per-slice offsets added along the normal.
    ``tilt_deg``: positions shifted along the column direction by ``k * step * tan(tilt)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    study_uid = study_uid or generate_uid()
    for_uid = generate_uid()
    series_uid = series_uid if series_uid is not None else generate_uid()
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    full = hu_pattern(n, rows, cols)
    keep = [k for k in range(n) if k not in set(drop)]
    pos = []
    for k in range(n):
        along = k * slice_step + (step_jitter_mm[k] if step_jitter_mm is not None else 0.0)
        pos.append(np.asarray(origin, float) + along * normal + k * slice_step * np.tan(np.radians(tilt_deg)) * col)
    pos = np.asarray(pos)
    writes = [(k, False) for k in keep] + [(k, True) for k in duplicate]
    order = list(range(len(writes)))
    if names == "shuffled":
        rng.shuffle(order)
    elif names == "reversed":
        order = order[::-1]
    files: list[Path] = []
    for file_no, wi in enumerate(order):
        k, is_dup = writes[wi]
        ds = _base(modality, sop_class, study_uid, series_uid, ExplicitVRLittleEndian)
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.ImageType = list(image_type)
        ds.FrameOfReferenceUID = for_uid
        ds.InstanceNumber = n - k  # deliberately opposite to the geometry
        ds.ImagePositionPatient = [round(float(x), 4) for x in pos[k]]
        ds.ImageOrientationPatient = [float(x) for x in iop]
        ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
        if thickness is not None:
            ds.SliceThickness = thickness
        if kernel is not None:
            ds.ConvolutionKernel = kernel
        if contrast:
            ds.ContrastBolusAgent = "IOMEPROL"
            ds.ContrastBolusRoute = "IV"
        else:
            ds.ContrastBolusAgent = ""
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = pixel_representation
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.RescaleType = "HU"
        hu = full[k] + (1.0 if is_dup and conflicting_duplicate else 0.0)
        stored = np.round((hu - intercept) / slope)
        dtype = np.int16 if pixel_representation else np.uint16
        info = np.iinfo(dtype)
        assert stored.min() >= info.min and stored.max() <= info.max, "pattern not representable"
        stored = stored.astype(dtype)
        if transfer_syntax == ExplicitVRBigEndian:
            ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
            ds.PixelData = stored.astype(stored.dtype.newbyteorder(">")).tobytes()
        elif transfer_syntax == JPEGLosslessSV1:  # no pydicom encoder for process 14: our own (above)
            ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
            ds.PixelData = encapsulate([encode_jpeg_lossless_sv1(stored)])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = stored.tobytes()
            if transfer_syntax in COMPRESSED:
                ds.compress(transfer_syntax)
            elif transfer_syntax != ExplicitVRLittleEndian:
                ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        sub = folder / (f"a{file_no % 3}/b" if nested else "")
        sub.mkdir(parents=True, exist_ok=True)
        if names == "shuffled":
            name = f"{rng.getrandbits(40):010x}"
        else:
            name = f"IM{file_no:04d}.dcm"
        path = sub / name
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    hu_out = full[keep]
    kept_pos = pos[keep]
    step = (kept_pos[-1] - kept_pos[0]) @ normal / (len(keep) - 1) if len(keep) > 1 else slice_step
    aff = np.eye(4)
    aff[:3, 0] = normal * step
    aff[:3, 1] = col * pixel_spacing[0]
    aff[:3, 2] = row * pixel_spacing[1]
    aff[:3, 3] = kept_pos[0]
    return WrittenSeries(files, hu_out, aff, kept_pos, study_uid, series_uid)


def write_non_image(folder: Path, kind: str, study_uid: str | None = None) -> Path:
    """A minimal SR or SEG object (kind 'SR' | 'SEG'), no pixel data needed for the scan."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sop = {"SR": ComprehensiveSRStorage, "SEG": SegmentationStorage}[kind]
    ds = _base(kind, sop, study_uid or generate_uid(), generate_uid(), ExplicitVRLittleEndian)
    ds.SeriesNumber = 90
    ds.SeriesDescription = f"{kind} object"
    if kind == "SEG":
        ds.ImageType = ["DERIVED", "PRIMARY"]
        ds.Rows, ds.Columns, ds.NumberOfFrames = 8, 8, 1
        ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 1, 0
        ds.PixelRepresentation = 0
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(8)
    path = folder / f"{kind.lower()}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_mr_series(folder: Path, n: int = 24, study_uid: str | None = None) -> WrittenSeries:
    return write_ct_series(folder, n=n, modality="MR", sop_class=MRImageStorage, study_uid=study_uid,
                           kernel=None, intercept=0.0, pixel_representation=1, description="T1")


def write_localizer(folder: Path, study_uid: str | None = None) -> WrittenSeries:
    """Two coronal topogram images with ImageType ORIGINAL/PRIMARY/LOCALIZER."""
    return write_ct_series(folder, n=2, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), iop=(1, 0, 0, 0, 0, -1),
                           study_uid=study_uid, series_number=1, description="Topogram", thickness=1.0)


def write_junk(folder: Path) -> list[Path]:
    """Non-DICOM files: text, binary noise, an empty file, a PNG signature, a hidden OS file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {
        "README.txt": b"exported by PACS\n",
        "noise.bin": bytes(random.Random(1).getrandbits(8) for _ in range(600)),
        "empty": b"",
        "thumb.png": b"\x89PNG\r\n\x1a\n" + bytes(200),
        ".DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(100),
    }
    paths = []
    for name, data in out.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def truncate(path: Path, keep_fraction: float = 0.6) -> None:
    """Cut a file (e.g. inside its pixel data)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])


def corrupt_header(path: Path) -> None:
    """Keep preamble and 'DICM', replace the rest of the header by garbage."""
    data = bytearray(Path(path).read_bytes())
    data[132:400] = bytes([0xFF, 0xFE, 0x13, 0x77] * 67)
    Path(path).write_bytes(bytes(data))


#: Attributes of a classic slice that belong to one frame (functional groups) or that the multi-frame
#: object sets itself; everything else at the top level of the first slice is copied to the multi-frame object.
_PER_SLICE = {
    "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "InstanceNumber", "ImageType", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SliceLocation", "RescaleSlope",
    "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth", "ConvolutionKernel", "ContrastBolusAgent",
    "ContrastBolusRoute", "ContrastBolusIngredient", "PixelData", "SpacingBetweenSlices",
}


def _item(**attrs) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def write_enhanced_ct(
    sources: Sequence[Path], path: Path, *, seed: int = 0, rescale_per_frame: bool = True,
    orientation_per_frame: bool = False, transfer_syntax: str = ExplicitVRLittleEndian,
    series_uid: str | None = None, series_number: int = 7,
) -> Path:
    """Write the slices of a classic series (``sources``) as ONE true Enhanced CT Image Storage object, built
    with pydicom: per-frame Plane Position and Pixel Value Transformation (rescale) functional groups, shared
    Plane Orientation (or per frame), Pixel Measures, CT Reconstruction (kernel) and CT Image Frame Type;
    a contrast agent of the classic series becomes a coded ContrastBolusAgentSequence (no ContrastBolusAgent).

    Frames are in a shuffled order (``seed``), so nothing may rely on it. With ``rescale_per_frame`` each frame
    gets its own RescaleIntercept (shifted by 0, 10 or 20 HU with its stored values shifted back), so the HU are
    those of the classic series only if the per-frame rescale is applied. Duplicate and missing slices, tilt
    and uneven spacing of the classic series carry over to the frames.
    """
    dss = [pydicom.dcmread(p) for p in sources]
    order = list(range(len(dss)))
    random.Random(seed).shuffle(order)
    first = dss[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for elem in first:
        if elem.keyword and elem.keyword not in _PER_SLICE:
            ds.add(copy.deepcopy(elem))
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    image_type = [str(x) for x in first.get("ImageType", ["ORIGINAL", "PRIMARY", "AXIAL"])][:3]
    ds.ImageType = image_type + ["NONE"] * (4 - len(image_type))
    ds.NumberOfFrames = len(dss)
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.AcquisitionDateTime = f"{first.get('StudyDate', '20250101')}101500"
    ds.ContentDate = str(first.get("StudyDate", "20250101"))
    ds.ContentTime = "101500"
    agent = str(first.get("ContrastBolusAgent", "") or "").strip()
    if agent:
        ds.ContrastBolusAgentSequence = [_item(CodeValue="C-B0322", CodingSchemeDesignator="SRT",
                                               CodeMeaning="Iodinated contrast agent", ContrastBolusAgentNumber=1,
                                               ContrastBolusIngredientCodeSequence=[_item(
                                                   CodeValue="C-11400", CodingSchemeDesignator="SRT",
                                                   CodeMeaning="Iodine")],
                                               ContrastBolusAdministrationRouteSequence=[_item(
                                                   CodeValue="G-D101", CodingSchemeDesignator="SNM3",
                                                   CodeMeaning="Intravenous route")])]
    dim_uid = generate_uid()
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=dim_uid)]
    ds.DimensionIndexSequence = [_item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00200032,
                                       FunctionalGroupPointer=0x00209113,
                                       DimensionDescriptionLabel="Image Position Patient")]
    ds.DimensionOrganizationType = "3D"
    orientation = _item(ImageOrientationPatient=list(first.ImageOrientationPatient))
    shared = _item(
        PixelMeasuresSequence=[_item(PixelSpacing=list(first.PixelSpacing),
                                     SliceThickness=first.get("SliceThickness", 1.0))],
        CTImageFrameTypeSequence=[_item(FrameType=list(ds.ImageType), PixelPresentation="MONOCHROME",
                                        VolumetricProperties="VOLUME", VolumeBasedCalculationTechnique="NONE")],
        CTReconstructionSequence=[_item(ConvolutionKernel=first.get("ConvolutionKernel", "STANDARD"),
                                        ReconstructionAlgorithm="FILTER_BACK_PROJ")],
    )
    if not orientation_per_frame:
        shared.PlaneOrientationSequence = [orientation]
    slope0 = float(first.get("RescaleSlope", 1.0))
    intercept0 = float(first.get("RescaleIntercept", 0.0))
    if not rescale_per_frame:
        shared.PixelValueTransformationSequence = [_item(RescaleSlope=slope0, RescaleIntercept=intercept0,
                                                         RescaleType="HU")]
    ds.SharedFunctionalGroupsSequence = [shared]
    normal = np.cross(np.asarray(first.ImageOrientationPatient[:3], float),
                      np.asarray(first.ImageOrientationPatient[3:], float))
    rank = {i: r for r, i in enumerate(sorted(range(len(dss)),
                                              key=lambda i: float(np.dot(dss[i].ImagePositionPatient, normal))))}
    per_frame, frames = [], []
    for f, i in enumerate(order):
        src = dss[i]
        stored = src.pixel_array.astype(np.int64)
        item = _item(
            FrameContentSequence=[_item(DimensionIndexValues=[rank[i] + 1], StackID="1",
                                        InStackPositionNumber=rank[i] + 1,
                                        FrameAcquisitionDateTime=ds.AcquisitionDateTime)],
            PlanePositionSequence=[_item(ImagePositionPatient=list(src.ImagePositionPatient))],
        )
        if orientation_per_frame:
            item.PlaneOrientationSequence = [_item(ImageOrientationPatient=list(src.ImageOrientationPatient))]
        if rescale_per_frame:
            shift = 10 * (f % 3)
            rescale = (float(src.get("RescaleSlope", 1.0)), float(src.get("RescaleIntercept", 0.0)))
            assert rescale == (slope0, intercept0), "per-frame rescale needs one rescale in the classic series"
            stored = stored + shift
            item.PixelValueTransformationSequence = [_item(RescaleSlope=slope0,
                                                           RescaleIntercept=intercept0 - shift * slope0,
                                                           RescaleType="HU")]
        per_frame.append(item)
        frames.append(stored)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    dtype = np.int16 if int(first.PixelRepresentation) else np.uint16
    info = np.iinfo(dtype)
    arr = np.stack(frames)
    assert arr.min() >= info.min and arr.max() <= info.max, "shifted values not representable"
    ds.PixelData = arr.astype(dtype).tobytes()
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_legacy_enhanced_ct(sources: Sequence[Path], path: Path, *, series_number: int = 8) -> Path:
    """Write a classic series as ONE Legacy Converted Enhanced CT object with highdicom's converter."""
    import highdicom as hd

    dss = [pydicom.dcmread(p) for p in sources]
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(dss, series_instance_uid=hd.UID(), series_number=series_number,
                                                 sop_instance_uid=hd.UID(), instance_number=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mf.save_as(path, enforce_file_format=True)
    return path
