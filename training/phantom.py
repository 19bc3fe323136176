"""Synthetic noncontrast pelvic CT phantoms with hip-bone and sacral-tumour labels.

Anatomy is defined analytically (approximate signed-distance functions) in a **pelvis-local frame**:
millimetres, origin midway between the two hip bones (centre of their bounding box at scale 1), axes
L (x, patient left), P (y, posterior), S (z, head).  A patient point maps to DICOM patient space (LPS, mm) by

    p_LPS = R_z(scan.rotation_deg) @ (patient.scale * p_local) + scan.table_offset_mm

Rendering evaluates the shapes at every voxel centre (vectorised numpy, slabs of slices), with analytic
partial-volume (box-filtered signed distance), Gaussian slice-profile blur along z, kernel blur and noise.

Label values: 0 background, 1 hip bone left (+x LPS), 2 hip bone right, 3 sacral tumour, 4 sacrum (with
coccyx), 5 L5 vertebra, 6 femur left, 7 femur right.  The tumour label wins over bone labels.

Public API: :class:`PatientParams`, :class:`ScanParams`, :func:`sample_patient`, :func:`sample_scan`,
:func:`render`, :func:`write_case`, :func:`generate_cohort`; CLI ``python -m training.phantom --help``.
All identifiers written (names, IDs, dates, accession numbers) are synthetic.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)
from scipy import ndimage

from core.volume import Volume, affine_from_dicom, to_sitk

log = logging.getLogger(__name__)

TUMOUR_CLASSES: tuple[str, ...] = (
    "metastasis", "chondrosarcoma", "osteosarcoma", "chordoma", "neurogenic_tumour", "giant_cell_tumour",
)
NO_TUMOUR = "none"
LABELS: dict[str, int] = {
    "background": 0, "hip_left": 1, "hip_right": 2, "tumour": 3, "sacrum": 4, "L5": 5,
    "femur_left": 6, "femur_right": 7,
}
#: relative prevalence used when ``sample_patient`` draws the class itself
CLASS_PREVALENCE: dict[str, float] = {
    "metastasis": 0.24, "chordoma": 0.22, "chondrosarcoma": 0.14, "osteosarcoma": 0.10,
    "neurogenic_tumour": 0.15, "giant_cell_tumour": 0.15,
}
MANIFEST_COLUMNS: tuple[str, ...] = (
    "case_id", "tumour_class", "age", "sex", "dicom_dir", "label_path", "tumour_volume_ml",
    "tumour_volume_ml_analytic", "tumour_centroid_lps_x", "tumour_centroid_lps_y", "tumour_centroid_lps_z",
    "tumour_matrix", "tumour_margin", "tumour_site", "tumour_typical_location", "tumour_typical_matrix",
    "scale", "rows", "cols", "n_slices", "pixel_spacing_mm", "slice_spacing_mm", "slice_thickness_mm",
    "rotation_deg", "table_offset_x_mm", "table_offset_y_mm", "table_offset_z_mm",
    "manufacturer", "model", "site", "kernel", "transfer_syntax", "pixel_representation",
    "study_instance_uid", "series_instance_uid", "frame_of_reference_uid", "extra_series",
)

# (manufacturer, model, kernels, institution, station, software) per synthetic site
_SITES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "SITE_A": ("SIEMENS", "SOMATOM Definition AS+", ("B30f", "I30f\\2"), "Phantom University Hospital A"),
    "SITE_B": ("GE MEDICAL SYSTEMS", "LightSpeed VCT", ("STANDARD", "SOFT"), "Phantom General Hospital B"),
    "SITE_C": ("Philips", "iCT 256", ("B", "C"), "Phantom Medical Centre C"),
    "SITE_D": ("TOSHIBA", "Aquilion ONE", ("FC08", "FC13"), "Phantom Clinic D"),
}
_TRANSFER_SYNTAXES = {
    "explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian,
    "jpeg2000": JPEG2000Lossless, "j2k": JPEG2000Lossless, "rle": RLELossless,
}


# ----------------------------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatientParams:
    """Everything about the patient and the tumour. Geometry in pelvis-local mm (before ``scale``).

    ``tumour_*`` fields are ignored when ``tumour_class == "none"``. Tumour radii are local mm; the physical
    tumour volume is ``tumour_volume_ml_analytic`` (ellipsoid, scale applied, lobulation ignored).
    """

    case_id: str
    age: int                      # years at the study date
    sex: str                      # "M" / "F"
    tumour_class: str             # one of TUMOUR_CLASSES or "none"
    scale: float = 1.0            # patient size factor (~0.85-1.2), about the pelvis-local origin
    # anatomy jitter
    pelvis_width: float = 1.0     # lateral factor of the bony pelvis (female pelvis wider)
    sacral_slope: float = 1.0     # factor on the posterior sweep of the sacrum (tilt)
    femoral_head_mm: float = 24.0
    fat_mm: float = 22.0          # subcutaneous fat thickness (local mm)
    body_width: float = 1.0       # soft-tissue envelope lateral factor
    bladder_fill: float = 0.8     # 0.3 (almost empty) .. 1.3 (full)
    bowel: tuple[tuple[float, ...], ...] = ()   # (x0,y0,z0,x1,y1,z1,radius,gas_fraction) capsules
    rectal_gas: float = 0.3
    # tumour (pelvis-local mm)
    tumour_centre_mm: tuple[float, float, float] = (0.0, 60.0, 30.0)
    tumour_radii_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tumour_angle_deg: float = 0.0                      # in-plane rotation of the ellipsoid axes
    tumour_lobes: tuple[tuple[float, float, float, float], ...] = ()   # (ux, uy, uz, amplitude)
    tumour_lobe_factor: float = 1.0   # volume of the lobulated shape / volume of the ellipsoid
    tumour_matrix: str = "none"   # lytic | lytic_specks | soft | sclerotic | mixed | chondroid | osteoid
    tumour_margin: str = "well"   # well | ill
    tumour_base_hu: float = 35.0
    tumour_shell_hu: float = 0.0  # thin expansile shell / sclerotic rim HU (0: none)
    tumour_elements: tuple[tuple[float, ...], ...] = ()  # (dx,dy,dz,r,kind,hu,nx,ny,nz); kind 0 speck 1 arc 2 cloud 3 cyst
    tumour_typical_location: bool = True
    tumour_typical_matrix: bool = True
    tumour_site: str = ""
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
        return self.tumour_class != NO_TUMOUR

    @property
    def tumour_volume_ml_analytic(self) -> float:
        """Physical tumour volume in mL from the analytic shape (ellipsoid radii x lobulation factor, scale
        applied); 0 without a tumour."""
        if not self.has_tumour:
            return 0.0
        a, b, c = self.tumour_radii_mm
        return float(4.0 / 3.0 * math.pi * a * b * c * self.tumour_lobe_factor * self.scale ** 3 / 1000.0)

    def local_to_lps(self, scan: "ScanParams", pts_local: np.ndarray) -> np.ndarray:
        """Map (N, 3) pelvis-local mm points to LPS mm for this patient on ``scan``."""
        pts = np.atleast_2d(np.asarray(pts_local, float))
        return pts @ (scan.rotation_matrix * self.scale).T + np.asarray(scan.table_offset_mm, float)


@dataclass(frozen=True)
class ScanParams:
    """Everything about the acquisition.

    The image grid is axial (IOP 1,0,0,0,1,0), centred in-plane on LPS (0, 0) + ``recon_centre_mm``; slice ``k``
    lies at LPS z = ``z_range_mm[0] + k * slice_spacing_mm + table_offset_mm[2]``: ``z_range_mm`` is the coverage
    in physical mm along S relative to the table offset (i.e. relative to the pelvis-local origin, NOT scaled by
    the patient's ``scale``), so it moves with the table.
    """

    matrix: int = 128
    pixel_spacing_mm: float = 3.0
    slice_spacing_mm: float = 3.0
    slice_thickness_mm: float = 3.0
    z_range_mm: tuple[float, float] = (-125.0, 130.0)
    table_offset_mm: tuple[float, float, float] = (0.0, 0.0, -200.0)
    rotation_deg: float = 0.0
    recon_centre_mm: tuple[float, float] = (0.0, 0.0)
    noise_hu: float = 14.0
    noise_seed: int = 0
    kernel: str = "STANDARD"
    kernel_sigma_px: float = 0.6
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
        """LPS position (mm) of the centre of voxel (0, 0, 0) = ImagePositionPatient of the first slice."""
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


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------
def _clip(v: float, lo: float, hi: float) -> float:
    return float(min(max(v, lo), hi))


# age: (mean, sd, min, max) per class; osteosarcoma is a young/old mixture (primary / secondary)
_AGE = {"metastasis": (63, 12, 30, 90), "chordoma": (58, 13, 25, 88), "chondrosarcoma": (50, 14, 18, 85),
        "neurogenic_tumour": (46, 14, 16, 82), "giant_cell_tumour": (35, 11, 14, 72), NO_TUMOUR: (55, 16, 18, 90)}
_OSTEO_AGE = (0.62, (23, 8), (54, 15))   # P(young), young (mean, sd), older (mean, sd)


def _sample_age(rng: np.random.Generator, cls: str) -> int:
    if cls == "osteosarcoma":
        p_young, young, old = _OSTEO_AGE
        a = rng.normal(*young) if rng.random() < p_young else rng.normal(*old)
        return int(round(_clip(a, 9, 85)))
    mu, sd, lo, hi = _AGE[cls]
    return int(round(_clip(rng.normal(mu, sd), lo, hi)))


_P_MALE = {"metastasis": 0.55, "chordoma": 0.63, "chondrosarcoma": 0.6, "osteosarcoma": 0.56,
           "neurogenic_tumour": 0.48, "giant_cell_tumour": 0.4, NO_TUMOUR: 0.5}
# median volume (mL) and log-sd per class
_VOLUME = {"metastasis": (90.0, 0.8), "chordoma": (170.0, 0.8), "chondrosarcoma": (220.0, 0.8),
           "osteosarcoma": (180.0, 0.8), "neurogenic_tumour": (100.0, 0.8), "giant_cell_tumour": (140.0, 0.8)}
_TYPICAL_MATRIX = {"metastasis": None, "chordoma": "lytic_specks", "chondrosarcoma": "chondroid",
                   "osteosarcoma": "osteoid", "neurogenic_tumour": "soft", "giant_cell_tumour": "lytic"}
# matrices an atypical case of each class borrows (radiological mimics)
_MIMIC_MATRIX = {"metastasis": ("lytic_specks", "chondroid", "osteoid"), "chordoma": ("chondroid", "lytic", "soft"),
                 "chondrosarcoma": ("lytic_specks", "lytic", "osteoid"), "osteosarcoma": ("sclerotic", "mixed", "chondroid"),
                 "neurogenic_tumour": ("lytic", "lytic_specks"), "giant_cell_tumour": ("soft", "lytic_specks", "mixed")}
P_TYPICAL_LOCATION = 0.75
P_TYPICAL_MATRIX = 0.78


class _Sacrum:
    """Analytic sacrum geometry (pelvis-local mm) shared by the renderer and tumour placement."""

    Z_TOP, Z_BOT = 64.0, -48.0
    FORAMINA_Z = (50.0, 31.0, 14.0, -1.0)

    def __init__(self, pelvis_width: float, slope: float) -> None:
        self.pw, self.slope = pelvis_width, slope

    def s(self, z):  # 0 at S1 top, 1 at coccyx tip
        return np.clip((self.Z_TOP - z) / (self.Z_TOP - self.Z_BOT), 0.0, 1.0)

    def yc(self, z):
        s = self.s(z)
        return 52.0 + 45.0 * self.slope * s - 15.0 * s * s

    def hw(self, z):
        s = self.s(z)
        return (50.0 * (1.0 - s) ** 0.8 + 7.0) * self.pw

    def hd(self, z):
        return 21.0 * (1.0 - 0.65 * self.s(z))

    def foramen_x(self, i: int) -> float:
        return (27.0 - 3.0 * i) * self.pw

    def point(self, level: float, lateral: float, ap: float) -> tuple[float, float, float]:
        """Local point at sacral ``level`` (0 S1 top .. 1 coccyx tip), ``lateral`` (fraction of half-width, +
        = left) and ``ap`` (fraction of half-depth from the centre line, + = posterior)."""
        z = self.Z_TOP - level * (self.Z_TOP - self.Z_BOT)
        return (float(lateral * self.hw(z)), float(self.yc(z) + ap * self.hd(z)), float(z))


def _level_name(level: float) -> str:
    seg = ["S1", "S1", "S2", "S2", "S3", "S4", "S5", "Co", "Co", "Co"][min(int(level * 10), 9)]
    return seg


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / (np.linalg.norm(v) + 1e-9)


def _sample_tumour(rng: np.random.Generator, cls: str, sac: _Sacrum, scale: float) -> dict[str, Any]:
    med, lsd = _VOLUME[cls]
    vol_ml = _clip(med * math.exp(rng.normal(0.0, lsd)), 8.0, 700.0)
    typical_loc = bool(rng.random() < P_TYPICAL_LOCATION)
    typical_mat = bool(rng.random() < P_TYPICAL_MATRIX)
    side = 1.0 if rng.random() < 0.5 else -1.0
    aspect = np.exp(rng.normal(0.0, 0.15, size=3))
    lobes: list[tuple[float, float, float, float]] = []
    margin, shell, base = "well", 0.0, 35.0
    if not typical_loc:
        level, lat, ap = rng.uniform(0.0, 0.9), rng.uniform(-1.0, 1.0), rng.uniform(-1.2, 0.5)
    elif cls == "chordoma":
        level, lat, ap = rng.uniform(0.55, 0.95), rng.normal(0.0, 0.15), rng.uniform(-1.4, -0.6)
        aspect = aspect * np.array([0.9, 1.1, 1.1])
    elif cls == "giant_cell_tumour":
        level, lat, ap = rng.uniform(0.0, 0.35), side * rng.uniform(0.35, 0.8), rng.uniform(-0.3, 0.3)
    elif cls == "neurogenic_tumour":
        fi = int(rng.choice(4, p=[0.35, 0.3, 0.2, 0.15]))
        z = sac.FORAMINA_Z[fi]
        level = float(sac.s(z))
        lat = side * sac.foramen_x(fi) / float(sac.hw(z))
        ap = -rng.uniform(0.6, 1.5)
    elif cls == "chondrosarcoma":
        level, lat, ap = rng.uniform(0.0, 0.5), side * rng.uniform(0.6, 1.1), rng.uniform(-0.5, 0.5)
    elif cls == "osteosarcoma":
        level, lat, ap = rng.uniform(0.0, 0.6), rng.normal(0.0, 0.5), rng.uniform(-0.6, 0.3)
    else:  # metastasis: anywhere in the sacrum
        level, lat, ap = rng.uniform(0.0, 0.8), rng.uniform(-0.9, 0.9), rng.uniform(-0.4, 0.4)
    centre = sac.point(level, lat, ap)

    matrix = _TYPICAL_MATRIX[cls]
    if cls == "metastasis":
        matrix = str(rng.choice(["lytic", "sclerotic", "mixed"], p=[0.55, 0.25, 0.2]))
    if not typical_mat:
        matrix = str(rng.choice(_MIMIC_MATRIX[cls]))
    # margins and shape, class-typical with overlap
    p_ill = {"metastasis": 0.6, "osteosarcoma": 0.7, "chordoma": 0.25, "chondrosarcoma": 0.3,
             "neurogenic_tumour": 0.05, "giant_cell_tumour": 0.15}[cls]
    margin = "ill" if rng.random() < p_ill else "well"
    n_lobes, lobe_amp = {"chondrosarcoma": (5, (0.15, 0.3)), "chordoma": (4, (0.1, 0.25)),
                         "osteosarcoma": (3, (0.05, 0.2)), "metastasis": (3, (0.05, 0.15)),
                         "giant_cell_tumour": (2, (0.0, 0.08)), "neurogenic_tumour": (0, (0.0, 0.0))}[cls]
    if cls == "neurogenic_tumour":
        aspect = np.exp(rng.normal(0.0, 0.05, size=3))
    for _ in range(n_lobes):
        u = _random_unit(rng)
        lobes.append((float(u[0]), float(u[1]), float(u[2]), float(rng.uniform(*lobe_amp))))
    aspect = aspect / np.prod(aspect) ** (1.0 / 3.0)
    angle = float(rng.uniform(-30, 30))
    # lobulation changes the volume: measure it (fixed Monte-Carlo points) and rescale the radii so the
    # lobulated tumour has the drawn volume
    unit = _lobulated((0, 0, 0), aspect, angle, lobes)
    ext = np.array([max(aspect[:2])] * 2 + [aspect[2]]) * (1.0 + sum(lb[3] for lb in lobes)) * 1.05
    pts = ((np.random.default_rng(12345).random((16000, 3)) * 2 - 1) * ext).astype(np.float32)
    frac = float(np.mean(unit.sdf(pts[:, 0], pts[:, 1], pts[:, 2]) < 0)) * float(np.prod(2 * ext))
    lobe_factor = frac / (4.0 / 3.0 * math.pi * float(np.prod(aspect)))
    r_eq = (3.0 * vol_ml * 1000.0 / (4.0 * math.pi * lobe_factor)) ** (1.0 / 3.0) / scale
    radii = tuple(float(r_eq * a) for a in aspect)

    base = {"lytic": rng.uniform(30, 50), "lytic_specks": rng.uniform(18, 35), "soft": rng.uniform(24, 36),
            "sclerotic": rng.uniform(450, 850), "mixed": rng.uniform(35, 60), "chondroid": rng.uniform(8, 25),
            "osteoid": rng.uniform(50, 110)}[matrix]
    if cls == "giant_cell_tumour" or (matrix == "lytic" and rng.random() < 0.3):
        shell = rng.uniform(350, 650)  # thin expansile shell
    elif cls == "neurogenic_tumour" and rng.random() < 0.5:
        shell = rng.uniform(250, 450)  # sclerotic rim of an expanded foramen
    rmin = min(radii)
    elements: list[tuple[float, ...]] = []

    def inside_point(frac: float) -> np.ndarray:
        u = _random_unit(rng) * rng.uniform(0.0, 1.0) ** (1.0 / 3.0) * frac
        return u * np.asarray(radii)

    if matrix == "lytic_specks":
        for _ in range(int(rng.integers(4, 14))):
            p = inside_point(0.85)
            elements.append((*p, rng.uniform(1.0, 2.2), 0, rng.uniform(300, 700), 0, 0, 1))
    elif matrix == "chondroid":
        for _ in range(int(rng.integers(8, 22))):
            p, n = inside_point(0.85), _random_unit(rng)
            elements.append((*p, rng.uniform(2.5, 6.0), 1, rng.uniform(450, 950), *n))
    elif matrix == "osteoid":
        for _ in range(int(rng.integers(3, 7))):
            p = inside_point(0.6)
            elements.append((*p, rng.uniform(0.25, 0.45) * rmin, 2, rng.uniform(500, 1000), 0, 0, 1))
    elif matrix == "mixed":
        for _ in range(int(rng.integers(3, 8))):
            p = inside_point(0.8)
            elements.append((*p, rng.uniform(0.12, 0.25) * rmin, 2, rng.uniform(350, 700), 0, 0, 1))
    if matrix == "soft" and rng.random() < 0.35:  # cystic degeneration
        p = inside_point(0.4)
        elements.append((*p, rng.uniform(0.3, 0.5) * rmin, 3, rng.uniform(5, 15), 0, 0, 1))
    lr = "midline" if abs(lat) < 0.25 else ("left" if lat > 0 else "right")
    site = f"{_level_name(level)} {lr} {'presacral' if ap < -1.0 else 'intraosseous'}"
    return dict(tumour_centre_mm=centre, tumour_radii_mm=radii, tumour_angle_deg=angle,
                tumour_lobe_factor=float(lobe_factor),
                tumour_lobes=tuple(lobes), tumour_matrix=matrix, tumour_margin=margin, tumour_base_hu=float(base),
                tumour_shell_hu=float(shell), tumour_elements=tuple(tuple(float(v) for v in e) for e in elements),
                tumour_typical_location=typical_loc, tumour_typical_matrix=typical_mat, tumour_site=site)


def sample_patient(rng: np.random.Generator, case_id: str, tumour_class: str | None = None) -> PatientParams:
    """Draw a synthetic patient.

    Args:
        rng: source of randomness (the only one used: same state -> same patient).
        case_id: identifier used for synthetic names/IDs (e.g. ``"C0001"``).
        tumour_class: one of :data:`TUMOUR_CLASSES`, ``"none"``, or None to draw a tumour class by
            :data:`CLASS_PREVALENCE`.
    """
    if tumour_class is None:
        names = list(CLASS_PREVALENCE)
        p = np.array([CLASS_PREVALENCE[k] for k in names])
        tumour_class = str(rng.choice(names, p=p / p.sum()))
    if tumour_class not in TUMOUR_CLASSES and tumour_class != NO_TUMOUR:
        raise ValueError(f"unknown tumour class {tumour_class!r}; expected one of {TUMOUR_CLASSES} or 'none'")
    age = _sample_age(rng, tumour_class)
    sex = "M" if rng.random() < _P_MALE[tumour_class] else "F"
    scale = rng.normal(1.04 if sex == "M" else 0.97, 0.06)
    if age < 16:
        scale -= 0.012 * (16 - age)
    scale = _clip(scale, 0.85, 1.2)
    pw = _clip(rng.normal(0.98 if sex == "M" else 1.05, 0.03), 0.9, 1.12)
    slope = _clip(rng.normal(1.0, 0.1), 0.75, 1.25)
    head = _clip(rng.normal(24.5 if sex == "M" else 22.0, 1.2), 19.0, 27.0)
    fat = _clip(rng.lognormal(math.log(20.0 if sex == "M" else 28.0), 0.35), 6.0, 55.0)
    body_w = _clip(rng.normal(1.0, 0.04), 0.9, 1.1)
    bladder = _clip(rng.uniform(0.3, 1.3), 0.3, 1.3)
    bowel = []
    for _ in range(int(rng.integers(5, 10))):
        p0 = np.array([rng.uniform(-90, 90), rng.uniform(-80, 5), rng.uniform(20, 125)])
        p1 = p0 + _random_unit(rng) * rng.uniform(15, 50)
        p1[2] = max(p1[2], 15.0)
        gas = float(rng.choice([0.0, 0.0, 0.3, 0.6, 1.0]))
        bowel.append((*map(float, p0), *map(float, p1), float(rng.uniform(10, 17)), gas))
    rectal_gas = float(rng.uniform(0.0, 0.6))

    tum: dict[str, Any] = {}
    if tumour_class != NO_TUMOUR:
        tum = _sample_tumour(rng, tumour_class, _Sacrum(pw, slope), scale)

    study = _dt.date(2012, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 12 * 365)))
    try:
        anniv = study.replace(year=study.year - age)
    except ValueError:  # 29 February
        anniv = study.replace(year=study.year - age, day=28)
    birth = anniv - _dt.timedelta(days=int(rng.integers(0, 365)))
    hh, mm, ss = int(rng.integers(7, 20)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    return PatientParams(
        case_id=case_id, age=age, sex=sex, tumour_class=tumour_class, scale=float(scale), pelvis_width=pw,
        sacral_slope=slope, femoral_head_mm=head, fat_mm=fat, body_width=body_w, bladder_fill=bladder,
        bowel=tuple(bowel), rectal_gas=rectal_gas, **tum,
        patient_name=f"PHANTOM^{case_id}", patient_id=f"PH{case_id}", birth_date=birth.strftime("%Y%m%d"),
        study_date=study.strftime("%Y%m%d"), study_time=f"{hh:02d}{mm:02d}{ss:02d}",
        accession_number=f"A{int(rng.integers(0, 10**8)):08d}", uid_seed=f"{int(rng.integers(0, 2**62)):x}",
    )


#: local z extent of the hip bones (bottom of the ischial tuberosity, top of the iliac crest) at scale 1
HIP_Z_EXTENT = (-97.0, 89.0)


def sample_scan(rng: np.random.Generator, patient: PatientParams, full_size: bool = False) -> ScanParams:
    """Draw acquisition parameters for ``patient``.

    Default: 128x128, ~2.7-3.9 mm pixels, slice spacing 2-5 mm, coverage from above L5 to below the ischium
    with margins that keep the hip bones inside even if the patient is later rendered 15 % larger.
    ``full_size``: 512x512, ~0.66-0.9 mm pixels, 1 mm slices, >= 300 slices.
    """
    s = patient.scale
    site = str(rng.choice(list(_SITES)))
    manufacturer, model, kernels, institution = _SITES[site]
    kernel_i = int(rng.integers(0, len(kernels)))
    half_bony = 150.0 * patient.pelvis_width * s
    tx, ty = rng.uniform(-20, 20), rng.uniform(-25, 25)
    tz = rng.uniform(-450, 50)
    rot = _clip(rng.normal(0, 4), -10, 10)
    lo = HIP_Z_EXTENT[0] * s - rng.uniform(24, 45)
    hi = max(105.0 * s, HIP_Z_EXTENT[1] * s * 1.16) + rng.uniform(10, 30)
    if full_size:
        matrix = 512
        fov = _clip(2 * half_bony + rng.uniform(20, 80), 340.0, 460.0)
        spacing = thickness = 1.0
        length = hi - lo
        if length < 305:
            extra = 305 - length
            lo -= extra * 0.5
            hi += extra * 0.5
    else:
        matrix = 128
        fov = _clip(2 * half_bony + rng.uniform(20, 80), 340.0, 500.0)
        spacing = float(rng.choice([2.0, 2.5, 3.0, 3.0, 4.0, 5.0]))
        cands = [spacing, min(5.0, spacing + 1.0)] + ([1.0] if spacing == 2.0 else [])
        thickness = float(rng.choice(cands))
    ps = round(fov / matrix, 4)
    lo = round(lo, 1)
    n = int(math.ceil((hi - lo) / spacing)) + 1
    hi = lo + (n - 1) * spacing
    noise = _clip(rng.normal(14.0, 2.5) * s ** 1.5 * (3.0 / max(thickness, 1.0)) ** 0.25, 9.0, 26.0)
    ts = f"{thickness:g}"
    return ScanParams(
        matrix=matrix, pixel_spacing_mm=ps, slice_spacing_mm=spacing, slice_thickness_mm=thickness,
        z_range_mm=(float(lo), float(hi)), table_offset_mm=(round(tx, 2), round(ty, 2), round(tz, 1)),
        rotation_deg=round(rot, 2), recon_centre_mm=(0.0, 0.0), noise_hu=round(noise, 2),
        noise_seed=int(rng.integers(0, 2**31)), kernel=kernels[kernel_i],
        kernel_sigma_px=0.8 if kernel_i == 1 else 0.6, kvp=float(rng.choice([120.0, 120.0, 100.0, 140.0])),
        contrast=False, manufacturer=manufacturer, model=model, institution=institution, site=site,
        series_number=2, series_description=f"PELVIS {ts}mm NONCONTRAST",
        table_height_mm=round(float(150.0 - ty), 1),
    )


# ----------------------------------------------------------------------------------------------------------------
# Implicit shapes (local mm; negative inside). X, Y broadcast as (1, h, w), Z as (d, 1, 1)
# ----------------------------------------------------------------------------------------------------------------
BBox = tuple[float, float, float, float, float, float]   # xmin, xmax, ymin, ymax, zmin, zmax


def _ell_sdf(u, v, w, a, b, c):
    """Approximate signed distance to an axis-aligned ellipsoid (Quilez)."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2 + (w / (c * c)) ** 2)
    return k0 * (k0 - 1.0) / (k1 + 1e-6)


def _ell2_sdf(u, v, a, b):
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
    return k0 * (k0 - 1.0) / (k1 + 1e-6)


class Prim:
    bbox: BBox

    def sdf(self, X, Y, Z):  # pragma: no cover - interface
        raise NotImplementedError


class Ellipsoid(Prim):
    def __init__(self, c, r):
        self.c, self.r = np.asarray(c, np.float32), np.asarray(r, np.float32)
        self.bbox = (c[0] - r[0], c[0] + r[0], c[1] - r[1], c[1] + r[1], c[2] - r[2], c[2] + r[2])

    def sdf(self, X, Y, Z):
        return _ell_sdf(X - self.c[0], Y - self.c[1], Z - self.c[2], *self.r)


class Capsule(Prim):
    def __init__(self, a, b, r):
        self.a, self.b, self.r = np.asarray(a, np.float32), np.asarray(b, np.float32), float(r)
        lo, hi = np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r
        self.bbox = (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])

    def sdf(self, X, Y, Z):
        ba = self.b - self.a
        px, py, pz = X - self.a[0], Y - self.a[1], Z - self.a[2]
        h = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) / float(ba @ ba + 1e-9), 0.0, 1.0)
        return np.sqrt((px - h * ba[0]) ** 2 + (py - h * ba[1]) ** 2 + (pz - h * ba[2]) ** 2) - self.r


