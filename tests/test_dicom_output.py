"""DICOM SEG and TID 1500 SR builders: round trips with highdicom/pydicom and dciodvfy validation."""
from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tools import require_tool
from core import codes
from core.seg_output import SEGMENT_DEFAULTS, build_seg, label_value_map, segment_number_map
from core.sr_output import build_sr, read_sr_findings
from core.status import Status

pytestmark = pytest.mark.unit

D, H, W = 20, 64, 48  # slices, rows, columns (non-square: catches a row/column swap)
SPACING = (0.8, 0.7)  # PixelSpacing: row spacing (between rows), column spacing, mm
SLICE = 2.5  # mm


def make_ct_series(d: int = D, h: int = H, w: int = W, *, with_pixels: bool = True) -> list[pydicom.Dataset]:
    """A synthetic axial CT series (CT Image Storage, all mandatory modules), sorted by increasing z.

    InstanceNumber runs opposite to the slice position, so nothing may rely on it.
    """
    study_uid, series_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    out = []
    for k in range(d):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SpecificCharacterSet = "ISO_IR 100"
        # patient / study
        ds.PatientName, ds.PatientID = "Phantom^Sacrum", "PHANTOM-001"
        ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19700101", "F", "054Y"
        ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = study_uid, "1", "ACC001"
        ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "20250102", "101500", ""
        ds.StudyDescription = "CT PELVIS"
        # series / equipment / frame of reference
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "CT", series_uid, 2
        ds.SeriesDescription = "Pelvis noncontrast 2.5 mm"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = for_uid, ""
        ds.Manufacturer = "SyntheticCT"
        ds.PatientPosition = "FFS"
        ds.BodyPartExamined = "PELVIS"  # unpaired: no Laterality (type 2C)
        # image
        ds.InstanceNumber = d - k  # reversed w.r.t. position on purpose
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ContentDate, ds.ContentTime = "20250102", "101600"
        ds.AcquisitionNumber = 1
        ds.ImagePositionPatient = [-20.0, -30.0, -100.0 + k * SLICE]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = list(SPACING)
        ds.SliceThickness = SLICE
        ds.SliceLocation = -100.0 + k * SLICE
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = h, w
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.KVP = 120
        ds.WindowCenter, ds.WindowWidth = 400, 1800
        if with_pixels:
            ds.PixelData = rng.integers(900, 1200, size=(h, w), dtype=np.uint16).tobytes()
        out.append(ds)
    return out


def make_labels(d: int = D, h: int = H, w: int = W) -> np.ndarray:
    """Hip bones (1 left = +x = high column index, 2 right) and a tumour (3), asymmetric in every axis."""
    lab = np.zeros((d, h, w), np.uint8)
    lab[2:15, 20:40, 30:44] = 1
    lab[3:16, 22:38, 4:16] = 2
    lab[8:12, 40:50, 20:27] = 3
    lab[0, 0, 0] = 3  # single voxel on the first slice/corner: orientation check
    return lab


def _tumour_findings(seg_numbers: dict[str, int]) -> dict:
    return {
        "status": Status.TUMOUR_FOUND,
        "predicted_class": "chordoma",
        "probabilities": {"chordoma": 0.61, "chondrosarcoma": 0.12, "giant_cell_tumour": 0.05,
                          "metastasis": 0.1, "neurogenic_tumour": 0.08, "osteosarcoma": 0.04},
        "tumour": {"volume_ml": 0.6861, "centroid_lps_mm": [1.5, 2.25, -75.0],
                   "location_hip_frame": [0.512, 0.203, 0.431],
                   "location_hip_frame_mm": [1.25, -12.5, 33.75]},
        "hip_bone": {"left_volume_ml": 12.3, "right_volume_ml": 11.9, "truncated": True},
        "clinical": {"age_years": 54, "sex": "F", "imputed": []},
        "warnings": ["series is contrast-enhanced: outside the validated use",
                     "hip bone cut by the edge of the scan",
                     "slice gap ≥ 5 mm (non-Latin-1 text survives)"],
        "segment_numbers": seg_numbers,
    }


