"""Every coded concept that the DICOM outputs (SEG, TID 1500 SR) use, in one place.

Standard codes are taken from ``pydicom.sr.codedict.codes`` where pydicom has a keyword (so their values
and meanings are those of DICOM PS3.16); the others are written out with their source.

Private coding scheme ``99SACRAL`` (:data:`PRIVATE_SCHEME`): DICOM PS3.16 section 8 allows local coding
schemes whose designator starts with ``99``. It is declared in the Coding Scheme Identification Sequence
of every object this project writes (:data:`PRIVATE_SCHEME_ITEM`). It is used only for concepts with no
standard code found and verified:

* the hip-relative tumour location (u, v, w normalised in the hip-bone box; dx, dy, dz in mm),
* the class probabilities ("Probability of <tumour type>"),
* the concept names of the analysis status, warning and research-use disclaimer text items,
* three tumour types: chordoma, giant cell tumour of bone and neurogenic tumour. Their SNOMED CT
  concept ids could not be confirmed from two independent sources with the tools available when this
  was written: candidates seen once each were Schwannoma (morphologic abnormality) SCT 985004 (HL7
  Lithuania FHIR value set) and Giant cell tumor of bone (disorder) SCT 697970009 (VisualDx); nothing
  for chordoma. Replace them here once checked in a SNOMED CT browser (the code value is the only thing
  that changes; readers look codes up through this module).

Tumour types with standard codes (pydicom keywords, i.e. DICOM PS3.16): Chondrosarcoma SCT 1163016002,
Osteosarcoma SCT 1163405004, Metastasis SCT 128462008.
"""
from __future__ import annotations

import re
from typing import Any, cast

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99SACRAL"
PRIVATE_SCHEME_ITEM = CodingSchemeIdentificationItem(
    designator=PRIVATE_SCHEME,
    name="Sacral tumour AI private codes",
    version="1",
    responsible_organization="Sacral tumour MAP project (research use only)",
)


def _cc(code: Code) -> CodedConcept:
    return CodedConcept(code.value, code.scheme_designator, code.meaning)


def _private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


# ---------------------------------------------------------------- segmentation property codes (SEG)
HIP = _cc(codes.SCT.Hip)  # SCT 29836001 (no "hip bone" concept with a keyword; TotalSegmentator's choice)
LEFT = _cc(codes.SCT.Left)  # SCT 7771000
RIGHT = _cc(codes.SCT.Right)  # SCT 24028007
NEOPLASM = _cc(codes.SCT.Neoplasm)  # SCT 108369006
SACRUM = _cc(codes.SCT.Sacrum)  # SCT 54735007
ARTIFICIAL_INTELLIGENCE = _cc(codes.DCM.ArtificialIntelligence)  # DCM 123110 (CID 7162 algorithm family)

# ---------------------------------------------------------------- SR concept names and units
IMAGING_MEASUREMENT_REPORT = _cc(codes.DCM.ImagingMeasurementReport)  # DCM 126000
CT_PROCEDURE = _cc(codes.LN.CTUnspecifiedBodyRegion)  # LOINC 25045-6, CID 100
FINDING_SITE = _cc(codes.SCT.FindingSite)  # SCT 363698007
VOLUME = _cc(codes.SCT.Volume)  # SCT 118565006
#: DCM 126030 "Sum of segmented voxel method for volume" (CID 7474), the volume measurement method
SUM_OF_SEGMENTED_VOXEL_VOLUMES = _cc(codes.DCM.SumOfSegmentedVoxelMethodForVolume)
IMAGING_MEASUREMENTS = _cc(codes.DCM.ImagingMeasurements)  # DCM 126010
MEASUREMENT_GROUP = _cc(codes.DCM.MeasurementGroup)  # DCM 125007
TRACKING_IDENTIFIER = _cc(codes.DCM.TrackingIdentifier)  # DCM 112039
REFERENCED_SEGMENT = _cc(codes.DCM.ReferencedSegment)  # DCM 121191
FINDING = _cc(codes.DCM.Finding)  # DCM 121071 (TID 1411 "Finding" = finding type)
LATERALITY = _cc(codes.SCT.Laterality)  # SCT 272741003
CLASSIFICATION = _cc(codes.SCT.Classification)  # SCT 278201002 "Classification (attribute)"
PRESENT = _cc(codes.SCT.Present)  # SCT 52101004
ABSENT = _cc(codes.SCT.Absent)  # SCT 272519000
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500 row 12
SUMMARY = _cc(codes.DCM.Summary)  # DCM 121111
UNIT_ML = CodedConcept("mL", "UCUM", "milliliter")
UNIT_MM = CodedConcept("mm", "UCUM", "millimeter")
UNIT_ONE = CodedConcept("1", "UCUM", "no units")