class Func(Prim):
    """A shape given by an arbitrary sdf function and an explicit bounding box."""

    def __init__(self, fn: Callable, bbox: BBox):
        self.fn, self.bbox = fn, tuple(float(v) for v in bbox)

    def sdf(self, X, Y, Z):
        return self.fn(X, Y, Z)


class Dilate(Prim):
    def __init__(self, p: Prim, mm: float):
        self.p, self.mm = p, mm
        b = p.bbox
        self.bbox = (b[0] - mm, b[1] + mm, b[2] - mm, b[3] + mm, b[4] - mm, b[5] + mm)

    def sdf(self, X, Y, Z):
        return self.p.sdf(X, Y, Z) - self.mm


class Obj:
    """CSG object: union of 'u' items, minus 's' items, intersected with 'i' items."""

    def __init__(self, *items: tuple[str, Prim]):
        self.items = list(items)
        us = [p.bbox for m, p in items if m == "u"]
        self.bbox = (min(b[0] for b in us), max(b[1] for b in us), min(b[2] for b in us),
                     max(b[3] for b in us), min(b[4] for b in us), max(b[5] for b in us))


# ----------------------------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Op:
    kind: str                   # fill | bone | bowel | tumour
    obj: Obj
    hu: float | Callable = 0.0  # fill value / cortical HU
    label: int = 0
    canc: float | Callable = 250.0
    cortex_mm: float = 1.5
    extra: Any = None