def _dciodvfy(path: Path) -> list[str]:
    """Lines with 'Error' that dciodvfy prints for a file (skip/fail when the tool is missing)."""
    dciodvfy = require_tool("dciodvfy", install="apt-get install dicom3tools")
    res = subprocess.run([dciodvfy, "-new", str(path)], capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    return [ln for ln in out.splitlines() if "Error" in ln]


@pytest.fixture(scope="module")
def series() -> list[pydicom.Dataset]:
    return make_ct_series()


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return make_labels()


@pytest.fixture(scope="module")
def seg_file(tmp_path_factory, series, labels) -> Path:
    headers = [copy.deepcopy(ds) for ds in series]
    for ds in headers:  # build from headers only, as the app does
        del ds.PixelData
    seg = build_seg(headers, labels, SEGMENT_DEFAULTS, algorithm_name="SacralSeg", algorithm_version="0.1.0")
    path = tmp_path_factory.mktemp("seg") / "seg.dcm"
    seg.save_as(path)
    return path


# ------------------------------------------------------------------------------------------ SEG
def test_seg_roundtrip_voxel_for_voxel(seg_file, series, labels):
    seg = hd.seg.segread(seg_file)
    assert seg.SegmentationType == "BINARY"
    uids = [ds.SOPInstanceUID for ds in series]
    arr = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True)
    assert arr.shape == labels.shape
    np.testing.assert_array_equal(arr, labels)
    # empty frames omitted: frames = non-empty (slice, segment) pairs
    expected_frames = sum(int(np.any(labels[k] == v)) for k in range(D) for v in (1, 2, 3))
    assert int(seg.NumberOfFrames) == expected_frames


def test_seg_references_and_codes(seg_file, series):
    seg = pydicom.dcmread(seg_file)
    assert seg.StudyInstanceUID == series[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == series[0].FrameOfReferenceUID
    assert seg.PatientID == series[0].PatientID
    ref_series = seg.ReferencedSeriesSequence
    assert [s.SeriesInstanceUID for s in ref_series] == [series[0].SeriesInstanceUID]
    assert {i.ReferencedSOPInstanceUID for i in ref_series[0].ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in series}
    assert seg.SeriesDescription.startswith("RESEARCH USE ONLY")
    assert seg.SeriesInstanceUID != series[0].SeriesInstanceUID
    segs = {s.SegmentLabel: s for s in seg.SegmentSequence}
    assert list(segs) == ["hip bone left", "hip bone right", "sacral tumour"]
    left, right, tumour = segs["hip bone left"], segs["hip bone right"], segs["sacral tumour"]
    for s in (left, right):
        assert s.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
        assert s.SegmentedPropertyTypeCodeSequence[0].CodeValue == "29836001"
    assert left.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"
    modifier = right.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert modifier.CodeValue == "24028007"
    assert tumour.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert tumour.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert tumour.AnatomicRegionSequence[0].CodeValue == "54735007"
    for s in (left, right, tumour):
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        alg = s.SegmentationAlgorithmIdentificationSequence[0]
        assert (alg.AlgorithmName, alg.AlgorithmVersion) == ("SacralSeg", "0.1.0")
        assert alg.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
    assert segment_number_map(seg, SEGMENT_DEFAULTS) == {"hip bone left": 1, "hip bone right": 2, "sacral tumour": 3}


def test_seg_only_nonempty_segments_renumbered(series, labels, tmp_path):
    lab = np.where(labels == 1, 0, labels).astype(np.uint8)  # no left hip bone
    seg = build_seg(series, lab, SEGMENT_DEFAULTS, algorithm_name="A", algorithm_version="1")
    seg.save_as(tmp_path / "seg.dcm")
    back = hd.seg.segread(tmp_path / "seg.dcm")
    assert [s.SegmentLabel for s in back.SegmentSequence] == ["hip bone right", "sacral tumour"]
    assert label_value_map(back, SEGMENT_DEFAULTS) == {2: 1, 3: 2}
    arr = back.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in series], combine_segments=True)
    np.testing.assert_array_equal(arr, np.select([lab == 2, lab == 3], [1, 2], 0))


def test_seg_input_errors(series, labels):
    with pytest.raises(ValueError, match="does not match"):
        build_seg(series, labels[:, :, :-1], SEGMENT_DEFAULTS, algorithm_name="A", algorithm_version="1")
    with pytest.raises(ValueError, match="no segment metadata"):
        build_seg(series, np.where(labels == 3, 7, labels).astype(np.uint8), SEGMENT_DEFAULTS,
                  algorithm_name="A", algorithm_version="1")
    with pytest.raises(ValueError, match="empty"):
        build_seg(series, np.zeros_like(labels), SEGMENT_DEFAULTS, algorithm_name="A", algorithm_version="1")


