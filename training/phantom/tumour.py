"""Sacral tumours of the phantoms: class-dependent demographics, placement, shape and interior.

Everything about the tumour world lives here, behind three functions the rest of the package calls:
:func:`sample_demographics` (age, sex given the class), :func:`sample_tumour` (a :class:`TumourParams`, placed
with a :class:`SacrumLike` of the patient's own deformed sacrum) and, at render time, :func:`tumour_prim` (its
shape) and :func:`tumour_hu` (its interior HU).

This is tumour world "v1" (the default). World "v2" (:mod:`training.phantom.tumour_v2`, selected with
``tumour_world="v2"``) removes v1's tells; its parameters are a subclass, :class:`~training.phantom.tumour_v2.
TumourParamsV2`, and the render hooks here (:func:`tumour_prim`, :func:`tumour_hu`, :func:`margin_width_mm`,
:func:`residual_alpha`, :func:`satellites`, :func:`displace`) hand such a tumour to that module; for a v1 tumour
they compute exactly what they always did.

Geometry is in the pelvis-local frame (mm, L/P/S; see :mod:`training.phantom.template`), before the patient's
``scale``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from training.phantom.draws import clip, random_unit
from training.phantom.shapes import Func, Prim, ell_sdf

NO_TUMOUR = "none"
#: the tumour worlds a generator can draw from ("v1": this module, the default; "v2": :mod:`tumour_v2`)
TUMOUR_WORLDS: tuple[str, ...] = ("v1", "v2")


def check_world(world: str) -> str:
    """``world`` if it is one of :data:`TUMOUR_WORLDS`, else ValueError."""
    if world not in TUMOUR_WORLDS:
        raise ValueError(f"unknown tumour world {world!r}; expected one of {TUMOUR_WORLDS}")
    return world


class SacrumLike(Protocol):
    """The patient's sacrum as tumour placement needs it (pelvis-local mm)."""

    FORAMINA_LEVELS: tuple[float, ...]

    def point(self, level: float, lateral: float, ap: float) -> tuple[float, float, float]:
        """Local point at ``level`` (0 top of S1 .. 1 coccyx tip), ``lateral`` (fraction of the half width,
        + = left) and ``ap`` (fraction of the half depth from the centre line, + = posterior)."""
        ...

    def foramen_lateral(self, i: int) -> float:
        """Lateral position of the i-th pair of anterior sacral foramina (fraction of the half width)."""
        ...


@dataclass(frozen=True)
class TumourParams:
    """One tumour. ``radii_mm`` are local mm; the physical volume is :meth:`volume_ml`."""

    WORLD: ClassVar[str] = "v1"
    cls: str
    centre_mm: tuple[float, float, float] = (0.0, 60.0, 30.0)
    radii_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    angle_deg: float = 0.0                        # in-plane rotation of the ellipsoid axes
    lobes: tuple[tuple[float, float, float, float], ...] = ()   # (ux, uy, uz, amplitude)
    lobe_factor: float = 1.0                      # volume of the lobulated shape / volume of the ellipsoid
    matrix: str = "none"     # lytic | lytic_specks | soft | sclerotic | mixed | chondroid | osteoid
    margin: str = "well"     # well | ill
    base_hu: float = 35.0
    shell_hu: float = 0.0    # thin expansile shell / sclerotic rim HU (0: none)
    elements: tuple[tuple[float, ...], ...] = ()  # (dx,dy,dz,r,kind,hu,nx,ny,nz); kind 0 speck 1 arc 2 cloud 3 cyst
    typical_location: bool = True
    typical_matrix: bool = True
    site: str = ""

    def volume_ml(self, scale: float) -> float:
        """Physical volume (mL) of the analytic shape (ellipsoid x lobulation factor) at patient ``scale``."""
        a, b, c = self.radii_mm
        return float(4.0 / 3.0 * math.pi * a * b * c * self.lobe_factor * scale ** 3 / 1000.0)

    def manifest_fields(self) -> dict[str, Any]:
        """Columns of the cohort manifest that describe this tumour (ground truth for analyses)."""
        return {"tumour_matrix": self.matrix, "tumour_margin": self.margin, "tumour_site": self.site,
                "tumour_typical_location": int(self.typical_location),
                "tumour_typical_matrix": int(self.typical_matrix)}