def _scene(p: PatientParams, contrast: bool) -> list[_Op]:
    pw, bw, fat = p.pelvis_width, p.body_width, p.fat_mm
    sac = _Sacrum(pw, p.sacral_slope)
    ops: list[_Op] = []
    E = lambda c, r: Ellipsoid(c, r)  # noqa: E731
    C = lambda a, b, r: Capsule(a, b, r)  # noqa: E731

    # --- soft-tissue envelope -----------------------------------------------------------------------------------
    ycb, ED = 20.0, 115.0

    def ew(Z):  # lateral half-width of the muscle/skeleton envelope
        return bw * pw * (150.0 - 10.0 * np.clip((Z - 20.0) / 90.0, 0.0, 1.0))

    def trunk(extra: float):
        def f(X, Y, Z):
            d2 = _ell2_sdf(X, Y - ycb, ew(Z) + extra, ED + extra)
            return np.maximum(d2, -95.0 - Z)
        return Func(f, (-(150 * bw * pw + extra), 150 * bw * pw + extra, ycb - ED - extra, ycb + ED + extra,
                        -95.0, 400.0))

    def thighs(extra: float):
        return [E((s * 95.0 * pw, 10.0, -250.0), (75.0 * bw + extra, 85.0 + extra, 180.0)) for s in (1, -1)]

    ops.append(_Op("fill", Obj(("u", trunk(fat)), *[("u", t) for t in thighs(fat)]), 40.0))        # skin
    ops.append(_Op("fill", Obj(("u", trunk(fat - 2.5)), *[("u", t) for t in thighs(fat - 2.5)]), -100.0))  # fat
    # abdominal wall / lateral muscles: shell of the envelope above the hips
    ops.append(_Op("fill", Obj(("u", Func(lambda X, Y, Z: np.maximum(np.maximum(
        np.abs(_ell2_sdf(X, Y - ycb, ew(Z) - 6, ED - 6)) - 6.0, -40.0 - Z), Y - 60.0),
                                          (-150 * bw * pw, 150 * bw * pw, ycb - ED, ycb + ED, -40.0, 400.0)))), 50.0))
    # --- muscles ---------------------------------------------------------------------------------------------------
    for s in (1, -1):
        ops.append(_Op("fill", Obj(("u", C((s * 110 * pw, 5, -60), (s * 100 * pw, 10, -420), 60.0))), 50.0))
        ops.append(_Op("fill", Obj(("u", E((s * 88 * pw, 92, -30), (55 * pw, 38, 78)))), 48.0))     # glut. max
        ops.append(_Op("fill", Obj(("u", E((s * 127 * pw, 20, 45), (21 * pw, 45, 42)))), 52.0))     # glut. med
        ops.append(_Op("fill", Obj(("u", E((s * 85 * pw, -5, 45), (21 * pw, 40, 40)))), 50.0))      # iliacus
        ops.append(_Op("fill", Obj(("u", E((s * 28, 96, 90), (22, 21, 75)))), 52.0))                # paraspinal
        ops.append(_Op("fill", Obj(("u", E((s * 55 * pw, -15, -55), (9, 33, 22)))), 50.0))          # obt. int.
        ops.append(_Op("fill", Obj(("u", C((s * 42, 40, 140), (s * 52 * pw, 25, 70), 17.0)),          # psoas
                                   ("u", C((s * 52 * pw, 25, 70), (s * 72 * pw, -22, 0), 18.0)),
                                   ("u", C((s * 72 * pw, -22, 0), (s * 78 * pw, -50, -45), 14.0))), 52.0))
    # --- vessels -------------------------------------------------------------------------------------------------
    art, vein = (280.0, 180.0) if contrast else (45.0, 40.0)
    art_items = [("u", C((0, 15, 160), (0, 15, 122), 8.0))]
    vein_items = [("u", C((-12, 26, 160), (-12, 26, 116), 10.0))]
    for s in (1, -1):
        a_pts = [(0, 15, 122), (s * 32 * pw, 12, 70), (s * 62 * pw, -30, 0), (s * 78 * pw, -55, -50),
                 (s * 90 * pw, -45, -250)]
        for a, b in zip(a_pts[:-1], a_pts[1:]):
            art_items.append(("u", C(a, b, 5.0)))
        v_pts = [(-12, 26, 116), (s * 30 * pw, 24, 68), (s * 55 * pw, -22, 0), (s * 68 * pw, -52, -50),
                 (s * 80 * pw, -42, -250)]
        for a, b in zip(v_pts[:-1], v_pts[1:]):
            vein_items.append(("u", C(a, b, 6.5)))
    ops.append(_Op("fill", Obj(*vein_items), vein))
    ops.append(_Op("fill", Obj(*art_items), art))
    # --- pelvic organs -------------------------------------------------------------------------------------------
    f = p.bladder_fill ** (1.0 / 3.0)
    bl_c, bl_r = (0.0, -38.0, -20.0 + 8 * (f - 1)), (38.0 * f, 28.0 * f, 26.0 * f)
    ops.append(_Op("fill", Obj(("u", E(bl_c, tuple(r + 3 for r in bl_r)))), 40.0))
    ops.append(_Op("fill", Obj(("u", E(bl_c, bl_r))), 260.0 if contrast else 7.0))
    if p.sex == "M":
        ops.append(_Op("fill", Obj(("u", E((0, -42, -62), (18, 14, 14)))), 42.0))
    else:
        ops.append(_Op("fill", Obj(("u", E((0, 2, -8), (24, 18, 30)))), 70.0 if contrast else 48.0))
    rect = [((0, 54, -55), (0, 40, -10)), ((0, 40, -10), (-6, 26, 22))]
    ops.append(_Op("bowel", Obj(*[("u", C(a, b, 15.0)) for a, b in rect]), 40.0, extra=(14.0 / 15.0, p.rectal_gas)))
    for b in p.bowel:
        ops.append(_Op("bowel", Obj(("u", C(b[0:3], b[3:6], b[6]))), 80.0 if contrast else 40.0,
                       extra=((b[6] - 2.5) / b[6], b[7])))
    # --- spine ---------------------------------------------------------------------------------------------------
    ops.append(_Op("fill", Obj(("u", Func(lambda X, Y, Z: np.maximum(_ell2_sdf(X, Y - 40, 25, 17),
                                                                     np.abs(Z - 69.5) - 5.0),
                                          (-25, 25, 23, 57, 64, 75)))), 85.0))          # L5/S1 disc
    ops.append(_Op("fill", Obj(("u", Func(lambda X, Y, Z: np.maximum(_ell2_sdf(X, Y - 38, 25, 17),
                                                                     np.abs(Z - 104.5) - 4.0),
                                          (-25, 25, 21, 55, 100, 109)))), 85.0))        # L4/L5 disc
    l4 = Obj(("u", Func(lambda X, Y, Z: np.maximum(_ell2_sdf(X, Y - 37, 25, 17), np.abs(Z - 130) - 21.5),
                        (-25, 25, 20, 54, 108, 152))),
             ("u", C((0, 80, 128), (0, 104, 122), 6.0)), ("u", C((13, 56, 130), (13, 72, 130), 6.0)),
             ("u", C((-13, 56, 130), (-13, 72, 130), 6.0)))
    ops.append(_Op("bone", l4, 900.0, 0, 200.0, 1.5))
    l5 = Obj(("u", Func(lambda X, Y, Z: np.maximum(_ell2_sdf(X, Y - 40, 26, 18), np.abs(Z - 87) - 13.0),
                        (-26, 26, 22, 58, 74, 100))),
             ("u", Func(lambda X, Y, Z: np.maximum(np.maximum(np.abs(_ell2_sdf(X, Y - 72, 17, 13)) - 4.5,
                                                              58.0 - Y), np.abs(Z - 88) - 10.0),
                        (-22, 22, 55, 90, 78, 98))),
             ("u", C((14, 54, 88), (14, 68, 88), 6.0)), ("u", C((-14, 54, 88), (-14, 68, 88), 6.0)),
             ("u", C((0, 84, 88), (0, 108, 80), 6.0)),
             ("u", C((16, 64, 91), (52, 62, 93), 6.0)), ("u", C((-16, 64, 91), (-52, 62, 93), 6.0)))
    ops.append(_Op("bone", l5, 900.0, LABELS["L5"], 210.0, 1.5))

    # --- sacrum ---------------------------------------------------------------------------------------------------
    def sac_body(X, Y, Z):
        d2 = _ell2_sdf(X, Y - sac.yc(Z), sac.hw(Z), sac.hd(Z))
        return np.maximum(d2, np.maximum(Z - sac.Z_TOP, sac.Z_BOT - Z))

    sac_prim = Func(sac_body, (-57 * pw, 57 * pw, 25, 115, sac.Z_BOT, sac.Z_TOP))

    def canal(X, Y, Z):
        s_ = sac.s(Z)
        d2 = _ell2_sdf(X, Y - (sac.yc(Z) + 0.3 * sac.hd(Z)), 10.0 * (1 - s_) + 3.0, 6.0 * (1 - s_) + 2.0)
        return np.maximum(d2, np.maximum(Z - (sac.Z_TOP + 5), -20.0 - Z))

    sac_items: list[tuple[str, Prim]] = [("u", sac_prim), ("s", Func(canal, (-14, 14, 30, 110, -21, 70)))]
    for i, zf in enumerate(sac.FORAMINA_Z):
        r = 5.5 - 0.6 * i
        for s in (1, -1):
            x = s * sac.foramen_x(i)
            sac_items.append(("s", C((x, float(sac.yc(zf)) - 30, zf), (x, float(sac.yc(zf)) + 8, zf), r)))
    ops.append(_Op("bone", Obj(*sac_items), 850.0, LABELS["sacrum"], 230.0, 1.5))

    # --- hip bones and femora -------------------------------------------------------------------------------------
    hr = p.femoral_head_mm
    for s, lab_h, lab_f in ((1, LABELS["hip_left"], LABELS["femur_left"]), (-1, LABELS["hip_right"],
                                                                              LABELS["femur_right"])):
        H = (s * 86.0 * pw, -10.0, -28.0)

        def wing(X, Y, Z, s=s):
            # iliac wing: shallow curved plate from the SI joint (posteromedial) to the ASIS (anterolateral),
            # concave anteromedially (iliac fossa), flaring laterally towards the crest
            cx, cy, b = 18.0 * pw, -38.0, 97.0
            a = (90.0 + 0.23 * np.clip(Z, 0.0, 90.0)) * pw
            u, v = (X - s * cx) * s, Y - cy
            e = _ell2_sdf(u, v, a, b)
            t = 7.0 + 13.0 * np.clip((30.0 - Z) / 40.0, 0.0, 1.0)
            shell = np.abs(e) - 0.5 * t
            c0, s0 = math.cos(math.radians(-4)), math.sin(math.radians(-4))
            c1, s1 = math.cos(math.radians(76)), math.sin(math.radians(76))
            h1 = -(c0 * v - s0 * u)
            h2 = -(u * s1 - v * c1)
            top = Z - (88.0 - 0.006 * (Y - 5.0) ** 2)
            return np.maximum(np.maximum(shell, np.maximum(h1, h2)), np.maximum(top, -12.0 - Z))

        xs = sorted((s * 20.0 * pw, s * 147.0 * pw))
        cup_n = np.array([-s * 0.8, 0.0, 0.6])

        def cup(X, Y, Z, H=H, cup_n=cup_n):
            dx, dy, dz = X - H[0], Y - H[1], Z - H[2]
            return np.maximum(np.sqrt(dx * dx + dy * dy + dz * dz) - (hr + 11.0),
                              -(dx * cup_n[0] + dy * cup_n[1] + dz * cup_n[2] + 8.0))

        R = hr + 11.0
        hip = Obj(
            ("u", Func(wing, (xs[0], xs[1], -75, 70, -12, 88))),
            ("u", E((s * 58 * pw, 72, 40), (16 * pw, 20, 38))),                  # posterior ilium (tuberosity)
            ("u", E((s * 80 * pw, 0, -5), (17 * pw, 25, 26))),                   # ilium body
            ("u", Func(cup, (H[0] - R, H[0] + R, H[1] - R, H[1] + R, H[2] - R, H[2] + R))),  # acetabulum
            ("u", C((s * 72 * pw, -30, -28), (s * 14 * pw, -68, -38), 10.0)),   # superior pubic ramus
            ("u", E((s * 13 * pw, -70, -45), (10, 11, 20))),                     # pubic body
            ("u", C((s * 15 * pw, -64, -60), (s * 52 * pw, -15, -85), 8.0)),    # inferior pubic/ischial ramus
            ("u", C((s * 82 * pw, 0, -35), (s * 65 * pw, 12, -80), 14.0)),      # ischium body
            ("u", E((s * 60 * pw, 10, -85), (14 * pw, 18, 12))),                 # ischial tuberosity
            ("u", C((s * 75 * pw, 15, -40), (s * 50 * pw, 30, -45), 5.0)),      # ischial spine
            ("s", E(H, (hr + 2.5,) * 3)),                                        # joint space
            ("s", Dilate(sac_prim, 3.0)),                                        # SI joint
            ("i", Func(lambda X, Y, Z, s=s: 1.5 - s * X, (-1e3, 1e3, -1e3, 1e3, -1e3, 1e3))),  # symphysis
        )
        ops.append(_Op("bone", hip, 1250.0, lab_h, 260.0, 2.0))
        G = (s * 118.0 * pw, -2.0, -55.0)

        def fcanc(X, Y, Z):
            return 30.0 + 200.0 * np.clip((Z + 95.0) / 30.0, 0.0, 1.0)

        femur = Obj(("u", E(H, (hr,) * 3)), ("u", C(H, G, 15.0)),
                    ("u", E((s * 128 * pw, 5, -50), (14 * pw, 22, 24))),
                    ("u", C((s * 124 * pw, 2, -62), (s * 108 * pw, 8, -420), 14.0)),
                    ("u", E((s * 110 * pw, 14, -80), (8, 8, 8))))
        ops.append(_Op("bone", femur, 1350.0, lab_f, fcanc, 2.5))
    if p.has_tumour:
        ops.append(_Op("tumour", Obj(("u", _tumour_prim(p))), label=LABELS["tumour"]))
    return ops