def test_seg_dciodvfy(seg_file):
    assert _dciodvfy(seg_file) == []


def test_synthetic_ct_is_valid(series, tmp_path):
    """The fixture itself passes dciodvfy, so SEG/SR errors cannot hide behind a broken source."""
    series[0].save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    assert _dciodvfy(tmp_path / "ct.dcm") == []


# ------------------------------------------------------------------------------------------- SR
@pytest.fixture(scope="module")
def sr_files(tmp_path_factory, seg_file, series) -> dict[str, Path]:
    """SRs for a tumour case and a no-tumour case, written to files."""
    out = tmp_path_factory.mktemp("sr")
    seg = hd.seg.segread(seg_file)
    found = _tumour_findings(segment_number_map(seg))
    sr = build_sr(series, seg, found, algorithm_name="SacralAI", algorithm_version="0.1.0")
    sr.save_as(out / "tumour.dcm")

    no_lab = np.where(make_labels() == 3, 0, make_labels()).astype(np.uint8)
    seg_no = build_seg(series, no_lab, SEGMENT_DEFAULTS, algorithm_name="SacralSeg", algorithm_version="0.1.0")
    none = {**_tumour_findings(segment_number_map(seg_no)), "status": Status.NO_TUMOUR, "predicted_class": None,
            "probabilities": {}, "tumour": None, "warnings": []}
    build_sr(series, seg_no, none, algorithm_name="SacralAI", algorithm_version="0.1.0").save_as(out / "none.dcm")

    na = {**none, "status": Status.NOT_APPLICABLE, "hip_bone": {}, "segment_numbers": {},
          "warnings": ["no hip bone found: outside the validated use"]}
    build_sr(series, None, na, algorithm_name="SacralAI", algorithm_version="0.1.0").save_as(out / "na.dcm")
    return {"tumour": out / "tumour.dcm", "none": out / "none.dcm", "na": out / "na.dcm", "seg": seg}


