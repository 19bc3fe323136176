"""PACS round trip against a real Orthanc: C-STORE a CT study, fetch it back as a gateway would, run the app,
C-STORE its DICOM output and check with QIDO-RS that the derived series landed in the CT's study.

`run_app` is the real application, run as a gateway's orchestrator runs it (`python -m app -i IN -o OUT -m models`).
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from .conftest import record_timing, unavailable
from .orthanc import (
    OrthancServer, cli_app_runner, dicom_files, dicom_json_value, fetch_study, pacs_roundtrip, qido_series,
    qido_studies, store_files,
)

pytestmark = pytest.mark.system

N_SLICES, ROWS, COLS = 10, 64, 64
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


# ---------------------------------------------------------------------------------------------------------------
# input study
# ---------------------------------------------------------------------------------------------------------------
def write_minimal_ct(out_dir: Path, n_slices: int = N_SLICES, rows: int = ROWS, cols: int = COLS,
                     seed: int = 0) -> tuple[str, str]:
    """Write an axial CT series (n_slices x rows x cols, 0.8 mm pixels, 2.5 mm slices, HU = stored - 1024).

    Anonymous synthetic patient. Slices are written in reverse order of position so readers must sort.
    Returns (StudyInstanceUID, SeriesInstanceUID).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid, series_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    now = datetime.now()
    for k in reversed(range(n_slices)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Roundtrip", "PH0001", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 2, k + 1
        ds.SeriesDescription, ds.BodyPartExamined = "Pelvis noncontrast", "PELVIS"
        ds.Manufacturer, ds.PositionReferenceIndicator = "synthetic", ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientPosition = "FFS"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-25.6, -25.6, -100.0 + 2.5 * k]
        ds.SliceLocation = -100.0 + 2.5 * k
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 2.5
        ds.KVP = 120
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        img = (1024 + rng.normal(40, 10, (rows, cols))).clip(0, 4095).astype(np.uint16)
        img[rows // 4: 3 * rows // 4, cols // 4: 3 * cols // 4] = 1024 + 700  # "bone"
        ds.PixelData = img.tobytes()
        ds.save_as(out_dir / f"ct_{k:03d}.dcm", enforce_file_format=True)
    return study_uid, series_uid


def make_input_study(tmp_path: Path) -> Path:
    """The study to push: the phantom generator's first case when `training.phantom` exists, else a minimal CT."""
    try:
        from training.phantom import generate_cohort  # type: ignore[import-not-found]
    except ImportError:
        write_minimal_ct(tmp_path / "study")
        return tmp_path / "study"
    manifest = Path(generate_cohort(tmp_path / "cohort", 1, seed=0))
    with open(manifest, newline="") as f:
        row = next(csv.DictReader(f))
    return manifest.parent / row["dicom_dir"]


REPO = Path(__file__).resolve().parents[2]


def real_app():
    """The application exactly as a gateway's orchestrator runs it: ``python -m app -i IN -o OUT -m MODELS``."""
    return cli_app_runner([sys.executable, "-m", "app", "-m", str(REPO / "models")], cwd=REPO)


# ---------------------------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------------------------
def test_orthanc_runs_isolated_in_its_own_netns(orthanc: OrthancServer) -> None:
    """Orthanc's network namespace is not ours and has no interface but loopback."""
    assert Path(f"/proc/{orthanc.pid}/ns/net").readlink() != Path("/proc/self/ns/net").readlink()
    dev = Path(f"/proc/{orthanc.pid}/net/dev").read_text().splitlines()[2:]
    assert [line.split(":")[0].strip() for line in dev] == ["lo"]
    assert orthanc.get_json("/system")["DicomAet"] == "ORTHANC"  # type: ignore[index]
    assert qido_studies(orthanc) == []


def test_pacs_roundtrip_derived_series_in_same_study(orthanc: OrthancServer, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    study_dir = make_input_study(tmp_path)
    sent = dicom_files(study_dir)
    ct0 = pydicom.dcmread(sent[0], stop_before_pixels=True)

    result = pacs_roundtrip(orthanc, study_dir, real_app(), tmp_path / "gateway", fetch_method="c-move")

    record_timing(request, "C-STORE input", f"{result.store_in.n} instances in {result.store_in.seconds:.2f} s, "
                  f"{1000 * result.store_in.mean_per_instance_s:.1f} ms/instance (median "
                  f"{1000 * float(np.median(result.store_in.per_instance_s)):.1f} ms)")
    record_timing(request, "C-MOVE fetch", f"{len(result.fetched)} instances in {result.fetch_s:.2f} s")
    record_timing(request, "run_app", f"{result.app_s:.2f} s")
    record_timing(request, "C-STORE output", f"{result.store_out.n} instances in {result.store_out.seconds:.2f} s")

    # the gateway received exactly what was sent (same SOP instances, same pixels)
    assert result.study_uid == ct0.StudyInstanceUID
    sent_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in sent}
    fetched = {pydicom.dcmread(p).SOPInstanceUID: p for p in result.fetched}
    assert set(fetched) == set(sent_uids)
    some_uid = sorted(sent_uids)[0]
    assert np.array_equal(pydicom.dcmread(fetched[some_uid]).pixel_array,
                          pydicom.dcmread(sent_uids[some_uid]).pixel_array)

    # only DICOM files of the output went to the PACS (result.json did not)
    assert {p.name for p in result.output_files} == {p.name for p in dicom_files(tmp_path / "gateway/output")}
    assert all(p.suffix != ".json" for p in result.output_files)

    # one study in the PACS: the derived objects did not start a new one
    studies = qido_studies(orthanc)
    assert [dicom_json_value(s, "0020000D") for s in studies] == [ct0.StudyInstanceUID]

    # QIDO-RS: the input series with all their instances + one series each of SEG (when anything was segmented),
    # SR, key images (OT, Secondary Capture) and KOS, in the CT's study
    series = qido_series(orthanc, result.study_uid)
    sent_counts: dict[str, int] = {}
    for p in sent:
        uid = str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID)
        sent_counts[uid] = sent_counts.get(uid, 0) + 1
    qido_counts = {str(dicom_json_value(s, "0020000E")): int(dicom_json_value(s, "00201209"))  # type: ignore[arg-type]
                   for s in series}
    assert {uid: qido_counts.get(uid) for uid in sent_counts} == sent_counts
    derived = [s for s in series if dicom_json_value(s, "0020000E") not in sent_counts]
    doc = json.loads((tmp_path / "gateway/output/result.json").read_text())
    expected = {"SR": 1, "KO": 1, "OT": len(doc["outputs"]["key_images"]),
                **({"SEG": 1} if doc["outputs"]["seg"] else {})}
    assert expected["OT"] in (1, 3)
    assert {str(dicom_json_value(s, "00080060")): int(dicom_json_value(s, "00201209"))  # type: ignore[arg-type]
            for s in derived} == expected
    # every object result.json links to was accepted, under the UIDs result.json gives
    stored = {str(dicom_json_value(s, "0020000E")) for s in derived}
    assert {link["series_instance_uid"] for link in doc["dicom_outputs"]} == stored
    for link in doc["dicom_outputs"]:
        instances = orthanc.get_json(f"/dicom-web/studies/{result.study_uid}/series/{link['series_instance_uid']}"
                                     "/instances", accept="application/dicom+json")
        assert link["sop_instance_uid"] in {str(dicom_json_value(i, "00080018")) for i in instances}  # type: ignore[union-attr]
    # the stored KOS references exactly the other stored objects of this run
    kos = pydicom.dcmread(next(p for p in result.output_files
                               if pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID == KOS_SOP_CLASS))
    refs = {str(r.ReferencedSOPInstanceUID)
            for item in kos.ContentSequence for r in item.get("ReferencedSOPSequence", [])}
    assert refs == {link["sop_instance_uid"] for link in doc["dicom_outputs"] if link["role"] != "kos"}
    assert "CT" in {dicom_json_value(s, "00080060") for s in series if s not in derived}
    for s in series:
        assert dicom_json_value(s, "0020000D") in (None, ct0.StudyInstanceUID)

    # the stored SEG references a CT series that was sent
    if doc["outputs"]["seg"]:
        seg = pydicom.dcmread(next(p for p in result.output_files
                                   if pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID == SEG_SOP_CLASS))
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID in sent_counts
        assert seg.StudyInstanceUID == ct0.StudyInstanceUID


