"""What every DICOM object this application writes says about where it came from (one place for all outputs).

* one character set for all outputs: :data:`OUTPUT_CHARACTER_SET` (UTF-8, ``ISO_IR 192``); patient and
  study attributes copied from the source are decoded with the source's own character set first;
* General Equipment: :data:`MANUFACTURER`, :data:`MANUFACTURER_MODEL_NAME`, Software Versions = the
  application's version (``application.version`` of app.yaml);
* the models that produced a result: name, version and sha256 of each (``result.json`` ``models``), given as
  algorithm identification (SEG: per segment, the model that segmented it; SR: per measurement group, with
  the sha256 values as algorithm parameters; key images: printed on the image);
* Body Part Examined copied from the source series (when it has one).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pydicom

OUTPUT_CHARACTER_SET = "ISO_IR 192"
MANUFACTURER = "Sacral tumour MAP (research)"
MANUFACTURER_MODEL_NAME = "sacral-tumour-map"
DEVICE_SERIAL_NUMBER = "0"


def software_versions(app_version: str) -> str:
    """Software Versions (0018,1020) of every output: the application's version (LO, <= 64 characters)."""
    return f"sacral-tumour-map {app_version}"[:64]


def body_part_examined(source_datasets: Sequence[pydicom.Dataset]) -> str | None:
    """Body Part Examined of the source series (first slice), or None when it has none (CS, upper case)."""
    value = str(source_datasets[0].get("BodyPartExamined", "") or "").strip().upper() if source_datasets else ""
    return value or None


#: Body Part Examined defined terms (DICOM PS3.16 Annex L) of unpaired structures that a pelvic or abdominal CT
#: may carry: an image with one of these has no Laterality; with any other value (a paired structure, or a value
#: that is no defined term, e.g. "PARTIALBODY") Laterality is type 2 (copied from the source, else empty)
UNPAIRED_BODY_PARTS = frozenset(
    "ABDOMEN ABDOMENPELVIS AORTA BLADDER CHEST CHESTABDOMEN CHESTABDPELVIS COCCYX COLON CSPINE CTSPINE HEAD "
    "HEADNECK HEART ILIUM LIVER LSPINE NECK PANCREAS PELVIS PROSTATE RECTUM SKULL SPINE SSPINE STOMACH TLSPINE "
    "TSPINE UTERUS WHOLEBODY".split())


def set_body_part(ds: pydicom.Dataset, source_datasets: Sequence[pydicom.Dataset]) -> None:
    """Body Part Examined from the source and, for an image (General Series module), Laterality as the
    General Series module asks (type 2C: absent for unpaired body parts; the source's value or empty for paired,
    non-standard or unknown ones)."""
    part = body_part_examined(source_datasets)
    if not part:   # unknown body part: it may be paired, so Laterality is present (the source's, else empty)
        ds.Laterality = str(source_datasets[0].get("Laterality", "") or "") if source_datasets else ""
        return
    ds.BodyPartExamined = part
    if part not in UNPAIRED_BODY_PARTS:
        ds.Laterality = str(source_datasets[0].get("Laterality", "") or "")


def model_versions(models: Mapping[str, Mapping[str, Any]], names: Iterable[str] | None = None) -> str:
    """``"hip_bone_seg 0.2.0; tumour_seg 0.2.0"``: the versions of the named models (all when None)."""
    keys = list(models) if names is None else [n for n in names if n in models]
    return "; ".join(f"{n} {models[n].get('version')}" for n in keys)


def model_sha256(models: Mapping[str, Mapping[str, Any]], names: Iterable[str] | None = None) -> list[str]:
    """``["hip_bone_seg sha256=<64 hex>", ...]`` for the named models (all when None)."""
    keys = list(models) if names is None else [n for n in names if n in models]
    return [f"{n} sha256={models[n].get('sha256')}" for n in keys]


#: Patient / Patient Study / General Study attributes that highdicom copies into the SEG and SR but not into
#: Secondary Capture or KOS objects; copied from the source so that every output of a study agrees (dcentvfy)
PATIENT_STUDY_ATTRIBUTES = ("PatientIdentityRemoved", "DeidentificationMethod", "PatientAge", "PatientSize",
                            "PatientWeight", "StudyDescription")


def copy_patient_study(ds: pydicom.Dataset, source_datasets: Sequence[pydicom.Dataset]) -> None:
    """Copy :data:`PATIENT_STUDY_ATTRIBUTES` present in the source and absent in ``ds`` (values decoded with
    the source's character set, written in the output's)."""
    src = source_datasets[0]
    for keyword in PATIENT_STUDY_ATTRIBUTES:
        if keyword in src and keyword not in ds and src.get(keyword) not in (None, ""):
            setattr(ds, keyword, src.get(keyword))


def set_common_attributes(ds: pydicom.Dataset, source_datasets: Sequence[pydicom.Dataset],
                          app_version: str, *, body_part: bool = True) -> None:
    """Body Part Examined (from the source; ``body_part``), Manufacturer's Model Name and Software Versions on
    an output.

    highdicom writes Manufacturer; some of its IODs (SR, KOS) take no model name or software version. Body
    Part Examined belongs to the General Series module, which SR documents lack: dciodvfy then warns
    (never errs) that it is not in the IOD; it is written on the SR because PACS route and hang by it.
    """
    part = body_part_examined(source_datasets) if body_part else None
    if part:
        ds.BodyPartExamined = part
    ds.ManufacturerModelName = MANUFACTURER_MODEL_NAME
    ds.SoftwareVersions = software_versions(app_version)
    if "DeviceSerialNumber" not in ds:
        ds.DeviceSerialNumber = DEVICE_SERIAL_NUMBER
