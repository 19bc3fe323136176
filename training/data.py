"""Training data: a cohort manifest (CSV) of DICOM series + label maps, prepared once into a cache.

Input format (what a hospital points the pipeline at; the phantom generator writes one instance of it):
``manifest.csv`` with at least the columns ``case_id, tumour_class, dicom_dir, label_path`` (paths relative
to the manifest's folder). ``tumour_class`` is one of the six class names or ``none``. Label maps are NIfTI
on exactly the DICOM series' grid (0 background, 1 hip bone left, 2 hip bone right, 3 sacral tumour), or a
DICOM SEG of that series (:func:`labels_from_seg`: segments found by their codes, as this application writes them).
Age and sex are read from the DICOM header with the same functions the application uses; the manifest's
``age``/``sex`` columns are only used to cross-check.

Every case is loaded with the application's own loader (``core.dicom_input``), resampled with the
application's own preprocessing (``core.segment.canonical_resample``), and its tabular features come from
``core.clinical`` and ``core.hip_frame`` applied to the reference label map: no training/serving skew.

At inference the classifier sees a crop and a volume/location cut with the *segmented* tumour, not the
reference one. So, once the tumour model is trained, :func:`segmented_classifier_inputs` runs it on every
tumour case exactly as the application does (``core.segment.segment``, ``core.postprocess.merge_structures``,
the application's minimum tumour volume) and the classifier trains on both kinds of input.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from core import clinical, hip_frame
from core.assessment import tumour_edge_margins_mm, tumour_reported
from core.classify import tumour_crop
from core.config import AnalysisConfig
from core.dicom_header import DEFAULT_RULES, scan_folder
from core.dicom_input import load_volume
from core.model_metadata import CropSpec, ModelMetadata, SegmentationSpec
from core.postprocess import HIP_LEFT, HIP_RIGHT, TUMOUR, merge_structures
from core.segment import canonical_resample, mean_probability_in, segment_with_probability
from core.series_selection import select_series
from core.volume import Volume, from_sitk, lattice_view

@dataclass
class Case:
    case_id: str
    tumour_class: str
    dicom_dir: Path
    label_path: Path


def read_manifest(path: Path) -> list[Case]:
    """Cases of a manifest CSV; paths resolved relative to the manifest's folder."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"case_id", "tumour_class", "dicom_dir", "label_path"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: manifest lacks columns {sorted(missing)}")
    return [Case(r["case_id"], r["tumour_class"], path.parent / r["dicom_dir"], path.parent / r["label_path"])
            for r in rows]


def combine_manifests(manifests: Sequence[Path], out: Path) -> Path:
    """Write one manifest CSV at ``out`` holding every row of ``manifests`` in order, its ``dicom_dir`` and
    ``label_path`` rewritten relative to ``out``'s folder (columns: the union, in first-seen order; a column a
    manifest lacks is empty). Case ids must be unique across the manifests (ValueError naming the duplicates)."""
    rows: list[dict[str, str]] = []
    columns: list[str] = []
    out = Path(out)
    for m in map(Path, manifests):
        with open(m, newline="") as f:
            reader = csv.DictReader(f)
            columns += [c for c in reader.fieldnames or [] if c not in columns]
            for r in reader:
                for key in ("dicom_dir", "label_path"):
                    r[key] = os.path.relpath((m.parent / r[key]).resolve(), out.parent.resolve())
                rows.append(r)
    ids = [r["case_id"] for r in rows]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"case ids in more than one manifest: {dup[:5]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        w.writerows(rows)
    return out


def load_case(case: Case) -> tuple[Volume, Volume, Any]:
    """(CT Volume in HU, label Volume on the same grid, representative DICOM header)."""
    scan = scan_folder(case.dicom_dir)
    sel = select_series(scan, DEFAULT_RULES)
    if sel.series is None:
        raise ValueError(f"{case.case_id}: {sel.reason}")
    loaded = load_volume(sel.series)
    ct = loaded.volume
    if _is_dicom(case.label_path):
        return ct, labels_from_seg(case.label_path, loaded.datasets, ct), loaded.datasets[0]
    lab = on_grid_of(from_sitk(sitk.ReadImage(str(case.label_path))), ct, case.case_id)
    return ct, lab.with_array(lab.array.astype(np.uint8)), loaded.datasets[0]


def on_grid_of(lab: Volume, ct: Volume, case_id: str = "") -> Volume:
    """``lab`` on ``ct``'s grid. The label map must cover the same voxel centres as the series (it may store them
    in another axis order or direction, e.g. a feet-first series loaded slice-normal first): it is then
    re-indexed exactly (:func:`core.volume.lattice_view`); any other grid is refused with a ValueError."""
    arr = lattice_view(lab, ct.affine, ct.shape)
    if arr is None:
        raise ValueError(f"{case_id}: label map grid differs from the DICOM series grid")
    return Volume(np.ascontiguousarray(arr), ct.affine.copy(), lab.meta)