#: manifest columns of :meth:`TumourParams.manifest_fields`, in order (empty values without a tumour)
MANIFEST_FIELDS: tuple[str, ...] = ("tumour_matrix", "tumour_margin", "tumour_site", "tumour_typical_location",
                                    "tumour_typical_matrix")


# age: (mean, sd, min, max) per class; osteosarcoma is a young/old mixture (primary / secondary)
_AGE = {"metastasis": (63, 12, 30, 90), "chordoma": (58, 13, 25, 88), "chondrosarcoma": (50, 14, 18, 85),
        "neurogenic_tumour": (46, 14, 16, 82), "giant_cell_tumour": (35, 11, 14, 72), NO_TUMOUR: (55, 16, 18, 90)}
_OSTEO_AGE = (0.62, (23, 8), (54, 15))   # P(young), young (mean, sd), older (mean, sd)
_P_MALE = {"metastasis": 0.55, "chordoma": 0.63, "chondrosarcoma": 0.6, "osteosarcoma": 0.56,
           "neurogenic_tumour": 0.48, "giant_cell_tumour": 0.4, NO_TUMOUR: 0.5}


def sample_demographics(rng: np.random.Generator, cls: str) -> tuple[int, str]:
    """(age in years, sex "M"/"F") of a patient with a tumour of class ``cls`` (or ``"none"``)."""
    if cls == "osteosarcoma":
        p_young, young, old = _OSTEO_AGE
        a = rng.normal(*young) if rng.random() < p_young else rng.normal(*old)
        age = int(round(clip(a, 9, 85)))
    else:
        mu, sd, lo, hi = _AGE[cls]
        age = int(round(clip(rng.normal(mu, sd), lo, hi)))
    sex = "M" if rng.random() < _P_MALE[cls] else "F"
    return age, sex


# median volume (mL) and log-sd per class
_VOLUME = {"metastasis": (90.0, 0.8), "chordoma": (170.0, 0.8), "chondrosarcoma": (220.0, 0.8),
           "osteosarcoma": (180.0, 0.8), "neurogenic_tumour": (100.0, 0.8), "giant_cell_tumour": (140.0, 0.8)}
_TYPICAL_MATRIX = {"metastasis": None, "chordoma": "lytic_specks", "chondrosarcoma": "chondroid",
                   "osteosarcoma": "osteoid", "neurogenic_tumour": "soft", "giant_cell_tumour": "lytic"}
# matrices an atypical case of each class borrows (radiological mimics)
_MIMIC_MATRIX = {"metastasis": ("lytic_specks", "chondroid", "osteoid"), "chordoma": ("chondroid", "lytic", "soft"),
                 "chondrosarcoma": ("lytic_specks", "lytic", "osteoid"),
                 "osteosarcoma": ("sclerotic", "mixed", "chondroid"),
                 "neurogenic_tumour": ("lytic", "lytic_specks"), "giant_cell_tumour": ("soft", "lytic_specks", "mixed")}
P_TYPICAL_LOCATION = 0.75
P_TYPICAL_MATRIX = 0.78


def _level_name(level: float) -> str:
    return ["S1", "S1", "S2", "S2", "S3", "S4", "S5", "Co", "Co", "Co"][min(int(level * 10), 9)]


