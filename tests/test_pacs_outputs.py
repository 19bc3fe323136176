"""What the radiologist sees in PACS (issue 15): key images, the Key Object Selection document, exact provenance
and the links in result.json, checked on the real application's outputs for every analysed status.

Runs (each once per session, shared with tests/test_app.py and tests/test_robustness.py), for each status the
first candidate that ended with it (which phantom ends how depends on the models):

* ``tumour_found``: the chordoma study of ``conftest.studies``, else the ``robust_cases`` case ``good``;
* ``no_tumour``: the tumour-free study of ``conftest.studies``, else the ``robust_cases`` case ``no_tumour``;
* ``not_applicable``: the phantom scan of the thighs without hip bone (``thighs_only``), else the tumour-free
  study;
* ``real_vendor``: the real 20-slice JPEG 2000 series (contrast-enhanced abdomen, ``not_applicable``).

Independent readers: dciodvfy / dcentvfy (dicom3tools), PixelMed DicomSRValidator, highdicom and pydicom.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
import yaml
from tools import require_tool, unavailable
from conftest import REPO, SHARED_DATA, AppRun, run_app
from pydicom.sr._concepts_dict import concepts
from pydicom.sr.codedict import Collection
from robust_cases import Cases
from scipy import ndimage

from core.dicom_header import scan_folder
from core.dicom_input import load_volume
from core.key_images import COLOURS, LABEL_COLOURS, view_geometry
from core.kos import referenced_uids
from core.run_state import output_files
from core.series_selection import select_series
from core.sr_output import read_sr_findings
from core.status import Status

pytestmark = pytest.mark.app

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
KOS_STORAGE = "1.2.840.10008.5.1.4.1.1.88.59"
STATUSES = (Status.TUMOUR_FOUND, Status.NO_TUMOUR, Status.NOT_APPLICABLE)
CASES = (*STATUSES, "real_vendor")
SEGMENT_VALUES = {"hip bone left": 1, "hip bone right": 2, "sacral tumour": 3}


@pytest.fixture(scope="module")
def runs(studies: dict, real_run: AppRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, AppRun]]:
    """case -> (source DICOM folder, finished run): for each status the first of its candidate runs that ended
    with it (which phantom ends how depends on the models), and the real vendor series."""
    cases = Cases.get(tmp_path_factory)

    def study(key: str) -> tuple[Path, AppRun]:
        row, run = studies[key]
        return Path(row["root"]) / row["dicom_dir"], run

    def robust(name: str) -> tuple[Path, AppRun]:
        case = cases.run(name)
        return case.input_dir, case.run

    candidates = {Status.TUMOUR_FOUND: [lambda: study("tumour"), lambda: robust("good")],
                  Status.NO_TUMOUR: [lambda: study("none"), lambda: robust("pelvis_without_tumour")],
                  Status.NOT_APPLICABLE: [lambda: robust("thighs_only"), lambda: study("none")]}
    out: dict[str, tuple[Path, AppRun]] = {}
    for status, options in candidates.items():
        seen = []
        for option in options:
            source, run = option()
            got = run.result.get("status") if (run.output_dir / "result.json").is_file() else None
            seen.append(got)
            if got == status:
                out[status] = (source, run)
                break
        else:
            out[status] = (Path(), run)  # the tests fail with the statuses seen
            out[status + "_seen"] = seen  # type: ignore[assignment]
    out["real_vendor"] = (SHARED_DATA / "real_ct_abdomen_j2k", real_run)
    return out


def _run(runs: dict, case: str) -> tuple[Path, AppRun, dict[str, Any]]:
    if f"{case}_seen" in runs:
        pytest.fail(f"no candidate run ended {case} with these models (statuses: {runs[case + '_seen']})")
    source, run = runs[case]
    assert run.returncode == 0, run.stderr[-2000:]
    doc = run.result
    assert doc["status"] == (Status.NOT_APPLICABLE if case == "real_vendor" else case), doc["warnings"]
    return source, run, doc


def _datasets(run: AppRun, doc: dict) -> dict[str, pydicom.Dataset]:
    return {name: pydicom.dcmread(run.output_dir / name) for name in output_files(doc["outputs"])}


def _tool(name: str) -> str:
    return require_tool(name, install="apt-get install dicom3tools")


def _errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]


def _source_files(source: Path, doc: dict) -> list[Path]:
    """The files of the series the run used."""
    out = []
    for p in sorted(source.rglob("*")):
        if p.is_file():
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - non-DICOM files beside the series
                continue
            if str(ds.get("SeriesInstanceUID", "")) == doc["series_instance_uid"]:
                out.append(p)
    return out


# ------------------------------------------------------------------------------------------ validators
@pytest.mark.parametrize("case", CASES)
def test_every_output_passes_dciodvfy(runs: dict, case: str) -> None:
    _, run, doc = _run(runs, case)
    dciodvfy = _tool("dciodvfy")
    names = output_files(doc["outputs"])
    assert doc["outputs"]["sr"] and doc["outputs"]["kos"] and doc["outputs"]["key_images"]
    for name in names:
        proc = subprocess.run([dciodvfy, "-new", str(run.output_dir / name)], capture_output=True, text=True,
                              timeout=300)
        assert _errors(proc) == [], f"{case} {name}"


@pytest.mark.parametrize("case", STATUSES)
def test_dcentvfy_source_and_outputs_agree(runs: dict, case: str) -> None:
    """Patient, study and equipment attributes agree across the source series and every output."""
    source, run, doc = _run(runs, case)
    dcentvfy = _tool("dcentvfy")
    files = ([str(p) for p in _source_files(source, doc)]
             + [str(run.output_dir / n) for n in output_files(doc["outputs"])])
    assert len(files) > len(output_files(doc["outputs"])) >= 3
    proc = subprocess.run([dcentvfy, *files], capture_output=True, text=True, timeout=300)
    assert _errors(proc) == []


@pytest.mark.parametrize("case", CASES)
def test_sr_passes_pixelmed(runs: dict, case: str) -> None:
    _, run, doc = _run(runs, case)
    jar, java = Path("/usr/share/java/pixelmed.jar"), require_tool("java", install="apt-get install pixelmed-apps")
    if not jar.exists():
        unavailable("PixelMed DicomSRValidator not installed (apt-get install pixelmed-apps)")
    proc = subprocess.run(
        [java, "-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0",
         "-cp", str(jar), "com.pixelmed.validate.DicomSRValidator", str(run.output_dir / doc["outputs"]["sr"])],
        capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "Found Root Template TID_1500" in out
    assert [ln for ln in out.splitlines() if ln.startswith("Error")] == []


# ------------------------------------------------------------------------------------------ key images
def _seg_labels(seg_path: Path, datasets: list[pydicom.Dataset], shape: tuple[int, ...]) -> np.ndarray:
    """The SEG read back with highdicom as a D-H-W label map in the source's sorted order."""
    seg = hd.seg.segread(seg_path)
    uids = [ds.SOPInstanceUID for ds in datasets]
    labels = np.zeros(shape, np.uint8)
    for item in seg.SegmentSequence:
        px = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=[item.SegmentNumber], combine_segments=False,
            assert_missing_frames_are_empty=True)
        labels[px[..., 0] > 0] = SEGMENT_VALUES[item.SegmentLabel]
    return labels