def _tumour_prim(p: PatientParams) -> Func:
    return _lobulated(p.tumour_centre_mm, p.tumour_radii_mm, p.tumour_angle_deg, p.tumour_lobes)


def _lobulated(centre, radii, angle_deg: float, lobes_) -> Func:
    c = np.asarray(centre, np.float32)
    r = np.asarray(radii, np.float32)
    t = math.radians(angle_deg)
    ct, st = math.cos(t), math.sin(t)
    lobes = np.asarray(lobes_, np.float32).reshape(-1, 4)
    rmean = float(np.mean(r))

    def f(X, Y, Z):
        dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
        u, v = ct * dx + st * dy, -st * dx + ct * dy
        d = _ell_sdf(u, v, dz, *r)
        if len(lobes):
            n = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-3
            bump = 0.0
            for ux, uy, uz, amp in lobes:
                cosang = (dx * ux + dy * uy + dz * uz) / n
                bump = bump + amp * np.exp((cosang - 1.0) * 4.0)
            d = d - rmean * bump
        return d

    ext = float(r.max()) * (1.0 + float(lobes[:, 3].sum() if len(lobes) else 0.0)) + 1.0
    return Func(f, (c[0] - ext, c[0] + ext, c[1] - ext, c[1] + ext, c[2] - ext, c[2] + ext))


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------
class _Grid:
    def __init__(self, patient: PatientParams, scan: ScanParams):
        m, ps, n = scan.matrix, scan.pixel_spacing_mm, scan.n_slices
        self.m, self.n, self.ps, self.scale = m, n, ps, patient.scale
        o = scan.origin_lps
        self.x0, self.y0 = o[0], o[1]
        self.t = np.asarray(scan.table_offset_mm, float)
        self.R = scan.rotation_matrix[:2, :2]
        xs = self.x0 + np.arange(m) * ps - self.t[0]
        ys = self.y0 + np.arange(m) * ps - self.t[1]
        c, s = self.R[0, 0], self.R[1, 0]
        # local = R^T (p - t) / scale
        self.X = ((c * xs[None, :] + s * ys[:, None]) / self.scale).astype(np.float32)
        self.Y = ((-s * xs[None, :] + c * ys[:, None]) / self.scale).astype(np.float32)
        self.zphys = scan.z_range_mm[0] + np.arange(n) * scan.slice_spacing_mm
        self.Z = (self.zphys / self.scale).astype(np.float32)
        self.ss = scan.slice_spacing_mm
        self.z0 = scan.z_range_mm[0]

    def box(self, bb: BBox, d0: int, d1: int) -> tuple[slice, slice, slice] | None:
        xmin, xmax, ymin, ymax, zmin, zmax = bb
        corners = np.array([[xmin, ymin], [xmin, ymax], [xmax, ymin], [xmax, ymax]]) * self.scale
        lps = corners @ self.R.T + self.t[:2]
        w = (lps[:, 0] - self.x0) / self.ps
        h = (lps[:, 1] - self.y0) / self.ps
        w0, w1 = max(int(math.floor(w.min())) - 1, 0), min(int(math.ceil(w.max())) + 2, self.m)
        h0, h1 = max(int(math.floor(h.min())) - 1, 0), min(int(math.ceil(h.max())) + 2, self.m)
        k0 = (zmin * self.scale - self.z0) / self.ss
        k1 = (zmax * self.scale - self.z0) / self.ss
        a, b = max(int(math.floor(k0)) - 1, d0), min(int(math.ceil(k1)) + 2, d1)
        if w0 >= w1 or h0 >= h1 or a >= b:
            return None
        return slice(a, b), slice(h0, h1), slice(w0, w1)

    def coords(self, box):
        ds, hs, ws = box
        return self.X[hs, ws][None], self.Y[hs, ws][None], self.Z[ds][:, None, None]


