"""Key images (Secondary Capture) and the Key Object Selection document, built from a small synthetic series
(no application run): geometry, outlines, orientation, headers and dciodvfy. The same checks on the real
application's outputs for every status are in tests/test_pacs_outputs.py."""
from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_dicom_output import make_ct_series, make_labels

from core import codes
from core.dicom_header import scan_folder
from core.dicom_input import load_volume
from core.hip_frame import hip_frame_from_labels, tumour_location
from core.key_images import COLOURS, LABEL_COLOURS, build_key_image_datasets, render_key_images
from core.kos import build_kos, referenced_uids
from core.seg_output import SEGMENT_DEFAULTS, build_seg
from core.series_selection import select_series
from core.sr_output import build_sr
from core.status import Status

pytestmark = pytest.mark.unit

MODELS = {"hip_bone_seg": {"version": "0.2.0", "sha256": "a" * 64},
          "tumour_seg": {"version": "0.2.0", "sha256": "b" * 64},
          "tumour_classifier": {"version": "0.2.1", "sha256": "c" * 64}}


def _loaded(tmp: Path, flip_x: bool = False):
    """The synthetic series written to files and loaded as the app does (volume + sorted headers).

    ``flip_x``: rows run towards the patient's right (ImageOrientationPatient -1 0 0 / 0 1 0), so the slice
    normal points to the feet and d runs from head to feet.
    """
    series = make_ct_series()
    for i, ds in enumerate(series):
        if flip_x:
            ds.ImageOrientationPatient = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.save_as(tmp / f"ct{i:02d}.dcm", enforce_file_format=True)
    return load_volume(select_series(scan_folder(tmp), {"slice_count": [10, 2000]}).series)


def _findings(ct, labels):
    frame = hip_frame_from_labels(labels, 1, 2, min_volume_ml=1.0)  # small synthetic hip bones
    loc = tumour_location(labels, 3, frame)
    return frame, {
        "status": Status.TUMOUR_FOUND, "predicted_class": "chordoma",
        "probabilities": {"metastasis": 0.1, "chondrosarcoma": 0.1, "osteosarcoma": 0.05, "chordoma": 0.6,
                          "neurogenic_tumour": 0.1, "giant_cell_tumour": 0.05},
        "tumour": {"volume_ml": 1.2, **loc}, "hip_bone": {"left_volume_ml": 20.0, "right_volume_ml": 19.0},
        "warnings": ["slice gap ≥ 5 mm: non-Latin-1 text is drawn"], "models": MODELS}


@pytest.mark.parametrize("flip_x", [False, True])
def test_outline_pixels_are_the_label_maps_voxels(tmp_path: Path, flip_x: bool) -> None:
    loaded = _loaded(tmp_path, flip_x)
    ct = loaded.volume
    lab = make_labels()
    lab[0, 0, 0] = 0  # the orientation voxel would be a second tumour component
    if flip_x:  # the same anatomy: the loader's d and w axes are reversed w.r.t. the unflipped series
        lab = lab[::-1, :, ::-1]
    labels = ct.with_array(np.ascontiguousarray(lab))
    frame, findings = _findings(ct, labels)
    images = render_key_images(ct, labels, findings, frame, app_version="9.9.9")
    assert [im.view for im in images] == ["axial", "coronal", "sagittal"]
    centre = ct.lps_to_index(np.asarray(findings["tumour"]["centroid_lps_mm"]))[0]
    for im in images:
        g = im.geometry
        assert im.pixels.shape == (800, 1200, 3) and im.pixels.dtype == np.uint8
        assert g.fixed_index == int(round(centre[g.fixed_axis]))
        # square display pixels: the box spans the view's physical extent in both directions
        sp = ct.spacing
        assert len(g.row_index) * g.pixel_mm == pytest.approx(ct.shape[g.row_axis] * sp[g.row_axis], abs=g.pixel_mm)
        assert len(g.col_index) * g.pixel_mm == pytest.approx(ct.shape[g.col_axis] * sp[g.col_axis], abs=g.pixel_mm)
        box = im.pixels[g.y0:g.y0 + len(g.row_index), g.x0:g.x0 + len(g.col_index)]
        for value, colour in LABEL_COLOURS.items():
            ys, xs = np.nonzero(np.all(box == np.array(COLOURS[colour], np.uint8), axis=-1))
            vox = g.voxel(ys + g.y0, xs + g.x0)
            assert (labels.array[tuple(vox.T)] == value).all(), (im.view, colour)
            if value == 3:
                assert len(ys) > 20, im.view
        # the head is up: the top row of a coronal/sagittal box is the most superior slice shown
        if g.row_axis == 0:
            top, bottom = ct.index_to_lps([[g.row_index[0], 0, 0], [g.row_index[-1], 0, 0]])[:, 2]
            assert top > bottom


