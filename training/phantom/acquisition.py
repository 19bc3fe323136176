"""Acquisition as hospitals scan: coverage, field of view, position, scanner, kernel, noise and artefacts.

:func:`sample_scan` draws a :class:`ScanParams`; :func:`acquire` turns the "true" HU volume that the renderer
painted into what a scanner reconstructs: beam hardening and metal streaks (a small filtered-backprojection model
of the squared line integrals of dense material, plus photon-starvation noise through metal), the slice profile,
the reconstruction kernel (blur, and edge enhancement for sharp kernels) and correlated noise (coarser grain for
iterative reconstruction).

Ranges: 512 matrices at 0.6-1.0 mm pixels, 0.625-5 mm slices (``full_size``); the default (training) size renders
the same fields of view on 128-160 matrices, whose noise stands for a thin-slice scan smoothed to that grid.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage, sparse

from training.phantom.draws import clip
from training.phantom.params import PatientParams, ScanParams

# (manufacturer, model, (soft kernels), (sharp kernels), institution) per synthetic site
SITES: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...], str]] = {
    "SITE_A": ("SIEMENS", "SOMATOM Definition AS+", ("B30f", "I30f\\2", "Br40d"), ("B60f", "I70f\\2"),
               "Phantom University Hospital A"),
    "SITE_B": ("GE MEDICAL SYSTEMS", "LightSpeed VCT", ("STANDARD", "SOFT"), ("BONE", "BONEPLUS"),
               "Phantom General Hospital B"),
    "SITE_C": ("Philips", "iCT 256", ("B", "C"), ("D", "YB"), "Phantom Medical Centre C"),
    "SITE_D": ("TOSHIBA", "Aquilion ONE", ("FC08", "FC13"), ("FC30", "FC35"), "Phantom Clinic D"),
}
#: sites that :func:`sample_scan` never draws: the external-style cohort's (``site="SITE_E"``, docs/protocol.md):
#: a manufacturer, scanner model, kernel names and a deep-learning-reconstruction-like noise texture (coarser
#: grain, :data:`EXTERNAL_NOISE_GRAIN`) that no training or held-out study has
EXTERNAL_SITES: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...], str]] = {
    "SITE_E": ("UIH", "uCT 760", ("B_SOFT_AA", "B_SOFT_B"), ("B_SHARP_C",), "Phantom External Hospital E"),
}
EXTERNAL_NOISE_GRAIN = 1.5
#: coverage kinds and their probabilities
COVERAGE = {"pelvis": 0.5, "abdomen_pelvis": 0.25, "cut_acetabulum": 0.1, "cut_iliac_wing": 0.1, "low_pelvis": 0.05}
#: coverage kinds never drawn, only asked for (``coverage=``): "upper_abdomen" has no pelvis at all (a slab of
#: 30-260 mm, and at least 21 slices, starting 15-90 mm above the iliac crests), the negatives that teach the
#: hip-bone model that an abdomen without a pelvis holds no hip bone
FORCED_COVERAGE = ("upper_abdomen",)


def coverage_range(rng: np.random.Generator, kind: str, patient: PatientParams) -> tuple[float, float]:
    """(lowest, highest) physical mm along S relative to the pelvis-local origin for a coverage ``kind``, from
    this patient's own (deformed, tilted) hip bones."""
    from training.phantom.anatomy import hip_landmarks
    lm = hip_landmarks(patient)
    hip_lo, hip_hi, acetab = (lm[k] * patient.scale for k in ("lo", "hi", "acetabulum"))
    if kind == "abdomen_pelvis":
        return hip_lo - rng.uniform(15, 50), hip_hi + rng.uniform(180, 330)
    if kind == "cut_acetabulum":      # an abdominal scan that stops at the acetabulum
        return acetab + rng.uniform(-15, 15), hip_hi + rng.uniform(60, 250)
    if kind == "cut_iliac_wing":      # a scan that stops (or starts) inside the iliac wing
        if rng.random() < 0.7:
            return hip_hi - rng.uniform(50, 110), hip_hi + rng.uniform(100, 280)
        return hip_lo - rng.uniform(20, 60), hip_hi - rng.uniform(30, 70)
    if kind == "upper_abdomen":       # no pelvis: kidneys, liver, spleen, lumbar spine and ribs only
        lo = hip_hi + rng.uniform(15, 90)
        return lo, lo + rng.uniform(30, 260)
    if kind == "low_pelvis":          # from mid sacrum down to the thighs
        return hip_lo - rng.uniform(40, 120), hip_hi - rng.uniform(60, 90)
    return hip_lo - rng.uniform(20, 50), hip_hi + rng.uniform(10, 60)