def _is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    with open(path, "rb") as fh:
        return fh.read(132)[128:132] == b"DICM"


#: (segmented property type, laterality modifier or None) SCT codes -> label value
_SEG_CODES: dict[tuple[str, str | None], int] = {("29836001", "7771000"): HIP_LEFT, ("29836001", "24028007"): HIP_RIGHT,
                                                  ("108369006", None): TUMOUR}


def _seg_label_value(item: Any) -> int | None:
    """Label value of one SegmentSequence item from its property type (and laterality) codes; None: not ours."""
    t = item.SegmentedPropertyTypeCodeSequence[0]
    mods = getattr(t, "SegmentedPropertyTypeModifierCodeSequence", None) or []
    lat = str(mods[0].CodeValue) if mods else None
    if str(t.CodingSchemeDesignator) != "SCT":
        return None
    return _SEG_CODES.get((str(t.CodeValue), lat if str(t.CodeValue) != "108369006" else None))


def labels_from_seg(path: Path, datasets: list[Any], ct: Volume) -> Volume:
    """Label map (uint8, D-H-W on ``ct``'s grid) from a DICOM SEG of the series whose sorted slices are
    ``datasets`` (``ct``'s d axis order), read with highdicom.

    Segments are recognised by their SNOMED CT codes (SegmentedPropertyTypeCodeSequence): Hip (29836001) with the
    laterality modifier Left (7771000) -> 1, Right (24028007) -> 2; Neoplasm (108369006) -> 3 (written last, so
    it wins where segments overlap); other segments are ignored. BINARY and FRACTIONAL SEGs (fraction >= 0.5)
    are read; the SEG must reference this series' instances. Raises ValueError otherwise.
    """
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    if str(seg.Modality) != "SEG":
        raise ValueError(f"{path}: not a DICOM SEG (modality {seg.Modality})")
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    referenced = {str(i.ReferencedSOPInstanceUID) for s in getattr(seg, "ReferencedSeriesSequence", [])
                  for i in s.ReferencedInstanceSequence}
    if not referenced & set(uids):
        raise ValueError(f"{path}: the SEG references none of the series' instances")
    values = {int(item.SegmentNumber): _seg_label_value(item) for item in seg.SegmentSequence}
    if not any(v is not None for v in values.values()):
        raise ValueError(f"{path}: no hip-bone or tumour segment (SCT 29836001 + laterality, 108369006)")
    labels = np.zeros(ct.shape, np.uint8)
    for number, value in sorted(values.items(), key=lambda kv: (kv[1] == TUMOUR, kv[0])):
        if value is None:
            continue
        px = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[number],
                                               combine_segments=False, assert_missing_frames_are_empty=True)
        frame = px[..., 0]   # FRACTIONAL: rescaled to 0..1 by highdicom
        mask = frame >= 0.5 if str(seg.SegmentationType) == "FRACTIONAL" else frame > 0
        if mask.shape != ct.shape:
            raise ValueError(f"{path}: SEG frames {mask.shape} differ from the series grid {ct.shape}")
        labels[mask] = value
    return ct.with_array(labels)


def tabular_values(labels: Volume, header: Any) -> dict[str, float | None]:
    """Raw (unstandardised) tabular features of one case, by the application's own functions."""
    tumour = labels.array == TUMOUR
    values: dict[str, float | None] = {
        "sex": {"M": 1.0, "F": 0.0}.get(clinical.sex(header) or "", None),
        "age_years": clinical.age_years(header),
        "tumour_volume_ml": clinical.tumour_volume_ml(tumour, labels.voxel_volume_ml),
        "loc_u": None, "loc_v": None, "loc_w": None,
    }
    if tumour.any() and (labels.array == HIP_LEFT).any() and (labels.array == HIP_RIGHT).any():
        frame = hip_frame.hip_frame_from_labels(labels, HIP_LEFT, HIP_RIGHT)
        loc = hip_frame.tumour_location(labels, TUMOUR, frame)
        values["loc_u"], values["loc_v"], values["loc_w"] = (float(v) for v in loc["location_hip_frame"])
    return values


