"""training.phantom: synthetic pelvic CT cohort (DICOM + labels), geometry, determinism, difficulty."""
from __future__ import annotations

import copy
import csv
import datetime as dt
import hashlib
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from core.volume import from_sitk
from training import phantom as ph

pytestmark = pytest.mark.system


def _centroid_lps(vol, label: int) -> np.ndarray:
    idx = np.argwhere(vol.array == label)
    assert len(idx) > 0, f"label {label} absent"
    return vol.index_to_lps(idx.mean(axis=0))[0]


def _read_series(folder: Path, prefix: str = "CT") -> list[pydicom.Dataset]:
    dss = [pydicom.dcmread(f) for f in sorted(folder.glob(f"{prefix}*.dcm"))]
    return sorted(dss, key=lambda d: float(d.ImagePositionPatient[2]))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """One chordoma case rendered and written with a localizer and a contrast series."""
    out = tmp_path_factory.mktemp("case")
    rng = np.random.default_rng(3)
    p = ph.sample_patient(rng, "C0001", "chordoma")
    s = ph.sample_scan(rng, p)
    ct, lab = ph.render(p, s)
    row = ph.write_case(p, s, ct, lab, out, localizer=True, contrast_series=True)
    return p, s, ct, lab, row, out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    man = ph.generate_cohort(out, n=4, seed=11, no_tumour_fraction=0.25, workers=2)
    with open(man) as fh:
        rows = list(csv.DictReader(fh))
    return out, man, rows


def test_manifest_columns_and_rows(cohort):
    out, man, rows = cohort
    assert man == out / "manifest.csv"
    with open(man) as fh:
        header = next(csv.reader(fh))
    for col in ("case_id", "tumour_class", "age", "sex", "dicom_dir", "label_path", "tumour_volume_ml",
                "pixel_spacing_mm", "slice_thickness_mm", "n_slices", "manufacturer", "site",
                "study_instance_uid", "series_instance_uid"):
        assert col in header
    assert [r["case_id"] for r in rows] == ["C0001", "C0002", "C0003", "C0004"]
    assert sum(r["tumour_class"] == "none" for r in rows) == 1
    assert all(r["tumour_class"] in ph.TUMOUR_CLASSES + ("none",) for r in rows)
    assert len({r["study_instance_uid"] for r in rows}) == 4
    for r in rows:
        assert not Path(r["dicom_dir"]).is_absolute() and not Path(r["label_path"]).is_absolute()
        files = list((out / r["dicom_dir"]).glob("*.dcm"))
        assert len(files) == int(r["n_slices"])
        assert (out / r["label_path"]).is_file()
        assert r["sex"] in ("M", "F") and 5 <= int(r["age"]) <= 95
        assert (float(r["tumour_volume_ml"]) > 1.0) == (r["tumour_class"] != "none")


def test_dicom_geometry_and_hu_match_volume(case):
    p, s, ct, lab, row, out = case
    dss = _read_series(out / row["dicom_dir"])
    assert len(dss) == ct.shape[0]
    for k, ds in enumerate(dss):
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient],
                                   ct.index_to_lps([k, 0, 0])[0], atol=1e-3)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], ct.spacing[1:], rtol=1e-5)
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, ct.array[k])
    assert float(dss[0].SpacingBetweenSlices) == pytest.approx(ct.spacing[0])
    assert float(dss[1].ImagePositionPatient[2]) - float(dss[0].ImagePositionPatient[2]) == pytest.approx(
        s.slice_spacing_mm)
    assert float(dss[0].SliceThickness) == pytest.approx(s.slice_thickness_mm)