PROTOCOLS = ("standard", "varied")


def sample_scan(rng: np.random.Generator, patient: PatientParams, full_size: bool = False,
                protocol: str = "standard", site: str | None = None, coverage: str | None = None) -> ScanParams:
    """Draw acquisition parameters for ``patient``.

    ``protocol``: ``"standard"`` is a routine pelvic CT (whole pelvis covered, head first, soft kernel);
    ``"varied"`` draws coverage (:data:`COVERAGE`: abdomen and pelvis, scans that stop at the acetabulum or in the
    iliac wing), sharp kernels (25 %) and feet-first patients (15 %) as well; a tumour is always covered.

    Default: 128 or 160 matrix over the clinical field of view (about 2-3.9 mm pixels), slices 2-5 mm.
    ``full_size``: 512 matrix (0.6-1.0 mm pixels), slices 0.625-5 mm (at most about 450 slices).
    ``site``: None draws one of :data:`SITES`; a name from :data:`EXTERNAL_SITES` scans every patient there (the
    same random draws as without it, so a cohort differs only in its scanner: names, kernels, noise texture).
    ``coverage``: None draws the coverage (varied protocol) or scans the pelvis (standard); a kind from
    :data:`COVERAGE` or :data:`FORCED_COVERAGE` scans that range instead (same draws). A tumour is still covered.
    """
    s = patient.scale
    drawn = str(rng.choice(list(SITES)))
    if site is not None and site not in EXTERNAL_SITES:
        raise ValueError(f"site must be None or one of {sorted(EXTERNAL_SITES)}, got {site!r}")
    site = site or drawn
    manufacturer, model, soft, sharp, institution = {**SITES, **EXTERNAL_SITES}[site]
    drawn_soft, drawn_sharp = SITES[drawn][2], SITES[drawn][3]
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    varied = protocol == "varied"
    is_sharp = bool(rng.random() < 0.25) and varied
    kernels = sharp if is_sharp else soft
    # the index is drawn over the drawn site's kernels (bounded draws consume the generator by their bound)
    kernel = kernels[int(rng.integers(0, len(drawn_sharp if is_sharp else drawn_soft))) % len(kernels)]
    iterative = bool(rng.random() < 0.5)
    kinds = list(COVERAGE)
    kind = str(rng.choice(kinds, p=np.array([COVERAGE[k] for k in kinds]))) if varied else "pelvis"
    if coverage is not None:
        if coverage not in (*COVERAGE, *FORCED_COVERAGE):
            raise ValueError(f"coverage must be None or one of {[*COVERAGE, *FORCED_COVERAGE]}, got {coverage!r}")
        kind = coverage
    lo, hi = coverage_range(rng, kind, patient)
    if patient.tumour is not None:   # a scan ordered for a sacral tumour covers its centre
        zt = patient.tumour.centre_mm[2] * s
        if not lo + 15.0 < zt < hi - 15.0:
            kind = "pelvis"
            lo, hi = coverage_range(rng, kind, patient)
    b = patient.body
    body_half = (158.0 * b.body_width * patient.shape.width + 25.0 * b.visceral_fat + b.fat_mm) * s
    fov = clip(2 * body_half + rng.uniform(-40, 90), 300.0, 500.0)
    off = rng.normal(0, 15, size=2) if rng.random() < 0.8 else rng.uniform(-60, 60, size=2)
    tx, ty = float(off[0]), float(off[1]) * 0.6
    tz = rng.uniform(-450, 50)
    rot = clip(rng.normal(0, 5), -15, 15)
    if full_size:
        matrix = 512
        spacing = float(rng.choice([0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0], p=[0.1, 0.25, 0.15, 0.1, 0.15, 0.15, 0.1]))
        spacing = max(spacing, (hi - lo) / 450.0)
        # thickness at most 5 mm (issue 12: slices of 0.625-5 mm); before 1 Dec 2026 a 5 mm spacing could get
        # 6.25 mm slices, which the application rightly refuses (app.yaml slice_thickness_mm: at most 6 mm): 1 of
        # the 40 external-style and several of the 100 held-out studies of models 0.6.1 were such series
        thickness = min(5.0, float(rng.choice([spacing, spacing * 1.25, max(spacing, 1.25)])))
        if not varied:   # the routine thin-slice pelvis: 1 mm slices over at least 305 mm (the benchmark study)
            spacing = thickness = 1.0
            if hi - lo < 305.0:
                lo, hi = lo - (305.0 - (hi - lo)) / 2.0, hi + (305.0 - (hi - lo)) / 2.0
        native_noise = rng.uniform(9.0, 22.0) * (3.0 if is_sharp else 1.0) * (0.7 if iterative else 1.0)
        noise = native_noise * (1.0 / max(thickness, 0.625)) ** 0.5 * s ** 1.5
        noise = clip(noise, 6.0, 160.0)
    else:
        matrix = int(rng.choice([128, 160]))
        spacing = float(rng.choice([2.0, 2.5, 3.0, 3.0, 4.0, 5.0]))
        thickness = float(rng.choice([spacing, min(5.0, spacing + 1.0)]))
        noise = clip(rng.lognormal(math.log(13.0), 0.35) * s ** 1.5 * (1.4 if is_sharp else 1.0), 5.0, 45.0)
    if kind == "upper_abdomen":      # at least 21 slices: a series the application (and training) accepts
        hi = max(hi, lo + 21 * spacing)
    ps = round(fov / matrix, 4)
    lo = round(lo, 1)
    n = int(math.ceil((hi - lo) / spacing)) + 1
    hi = lo + (n - 1) * spacing
    kernel_mm = rng.uniform(0.25, 0.45) if is_sharp else rng.uniform(0.55, 0.9)
    ts = f"{thickness:g}"
    return ScanParams(
        matrix=matrix, pixel_spacing_mm=ps, slice_spacing_mm=spacing, slice_thickness_mm=thickness,
        z_range_mm=(float(lo), float(hi)), table_offset_mm=(round(tx, 2), round(ty, 2), round(tz, 1)),
        rotation_deg=round(rot, 2), recon_centre_mm=(0.0, 0.0), noise_hu=round(noise, 2),
        noise_grain_px=(float(rng.uniform(0.9, 1.6) if iterative else rng.uniform(0.4, 0.8)) * min(1.0, 0.9 / ps) + 0.3)
        * (EXTERNAL_NOISE_GRAIN if site in EXTERNAL_SITES else 1.0),
        noise_seed=int(rng.integers(0, 2**31)), kernel=kernel, kernel_sigma_px=float(kernel_mm / ps),
        kernel_sharpening=float(rng.uniform(0.4, 1.2)) if is_sharp else 0.0,
        beam_hardening=float(rng.uniform(0.2, 1.0)), kvp=float(rng.choice([120.0, 120.0, 100.0, 140.0])),
        contrast=False, manufacturer=manufacturer, model=model, institution=institution, site=site,
        series_number=2, series_description=f"{'ABD-' if kind == 'abdomen_pelvis' else ''}PELVIS {ts}mm NONCONTRAST",
        table_height_mm=round(float(150.0 - ty), 1), table_shape=str(rng.choice(["curved", "flat", "thick"])),
        patient_position="FFS" if (rng.random() < 0.15 and varied) else "HFS", coverage=kind,
    )


