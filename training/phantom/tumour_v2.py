"""Tumour world v2: sacral tumours without deterministic tells, drawn from sourced class-conditional probabilities.

Selected with ``tumour_world="v2"`` (``sample_patient``, ``generate_cohort``, CLI ``--tumour-world v2``); the
default world ``"v1"`` (:mod:`training.phantom.tumour`) is unchanged. The interface is v1's:
:func:`sample_demographics`, :func:`sample_tumour` (returns a :class:`TumourParamsV2`, a subclass of
:class:`~training.phantom.tumour.TumourParams`), and the render hooks :func:`tumour_prim`, :func:`tumour_hu`,
:func:`margin_width_mm`, plus the v2-only hooks :func:`residual_alpha` (residual bone fragments),
:func:`satellites` (other lesions of multifocal metastases) and :func:`displace` (mass effect on rectum and
bladder). :mod:`training.phantom.tumour` dispatches to these for a :class:`TumourParamsV2`.

Geometry is in the pelvis-local frame (mm, L/P/S: +x patient's left, +y posterior, +z superior), before the
patient's ``scale``; HU are true attenuations before partial volume, kernel and noise.

**Principles.** (1) No image feature is deterministic given the class: every feature (matrix, base HU, texture,
lobulation, surface irregularity, margin, rim/shell, cysts, residual bone, soft-tissue extension, other lesions,
size) is drawn with class-dependent probabilities whose supports overlap between all six classes. (2) Factors are
correlated as in patients, not independent given the class: the metastatic primary (and so the matrix) depends
on sex and age; the volume depends on the level (caudal tumours are found larger) and on the matrix; cysts and
the extension outside the bone are more frequent in larger tumours; residual bone fragments carry the patient's
own, age-dependent marrow density (:func:`training.phantom.appearance.marrow_hu`). (3) Tumours behave like
tumours: bone is destroyed with residual fragments (geographic or permeative), the tumour breaks through the
cortex into presacral (and posterior) soft-tissue masses, large ones cross the midline and the SI joint, they
push the rectum and bladder away, neurogenic tumours sit at (and widen) a sacral foramen, metastases are
multifocal. Calcification mimics (phleboliths, vascular calcification, bone islands) exist outside the tumour.
(4) Difficulty is calibrated on the parameters, not on a model: ``tests/test_tumour_world.py``.

**Sources** (keys of ``../shared/REFERENCE.md`` section 8; figures rounded; where the literature is silent the
value is a stated assumption, marked *assumed*):

- Demographics: metastasis median age 59 [Y19a]; chondrosarcoma 30-70, peak in the 6th decade [RK-CS], more
  often male [W20]; osteosarcoma median 28 y (12-68), 15 M / 11 F [Wa17], a second, older peak of secondary
  osteosarcoma *assumed* (spine series median 34.5 [Il04]); chordoma mean 55-57 (21-75), 120 M / 73 F [Si13;
  G14]; neurogenic mean 42 y, 20-50, no sex bias [Si13; RK-Sch]; giant cell tumour mean 34 y [Si13], more often
  female [W20]. Metastasis sex ratio 0.55 M *assumed*.
- Level, side, position: metastasis upper sacrum, S1 18/19, S2 13/19 [RK-Met], side free; chondrosarcoma
  eccentric upper sacrum, towards the SI joint [RK-CS; Rz]; osteosarcoma body and ala [Il04]; chordoma midline
  77 % [Si13], lower sacrum S3-S5 typically [Rz] but 23/26 above the S3 foramen in one series [Ya16] (so a
  caudal/cranial mixture 0.6/0.4); neurogenic eccentric upper 87.5 % [Si13], beside the midline 14 vs 5 on it
  [Fa19], centred S2-S3, at a foramen [Su; Do97]; giant cell tumour eccentric upper 73.7 % [Si13], mostly
  S1-S2 [BM21], often across the midline and the SI joint [Eu].
- Size: chordoma mean 614 mL (9-2113) [J08]; no size difference between chordoma, GCT and neurogenic [Si13],
  neurogenic often giant [Si13]; metastases little soft-tissue mass [TP-Met] (smaller: median *assumed* 80 mL);
  others not found (medians 160-220 mL *assumed*), log-normal SD 0.8 *assumed*. Caudal tumours are larger at
  diagnosis (factor exp(0.6 (level - 0.35)), *assumed*: fewer early root symptoms); blastic metastases smaller
  (x0.7), chondroid tumours larger (x1.2) *assumed*.
- Matrix: metastasis by primary: kidney/thyroid lytic, lung/breast mixed, prostate blastic [TP-Met] (blastic
  0.35 in men over 55 (prostate), mixed 0.35 in women (breast), otherwise mostly lytic; *assumed* shares);
  chondrosarcoma ring-and-arc chondroid mineralisation, best seen on CT [Mu03] (0.6; sacral share not found);
  osteosarcoma osteoid mineralisation 80 %, marked in 25 %, purely lytic 20 % [Il04]; chordoma calcified debris
  (mostly sequestered bone) 87 % [Sk60] vs 15-89 % [SKH] (0.55), chondroid chordoma mimicking chondrosarcoma
  [Rz] (0.1); neurogenic no matrix [Su] (lytic 0.85); giant cell tumour purely lytic, no matrix [PT-sc] (0.85).
- Density of the non-mineralised part: chordoma lowest (myxoid) [Ya19], chondroid tumours low attenuation [Mu03];
  means 24-45 HU with SD 8-10 HU *assumed* (overlapping).
- Margin: neurogenic well defined, sclerotic margin, no infiltration [Su]; giant cell tumour no sclerotic
  margin [PT-sc]; chordoma peripheral sclerosis ~50 % [LR]; metastasis no sclerotic rim [TP-Met]; ill-defined
  (wide transition) shares: metastasis 0.6, osteosarcoma 0.65, chondrosarcoma/chordoma 0.3, GCT 0.2,
  neurogenic 0.08 *assumed*. Expansile thin shell: GCT expansile [PT-sc; vL22], neurogenic expansile [Su].
- Cysts: neurogenic large central cyst 87.5 % [Si13] vs cystic change 12/26 in larger ones [Fa19] (0.55,
  growing with size); giant cell tumour many small cysts 73.7 % [Si13] (0.6); chordoma cystic areas ~50 % [LR]
  (0.4); telangiectatic osteosarcoma lytic-cystic [Il04] (0.2); necrosis in metastases and chondrosarcoma 0.1
  and 0.15 *assumed*.
- Bone destruction: chordoma bone destruction 90 % with sequestered fragments [Sk60]; GCT cortical destruction
  usual [vL22], ~1/3 pathological fracture [RK-GCT]; residual-bone fraction permeative (metastasis,
  osteosarcoma) vs geographic (others) *assumed* from [PT-sc] (radiologists use the residual bone shape).
- Soft-tissue extension: chordoma presacral mass 30/30, posterior 77 % [Su05], soft-tissue part can exceed the
  bony part [HK02]; neurogenic presacral more than posterior [Fa19], dumbbell through the foramina [Do97]; GCT
  grows mainly inside the sacrum [Si13] but soft-tissue mass usual [vL22]; metastases little soft-tissue mass
  [TP-Met]. Probabilities 0.8 / 0.7 / 0.4 / 0.2, chondrosarcoma and osteosarcoma 0.5 *assumed*.
- Multifocality: metastasis 10/19 with other spinal, 13/19 with extraspinal lesions [RK-Met] (0.6 with other
  lesions in the sacrum, ilium or L5); bone islands as sclerotic mimics in 10 % of the other classes *assumed*.

The oracle features of :func:`image_features` and :func:`location_features` are what the calibration tests
feed to simple classifiers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from training.phantom.draws import clip, random_unit
from training.phantom.appearance import _erfinv, texture
from training.phantom.shapes import Ellipsoid, Func, Prim
from training.phantom.params import TUMOUR_CLASSES
from training.phantom.tumour import SacrumLike, TumourParams, _level_name, lobulated

NO_TUMOUR = "none"
MATRICES = ("lytic", "lytic_specks", "chondroid", "osteoid", "sclerotic", "mixed")


@dataclass(frozen=True)
class TumourParamsV2(TumourParams):
    """One v2 tumour: the v1 fields (main lobulated ellipsoid, matrix, elements, ...) plus what v2 adds.

    ``components`` are further ellipsoids (cx, cy, cz, rx, ry, rz; local mm) smoothly joined to the main body:
    the soft-tissue masses outside the bone. ``lobe_factor`` is the volume of the whole shape (components and
    surface irregularity included) over the main ellipsoid's, so :meth:`volume_ml` holds for the union.
    """

    WORLD: ClassVar[str] = "v2"
    components: tuple[tuple[float, ...], ...] = ()
    centroid_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)   # of the whole shape (local mm)
    irregularity_mm: float = 0.0     # amplitude of the random-field surface perturbation, local mm
    surface_mm: float = 3.0          # grain of that perturbation, mm
    seed: int = 0                    # of the tumour's random fields (surface, texture, fragments)
    texture_hu: float = 10.0         # SD of the interior random-field texture, HU
    texture_mm: float = 2.0          # its grain, mm
    margin_mm: float = 0.0           # width of the transition zone (0: one voxel), physical mm
    rim_mm: float = 0.0              # thickness of the sclerotic rim / expansile shell, physical mm (0: none)
    residual: float = 0.0            # fraction of the destroyed bone left as fragments, 0..1
    satellite_lesions: tuple[tuple[float, ...], ...] = ()        # (x, y, z, r, hu): other lesions, local mm
    n_cysts: int = 0
    cyst_fraction: float = 0.0       # cyst volume / tumour volume
    extension_fraction: float = 0.0  # drawn share of the volume outside the bone (soft-tissue masses)
    crosses_midline: bool = False    # the tumour spans the sacral midline
    crosses_si: bool = False         # it reaches beyond the sacral ala at its level (into the SI joint / ilium)
    level: float = 0.0               # sacral level of the main body (0 top of S1 .. 1 coccyx tip)
    lateral: float = 0.0             # fraction of the sacral half width (+ left)


# --- demographics ----------------------------------------------------------------------------------------------
_AGE = {"metastasis": (60, 12, 25, 90), "chordoma": (56, 13, 21, 88), "chondrosarcoma": (51, 13, 18, 85),
        "neurogenic_tumour": (42, 13, 16, 80), "giant_cell_tumour": (34, 11, 14, 72), NO_TUMOUR: (55, 16, 18, 90)}
_OSTEO_AGE = (0.7, (27, 9), (55, 14))   # P(primary, young), young (mean, sd), secondary (mean, sd)
_P_MALE = {"metastasis": 0.55, "chordoma": 0.62, "chondrosarcoma": 0.6, "osteosarcoma": 0.58,
           "neurogenic_tumour": 0.5, "giant_cell_tumour": 0.4, NO_TUMOUR: 0.5}


def sample_demographics(rng: np.random.Generator, cls: str) -> tuple[int, str]:
    """(age in years, sex "M"/"F") of a patient with a tumour of class ``cls`` (or ``"none"``)."""
    if cls not in _P_MALE and cls != "osteosarcoma":
        raise ValueError(f"unknown tumour class {cls!r}")
    if cls == "osteosarcoma":
        p_young, young, old = _OSTEO_AGE
        a = rng.normal(*young) if rng.random() < p_young else rng.normal(*old)
        age = int(round(clip(a, 10, 85)))
    else:
        mu, sd, lo, hi = _AGE[cls]
        age = int(round(clip(rng.normal(mu, sd), lo, hi)))
    return age, ("M" if rng.random() < _P_MALE[cls] else "F")


# --- class-conditional probability tables ------------------------------------------------------------------------
_MATRIX_P = {   # order of MATRICES: lytic, lytic_specks, chondroid, osteoid, sclerotic, mixed
    "chondrosarcoma": (0.22, 0.1, 0.55, 0.03, 0.03, 0.07),
    "osteosarcoma": (0.2, 0.03, 0.05, 0.45, 0.2, 0.07),
    "chordoma": (0.3, 0.48, 0.12, 0.02, 0.0, 0.08),
    "neurogenic_tumour": (0.8, 0.1, 0.03, 0.0, 0.0, 0.07),
    "giant_cell_tumour": (0.78, 0.12, 0.02, 0.02, 0.0, 0.06),
}
_BASE_HU = {"metastasis": (38.0, 10.0), "chondrosarcoma": (28.0, 10.0), "osteosarcoma": (39.0, 10.0),
            "chordoma": (27.0, 10.0), "neurogenic_tumour": (34.0, 10.0), "giant_cell_tumour": (37.0, 10.0)}
_VOLUME = {"metastasis": 80.0, "chondrosarcoma": 200.0, "osteosarcoma": 170.0, "chordoma": 220.0,
           "neurogenic_tumour": 170.0, "giant_cell_tumour": 180.0}
_MATRIX_SIZE = {"lytic": 1.0, "lytic_specks": 1.05, "chondroid": 1.2, "osteoid": 1.0, "sclerotic": 0.7,
                "mixed": 0.9}
_LOBES = {"metastasis": 2.0, "chondrosarcoma": 3.5, "osteosarcoma": 2.5, "chordoma": 3.0,
          "neurogenic_tumour": 1.8, "giant_cell_tumour": 2.0}          # mean number of lobes (Poisson)
_P_ILL = {"metastasis": 0.6, "chondrosarcoma": 0.3, "osteosarcoma": 0.65, "chordoma": 0.3,
          "neurogenic_tumour": 0.08, "giant_cell_tumour": 0.2}
# P(sclerotic rim), P(expansile shell) (exclusive)
_RIM = {"metastasis": (0.05, 0.05), "chondrosarcoma": (0.2, 0.1), "osteosarcoma": (0.08, 0.05),
        "chordoma": (0.45, 0.05), "neurogenic_tumour": (0.5, 0.2), "giant_cell_tumour": (0.1, 0.45)}
# P(cysts) at 150 mL, P(many small ones | cysts) (else 1-2 large, central)
_CYST = {"metastasis": (0.1, 0.5), "chondrosarcoma": (0.15, 0.5), "osteosarcoma": (0.2, 0.7),
         "chordoma": (0.4, 0.5), "neurogenic_tumour": (0.55, 0.2), "giant_cell_tumour": (0.6, 0.8)}
_RESIDUAL = {"metastasis": (2.4, 5.0), "chondrosarcoma": (1.6, 6.5), "osteosarcoma": (2.2, 5.0),
             "chordoma": (2.0, 6.0), "neurogenic_tumour": (1.4, 7.0), "giant_cell_tumour": (1.5, 6.5)}  # Beta(a, b)
_P_EXTENSION = {"metastasis": 0.2, "chondrosarcoma": 0.5, "osteosarcoma": 0.5, "chordoma": 0.8,
                "neurogenic_tumour": 0.7, "giant_cell_tumour": 0.4}   # presacral soft-tissue mass at 150 mL
_P_POSTERIOR = {"chordoma": 0.5}    # of those with a presacral mass, also a posterior one (default 0.15)
_P_SATELLITES = {"metastasis": 0.6}  # other classes: 0.1 (bone islands, sclerotic)


def _location(rng: np.random.Generator, cls: str, sac: SacrumLike) -> tuple[float, float]:
    """(level 0..1, lateral fraction of the half width, + left) of the main body; see the module sources."""
    side = 1.0 if rng.random() < 0.5 else -1.0
    if cls == "metastasis":
        level, lat = rng.normal(0.25, 0.15), rng.uniform(-0.8, 0.8)
    elif cls == "chondrosarcoma":
        level = rng.normal(0.3, 0.15)
        lat = rng.normal(0.0, 0.2) if rng.random() < 0.15 else side * rng.normal(0.8, 0.15)
    elif cls == "osteosarcoma":
        level, lat = rng.normal(0.32, 0.2), rng.normal(0.0, 0.45)
    elif cls == "chordoma":
        level = rng.normal(0.7, 0.12) if rng.random() < 0.65 else rng.normal(0.4, 0.12)
        lat = rng.normal(0.0, 0.12) if rng.random() < 0.8 else side * rng.normal(0.45, 0.2)
    elif cls == "neurogenic_tumour":
        fi = int(rng.choice(len(sac.FORAMINA_LEVELS), p=[0.2, 0.35, 0.3, 0.15]))
        level = float(sac.FORAMINA_LEVELS[fi]) + rng.normal(0.0, 0.04)
        lat = rng.normal(0.0, 0.15) if rng.random() < 0.27 else side * (sac.foramen_lateral(fi) + rng.normal(0, 0.1))
    elif cls == "giant_cell_tumour":
        level = rng.normal(0.18, 0.1)
        lat = rng.normal(0.0, 0.2) if rng.random() < 0.26 else side * rng.normal(0.45, 0.18)
    else:
        raise ValueError(f"unknown tumour class {cls!r}")
    return clip(level, 0.0, 0.92), clip(lat, -1.1, 1.1)


def _matrix(rng: np.random.Generator, cls: str, age: float, sex: str) -> str:
    if cls == "metastasis":   # by primary [TP-Met]: prostate blastic (older men), breast mixed (women)
        p_scl = 0.35 if (sex == "M" and age > 55) else 0.1
        p_mix = 0.35 if sex == "F" else 0.15
        p = np.array([1.0 - p_scl - p_mix - 0.1, 0.05, 0.03, 0.02, p_scl, p_mix])
    else:
        p = np.asarray(_MATRIX_P[cls], float)
    return str(MATRICES[int(rng.choice(len(MATRICES), p=p / p.sum()))])


def _field(seed: int, kind: int, grain_mm: float, X, Y, Z, stretch: float = 1.0) -> np.ndarray:
    """Unit-SD random field (:func:`training.phantom.appearance.texture`) of tumour ``seed`` for field ``kind``
    (0 surface, 1 texture, 2 fragments): one of :data:`_POOL` cached tiles, shifted by an offset of the tumour's
    own (local mm points ``X, Y, Z`` relative to the tumour centre)."""
    off = np.random.default_rng([seed, kind]).uniform(0.0, 48.0 * stretch, size=3)
    return texture(1000 + 37 * kind + seed % _POOL, grain_mm, X + off[0], Y + off[1], Z + off[2], stretch=stretch)


def _smin(a, b, k: float):
    """Polynomial smooth minimum (blend width ``k`` mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1.0 - h) + a * h - k * h * (1.0 - h)