@pytest.mark.parametrize("case", STATUSES)
def test_key_image_outlines_lie_where_the_seg_says(runs: dict, case: str) -> None:
    """Every outline pixel of a structure's colour inside a key image's CT view shows a voxel of that structure
    in the SEG (read back with highdicom), and the outlines are complete (>= 90 % of each SEG outline drawn;
    the hip-frame axes may cover a few pixels)."""
    source, run, doc = _run(runs, case)
    loaded = load_volume(select_series(scan_folder(source)).series)
    ct = loaded.volume
    labels = (_seg_labels(run.output_dir / doc["outputs"]["seg"], loaded.datasets, ct.shape)
              if doc["outputs"]["seg"] else np.zeros(ct.shape, np.uint8))
    names = doc["outputs"]["key_images"]
    assert len(names) == (3 if case == Status.TUMOUR_FOUND else 1)
    views = []
    for name in names:
        ds = pydicom.dcmread(run.output_dir / name)
        view = str(ds.ImageComments).split()[0].lower()
        views.append(view)
        if case == Status.TUMOUR_FOUND:
            centre = ct.lps_to_index(np.asarray(doc["tumour"]["centroid_lps_mm"]))[0]
        elif np.isin(labels, (1, 2)).any():  # as the application: through the hip bones, else the middle
            centre = np.argwhere(np.isin(labels, (1, 2))).mean(axis=0)
        else:
            centre = (np.asarray(ct.shape, float) - 1) / 2
        g = view_geometry(ct, view, centre)
        rgb = ds.pixel_array
        assert rgb.shape == (ds.Rows, ds.Columns, 3) and rgb.dtype == np.uint8
        box = rgb[g.y0:g.y0 + len(g.row_index), g.x0:g.x0 + len(g.col_index)]
        sl: list[Any] = [slice(None)] * 3
        sl[g.fixed_axis] = g.fixed_index
        plane = labels[tuple(sl)]
        if g.row_axis > g.col_axis:
            plane = plane.T
        plane = plane[np.ix_(g.row_index, g.col_index)]
        for value, colour in LABEL_COLOURS.items():
            drawn = np.all(box == np.array(COLOURS[colour], np.uint8), axis=-1)
            mask = plane == value
            ys, xs = np.nonzero(drawn)
            vox = g.voxel(ys + g.y0, xs + g.x0)
            assert (labels[tuple(vox.T)] == value).all(), f"{name}: {colour} pixel outside the SEG's segment"
            outline = mask & ~ndimage.binary_erosion(mask, iterations=2, border_value=0)
            if outline.sum() >= 20:
                assert (drawn & outline).sum() >= 0.9 * outline.sum(), f"{name}: {colour} outline incomplete"
            if case == Status.TUMOUR_FOUND and value == 3:
                assert drawn.sum() > 50, f"{name}: no tumour outline"
            if case == Status.NO_TUMOUR and value == 3:
                assert not drawn.any()
        if case == Status.NO_TUMOUR:
            assert all(np.all(box == np.array(COLOURS[c], np.uint8), axis=-1).any() for c in ("hip_left", "hip_right"))
    assert views == (["axial", "coronal", "sagittal"] if case == Status.TUMOUR_FOUND else ["axial"])


