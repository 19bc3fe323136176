"""Training reads label maps given as DICOM SEG (as hospitals' annotation tools export them) as well as NIfTI.

The SEG is the one the application itself writes (one small study, one app run for the module): read back by
``training.data`` it must give the label map the application reported on (same tumour and hip-bone volumes as
its result.json, left and right the right way round), and the training cache prepared from it must hold the
same tabular values as one prepared from the NIfTI label map of the same case where the two agree.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, AppRun

from training.data import labels_from_seg, load_case, prepare, read_manifest
from core.model_metadata import CropSpec, SegmentationSpec
from core.status import Status

pytestmark = pytest.mark.app


@pytest.fixture(scope="module")
def seg_case(studies: dict) -> tuple[Path, dict, AppRun]:
    """The session's generated tumour study (``conftest.studies``, the app run on it once) and a manifest whose
    label_path is the app's SEG."""
    row, run = studies["tumour"]
    manifest = Path(row["root"]) / "manifest.csv"
    assert run.returncode == 0, run.stderr[-2000:]
    seg = run.output_dir / run.result["outputs"]["seg"]
    seg_manifest = manifest.parent / "manifest_seg.csv"
    with open(seg_manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case_id", "tumour_class", "dicom_dir", "label_path"])
        w.writeheader()
        w.writerow({"case_id": row["case_id"] + "_nifti", "tumour_class": row["tumour_class"],
                    "dicom_dir": row["dicom_dir"], "label_path": row["label_path"]})
        w.writerow({"case_id": row["case_id"] + "_seg", "tumour_class": row["tumour_class"],
                    "dicom_dir": row["dicom_dir"], "label_path": str(seg)})
    return seg_manifest, row, run


def test_seg_label_map_is_what_the_app_reported(seg_case) -> None:
    """Independent of the models' quality: the label map read from the SEG has the hip-bone (and tumour)
    volumes of the app's result.json, and each value holds the pixels of the segment the SEG names so."""
    import highdicom as hd

    seg_manifest, row, run = seg_case
    nifti_case, seg_case_ = read_manifest(seg_manifest)
    ct, lab, header = load_case(seg_case_)
    assert lab.shape == ct.shape and lab.array.dtype == np.uint8
    np.testing.assert_allclose(lab.affine, ct.affine)
    assert set(np.unique(lab.array)) <= {0, 1, 2, 3}
    doc = run.result
    vox_ml = lab.voxel_volume_ml
    assert (lab.array == 1).sum() * vox_ml == pytest.approx(doc["hip_bone"]["left_volume_ml"], rel=2e-3, abs=0.1)
    assert (lab.array == 2).sum() * vox_ml == pytest.approx(doc["hip_bone"]["right_volume_ml"], rel=2e-3, abs=0.1)
    assert (lab.array == 1).any() and (lab.array == 2).any()
    if doc["status"] == Status.TUMOUR_FOUND:
        assert (lab.array == 3).sum() * vox_ml == pytest.approx(doc["tumour"]["volume_ml"], rel=2e-3, abs=0.1)
    # values by code agree with the segments' labels (read independently, in the source slices' order)
    from core.dicom_header import scan_folder
    from core.dicom_input import load_volume
    from core.series_selection import select_series
    uids = [ds.SOPInstanceUID for ds in load_volume(select_series(scan_folder(seg_case_.dicom_dir)).series).datasets]
    seg = hd.seg.segread(seg_case_.label_path)
    by_label = {"hip bone left": 1, "hip bone right": 2, "sacral tumour": 3}
    for item in seg.SegmentSequence:
        px = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[item.SegmentNumber],
                                               assert_missing_frames_are_empty=True)[..., 0] > 0
        value = by_label[str(item.SegmentLabel)]
        assert px[lab.array == value].all()         # every voxel of the value is in the segment so named
        assert (lab.array[px] >= value).all()       # and the segment is all there (a later label may win)
    # the NIfTI row of the same case still loads (both formats in one manifest)
    _, ref, _ = load_case(nifti_case)
    assert ref.shape == lab.shape


def test_training_cache_from_seg_manifest(seg_case, tmp_path: Path) -> None:
    """``prepare`` (the step of ``python -m training.train_all --manifest`` that reads label maps) accepts the
    SEG row; its tabular values agree with the NIfTI row's where the label maps agree (age, sex), and the
    location is computed from the SEG's own hip bones (close to the reference's)."""
    seg_manifest, row, run = seg_case
    cfg = yaml.safe_load((REPO / "training" / "config.yaml").read_text())
    seg_specs = {k: SegmentationSpec.from_dict(v) for k, v in cfg["segmentation"].items()}
    crop = CropSpec.from_dict(cfg["classifier"]["crop"])
    index = json.loads(prepare(seg_manifest, tmp_path / "cache", seg_specs, crop).read_text())
    by_id = {e["case_id"]: e for e in index}
    nif, seg = by_id[row["case_id"] + "_nifti"]["tabular"], by_id[row["case_id"] + "_seg"]["tabular"]
    assert seg["age_years"] == nif["age_years"] and seg["sex"] == nif["sex"]
    cache = np.load(tmp_path / "cache" / by_id[row["case_id"] + "_seg"]["file"])
    assert set(np.unique(cache["hip_bone_seg_lab"])) >= {0, 1, 2}
    if run.result["status"] == Status.TUMOUR_FOUND:
        assert seg["tumour_volume_ml"] == pytest.approx(run.result["tumour"]["volume_ml"], rel=2e-3)
        assert cache["crop"].shape[0] == 2
        np.testing.assert_allclose([seg["loc_u"], seg["loc_v"], seg["loc_w"]],
                                   run.result["tumour"]["location_hip_frame"], atol=1e-3)