def _shape(centre, radii, angle_deg: float, lobes, components, irregularity_mm: float, surface_mm: float,
           seed: int) -> Func:
    """Main lobulated ellipsoid smoothly joined with ``components`` and roughened by a random field (local mm)."""
    main = lobulated(centre, radii, angle_deg, lobes)
    parts: list[Prim] = [Ellipsoid(tuple(c[:3]), tuple(c[3:6])) for c in components]
    c0 = np.asarray(centre, np.float32)

    def f(X, Y, Z):
        d = main.sdf(X, Y, Z)
        for q in parts:
            d = _smin(d, q.sdf(X, Y, Z), 6.0)
        if irregularity_mm > 0:
            d = d - irregularity_mm * _field(seed, 0, surface_mm, X - c0[0], Y - c0[1], Z - c0[2], stretch=2.0)
        return d

    boxes = [main.bbox] + [q.bbox for q in parts]
    m = 3.0 * irregularity_mm + 6.0
    bb = (min(b[0] for b in boxes) - m, max(b[1] for b in boxes) + m, min(b[2] for b in boxes) - m,
          max(b[3] for b in boxes) + m, min(b[4] for b in boxes) - m, max(b[5] for b in boxes) + m)
    return Func(f, bb)


_GRID = 26   # points per side of the measuring grid
_POOL = 12   # distinct random-field tiles per field kind (cached); each tumour shifts its tile by its own offset