# --------------------------------------------------------------------------------------------------------------
# Artefacts: beam hardening and metal
# --------------------------------------------------------------------------------------------------------------
_N_ANGLES = 40
_RES = 64


@functools.lru_cache(maxsize=2)
def _system(res: int = _RES, n_angles: int = _N_ANGLES) -> sparse.csr_matrix:
    """Parallel-beam projection matrix (n_angles * res detector bins x res * res pixels), linear interpolation."""
    c = (res - 1) / 2.0
    yy, xx = np.mgrid[:res, :res]
    x, y = (xx - c).ravel(), (yy - c).ravel()
    pix = np.arange(res * res)
    rows, cols, vals = [], [], []
    for a, th in enumerate(np.linspace(0.0, math.pi, n_angles, endpoint=False)):
        s = x * math.cos(th) + y * math.sin(th) + c
        i0 = np.floor(s).astype(int)
        f = s - i0
        for off, w in ((0, 1.0 - f), (1, f)):
            i = i0 + off
            ok = (i >= 0) & (i < res)
            rows.append(a * res + i[ok])
            cols.append(pix[ok])
            vals.append(w[ok])
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(n_angles * res, res * res))


def streaks(slices_hu: np.ndarray, pixel_mm: float, beam_hardening: float, rng: np.random.Generator) -> np.ndarray:
    """Artefact images (HU, same shape as ``slices_hu``, K x H x W axial slices): dark bands and streaks between
    dense objects (the squared line integrals of the density above 300 HU, saturating, filtered and back-projected) and noisy
    streaks through metal (photon starvation)."""
    k, m, _ = slices_hu.shape
    f = _RES / m
    small = ndimage.zoom(slices_hu.astype(np.float32), (1, f, f), order=1)[:, :_RES, :_RES]
    px_cm = pixel_mm / f / 10.0
    dense = np.clip(small - 300.0, 0.0, 2000.0) / 1000.0 * px_cm           # cm of bone-equivalent per pixel
    metal = np.clip(small - 2000.0, 0.0, None) / 1000.0 * px_cm * 2.0
    A = _system()
    p = (A @ (dense + metal).reshape(k, -1).T).T.reshape(k, _N_ANGLES, _RES)   # cm along each ray
    sino = -beam_hardening * 20.0 * p ** 2 / (1.0 + p / 2.5)
    if metal.any():
        pm = (A @ metal.reshape(k, -1).T).T.reshape(k, _N_ANGLES, _RES)
        sino += 0.25 * np.clip(pm, 0.0, 8.0) ** 1.5 * rng.standard_normal(pm.shape)
    n = _RES
    ramp = np.abs(np.fft.fftfreq(2 * n))
    filt = np.real(np.fft.ifft(np.fft.fft(sino, 2 * n, axis=2) * ramp, axis=2))[:, :, :n]
    art = (A.T @ filt.reshape(k, -1).T).T.reshape(k, n, n) * (math.pi / (2 * _N_ANGLES)) * 1000.0 / px_cm / 10.0
    big = ndimage.zoom(art.astype(np.float32), (1, m / n, m / n), order=1)
    out = np.zeros_like(slices_hu, dtype=np.float32)
    out[:, :big.shape[1], :big.shape[2]] = big[:, :m, :m]
    return out


