"""What a synthetic patient and a synthetic acquisition are: frozen parameter records.

A patient point ``p_local`` (pelvis-local mm, see :mod:`training.phantom.template`) maps to DICOM patient
coordinates (LPS mm) by ``p_LPS = R_roll(scan.rotation_deg) @ (patient.scale * p_local) + scan.table_offset_mm``.
Inside the local frame the bony pelvis is itself a deformed, tilted copy of the template
(:class:`PelvisShape`, :mod:`training.phantom.anatomy`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian

from core.volume import affine_from_dicom
from training.phantom.tumour import TumourParams

#: THE tumour class list, in the classifier's output order: the generator draws these, training writes them into
#: the classifier's metadata (``classes``), and the application, validation and reports read them there only
TUMOUR_CLASSES: tuple[str, ...] = (
    "metastasis", "chondrosarcoma", "osteosarcoma", "chordoma", "neurogenic_tumour", "giant_cell_tumour",
)
NO_TUMOUR = "none"
#: label values of the label map written beside each study (the tumour wins over bone labels)
LABELS: dict[str, int] = {
    "background": 0, "hip_left": 1, "hip_right": 2, "tumour": 3, "sacrum": 4, "L5": 5,
    "femur_left": 6, "femur_right": 7, "vertebra": 8, "implant": 9, "other_bone": 10,
}
#: relative prevalence used when ``sample_patient`` draws the class itself
CLASS_PREVALENCE: dict[str, float] = {
    "metastasis": 0.24, "chordoma": 0.22, "chondrosarcoma": 0.14, "osteosarcoma": 0.10,
    "neurogenic_tumour": 0.15, "giant_cell_tumour": 0.15,
}


@dataclass(frozen=True)
class PelvisShape:
    """How this patient's bony pelvis differs from the template (all in the pelvis-local frame).

    The template point ``q`` maps to the local point ``p = R(tilt, yaw, roll) @ A(q + v(q))`` where ``A`` scales
    by (``width``, ``depth``, ``height``) with ``subpubic`` widening below the acetabula and ``asymmetry`` making
    the left side larger (positive) or smaller, and ``v`` is a smooth random displacement field of RMS
    ``deform_mm`` drawn from ``deform_seed``.
    """

    width: float = 1.0            # lateral factor (female pelvis wider)
    depth: float = 1.0            # anteroposterior factor
    height: float = 1.0           # superoinferior factor
    subpubic: float = 0.0         # extra lateral widening of the lower pelvis (female subpubic angle), fraction
    asymmetry: float = 0.0        # left/right size difference, fraction (+: left larger)
    tilt_deg: float = 0.0         # pelvic tilt about L (+: anterior tilt, pubis down)
    yaw_deg: float = 0.0          # about P (one hip higher)
    roll_deg: float = 0.0         # about S, bones only (the scan's rotation_deg rolls the whole body)
    deform_mm: float = 0.0        # RMS of the smooth displacement field, mm
    deform_seed: int = 0
    lumbosacral: str = "normal"   # normal | transitional_left | transitional_right | transitional_both
    l5s1_disc_mm: float = 10.0    # disc height between L5 and S1 (degeneration narrows it)
    femoral_head_mm: float = 22.0 # femoral head radius before scale (template: about 18 mm after smoothing)


@dataclass(frozen=True)
class BoneLook:
    """How bone looks on CT (before partial volume, kernel and noise). Set by :func:`appearance.sample_bone`."""

    cortex_hu: float = 1400.0     # attenuation of compact cortical bone, HU
    cortex_mm: float = 1.5        # cortical thickness of the hip bones, mm
    marrow_hu: float = 220.0      # mean HU of cancellous bone (trabeculae + marrow); falls with age
    texture_hu: float = 50.0      # SD of the trabecular texture, HU
    texture_mm: float = 1.5       # grain of the trabecular texture, mm
    texture_seed: int = 0
    fat_islands: float = 0.0      # fraction of cancellous bone replaced by fatty marrow (-60..0 HU)
    si_gap_mm: float = 2.5        # sacroiliac joint space
    hip_gap_mm: float = 3.0       # hip joint space (femoral head to acetabulum)
    symphysis_gap_mm: float = 3.5
    sclerosis_hu: float = 0.0     # subchondral sclerosis along the SI and hip joints, HU added
    osteophytes: tuple[tuple[float, ...], ...] = ()   # (x, y, z, radius) local mm, bone attached to joints
    bridging: tuple[tuple[float, ...], ...] = ()      # (x0, y0, z0, x1, y1, z1, radius) ankylosing bridges


@dataclass(frozen=True)
class Implants:
    """Metal: hip prostheses and lumbosacral fixation."""

    hip_prosthesis: str = "none"  # none | left | right | both
    spinal_rods: bool = False     # pedicle screws L4-S1 with two rods
    metal_hu: float = 3071.0


@dataclass(frozen=True)
class Body:
    """Soft tissue, organs and the normal findings that must not be called a tumour."""

    fat_mm: float = 22.0          # subcutaneous fat thickness (local mm)
    body_width: float = 1.0       # soft-tissue envelope lateral factor
    visceral_fat: float = 0.5     # 0 lean .. 1 obese (pelvic fat between organs)
    muscle_hu: float = 50.0
    fat_hu: float = -100.0
    arms: str = "up"              # up (out of the field) | down (beside the pelvis)
    bladder_fill: float = 0.8     # 0.3 (almost empty) .. 1.3 (full)
    bowel: tuple[tuple[float, ...], ...] = ()   # (x0,y0,z0,x1,y1,z1,radius,gas_fraction,stool) capsules
    rectal_gas: float = 0.3
    rectal_stool: float = 0.3
    phleboliths: tuple[tuple[float, ...], ...] = ()   # (x, y, z, radius, hu)
    vascular_calcification: float = 0.0             # 0 none .. 1 heavy (iliac arteries)
    lymph_nodes: tuple[tuple[float, ...], ...] = ()   # (x, y, z, radius)
    organ_seed: int = 0


@dataclass(frozen=True)
class PatientParams:
    """Everything about the patient. Geometry in pelvis-local mm (before ``scale``)."""

    case_id: str
    age: int                      # years at the study date
    sex: str                      # "M" / "F"
    tumour_class: str             # one of TUMOUR_CLASSES or "none"
    scale: float = 1.0            # patient size factor (~0.85-1.2), about the pelvis-local origin
    shape: PelvisShape = field(default_factory=PelvisShape)
    bone: BoneLook = field(default_factory=BoneLook)
    implants: Implants = field(default_factory=Implants)
    body: Body = field(default_factory=Body)
    tumour: TumourParams | None = None
    # synthetic identifiers
    patient_name: str = "PHANTOM^C0000"
    patient_id: str = "PHC0000"
    birth_date: str = "19700101"  # YYYYMMDD, consistent with age and study_date
    study_date: str = "20200101"
    study_time: str = "120000"
    accession_number: str = "A00000000"
    uid_seed: str = "0"           # entropy for the deterministic DICOM UIDs

    @property
    def has_tumour(self) -> bool:
        return self.tumour_class != NO_TUMOUR and self.tumour is not None

    @property
    def tumour_volume_ml_analytic(self) -> float:
        """Physical tumour volume in mL from the analytic shape (scale applied); 0 without a tumour."""
        return self.tumour.volume_ml(self.scale) if self.tumour is not None else 0.0

    @property
    def tumour_centre_mm(self) -> tuple[float, float, float]:
        """Tumour centre (local mm); the origin without a tumour."""
        return self.tumour.centre_mm if self.tumour is not None else (0.0, 0.0, 0.0)

    def local_to_lps(self, scan: "ScanParams", pts_local: np.ndarray) -> np.ndarray:
        """Map (N, 3) pelvis-local mm points to LPS mm for this patient on ``scan``."""
        pts = np.atleast_2d(np.asarray(pts_local, float))
        return pts @ (scan.rotation_matrix * self.scale).T + np.asarray(scan.table_offset_mm, float)


@dataclass(frozen=True)
class ScanParams:
    """Everything about the acquisition.

    The image grid is axial, centred in-plane on LPS (0, 0) + ``recon_centre_mm``; slice ``k`` lies at LPS
    z = ``z_range_mm[0] + k * slice_spacing_mm + table_offset_mm[2]``: ``z_range_mm`` is the coverage in physical
    mm along S relative to the table offset (i.e. relative to the pelvis-local origin, NOT scaled by the patient's
    ``scale``), so it moves with the table. Rendering is always head-first on the LPS grid; ``patient_position``
    FFS only changes how the DICOM series is written (image columns run to the patient's right).
    """

    matrix: int = 128
    pixel_spacing_mm: float = 3.0
    slice_spacing_mm: float = 3.0
    slice_thickness_mm: float = 3.0
    z_range_mm: tuple[float, float] = (-125.0, 130.0)
    table_offset_mm: tuple[float, float, float] = (0.0, 0.0, -200.0)
    rotation_deg: float = 0.0     # roll of the whole patient about S
    recon_centre_mm: tuple[float, float] = (0.0, 0.0)
    noise_hu: float = 14.0        # noise SD in a uniform region, HU
    noise_grain_px: float = 0.6   # correlation length of the noise texture (iterative reconstruction: larger)
    noise_seed: int = 0
    kernel: str = "STANDARD"
    kernel_sigma_px: float = 0.6  # in-plane blur of the reconstruction kernel, pixels
    kernel_sharpening: float = 0.0  # edge enhancement of sharp (bone) kernels, 0..1.5
    beam_hardening: float = 0.0   # strength of dark streaks between dense objects, 0..1
    kvp: float = 120.0
    contrast: bool = False
    contrast_agent: str = "IOPAMIDOL"
    pixel_representation: int = 0   # 0: unsigned + intercept -1024; 1: signed, intercept 0
    transfer_syntax_uid: str = str(ExplicitVRLittleEndian)
    manufacturer: str = "GE MEDICAL SYSTEMS"
    model: str = "LightSpeed VCT"
    institution: str = "Phantom General Hospital B"
    site: str = "SITE_B"
    series_number: int = 2
    series_description: str = "PELVIS 3.0 NONCONTRAST"
    table_height_mm: float = 150.0
    table_shape: str = "curved"   # curved | flat | thick
    patient_position: str = "HFS"  # HFS | FFS
    coverage: str = "pelvis"      # pelvis | abdomen_pelvis | cut_acetabulum | cut_iliac_wing (what was drawn)

    @property
    def n_slices(self) -> int:
        z0, z1 = self.z_range_mm
        return int(math.floor((z1 - z0) / self.slice_spacing_mm + 1e-6)) + 1

    @property
    def fov_mm(self) -> float:
        return self.matrix * self.pixel_spacing_mm

    @property
    def rotation_matrix(self) -> np.ndarray:
        t = math.radians(self.rotation_deg)
        c, s = math.cos(t), math.sin(t)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    @property
    def origin_lps(self) -> np.ndarray:
        """LPS position (mm) of the centre of voxel (0, 0, 0) of the rendered (head-first) grid."""
        half = (self.matrix - 1) / 2.0 * self.pixel_spacing_mm
        return np.array([self.recon_centre_mm[0] - half, self.recon_centre_mm[1] - half,
                         self.z_range_mm[0] + self.table_offset_mm[2]])

    @property
    def affine(self) -> np.ndarray:
        """D-H-W index -> LPS mm affine of the rendered grid."""
        return affine_from_dicom(self.origin_lps, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                                 np.array([0, 0, 1.0]), (self.pixel_spacing_mm, self.pixel_spacing_mm),
                                 self.slice_spacing_mm)

    def with_matrix(self, matrix: int) -> "ScanParams":
        """Same field of view with another matrix size."""
        return replace(self, matrix=int(matrix), pixel_spacing_mm=self.fov_mm / int(matrix))