def perturbed_masks(mask: np.ndarray, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Reference tumour masks grown and shrunk, so that the classifier learns crops cut with imperfect masks.

    ``spec`` (config ``classifier.mask_augmentation``): ``dilate_voxels`` and ``erode_voxels`` (iterations of
    3-D binary dilation/erosion with the 6-connected structuring element, on the series grid); an eroded mask
    with fewer than ``min_voxels`` voxels is left out. Returns ``{"dilated": ..., "eroded": ...}`` (bool D-H-W).
    """
    out: dict[str, np.ndarray] = {}
    if int(spec.get("dilate_voxels", 0)) > 0:
        out["dilated"] = ndimage.binary_dilation(mask, iterations=int(spec["dilate_voxels"]))
    if int(spec.get("erode_voxels", 0)) > 0:
        eroded = ndimage.binary_erosion(mask, iterations=int(spec["erode_voxels"]))
        if int(eroded.sum()) >= int(spec.get("min_voxels", 1)):
            out["eroded"] = eroded
    return out


def prepare(manifest: Path, cache: Path, seg_specs: Mapping[str, SegmentationSpec], crop_spec: CropSpec,
            mask_augmentation: dict[str, Any] | None = None, workers: int = 1) -> Path:
    """Load every case once and cache what training needs (``cache/<case_id>.npz`` + ``cache/index.json``).

    ``seg_specs`` maps a segmentation model name to its metadata's segmentation part (``spacing_mm``,
    ``antialias``); each case stores the CT and label map resampled to that model grid. Tumour cases also store
    the classifier crop (``crop_spec``, from the reference tumour mask; ``crop_dilated`` / ``crop_eroded`` from
    :func:`perturbed_masks` with ``mask_augmentation``) and their raw tabular values. ``workers`` > 1 prepares
    cases in that many processes (same result).
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [(case, cache, seg_specs, crop_spec, mask_augmentation) for case in read_manifest(manifest)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers) as pool:
            index = pool.map(_prepare_case, jobs, chunksize=1)
    else:
        index = [_prepare_case(j) for j in jobs]
    (cache / "index.json").write_text(json.dumps(index, indent=1))
    return cache / "index.json"


def _prepare_case(job: tuple) -> dict[str, Any]:
    case, cache, seg_specs, crop_spec, mask_augmentation = job
    out = cache / f"{case.case_id}.npz"
    entry: dict[str, Any] = {"case_id": case.case_id, "tumour_class": case.tumour_class, "file": out.name}
    ct, lab, header = load_case(case)
    arrays: dict[str, np.ndarray] = {}
    for name, spec in seg_specs.items():
        arrays[f"{name}_ct"] = canonical_resample(ct, spec.spacing_mm, antialias=spec.antialias
                                                  ).array.astype(np.float32)
        arrays[f"{name}_lab"] = canonical_resample(lab, spec.spacing_mm, is_label=True).array
    entry["tabular"] = tabular_values(lab, header)
    if case.tumour_class != "none" and (lab.array == TUMOUR).any():
        ref = lab.array == TUMOUR
        arrays["crop"] = tumour_crop(ct, ref, crop_spec)
        for key, mask in perturbed_masks(ref, mask_augmentation or {}).items():
            arrays[f"crop_{key}"] = tumour_crop(ct, mask, crop_spec)
    np.savez(out, **arrays)
    return entry


def segmented_classifier_inputs(manifest: Path, case_ids: list[str], tumour_module: Any, tumour_meta: ModelMetadata,
                                crop_spec: CropSpec, analysis: AnalysisConfig
                                ) -> dict[str, tuple[np.ndarray, dict[str, float | None]]]:
    """Classifier inputs cut with the tumour model's own mask: ``{case_id: (crop, raw tabular values)}``.

    For each case of ``case_ids``: the tumour model runs on the CT as in the application
    (:func:`core.segment.segment`, CPU), its mask is merged with the reference hip bones and reduced to the
    largest component in the model's ``sacral_region`` (:func:`core.postprocess.merge_structures`), and the
    crop (:func:`core.classify.tumour_crop`) and tabular values (:func:`tabular_values`) are computed from that
    label map. Cases whose segmented tumour the application would not report
    (:func:`core.assessment.tumour_reported` with ``analysis``: below its volume threshold, or below the tumour
    model's confidence rule unless cut by the scan edge; it then classifies nothing) are left out. The reference
    hip bones stand in for the hip model's (Dice above 0.9; this halves the time).
    """
    import torch

    wanted = set(case_ids)
    region = tumour_meta.frame_region
    out: dict[str, tuple[np.ndarray, dict[str, float | None]]] = {}
    for case in read_manifest(manifest):
        if case.case_id not in wanted:
            continue
        ct, lab, header = load_case(case)
        tumour = segment_with_probability(ct, tumour_module, tumour_meta, torch.device("cpu"))
        labels = lab.with_array(merge_structures(lab.array, tumour.labels, affine=lab.affine, region=region).labels)
        mask = labels.array == TUMOUR
        faces = hip_frame.truncated_faces(labels, (TUMOUR,), tumour_edge_margins_mm(
            analysis, max(tumour_meta.seg.spacing_mm), [float(s) for s in labels.spacing]))
        if not tumour_reported(float(mask.sum()) * labels.voxel_volume_ml,
                               mean_probability_in(labels.with_array(mask), tumour.probability), faces, analysis,
                               tumour_meta.seg.min_mean_probability):
            continue
        out[case.case_id] = (tumour_crop(ct, mask, crop_spec), tabular_values(labels, header))
    return out