def test_seg_of_another_series_is_refused(seg_case, tmp_path: Path) -> None:
    from training.phantom import generate_cohort

    seg_manifest, row, run = seg_case
    other = generate_cohort(tmp_path / "other", n=1, seed=20261131, classes=["none"], no_tumour_fraction=1.0)
    with open(other, newline="") as fh:
        orow = next(csv.DictReader(fh))
    ct_case = read_manifest(other)[0]
    from core.dicom_header import scan_folder
    from core.dicom_input import load_volume
    from core.series_selection import select_series
    loaded = load_volume(select_series(scan_folder(ct_case.dicom_dir)).series)
    with pytest.raises(ValueError, match="references none"):
        labels_from_seg(run.output_dir / run.result["outputs"]["seg"], loaded.datasets, loaded.volume)
    assert orow["case_id"]


def test_reference_label_map_round_trips_exactly_through_the_apps_seg_writer(seg_case, tmp_path: Path) -> None:
    """The phantom's reference label map (hip bones and tumour), written as SEG by ``core.seg_output.build_seg``
    (the application's writer) and read back by training, is voxel for voxel the same."""
    from core.seg_output import SEGMENT_DEFAULTS, build_seg

    seg_manifest, row, run = seg_case
    nifti_case = read_manifest(seg_manifest)[0]
    from core.dicom_header import scan_folder
    from core.dicom_input import load_volume
    from core.series_selection import select_series
    loaded = load_volume(select_series(scan_folder(nifti_case.dicom_dir)).series)
    _, ref, _ = load_case(nifti_case)
    ref_arr = np.where(np.isin(ref.array, [1, 2, 3]), ref.array, 0).astype(np.uint8)
    assert (ref_arr == 3).any()
    seg = build_seg(loaded.datasets, ref_arr, SEGMENT_DEFAULTS, algorithm_name="reference", algorithm_version="1")
    path = tmp_path / "reference_seg.dcm"
    seg.save_as(path)
    got = labels_from_seg(path, loaded.datasets, loaded.volume)
    np.testing.assert_array_equal(got.array, ref_arr)
    np.testing.assert_allclose(got.affine, loaded.volume.affine)
    # a label map without the tumour segment reads back without label 3
    seg2 = build_seg(loaded.datasets, np.where(ref_arr == 3, 0, ref_arr).astype(np.uint8), SEGMENT_DEFAULTS,
                     algorithm_name="reference", algorithm_version="1")
    seg2.save_as(tmp_path / "no_tumour.dcm")
    got2 = labels_from_seg(tmp_path / "no_tumour.dcm", loaded.datasets, loaded.volume)
    np.testing.assert_array_equal(got2.array, np.where(ref_arr == 3, 0, ref_arr))


def test_segmenters_train_from_a_seg_only_manifest(seg_case, tmp_path: Path) -> None:
    """Smoke training (``train_all --quick --manifest``, both segmentation models) on a manifest whose every label
    map is a DICOM SEG: the application's own output SEG of one case, and the reference label maps of two more
    cases written by the application's SEG writer. Both models are exported with complete metadata and the
    training summary counts the three cases."""
    import subprocess
    import sys

    from core.dicom_header import scan_folder
    from core.dicom_input import load_volume
    from core.seg_output import SEGMENT_DEFAULTS, build_seg
    from core.series_selection import select_series
    from training.phantom import generate_cohort

    seg_manifest, row, run = seg_case
    app_seg_row = read_manifest(seg_manifest)[1]
    more = generate_cohort(tmp_path / "more", n=2, seed=20261201, classes=["chordoma", "metastasis"],
                           no_tumour_fraction=0.0)
    rows = [{"case_id": "S1", "tumour_class": row["tumour_class"], "dicom_dir": str(app_seg_row.dicom_dir),
             "label_path": str(app_seg_row.label_path)}]
    for i, case in enumerate(read_manifest(more)):
        loaded = load_volume(select_series(scan_folder(case.dicom_dir)).series)
        _, ref, _ = load_case(case)
        arr = np.where(np.isin(ref.array, [1, 2, 3]), ref.array, 0).astype(np.uint8)
        path = tmp_path / f"ref_seg_{i}.dcm"
        seg = build_seg(loaded.datasets, arr, SEGMENT_DEFAULTS, algorithm_name="reference", algorithm_version="1")
        seg.save_as(path)
        rows.append({"case_id": f"S{i + 2}", "tumour_class": case.tumour_class, "dicom_dir": str(case.dicom_dir),
                     "label_path": str(path)})
    manifest = tmp_path / "manifest_seg_only.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert all(str(r["label_path"]).endswith(".dcm") for r in rows)
    out = tmp_path / "models"
    proc = subprocess.run([sys.executable, "-m", "training.train_all", "--quick", "--manifest", str(manifest),
                           "--work", str(tmp_path / "work"), "--out", str(out),
                           "--stages", "hip_bone_seg", "tumour_seg"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load((REPO / "training" / "config.yaml").read_text())
    for name in ("hip_bone_seg", "tumour_seg"):
        meta = json.loads((out / name / "metadata.json").read_text())
        assert meta["version"] == cfg["version"] and meta["labels"] == cfg["segmentation"][name]["labels"]
        assert meta["training"]["iterations"] == 3 and (out / name / "model.ts").stat().st_size > 10_000
        assert "3 cases" in meta["training_data"]
    index = json.loads((tmp_path / "work" / "cache" / "index.json").read_text())
    assert sorted(e["case_id"] for e in index) == ["S1", "S2", "S3"]
