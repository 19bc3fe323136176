"""Synthetic noncontrast pelvic CT phantoms with hip-bone and sacral-tumour labels.

Where things are (one module per concern):

| module | what |
|---|---|
| ``template``    | the real template pelvis (meshes in ``anatomy_data/``) as signed-distance fields; the local frame |
| ``params``      | the parameter records: patient, pelvis shape, bone look, implants, body, scan; label values |
| ``patient``     | drawing a patient: demographics, pelvic shape and pose, implants, body and normal findings |
| ``appearance``  | how bone looks on CT: marrow density by age and sex, cortex, trabecular texture, joints |
| ``anatomy``     | the body: deformed template bones, soft tissue, organs, distractors, metal (the paint list) |
| ``tumour``      | the sacral tumours: class-dependent demographics, placement, shape, interior (world "v1", default) |
| ``tumour_v2``   | tumour world "v2" (``tumour_world="v2"``): sourced probabilities, no tells, tumour behaviour |
| ``calibration`` | a tumour world's difficulty on the generator's parameters (oracle classifiers, no rendering) |
| ``acquisition`` | scan coverage, field of view, kernels, noise, beam hardening and metal streaks |
| ``render``      | painting the scene on the scan grid (partial volume) and acquiring it |
| ``dicom_io``    | writing DICOM series and NIfTI label maps |
| ``cohort``      | cohorts with a manifest; the clinical-only difficulty check |
| ``gallery``     | a contact sheet of random phantoms for a radiologist's look |

Label values: 0 background, 1 hip bone left (+x LPS), 2 hip bone right, 3 sacral tumour, 4 sacrum, 5 L5,
6 femur left, 7 femur right, 8 other vertebrae, 9 metal implant, 10 other bone (ribs, arms). The tumour label
wins over bone labels. All identifiers written (names, IDs, dates, accession numbers) are synthetic.
CLI: ``python -m training.phantom --help``.
"""
from training.phantom.acquisition import sample_scan
from training.phantom.cohort import clinical_features, clinical_only_auc, cohort_classes, generate_cohort
from training.phantom.dicom_io import study_uids, write_case
from training.phantom.params import (
    CLASS_PREVALENCE,
    LABELS,
    NO_TUMOUR,
    TUMOUR_CLASSES,
    PatientParams,
    ScanParams,
)
from training.phantom.patient import sample_patient
from training.phantom.render import render

__all__ = [
    "CLASS_PREVALENCE", "LABELS", "NO_TUMOUR", "TUMOUR_CLASSES", "PatientParams", "ScanParams",
    "clinical_features", "clinical_only_auc", "cohort_classes", "generate_cohort", "render", "sample_patient",
    "sample_scan", "study_uids", "write_case",
]