# private concepts (99SACRAL)
LOCATION_U = _private("SAC-LOC-U", "Tumour centroid u in hip-bone frame (normalised)")
LOCATION_V = _private("SAC-LOC-V", "Tumour centroid v in hip-bone frame (normalised)")
LOCATION_W = _private("SAC-LOC-W", "Tumour centroid w in hip-bone frame (normalised)")
LOCATION_DX = _private("SAC-LOC-DX", "Tumour centroid dx from hip-bone frame origin")
LOCATION_DY = _private("SAC-LOC-DY", "Tumour centroid dy from hip-bone frame origin")
LOCATION_DZ = _private("SAC-LOC-DZ", "Tumour centroid dz from hip-bone frame origin")
LOCATION_NORMALISED = (LOCATION_U, LOCATION_V, LOCATION_W)
LOCATION_MM = (LOCATION_DX, LOCATION_DY, LOCATION_DZ)
ANALYSIS_STATUS = _private("SAC-STATUS", "Analysis status")
WARNING = _private("SAC-WARNING", "Warning")
DISCLAIMER = _private("SAC-DISCLAIMER", "Intended use statement")

# ---------------------------------------------------------------- Key Object Selection titles (CID 7010)
#: ``outputs.kos_title`` of app.yaml -> document title of the KOS (DICOM CID 7010 "Key Object Selection
#: Document Title"); PACS show these titles next to the flagged images.
KOS_TITLES: dict[str, CodedConcept] = {
    "of_interest": _cc(codes.DCM.OfInterest),  # DCM 113000
    "for_referring_provider": _cc(codes.DCM.ForReferringProvider),  # DCM 113002
    "for_physician_review": _cc(codes.DCM.ForPhysicianReview),  # DCM 128201
    "for_research": _cc(codes.DCM.ForResearch),  # DCM 113009
}

# ---------------------------------------------------------------- tumour types (classifier classes)
#: canonical class key -> tumour-type code. The keys are the class names that the SR reader returns.
TUMOUR_TYPE_CODES: dict[str, CodedConcept] = {
    "chordoma": _private("SAC-CHORDOMA", "Chordoma"),
    "chondrosarcoma": _cc(codes.SCT.Chondrosarcoma),  # SCT 1163016002
    "giant_cell_tumour": _private("SAC-GCTB", "Giant cell tumour of bone"),
    "metastasis": _cc(codes.SCT.Metastasis),  # SCT 128462008
    "neurogenic_tumour": _private("SAC-NEUROGENIC", "Neurogenic tumour"),
    "osteosarcoma": _cc(codes.SCT.Osteosarcoma),  # SCT 1163405004
}
#: canonical class key -> concept name of its probability measurement (unit UCUM "1").
PROBABILITY_CODES: dict[str, CodedConcept] = {
    "chordoma": _private("SAC-P-CHORDOMA", "Probability of chordoma"),
    "chondrosarcoma": _private("SAC-P-CHONDROSA", "Probability of chondrosarcoma"),
    "giant_cell_tumour": _private("SAC-P-GCTB", "Probability of giant cell tumour of bone"),
    "metastasis": _private("SAC-P-METASTASIS", "Probability of metastasis"),
    "neurogenic_tumour": _private("SAC-P-NEUROGENIC", "Probability of neurogenic tumour"),
    "osteosarcoma": _private("SAC-P-OSTEOSARC", "Probability of osteosarcoma"),
}