def acquire(hu: np.ndarray, scan: ScanParams, has_metal: bool) -> np.ndarray:
    """What the scanner reconstructs from the true HU volume ``hu`` (D-H-W float32, modified in place):
    streak artefacts, slice profile, kernel and noise. Returns float32 HU."""
    rng = np.random.default_rng(scan.noise_seed)
    if scan.beam_hardening > 0 or has_metal:
        dense_pixels = (hu > 600.0).sum(axis=(1, 2))
        metal_pixels = (hu > 2000.0).sum(axis=(1, 2))
        area_mm2 = scan.pixel_spacing_mm ** 2
        sel = np.nonzero((metal_pixels > 0) | (dense_pixels * area_mm2 > 1500.0))[0]
        for i in range(0, len(sel), 64):
            ks = sel[i:i + 64]
            art = np.clip(streaks(hu[ks], scan.pixel_spacing_mm, scan.beam_hardening, rng), -1000.0, 1000.0)
            art[hu[ks] > 2000.0] = 0.0     # metal itself stays at the top of the scale
            hu[ks] += art
    sz = scan.slice_thickness_mm / (2.355 * scan.slice_spacing_mm)
    sxy = scan.kernel_sigma_px
    out = ndimage.gaussian_filter(hu, sigma=(sz, sxy, sxy), truncate=4.0)
    if scan.kernel_sharpening > 0:
        out += scan.kernel_sharpening * (out - ndimage.gaussian_filter(out, sigma=(0, 1.2, 1.2)))
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    g = scan.noise_grain_px
    noise = ndimage.gaussian_filter(noise, sigma=(max(sz, 0.3), g, g))
    noise *= np.float32(scan.noise_hu / (float(noise.std()) + 1e-6))
    out += noise
    return out