@pytest.mark.parametrize("case", CASES)
def test_key_image_headers(runs: dict, case: str) -> None:
    source, run, doc = _run(runs, case)
    src = pydicom.dcmread(_source_files(source, doc)[0], stop_before_pixels=True) if case != "real_vendor" else None
    series = set()
    for name in doc["outputs"]["key_images"]:
        ds = pydicom.dcmread(run.output_dir / name)
        assert ds.SOPClassUID == SC_STORAGE and ds.Modality == "OT"
        assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3 and ds.BitsAllocated == 8
        assert (ds.Columns, ds.Rows) == (1200, 800)
        assert ds.BurnedInAnnotation == "YES"
        assert ds.SeriesDescription.startswith("RESEARCH USE ONLY")
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.StudyInstanceUID == doc["study_instance_uid"]
        assert ds.SeriesInstanceUID not in (doc["series_instance_uid"],)
        assert "FrameOfReferenceUID" not in ds  # the canvas has no patient geometry
        if src is not None:
            for kw in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                       "StudyDate"):
                assert str(ds.get(kw, "")) == str(src.get(kw, "")), kw
        series.add(ds.SeriesInstanceUID)
        # the banner says research use only: red across the full width of the top rows
        assert (ds.pixel_array[5, :, 0] > 150).all() and (ds.pixel_array[5, :, 1] < 40).all()
    assert len(series) == 1


# ---------------------------------------------------------------------------------------------- KOS
@pytest.mark.parametrize("case", CASES)
def test_kos_references_resolve_to_this_runs_objects(runs: dict, case: str) -> None:
    _, run, doc = _run(runs, case)
    objs = _datasets(run, doc)
    kos = objs.pop(doc["outputs"]["kos"])
    assert kos.SOPClassUID == KOS_STORAGE and kos.Modality == "KO"
    written = {str(ds.SOPInstanceUID): str(ds.SOPClassUID) for ds in objs.values()}
    refs = referenced_uids(kos)
    assert {uid: cls for cls, uid in refs} == written and len(refs) == len(written)
    evidence = {(str(se.SeriesInstanceUID), str(i.ReferencedSOPInstanceUID), str(i.ReferencedSOPClassUID))
                for st in kos.CurrentRequestedProcedureEvidenceSequence for se in st.ReferencedSeriesSequence
                for i in se.ReferencedSOPSequence}
    assert evidence == {(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.SOPClassUID))
                        for ds in objs.values()}
    assert {str(st.StudyInstanceUID) for st in kos.CurrentRequestedProcedureEvidenceSequence} == \
        {doc["study_instance_uid"]} == {str(kos.StudyInstanceUID)}
    doc_kos = hd.ko.KeyObjectSelectionDocument.from_dataset(kos)
    for uid in written:
        assert doc_kos.resolve_reference(uid) == (doc["study_instance_uid"], str(
            next(ds for ds in objs.values() if ds.SOPInstanceUID == uid).SeriesInstanceUID), uid)
    title = kos.ConceptNameCodeSequence[0]
    assert (title.CodingSchemeDesignator, title.CodeValue, title.CodeMeaning) == ("DCM", "113000", "Of Interest")
    assert "OfInterest" in Collection("CID7010").dir()
    for kw in ("PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber"):
        assert {str(ds.get(kw, "")) for ds in [kos, *objs.values()]} == {str(kos.get(kw, ""))}, kw


