"""TID 1500 Measurement Report (Comprehensive 3D SR) of the analysis, and a reader for it.

Content tree written by :func:`build_sr` (codes in ``core/codes.py``)::

    CONTAINER (DCM 126000) Imaging Measurement Report                 TID 1500
      language, observation context (device = the algorithm), procedure reported (LN 25045-6 CT)
      CONTAINER (DCM 126010) Imaging Measurements                      only if a SEG is given
        CONTAINER Measurement Group  "sacral tumour"                   TID 1411, if a tumour was found
          Tracking Identifier/UID, Referenced Segment (SEG + source series)
          Finding = Neoplasm, Finding Site = Sacrum
          NUM Volume (SCT 118565006) [mL], method DCM 126030 Sum of segmented voxel method for volume
          NUM u, v, w [UCUM 1]; dx, dy, dz [mm]                        private 99SACRAL concepts
          NUM Probability of <type> [UCUM 1] x 6                        private 99SACRAL concepts
          CODE Classification (SCT 278201002) = predicted tumour type
        CONTAINER Measurement Group  "hip bone left" / "hip bone right"
          Referenced Segment, Finding = Hip, Finding Site = Hip + Laterality, NUM Volume [mL]
      CONTAINER (UMLS C0034375) Qualitative Evaluations                 TID 1500 rows for CODE / TEXT
        CODE Neoplasm (SCT 108369006) = Present / Absent  (+ Finding Site = Sacrum)   unless not applicable
        TEXT Summary (DCM 121111): e.g. "No sacral tumour detected"
        TEXT Analysis status (99SACRAL): tumour_found | no_tumour | not_applicable
        TEXT Warning (99SACRAL) x N
        TEXT Intended use statement (99SACRAL): research use only

Checked with dciodvfy (no errors; warnings only for the private scheme designator and for Body Part Examined,
which the SR IOD lacks but PACS route by) and PixelMed
DicomSRValidator 2022 (no errors; warnings for items its TID 1411/1500 tables predate: algorithm
identification and the classification CODE in the groups, the Finding Site modifier of the presence CODE).

Provenance: each measurement group's algorithm identification (TID 4019) names the models that produced it
(``findings["models"]``: version as "<model> <version>; ...", sha256 of each as Algorithm Parameters): the
hip-bone groups the hip-bone model, the tumour group all three models. The header carries Software Versions
(the application), Manufacturer's Model Name and the source's Body Part Examined (``core.provenance``).

Units: volumes mL, ``dx, dy, dz`` mm in the hip-bone frame, ``u, v, w`` and probabilities dimensionless.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
import pydicom
import pydicom.sr.codedict
from highdicom.sr import CodedConcept

from core import codes, provenance
from core.status import REPORTED, Status

log = logging.getLogger(__name__)

SR_SERIES_DESCRIPTION = "RESEARCH USE ONLY: sacral tumour AI report"
NO_TUMOUR_TEXT = "No sacral tumour detected"
DISCLAIMER_TEXT = "RESEARCH USE ONLY. Not for diagnostic use. Results of an AI algorithm; not reviewed by a physician."
STATUSES = REPORTED

TUMOUR_LABEL = "sacral tumour"
HIP_LABELS = {"left": "hip bone left", "right": "hip bone right"}
#: the model(s) behind the hip-bone measurement groups (keys of ``findings["models"]``)
HIP_BONE_MODELS = ("hip_bone_seg",)


# ---------------------------------------------------------------------------------------- writer
def _fresh(code: CodedConcept) -> CodedConcept:
    """A copy of a shared module-level code, so that no Dataset sits in two sequences."""
    return CodedConcept(code.value, code.scheme_designator, code.meaning)


def _num(name: CodedConcept, value: float, unit: CodedConcept, **kw: Any) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=_fresh(name), value=float(value), unit=_fresh(unit), **kw)


def _text(name: CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=_fresh(name), value=str(value)[:1024],
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _segment_number(seg: pydicom.Dataset, label: str) -> int | None:
    for item in seg.SegmentSequence:
        if str(item.SegmentLabel) == label:
            return int(item.SegmentNumber)
    return None


def _referenced_segment(seg: hd.seg.Segmentation, number: int) -> hd.sr.ReferencedSegment:
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(
            seg.ReferencedSeriesSequence[0].SeriesInstanceUID))


def _summary_text(findings: Mapping[str, Any]) -> str:
    status = findings["status"]
    if status == Status.NO_TUMOUR:
        return NO_TUMOUR_TEXT
    if status == Status.NOT_APPLICABLE:
        why = "; ".join(findings.get("warnings") or []) or "input outside the scope of the algorithm"
        return f"Not applicable: no analysis result ({why})"
    t = findings["tumour"]
    text = f"Sacral tumour detected, volume {t['volume_ml']:.1f} mL"
    cls = findings.get("predicted_class")
    if cls:
        key = codes.tumour_class_key(cls)
        p = (findings.get("probabilities") or {}).get(cls)
        text += f"; predicted type: {codes.TUMOUR_TYPE_CODES[key].meaning}"
        if p is not None:
            text += f" (probability {float(p):.2f})"
    return text


def _check_findings(findings: Mapping[str, Any]) -> None:
    status = findings.get("status")
    if status not in STATUSES:
        raise ValueError(f"findings['status'] must be one of {STATUSES}, got {status!r}")
    if status == Status.TUMOUR_FOUND and not findings.get("tumour"):
        raise ValueError(f"status '{Status.TUMOUR_FOUND}' needs findings['tumour']")
    probs = findings.get("probabilities") or {}
    for name, p in probs.items():
        codes.tumour_class_key(name)  # raises for unknown classes
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"probability of {name!r} is {p}, outside [0, 1]")
    if findings.get("predicted_class") is not None:
        codes.tumour_class_key(findings["predicted_class"])


def build_sr(
    source_datasets: Sequence[pydicom.Dataset],
    seg: hd.seg.Segmentation | None,
    findings: Mapping[str, Any],
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_number: int = 901,
    manufacturer: str = provenance.MANUFACTURER,
    software_versions: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """TID 1500 Measurement Report of one analysis (see the module docstring for the tree).

    Args:
        source_datasets: the CT slice datasets (headers suffice) the analysis was run on; patient and
            study information is copied from them.
        seg: the SEG written by ``core.seg_output.build_seg`` for the same series, or None when there is
            none (empty label map / not applicable): the report then has only the qualitative part.
        findings: the content of ``result.json`` (status, predicted_class, probabilities, tumour,
            hip_bone, warnings, models, ...); class names as accepted by ``codes.tumour_class_key``.
            ``models`` (``{name: {"version", "sha256"}}``) identifies the algorithm of each group.
        algorithm_name, algorithm_version: identify the algorithm (observer device; the measurement
            groups when ``findings`` has no ``models``).
        software_versions: Software Versions of the header (the application's version).

    Raises:
        ValueError: inconsistent findings (unknown status or class, probability outside [0, 1],
            tumour found but no tumour segment in ``seg``).
    """
    if len(source_datasets) == 0:
        raise ValueError("no source datasets")
    _check_findings(findings)
    status = findings["status"]
    if seg is not None and findings.get("segment_numbers"):
        in_seg = {str(i.SegmentLabel): int(i.SegmentNumber) for i in seg.SegmentSequence}
        if dict(findings["segment_numbers"]) != in_seg:
            raise ValueError(f"findings['segment_numbers'] {dict(findings['segment_numbers'])} "
                             f"differ from the SEG's segments {in_seg}")
    models = findings.get("models") or {}

    def algo(names: tuple[str, ...] | None) -> hd.sr.AlgorithmIdentification:
        """The models that produced a group (all of them when ``names`` is None), else the application."""
        used = [n for n in (names or models) if n in models]
        if not used:
            return hd.sr.AlgorithmIdentification(name=algorithm_name, version=algorithm_version)
        return hd.sr.AlgorithmIdentification(name=algorithm_name, version=provenance.model_versions(models, used),
                                             parameters=provenance.model_sha256(models, used))

    groups = []
    if seg is not None:
        if seg.StudyInstanceUID != source_datasets[0].StudyInstanceUID:
            raise ValueError("the SEG belongs to another study than the source datasets")
        tumour = findings.get("tumour")
        if status == Status.TUMOUR_FOUND and tumour:
            number = _segment_number(seg, TUMOUR_LABEL)
            if number is None:
                raise ValueError(f"status is tumour_found but the SEG has no {TUMOUR_LABEL!r} segment")
            measurements = [_num(codes.VOLUME, tumour["volume_ml"], codes.UNIT_ML,
                                 method=_fresh(codes.SUM_OF_SEGMENTED_VOXEL_VOLUMES))]
            loc = tumour.get("location_hip_frame")
            if loc is not None:
                measurements += [_num(c, v, codes.UNIT_ONE) for c, v in zip(codes.LOCATION_NORMALISED, loc)]
            loc_mm = tumour.get("location_hip_frame_mm")
            if loc_mm is not None:
                measurements += [_num(c, v, codes.UNIT_MM) for c, v in zip(codes.LOCATION_MM, loc_mm)]
            for name, p in (findings.get("probabilities") or {}).items():
                measurements.append(_num(codes.PROBABILITY_CODES[codes.tumour_class_key(name)], p, codes.UNIT_ONE))
            evaluations = []
            if findings.get("predicted_class"):
                key = codes.tumour_class_key(findings["predicted_class"])
                evaluations.append(hd.sr.QualitativeEvaluation(
                    _fresh(codes.CLASSIFICATION), _fresh(codes.TUMOUR_TYPE_CODES[key])))
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=TUMOUR_LABEL),
                referenced_segment=_referenced_segment(seg, number),
                finding_type=_fresh(codes.NEOPLASM),
                finding_sites=[hd.sr.FindingSite(_fresh(codes.SACRUM))],
                algorithm_id=algo(None),
                measurements=measurements,
                qualitative_evaluations=evaluations or None,
            ))
        hip = findings.get("hip_bone") or {}
        for side, laterality in (("left", codes.LEFT), ("right", codes.RIGHT)):
            number = _segment_number(seg, HIP_LABELS[side])
            volume = hip.get(f"{side}_volume_ml")
            if number is None or volume is None:
                continue
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=HIP_LABELS[side]),
                referenced_segment=_referenced_segment(seg, number),
                finding_type=_fresh(codes.HIP),
                finding_sites=[hd.sr.FindingSite(_fresh(codes.HIP), laterality=_fresh(laterality))],
                algorithm_id=algo(HIP_BONE_MODELS),
                measurements=[_num(codes.VOLUME, volume, codes.UNIT_ML,
                                   method=_fresh(codes.SUM_OF_SEGMENTED_VOXEL_VOLUMES))],
            ))

    observation_context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=pydicom.sr.codedict.codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=hd.UID(), name=algorithm_name, manufacturer_name=manufacturer,
                model_name=provenance.MANUFACTURER_MODEL_NAME),
        ))
    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=_fresh(codes.CT_PROCEDURE),
        # highdicom insists on >= 1 group; without one, a placeholder is written and removed below
        # (TID 1500 needs either the Imaging Measurements or the Qualitative Evaluations container).
        imaging_measurements=groups or [hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="placeholder"))],
        title=_fresh(codes.IMAGING_MEASUREMENT_REPORT),
    )
    if not groups:
        root_items = report[0].ContentSequence
        for i in reversed(range(len(root_items))):
            if _name(root_items[i]) == codes.code_key(codes.IMAGING_MEASUREMENTS):
                del root_items[i]

    # TID 1500 "Qualitative Evaluations" container (highdicom 0.28 has no argument for it).
    qualitative = hd.sr.ContainerContentItem(
        name=_fresh(codes.QUALITATIVE_EVALUATIONS),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    items: list[pydicom.Dataset] = []
    if status != Status.NOT_APPLICABLE:
        presence = hd.sr.CodeContentItem(
            name=_fresh(codes.NEOPLASM),
            value=_fresh(codes.PRESENT if status == Status.TUMOUR_FOUND else codes.ABSENT),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        presence.ContentSequence = hd.sr.ContentSequence([hd.sr.CodeContentItem(
            name=_fresh(codes.FINDING_SITE), value=_fresh(codes.SACRUM),
            relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD)])
        items.append(presence)
    items.append(_text(codes.SUMMARY, _summary_text(findings)))
    items.append(_text(codes.ANALYSIS_STATUS, status))
    items += [_text(codes.WARNING, w) for w in findings.get("warnings") or []]
    items.append(_text(codes.DISCLAIMER, DISCLAIMER_TEXT))
    qualitative.ContentSequence = hd.sr.ContentSequence(items)
    report[0].ContentSequence.append(qualitative)

    evidence = ([seg] if seg is not None else []) + list(source_datasets)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
        coding_schemes=[codes.PRIVATE_SCHEME_ITEM],
        specific_character_set=provenance.OUTPUT_CHARACTER_SET,
    )
    provenance.set_common_attributes(sr, source_datasets, algorithm_version)
    codes.normalise_meanings(sr)
    if software_versions:
        sr.SoftwareVersions = software_versions
    log.info("SR built: status %s, %d measurement groups, %d warnings", status, len(groups),
             len(findings.get("warnings") or []))
    return sr


# ---------------------------------------------------------------------------------------- reader
def _name(item: pydicom.Dataset) -> tuple[str, str] | None:
    seq = item.get("ConceptNameCodeSequence")
    return codes.code_key(seq[0]) if seq else None


def _children(item: pydicom.Dataset, name: CodedConcept | None = None,
              value_type: str | None = None) -> list[pydicom.Dataset]:
    out = []
    for child in item.get("ContentSequence", []):
        if name is not None and _name(child) != codes.code_key(name):
            continue
        if value_type is not None and child.get("ValueType") != value_type:
            continue
        out.append(child)
    return out


def _num_value(item: pydicom.Dataset) -> float:
    mv = item.MeasuredValueSequence[0]
    return float(mv.FloatingPointValue) if "FloatingPointValue" in mv else float(mv.NumericValue)


def _code_value(item: pydicom.Dataset) -> tuple[str, str]:
    return codes.code_key(item.ConceptCodeSequence[0])


def read_sr_findings(path_or_dataset: str | os.PathLike[str] | pydicom.Dataset) -> dict[str, Any]:
    """Read a report written by :func:`build_sr` back from its content tree (pydicom only).

    Returns:
        ``{"status", "tumour_present" (True/False/None), "summary", "warnings": [...],
        "predicted_class" (canonical key or None), "probabilities": {key: p},
        "volume_ml" (tumour, or None), "location_hip_frame": [u, v, w] | None,
        "location_hip_frame_mm": [dx, dy, dz] | None, "hip_bone": {"left_volume_ml", "right_volume_ml"},
        "segment_numbers": {segment label: number}, "referenced_seg_uid": str | None}``.
        Class keys are the canonical ones of ``codes.TUMOUR_TYPE_CODES`` (compare through
        ``codes.tumour_class_key``).
    """
    ds = path_or_dataset if isinstance(path_or_dataset, pydicom.Dataset) else pydicom.dcmread(path_or_dataset)
    if codes.code_key(ds.ConceptNameCodeSequence[0]) != codes.code_key(codes.IMAGING_MEASUREMENT_REPORT):
        raise ValueError("not a TID 1500 Imaging Measurement Report")
    type_by_code = {codes.code_key(c): k for k, c in codes.TUMOUR_TYPE_CODES.items()}
    prob_by_code = {codes.code_key(c): k for k, c in codes.PROBABILITY_CODES.items()}
    out: dict[str, Any] = {
        "status": None, "tumour_present": None, "summary": None, "warnings": [],
        "predicted_class": None, "probabilities": {}, "volume_ml": None,
        "location_hip_frame": None, "location_hip_frame_mm": None,
        "hip_bone": {"left_volume_ml": None, "right_volume_ml": None},
        "segment_numbers": {}, "referenced_seg_uid": None,
    }
    for container in _children(ds, codes.IMAGING_MEASUREMENTS, "CONTAINER"):
        for group in _children(container, codes.MEASUREMENT_GROUP, "CONTAINER"):
            label = next((str(t.TextValue) for t in _children(group, codes.TRACKING_IDENTIFIER, "TEXT")), None)
            ref = _children(group, codes.REFERENCED_SEGMENT, "IMAGE")
            if ref:
                sop = ref[0].ReferencedSOPSequence[0]
                out["referenced_seg_uid"] = str(sop.ReferencedSOPInstanceUID)
                if label is not None:
                    out["segment_numbers"][label] = int(sop.ReferencedSegmentNumber)
            finding = [_code_value(c) for c in _children(group, codes.FINDING, "CODE")]
            nums = {_name(n): n for n in _children(group, value_type="NUM")}
            volume = _num_value(nums[codes.code_key(codes.VOLUME)]) if codes.code_key(codes.VOLUME) in nums else None
            if codes.code_key(codes.NEOPLASM) in finding:
                out["volume_ml"] = volume
                u = [nums.get(codes.code_key(c)) for c in codes.LOCATION_NORMALISED]
                if all(x is not None for x in u):
                    out["location_hip_frame"] = [_num_value(x) for x in u if x is not None]
                mm = [nums.get(codes.code_key(c)) for c in codes.LOCATION_MM]
                if all(x is not None for x in mm):
                    out["location_hip_frame_mm"] = [_num_value(x) for x in mm if x is not None]
                out["probabilities"] = {prob_by_code[k]: _num_value(n) for k, n in nums.items() if k in prob_by_code}
                for c in _children(group, codes.CLASSIFICATION, "CODE"):
                    out["predicted_class"] = type_by_code.get(_code_value(c))
            elif codes.code_key(codes.HIP) in finding:
                sites = _children(group, codes.FINDING_SITE, "CODE")
                lat = [_code_value(m) for s in sites for m in _children(s, codes.LATERALITY, "CODE")]
                side = ("left" if codes.code_key(codes.LEFT) in lat
                        else "right" if codes.code_key(codes.RIGHT) in lat else None)
                if side:
                    out["hip_bone"][f"{side}_volume_ml"] = volume
    for container in _children(ds, codes.QUALITATIVE_EVALUATIONS, "CONTAINER"):
        for c in _children(container, codes.NEOPLASM, "CODE"):
            out["tumour_present"] = {codes.code_key(codes.PRESENT): True,
                                     codes.code_key(codes.ABSENT): False}.get(_code_value(c))
        for t in _children(container, value_type="TEXT"):
            key, text = _name(t), str(t.TextValue)
            if key == codes.code_key(codes.SUMMARY):
                out["summary"] = text
            elif key == codes.code_key(codes.ANALYSIS_STATUS):
                out["status"] = text
            elif key == codes.code_key(codes.WARNING):
                out["warnings"].append(text)
    return out
