"""The real application graph (``python -m app``) on generated studies and on the real vendor series.

Checks the outputs with independent readers: dciodvfy for DICOM conformance, highdicom for the SEG's voxels
and references, the SR reader for the coded findings, and Dice against the phantom's reference label map.
"""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from tools import require_tool
from conftest import MODELS, AppRun, run_app, run_apps

from core.dicom_header import scan_folder
from core.dicom_input import load_volume
from core.run_state import output_files
from core.models import read_metadata
from core.series_selection import select_series
from core.sr_output import read_sr_findings
from core.volume import from_sitk
from core.status import Status
from validation.metrics import dice

pytestmark = pytest.mark.app

#: the class order of the classifier the application runs with (its metadata, the only class list)
CLASSES = list(read_metadata(MODELS / "tumour_classifier").clf.classes)


def _reference(row: dict) -> np.ndarray:
    return from_sitk(sitk.ReadImage(str(Path(row["root"]) / row["label_path"]))).array


def _seg_labels(seg_path: Path, dicom_dir: Path) -> tuple[np.ndarray, hd.seg.Segmentation, list]:
    """The SEG read back with highdicom as a D-H-W label map in the source series' sorted order."""
    loaded = load_volume(select_series(scan_folder(dicom_dir)).series)
    seg = hd.seg.segread(seg_path)
    uids = [ds.SOPInstanceUID for ds in loaded.datasets]
    labels = np.zeros(loaded.volume.shape, np.uint8)
    value_of = {"hip bone left": 1, "hip bone right": 2, "sacral tumour": 3}
    for item in seg.SegmentSequence:
        px = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=[item.SegmentNumber], combine_segments=False,
            assert_missing_frames_are_empty=True)
        labels[px[..., 0] > 0] = value_of[item.SegmentLabel]
    return labels, seg, loaded.datasets


def test_tumour_study_result_json(studies: dict) -> None:
    row, run = studies["tumour"]
    assert run.returncode == 0, run.stderr[-2000:]
    doc = run.result
    assert doc["schema"] == "sacral-tumour-result/2"
    assert doc["status"] == Status.TUMOUR_FOUND
    assert doc["study_instance_uid"] == row["study_instance_uid"]
    assert doc["series_instance_uid"] == row["series_instance_uid"]
    assert list(doc["probabilities"]) == CLASSES
    assert abs(sum(doc["probabilities"].values()) - 1.0) < 1e-6
    assert doc["predicted_class"] == max(doc["probabilities"], key=doc["probabilities"].get)
    assert set(doc["models"]) == {"hip_bone_seg", "tumour_seg", "tumour_classifier"}
    assert all(len(m["sha256"]) == 64 for m in doc["models"].values())
    # each segmenter's forward precision as its metadata and this CPU give it (bf16 models on a bf16 CPU)
    from core.inference import forward_precision
    import torch
    for name in ("hip_bone_seg", "tumour_seg"):
        meta = read_metadata(MODELS / name)
        assert doc["models"][name]["precision"] == forward_precision(meta, torch.device(doc["models"][name]["device"]))
        # test-time flips as the metadata lists them (the tumour model's left-right mirror; none for the hip bones)
        assert doc["models"][name].get("flip_average", []) == list(meta.seg.sliding_window.flip_average)
    assert doc["models"]["tumour_seg"]["flip_average"] == ["left_right"]
    assert "precision" not in doc["models"]["tumour_classifier"]
    assert doc["clinical"]["age_years"] == pytest.approx(float(row["age"]), abs=1.0)
    assert doc["clinical"]["sex"] == row["sex"] and doc["clinical"]["imputed"] == []
    assert doc["timings_s"]["total"] > 0
    for key in ("seg", "sr", "kos"):
        assert (run.output_dir / doc["outputs"][key]).is_file()
    assert len(doc["outputs"]["key_images"]) == 3
    assert sorted(p.name for p in run.output_dir.iterdir()) == sorted(["result.json", *output_files(doc["outputs"])])
    assert "status: tumour_found" in run.stdout


def test_segmentation_matches_reference(studies: dict) -> None:
    """Dice of the SEG (read back with highdicom) against the phantom's reference label map."""
    row, run = studies["tumour"]
    ref = _reference(row)
    labels, _, _ = _seg_labels(run.output_dir / run.result["outputs"]["seg"], Path(row["root"]) / row["dicom_dir"])
    for value, minimum in ((1, 0.85), (2, 0.85), (3, 0.70)):
        assert dice(labels == value, ref == value) >= minimum, f"label {value}"
    t = run.result["tumour"]
    voxel_ml = float(row["pixel_spacing_mm"]) ** 2 * float(row["slice_spacing_mm"]) / 1000.0
    assert t["volume_ml"] == pytest.approx((labels == 3).sum() * voxel_ml, rel=1e-3)