_ALIASES = {
    "chordoma": "chordoma",
    "chondrosarcoma": "chondrosarcoma",
    "giantcelltumour": "giant_cell_tumour", "giantcelltumourofbone": "giant_cell_tumour",
    "gct": "giant_cell_tumour", "gctb": "giant_cell_tumour",
    "metastasis": "metastasis", "metastases": "metastasis", "metastatic": "metastasis",
    "secondarymalignantneoplasmofbone": "metastasis",
    "neurogenictumour": "neurogenic_tumour", "neurogenic": "neurogenic_tumour",
    "schwannoma": "neurogenic_tumour", "neurilemmoma": "neurogenic_tumour",
    "osteosarcoma": "osteosarcoma",
}


def class_display_name(key: str) -> str:
    """The display name of a class key of the classifier's metadata: its words, the first capitalised
    (``giant_cell_tumour`` -> ``Giant cell tumour``). The class list itself is the classifier's metadata."""
    return key.replace("_", " ").capitalize()


def tumour_class_key(name: str) -> str:
    """Canonical key (a key of :data:`TUMOUR_TYPE_CODES`) of a class name as a model may spell it.

    Case, spaces, ``_``/``-`` and the US spelling "tumor" are ignored: ``"Giant cell tumor"`` ->
    ``"giant_cell_tumour"``. Raises ``ValueError`` for an unknown class.
    """
    norm = re.sub(r"[^a-z]", "", str(name).lower()).replace("tumor", "tumour")
    try:
        return _ALIASES[norm]
    except KeyError:
        raise ValueError(
            f"unknown tumour class {name!r}; known: {sorted(TUMOUR_TYPE_CODES)}") from None


def _standard_meanings() -> dict[tuple[str, str], frozenset[str]]:
    """(scheme, value) -> every meaning pydicom's code dictionary (DICOM PS3.16) gives that code."""
    from pydicom.sr._concepts_dict import concepts

    out: dict[tuple[str, str], set[str]] = {}
    for scheme, by_keyword in cast(dict[str, dict[str, dict[str, tuple[str, Any]]]], concepts).items():
        for entries in by_keyword.values():
            for value, (meaning, _cids) in entries.items():
                out.setdefault((scheme, value), set()).add(meaning)
    return {k: frozenset(v) for k, v in out.items()}


_MEANINGS: dict[tuple[str, str], frozenset[str]] | None = None


def standard_meanings(scheme: str, value: str) -> frozenset[str]:
    """The meanings that pydicom's dictionary (DICOM PS3.16) has for a code; empty if it lacks the code."""
    global _MEANINGS
    if _MEANINGS is None:
        _MEANINGS = _standard_meanings()
    return _MEANINGS.get((str(scheme), str(value)), frozenset())


def standard_code(scheme: str, value: str, meaning: str) -> CodedConcept:
    """A CodedConcept whose meaning is pydicom's (DICOM PS3.16) wherever pydicom has the code.

    ``meaning`` is kept when it is one of the dictionary's meanings for the code (some codes have several,
    e.g. SCT 29836001 "Hip" / "Hip region structure (body structure)") or when the code is not in the
    dictionary (private and UCUM codes); otherwise the dictionary's first meaning (sorted) replaces it.
    """
    known = standard_meanings(scheme, value)
    if known and meaning not in known:
        meaning = sorted(known)[0]
    return CodedConcept(str(value), str(scheme), str(meaning))


def normalise_meanings(ds: Dataset) -> int:
    """Give every coded item of a dataset (recursively) pydicom's meaning where pydicom has the code.

    Catches meanings that libraries write themselves (highdicom 0.28 writes DCM 121232 as "Source Series for
    Segmentation", PS3.16 says "Source series for segmentation"). Returns the number of meanings replaced.
    """
    changed = 0
    if "CodeValue" in ds and "CodingSchemeDesignator" in ds and "CodeMeaning" in ds:
        code = standard_code(str(ds.CodingSchemeDesignator), str(ds.CodeValue), str(ds.CodeMeaning))
        if code.meaning != str(ds.CodeMeaning):
            ds.CodeMeaning = code.meaning
            changed += 1
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                changed += normalise_meanings(item)
    return changed


def code_key(code: Any) -> tuple[str, str]:
    """(scheme designator, value): what identifies a code (the meaning is only its display text).

    Accepts a pydicom ``Code``, a highdicom ``CodedConcept`` or a plain code sequence item.
    """
    if hasattr(code, "scheme_designator"):
        return (str(code.scheme_designator), str(code.value))
    return (str(code.CodingSchemeDesignator), str(code.CodeValue))