def _measure(prim: Func) -> tuple[float, np.ndarray, tuple[float, float]]:
    """(volume in local mm^3, centroid local mm, (lowest, highest) x of the inside, mm) of ``prim``, counted on
    a regular grid of its box (cell centres; 26 per side, i.e. cells of about 3-6 mm for these tumours; volume
    within a few per cent)."""
    b = np.asarray(prim.bbox, np.float64)
    lo, hi = b[0::2], b[1::2]
    step = (hi - lo) / _GRID
    axes = [(lo[i] + (np.arange(_GRID) + 0.5) * step[i]).astype(np.float32) for i in range(3)]
    X, Y, Z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    inside = np.broadcast_to(prim.sdf(X, Y, Z), (_GRID,) * 3) < 0
    vol = float(inside.sum()) * float(np.prod(step))
    if not inside.any():
        return vol, (lo + hi) / 2, (float(lo[0]), float(lo[0]))
    idx = np.argwhere(inside)
    xs = lo[0] + (idx[:, 0] + 0.5) * step[0]
    return vol, lo + (idx.mean(axis=0) + 0.5) * step, (float(xs.min()), float(xs.max()))


def sample_tumour(rng: np.random.Generator, cls: str, sac: SacrumLike, scale: float, *, age: float = 55.0,
                  sex: str = "M") -> TumourParamsV2:
    """Draw a v2 tumour of class ``cls`` in the sacrum ``sac`` of a patient of size ``scale``.

    ``age`` (years) and ``sex`` set a metastasis's likely primary (its matrix). Geometry in pelvis-local mm
    (before ``scale``); the drawn volume (mL) is the physical one, :meth:`TumourParamsV2.volume_ml`.
    """
    if cls not in TUMOUR_CLASSES:
        raise ValueError(f"unknown tumour class {cls!r}; expected one of {TUMOUR_CLASSES}")
    if sex not in ("M", "F") or not (0.0 <= age <= 120.0) or not (0.5 < scale < 2.0):
        raise ValueError(f"implausible patient: age {age}, sex {sex!r}, scale {scale}")
    level, lat = _location(rng, cls, sac)
    matrix = _matrix(rng, cls, age, sex)
    vol_ml = _VOLUME[cls] * _MATRIX_SIZE[matrix] * math.exp(0.6 * (level - 0.35) + rng.normal(0.0, 0.8))
    vol_ml = clip(vol_ml, 10.0, 900.0)
    size = (vol_ml / 150.0) ** 0.35     # > 1 for large tumours: more cysts, more extension

    # main body inside the bone (ap within the sacrum); components outside it
    ap = rng.uniform(-0.4, 0.4)
    centre = np.asarray(sac.point(level, lat, ap), float)
    front = np.asarray(sac.point(level, lat, -1.0), float)
    back = np.asarray(sac.point(level, lat, 1.0), float)
    components: list[tuple[float, ...]] = []
    ext_frac = 0.0
    p_ext = clip(_P_EXTENSION[cls] * size, 0.0, 0.95)
    if rng.random() < p_ext:
        ext_frac = float(rng.uniform(0.15, 0.6))
        comps = [(-1.0, ext_frac)]
        if rng.random() < _P_POSTERIOR.get(cls, 0.15):
            comps.append((1.0, ext_frac * rng.uniform(0.2, 0.5)))
        for direction, frac in comps:
            r = (3.0 * frac * vol_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0) / scale
            asp = np.exp(rng.normal(0.0, 0.2, size=3))
            asp = asp / np.prod(asp) ** (1.0 / 3.0)
            surf = front if direction < 0 else back
            out = (surf - centre) / (np.linalg.norm(surf - centre) + 1e-6)
            c = surf + out * r * rng.uniform(0.3, 0.8)
            components.append((*map(float, c), *(float(r * a) for a in asp)))
    main_ml = vol_ml * (1.0 - 0.6 * ext_frac)

    n_lobes = int(min(rng.poisson(_LOBES[cls]), 7))
    lobes = []
    for _ in range(n_lobes):
        u = random_unit(rng)
        lobes.append((float(u[0]), float(u[1]), float(u[2]), float(rng.uniform(0.04, 0.25))))
    aspect = np.exp(rng.normal(0.0, 0.2, size=3))
    aspect = aspect / np.prod(aspect) ** (1.0 / 3.0)
    angle = float(rng.uniform(-40, 40))
    ill = bool(rng.random() < _P_ILL[cls])
    irregularity = float(rng.gamma(2.0, 1.1 if ill else 0.5))
    surface_mm = 3.0                    # one grain: the cached tiles stay few (the offset varies the field)
    seed = int(rng.integers(0, 2**31 - 64))
    r_eq = (3.0 * main_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0) / scale
    radii = tuple(float(r_eq * a) for a in aspect)
    # lobes, overlap and the smooth union change the volume: one correction of all radii (centres kept) towards
    # the drawn volume; the measured volume is the tumour's (lobe_factor), so volume_ml() is exact
    prim = _shape(centre, radii, angle, lobes, components, irregularity, surface_mm, seed)
    v_local, _, _ = _measure(prim)
    k = clip((vol_ml * 1000.0 / scale ** 3 / max(v_local, 1.0)) ** (1.0 / 3.0), 0.75, 1.33)
    radii = tuple(float(r * k) for r in radii)
    components = [tuple(float(v) for v in (*c[:3], *(r * k for r in c[3:6]))) for c in components]
    prim = _shape(centre, radii, angle, lobes, components, irregularity, surface_mm, seed)
    v_local, centroid, _ = _measure(prim)
    # the bony part (main body, lobes aside) across the midline / beyond the ala at its level (into the SI joint)
    mid = np.asarray(sac.point(level, 0.0, 0.0))
    half_width = float(np.linalg.norm(np.asarray(sac.point(level, 1.0, 0.0)) - mid))
    t_ = math.radians(angle)
    x_half = math.hypot(radii[0] * math.cos(t_), radii[1] * math.sin(t_))
    crosses_midline = bool(abs(centre[0] - mid[0]) < x_half)
    crosses_si = bool(level < 0.5 and abs(centre[0] - mid[0]) + x_half > half_width)   # the joint spans S1-S3
    lobe_factor = v_local / (4.0 / 3.0 * math.pi * float(np.prod(radii)))

    # interior
    mu, sd = _BASE_HU[cls]
    base = float(rng.normal(mu, sd))
    if matrix == "sclerotic":
        base = float(rng.uniform(300, 800))
    texture_hu = float(rng.lognormal(math.log(12.0), 0.4))
    texture_mm = float(rng.choice([1.5, 2.5, 3.5]))
    margin_mm = float(rng.uniform(4.0, 12.0) if ill else rng.uniform(0.0, 2.0))
    p_rim, p_shell = _RIM[cls]
    u = rng.random()
    rim_mm, rim_hu = 0.0, 0.0
    if u < p_rim:
        rim_mm, rim_hu = float(rng.uniform(1.5, 4.0)), float(rng.uniform(250, 550))
    elif u < p_rim + p_shell:
        rim_mm, rim_hu = float(rng.uniform(0.7, 1.5)), float(rng.uniform(300, 700))
    a_res, b_res = _RESIDUAL[cls]
    residual = float(rng.beta(a_res, b_res))

    rmin = min(radii)
    elements: list[tuple[float, ...]] = []

    def inside_point(frac: float) -> np.ndarray:
        q = random_unit(rng) * rng.uniform(0.0, 1.0) ** (1.0 / 3.0) * frac
        return q * np.asarray(radii)

    if matrix == "lytic_specks":
        for _ in range(int(rng.integers(3, 15))):
            elements.append((*inside_point(0.85), rng.uniform(1.0, 2.4), 0, rng.uniform(250, 700), 0, 0, 1))
    elif matrix == "chondroid":
        for _ in range(int(rng.integers(5, 22))):
            p, n = inside_point(0.85), random_unit(rng)
            elements.append((*p, rng.uniform(2.5, 6.0), 1, rng.uniform(400, 950), *n))
    elif matrix == "osteoid":
        for _ in range(int(rng.integers(2, 7))):
            elements.append((*inside_point(0.6), rng.uniform(0.2, 0.45) * rmin, 2, rng.uniform(350, 1000), 0, 0, 1))
    elif matrix == "mixed":
        for _ in range(int(rng.integers(3, 9))):
            elements.append((*inside_point(0.8), rng.uniform(0.1, 0.25) * rmin, 2, rng.uniform(250, 700), 0, 0, 1))
    p_cyst, p_small = _CYST[cls]
    n_cysts, cyst_vol = 0, 0.0
    if matrix != "sclerotic" and rng.random() < clip(p_cyst * size, 0.0, 0.95):
        kind = "small" if rng.random() < p_small else "large"
        n_cysts = int(rng.integers(1, 3)) if kind == "large" else int(rng.integers(2, 9))
        for _ in range(n_cysts):
            r = (rng.uniform(0.3, 0.6) if kind == "large" else rng.uniform(0.1, 0.25)) * rmin
            p = inside_point(0.35 if kind == "large" else 0.75)
            elements.append((*p, r, 3, rng.uniform(0, 22), 0, 0, 1))
            cyst_vol += 4.0 / 3.0 * math.pi * r ** 3
    cyst_fraction = clip(cyst_vol / (4.0 / 3.0 * math.pi * float(np.prod(radii))), 0.0, 1.0)

    sats: list[tuple[float, ...]] = []
    if rng.random() < _P_SATELLITES.get(cls, 0.1):
        metastatic = cls == "metastasis"
        for _ in range(1 + int(rng.poisson(1.2 if metastatic else 0.3))):
            where = rng.random()
            if where < 0.4:      # elsewhere in the sacrum
                q = sac.point(float(rng.uniform(0.0, 0.8)), float(rng.uniform(-0.8, 0.8)),
                              float(rng.uniform(-0.3, 0.3)))
            elif where < 0.75:   # ilium beside the SI joint
                side = 1.0 if rng.random() < 0.5 else -1.0
                q = sac.point(float(rng.uniform(0.05, 0.4)), side * float(rng.uniform(1.35, 1.7)), 0.0)
            else:                # L5 body (above the top of S1)
                top = np.asarray(sac.point(0.0, 0.0, -0.3))
                q = tuple(top + np.array([rng.normal(0, 5), rng.normal(0, 4), rng.uniform(18, 35)]))
            r = float(rng.uniform(4.0, 12.0) if metastatic else rng.uniform(2.5, 6.0))
            if metastatic and matrix != "sclerotic":
                hu = float(rng.uniform(20, 60) if matrix != "mixed" or rng.random() < 0.5 else rng.uniform(400, 800))
            else:
                hu = float(rng.uniform(500, 900))
            sats.append((*map(float, q), r, hu))

    lr = "midline" if abs(lat) < 0.25 else ("left" if lat > 0 else "right")
    site = (f"{_level_name(level)} {lr} {'with soft-tissue mass' if components else 'intraosseous'}"
            f"{', across the midline' if crosses_midline and lr != 'midline' else ''}"
            f"{', across the SI joint' if crosses_si else ''}")
    typical_matrix = (matrix in ("lytic", "sclerotic", "mixed") if cls == "metastasis"
                      else matrix == MATRICES[int(np.argmax(_MATRIX_P[cls]))])
    return TumourParamsV2(
        cls=cls, centre_mm=tuple(float(v) for v in centre), radii_mm=radii, angle_deg=angle,
        lobes=tuple(lobes), lobe_factor=float(lobe_factor), matrix=matrix, margin="ill" if ill else "well",
        base_hu=base, shell_hu=rim_hu, elements=tuple(tuple(float(v) for v in e) for e in elements),
        typical_location=_typical_location(cls, level, lat), typical_matrix=bool(typical_matrix), site=site,
        components=tuple(components), centroid_mm=tuple(float(v) for v in centroid), irregularity_mm=irregularity,
        surface_mm=surface_mm, seed=seed, texture_hu=texture_hu, texture_mm=texture_mm, margin_mm=margin_mm,
        rim_mm=rim_mm, residual=residual, satellite_lesions=tuple(sats), n_cysts=n_cysts,
        cyst_fraction=cyst_fraction, extension_fraction=ext_frac,
        crosses_midline=crosses_midline, crosses_si=crosses_si, level=float(level), lateral=float(lat))