def test_dicom_attributes(case):
    p, s, ct, lab, row, out = case
    dss = _read_series(out / row["dicom_dir"])
    d0 = dss[0]
    assert d0.SOPClassUID == pydicom.uid.CTImageStorage
    assert d0.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert list(d0.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert d0.Modality == "CT" and d0.BodyPartExamined == "PELVIS"
    assert "ContrastBolusAgent" not in d0
    assert d0.PatientAge == f"{p.age:03d}Y" and d0.PatientSex == p.sex
    assert str(d0.PatientName).startswith("PHANTOM^") and d0.PatientID
    birth = dt.datetime.strptime(d0.PatientBirthDate, "%Y%m%d").date()
    study = dt.datetime.strptime(d0.StudyDate, "%Y%m%d").date()
    age = study.year - birth.year - ((study.month, study.day) < (birth.month, birth.day))
    assert age == p.age
    assert d0.AccessionNumber and d0.Manufacturer and d0.ManufacturerModelName and d0.ConvolutionKernel
    assert float(d0.KVP) > 0
    for attr in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(getattr(d, attr)) for d in dss}) == 1
    assert len({d.SOPInstanceUID for d in dss}) == len(dss)
    assert d0.StudyInstanceUID == row["study_instance_uid"] and d0.SeriesInstanceUID == row["series_instance_uid"]
    # localizer and contrast series: same study and frame of reference, other series
    loc = pydicom.dcmread(out / row["dicom_dir"] / "LOC0001.dcm")
    assert list(loc.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ce = _read_series(out / row["dicom_dir"], "CE")
    assert len(ce) == len(dss) and ce[0].ContrastBolusAgent
    for other in (loc, ce[0]):
        assert other.StudyInstanceUID == d0.StudyInstanceUID
        assert other.FrameOfReferenceUID == d0.FrameOfReferenceUID
        assert other.SeriesInstanceUID != d0.SeriesInstanceUID
    # enhanced vessels / bladder: the CE series is brighter in soft tissue than the noncontrast one
    ce_hu = np.stack([d.pixel_array for d in ce]).astype(np.int32) + int(ce[0].RescaleIntercept)
    assert (ce_hu > 150).sum() > (ct.array > 150).sum()


def test_dicom_passes_dciodvfy(case):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    p, s, ct, lab, row, out = case
    f = sorted((out / row["dicom_dir"]).glob("CT*.dcm"))[0]
    res = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True)
    errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
    assert not errors, errors


def test_labels_nifti_same_geometry(case):
    p, s, ct, lab, row, out = case
    img = sitk.ReadImage(str(out / row["label_path"]))
    v = from_sitk(img)
    np.testing.assert_allclose(v.affine, ct.affine, atol=1e-4)
    np.testing.assert_array_equal(v.array, lab.array)
    assert img.GetPixelID() == sitk.sitkUInt8
    first = pydicom.dcmread(sorted((out / row["dicom_dir"]).glob("CT*.dcm"))[0])
    np.testing.assert_allclose(img.GetOrigin(), [float(x) for x in first.ImagePositionPatient], atol=1e-3)


def test_deterministic_bytes(tmp_path):
    """The same seed gives the same files byte for byte, whether the cases are made one after the other or by two
    worker processes; another seed gives another cohort."""
    a = ph.generate_cohort(tmp_path / "a", n=2, seed=5)
    b = ph.generate_cohort(tmp_path / "b", n=2, seed=5, workers=2)
    fa = sorted(f.relative_to(a.parent) for f in a.parent.rglob("*") if f.is_file())
    fb = sorted(f.relative_to(b.parent) for f in b.parent.rglob("*") if f.is_file())
    assert fa == fb and len(fa) > 10
    for f in fa:
        assert hashlib.sha256((a.parent / f).read_bytes()).digest() == \
            hashlib.sha256((b.parent / f).read_bytes()).digest(), f
    c = ph.generate_cohort(tmp_path / "c", n=1, seed=6)
    assert c.read_text().splitlines()[1] != a.read_text().splitlines()[1]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6, 7])