def test_seg_voxels_and_references(studies: dict, models_dir: Path) -> None:
    """The SEG equals the application's own masks voxel for voxel and references the source series."""
    from core.models import load_model
    from core.postprocess import keep_largest_per_label
    from core.segment import segment

    row, run = studies["tumour"]
    dicom_dir = Path(row["root"]) / row["dicom_dir"]
    labels, seg, datasets = _seg_labels(run.output_dir / run.result["outputs"]["seg"], dicom_dir)
    ct = load_volume(select_series(scan_folder(dicom_dir)).series).volume
    hip = load_model(models_dir, "hip_bone_seg")
    tum = load_model(models_dir, "tumour_seg")
    expected = segment(ct, hip.module, hip.metadata, hip.device)
    expected[segment(ct, tum.module, tum.metadata, tum.device) == 3] = 3
    expected = keep_largest_per_label(expected, (1, 2, 3))
    np.testing.assert_array_equal(labels, expected)
    assert seg.StudyInstanceUID == row["study_instance_uid"]
    refs = {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence}
    assert refs == {row["series_instance_uid"]}
    assert seg.SegmentationType == "BINARY"
    assert "RESEARCH" in seg.SeriesDescription.upper()
    codes = {item.SegmentLabel: item.SegmentedPropertyTypeCodeSequence[0].CodeValue for item in seg.SegmentSequence}
    assert codes == {"hip bone left": "29836001", "hip bone right": "29836001", "sacral tumour": "108369006"}


def test_sr_agrees_with_result_json(studies: dict) -> None:
    row, run = studies["tumour"]
    doc = run.result
    sr = read_sr_findings(run.output_dir / doc["outputs"]["sr"])
    assert sr["status"] == Status.TUMOUR_FOUND
    assert sr["predicted_class"] == doc["predicted_class"]
    for c in CLASSES:
        assert sr["probabilities"][c] == pytest.approx(doc["probabilities"][c], abs=1e-9)
    assert sr["volume_ml"] == pytest.approx(doc["tumour"]["volume_ml"], abs=1e-9)
    assert sr["location_hip_frame"] == pytest.approx(doc["tumour"]["location_hip_frame"], abs=1e-9)
    ds = pydicom.dcmread(run.output_dir / doc["outputs"]["sr"])
    assert ds.StudyInstanceUID == row["study_instance_uid"]
    assert "RESEARCH" in ds.SeriesDescription.upper()


@pytest.mark.parametrize("key", ["seg", "sr"])
def test_dciodvfy_reports_no_error(studies: dict, key: str) -> None:
    dciodvfy = require_tool("dciodvfy", install="apt-get install dicom3tools")
    for name in ("tumour", "none"):
        _, run = studies[name]
        path = run.output_dir / run.result["outputs"][key]
        proc = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{name} {key}: {errors}"


def test_no_tumour_study(studies: dict) -> None:
    row, run = studies["none"]
    assert run.returncode == 0, run.stderr[-2000:]
    doc = run.result
    assert doc["status"] == Status.NO_TUMOUR
    assert doc["predicted_class"] is None and doc["probabilities"] == {} and doc["tumour"] is None
    assert doc["hip_bone"]["left_volume_ml"] > 50 and doc["hip_bone"]["right_volume_ml"] > 50
    assert doc["hip_bone"]["truncated"] is False
    sr = read_sr_findings(run.output_dir / doc["outputs"]["sr"])
    assert sr["status"] == Status.NO_TUMOUR
    assert "no sacral tumour detected" in sr["summary"].lower()


def test_real_vendor_series_is_not_applicable(real_run: AppRun) -> None:
    """A contrast-enhanced abdominal series (38 mm, no pelvis): not applicable by the coverage rule before any
    model runs, with the contrast warning; never a crash. (The one run of this series: ``real_run``.)"""
    run = real_run
    assert run.returncode == 0, run.stderr[-2000:]
    doc = run.result
    assert doc["status"] == Status.NOT_APPLICABLE
    assert "series is contrast-enhanced: outside the validated use" in doc["warnings"]
    assert ("not applicable: the scan covers 38 mm along the patient axis, less than the 100 mm a pelvis needs"
            in doc["warnings"]), doc["warnings"]
    sr = read_sr_findings(run.output_dir / doc["outputs"]["sr"])
    assert sr["status"] == doc["status"]
    assert any("contrast" in w for w in sr["warnings"])