def _inter(outer, inner):
    """Slices of ``inner`` (absolute) relative to ``outer`` and the clipped absolute box, or None."""
    rel, ab = [], []
    for o, i in zip(outer, inner):
        a, b = max(o.start, i.start), min(o.stop, i.stop)
        if a >= b:
            return None, None
        rel.append(slice(a - o.start, b - o.start))
        ab.append(slice(a, b))
    return tuple(rel), tuple(ab)


def _eval_obj(grid: _Grid, obj: Obj, region) -> np.ndarray:
    shape = tuple(s.stop - s.start for s in region)
    d = np.full(shape, 1e4, np.float32)
    for mode, prim in obj.items:
        if mode == "i":
            d = np.maximum(d, prim.sdf(*grid.coords(region)))
            continue
        sub = grid.box(prim.bbox, region[0].start, region[0].stop)
        if sub is None:
            continue
        rel, ab = _inter(region, sub)
        if rel is None:
            continue
        v = prim.sdf(*grid.coords(ab))
        v = np.broadcast_to(v, d[rel].shape)
        d[rel] = np.minimum(d[rel], v) if mode == "u" else np.maximum(d[rel], -v)
    return d


def _as_field(val, grid: _Grid, region) -> np.ndarray | float:
    return val(*grid.coords(region)) if callable(val) else val


