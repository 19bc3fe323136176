"""Enhanced CT and Legacy Converted Enhanced CT input (one multi-frame object per series).

Unit level (small factory series, ``tests/dicom_factory.py``): the multi-frame forms of a classic series give
the same HU volume and affine, the same geometry refusals (codes and reasons), header-level selection, and a
SEG/SR that reference the one source instance with its frame numbers (read back with highdicom, checked with
dciodvfy and dcentvfy). Application level: a generated phantom study run as classic, Legacy Converted
Enhanced (highdicom's converter) and true Enhanced CT (built with pydicom, per-frame functional groups) gives
the same findings.
"""
from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from tools import require_tool
from conftest import AppRun, run_apps
from dicom_factory import write_ct_series, write_enhanced_ct, write_legacy_enhanced_ct
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage, RLELossless

from core.dicom_header import InputError, scan_folder
from core.dicom_input import ensure_copied_attributes, load_volume
from core.run_state import output_files
from core.seg_output import SEGMENT_DEFAULTS, build_seg
from core.series_selection import select_series
from core.sr_output import build_sr, read_sr_findings
from core.status import Status

pytestmark = pytest.mark.unit

ANGLE = math.radians(20.0)  # in-plane patient rotation: a row/column mix-up changes the affine
IOP = tuple(round(v, 8) for v in (math.cos(ANGLE), math.sin(ANGLE), 0.0, -math.sin(ANGLE), math.cos(ANGLE), 0.0))


def _write(form: str, files: list[Path], out: Path) -> Path:
    """One multi-frame copy of a classic series under ``out`` (a folder of its own)."""
    if form == "legacy":
        return write_legacy_enhanced_ct(files, out / "legacy.dcm")
    if form == "enhanced":
        return write_enhanced_ct(files, out / "enhanced.dcm", seed=3)
    if form == "enhanced_rle_orientation_per_frame":
        return write_enhanced_ct(files, out / "enhanced.dcm", seed=4, transfer_syntax=RLELossless,
                                 orientation_per_frame=True)
    raise ValueError(form)


def _only_series(folder: Path):
    scan = scan_folder(folder)
    assert len(scan.series) == 1
    return scan.series[0]


def _tool_errors(tool: str, *paths: Path) -> list[str]:
    exe = require_tool(tool, install="apt-get install dicom3tools")
    proc = subprocess.run([exe, *map(str, paths)], capture_output=True, text=True, timeout=300)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error") or "Error -" in ln]


# ----------------------------------------------------------------------------------------- volume loading

@pytest.mark.parametrize("form", ["legacy", "enhanced", "enhanced_rle_orientation_per_frame"])
def test_multiframe_volume_equals_the_classic_series(tmp_path: Path, form: str) -> None:
    w = write_ct_series(tmp_path / "classic", names="shuffled", iop=IOP, contrast=True)
    path = _write(form, w.files, tmp_path / "mf")
    series = _only_series(path.parent)
    assert series.multiframe and series.n_files == 1 and series.n_slices == 24
    # selection reads thickness, orientation, kernel and contrast from the first frame's functional groups
    assert (series.slice_thickness_mm, series.orientation, series.convolution_kernel) == (2.5, "axial", "B30f")
    assert series.contrast is True

    loaded = load_volume(series)
    np.testing.assert_array_equal(loaded.volume.array, w.hu)  # per-frame rescale applied, frames sorted
    np.testing.assert_allclose(loaded.volume.affine, w.affine, atol=1e-4)
    assert loaded.warnings == []
    ds = loaded.datasets
    assert len(ds) == 1 and "PixelData" not in ds[0]
    assert ds[0].SOPClassUID in (EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage)
    assert loaded.volume.meta["sop_instance_uids"] == [ds[0].SOPInstanceUID]
    # source_frames: slice d is the frame whose plane position is the d-th classic position
    assert sorted(f for fr in loaded.source_frames for f in fr) == list(range(1, 25))
    for d, frames in enumerate(loaded.source_frames):
        ipp = ds[0].PerFrameFunctionalGroupsSequence[frames[0] - 1].PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose([float(x) for x in ipp], w.positions[d], atol=1e-3)
    assert loaded.volume.meta["source_frame_numbers"] == [fr[0] for fr in loaded.source_frames]


GEOMETRY_CASES = {
    "missing_slice": ({"drop": [7]}, "missing_slices"),
    "gantry_tilt": ({"tilt_deg": 5.0}, "gantry_tilt"),
    "uneven_spacing": ({"step_jitter_mm": [0.0] * 12 + [0.6] * 12}, "non_uniform_spacing"),
    "conflicting_duplicate": ({"duplicate": [5], "conflicting_duplicate": True}, "conflicting_duplicates"),
}