def test_sr_roundtrip_tumour(sr_files, series):
    expected = _tumour_findings({})
    got = read_sr_findings(sr_files["tumour"])
    assert got["status"] == Status.TUMOUR_FOUND
    assert got["tumour_present"] is True
    assert got["predicted_class"] == "chordoma"
    assert got["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-12)
    assert set(got["probabilities"]) == set(codes.TUMOUR_TYPE_CODES)
    assert got["volume_ml"] == pytest.approx(0.6861, abs=1e-12)
    assert got["location_hip_frame"] == pytest.approx([0.512, 0.203, 0.431], abs=1e-12)
    assert got["location_hip_frame_mm"] == pytest.approx([1.25, -12.5, 33.75], abs=1e-12)
    assert got["hip_bone"] == pytest.approx({"left_volume_ml": 12.3, "right_volume_ml": 11.9})
    assert got["warnings"] == expected["warnings"]
    assert got["segment_numbers"] == {"hip bone left": 1, "hip bone right": 2, "sacral tumour": 3}
    assert got["referenced_seg_uid"] == sr_files["seg"].SOPInstanceUID
    assert "Chordoma" in got["summary"] and "0.61" in got["summary"]


def test_sr_header_and_references(sr_files, series):
    sr = pydicom.dcmread(sr_files["tumour"])
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.SeriesDescription.startswith("RESEARCH USE ONLY")
    assert sr.StudyInstanceUID == series[0].StudyInstanceUID
    assert sr.PatientID == series[0].PatientID
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"
    assert codes.PRIVATE_SCHEME in {i.CodingSchemeDesignator for i in sr.CodingSchemeIdentificationSequence}
    evidence = {i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert sr_files["seg"].SOPInstanceUID in evidence
    # highdicom reads it as a TID 1500 report with three volumetric groups referencing the SEG segments
    report = hd.sr.srread(sr_files["tumour"])
    groups = report.content.get_volumetric_roi_measurement_groups()
    assert sorted(g.tracking_identifier for g in groups) == ["hip bone left", "hip bone right", "sacral tumour"]
    tumour = next(g for g in groups if g.tracking_identifier == "sacral tumour")
    ref = tumour.referenced_segment
    assert ref.referenced_segment_numbers == [3]
    assert ref.referenced_sop_instance_uid == sr_files["seg"].SOPInstanceUID
    assert ref.source_series_for_segmentation.value == series[0].SeriesInstanceUID
    (volume,) = tumour.get_measurements(name=codes.VOLUME)
    assert volume.value == pytest.approx(0.6861) and volume.unit.value == "mL"
    (cls,) = tumour.get_qualitative_evaluations(name=codes.CLASSIFICATION)
    assert (cls.value.scheme_designator, cls.value.value) == codes.code_key(codes.TUMOUR_TYPE_CODES["chordoma"])


def test_sr_no_tumour_statement(sr_files):
    got = read_sr_findings(sr_files["none"])
    assert got["status"] == Status.NO_TUMOUR
    assert got["tumour_present"] is False
    assert got["summary"] == "No sacral tumour detected"
    assert got["predicted_class"] is None and got["probabilities"] == {} and got["volume_ml"] is None
    assert got["hip_bone"] == pytest.approx({"left_volume_ml": 12.3, "right_volume_ml": 11.9})
    assert "sacral tumour" not in got["segment_numbers"]


def test_sr_not_applicable_without_seg(sr_files):
    got = read_sr_findings(sr_files["na"])
    assert got["status"] == Status.NOT_APPLICABLE
    assert got["tumour_present"] is None
    assert got["warnings"] == ["no hip bone found: outside the validated use"]
    assert "no hip bone found" in got["summary"]
    assert got["segment_numbers"] == {}


def test_sr_class_names_and_errors(series, sr_files):
    seg = sr_files["seg"]
    f = _tumour_findings(segment_number_map(seg))
    f = {**f, "predicted_class": "Giant cell tumor",
         "probabilities": {"Chordoma": 0.1, "Chondrosarcoma": 0.1, "Giant cell tumor": 0.5,
                           "Metastasis": 0.1, "Neurogenic tumor": 0.1, "Osteosarcoma": 0.1}}
    got = read_sr_findings(build_sr(series, seg, f, algorithm_name="A", algorithm_version="1"))
    assert got["predicted_class"] == "giant_cell_tumour"
    assert got["probabilities"]["giant_cell_tumour"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown tumour class"):
        build_sr(series, seg, {**f, "predicted_class": "lipoma"}, algorithm_name="A", algorithm_version="1")
    with pytest.raises(ValueError, match="status"):
        build_sr(series, seg, {**f, "status": "maybe"}, algorithm_name="A", algorithm_version="1")
    with pytest.raises(ValueError, match="differ from the SEG"):
        build_sr(series, seg, {**f, "segment_numbers": {"sacral tumour": 1}}, algorithm_name="A",
                 algorithm_version="1")
    with pytest.raises(ValueError, match="outside"):
        build_sr(series, seg, {**f, "probabilities": {"chordoma": 1.2}}, algorithm_name="A", algorithm_version="1")


@pytest.mark.parametrize("case", ["tumour", "none", "na"])
def test_sr_dciodvfy(sr_files, case):
    assert _dciodvfy(sr_files[case]) == []


def test_dcentvfy_ct_seg_sr_consistent(series, seg_file, sr_files, tmp_path):
    """Patient/study attributes agree across CT, SEG and SR (dcentvfy, same package as dciodvfy)."""
    dcentvfy = shutil.which("dcentvfy")
    if dcentvfy is None:
        _dciodvfy(seg_file)  # skips, or fails in CI, when dicom3tools is missing
        pytest.skip("dcentvfy not installed")
    files = []
    for i, ds in enumerate(series):
        ds.save_as(tmp_path / f"ct{i}.dcm", enforce_file_format=True)
        files.append(str(tmp_path / f"ct{i}.dcm"))
    res = subprocess.run([dcentvfy, *files, str(seg_file), str(sr_files["tumour"])],
                         capture_output=True, text=True, timeout=120)
    assert [ln for ln in (res.stdout + res.stderr).splitlines() if "Error" in ln] == []


@pytest.mark.system
@pytest.mark.parametrize("case", ["tumour", "na"])
def test_sr_pixelmed_template_validation(sr_files, case):
    """TID 1500 template conformance with PixelMed DicomSRValidator (Debian pixelmed-apps), if installed."""
    jar = Path("/usr/share/java/pixelmed.jar")
    java = shutil.which("java")
    if not jar.exists() or java is None:
        pytest.skip("PixelMed DicomSRValidator not installed (apt-get install pixelmed-apps)")
    res = subprocess.run(
        [java, "-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0",
         "-cp", str(jar), "com.pixelmed.validate.DicomSRValidator", str(sr_files[case])],
        capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert "Found Root Template TID_1500" in out
    assert [ln for ln in out.splitlines() if ln.startswith("Error")] == []