def _typical_location(cls: str, level: float, lat: float) -> bool:
    """Whether the location is the textbook one of ``cls`` (for analyses only; the draw does not use it)."""
    upper, mid = level < 0.45, abs(lat) < 0.25
    return {"metastasis": upper, "chondrosarcoma": upper and not mid, "osteosarcoma": level < 0.6,
            "chordoma": mid and level > 0.5, "neurogenic_tumour": not mid and 0.1 < level < 0.75,
            "giant_cell_tumour": upper and not mid}[cls]


# --- render hooks -----------------------------------------------------------------------------------------------
def tumour_prim(t: TumourParamsV2) -> Func:
    """The tumour's shape (local mm): main body, soft-tissue components and surface irregularity."""
    return _shape(t.centre_mm, t.radii_mm, t.angle_deg, t.lobes, t.components, t.irregularity_mm, t.surface_mm,
                  t.seed)


def tumour_hu(t: TumourParamsV2, X, Y, Z, dist_mm: np.ndarray, voxel_mm: float, scale: float) -> np.ndarray:
    """Tumour HU at local points ``X, Y, Z`` (broadcastable to ``dist_mm``): base density with a random-field
    texture, mineralisation and cyst elements, and the rim/shell. ``dist_mm`` is the physical signed distance to
    the surface, ``voxel_mm`` the in-plane voxel size, ``scale`` the patient's."""
    c = t.centre_mm
    dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
    tex = _field(t.seed, 1, t.texture_mm, dx, dy, dz)
    V = np.broadcast_to((t.base_hu + t.texture_hu * tex).astype(np.float32), dist_mm.shape).copy()
    for e in t.elements:
        ex, ey, ez, r, kind, hu, nx, ny, nz = e
        qx, qy, qz = dx - ex, dy - ey, dz - ez
        dd = np.sqrt(qx * qx + qy * qy + qz * qz)
        if int(kind) == 2:
            V += (hu * np.exp(-0.5 * (dd / r) ** 2)).astype(np.float32)
            continue
        if int(kind) == 1:
            sd = np.maximum(np.abs(dd - r) - 0.8, -(qx * nx + qy * ny + qz * nz) - 0.3 * r)
        else:
            sd = dd - r
        occ = np.clip(0.5 - sd * scale / voxel_mm, 0.0, 1.0)
        V += occ * (hu - V)
    if t.rim_mm > 0 and t.shell_hu > 0:
        frac = np.clip(0.5 - dist_mm / voxel_mm, 0.0, 1.0) - np.clip(0.5 - (dist_mm + t.rim_mm) / voxel_mm, 0.0, 1.0)
        V = V + frac * (t.shell_hu - V)
    return np.minimum(V, 1600.0)