@pytest.mark.parametrize("method", ["c-get", "wado-rs"])
def test_other_fetch_methods_return_the_same_study(orthanc: OrthancServer, tmp_path: Path, method: str,
                                                   request: pytest.FixtureRequest) -> None:
    study_uid, _ = write_minimal_ct(tmp_path / "study", n_slices=4, rows=32, cols=32, seed=1)
    sent = dicom_files(tmp_path / "study")
    stats = store_files(orthanc, sent)
    assert stats.n == 4 and len(stats.per_instance_s) == 4
    got = fetch_study(orthanc, study_uid, tmp_path / method, method=method)
    record_timing(request, f"{method} fetch", f"{len(got)} instances")
    sent_px = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p).pixel_array for p in sent}
    got_ds = [pydicom.dcmread(p) for p in got]
    assert {ds.SOPInstanceUID for ds in got_ds} == set(sent_px)
    for ds in got_ds:
        assert np.array_equal(ds.pixel_array, sent_px[ds.SOPInstanceUID])
    assert len(qido_series(orthanc, study_uid)) == 1


def test_fetch_of_an_unknown_study_fails_loudly(orthanc: OrthancServer, tmp_path: Path) -> None:
    """Orthanc answers a C-MOVE of a study it does not have with a failure: the helper raises, writes nothing."""
    with pytest.raises(RuntimeError, match="C-MOVE ended with status 0x"):
        fetch_study(orthanc, generate_uid(), tmp_path / "none", method="c-move")
    assert list((tmp_path / "none").iterdir()) == []