def test_unusable_input_is_an_error(tmp_path: Path, models_dir: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    run = run_app(tmp_path / "in", tmp_path / "out", models_dir)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: ")
    doc = run.result
    assert doc["status"] == Status.ERROR and doc["reason"]
    assert doc["outputs"] == {"seg": None, "sr": None, "kos": None, "key_images": []}
    assert doc["dicom_outputs"] == [] and doc["segment_numbers"] == {}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["result.json"]


def test_location_is_unchanged_by_table_position(tmp_path: Path, models_dir: Path) -> None:
    """The hip-frame location does not depend on where the table is. (File names, order, folder layout and
    duplicates: ``test_robustness.py::test_file_names_order_folders_and_duplicates_do_not_matter``, same
    findings exactly.)"""
    from training.phantom import render, sample_patient, sample_scan, write_case

    # the same patient with the table moved 40 mm left, 25 mm down and 30 mm along z
    rng = np.random.default_rng(7)
    patient = sample_patient(rng, "T0001", "chordoma")
    scan = sample_scan(rng, patient)
    moved = dataclasses.replace(scan, table_offset_mm=tuple(np.add(scan.table_offset_mm, (40.0, 25.0, 30.0))))
    for name, s in (("ref", scan), ("moved", moved)):
        ct, lab = render(patient, s)
        write_case(patient, s, ct, lab, tmp_path / name)
    runs = run_apps([(tmp_path / name / "T0001" / "dicom", tmp_path / f"out_{name}") for name in ("ref", "moved")],
                    models_dir)
    locs = [r.result["tumour"] for r in runs]
    # The frame itself is exact to 1 mm (tests/test_hip_frame_phantom.py, reference labels); here the models
    # segment a shifted voxel grid, so the tumour outline changes slightly: 0.02 normalised, 2.5 mm.
    assert np.allclose(locs[0]["location_hip_frame"], locs[1]["location_hip_frame"], atol=0.02)
    assert np.allclose(locs[0]["location_hip_frame_mm"], locs[1]["location_hip_frame_mm"], atol=2.5)
    shift = np.subtract(locs[1]["centroid_lps_mm"], locs[0]["centroid_lps_mm"])
    # the centroid follows the table to within one 3 mm model voxel (models 0.3.0 moved it by 37.3 mm for 40 mm in x)
    assert np.allclose(shift, (40.0, 25.0, 30.0), atol=3.0)


def test_seg_has_no_tumour_segment_when_no_tumour_is_reported(studies: dict) -> None:
    """A tumour below analysis.min_tumour_volume_ml counts as none: the SEG must say the same as the SR."""
    _, run = studies["none"]
    seg = pydicom.dcmread(run.output_dir / run.result["outputs"]["seg"])
    assert {item.SegmentLabel for item in seg.SegmentSequence} == {"hip bone left", "hip bone right"}


def test_a_tumour_below_the_models_confidence_rule_is_reported_as_none(studies: dict, tmp_path: Path,
                                                                        models_dir: Path) -> None:
    """The tumour study again, with the tumour model's ``min_mean_probability`` set just above the mean probability
    the first run measured over its tumour: no tumour, the warning naming volume and threshold, no tumour segment
    in the SEG, and the SR agreeing."""
    import json
    import shutil
    row, run = studies["tumour"]
    p = run.result["tumour"]["mean_probability"]
    rule = read_metadata(models_dir / "tumour_seg").seg.min_mean_probability
    assert 0.5 < p <= 1.0 and (rule is None or p >= rule)  # reported, so it passed the shipped rule
    assert p < 0.999, "the study's tumour is too certain for this test"
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    meta_path = models / "tumour_seg" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["min_mean_probability"] = round(min(p + 0.001, 0.999), 4)
    meta_path.write_text(json.dumps(meta, indent=2))
    strict = run_app(Path(row["root"]) / row["dicom_dir"], tmp_path / "out", models)
    assert strict.returncode == 0, strict.stderr[-2000:]
    doc = strict.result
    assert doc["status"] == Status.NO_TUMOUR and doc["tumour"] is None and doc["predicted_class"] is None
    volume = run.result["tumour"]["volume_ml"]
    said = [w for w in doc["warnings"] if w.startswith(f"a tumour candidate of {volume:.0f} mL in the sacral region "
                                                       "was not reported: its mean probability ")]
    assert len(said) == 1 and said[0].endswith(f"is below the tumour model's threshold "
                                               f"{meta['min_mean_probability']:.2f}")
    assert float(said[0].split("mean probability ")[1].split()[0]) == pytest.approx(p, abs=0.006)
    seg = pydicom.dcmread(strict.output_dir / doc["outputs"]["seg"])
    assert {item.SegmentLabel for item in seg.SegmentSequence} == {"hip bone left", "hip bone right"}
    assert read_sr_findings(strict.output_dir / doc["outputs"]["sr"])["status"] == Status.NO_TUMOUR