def margin_width_mm(t: TumourParamsV2, voxel_mm: float) -> float:
    """Width (mm) of the transition into the surroundings: the drawn ``margin_mm``, at least one voxel."""
    return max(voxel_mm, t.margin_mm)


def residual_alpha(t: TumourParamsV2, alpha: np.ndarray, hu_before: np.ndarray, X, Y, Z) -> np.ndarray:
    """Tumour opacity ``alpha`` (D-H-W, 0..1) reduced where fragments of the destroyed bone remain: a random
    field thresholded to the fraction ``t.residual``, only where the scene was bone (``hu_before`` above about
    120 HU), so that the fragments keep the patient's own bone density."""
    if t.residual <= 0:
        return alpha
    c = t.centre_mm
    f = _field(t.seed, 2, 1.6, X - c[0], Y - c[1], Z - c[2])
    thr = float(-math.sqrt(2.0) * _erfinv(2.0 * t.residual - 1.0))   # P(f > thr) = residual for a unit normal
    keep = np.clip((f - thr) * 2.0, 0.0, 1.0) * np.clip((hu_before - 120.0) / 100.0, 0.0, 1.0)
    return alpha * (1.0 - keep)


def satellites(t: TumourParamsV2) -> list[tuple[Prim, float]]:
    """Other lesions (shape, HU) to paint without the tumour label: multifocal metastases or bone islands."""
    return [(Ellipsoid((x, y, z), (r, r, r * 1.2)), hu) for x, y, z, r, hu in t.satellite_lesions]