def sample_tumour(rng: np.random.Generator, cls: str, sac: SacrumLike, scale: float) -> TumourParams:
    """Draw a tumour of class ``cls`` in the sacrum ``sac`` of a patient of size ``scale``."""
    med, lsd = _VOLUME[cls]
    vol_ml = clip(med * math.exp(rng.normal(0.0, lsd)), 8.0, 700.0)
    typical_loc = bool(rng.random() < P_TYPICAL_LOCATION)
    typical_mat = bool(rng.random() < P_TYPICAL_MATRIX)
    side = 1.0 if rng.random() < 0.5 else -1.0
    aspect = np.exp(rng.normal(0.0, 0.15, size=3))
    lobes: list[tuple[float, float, float, float]] = []
    shell = 0.0
    if not typical_loc:
        level, lat, ap = rng.uniform(0.0, 0.9), rng.uniform(-1.0, 1.0), rng.uniform(-1.2, 0.5)
    elif cls == "chordoma":
        level, lat, ap = rng.uniform(0.55, 0.95), rng.normal(0.0, 0.15), rng.uniform(-1.4, -0.6)
        aspect = aspect * np.array([0.9, 1.1, 1.1])
    elif cls == "giant_cell_tumour":
        level, lat, ap = rng.uniform(0.0, 0.35), side * rng.uniform(0.35, 0.8), rng.uniform(-0.3, 0.3)
    elif cls == "neurogenic_tumour":
        fi = int(rng.choice(len(sac.FORAMINA_LEVELS), p=[0.35, 0.3, 0.2, 0.15]))
        level = float(sac.FORAMINA_LEVELS[fi])
        lat = side * sac.foramen_lateral(fi)
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
    p_ill = {"metastasis": 0.6, "osteosarcoma": 0.7, "chordoma": 0.25, "chondrosarcoma": 0.3,
             "neurogenic_tumour": 0.05, "giant_cell_tumour": 0.15}[cls]
    margin = "ill" if rng.random() < p_ill else "well"
    n_lobes, lobe_amp = {"chondrosarcoma": (5, (0.15, 0.3)), "chordoma": (4, (0.1, 0.25)),
                         "osteosarcoma": (3, (0.05, 0.2)), "metastasis": (3, (0.05, 0.15)),
                         "giant_cell_tumour": (2, (0.0, 0.08)), "neurogenic_tumour": (0, (0.0, 0.0))}[cls]
    if cls == "neurogenic_tumour":
        aspect = np.exp(rng.normal(0.0, 0.05, size=3))
    for _ in range(n_lobes):
        u = random_unit(rng)
        lobes.append((float(u[0]), float(u[1]), float(u[2]), float(rng.uniform(*lobe_amp))))
    aspect = aspect / np.prod(aspect) ** (1.0 / 3.0)
    angle = float(rng.uniform(-30, 30))
    # lobulation changes the volume: measure it (fixed Monte-Carlo points) and rescale the radii so the
    # lobulated tumour has the drawn volume
    unit = lobulated((0, 0, 0), aspect, angle, lobes)
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
        u = random_unit(rng) * rng.uniform(0.0, 1.0) ** (1.0 / 3.0) * frac
        return u * np.asarray(radii)

    if matrix == "lytic_specks":
        for _ in range(int(rng.integers(4, 14))):
            p = inside_point(0.85)
            elements.append((*p, rng.uniform(1.0, 2.2), 0, rng.uniform(300, 700), 0, 0, 1))
    elif matrix == "chondroid":
        for _ in range(int(rng.integers(8, 22))):
            p, n = inside_point(0.85), random_unit(rng)
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
    return TumourParams(cls=cls, centre_mm=tuple(float(v) for v in centre), radii_mm=radii, angle_deg=angle,
                        lobe_factor=float(lobe_factor), lobes=tuple(lobes), matrix=matrix, margin=margin,
                        base_hu=float(base), shell_hu=float(shell),
                        elements=tuple(tuple(float(v) for v in e) for e in elements),
                        typical_location=typical_loc, typical_matrix=typical_mat, site=site)


def lobulated(centre, radii, angle_deg: float, lobes_) -> Func:
    """Ellipsoid (rotated in-plane by ``angle_deg``) with radial bumps ``lobes_`` (ux, uy, uz, amplitude)."""
    c = np.asarray(centre, np.float32)
    r = np.asarray(radii, np.float32)
    t = math.radians(angle_deg)
    ct, st = math.cos(t), math.sin(t)
    lobes = np.asarray(lobes_, np.float32).reshape(-1, 4)
    rmean = float(np.mean(r))

    def f(X, Y, Z):
        dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
        u, v = ct * dx + st * dy, -st * dx + ct * dy
        d = ell_sdf(u, v, dz, *r)
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


def _v2(t: TumourParams):
    """The v2 module when ``t`` is a v2 tumour, else None (imported lazily: it imports this module)."""
    if t.WORLD == "v1":
        return None
    from training.phantom import tumour_v2
    return tumour_v2