def test_label_sanity(seed):
    cls = (ph.TUMOUR_CLASSES + ("none",))[seed - 1]
    rng = np.random.default_rng(seed)
    p = ph.sample_patient(rng, f"S{seed}", cls)
    s = ph.sample_scan(rng, p)
    ct, lab = ph.render(p, s)
    assert ct.array.dtype == np.int16 and lab.array.dtype == np.uint8 and ct.shape == lab.shape
    assert _centroid_lps(lab, 1)[0] > _centroid_lps(lab, 2)[0] + 100 * p.scale  # left hip at larger LPS x
    assert (lab.array == 3).any() == (cls != "none")
    for k in (1, 2):  # hip bones entirely inside the default coverage
        assert not (lab.array[0] == k).any() and not (lab.array[-1] == k).any()
    # tissue values: air outside, fat and soft tissue present, cortical bone bright
    a = ct.array
    assert np.median(a[:, :3, :3]) < -900
    hip = a[lab.array == 1]
    assert np.median(hip) > 60 and np.percentile(hip, 90) > 400     # marrow above soft tissue, cortex bright
    hist = np.histogram(a, bins=[-1100, -500, -150, -60, 20, 80, 150, 4000])[0]
    assert hist[2] > 0.02 * a.size and hist[4] > 0.02 * a.size   # fat and soft tissue / muscle
    if cls != "none":
        assert p.tumour_volume_ml_analytic == pytest.approx((lab.array == 3).sum() * lab.voxel_volume_ml, rel=0.15)


def test_table_offset_shifts_labels_exactly():
    rng = np.random.default_rng(21)
    p = ph.sample_patient(rng, "T1", "giant_cell_tumour")
    s = ph.sample_scan(rng, p)
    shift = np.array([12.3, -7.9, 41.0])
    s2 = replace(s, table_offset_mm=tuple(np.asarray(s.table_offset_mm) + shift))
    _, l1 = ph.render(p, s)
    _, l2 = ph.render(p, s2)
    for k in (1, 2, 3):
        np.testing.assert_allclose(_centroid_lps(l2, k) - _centroid_lps(l1, k), shift, atol=0.5 * s.pixel_spacing_mm)
    # the slice grid moves with the table (z_range is relative to the table offset)
    assert l2.affine[2, 3] - l1.affine[2, 3] == pytest.approx(shift[2])
    np.testing.assert_allclose(l2.affine[:2, 3], l1.affine[:2, 3])


def test_scale_enlarges_hip_volume_cubically():
    rng = np.random.default_rng(22)
    p = ph.sample_patient(rng, "T2", "metastasis")
    s = ph.sample_scan(rng, p)
    s = replace(s, slice_spacing_mm=2.0, slice_thickness_mm=2.0)
    _, l1 = ph.render(p, s)
    p2 = replace(p, scale=p.scale * 1.15)
    _, l2 = ph.render(p2, s)
    for k in (1, 2):
        ratio = (l2.array == k).sum() / (l1.array == k).sum()
        assert ratio == pytest.approx(1.15 ** 3, rel=0.06)
        assert not (l2.array[0] == k).any() and not (l2.array[-1] == k).any()
    # the tumour scales with the patient as well
    assert (l2.array == 3).sum() / (l1.array == 3).sum() == pytest.approx(1.15 ** 3, rel=0.08)


def test_rotation_and_coverage_keep_anatomy():
    rng = np.random.default_rng(23)
    p = ph.sample_patient(rng, "T3", "neurogenic_tumour")
    s = replace(ph.sample_scan(rng, p), rotation_deg=0.0)
    _, l0 = ph.render(p, s)
    _, lr = ph.render(p, replace(s, rotation_deg=9.0))
    c0 = _centroid_lps(l0, 1) - _centroid_lps(l0, 2)
    cr = _centroid_lps(lr, 1) - _centroid_lps(lr, 2)
    assert np.linalg.norm(cr) == pytest.approx(np.linalg.norm(c0), rel=0.03)
    assert np.degrees(np.arctan2(cr[1], cr[0]) - np.arctan2(c0[1], c0[0])) == pytest.approx(9.0, abs=1.5)
    # a different coverage starting at the same grid phase gives identical voxels where they overlap
    z0, z1 = s.z_range_mm
    s_short = replace(s, z_range_mm=(z0 + 10 * s.slice_spacing_mm, z1))
    _, ls = ph.render(p, s_short)
    np.testing.assert_array_equal(ls.array, l0.array[10:10 + ls.shape[0]])