def displace(t: TumourParamsV2, pts, radius_mm: float, clearance_mm: float = 2.0) -> np.ndarray:
    """Mass effect: organ points ``pts`` (N, 3, local mm) of an organ of radius ``radius_mm`` pushed away from
    the tumour's centroid until they clear its surface by ``radius_mm + clearance_mm`` (or stay where they are)."""
    pts = np.atleast_2d(np.asarray(pts, float)).copy()
    prim = tumour_prim(t)
    c = np.asarray(t.centroid_mm, float)
    for _ in range(4):
        d = prim.sdf(pts[:, 0].astype(np.float32), pts[:, 1].astype(np.float32), pts[:, 2].astype(np.float32))
        need = radius_mm + clearance_mm - np.asarray(d, float)
        if not np.any(need > 0.5):
            break
        u = pts - c
        u /= np.linalg.norm(u, axis=1, keepdims=True) + 1e-6
        pts += u * np.clip(need, 0.0, None)[:, None] * 0.8
    return pts


# --- oracle features (calibration) --------------------------------------------------------------------------------
IMAGE_FEATURES: tuple[str, ...] = (
    *(f"matrix_{m}" for m in MATRICES), "base_hu", "texture_hu", "texture_mm", "n_lobes", "lobe_amplitude",
    "elongation", "irregularity_mm", "margin_mm", "rim_hu", "rim_mm", "n_cysts", "cyst_fraction",
    "n_mineral", "mineral_hu", "residual", "extension_fraction", "n_satellites")