@pytest.mark.parametrize("name", sorted(GEOMETRY_CASES))
def test_geometry_refused_with_the_classic_code_and_reason(tmp_path: Path, name: str) -> None:
    kwargs, code = GEOMETRY_CASES[name]
    w = write_ct_series(tmp_path / "classic", **kwargs)
    with pytest.raises(InputError) as classic:
        load_volume(_only_series(tmp_path / "classic"))
    path = write_enhanced_ct(w.files, tmp_path / "mf" / "enhanced.dcm", seed=1)
    with pytest.raises(InputError) as multi:
        load_volume(_only_series(path.parent))
    assert classic.value.code == multi.value.code == code
    assert multi.value.reason == classic.value.reason


def test_identical_duplicate_frames_dropped_and_both_frames_kept_for_the_seg(tmp_path: Path) -> None:
    w = write_ct_series(tmp_path / "classic", duplicate=[5])
    path = write_enhanced_ct(w.files, tmp_path / "mf" / "enhanced.dcm", seed=2)
    loaded = load_volume(_only_series(path.parent))
    np.testing.assert_array_equal(loaded.volume.array, w.hu)
    assert loaded.warnings == ["1 duplicate slice(s) with identical pixel data dropped"]
    assert [len(f) for f in loaded.source_frames].count(2) == 1 and len(loaded.source_frames) == 24


def test_geometry_is_checked_before_any_frame_is_decoded(tmp_path: Path) -> None:
    """Undecodable frames: a gap is still reported as the gap (nothing decoded yet); without the gap the
    decoding failure itself is the one-line reason."""
    for name, drop in (("gap", [7]), ("nogap", [])):
        w = write_ct_series(tmp_path / name, drop=drop)
        path = write_enhanced_ct(w.files, tmp_path / f"mf_{name}" / "enhanced.dcm", transfer_syntax=RLELossless)
        ds = pydicom.dcmread(path)
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
        frames[3] = bytes([0xFF] * 64) + frames[3][64:]  # broken RLE header (segment count 255)
        ds.PixelData = encapsulate(frames)
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError) as gap:
        load_volume(_only_series(tmp_path / "mf_gap"))
    assert gap.value.code == "missing_slices"
    with pytest.raises(InputError) as bad:
        load_volume(_only_series(tmp_path / "mf_nogap"))
    assert bad.value.code == "decode_failed" and "RLE Lossless" in bad.value.reason


# ---------------------------------------------------------------------------------------------- selection

