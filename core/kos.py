"""Key Object Selection document (KOS) that flags this run's outputs in PACS.

PACS that support KOS show the referenced instances as key objects with the document title (CID 7010, e.g.
"Of Interest", "For Referring Provider"); the title is ``outputs.kos_title`` of app.yaml
(``core.codes.KOS_TITLES``). The KOS references the key images (as IMAGE items), the SEG (IMAGE item: it has
pixel data) and the SR (COMPOSITE item) written in the same run, all in the source study; its evidence
(Current Requested Procedure Evidence Sequence) lists exactly those instances.
"""
from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import pydicom
import pydicom.sr.codedict
from highdicom.sr import CodedConcept

from core import codes, provenance

KOS_SERIES_DESCRIPTION = "RESEARCH USE ONLY: sacral tumour AI key objects"
KOS_DESCRIPTION = "Sacral tumour AI: key images, segmentation and report (research use only, not for diagnosis)"


def build_kos(
    source_datasets: Sequence[pydicom.Dataset],
    referenced: Sequence[pydicom.Dataset],
    *,
    title: CodedConcept,
    algorithm_name: str,
    app_version: str,
    series_number: int = 903,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.ko.KeyObjectSelectionDocument:
    """KOS (TID 2010) referencing ``referenced`` (the run's SC key images, SEG and SR, in that order).

    Args:
        source_datasets: the CT headers the analysis used (study and Body Part Examined).
        referenced: the objects to flag; all must belong to the source study.
        title: document title, a CID 7010 code (``core.codes.KOS_TITLES``).
        algorithm_name: name of the observer device (the application).
        app_version: Software Versions.

    Raises:
        ValueError: nothing to reference, or an object of another study.
    """
    if not referenced:
        raise ValueError("a KOS needs at least one referenced object")
    study = str(source_datasets[0].StudyInstanceUID)
    others = [str(ds.SOPInstanceUID) for ds in referenced if str(ds.StudyInstanceUID) != study]
    if others:
        raise ValueError(f"{len(others)} referenced object(s) belong to another study")
    device = hd.sr.ObserverContext(
        observer_type=pydicom.sr.codedict.codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=algorithm_name[:64], manufacturer_name=provenance.MANUFACTURER,
            model_name=provenance.MANUFACTURER_MODEL_NAME))
    content = hd.ko.KeyObjectSelection(
        document_title=CodedConcept(title.value, title.scheme_designator, title.meaning),
        referenced_objects=list(referenced),
        observer_device_context=device,
        description=KOS_DESCRIPTION,
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=list(referenced),
        content=content,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=provenance.MANUFACTURER,
        series_description=KOS_SERIES_DESCRIPTION,
        specific_character_set=provenance.OUTPUT_CHARACTER_SET,
    )
    provenance.set_common_attributes(kos, source_datasets, app_version, body_part=False)  # not in the KOS IOD
    provenance.copy_patient_study(kos, source_datasets)
    codes.normalise_meanings(kos)
    return kos


def referenced_uids(kos: pydicom.Dataset) -> list[tuple[str, str]]:
    """(SOP Class UID, SOP Instance UID) of every object the KOS content references, in content order."""
    out = []
    for item in kos.ContentSequence:
        for ref in item.get("ReferencedSOPSequence", []):
            out.append((str(ref.ReferencedSOPClassUID), str(ref.ReferencedSOPInstanceUID)))
    return out