REAL_CT = Path(__file__).resolve().parents[3] / "shared/data/real_ct_abdomen_j2k"


def test_real_vendor_ct_jpeg2000_survives_the_gateway_unchanged(orthanc: OrthancServer, tmp_path: Path) -> None:
    """The real 20-slice JPEG 2000 CT goes in by C-STORE and comes back by C-MOVE in its own transfer syntax
    with byte-identical pixel data (no transcoding between PACS and gateway).

    The anonymised files have EMPTY SOPClassUID, SOPInstanceUID, StudyInstanceUID and SeriesInstanceUID (only
    the file meta keeps the SOP UIDs), which no PACS accepts: a copy gets them filled in first.
    """
    if not REAL_CT.is_dir():
        unavailable(f"shared data missing: {REAL_CT}")
    study_uid_new, series_uid_new = generate_uid(), generate_uid()
    (tmp_path / "real").mkdir()
    for src in dicom_files(REAL_CT):
        ds = pydicom.dcmread(src)
        ds.SOPClassUID = ds.SOPClassUID or ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.SOPInstanceUID or ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = ds.StudyInstanceUID or study_uid_new
        ds.SeriesInstanceUID = ds.SeriesInstanceUID or series_uid_new
        ds.save_as(tmp_path / "real" / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    sent = dicom_files(tmp_path / "real")
    assert len(sent) == 20
    originals = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, sent)}
    study_uid = next(iter(originals.values())).StudyInstanceUID
    assert store_files(orthanc, sent).n == 20
    got = fetch_study(orthanc, study_uid, tmp_path / "in", method="c-move")
    assert len(got) == 20
    for ds in map(pydicom.dcmread, got):
        orig = originals[ds.SOPInstanceUID]
        assert ds.file_meta.TransferSyntaxUID == orig.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
        assert ds.PixelData == orig.PixelData