def tumour_prim(t: TumourParams) -> Func:
    """The tumour's shape (local mm)."""
    if (v2 := _v2(t)) is not None:
        return v2.tumour_prim(t)
    return lobulated(t.centre_mm, t.radii_mm, t.angle_deg, t.lobes)


def tumour_hu(t: TumourParams, X, Y, Z, dist_mm: np.ndarray, voxel_mm: float, scale: float) -> np.ndarray:
    """Tumour HU at local points ``X, Y, Z`` (broadcastable to ``dist_mm``'s shape): matrix, calcifications,
    cysts, heterogeneity and the shell. ``dist_mm`` is the physical signed distance to the tumour surface,
    ``voxel_mm`` the in-plane voxel size (partial volume of the small elements), ``scale`` the patient's."""
    if (v2 := _v2(t)) is not None:
        return v2.tumour_hu(t, X, Y, Z, dist_mm, voxel_mm, scale)
    c = t.centre_mm
    dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
    base = t.base_hu
    het = 0.12 * abs(base) + 6.0
    V = (base + het * np.sin(0.21 * dx + 1.3) * np.sin(0.17 * dy + 0.4) * np.sin(0.19 * dz + 2.1)).astype(np.float32)
    V = np.broadcast_to(V, dist_mm.shape).copy()
    for e in t.elements:
        ex, ey, ez, r, kind, hu, nx, ny, nz = e
        qx, qy, qz = dx - ex, dy - ey, dz - ez
        dd = np.sqrt(qx * qx + qy * qy + qz * qz)
        if int(kind) == 2:  # osteoid cloud / mixed sclerotic blob
            V += (hu * np.exp(-0.5 * (dd / r) ** 2)).astype(np.float32)
            continue
        if int(kind) == 1:  # ring/arc: thin spherical shell, partial
            sd = np.maximum(np.abs(dd - r) - 0.8, -(qx * nx + qy * ny + qz * nz) - 0.3 * r)
        else:
            sd = dd - r
        occ = np.clip(0.5 - sd * scale / voxel_mm, 0.0, 1.0)
        V += occ * (hu - V)
    if t.shell_hu > 0:
        shell_frac = np.clip(0.5 - dist_mm / voxel_mm, 0.0, 1.0) - np.clip(0.5 - (dist_mm + 1.2) / voxel_mm, 0.0, 1.0)
        V = V + shell_frac * (t.shell_hu - V)
    return np.minimum(V, 1600.0)


def margin_width_mm(t: TumourParams, voxel_mm: float) -> float:
    """Width (mm) of the tumour's transition into its surroundings: one voxel if well defined, wider if not."""
    if (v2 := _v2(t)) is not None:
        return v2.margin_width_mm(t, voxel_mm)
    return voxel_mm if t.margin == "well" else max(8.0, 3.0 * voxel_mm)


def residual_alpha(t: TumourParams, alpha: np.ndarray, hu_before: np.ndarray, X, Y, Z) -> np.ndarray:
    """Tumour opacity (0..1, D-H-W) after leaving fragments of the destroyed bone (``hu_before``: the scene's HU
    before the tumour is painted; ``X, Y, Z`` local mm). v1 leaves none: ``alpha`` itself is returned."""
    if (v2 := _v2(t)) is not None:
        return v2.residual_alpha(t, alpha, hu_before, X, Y, Z)
    return alpha


def satellites(t: TumourParams) -> list[tuple[Prim, float]]:
    """Other lesions of the patient (shape in local mm, HU), painted without the tumour label (v1: none)."""
    if (v2 := _v2(t)) is not None:
        return v2.satellites(t)
    return []


def displace(t: TumourParams, pts, radius_mm: float) -> np.ndarray:
    """Organ points (N, 3, local mm) of an organ of radius ``radius_mm`` after the tumour's mass effect
    (v1: none; the points are returned unchanged)."""
    if (v2 := _v2(t)) is not None:
        return v2.displace(t, pts, radius_mm)
    return np.atleast_2d(np.asarray(pts, float))