def test_orientation_and_headers(tmp_path: Path) -> None:
    orientations = {}
    for flip in (False, True):
        folder = tmp_path / str(flip)
        folder.mkdir()
        loaded = _loaded(folder, flip)
        ct = loaded.volume
        lab = make_labels()
        lab[0, 0, 0] = 0
        labels = ct.with_array(np.ascontiguousarray(lab[::-1, :, ::-1] if flip else lab))
        frame, findings = _findings(ct, labels)
        images = render_key_images(ct, labels, findings, frame, app_version="9.9.9")
        scs = build_key_image_datasets(loaded.datasets, images, ct, app_version="9.9.9")
        orientations[flip] = [tuple(sc.PatientOrientation) for sc in scs]
        src = loaded.datasets[0]
        assert len({sc.SeriesInstanceUID for sc in scs}) == 1
        for i, sc in enumerate(scs, start=1):
            assert sc.InstanceNumber == i and sc.BurnedInAnnotation == "YES"
            assert sc.StudyInstanceUID == src.StudyInstanceUID and sc.PatientID == src.PatientID
            assert sc.BodyPartExamined == "PELVIS" and sc.SoftwareVersions == "sacral-tumour-map 9.9.9"
            assert sc.SpecificCharacterSet == "ISO_IR 192" and sc.PatientAge == src.PatientAge
            assert sc.StudyDescription == src.StudyDescription
    # rows run to the patient's left (L) or right (R); columns to the back (P) in the axial view; the head
    # is up in the coronal and sagittal views (columns run to the feet, F)
    assert orientations[False] == [("L", "P"), ("L", "F"), ("P", "F")]
    assert orientations[True] == [("R", "P"), ("R", "F"), ("P", "F")]