# ------------------------------------------------------------------------------------ result.json links
@pytest.mark.parametrize("case", CASES)
def test_result_json_links_match_the_files(runs: dict, case: str) -> None:
    _, run, doc = _run(runs, case)
    assert doc["schema"] == "sacral-tumour-result/2"
    links = doc["dicom_outputs"]
    names = output_files(doc["outputs"])
    assert sorted(link["file"] for link in links) == sorted(names)
    assert sorted(p.name for p in run.output_dir.iterdir()) == sorted([*names, "result.json"])
    roles = {"seg": [doc["outputs"]["seg"]], "sr": [doc["outputs"]["sr"]], "kos": [doc["outputs"]["kos"]],
             "key_image": doc["outputs"]["key_images"]}
    for link in links:
        ds = pydicom.dcmread(run.output_dir / link["file"], stop_before_pixels=True)
        assert link["file"] in roles[link["role"]]
        assert link["sop_class_uid"] == ds.SOPClassUID
        assert link["sop_instance_uid"] == ds.SOPInstanceUID
        assert link["series_instance_uid"] == ds.SeriesInstanceUID
        assert link["modality"] == ds.Modality
        assert ds.StudyInstanceUID == doc["study_instance_uid"]
    assert len({link["sop_instance_uid"] for link in links}) == len(links)
    if doc["outputs"]["seg"]:
        seg = pydicom.dcmread(run.output_dir / doc["outputs"]["seg"], stop_before_pixels=True)
        assert doc["segment_numbers"] == {str(i.SegmentLabel): int(i.SegmentNumber) for i in seg.SegmentSequence}
        sr = read_sr_findings(run.output_dir / doc["outputs"]["sr"])
        assert sr["segment_numbers"].items() <= doc["segment_numbers"].items()
        if case == Status.TUMOUR_FOUND:
            assert doc["segment_numbers"] == {"hip bone left": 1, "hip bone right": 2, "sacral tumour": 3}
    else:
        assert doc["segment_numbers"] == {}


# ------------------------------------------------------------------------------------------- provenance
def _walk(ds: pydicom.Dataset):
    yield ds
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item)


def _text_items(ds: pydicom.Dataset, code_value: str) -> list[str]:
    return [str(i.TextValue) for i in _walk(ds) if i.get("ValueType") == "TEXT"
            and i.ConceptNameCodeSequence[0].CodeValue == code_value]


@pytest.mark.parametrize("case", STATUSES)
def test_provenance_names_models_and_application(runs: dict, case: str) -> None:
    source, run, doc = _run(runs, case)
    app_version = str(yaml.safe_load((REPO / "app/app.yaml").read_text())["application"]["version"])
    models = doc["models"]
    objs = _datasets(run, doc)
    src = pydicom.dcmread(_source_files(source, doc)[0], stop_before_pixels=True)
    assert src.BodyPartExamined
    assert {str(ds.SpecificCharacterSet) for ds in objs.values()} == {"ISO_IR 192"}
    for name, ds in objs.items():
        assert ds.SoftwareVersions == f"sacral-tumour-map {app_version}", name
        assert ds.ManufacturerModelName == "sacral-tumour-map", name
        if ds.Modality != "KO":  # Body Part Examined is not part of the KOS IOD
            assert ds.BodyPartExamined == src.BodyPartExamined, name
    if doc["outputs"]["seg"]:
        seg = objs[doc["outputs"]["seg"]]
        for item in seg.SegmentSequence:
            model = "tumour_seg" if item.SegmentLabel == "sacral tumour" else "hip_bone_seg"
            alg = item.SegmentationAlgorithmIdentificationSequence[0]
            assert (alg.AlgorithmName, alg.AlgorithmVersion) == (model, models[model]["version"])
            assert alg.AlgorithmParameters == f"sha256={models[model]['sha256']}"
            assert alg.AlgorithmVersion != app_version or models[model]["version"] == app_version
    sr = objs[doc["outputs"]["sr"]]
    versions = _text_items(sr, "111003")  # Algorithm Version (TID 4019)
    params = _text_items(sr, "111002")    # Algorithm Parameters
    if case == Status.NOT_APPLICABLE:
        return
    assert f"hip_bone_seg {models['hip_bone_seg']['version']}" in versions
    assert f"hip_bone_seg sha256={models['hip_bone_seg']['sha256']}" in params
    if case == Status.TUMOUR_FOUND:
        expected = "; ".join(f"{n} {models[n]['version']}" for n in models)
        assert expected in versions and set(models) == {"hip_bone_seg", "tumour_seg", "tumour_classifier"}
        for n, m in models.items():
            assert f"{n} sha256={m['sha256']}" in params


