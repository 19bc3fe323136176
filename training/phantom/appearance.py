"""How bone looks on CT: density by age and sex, cortex, trabecular texture, degenerative joints.

All HU values here are "true" attenuations before partial volume, reconstruction kernel and noise
(:mod:`training.phantom.acquisition` applies those). Sources of the distributions:

- **Cancellous (trabecular) bone HU falls with age**: L1 trabecular attenuation of about 200-250 HU in young
  adults, below 160 HU "osteopenic" and below 110 HU "osteoporotic", losing about 2-3 HU per year, faster in
  women after the menopause (Pickhardt et al., Ann Intern Med 2013;158:588-595; Jang et al., Radiology
  2019;291:360-367). Pelvic cancellous bone holds more fatty marrow, so its mean is drawn somewhat lower and
  wider (0-330 HU), as issue 12 reports of real pelvic CT (marrow about 0-300 HU).
- **Cortex**: compact bone is about 1500-2000 HU at 120 kVp; the iliac cortex is thin (about 0.5-2 mm), so at
  3 mm voxels it appears as 400-1000 HU after partial volume. Thickness and density fall with age.
- **Degenerative joints** (older patients): joint-space narrowing of the hip and SI joints, marginal
  osteophytes, anterior SI bridging (ankylosis) and subchondral sclerosis.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from training.phantom.params import BoneLook

_TILE = 48   # texture tile side (voxels of 1 mm), wrapped


def marrow_hu(rng: np.random.Generator, age: float, sex: str) -> float:
    """Mean cancellous-bone HU of a patient of ``age`` years and ``sex`` (see the module docstring)."""
    loss = 2.4 * max(0.0, age - 30.0)
    if sex == "F" and age > 50:
        loss += 1.2 * (age - 50.0)
    return float(np.clip(rng.normal(245.0 - loss, 38.0), 5.0, 330.0))


def sample_bone(rng: np.random.Generator, age: float, sex: str) -> BoneLook:
    """Bone appearance and joint degeneration of one patient."""
    old = float(np.clip((age - 40.0) / 40.0, 0.0, 1.0))        # 0 below 40 years, 1 at 80 and above
    cortex_hu = float(np.clip(rng.normal(1650.0 - 250.0 * old, 150.0), 1000.0, 2000.0))
    cortex_mm = float(np.clip(rng.normal(1.7 - 0.6 * old - (0.15 if sex == "F" else 0.0), 0.35), 0.6, 2.8))
    si_gap = float(np.clip(rng.normal(3.0 - 1.8 * old, 0.5), 0.4, 4.0))
    hip_gap = float(np.clip(rng.normal(3.8 - 1.8 * old, 0.6), 0.6, 5.0))
    sym_gap = float(np.clip(rng.normal(4.0 - 1.0 * old, 0.7), 1.5, 6.0))
    n_ost = int(rng.poisson(6.0 * old ** 1.5))
    osteo = []
    for _ in range(n_ost):
        kind = rng.random()
        if kind < 0.55:   # acetabular rim (superolateral)
            side = 1.0 if rng.random() < 0.5 else -1.0
            ang = rng.uniform(-1.2, 1.2)
            osteo.append((side * (99.0 + 4.0 * math.cos(ang)), -12.0 + 22.0 * math.sin(ang), -30.0 + rng.normal(0, 4),
                          rng.uniform(2.0, 5.0)))
        elif kind < 0.85:  # anterior SI joint margin
            side = 1.0 if rng.random() < 0.5 else -1.0
            osteo.append((side * rng.uniform(38.0, 50.0), rng.uniform(18.0, 30.0), rng.uniform(40.0, 80.0),
                          rng.uniform(2.5, 5.5)))
        else:             # pubic symphysis margin
            osteo.append((rng.normal(0.0, 6.0), rng.uniform(-60.0, -40.0), rng.uniform(-80.0, -55.0),
                          rng.uniform(1.5, 3.5)))
    bridges = []
    if age > 55 and rng.random() < 0.2 * old:
        for side in (1.0, -1.0):
            if rng.random() < 0.7:
                z = rng.uniform(45.0, 75.0)
                bridges.append((side * 34.0, 22.0, z, side * 52.0, 24.0, z + rng.normal(0, 5), rng.uniform(3.0, 5.0)))
    return BoneLook(
        cortex_hu=cortex_hu, cortex_mm=cortex_mm, marrow_hu=marrow_hu(rng, age, sex),
        texture_hu=float(rng.uniform(30.0, 100.0)), texture_mm=float(rng.uniform(0.9, 2.4)),
        texture_seed=int(rng.integers(0, 2**31)), fat_islands=float(np.clip(rng.normal(0.25 * old, 0.08), 0.0, 0.4)),
        si_gap_mm=si_gap, hip_gap_mm=hip_gap, symphysis_gap_mm=sym_gap,
        sclerosis_hu=float(rng.uniform(0.0, 250.0) * old), osteophytes=tuple(osteo), bridging=tuple(bridges))


@functools.lru_cache(maxsize=16)
def _tile(seed: int, grain_mm: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = ndimage.gaussian_filter(rng.standard_normal((_TILE,) * 3).astype(np.float32), grain_mm, mode="wrap")
    return ((t - t.mean()) / (t.std() + 1e-6)).astype(np.float32)


def texture(seed: int, grain_mm: float, X, Y, Z, stretch: float = 1.0) -> np.ndarray:
    """Stationary random field of unit SD at local mm points (a wrapped tile of smoothed noise)."""
    X, Y, Z = np.broadcast_arrays(X, Y, Z)
    coords = np.stack([X / stretch, Y / stretch, Z / stretch]).astype(np.float32)
    return ndimage.map_coordinates(_tile(int(seed), round(float(grain_mm), 2)), coords, order=1, mode="grid-wrap")


def cancellous_hu(bone: BoneLook, X, Y, Z, offset_hu: float = 0.0) -> np.ndarray:
    """HU of cancellous bone at local points: the mean marrow density, trabecular texture and fatty islands."""
    t = texture(bone.texture_seed, bone.texture_mm, X, Y, Z)
    v = bone.marrow_hu + offset_hu + bone.texture_hu * t
    if bone.fat_islands > 0:
        f = texture(bone.texture_seed + 1, 2.0, X + 11.0, Y + 7.0, Z + 3.0, stretch=3.0)
        thr = float(-np.sqrt(2.0) * _erfinv(1.0 - 2.0 * bone.fat_islands))
        fat = np.clip((thr - f) * 2.0, 0.0, 1.0)
        v = v + fat * (-40.0 - v)
    return v.astype(np.float32)


def _erfinv(y: float) -> float:
    """Inverse error function (Winitzki's approximation; enough for a quantile)."""
    a = 0.147
    ln = math.log(1.0 - y * y)
    t = 2.0 / (math.pi * a) + ln / 2.0
    return math.copysign(math.sqrt(math.sqrt(t * t - ln / a) - t), y)