def test_transfer_syntax_and_pixel_representation(case, tmp_path):
    p, s, ct, lab, row, out = case
    p2 = replace(p, case_id="J2K", patient_name="ZZTEST^IDENT", patient_id="ZZID123", accession_number="ZZACC9",
                 birth_date="19600101")
    s2 = replace(s, transfer_syntax_uid=str(pydicom.uid.JPEG2000Lossless), pixel_representation=1)
    r2 = ph.write_case(p2, s2, ct, lab, tmp_path)
    dss = _read_series(tmp_path / r2["dicom_dir"])
    d = dss[len(dss) // 2]
    assert d.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
    assert d.PixelRepresentation == 1 and int(d.RescaleIntercept) == 0
    np.testing.assert_array_equal(d.pixel_array.astype(np.int32) + int(d.RescaleIntercept), ct.array[len(dss) // 2])
    assert str(d.PatientName) == "ZZTEST^IDENT" and d.PatientID == "ZZID123" and d.AccessionNumber == "ZZACC9"
    assert d.PatientBirthDate == "19600101"
    assert r2["transfer_syntax"] == "jpeg2000"


def test_full_size_slices_are_at_most_5_mm_thick():
    """Issue 12's full-size studies have slices of 0.625-5 mm; the application refuses series thicker than 6 mm,
    so a 5 mm spacing must not get the 1.25x (6.25 mm) thickness. 300 draws hit the 5 mm spacing about 30 times."""
    rng = np.random.default_rng(12)
    spacings = []
    for i in range(300):
        p = ph.sample_patient(rng, f"T{i}")
        f = ph.sample_scan(rng, p, full_size=True, protocol="varied")
        assert f.slice_spacing_mm <= f.slice_thickness_mm <= 5.0, (f.slice_spacing_mm, f.slice_thickness_mm)
        spacings.append(f.slice_spacing_mm)
    assert spacings.count(5.0) >= 10


def test_sample_scan_ranges():
    rng = np.random.default_rng(9)
    coverages, positions, kernels = set(), set(), set()
    for i in range(40):
        p = ph.sample_patient(rng, f"R{i}")
        s = ph.sample_scan(rng, p)   # standard protocol: a routine pelvic CT
        assert s.matrix in (128, 160) and 2.0 <= s.slice_spacing_mm <= 5.0 and 2.0 <= s.slice_thickness_mm <= 5.0
        assert 1.8 <= s.pixel_spacing_mm <= 4.0 and 40 <= s.n_slices <= 160 and abs(s.rotation_deg) <= 15
        assert s.coverage == "pelvis" and s.patient_position == "HFS" and s.kernel_sharpening == 0
        f = ph.sample_scan(rng, p, full_size=True, protocol="varied")
        assert f.matrix == 512 and 0.625 <= f.slice_spacing_mm <= 5.0
        assert f.slice_spacing_mm <= f.slice_thickness_mm <= 5.0
        assert 0.58 <= f.pixel_spacing_mm <= 0.98 and f.n_slices <= 452
        coverages.add(f.coverage)
        positions.add(f.patient_position)
        kernels.add(f.kernel_sharpening > 0)
        assert 0.85 <= p.scale <= 1.2
    # the varied protocol draws abdomen + pelvis and cut scans, feet-first patients and sharp kernels
    assert {"pelvis", "abdomen_pelvis"} <= coverages and len(coverages) >= 3
    assert positions == {"HFS", "FFS"} and kernels == {True, False}
    with pytest.raises(ValueError):
        ph.sample_patient(rng, "X", "lymphoma")
    with pytest.raises(ValueError):
        ph.sample_scan(rng, p, protocol="exotic")


def test_external_site_changes_only_the_scanner():
    """The external-style cohort's site: the same draws as a drawn site (geometry, dose, coverage identical), its
    own manufacturer, model, kernel names and a coarser noise grain; it is never drawn without being asked for."""
    from training.phantom.acquisition import EXTERNAL_NOISE_GRAIN, EXTERNAL_SITES, SITES
    assert not set(EXTERNAL_SITES) & set(SITES)
    scanner = {"manufacturer", "model", "institution", "site", "kernel", "noise_grain_px"}
    for i in range(12):
        p = ph.sample_patient(np.random.default_rng([5, i]), f"E{i}", ph.TUMOUR_CLASSES[i % 6], tumour_world="v2")
        a = ph.sample_scan(np.random.default_rng([6, i]), p, full_size=True, protocol="varied")
        e = ph.sample_scan(np.random.default_rng([6, i]), p, full_size=True, protocol="varied", site="SITE_E")
        assert a.site in SITES and e.site == "SITE_E" and (e.manufacturer, e.model) == ("UIH", "uCT 760")
        _, _, soft, sharp, _ = EXTERNAL_SITES["SITE_E"]
        assert e.kernel in (sharp if e.kernel_sharpening > 0 else soft)
        assert e.noise_grain_px == pytest.approx(a.noise_grain_px * EXTERNAL_NOISE_GRAIN)
        for f in set(a.__dataclass_fields__) - scanner:
            assert getattr(a, f) == getattr(e, f), f
    with pytest.raises(ValueError, match="site must be"):
        ph.sample_scan(np.random.default_rng(0), p, site="SITE_A")


def test_full_size_twin_scans_the_same_patient():
    """A cohort generated again with ``full_size`` (same seed and n) holds the same patients and tumours, scanned
    from the same start over the same coverage with the same scanner, kernel and placement, only at 512 matrix:
    the patient is drawn before the scan from each case's generator, and the scan's draws up to the matrix do not
    depend on the size. This is what makes the development cohort's full-size twin a paired comparison of
    acquisition (docs/protocol.md). The patient's draw takes no size (``training.phantom.cohort`` draws it first);
    what is checked here is the scan: one patient, the generator in the same state, both sizes."""
    same = {"kernel", "rotation_deg", "table_offset_mm", "manufacturer", "site", "coverage"}
    for i in range(12):
        rng_a = np.random.default_rng([2718, i])
        cls = ph.TUMOUR_CLASSES[i % 6] if i % 4 else "none"
        patient = ph.sample_patient(rng_a, f"C{i:04d}", cls, tumour_world="v2")
        rng_b = copy.deepcopy(rng_a)
        a = ph.sample_scan(rng_a, patient, protocol="varied")
        b = ph.sample_scan(rng_b, patient, full_size=True, protocol="varied")
        assert a.matrix in (128, 160) and b.matrix == 512
        for f in same:
            assert getattr(a, f) == getattr(b, f), f
        assert a.z_range_mm[0] == b.z_range_mm[0] and abs(a.z_range_mm[1] - b.z_range_mm[1]) < 5.0


def test_upper_abdomen_negatives_hold_no_hip_bone_and_are_never_drawn(tmp_path):
    """coverage="upper_abdomen" (the training cohort's negatives) scans 30-260 mm starting 15-90 mm above the
    patient's own iliac crests: the rendered label map has no hip bone and no tumour, the CT holds the lumbar
    spine (bone above 300 HU); the varied protocol never draws it by itself."""
    from training.phantom.acquisition import COVERAGE, FORCED_COVERAGE
    from training.phantom.anatomy import hip_landmarks
    assert "upper_abdomen" in FORCED_COVERAGE and "upper_abdomen" not in COVERAGE
    for i in range(3):
        rng = np.random.default_rng([77, i])
        p = ph.sample_patient(rng, f"U{i}", "none")
        s = ph.sample_scan(rng, p, protocol="varied", coverage="upper_abdomen")
        z0, z1 = s.z_range_mm
        hi = hip_landmarks(p)["hi"] * p.scale
        assert s.coverage == "upper_abdomen" and hi + 15 <= z0 + 1e-6 and 25 <= z1 - z0 <= 265 and s.n_slices >= 21
        ct, lab = ph.render(p, s)
        assert not np.isin(lab.array, [1, 2, 3]).any()
        assert (ct.array > 300).sum() * ct.voxel_volume_ml > 5.0
    with pytest.raises(ValueError, match="coverage must be"):
        ph.sample_scan(rng, p, coverage="chest")


def test_varied_scans_cover_the_tumour_and_cut_the_pelvis_where_drawn():
    rng = np.random.default_rng(12)
    from training.phantom.anatomy import hip_landmarks
    cut = 0
    for i in range(60):
        p = ph.sample_patient(rng, f"V{i}", ph.TUMOUR_CLASSES[i % 6])
        s = ph.sample_scan(rng, p, protocol="varied")
        z0, z1 = s.z_range_mm
        assert z0 + 15 < p.tumour_centre_mm[2] * p.scale < z1 - 15   # a tumour study covers its tumour
        lm = hip_landmarks(p)
        cut += (z0 > lm["lo"] * p.scale) or (z1 < lm["hi"] * p.scale)
    assert 3 <= cut <= 40


def test_feet_first_series_is_the_mirror_of_the_head_first_one():
    rng = np.random.default_rng(41)
    p = ph.sample_patient(rng, "F1", "chordoma")
    s = ph.sample_scan(rng, p)
    ct_h, lab_h = ph.render(p, s)
    ct_f, lab_f = ph.render(p, replace(s, patient_position="FFS"))
    np.testing.assert_array_equal(ct_f.array, ct_h.array[:, :, ::-1])
    np.testing.assert_array_equal(lab_f.array, lab_h.array[:, :, ::-1])
    for k in (1, 2, 3):   # the same anatomy in patient coordinates
        np.testing.assert_allclose(_centroid_lps(lab_f, k), _centroid_lps(lab_h, k), atol=1e-6)


def test_bone_density_falls_with_age_and_implants_render_as_metal():
    from training.phantom import appearance
    from training.phantom.params import Implants
    rng = np.random.default_rng(0)
    young = [appearance.marrow_hu(rng, 25, "F") for _ in range(200)]
    old = [appearance.marrow_hu(rng, 80, "F") for _ in range(200)]
    assert np.mean(young) > np.mean(old) + 100 and min(old) >= 0 and max(young) <= 330
    rng = np.random.default_rng(44)
    p = ph.sample_patient(rng, "M1", "none")
    s = ph.sample_scan(rng, p)
    p = replace(p, implants=Implants(hip_prosthesis="left"))
    ct, lab = ph.render(p, s)
    metal = lab.array == ph.LABELS["implant"]
    assert metal.sum() * lab.voxel_volume_ml > 5.0          # cup, head and stem
    assert np.median(ct.array[metal]) > 1500
    # the prosthesis replaces the left femoral head: the implant lies on the left (larger LPS x)
    assert _centroid_lps(lab, ph.LABELS["implant"])[0] > _centroid_lps(lab, 2)[0]


def test_class_typical_features_hold_mostly_not_always():
    rng = np.random.default_rng(31)
    ps = [ph.sample_patient(rng, f"X{i}", c) for i in range(120) for c in ph.TUMOUR_CLASSES]
    typ_loc = np.mean([p.tumour.typical_location for p in ps])
    typ_mat = np.mean([p.tumour.typical_matrix for p in ps])
    assert 0.65 < typ_loc < 0.85 and 0.68 < typ_mat < 0.88
    gct = [p for p in ps if p.tumour_class == "giant_cell_tumour"]
    chordoma = [p for p in ps if p.tumour_class == "chordoma"]
    assert np.median([p.age for p in gct]) < 40 < np.median([p.age for p in chordoma])
    assert np.mean([p.sex == "F" for p in gct]) > 0.5 > np.mean([p.sex == "F" for p in chordoma])
    # chordoma: mostly caudal midline; GCT: mostly cranial
    assert np.median([p.tumour_centre_mm[2] for p in chordoma]) < np.median([p.tumour_centre_mm[2] for p in gct])


def test_clinical_only_auc_calibrated():
    """Age + sex + volume alone must be informative but far from perfect (paper's clinical-only: 0.774)."""
    auc = ph.clinical_only_auc(n_train=600, n_test=600, seed=0)
    assert 0.70 <= auc <= 0.82