LOCATION_FEATURES: tuple[str, ...] = ("x_mm", "y_mm", "z_mm")


def image_features(t: TumourParams) -> dict[str, float]:
    """What the image can tell of tumour ``t`` (v1 or v2), as numbers: the oracle of the calibration tests."""
    v2 = isinstance(t, TumourParamsV2)
    r = np.asarray(t.radii_mm, float)
    mineral = [e for e in t.elements if int(e[4]) in (0, 1, 2)]
    cysts = [e for e in t.elements if int(e[4]) == 3]
    f: dict[str, float] = {f"matrix_{m}": float(t.matrix == m) for m in MATRICES}
    f.update(
        base_hu=t.base_hu,
        texture_hu=t.texture_hu if v2 else 0.12 * abs(t.base_hu) + 6.0,
        texture_mm=t.texture_mm if v2 else 5.0,
        n_lobes=float(len(t.lobes)),
        lobe_amplitude=float(np.mean([lb[3] for lb in t.lobes])) if t.lobes else 0.0,
        elongation=float(r.max() / max(r.min(), 1e-6)),
        irregularity_mm=t.irregularity_mm if v2 else 0.0,
        margin_mm=t.margin_mm if v2 else (0.0 if t.margin == "well" else 8.0),
        rim_hu=t.shell_hu,
        rim_mm=t.rim_mm if v2 else (1.2 if t.shell_hu > 0 else 0.0),
        n_cysts=float(len(cysts)),
        cyst_fraction=t.cyst_fraction if v2 else float(sum(e[3] ** 3 for e in cysts) / max(float(np.prod(r)), 1e-6)),
        n_mineral=float(len(mineral)),
        mineral_hu=float(np.mean([e[5] for e in mineral])) if mineral else 0.0,
        residual=t.residual if v2 else 0.0,
        extension_fraction=t.extension_fraction if v2 else 0.0,
        n_satellites=float(len(t.satellite_lesions)) if v2 else 0.0,
    )
    return f


def location_features(t: TumourParams) -> dict[str, float]:
    """Tumour centroid (local mm): what the hip-frame location measures (v1: the centre)."""
    c = t.centroid_mm if isinstance(t, TumourParamsV2) else t.centre_mm
    return {"x_mm": float(c[0]), "y_mm": float(c[1]), "z_mm": float(c[2])}