def _pydicom_meanings() -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for scheme, by_keyword in concepts.items():
        for entries in by_keyword.values():
            for value, (meaning, _) in entries.items():
                out.setdefault((scheme, value), set()).add(meaning)
    return out


@pytest.mark.parametrize("case", STATUSES)
def test_code_meanings_are_pydicoms(runs: dict, case: str) -> None:
    """Every DCM, SCT and LN code in every output exists in pydicom's code dictionary (DICOM PS3.16), with
    one of its meanings there."""
    _, run, doc = _run(runs, case)
    known = _pydicom_meanings()
    seen = set()
    for name, ds in _datasets(run, doc).items():
        for item in _walk(ds):
            if "CodeValue" in item and item.get("CodingSchemeDesignator") in ("DCM", "SCT", "LN"):
                key = (str(item.CodingSchemeDesignator), str(item.CodeValue))
                seen.add(key)
                assert key in known, f"{name}: {key} {item.CodeMeaning!r} not in pydicom's dictionary"
                assert str(item.CodeMeaning) in known[key], f"{name}: {key} {item.CodeMeaning!r} not {known[key]}"
    assert ("DCM", "113000") in seen  # the KOS title
    if case != Status.NOT_APPLICABLE:
        assert ("DCM", "126030") in seen  # volume method, "Sum of segmented voxel method for volume"


# ---------------------------------------------------------------------------------- configuration switches
def _short_study(folder: Path) -> Path:
    """A 20-slice synthetic CT (47.5 mm): not_applicable before any model runs, so the run is quick."""
    from test_dicom_output import make_ct_series

    folder.mkdir(parents=True)
    for i, ds in enumerate(make_ct_series()):
        ds.save_as(folder / f"ct{i:03d}.dcm", enforce_file_format=True)
    return folder


@pytest.mark.parametrize("switches, expected", [
    ({"key_images": False, "kos_title": "for_referring_provider"}, {"sr", "kos"}),
    ({"key_object_selection": False}, {"sr", "key_images"}),
])
def test_output_switches(tmp_path: Path, models_dir: Path, switches: dict, expected: set[str]) -> None:
    cfg = yaml.safe_load((REPO / "app/app.yaml").read_text())
    cfg["outputs"] = {**cfg["outputs"], **switches}
    (tmp_path / "app.yaml").write_text(yaml.safe_dump(cfg))
    run = run_app(_short_study(tmp_path / "in"), tmp_path / "out", models_dir, "--config", str(tmp_path / "app.yaml"))
    assert run.returncode == 0, run.stderr[-2000:]
    doc = run.result
    assert doc["status"] == Status.NOT_APPLICABLE
    assert {k for k, v in doc["outputs"].items() if v} == expected
    assert sorted(p.name for p in run.output_dir.iterdir()) == sorted([*output_files(doc["outputs"]), "result.json"])
    if "kos" in expected:
        kos = pydicom.dcmread(run.output_dir / doc["outputs"]["kos"])
        assert kos.ConceptNameCodeSequence[0].CodeValue == "113002"  # For Referring Provider (CID 7010)
        assert [uid for _, uid in referenced_uids(kos)] == [
            pydicom.dcmread(run.output_dir / doc["outputs"]["sr"]).SOPInstanceUID]
