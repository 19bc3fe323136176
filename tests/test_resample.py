"""core.segment.canonical_resample with anti-aliasing: the grid the models see (unit tier, no models)."""
from __future__ import annotations

import numpy as np
import pytest

from core.segment import canonical_resample
from core.volume import Volume, affine_from_dicom

pytestmark = pytest.mark.unit


def _volume(shape, spacing_dhw, array=None, feet_first=False):
    row = np.array([-1.0, 0, 0]) if feet_first else np.array([1.0, 0, 0])
    aff = affine_from_dicom(np.array([-180.0, -200.0, -120.0]), row, np.array([0, 1.0, 0]), np.array([0, 0, 1.0]),
                            (spacing_dhw[1], spacing_dhw[2]), spacing_dhw[0])
    if array is None:
        array = np.zeros(shape, np.int16)
    return Volume(array, aff, {})


@pytest.mark.parametrize("shape,spacing", [((101, 160, 160), (2.0, 2.5, 2.5)), ((61, 512, 512), (1.25, 0.7, 0.7)),
                                           ((33, 64, 64), (5.0, 6.0, 6.0))])
def test_ct_and_label_map_share_the_model_grid(shape, spacing):
    rng = np.random.default_rng(0)
    ct = _volume(shape, spacing, rng.normal(0, 50, shape).astype(np.int16))
    lab = _volume(shape, spacing, (rng.random(shape) > 0.5).astype(np.uint8))
    a = canonical_resample(ct, (3.0, 3.0, 3.0), antialias=True)
    b = canonical_resample(lab, (3.0, 3.0, 3.0), is_label=True)
    c = canonical_resample(ct, (3.0, 3.0, 3.0))
    assert a.shape == b.shape == c.shape
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    np.testing.assert_allclose(a.affine, c.affine, atol=1e-6)


def test_antialiasing_keeps_uniform_regions_and_edges_and_averages_noise():
    shape, spacing = (90, 200, 200), (1.0, 0.75, 0.75)
    ct = _volume(shape, spacing, np.full(shape, 40, np.int16))
    out = canonical_resample(ct, (3.0, 3.0, 3.0), antialias=True)
    assert out.array.min() == pytest.approx(40.0) and out.array.max() == pytest.approx(40.0)   # no air at the edges
    rng = np.random.default_rng(1)
    noisy = _volume(shape, spacing, rng.normal(0, 100, shape).astype(np.int16))
    plain = canonical_resample(noisy, (3.0, 3.0, 3.0)).array.std()
    smooth = canonical_resample(noisy, (3.0, 3.0, 3.0), antialias=True).array.std()
    assert plain > 40                      # linear interpolation of thin slices keeps most of their noise
    assert smooth < 20                     # blocks of 3 x 4 x 4 voxels average it (expected 100 / 6.9 = 14.4)


def test_antialiasing_keeps_an_object_in_place_also_feet_first():
    shape, spacing = (80, 240, 240), (1.0, 0.8, 0.8)
    arr = np.zeros(shape, np.int16)
    arr[30:50, 100:140, 60:90] = 1000
    for ff in (False, True):
        ct = _volume(shape, spacing, arr, feet_first=ff)
        truth = ct.index_to_lps(np.argwhere(arr > 0).mean(axis=0))[0]
        out = canonical_resample(ct, (3.0, 3.0, 3.0), antialias=True)
        w = np.clip(out.array, 0, None)
        idx = np.indices(out.shape).reshape(3, -1).T
        centre = out.index_to_lps((idx * w.reshape(-1, 1)).sum(0) / w.sum())[0]
        np.testing.assert_allclose(centre, truth, atol=0.5)
