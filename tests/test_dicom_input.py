"""core.dicom_input / core.series_selection: header-only scan, rule-based selection, checked volume building.

All inputs are real DICOM files written by tests/dicom_factory.py (32x32 pixels, 24 slices, known HU pattern
``-1000 + 40 d + 7 h + w`` and known geometry), plus the real vendor series in ../shared/data.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from dicom_factory import (
    corrupt_header, hu_pattern, truncate, write_ct_series, write_junk, write_localizer, write_mr_series,
    write_non_image,
)
from pydicom.uid import (
    EnhancedCTImageStorage, ExplicitVRBigEndian, JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless,
)

import core.dicom_input as dicom_input
from core.dicom_header import DEFAULT_RULES, InputError, merge_rules, scan_folder
from core.dicom_input import load_volume
from core.series_selection import CONTRAST_WARNING, select_series

pytestmark = pytest.mark.unit

REAL = Path(__file__).resolve().parents[2] / "shared/data/real_ct_abdomen_j2k"


def _load_only_series(folder: Path, rules: dict | None = None):
    scan = scan_folder(folder)
    sel = select_series(scan, rules or {})
    assert sel.series is not None, sel.reason
    return load_volume(sel.series, rules), sel, scan


def _edit(path: Path, **attrs) -> None:
    ds = pydicom.dcmread(path)
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)


# ------------------------------------------------------------------------------------------ values/geometry

def test_plain_series_exact_hu_and_affine(tmp_path):
    w = write_ct_series(tmp_path / "ct")
    loaded, sel, _ = _load_only_series(tmp_path / "ct")
    vol = loaded.volume
    assert vol.array.dtype == np.float32 and vol.shape == (24, 32, 32)
    assert vol.array[0, 0, 0] == -1000.0
    assert vol.array[5, 3, 7] == -1000 + 200 + 21 + 7
    assert vol.array[23, 31, 31] == -1000 + 920 + 217 + 31
    np.testing.assert_array_equal(vol.array, w.hu)
    # affine: index (d, 0, 0) is the d-th position along z; rows along y (0.8 mm), columns along x (0.7 mm)
    np.testing.assert_allclose(vol.index_to_lps(np.c_[np.arange(24), np.zeros(24), np.zeros(24)]), w.positions,
                               atol=1e-6)
    np.testing.assert_allclose(vol.affine, w.affine, atol=1e-9)
    np.testing.assert_allclose(vol.index_to_lps([[0, 2, 3]]), [[-12.0 + 3 * 0.7, -11.0 + 2 * 0.8, 50.0]])
    np.testing.assert_allclose(vol.spacing, [2.5, 0.8, 0.7])
    assert vol.meta["series_instance_uid"] == w.series_uid and vol.meta["units"] == "HU"
    # datasets: same d order, headers only
    z = [float(d.ImagePositionPatient[2]) for d in loaded.datasets]
    assert z == sorted(z) and len(z) == 24
    assert all("PixelData" not in d for d in loaded.datasets)
    assert vol.meta["sop_instance_uids"] == [d.SOPInstanceUID for d in loaded.datasets]
    assert loaded.warnings == []
    assert sel.warnings == [] and "24 slices" in sel.reason and "noncontrast" in sel.reason


@pytest.mark.parametrize("kw", [
    dict(transfer_syntax=ExplicitVRBigEndian),
    dict(transfer_syntax=ExplicitVRBigEndian, pixel_representation=1, intercept=0.0),
    dict(transfer_syntax=JPEG2000Lossless, pixel_representation=1, intercept=0.0),
    dict(transfer_syntax=JPEG2000Lossless),
    dict(transfer_syntax=JPEGLSLossless, slope=0.5, intercept=-1000.0),
    dict(transfer_syntax=JPEGLSLossless, pixel_representation=1, intercept=0.0),
    dict(transfer_syntax=RLELossless, slope=0.5, intercept=-1000.0),
    dict(transfer_syntax=JPEGLosslessSV1, slope=0.5, intercept=-1000.0),
    dict(transfer_syntax=JPEGLosslessSV1, pixel_representation=1, intercept=0.0),
    dict(pixel_representation=1, intercept=0.0),
    dict(slope=0.5, intercept=-1000.0),
], ids=["bigendian", "bigendian-signed", "j2k-signed", "j2k", "jpegls-slope", "jpegls-signed", "rle-slope",
        "jpeg-lossless-slope", "jpeg-lossless-signed", "signed", "slope0.5"])
def test_transfer_syntaxes_and_rescale_give_exact_hu(tmp_path, kw):
    w = write_ct_series(tmp_path / "ct", **kw)
    ts = pydicom.dcmread(w.files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert ts == kw.get("transfer_syntax", "1.2.840.10008.1.2.1")
    if kw.get("pixel_representation"):  # stored values really are negative
        ds = pydicom.dcmread(w.files[0])
        assert ds.PixelRepresentation == 1 and ds.pixel_array.min() < 0
    loaded, _, _ = _load_only_series(tmp_path / "ct")
    np.testing.assert_array_equal(loaded.volume.array, w.hu)
    np.testing.assert_allclose(loaded.volume.affine, w.affine, atol=1e-9)


def test_shuffled_renamed_nested_and_reversed_copies_are_bit_identical(tmp_path):
    ref = write_ct_series(tmp_path / "ordered", seed=0)
    shuffled = write_ct_series(tmp_path / "shuffled", names="shuffled", nested=True, seed=7)
    rev = write_ct_series(tmp_path / "reversed", names="reversed")
    a, _, _ = _load_only_series(tmp_path / "ordered")
    b, _, _ = _load_only_series(tmp_path / "shuffled")
    c, _, _ = _load_only_series(tmp_path / "reversed")
    assert a.volume.array.tobytes() == b.volume.array.tobytes() == c.volume.array.tobytes()
    np.testing.assert_array_equal(a.volume.affine, b.volume.affine)
    np.testing.assert_array_equal(a.volume.affine, c.volume.affine)
    np.testing.assert_array_equal(a.volume.array, ref.hu)
    assert len({p.parent for p in shuffled.files}) == 3 and rev.files


def test_feet_first_rotated_orientation_affine_matches_positions(tmp_path):
    c, s = np.cos(np.radians(5)), np.sin(np.radians(5))
    iop = (-c, -s, 0.0, -s, c, 0.0)  # rows to the right, slightly rotated; normal = -z (towards the feet)
    w = write_ct_series(tmp_path / "ct", iop=iop, origin=(30.0, -20.0, 300.0), slice_step=1.25)
    loaded, sel, _ = _load_only_series(tmp_path / "ct")
    vol = loaded.volume
    np.testing.assert_array_equal(vol.array, w.hu)
    for d, h, wi in [(0, 0, 0), (7, 3, 11), (23, 31, 0)]:
        expected = w.positions[d] + h * 0.8 * np.array(iop[3:]) + wi * 0.7 * np.array(iop[:3])
        np.testing.assert_allclose(vol.index_to_lps([[d, h, wi]])[0], expected, atol=1e-4)
    assert vol.affine[2, 0] == pytest.approx(-1.25)
    assert sel.series.orientation == "axial"


# --------------------------------------------------------------------------------------- geometry problems

def test_gantry_tilt_refused(tmp_path):
    write_ct_series(tmp_path / "ct", tilt_deg=15.0)
    scan = scan_folder(tmp_path / "ct")
    with pytest.raises(InputError) as e:
        load_volume(select_series(scan, {}).require())
    assert e.value.code == "gantry_tilt" and "15.0 degrees" in e.value.reason


def test_missing_slice_refused_naming_the_gap(tmp_path):
    write_ct_series(tmp_path / "ct", n=25, drop=[10])
    with pytest.raises(InputError) as e:
        _load_only_series(tmp_path / "ct")
    assert e.value.code == "missing_slices"
    assert "gap of 5 mm" in e.value.reason and "2.5 mm" in e.value.reason and "\n" not in e.value.reason


def test_identical_duplicates_dropped_with_warning(tmp_path):
    w = write_ct_series(tmp_path / "ct", duplicate=[3, 17])
    loaded, _, scan = _load_only_series(tmp_path / "ct")
    assert scan.series[0].n_files == 26
    np.testing.assert_array_equal(loaded.volume.array, w.hu)
    assert loaded.volume.shape[0] == 24 and len(loaded.datasets) == 24
    assert loaded.warnings == ["2 duplicate slice(s) with identical pixel data dropped"]


def test_conflicting_duplicates_refused(tmp_path):
    write_ct_series(tmp_path / "ct", duplicate=[3], conflicting_duplicate=True)
    with pytest.raises(InputError) as e:
        _load_only_series(tmp_path / "ct")
    assert e.value.code == "conflicting_duplicates"


def test_non_uniform_spacing_refused_small_jitter_tolerated(tmp_path):
    jitter = np.zeros(24)
    jitter[12] = 0.6  # spacings 3.1 and 1.9 mm around slice 12
    write_ct_series(tmp_path / "bad", step_jitter_mm=jitter)
    with pytest.raises(InputError) as e:
        _load_only_series(tmp_path / "bad")
    assert e.value.code == "non_uniform_spacing"
    small = np.random.default_rng(0).uniform(-0.05, 0.05, 24)
    w = write_ct_series(tmp_path / "ok", step_jitter_mm=small)
    loaded, _, _ = _load_only_series(tmp_path / "ok")
    np.testing.assert_array_equal(loaded.volume.array, w.hu)
    assert loaded.volume.spacing[0] == pytest.approx(2.5, abs=0.01)


@pytest.mark.parametrize("attrs,code", [
    (dict(ImageOrientationPatient=[1, 0, 0, 0, 0.9848, -0.1736]), "inconsistent_orientation"),
    (dict(PixelSpacing=[0.9, 0.7]), "inconsistent_pixel_spacing"),
    (dict(Rows=16), "inconsistent_dimensions"),
])
def test_inconsistent_headers_refused(tmp_path, attrs, code):
    w = write_ct_series(tmp_path / "ct")
    _edit(w.files[5], **attrs)
    with pytest.raises(InputError) as e:
        _load_only_series(tmp_path / "ct")
    assert e.value.code == code


def test_enhanced_ct_without_geometry_rejected_with_reason(tmp_path):
    """Enhanced CT is accepted (tests/test_multiframe.py), but not without plane position/orientation."""
    w = write_ct_series(tmp_path / "ct", n=1, sop_class=EnhancedCTImageStorage)
    _edit(w.files[0], NumberOfFrames=1, ImageOrientationPatient=None, ImagePositionPatient=None)
    scan = scan_folder(tmp_path / "ct")
    assert scan.series[0].multiframe
    sel = select_series(scan, {})
    assert sel.series is None
    assert "orientation unknown (axial required)" in sel.reason
    with pytest.raises(InputError) as e:
        load_volume(scan.series[0])
    assert e.value.code == "missing_geometry"


# ------------------------------------------------------------------------------------------- scan/selection

def test_mixed_folder_selects_the_ct_and_ignores_the_rest(tmp_path, monkeypatch):
    root = tmp_path / "in"
    ct = write_ct_series(root / "ct", names="shuffled")
    study = ct.study_uid
    loc = write_localizer(root / "loc", study_uid=study)
    write_mr_series(root / "mr", study_uid=study)
    write_non_image(root / "sr", "SR", study_uid=study)
    write_non_image(root / "seg", "SEG", study_uid=study)
    junk = write_junk(root / "junk")
    bad = write_ct_series(root / "bad", n=3, series_number=9, study_uid=study)
    truncate(bad.files[0])
    corrupt_header(bad.files[1])
    # an unselected series whose pixel data is garbage: any attempt to decode it would fail
    other = write_ct_series(root / "other", transfer_syntax=JPEG2000Lossless, kernel="B70f", study_uid=study,
                            series_number=5)
    for f in other.files:
        data = bytearray(f.read_bytes())
        soc = data.find(b"\xff\x4f\xff\x51")  # J2K codestream start; wipe its SIZ segment in place
        assert soc > 0
        data[soc + 2:soc + 40] = bytes(38)
        f.write_bytes(bytes(data))
    with pytest.raises(Exception):  # noqa: B017 - whichever error the decoder raises: it cannot decode
        _ = pydicom.dcmread(other.files[0]).pixel_array

    decoded: list[Path] = []
    real_pixel_array = dicom_input.pixel_array
    monkeypatch.setattr(dicom_input, "pixel_array", lambda p, **kw: decoded.append(Path(p)) or
                        real_pixel_array(p, **kw))
    scan = scan_folder(root)
    assert decoded == []  # the scan reads headers only
    assert sorted(scan.non_dicom) == sorted(junk)
    assert sorted(scan.unreadable) == sorted(bad.files[:2])
    assert sorted(s.modality for s in scan.series) == ["CT", "CT", "CT", "CT", "MR", "SEG", "SR"]
    sel = select_series(scan, {})
    assert sel.series is not None and sel.series.series_instance_uid == ct.series_uid
    assert sel.rejected[loc.series_uid].startswith("localizer")
    assert sel.rejected[other.series_uid] == "qualifies; ranked below the selected series"
    assert sel.rejected[bad.series_uid] == "1 slices < 20"
    assert sum(v.startswith("modality") for v in sel.rejected.values()) == 3
    assert sel.warnings == ["2 unreadable DICOM files ignored"]
    loaded = load_volume(sel.series)
    np.testing.assert_array_equal(loaded.volume.array, ct.hu)
    assert sorted(decoded) == sorted(ct.files)  # pixels of the selected series only
    # no identifiers in anything meant for people
    text = " ".join([sel.reason, *sel.warnings, *sel.rejected.values(), *loaded.warnings])
    for ident in ("Phantom", "PHANTOM-001", "ACC123", "19600101", study, ct.series_uid, str(tmp_path)):
        assert ident not in text


def test_truncated_encapsulated_file_is_unreadable_without_decoding(tmp_path):
    w = write_ct_series(tmp_path, n=21, transfer_syntax=JPEG2000Lossless)
    truncate(w.files[4], 0.8)
    scan = scan_folder(tmp_path)
    assert scan.unreadable == [w.files[4]] and scan.series[0].n_files == 20


def test_missing_rescale_taken_as_hu_with_warning(tmp_path):
    w = write_ct_series(tmp_path, pixel_representation=1, intercept=0.0)
    for f in w.files:
        ds = pydicom.dcmread(f)
        del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType
        ds.save_as(f, enforce_file_format=True)
    loaded, _, _ = _load_only_series(tmp_path)
    np.testing.assert_array_equal(loaded.volume.array, w.hu)
    assert loaded.warnings == ["RescaleSlope/RescaleIntercept absent: stored values taken as HU"]


def test_no_ct_series(tmp_path):
    write_mr_series(tmp_path / "mr")
    write_non_image(tmp_path / "sr", "SR")
    write_junk(tmp_path / "junk")
    sel = select_series(scan_folder(tmp_path), {})
    assert sel.series is None and sel.reason == "no CT series: found MR x1, SR x1"
    with pytest.raises(InputError) as e:
        sel.require()
    assert e.value.code == "no_series" and e.value.reason == sel.reason


def test_no_dicom_at_all(tmp_path):
    write_junk(tmp_path)
    scan = scan_folder(tmp_path)
    assert scan.series == [] and len(scan.non_dicom) == 5
    assert select_series(scan, {}).reason == "no DICOM series found"


def test_no_qualifying_series_reason(tmp_path):
    thick = write_ct_series(tmp_path / "thick", thickness=10.0, slice_step=10.0, series_number=4)
    write_localizer(tmp_path / "loc", study_uid=thick.study_uid)  # series 1: listed first
    sel = select_series(scan_folder(tmp_path), {})
    assert sel.series is None
    assert sel.reason == "no qualifying series: 2 CT series rejected (localizer; slice thickness 10 mm > 6 mm)"


@pytest.mark.parametrize("kw,why", [
    (dict(n=12), "12 slices < 20"),
    (dict(thickness=0.3, slice_step=0.3), "slice thickness 0.3 mm < 0.5 mm"),
    (dict(iop=(1, 0, 0, 0, 0, -1)), "orientation coronal (axial required)"),
    (dict(image_type=("DERIVED", "SECONDARY", "AXIAL")), "ImageType DERIVED/SECONDARY/AXIAL lacks ORIGINAL/PRIMARY"),
])
def test_hard_criteria_reasons(tmp_path, kw, why):
    w = write_ct_series(tmp_path, **kw)
    sel = select_series(scan_folder(tmp_path), {})
    assert sel.series is None and sel.rejected[w.series_uid] == why
    assert sel.reason == f"no qualifying series: 1 CT series rejected ({why})"


def test_noncontrast_preferred_over_contrast(tmp_path):
    plain = write_ct_series(tmp_path / "plain", kernel="B70f", thickness=5.0, slice_step=5.0, series_number=2)
    enh = write_ct_series(tmp_path / "enh", contrast=True, study_uid=plain.study_uid, series_number=3)
    sel = select_series(scan_folder(tmp_path), {})
    assert sel.series.series_instance_uid == plain.series_uid
    assert sel.rejected[enh.series_uid] == "contrast-enhanced; a noncontrast series qualifies"
    assert CONTRAST_WARNING not in sel.warnings
    # policy "reject": the contrast series is never used, even alone
    shutil.rmtree(tmp_path / "plain")
    alone = scan_folder(tmp_path)
    assert alone.series[0].contrast and alone.series[0].contrast_values == ("IOMEPROL", "IV")
    sel = select_series(alone, {})
    assert sel.series.series_instance_uid == enh.series_uid and CONTRAST_WARNING in sel.warnings
    assert "contrast-enhanced" in sel.reason
    sel = select_series(alone, {"contrast": {"policy": "reject"}})
    assert sel.series is None and "contrast-enhanced" in sel.reason


def test_contrast_none_value_means_noncontrast(tmp_path):
    w = write_ct_series(tmp_path)
    for f in w.files:
        _edit(f, ContrastBolusAgent="NONE")
    scan = scan_folder(tmp_path)
    assert not scan.series[0].contrast
    assert select_series(scan, {}).warnings == []


def test_the_volume_records_the_contrast_decision_of_the_configured_rules(tmp_path):
    """A site that lists "IOMEPROL" and "IV" as no-contrast values: the selection takes the series as
    noncontrast, and the volume's metadata says what the selection decided (not the default rules' verdict)."""
    write_ct_series(tmp_path, contrast=True)
    scan = scan_folder(tmp_path)
    assert scan.series[0].contrast  # by the default values
    rules = {"contrast": {"negative_values": [*DEFAULT_RULES["contrast"]["negative_values"], "IOMEPROL", "IV"]}}
    sel = select_series(scan, rules)
    assert sel.series is not None and sel.series.contrast is False and "noncontrast" in sel.reason
    assert CONTRAST_WARNING not in sel.warnings
    assert load_volume(sel.series, rules).volume.meta["contrast"] is False
    # and the default rules: contrast-enhanced in the selection and in the volume alike
    sel = select_series(scan, {})
    assert sel.series.contrast is True and load_volume(sel.series).volume.meta["contrast"] is True


def test_preferences_kernel_then_thickness_then_count(tmp_path):
    study = write_ct_series(tmp_path / "bone1", kernel="B70f", thickness=1.0, slice_step=1.0, n=40,
                            series_number=2).study_uid
    soft3 = write_ct_series(tmp_path / "soft3", kernel="B30f", thickness=3.0, slice_step=3.0, study_uid=study,
                            series_number=3)
    soft2 = write_ct_series(tmp_path / "soft2", kernel="STANDARD", thickness=2.0, slice_step=2.0, study_uid=study,
                            series_number=4)
    soft2b = write_ct_series(tmp_path / "soft2b", kernel="Br36f", thickness=2.0, slice_step=2.0, n=30,
                             study_uid=study, series_number=5)
    soft5 = write_ct_series(tmp_path / "soft5", kernel="FC13", thickness=5.0, slice_step=5.0, study_uid=study,
                            series_number=6)
    scan = scan_folder(tmp_path)
    sel = select_series(scan, {})
    assert sel.series.series_instance_uid == soft2b.series_uid  # soft, 2 mm, more slices than soft2
    assert "soft kernel" in sel.reason and "5 qualifying series" in sel.reason
    assert {soft3.series_uid, soft2.series_uid, soft5.series_uid} <= set(sel.rejected)
    bone = select_series(scan, {"kernel": {"prefer": "sharp"}})
    assert bone.series.n_files == 40
    none = select_series(scan, {"kernel": {"prefer": "none"}})
    assert none.series.n_files == 40  # thinnest in the preferred range


def test_two_studies_best_overall_with_warning(tmp_path):
    a = write_ct_series(tmp_path / "a", kernel="B70f")
    b = write_ct_series(tmp_path / "b", kernel="B31f")
    write_ct_series(tmp_path / "c", n=5)  # third study, nothing qualifying
    sel = select_series(scan_folder(tmp_path), {})
    assert sel.series.series_instance_uid == b.series_uid and a.series_uid in sel.rejected
    assert sel.warnings == ["2 other studies in the input ignored"]


def test_series_without_uid_grouped_and_loaded(tmp_path):
    w = write_ct_series(tmp_path, series_uid="")
    scan = scan_folder(tmp_path)
    assert len(scan.series) == 1 and scan.series[0].key.startswith("nouid-")
    sel = select_series(scan, {})
    loaded = load_volume(sel.require())
    np.testing.assert_array_equal(loaded.volume.array, w.hu)
    assert loaded.warnings == []  # the selection warns once; the app derives UIDs (ensure_reference_uids)


def test_file_without_preamble_is_read(tmp_path):
    w = write_ct_series(tmp_path, n=20)
    data = w.files[0].read_bytes()
    w.files[0].write_bytes(data[132:])  # no preamble, meta group first
    scan = scan_folder(tmp_path)
    assert scan.series[0].n_files == 20 and not scan.unreadable and not scan.non_dicom


# -------------------------------------------------------------------------------------------------- rules

def test_rules_are_plain_yaml_and_merge_strictly():
    assert yaml.safe_load(yaml.safe_dump(DEFAULT_RULES)) == DEFAULT_RULES
    merged = merge_rules({"slice_count": [10, 500], "contrast": {"policy": "reject"}})
    assert merged["slice_count"] == [10, 500] and merged["contrast"]["policy"] == "reject"
    assert merged["contrast"]["negative_values"] == DEFAULT_RULES["contrast"]["negative_values"]
    assert DEFAULT_RULES["contrast"]["policy"] == "avoid"  # defaults untouched
    with pytest.raises(ValueError, match="slice_cuont"):
        merge_rules({"slice_cuont": [1, 2]})
    with pytest.raises(ValueError, match="volume.max_gap"):
        merge_rules({"volume": {"max_gap": 2}})


def test_app_yaml_carries_the_default_rules():
    app_yaml = Path(__file__).resolve().parents[1] / "app/app.yaml"
    cfg = yaml.safe_load(app_yaml.read_text()) if app_yaml.is_file() else {}
    if "series_selection" not in (cfg or {}):
        pytest.skip("app.yaml has no series_selection section yet")
    assert cfg["series_selection"] == DEFAULT_RULES


def test_rules_relax_slice_count(tmp_path):
    w = write_ct_series(tmp_path, n=12)
    rules = {"slice_count": [10, 2000]}
    loaded, _, _ = _load_only_series(tmp_path, rules)
    np.testing.assert_array_equal(loaded.volume.array, hu_pattern(12, 32, 32))
    assert w.files


# ---------------------------------------------------------------------------------------- real vendor data

@pytest.mark.skipif(not REAL.is_dir(), reason="real vendor series not present")
def test_real_vendor_j2k_series():
    scan = scan_folder(REAL)
    assert len(scan.series) == 1 and not scan.unreadable and not scan.non_dicom
    s = scan.series[0]
    assert s.modality == "CT" and s.n_files == 20 and s.contrast and s.orientation == "axial"
    sel = select_series(scan, {})
    assert sel.series.key == s.key and sel.series.contrast and CONTRAST_WARNING in sel.warnings
    assert select_series(scan, {"contrast": {"policy": "reject"}}).series is None
    loaded = load_volume(s)
    vol = loaded.volume
    assert vol.shape == (20, 512, 512) and vol.array.dtype == np.float32
    assert vol.array.min() == -1024.0  # air outside the body, Siemens intercept -1024
    assert -1030 < np.percentile(vol.array, 5) < -950
    assert 1000 < vol.array.max() < 3100
    body = vol.array[10, 200:300, 200:300]  # abdomen: soft tissue around 0..100 HU
    assert -200 < np.median(body) < 200
    np.testing.assert_allclose(vol.spacing, [2.0, 0.9765625, 0.9765625])
    z = [float(d.ImagePositionPatient[2]) for d in loaded.datasets]
    assert z == sorted(z) and z[0] == -804.5 and z[-1] == -766.5
    np.testing.assert_allclose(vol.affine[:3, 3], [-249.51171875, -437.51171875, -804.5])
    assert all(d.SOPInstanceUID for d in loaded.datasets)  # filled from the file meta


def test_missing_reference_uids_are_derived_consistently(tmp_path):
    from core.dicom_input import ensure_reference_uids

    write_ct_series(tmp_path, series_uid="")
    sel = select_series(scan_folder(tmp_path), {})
    datasets = load_volume(sel.require()).datasets
    warnings = ensure_reference_uids(datasets, sel.series.key)
    assert warnings == ["source series has no SeriesInstanceUID: a derived UID is used in the outputs"]
    uids = {ds.SeriesInstanceUID for ds in datasets}
    assert len(uids) == 1 and pydicom.uid.UID(uids.pop()).is_valid
    again = load_volume(sel.require()).datasets
    ensure_reference_uids(again, sel.series.key)
    assert again[0].SeriesInstanceUID == datasets[0].SeriesInstanceUID  # deterministic for the series