def test_no_tumour_and_not_applicable_images(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    ct = loaded.volume
    lab = make_labels()
    lab[lab == 3] = 0
    labels = ct.with_array(lab)
    none = render_key_images(ct, labels, {"status": Status.NO_TUMOUR, "hip_bone": {"left_volume_ml": 20.0,
                                                                             "right_volume_ml": 19.0}})
    assert [im.view for im in none] == ["axial"]
    g = none[0].geometry
    hips = np.argwhere(np.isin(lab, (1, 2))).mean(axis=0)
    assert g.fixed_index == int(round(hips[0]))  # through the hip bones
    box = none[0].pixels[g.y0:g.y0 + len(g.row_index), g.x0:g.x0 + len(g.col_index)]
    assert not np.all(box == np.array(COLOURS["tumour"], np.uint8), axis=-1).any()
    assert np.all(box == np.array(COLOURS["hip_left"], np.uint8), axis=-1).any()
    na = render_key_images(ct, None, {"status": Status.NOT_APPLICABLE, "warnings": ["not applicable: too short"]})
    assert [im.view for im in na] == ["axial"] and na[0].geometry.fixed_index == round((ct.shape[0] - 1) / 2)


def test_kos_references_seg_sr_and_key_images(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    ct, headers = loaded.volume, loaded.datasets
    lab = make_labels()
    lab[0, 0, 0] = 0
    labels = ct.with_array(lab)
    frame, findings = _findings(ct, labels)
    seg = build_seg(headers, lab, SEGMENT_DEFAULTS, algorithm_name="A", algorithm_version="1")
    sr = build_sr(headers, seg, {**findings, "segment_numbers": {"hip bone left": 1, "hip bone right": 2,
                                                                 "sacral tumour": 3}},
                  algorithm_name="A", algorithm_version="1")
    scs = build_key_image_datasets(headers, render_key_images(ct, labels, findings, frame), ct, app_version="1")
    kos = build_kos(headers, [*scs, seg, sr], title=codes.KOS_TITLES["for_referring_provider"],
                    algorithm_name="A", app_version="1")
    assert referenced_uids(kos) == [(ds.SOPClassUID, ds.SOPInstanceUID) for ds in [*scs, seg, sr]]
    assert [i.ValueType for i in kos.ContentSequence][-5:] == ["IMAGE"] * 4 + ["COMPOSITE"]
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113002"
    other = copy.deepcopy(sr)
    other.StudyInstanceUID = pydicom.uid.generate_uid()
    with pytest.raises(ValueError, match="another study"):
        build_kos(headers, [other], title=codes.KOS_TITLES["of_interest"], algorithm_name="A", app_version="1")
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy not installed")
    for i, ds in enumerate([*scs, kos]):
        ds.save_as(tmp_path / f"out{i}.dcm")
        proc = subprocess.run([dciodvfy, "-new", str(tmp_path / f"out{i}.dcm")], capture_output=True, text=True)
        assert [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")] == []


def test_codes_take_pydicoms_meanings() -> None:
    assert codes.SUM_OF_SEGMENTED_VOXEL_VOLUMES.meaning == "Sum of segmented voxel method for volume"
    assert codes.standard_code("DCM", "126030", "Sum of segmented voxel volumes").meaning == \
        "Sum of segmented voxel method for volume"
    assert codes.standard_code("SCT", "29836001", "Hip").meaning == "Hip"  # one of pydicom's meanings: kept
    assert codes.standard_code("99SACRAL", "X", "Private").meaning == "Private"
    assert {c.value for c in codes.KOS_TITLES.values()} == {"113000", "113002", "128201", "113009"}


@pytest.mark.parametrize("body_part, laterality", [("PELVIS", None), ("PARTIALBODY", ""), ("HIP", "")])
def test_body_part_and_laterality_follow_the_general_series_module(tmp_path: Path, body_part: str,
                                                                   laterality: str | None) -> None:
    """Laterality is type 2C: absent for an unpaired body part, present (empty when unknown) otherwise; real
    vendor series say e.g. PARTIALBODY, which is no defined term."""
    loaded = _loaded(tmp_path)
    for ds in loaded.datasets:
        ds.BodyPartExamined = body_part
    images = render_key_images(loaded.volume, None, {"status": Status.NOT_APPLICABLE, "warnings": []})
    (sc,) = build_key_image_datasets(loaded.datasets, images, loaded.volume, app_version="1")
    lab = make_labels()
    seg = build_seg(loaded.datasets, lab, SEGMENT_DEFAULTS, algorithm_name="A", algorithm_version="1")
    for i, ds in enumerate((sc, seg)):
        assert ds.BodyPartExamined == body_part
        assert ds.get("Laterality") == (laterality if ds is sc else None)  # SEG segments carry laterality
        dciodvfy = shutil.which("dciodvfy")
        if dciodvfy is None:
            continue
        ds.save_as(tmp_path / f"o{i}.dcm")
        proc = subprocess.run([dciodvfy, "-new", str(tmp_path / f"o{i}.dcm")], capture_output=True, text=True)
        assert [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")] == []


def test_library_written_meanings_are_replaced_by_pydicoms() -> None:
    """highdicom writes DCM 121232 with its own capitalisation; the outputs carry PS3.16's meaning."""
    item = pydicom.Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "121232", "DCM", "Source Series for Segmentation"
    ds = pydicom.Dataset()
    ds.ConceptNameCodeSequence = [item]
    assert codes.normalise_meanings(ds) == 1
    assert ds.ConceptNameCodeSequence[0].CodeMeaning == "Source series for segmentation"
    assert codes.normalise_meanings(ds) == 0


@pytest.mark.parametrize("cls", ["neurogenic_tumour", "giant_cell_tumour"])
def test_long_class_names_are_not_cut_by_the_edge(tmp_path: Path, cls: str) -> None:
    """The predicted type is the longest findings line: it is set smaller rather than running off the image
    (at 18 pt bold, "Predicted type: Neurogenic tumour" ran past the right edge). Below the banner, the last
    columns of the canvas stay black."""
    loaded = _loaded(tmp_path)
    ct = loaded.volume
    labels = ct.with_array(make_labels())
    frame, findings = _findings(ct, labels)
    findings = {**findings, "predicted_class": cls,
                "warnings": ["a long warning " * 12]}  # wrapped by the panel, never reaching the edge
    for im in render_key_images(ct, labels, findings, frame, app_version="9.9.9"):
        margin = im.pixels[48:, -4:]
        assert not margin.any(), f"{im.view}: text reaches the right edge ({np.argwhere(margin.any(axis=-1))[:3]})"