def _tumour_field(p: PatientParams, grid: _Grid, region, dist_mm: np.ndarray) -> np.ndarray:
    """Tumour interior HU on ``region`` (matrix, calcifications, heterogeneity)."""
    X, Y, Z = grid.coords(region)
    c = p.tumour_centre_mm
    dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
    base = p.tumour_base_hu
    het = 0.12 * abs(base) + 6.0
    V = (base + het * np.sin(0.21 * dx + 1.3) * np.sin(0.17 * dy + 0.4) * np.sin(0.19 * dz + 2.1)).astype(np.float32)
    V = np.broadcast_to(V, dist_mm.shape).copy()
    s = grid.scale
    for e in p.tumour_elements:
        ex, ey, ez, r, kind, hu, nx, ny, nz = e
        kind = int(kind)
        ext = r * (3.0 if kind == 2 else 1.0) + 2.0
        bb = (c[0] + ex - ext, c[0] + ex + ext, c[1] + ey - ext, c[1] + ey + ext, c[2] + ez - ext, c[2] + ez + ext)
        sub = grid.box(bb, region[0].start, region[0].stop)
        if sub is None:
            continue
        rel, ab = _inter(region, sub)
        if rel is None:
            continue
        x, y, z = grid.coords(ab)
        qx, qy, qz = x - (c[0] + ex), y - (c[1] + ey), z - (c[2] + ez)
        dd = np.sqrt(qx * qx + qy * qy + qz * qz)
        sub_v = V[rel]
        if kind == 2:  # osteoid cloud / mixed sclerotic blob
            sub_v += (hu * np.exp(-0.5 * (dd / r) ** 2)).astype(np.float32)
        else:
            if kind == 1:  # ring/arc: thin spherical shell, partial
                sd = np.maximum(np.abs(dd - r) - 0.8, -(qx * nx + qy * ny + qz * nz) - 0.3 * r)
            else:
                sd = dd - r
            occ = np.clip(0.5 - sd * s / grid.ps, 0.0, 1.0)
            sub_v += occ * (hu - sub_v)
        V[rel] = sub_v
    return np.minimum(V, 1600.0)


def _paint(op: _Op, p: PatientParams, grid: _Grid, hu: np.ndarray, lab: np.ndarray, d0: int, d1: int) -> None:
    region = grid.box(op.obj.bbox, d0, d1)
    if region is None:
        return
    d = _eval_obj(grid, op.obj, region) * grid.scale      # physical mm
    if not np.any(d < 0.5 * grid.ps):
        return
    ps = grid.ps
    h = hu[region]
    if op.kind == "fill":
        a = np.clip(0.5 - d / ps, 0.0, 1.0)
        h += a * (_as_field(op.hu, grid, region) - h)
    elif op.kind == "bone":
        out = np.clip(0.5 + d / ps, 0.0, 1.0)
        canc_frac = np.clip(0.5 - (d + op.cortex_mm) / ps, 0.0, 1.0)
        cort_frac = 1.0 - out - canc_frac
        h[...] = h * out + _as_field(op.canc, grid, region) * canc_frac + op.hu * cort_frac
    elif op.kind == "bowel":
        lumen_frac, gas = op.extra
        a = np.clip(0.5 - d / ps, 0.0, 1.0)
        h += a * (op.hu - h)            # wall
        # lumen: fluid (15 HU) with gas anteriorly (small local y, patient supine)
        wall = (1.0 - lumen_frac)
        dl = d + wall * 15.0 * grid.scale
        a2 = np.clip(0.5 - dl / ps, 0.0, 1.0)
        X, Y, Z = grid.coords(region)
        content = np.full(np.broadcast_shapes(X.shape, Z.shape), 15.0, np.float32)
        if gas > 0:
            # gas in the anterior part of the object's box
            y0, y1 = op.obj.bbox[2], op.obj.bbox[3]
            level = y0 + gas * (y1 - y0)
            gfrac = np.clip((level - Y) * grid.scale / ps + 0.5, 0.0, 1.0)
            content = content + gfrac * (-950.0 - content)
        h += a2 * (content - h)
    elif op.kind == "tumour":
        well = p.tumour_margin == "well"
        width = ps if well else max(8.0, 3.0 * ps)
        a = np.clip(0.5 - d / width, 0.0, 1.0)
        V = _tumour_field(p, grid, region, d)
        if p.tumour_shell_hu > 0:
            shell_frac = np.clip(0.5 - d / ps, 0.0, 1.0) - np.clip(0.5 - (d + 1.2) / ps, 0.0, 1.0)
            V = V + shell_frac * (p.tumour_shell_hu - V)
        h += a * (V - h)
    hu[region] = h
    if op.label:
        m = d < 0
        lab[region][m] = op.label


def _gauss_kernel(sigma: float) -> np.ndarray:
    r = int(4.0 * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=float)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def render(patient: PatientParams, scan: ScanParams) -> tuple[Volume, Volume]:
    """Render the CT (HU, int16) and the label map (uint8), both D-H-W on the same LPS grid.

    Grid: ``scan.affine`` (axial slices, d towards the head). Memory stays below ~3 GB at 512x512x350
    (shapes evaluated per slab of slices, float32 HU buffer).
    """
    if patient.sex not in ("M", "F"):
        raise ValueError(f"sex must be 'M' or 'F', got {patient.sex!r}")
    if not (0.5 < patient.scale < 2.0):
        raise ValueError(f"scale {patient.scale} out of range")
    if scan.matrix < 8 or scan.n_slices < 2 or scan.pixel_spacing_mm <= 0 or scan.slice_spacing_mm <= 0:
        raise ValueError("invalid scan grid")
    grid = _Grid(patient, scan)
    n, m = grid.n, grid.m
    hu = np.full((n, m, m), -1000.0, np.float32)
    lab = np.zeros((n, m, m), np.uint8)
    # CT table (fixed to the scanner in x, moves with the patient in y): curved carbon/foam plate
    xs = grid.x0 + np.arange(m) * grid.ps - grid.t[0]
    ys = grid.y0 + np.arange(m) * grid.ps
    top = grid.t[1] + (115.0 + 20.0 + patient.fat_mm) * patient.scale + 8.0 - 0.0006 * xs ** 2
    dy = ys[:, None] - top[None, :]
    table = ((dy > 0) & (dy < 10) & (np.abs(xs)[None, :] < 230)).astype(np.float32)
    hu += table[None] * (120.0 - hu)
    ops = _scene(patient, scan.contrast)
    slab = max(1, int(4_000_000 // (m * m)))
    for d0 in range(0, n, slab):
        d1 = min(n, d0 + slab)
        for op in ops:
            _paint(op, patient, grid, hu, lab, d0, d1)
    # acquisition: slice profile (z), reconstruction kernel (in-plane) and correlated noise
    sz = scan.slice_thickness_mm / (2.355 * scan.slice_spacing_mm)
    sxy = scan.kernel_sigma_px
    rng = np.random.default_rng(scan.noise_seed)
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    k_norm = float(np.sqrt((_gauss_kernel(sxy) ** 2).sum()) ** 2 * np.sqrt((_gauss_kernel(sz) ** 2).sum()))
    noise *= np.float32(scan.noise_hu / k_norm)
    hu += noise
    del noise
    out = ndimage.gaussian_filter(hu, sigma=(sz, sxy, sxy), truncate=4.0)
    del hu
    np.clip(out, -1024, 3071, out=out)
    ct = np.rint(out).astype(np.int16)
    aff = scan.affine
    meta = {"case_id": patient.case_id}
    return Volume(ct, aff, dict(meta, kind="ct")), Volume(lab, aff.copy(), dict(meta, kind="labels"))


# ----------------------------------------------------------------------------------------------------------------
# DICOM / NIfTI writing
# ----------------------------------------------------------------------------------------------------------------
def _uid(p: PatientParams, *parts: Any) -> str:
    """Deterministic UUID-derived UID (2.25.<128-bit int>) from the patient's uid_seed and ``parts``."""
    h = hashlib.sha256("|".join(["sacral-phantom", p.uid_seed, *map(str, parts)]).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:16], "big") >> 1)