def test_classic_copy_of_the_same_acquisition_is_chosen_with_the_reason(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    w = write_ct_series(tmp_path / "in" / "classic")
    legacy = write_legacy_enhanced_ct(w.files, tmp_path / "in" / "mf" / "legacy.dcm")
    with caplog.at_level("INFO", logger="core.series_selection"):
        sel = select_series(scan_folder(tmp_path / "in"))
    assert sel.series.series_instance_uid == w.series_uid and not sel.series.multiframe
    mf_key = pydicom.dcmread(legacy, stop_before_pixels=True).SeriesInstanceUID
    assert sel.rejected == {mf_key: "same acquisition as the selected series, stored as Enhanced (multi-frame) CT: "
                                    "the classic CT Image Storage copy is used"}
    assert "1 copy of the same acquisition in another form not used" in sel.reason
    assert "same acquisition" in caplog.text
    # without the classic copy the multi-frame one is used
    shutil.rmtree(tmp_path / "in" / "classic")
    sel = select_series(scan_folder(tmp_path / "in"))
    assert sel.series.series_instance_uid == mf_key and sel.reason.endswith("multi-frame object")


def test_a_thinner_multiframe_series_still_wins(tmp_path: Path) -> None:
    """The classic preference only breaks ties: other acquisitions are ranked by the usual rules."""
    study = pydicom.uid.generate_uid()
    write_ct_series(tmp_path / "in" / "thick", study_uid=study, slice_step=5.0, thickness=5.0)
    thin = write_ct_series(tmp_path / "thin", study_uid=study, series_number=4)
    path = write_enhanced_ct(thin.files, tmp_path / "in" / "mf" / "enhanced.dcm")
    sel = select_series(scan_folder(tmp_path / "in"))
    assert sel.series.multiframe and sel.series.files == [path]
    assert "qualifies; ranked below" in " ".join(sel.rejected.values())


def test_multiframe_rules_and_split_objects(tmp_path: Path) -> None:
    w = write_ct_series(tmp_path / "classic")
    path = write_enhanced_ct(w.files, tmp_path / "mf" / "a.dcm")
    # a site that accepts only classic CT Image Storage
    sel = select_series(scan_folder(path.parent), {"sop_class_uids": ["1.2.840.10008.5.1.4.1.1.2"]})
    assert sel.series is None and "Enhanced (multi-frame) CT not accepted by the configuration" in sel.reason
    # two multi-frame objects of one series (a concatenation): refused at selection and at loading
    uid = pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID
    write_enhanced_ct(w.files, tmp_path / "mf" / "b.dcm", series_uid=uid)
    scan = scan_folder(path.parent)
    sel = select_series(scan)
    assert sel.series is None and "split over 2 objects" in sel.reason
    with pytest.raises(InputError) as e:
        load_volume(scan.series[0])
    assert e.value.code == "multiframe_split"


# ----------------------------------------------------------------------------------------------- outputs

@pytest.fixture(scope="module")
def mf_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A true Enhanced CT object, its loaded volume, a label map and the SEG and SR built from them."""
    root = tmp_path_factory.mktemp("mf_outputs")
    w = write_ct_series(root / "classic", names="shuffled", iop=IOP)
    path = write_enhanced_ct(w.files, root / "mf" / "enhanced.dcm", seed=5)
    loaded = load_volume(_only_series(path.parent))
    ensure_copied_attributes(loaded.datasets)  # as the application does (absent StudyTime becomes empty)
    labels = np.zeros(loaded.volume.shape, np.uint8)
    labels[4:15, 5:14, 3:12] = 1
    labels[4:15, 5:14, 20:29] = 2
    labels[9:13, 15:22, 13:19] = 3
    seg = build_seg(loaded.datasets, labels, SEGMENT_DEFAULTS, algorithm_name="Sacral test", algorithm_version="1",
                    source_frames=loaded.source_frames)
    seg.save_as(root / "seg.dcm")
    findings = {"status": Status.TUMOUR_FOUND, "predicted_class": "chordoma",
                "probabilities": {"chordoma": 0.9, "metastasis": 0.1},
                "tumour": {"volume_ml": 1.5, "location_hip_frame": [0.01, 0.3, -0.1],
                           "location_hip_frame_mm": [1.0, 40.0, -12.0]},
                "hip_bone": {"left_volume_ml": 3.2, "right_volume_ml": 3.1}, "warnings": []}
    sr = build_sr(loaded.datasets, seg, findings, algorithm_name="Sacral test", algorithm_version="1")
    sr.save_as(root / "sr.dcm")
    return {"path": path, "loaded": loaded, "labels": labels, "seg": root / "seg.dcm", "sr": root / "sr.dcm"}


def test_seg_references_the_source_instance_and_its_frames(mf_outputs: dict) -> None:
    loaded, labels = mf_outputs["loaded"], mf_outputs["labels"]
    uid = loaded.datasets[0].SOPInstanceUID
    seg = hd.seg.segread(mf_outputs["seg"])
    refs = [(i.ReferencedSOPInstanceUID, i.ReferencedSOPClassUID)
            for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence]
    assert refs == [(uid, EnhancedCTImageStorage)]
    frame_of = {d: fr[0] for d, fr in enumerate(loaded.source_frames)}
    for item in seg.PerFrameFunctionalGroupsSequence:  # every SEG frame names its source frame
        src = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert src.ReferencedSOPInstanceUID == uid
        assert int(src.ReferencedFrameNumber) in frame_of.values()
    # read back by source frame (d order): the label map, voxel for voxel
    back = np.zeros_like(labels)
    value_of = {"hip bone left": 1, "hip bone right": 2, "sacral tumour": 3}
    for item in seg.SegmentSequence:
        px = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=uid, source_frame_numbers=[frame_of[d] for d in range(labels.shape[0])],
            segment_numbers=[item.SegmentNumber], combine_segments=False, assert_missing_frames_are_empty=True)
        back[px[..., 0] > 0] = value_of[item.SegmentLabel]
    np.testing.assert_array_equal(back, labels)


def test_sr_evidence_names_the_one_source_instance(mf_outputs: dict) -> None:
    ds = pydicom.dcmread(mf_outputs["sr"])
    uid = mf_outputs["loaded"].datasets[0].SOPInstanceUID
    evidence = {(s.SeriesInstanceUID, r.ReferencedSOPInstanceUID)
                for st in ds.CurrentRequestedProcedureEvidenceSequence for s in st.ReferencedSeriesSequence
                for r in s.ReferencedSOPSequence}
    seg = pydicom.dcmread(mf_outputs["seg"])
    assert evidence == {(mf_outputs["loaded"].datasets[0].SeriesInstanceUID, uid),
                        (seg.SeriesInstanceUID, seg.SOPInstanceUID)}
    found = read_sr_findings(ds)
    assert found["volume_ml"] == pytest.approx(1.5) and found["predicted_class"] == "chordoma"


def test_seg_and_sr_pass_dciodvfy_and_dcentvfy(mf_outputs: dict) -> None:
    assert _tool_errors("dciodvfy", mf_outputs["seg"]) == []
    assert _tool_errors("dciodvfy", mf_outputs["sr"]) == []
    assert _tool_errors("dcentvfy", mf_outputs["path"], mf_outputs["seg"], mf_outputs["sr"]) == []


# ------------------------------------------------------------------------------------ the application

@pytest.fixture(scope="module")
def app_runs(tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
             studies: dict) -> dict[str, tuple[Path, AppRun]]:
    """The session's generated chordoma study (``conftest.studies``, run once as classic single-frame files),
    written and run as Legacy Converted Enhanced and as true Enhanced CT (the two runs at once)."""
    root = tmp_path_factory.mktemp("mf_app")
    row, classic_run = studies["tumour"]
    classic = Path(row["root"]) / row["dicom_dir"]
    files = select_series(scan_folder(classic)).require().files  # the series the application analyses
    inputs = {"legacy": write_legacy_enhanced_ct(files, root / "legacy" / "ct.dcm").parent,
              "enhanced": write_enhanced_ct(files, root / "enhanced" / "ct.dcm", seed=11).parent}
    # a generous limit: on a loaded 2-core machine one run has taken more than the default 600 s
    runs = run_apps([(folder, root / f"out_{name}") for name, folder in inputs.items()], models_dir, timeout=1500)
    multi = {name: (folder, run) for (name, folder), run in zip(inputs.items(), runs)}
    return {"classic": (classic, classic_run), **multi}


@pytest.mark.app
@pytest.mark.parametrize("form", ["legacy", "enhanced"])
def test_app_gives_the_classic_findings(app_runs: dict, form: str) -> None:
    _, classic = app_runs["classic"]
    folder, run = app_runs[form]
    assert classic.returncode == 0 and run.returncode == 0, run.stderr[-2000:]
    a, b = classic.result, run.result
    assert a["status"] == b["status"] == Status.TUMOUR_FOUND
    assert b["predicted_class"] == a["predicted_class"]
    assert b["tumour"]["volume_ml"] == pytest.approx(a["tumour"]["volume_ml"], rel=0.02)
    assert np.allclose(b["tumour"]["location_hip_frame"], a["tumour"]["location_hip_frame"], atol=0.02)
    assert b["hip_bone"]["left_volume_ml"] == pytest.approx(a["hip_bone"]["left_volume_ml"], rel=0.02)
    assert b["clinical"] == a["clinical"]
    mf = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    assert b["series_instance_uid"] == mf.SeriesInstanceUID != a["series_instance_uid"]
    assert b["study_instance_uid"] == a["study_instance_uid"]
    assert not any("contrast" in w_ for w_ in b["warnings"])
    assert "series selection: selected CT series: " in run.stderr and "; multi-frame object" in run.stderr
    # the SEG of the multi-frame run equals the classic run's SEG voxel for voxel (read by source frame / file)
    loaded = load_volume(_only_series(folder))
    seg = hd.seg.segread(run.output_dir / b["outputs"]["seg"])
    px = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=mf.SOPInstanceUID, source_frame_numbers=[f[0] for f in loaded.source_frames],
        combine_segments=True, assert_missing_frames_are_empty=True)
    classic_loaded = load_volume(_only_series(app_runs["classic"][0]))
    seg_c = hd.seg.segread(classic.output_dir / a["outputs"]["seg"])
    px_c = seg_c.get_pixels_by_source_instance(
        source_sop_instance_uids=[d.SOPInstanceUID for d in classic_loaded.datasets], combine_segments=True,
        assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(px, px_c)
    sr = read_sr_findings(run.output_dir / b["outputs"]["sr"])
    assert sr["volume_ml"] == pytest.approx(b["tumour"]["volume_ml"], abs=1e-9)
    # no patient identifier of the header in the logs
    for kw in ("PatientName", "PatientID"):
        value = str(mf.get(kw) or "")
        if len(value) >= 4:
            assert value not in run.stdout + run.stderr


@pytest.mark.app
@pytest.mark.parametrize("form", ["legacy", "enhanced"])
def test_app_outputs_pass_dciodvfy_and_dcentvfy(app_runs: dict, form: str) -> None:
    folder, run = app_runs[form]
    outputs = run.result["outputs"]
    assert outputs["seg"] and outputs["sr"] and outputs["kos"] and outputs["key_images"]
    paths = [run.output_dir / name for name in output_files(outputs)]  # SEG, SR, KOS, key images
    for path in paths:
        assert _tool_errors("dciodvfy", path) == [], path.name
    assert _tool_errors("dcentvfy", *folder.iterdir(), *paths) == []
