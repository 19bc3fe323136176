"""What the real application (``python -m app``) does with unusual input: one run per case, see docs/robustness.md.

The cases are built and run by ``tests/robust_cases.py`` (once per session, shared with ``test_privacy.py``).
Expectations hold for any segmentation model: where the outcome depends on what the models find (a pelvis
without tumour, a hip bone cut by the scan edge, a tumour at the edge), only what the input decides is asserted
unconditionally; the model-dependent part is asserted for the status the models produced.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml
from conftest import REPO, assert_nested_close, run_app
from robust_cases import ALL_CASES, IDENT, NON_ASCII_NAME, CaseRun, Cases

from core.run_state import output_files
from core.status import Status

pytestmark = pytest.mark.app

ANALYSED = (Status.TUMOUR_FOUND, Status.NO_TUMOUR, Status.NOT_APPLICABLE)
FINDINGS = ("status", "study_instance_uid", "series_instance_uid", "predicted_class", "probabilities", "tumour",
            "hip_bone", "models")


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Cases:
    return Cases.get(tmp_path_factory)


def assert_same_findings(run: CaseRun, ref: CaseRun, keys: tuple[str, ...] = FINDINGS) -> None:
    assert run.run.returncode == 0, run.run.stderr[-3000:]
    for k in keys:
        assert_nested_close(run.result[k], ref.result[k], rel=1e-4, abs_tol=1e-6, path=k)  # float round-off


def assert_analysed(run: CaseRun) -> dict[str, Any]:
    """Exit 0, a non-error status, and outputs consistent with it."""
    assert run.run.returncode == 0, run.run.stderr[-3000:]
    doc = run.result
    assert doc["status"] in ANALYSED, doc.get("reason")
    assert doc["outputs"]["sr"] == "sacral_tumour_sr.dcm"
    if doc["status"] != Status.TUMOUR_FOUND:
        assert doc["predicted_class"] is None and doc["probabilities"] == {} and doc["tumour"] is None
    else:
        assert doc["tumour"]["volume_ml"] >= 0.5 and doc["predicted_class"] in doc["probabilities"]
    if doc["status"] == Status.NOT_APPLICABLE:
        assert any(w.startswith("not applicable:") for w in doc["warnings"]), doc["warnings"]
    return doc


def assert_refused(run: CaseRun, exit_code: int, *fragments: str) -> dict[str, Any]:
    """Status error with the exit code, a reason containing ``fragments``, result.json only."""
    assert run.run.returncode == exit_code, (run.run.stdout[-2000:], run.run.stderr[-3000:])
    doc = run.result
    assert doc["status"] == Status.ERROR
    for f in fragments:
        assert f in doc["reason"], doc["reason"]
    assert f"error: {doc['reason']}" in run.run.stderr
    assert doc["outputs"] == {"seg": None, "sr": None, "kos": None, "key_images": []}
    assert sorted(p.name for p in run.run.output_dir.iterdir()) == ["result.json"]
    return doc


# ------------------------------------------------------------------------------ invariants of every case
@pytest.mark.parametrize("name", ALL_CASES)
def test_nothing_partial_and_staging_removed(cases: Cases, name: str) -> None:
    """Whatever happens: the output folder holds result.json and the outputs it names, or nothing; no
    ``.partial`` or probe files; the private staging folder under TMPDIR is gone."""
    run = cases.run(name)
    out = run.run.output_dir
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if run.has_result:
        doc = run.result
        named = output_files(doc["outputs"])
        assert present == sorted(["result.json", *named])
        if doc["status"] == Status.ERROR:
            assert named == [] and run.run.returncode in (1, 2, 3)
        else:
            assert run.run.returncode == 0
    else:
        assert present == [], present
        assert run.run.returncode == 4
    assert list(run.tmpdir.iterdir()) == [], "staging or temporary files left in TMPDIR"
    assert run.run.stdout.splitlines()[0].startswith("status: "), run.run.stdout[:500]


# ------------------------------------------------------------------------------------ analysed inputs
def test_good_study(cases: Cases) -> None:
    run = cases.run("good")
    doc = assert_analysed(run)
    study = run.expect["study"]
    assert (doc["study_instance_uid"], doc["series_instance_uid"]) == (study.study_uid, study.series_uid)
    assert set(doc["models"]) >= {"hip_bone_seg", "tumour_seg"}
    assert doc["clinical"]["sex"] in ("M", "F") and doc["clinical"]["age_years"] > 0


def test_file_names_order_folders_and_duplicates_do_not_matter(cases: Cases) -> None:
    """Random file names, nested folders, InstanceNumber running head to feet and two slices exported twice:
    the same findings as the ordered study, and a warning about the dropped duplicates."""
    run = cases.run("file_order")
    assert_same_findings(run, cases.run("good"))
    assert "2 duplicate slice(s) with identical pixel data dropped" in run.result["warnings"]


def test_corrupted_and_truncated_files_are_named_and_the_good_series_used(cases: Cases) -> None:
    run = cases.run("bad_files")
    assert_same_findings(run, cases.run("good"))
    named = [w for w in run.result["warnings"] if "unreadable DICOM file(s) ignored:" in w]
    assert len(named) == 1, run.result["warnings"]
    for f in run.expect["bad"]:
        assert f in named[0]
    assert "junk/" not in named[0], "non-DICOM files are ignored silently"


def test_transfer_syntaxes_signedness_and_rescale_do_not_matter(cases: Cases) -> None:
    """Slices re-encoded as big endian, JPEG 2000, implicit VR, PixelRepresentation 1 and slope 0.5: same HU,
    same findings."""
    run = cases.run("storage")
    assert_same_findings(run, cases.run("good"))
    assert not any("Rescale" in w for w in run.result["warnings"])


def test_noncontrast_soft_thin_series_is_chosen(cases: Cases) -> None:
    run = cases.run("series_choice")
    doc = assert_analysed(run)
    assert doc["series_instance_uid"] == run.expect["selected"]
    assert not any("contrast" in w for w in doc["warnings"]), doc["warnings"]


def test_best_series_over_several_studies_with_warning(cases: Cases) -> None:
    run = cases.run("two_studies")
    doc = assert_analysed(run)
    assert (doc["study_instance_uid"], doc["series_instance_uid"]) == (run.expect["study"], run.expect["selected"])
    assert "1 other study in the input ignored" in doc["warnings"]


def _assert_missing_clinical(run: CaseRun, cases: Cases) -> dict[str, Any]:
    doc = assert_analysed(run)
    assert_same_findings(run, cases.run("good"), ("status", "series_instance_uid", "tumour", "hip_bone"))
    assert doc["clinical"]["age_years"] is None and doc["clinical"]["sex"] is None
    if doc["status"] == Status.TUMOUR_FOUND:  # age and sex feed the classifier only when there is a tumour
        assert {"age", "sex"} <= set(doc["clinical"]["imputed"])
        for name in ("age_years", "sex"):
            assert f"{name} missing or malformed in the DICOM header: imputed for the classifier" in doc["warnings"]
    else:
        assert doc["clinical"]["imputed"] == []
    return doc


def test_missing_age_sex_dates_and_non_ascii_name(cases: Cases) -> None:
    run = cases.run("clinical_missing_non_ascii")
    doc = _assert_missing_clinical(run, cases)
    names = output_files(doc["outputs"])
    assert doc["outputs"]["sr"] in names and doc["outputs"]["kos"] in names and doc["outputs"]["key_images"]
    for name in names:  # every DICOM output carries the patient's name, correctly encoded, in one character set
        ds = pydicom.dcmread(run.run.output_dir / name)
        assert str(ds.PatientName) == NON_ASCII_NAME, name
        assert ds.SpecificCharacterSet == "ISO_IR 192", name


def test_malformed_age_birth_date_sex_and_study_date(cases: Cases) -> None:
    run = cases.run("clinical_malformed")
    doc = _assert_missing_clinical(run, cases)
    ds = pydicom.dcmread(run.run.output_dir / doc["outputs"]["sr"])
    assert str(ds.PatientName) == IDENT["patient_name"] and ds.PatientID == IDENT["patient_id"]


def test_scan_without_hip_bone_is_not_applicable(cases: Cases) -> None:
    run = cases.run("thighs_only")
    doc = assert_analysed(run)
    assert doc["status"] == Status.NOT_APPLICABLE, (doc["hip_bone"], doc["warnings"])
    assert any("hip bone in the field of view" in w for w in doc["warnings"]), doc["warnings"]
    # no "sacral tumour" drawn where there is no sacrum: the SEG (if any) agrees with result.json and the SR
    assert doc["tumour"] is None and "sacral tumour" not in (doc.get("segment_numbers") or {}), doc
    if doc["outputs"]["seg"]:
        seg = pydicom.dcmread(run.run.output_dir / doc["outputs"]["seg"], stop_before_pixels=True)
        assert "sacral tumour" not in {str(i.SegmentLabel) for i in seg.SegmentSequence}


def test_hip_bone_cut_by_the_scan_is_reported(cases: Cases) -> None:
    run = cases.run("hip_cut")
    doc = assert_analysed(run)
    hip = doc["hip_bone"]
    if doc["status"] == Status.NOT_APPLICABLE:  # the models found too little of the cut pelvis: the reason says so
        assert any(w.startswith("not applicable:") and "hip" in w for w in doc["warnings"]), doc["warnings"]
    else:  # both hip bones found (at least the 50 mL of analysis.min_hip_bone_volume_ml): the cut is reported
        assert min(hip["left_volume_ml"], hip["right_volume_ml"]) >= 50
        assert hip["truncated"] is True
        cut = [w for w in doc["warnings"] if w.startswith("hip bone cut by the edge of the scan")]
        assert cut and "d_last" in cut[0], doc["warnings"]


def test_tumour_touching_the_edge_is_reported(cases: Cases) -> None:
    """The posterior edge of the field of view runs through the tumour centre: the tumour is found and reported
    as cut by the edge (h_last: the last rows, posterior), within the edge margin
    (core.assessment.tumour_edge_margin_mm: one voxel of the tumour model's 3 mm grid, from its metadata; models
    0.2.0-0.3.0 stopped their masks short of the edge and gave no warning)."""
    run = cases.run("tumour_at_edge")
    doc = assert_analysed(run)
    assert doc["status"] == Status.TUMOUR_FOUND, doc["warnings"]
    edge = [w for w in doc["warnings"] if w.startswith("sacral tumour touches the edge of the scan")]
    assert edge and "h_last" in edge[0], doc["warnings"]


def test_a_tumour_cut_by_the_edge_is_exempt_from_the_confidence_rule(cases: Cases, tmp_path: Path,
                                                                     models_dir: Path) -> None:
    """The edge case again, with the tumour model's ``min_mean_probability`` set above the mean probability the
    first run measured: the cut tumour is still reported, with the same volume and the edge warning, and no
    low-confidence warning (core.assessment.tumour_confident; models 0.6.4 applied their rule to it and hid it)."""
    import shutil
    first = cases.run("tumour_at_edge")
    assert first.result["status"] == Status.TUMOUR_FOUND and first.input_dir is not None
    p = first.result["tumour"]["mean_probability"]
    assert p is not None and p < 0.99, "the cut tumour is too certain for this test"
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    meta_path = models / "tumour_seg" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["min_mean_probability"] = round(p + 0.01, 4)
    meta_path.write_text(json.dumps(meta, indent=2))
    strict = run_app(first.input_dir, tmp_path / "out", models)
    assert strict.returncode == 0, strict.stderr[-2000:]
    doc = strict.result
    assert doc["status"] == Status.TUMOUR_FOUND, doc["warnings"]
    assert doc["tumour"]["volume_ml"] == pytest.approx(first.result["tumour"]["volume_ml"], rel=1e-6)
    assert any(w.startswith("sacral tumour touches the edge of the scan") for w in doc["warnings"])
    assert not any("was not reported" in w for w in doc["warnings"]), doc["warnings"]


def test_pelvis_without_tumour(cases: Cases) -> None:
    """A whole pelvis without a tumour: analysed, and no tumour reported (status no_tumour, no tumour segment)."""
    run = cases.run("pelvis_without_tumour")
    doc = assert_analysed(run)
    assert doc["series_instance_uid"] == run.expect["study"].series_uid
    assert doc["status"] == Status.NO_TUMOUR and doc["tumour"] is None, (doc["status"], doc["tumour"])


def test_two_runs_at_once_do_not_interfere(cases: Cases) -> None:
    """The reference study and another study analysed at the same time, sharing TMPDIR: each result is that of
    its own study (the reference one equals the run made alone) and both staging folders are gone."""
    a, b = cases.run("good_concurrent"), cases.run("pelvis_without_tumour")
    assert a.tmpdir == b.tmpdir
    assert_same_findings(a, cases.run("good"))
    assert b.result["series_instance_uid"] == b.expect["study"].series_uid != a.result["series_instance_uid"]
    assert list(a.tmpdir.iterdir()) == []


# ------------------------------------------------------------------------------------- refused inputs
REFUSED = {
    "empty": (2, "no DICOM series found"),
    "missing_input": (2, "input folder does not exist"),
    "no_dicom": (2, "no DICOM series found"),
    "non_image_only": (2, "no CT series: found"),
    "mr_only": (2, "no CT series: found MR x1"),
    "localizer_only": (2, "no qualifying series: 1 CT series rejected (localizer"),
    "missing_slice": (2, "missing slices: gap of 5 mm where the slice spacing is 2.5 mm"),
    "non_uniform_spacing": (2, "non-uniform slice spacing"),
    "gantry_tilt": (2, "(gantry tilt)"),
    "sagittal_coronal": (2, "no qualifying series: 2 CT series rejected"),
    "enhanced_ct": (2, "no qualifying series: 1 CT series rejected (orientation unknown (axial required))"),
    "too_large": (2, "series too large"),
    "sha_mismatch": (3, "refusing to load"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_with_reason(cases: Cases, name: str) -> None:
    code, fragment = REFUSED[name]
    assert_refused(cases.run(name), code, fragment)


def test_non_image_objects_listed_by_modality(cases: Cases) -> None:
    reason = cases.run("non_image_only").result["reason"]
    for m in ("DOC x1", "SEG x1", "SR x1"):
        assert m in reason


def test_sagittal_and_coronal_reasons(cases: Cases) -> None:
    reason = cases.run("sagittal_coronal").result["reason"]
    assert "orientation sagittal (axial required)" in reason and "orientation coronal (axial required)" in reason


def test_memory_guard_refuses_before_decoding(cases: Cases) -> None:
    run = cases.run("too_large")
    doc = run.result
    assert f"= {run.expect['voxels'] / 1e6:.1f} M voxels" in doc["reason"]
    assert "above the limit of 0.1 M (analysis.max_voxels" in doc["reason"]
    assert doc["series_instance_uid"] is not None  # selected, then refused: nothing decoded, no model run
    assert doc["models"] == {} and "segment_hip_bone_seg" not in doc["timings_s"]


def test_memory_guard_default_fits_the_package_memory() -> None:
    """analysis.max_voxels x measured bytes per voxel + baseline stays within resources.memory (pkg.json)."""
    from core.assessment import BASELINE_BYTES, BYTES_PER_VOXEL

    cfg = yaml.safe_load((REPO / "app" / "app.yaml").read_text())
    mem = cfg["resources"]["memory"]
    units = {"Mi": 2**20, "Gi": 2**30}
    limit = float(mem[:-2]) * units[mem[-2:]]
    pkg = json.loads((REPO / "MAP_manifest" / "pkg.json").read_text())
    assert pkg["resources"]["memory"] == mem
    need = BASELINE_BYTES + cfg["analysis"]["max_voxels"] * BYTES_PER_VOXEL
    assert need <= limit, f"max_voxels needs {need / 2**30:.1f} GiB > {mem}"
    assert cfg["analysis"]["max_voxels"] >= 512 * 512 * 600, "a 600-slice 512 x 512 study must be accepted"


def test_model_checksum_mismatch_refused_before_loading(cases: Cases) -> None:
    doc = cases.run("sha_mismatch").result
    assert "model 'hip_bone_seg': sha256 of model.ts is" in doc["reason"]
    assert "hip_bone_seg" not in doc["models"]


def test_output_under_a_file_fails_fast_with_exit_4(cases: Cases) -> None:
    run = cases.run("output_under_file")
    assert run.run.returncode == 4
    assert "error: output folder is not writable: Not a directory" in run.run.stderr
    assert "status: error" in run.run.stdout and "outputs: none written" in run.run.stdout
    assert not run.run.output_dir.parent.is_dir()  # still the plain file it was
    assert "segment_hip_bone_seg" not in run.run.stdout


def test_full_temporary_folder_ends_with_exit_4_and_nothing_partial(cases: Cases) -> None:
    """Staging fails (ENOSPC in TMPDIR): status error, exit 4, an empty output folder, the staging folder gone."""
    run = cases.run("temp_full")
    assert run.run.returncode == 4, run.run.stderr[-2000:]
    assert "error: cannot write the outputs: No space left on device" in run.run.stderr
    assert "status: error" in run.run.stdout and "outputs: none written" in run.run.stdout
    assert list(run.run.output_dir.iterdir()) == []
    assert json.loads(Path(run.expect["listing"]).read_text()) == []  # the tmpfs, just before it was unmounted


@pytest.mark.parametrize("name,why", [("output_read_only", "Read-only file system"),
                                      ("disk_full_inodes", "No space left on device"),
                                      ("disk_full_bytes", "No space left on device")])
def test_unwritable_or_full_output_leaves_nothing(cases: Cases, name: str, why: str) -> None:
    """Exit 4 and nothing left behind: no result.json, no SEG or SR, no ``.partial`` file."""
    run = cases.run(name)
    assert run.run.returncode == 4, run.run.stderr[-2000:]
    assert why in run.run.stderr and "outputs: none written" in run.run.stdout
    listing = json.loads(Path(run.expect["listing"]).read_text())
    assert listing in ([], ["out"]), listing