def study_uids(p: PatientParams) -> dict[str, str]:
    """Deterministic StudyInstanceUID and FrameOfReferenceUID of ``p``'s study."""
    return {"study": _uid(p, "study"), "frame_of_reference": _uid(p, "for")}


def _ds_str(v: float) -> str:
    s = f"{v:.6g}"
    return s if len(s) <= 16 else f"{v:.4f}"[:16]


def _base_dataset(p: PatientParams, scan: ScanParams, series_uid: str, image_type: list[str], series_number: int,
                  description: str, contrast: bool) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = image_type
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = p.study_date
    ds.InstanceCreationDate = p.study_date
    ds.StudyTime = p.study_time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ds.InstanceCreationTime = p.study_time
    ds.AccessionNumber = p.accession_number
    ds.Modality = "CT"
    ds.Manufacturer = scan.manufacturer
    ds.InstitutionName = scan.institution
    ds.ReferringPhysicianName = ""
    ds.StationName = f"{scan.site}CT1"
    ds.StudyDescription = "CT PELVIS"
    ds.SeriesDescription = description
    ds.ManufacturerModelName = scan.model
    ds.PatientName = p.patient_name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.PatientAge = f"{p.age:03d}Y"
    ds.PatientSize = round(1.72 * p.scale if p.sex == "M" else 1.62 * p.scale, 2)
    ds.PatientWeight = round((78.0 if p.sex == "M" else 66.0) * p.scale ** 3 * (0.8 + p.fat_mm / 100.0), 1)
    ds.PatientIdentityRemoved = "NO"
    if contrast:
        ds.ContrastBolusAgent = scan.contrast_agent
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = 100
    ds.BodyPartExamined = "PELVIS"
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = _ds_str(scan.slice_thickness_mm)
    ds.KVP = _ds_str(scan.kvp)
    ds.SpacingBetweenSlices = _ds_str(scan.slice_spacing_mm)
    ds.DataCollectionDiameter = 500
    ds.SoftwareVersions = "sacral-phantom 1.0"
    ds.ProtocolName = "PELVIS ROUTINE"
    ds.ReconstructionDiameter = _ds_str(scan.fov_mm)
    ds.GantryDetectorTilt = 0
    ds.TableHeight = _ds_str(scan.table_height_mm)
    ds.RotationDirection = "CW"
    ds.ExposureTime = 500
    ds.XRayTubeCurrent = int(150 + 150 * (p.scale - 0.85))
    ds.Exposure = int(ds.XRayTubeCurrent * 0.5)
    ds.FilterType = "BODY FILTER"
    ds.ConvolutionKernel = scan.kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uids(p)["study"]
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = p.accession_number[-6:]
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = study_uids(p)["frame_of_reference"]
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = int(scan.pixel_representation)
    ds.RescaleIntercept = -1024 if scan.pixel_representation == 0 else 0
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    return ds


def _store(ds: Dataset, pixels: np.ndarray, path: Path, ts: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = "SACRALPHANTOM1"
    ds.file_meta = meta
    ds.Rows, ds.Columns = pixels.shape
    if "PixelData" in ds:
        del ds.PixelData
    if ts in (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)):
        meta.TransferSyntaxUID = ts
        ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW"
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(ts, np.ascontiguousarray(pixels), generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def _stored_pixels(hu: np.ndarray, pr: int) -> np.ndarray:
    hu = np.clip(hu.astype(np.int32), -1024, 3071)
    return (hu + 1024).astype(np.uint16) if pr == 0 else hu.astype(np.int16)


def _write_series(p: PatientParams, scan: ScanParams, ct: Volume, folder: Path, prefix: str, tag: str,
                  image_type: list[str], description: str, contrast: bool) -> str:
    series_uid = _uid(p, "series", tag, scan.series_number)
    ds = _base_dataset(p, scan, series_uid, image_type, scan.series_number, description, contrast)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [_ds_str(scan.pixel_spacing_mm)] * 2
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ts = scan.transfer_syntax_uid
    for k in range(ct.shape[0]):
        ipp = ct.affine[:3, :3] @ np.array([k, 0, 0]) + ct.affine[:3, 3]
        ds.SOPInstanceUID = _uid(p, "sop", tag, scan.series_number, k)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_str(float(v)) for v in ipp]
        ds.SliceLocation = _ds_str(float(ipp[2]))
        _store(ds, _stored_pixels(ct.array[k], scan.pixel_representation), folder / f"{prefix}{k + 1:04d}.dcm", ts)
    return series_uid


def _write_localizer(p: PatientParams, scan: ScanParams, ct: Volume, folder: Path) -> str:
    """Single-slice AP localizer (coronal projection of the CT), series 1."""
    arr = ct.array.astype(np.float32)
    proj = np.clip(arr + 1000.0, 0, None).mean(axis=1)        # (D, W): mean attenuation along y
    img = proj[::-1] / max(float(proj.max()), 1.0) * 2000.0 - 1000.0   # rows from head to feet
    loc_scan = replace(scan, series_number=1)
    series_uid = _uid(p, "series", "localizer", 1)
    ds = _base_dataset(p, loc_scan, series_uid, ["ORIGINAL", "PRIMARY", "LOCALIZER"], 1, "TOPOGRAM AP", False)
    ys = ct.affine[1, 1] * (ct.shape[1] - 1) / 2.0 + ct.affine[1, 3]
    top = ct.affine[:3, :3] @ np.array([ct.shape[0] - 1, 0, 0]) + ct.affine[:3, 3]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.PixelSpacing = [_ds_str(scan.slice_spacing_mm), _ds_str(scan.pixel_spacing_mm)]
    ds.ImagePositionPatient = [_ds_str(float(top[0])), _ds_str(float(ys)), _ds_str(float(top[2]))]
    ds.SliceThickness = _ds_str(scan.pixel_spacing_mm * ct.shape[1])
    ds.WindowCenter, ds.WindowWidth = 0, 2000
    ds.SOPInstanceUID = _uid(p, "sop", "localizer", 1, 0)
    ds.InstanceNumber = 1
    _store(ds, _stored_pixels(np.rint(img), scan.pixel_representation), folder / "LOC0001.dcm",
           scan.transfer_syntax_uid)
    return series_uid


def write_case(patient: PatientParams, scan: ScanParams, ct: Volume, labels: Volume, out_dir: Path, *,
               localizer: bool = False, contrast_series: bool = False) -> dict[str, Any]:
    """Write one case under ``out_dir/<case_id>/``: ``dicom/`` (one CT Image Storage file per slice, plus
    optional localizer ``LOC0001.dcm`` and contrast-enhanced series ``CE*.dcm`` of the same study) and
    ``labels.nii.gz``. Returns the manifest row (paths relative to ``out_dir``).

    ``ct``/``labels`` must be the output of ``render(patient, scan)``; identifiers come from ``patient``
    (override them with ``dataclasses.replace``), transfer syntax / PixelRepresentation from ``scan``.
    """
    if ct.shape != labels.shape or not np.allclose(ct.affine, labels.affine):
        raise ValueError("ct and labels must share one grid")
    if scan.pixel_representation not in (0, 1):
        raise ValueError("pixel_representation must be 0 or 1")
    out_dir = Path(out_dir)
    case_dir = out_dir / patient.case_id
    dcm_dir = case_dir / "dicom"
    dcm_dir.mkdir(parents=True, exist_ok=True)
    series_uid = _write_series(patient, scan, ct, dcm_dir, "CT", "ct", ["ORIGINAL", "PRIMARY", "AXIAL"],
                               scan.series_description, scan.contrast)
    extra = []
    if localizer:
        _write_localizer(patient, scan, ct, dcm_dir)
        extra.append("localizer")
    if contrast_series:
        ce_scan = replace(scan, contrast=True, series_number=3, noise_seed=scan.noise_seed + 1,
                          series_description=scan.series_description.replace("NONCONTRAST", "CONTRAST"))
        ce, _ = render(patient, ce_scan)
        _write_series(patient, ce_scan, ce, dcm_dir, "CE", "ce", ["ORIGINAL", "PRIMARY", "AXIAL"],
                      ce_scan.series_description, True)
        extra.append("contrast")
    label_path = case_dir / "labels.nii.gz"
    sitk.WriteImage(to_sitk(labels), str(label_path), useCompression=True)
    tmask = labels.array == LABELS["tumour"]
    vol_ml = float(tmask.sum()) * labels.voxel_volume_ml
    if tmask.any():
        cen = labels.index_to_lps(np.argwhere(tmask).mean(axis=0))[0]
    else:
        cen = [float("nan")] * 3
    ts_name = {str(v): k for k, v in _TRANSFER_SYNTAXES.items() if k != "j2k"}.get(scan.transfer_syntax_uid,
                                                                                  scan.transfer_syntax_uid)
    uids = study_uids(patient)
    row = {
        "case_id": patient.case_id, "tumour_class": patient.tumour_class, "age": patient.age, "sex": patient.sex,
        "dicom_dir": dcm_dir.relative_to(out_dir).as_posix(), "label_path": label_path.relative_to(out_dir).as_posix(),
        "tumour_volume_ml": round(vol_ml, 3), "tumour_volume_ml_analytic": round(patient.tumour_volume_ml_analytic, 3),
        "tumour_centroid_lps_x": round(float(cen[0]), 2), "tumour_centroid_lps_y": round(float(cen[1]), 2),
        "tumour_centroid_lps_z": round(float(cen[2]), 2),
        "tumour_matrix": patient.tumour_matrix if patient.has_tumour else "none",
        "tumour_margin": patient.tumour_margin if patient.has_tumour else "none",
        "tumour_site": patient.tumour_site, "tumour_typical_location": int(patient.tumour_typical_location),
        "tumour_typical_matrix": int(patient.tumour_typical_matrix), "scale": round(patient.scale, 4),
        "rows": scan.matrix, "cols": scan.matrix, "n_slices": ct.shape[0], "pixel_spacing_mm": scan.pixel_spacing_mm,
        "slice_spacing_mm": scan.slice_spacing_mm, "slice_thickness_mm": scan.slice_thickness_mm,
        "rotation_deg": scan.rotation_deg, "table_offset_x_mm": scan.table_offset_mm[0],
        "table_offset_y_mm": scan.table_offset_mm[1], "table_offset_z_mm": scan.table_offset_mm[2],
        "manufacturer": scan.manufacturer, "model": scan.model, "site": scan.site, "kernel": scan.kernel,
        "transfer_syntax": ts_name, "pixel_representation": scan.pixel_representation,
        "study_instance_uid": uids["study"], "series_instance_uid": series_uid,
        "frame_of_reference_uid": uids["frame_of_reference"], "extra_series": "+".join(extra),
    }
    return row


# ----------------------------------------------------------------------------------------------------------------
# Cohort
# ----------------------------------------------------------------------------------------------------------------
def cohort_classes(n: int, seed: int, no_tumour_fraction: float = 0.15,
                   classes: Sequence[str] | None = None) -> list[str]:
    """Class of each of ``n`` cases: ``round(n * no_tumour_fraction)`` 'none', the rest balanced over
    ``classes`` (default all six), in a seeded random order."""
    classes = list(classes or TUMOUR_CLASSES)
    for c in classes:
        if c not in TUMOUR_CLASSES and c != NO_TUMOUR:
            raise ValueError(f"unknown tumour class {c!r}")
    if not 0.0 <= no_tumour_fraction <= 1.0:
        raise ValueError("no_tumour_fraction must be in [0, 1]")
    rng = np.random.default_rng([seed, 0xC1A55])
    n_none = int(round(n * no_tumour_fraction))
    order = list(rng.permutation(len(classes)))
    labels = [NO_TUMOUR] * n_none + [classes[order[i % len(classes)]] for i in range(n - n_none)]
    return [labels[i] for i in rng.permutation(n)]


def generate_cohort(out: Path, n: int, seed: int, full_size: bool = False, no_tumour_fraction: float = 0.15,
                    **opts: Any) -> Path:
    """Generate ``n`` cases under ``out`` and write ``out/manifest.csv``; returns the manifest path.

    Options: ``classes`` (sequence of tumour classes), ``matrix`` (int; same FOV), ``transfer_syntax``
    ('explicit', 'implicit', 'jpeg2000', 'rle' or a UID), ``pixel_representation`` (0/1), ``localizer``
    (bool), ``contrast_series`` (bool), ``patient_name`` / ``patient_id`` / ``birth_date`` / ``accession_number``
    (format strings with ``{case_id}``, ``{i}``), ``case_prefix`` (default 'C'), ``start_index`` (default 1).
    """
    known = {"classes", "matrix", "transfer_syntax", "pixel_representation", "localizer", "contrast_series",
             "patient_name", "patient_id", "birth_date", "accession_number", "case_prefix", "start_index"}
    bad = set(opts) - known
    if bad:
        raise TypeError(f"unknown options {sorted(bad)}")
    if n < 1:
        raise ValueError("n must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = cohort_classes(n, seed, no_tumour_fraction, opts.get("classes"))
    ts = opts.get("transfer_syntax")
    if ts is not None:
        ts = str(_TRANSFER_SYNTAXES.get(str(ts).lower(), ts))
    rows = []
    t0 = time.perf_counter()
    start = int(opts.get("start_index", 1))
    for i in range(n):
        case_id = f"{opts.get('case_prefix', 'C')}{start + i:04d}"
        rng = np.random.default_rng([seed, start + i])
        patient = sample_patient(rng, case_id, classes[i])
        ident = {k: str(opts[k]).format(case_id=case_id, i=start + i)
                 for k in ("patient_name", "patient_id", "birth_date", "accession_number") if opts.get(k)}
        if ident:
            patient = replace(patient, **ident)
        scan = sample_scan(rng, patient, full_size=full_size)
        if opts.get("matrix"):
            scan = scan.with_matrix(int(opts["matrix"]))
        if ts is not None:
            scan = replace(scan, transfer_syntax_uid=ts)
        if opts.get("pixel_representation") is not None:
            scan = replace(scan, pixel_representation=int(opts["pixel_representation"]))
        ct, labels = render(patient, scan)
        rows.append(write_case(patient, scan, ct, labels, out, localizer=bool(opts.get("localizer")),
                               contrast_series=bool(opts.get("contrast_series"))))
        log.info("case %d/%d %s %s: %d slices (%.1f s elapsed)", i + 1, n, case_id, patient.tumour_class,
                 ct.shape[0], time.perf_counter() - t0)
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return manifest


# ----------------------------------------------------------------------------------------------------------------
# Clinical-only difficulty check (no rendering)
# ----------------------------------------------------------------------------------------------------------------
def clinical_features(p: PatientParams) -> list[float]:
    """(age years, sex 1=M, tumour volume mL from the analytic radii)."""
    return [float(p.age), 1.0 if p.sex == "M" else 0.0, p.tumour_volume_ml_analytic]


def clinical_only_auc(n_train: int = 600, n_test: int = 600, seed: int = 0, model: str = "logreg") -> float:
    """Macro one-vs-rest AUC of a standardised clinical-only classifier (age, sex, volume) trained on
    ``n_train`` sampled patients and evaluated on ``n_test`` others (classes drawn by prevalence)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    def draw(n: int, s: int):
        rng = np.random.default_rng(s)
        ps = [sample_patient(rng, f"X{i:04d}") for i in range(n)]
        return np.array([clinical_features(p) for p in ps]), np.array([p.tumour_class for p in ps])

    xtr, ytr = draw(n_train, seed)
    xte, yte = draw(n_test, seed + 1)
    clf = (make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)) if model == "logreg"
           else make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)))
    clf.fit(xtr, ytr)
    return float(roc_auc_score(yte, clf.predict_proba(xte), multi_class="ovr", average="macro",
                               labels=clf.classes_))


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.phantom", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (manifest.csv + one folder per case)")
    ap.add_argument("--n", type=int, default=10, help="number of cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-size", action="store_true", help="512x512, >=300 slices of 1 mm")
    ap.add_argument("--no-tumour-fraction", type=float, default=0.15)
    ap.add_argument("--classes", nargs="+", choices=list(TUMOUR_CLASSES) + [NO_TUMOUR], default=None)
    ap.add_argument("--matrix", type=int, default=None, help="rows = cols (same FOV)")
    ap.add_argument("--transfer-syntax", default=None, help="explicit | implicit | jpeg2000 | rle | UID")
    ap.add_argument("--pixel-representation", type=int, choices=[0, 1], default=None)
    ap.add_argument("--localizer", action="store_true", help="add a localizer image to each study")
    ap.add_argument("--contrast-series", action="store_true", help="add a contrast-enhanced series")
    ap.add_argument("--patient-name", default=None, help="format string, e.g. 'TEST^{case_id}'")
    ap.add_argument("--patient-id", default=None)
    ap.add_argument("--accession-number", default=None)
    ap.add_argument("--birth-date", default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")
    t0 = time.perf_counter()
    man = generate_cohort(a.out, a.n, a.seed, full_size=a.full_size, no_tumour_fraction=a.no_tumour_fraction,
                          classes=a.classes, matrix=a.matrix, transfer_syntax=a.transfer_syntax,
                          pixel_representation=a.pixel_representation, localizer=a.localizer,
                          contrast_series=a.contrast_series, patient_name=a.patient_name, patient_id=a.patient_id,
                          accession_number=a.accession_number, birth_date=a.birth_date)
    print(f"wrote {a.n} cases, manifest {man} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
