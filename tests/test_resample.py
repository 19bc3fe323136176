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


def _crop_on_the_whole_grid(ct: Volume, mask: np.ndarray, spec) -> np.ndarray:
    """The classifier crop as first written: the whole series converted and resampled (the reference)."""
    import SimpleITK as sitk

    from core.segment import scale_intensity
    from core.volume import to_sitk

    idx = np.argwhere(mask)
    lps = ct.index_to_lps(np.array([[a, b, c] for a in idx[:, 0][[0, -1]] for b in (idx[:, 1].min(), idx[:, 1].max())
                                    for c in (idx[:, 2].min(), idx[:, 2].max())], float))
    centre = (lps.min(0) + lps.max(0)) / 2.0
    side = max(float((lps.max(0) - lps.min(0)).max()) + 2.0 * spec.margin_mm, spec.min_side_mm)
    size_xyz = list(spec.size)[::-1]
    sp = [side / n for n in size_xyz]
    origin = centre - 0.5 * np.array([(n - 1) * s for n, s in zip(size_xyz, sp)])

    def resample(img, fill):
        return sitk.GetArrayFromImage(sitk.Resample(img, size_xyz, sitk.Transform(), sitk.sitkLinear, tuple(origin),
                                                    sp, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), fill, sitk.sitkFloat32))
    image = scale_intensity(resample(sitk.Cast(to_sitk(ct), sitk.sitkFloat32), -1024.0), spec.intensity)
    m = resample(sitk.Cast(to_sitk(ct.with_array(mask.astype(np.uint8))), sitk.sitkFloat32), 0.0) >= 0.5
    return np.stack([image, m.astype(np.float32)])


@pytest.mark.parametrize("where", ["inside", "at_the_edge"])
def test_classifier_crop_reads_only_the_voxels_it_needs_and_gives_the_same_samples(where):
    """core.classify.tumour_crop converts only the block of the series its cube can reach; on a feet-first,
    anisotropic grid and for a tumour cut by the grid's edge (samples outside the series are -1024 HU) the crop
    equals the one resampled from the whole series."""
    from core.classify import tumour_crop
    from core.model_metadata import CropSpec

    spec = CropSpec.from_dict({"size": [40, 40, 40], "margin_mm": 10.0, "min_side_mm": 40.0,
                               "intensity": {"a_min": -250.0, "a_max": 1250.0, "b_min": 0.0, "b_max": 1.0,
                                             "clip": True}})
    rng = np.random.default_rng(4)
    shape = (60, 120, 110)
    ct = _volume(shape, (2.5, 0.8, 0.8), rng.normal(200, 300, shape).astype(np.int16), feet_first=True)
    mask = np.zeros(shape, bool)
    if where == "inside":
        mask[20:41, 50:80, 30:62] = True
    else:
        mask[45:60, 0:25, 80:110] = True
    got = tumour_crop(ct, mask, spec)
    ref = _crop_on_the_whole_grid(ct, mask, spec)
    assert got.shape == (2, 40, 40, 40) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], ref[0], atol=1e-5)
    assert (got[1] != ref[1]).mean() < 1e-3 and got[1].sum() > 1000
    if where == "at_the_edge":
        assert (got[0] == 0.0).mean() > 0.2   # samples outside the series: -1024 HU, clipped to the window's 0


def test_antialiased_classifier_crop_averages_fine_grid_noise_and_keeps_the_tumour_in_place():
    """``crop.antialias``: on a 0.7 mm grid the crop's CT noise falls as block averaging predicts, a bright tumour
    stays where it is (same mask channel, same intensity-weighted centre), and on a grid as coarse as the crop's
    own spacing the crop is exactly the plain one."""
    from core.classify import tumour_crop
    from core.model_metadata import CropSpec

    window = {"a_min": -1000.0, "a_max": 1000.0, "b_min": -1.0, "b_max": 1.0, "clip": True}
    plain_spec = CropSpec.from_dict({"size": [40, 40, 40], "margin_mm": 10.0, "min_side_mm": 40.0,
                                     "intensity": window})
    aa_spec = CropSpec.from_dict({**plain_spec.to_dict(), "antialias": True})
    assert aa_spec.antialias and aa_spec.to_dict()["antialias"] is True and "antialias" not in plain_spec.to_dict()
    rng = np.random.default_rng(7)
    shape, spacing = (100, 240, 240), (1.0, 0.7, 0.7)
    arr = rng.normal(0, 100, shape)
    mask = np.zeros(shape, bool)
    mask[35:65, 90:150, 100:140] = True                   # 30 x 42 x 28 mm: crop side 62 mm, 1.55 mm voxels
    arr[mask] += 400
    for ff in (False, True):
        ct = _volume(shape, spacing, arr.astype(np.int16), feet_first=ff)
        plain, aa = tumour_crop(ct, mask, plain_spec), tumour_crop(ct, mask, aa_spec)
        np.testing.assert_array_equal(plain[1], aa[1])
        outside = plain[1] == 0
        sd_plain, sd_aa = (x[0][outside].std() * 1000 for x in (plain, aa))   # HU
        assert sd_plain > 45                              # linear interpolation keeps much of the 100 HU noise
        assert 0.35 * sd_plain < sd_aa < 0.6 * sd_plain   # blocks of 1 x 2 x 2 voxels first: about half
        inside = plain[1] > 0
        assert abs(aa[0][inside].mean() - plain[0][inside].mean()) * 1000 < 15   # same tumour HU (400), edges blur
        centres = [np.argwhere(x[0] > 0.2).mean(axis=0) for x in (plain, aa)]      # voxels above 200 HU
        np.testing.assert_allclose(centres[0], centres[1], atol=0.5)             # crop voxels
    coarse = _volume((30, 60, 60), (2.0, 2.0, 2.0), rng.normal(0, 100, (30, 60, 60)).astype(np.int16))
    m2 = np.zeros((30, 60, 60), bool)
    m2[10:20, 20:40, 20:40] = True
    np.testing.assert_array_equal(tumour_crop(coarse, m2, plain_spec), tumour_crop(coarse, m2, aa_spec))


def test_sub_volume_keeps_every_voxel_in_place():
    vol = _volume((10, 20, 30), (2.0, 0.5, 0.7), np.arange(6000, dtype=np.int16).reshape(10, 20, 30), feet_first=True)
    sub = vol.sub_volume((-3, 5, 7), (4, 25, 9))               # clipped to the grid: d 0..3, h 5..19, w 7..8
    assert sub.shape == (4, 15, 2) and np.shares_memory(sub.array, vol.array)
    np.testing.assert_array_equal(sub.array, vol.array[0:4, 5:20, 7:9])
    np.testing.assert_allclose(sub.index_to_lps(np.array([[1, 2, 1]])), vol.index_to_lps(np.array([[1, 7, 8]])))
    with pytest.raises(ValueError, match="holds no voxel"):
        vol.sub_volume((0, 0, 30), (10, 20, 40))


def test_grid_ceiling_is_perfect_on_the_series_grid_and_falls_for_thin_structures_on_coarse_grids():
    """validation.grid_ceiling: a structure sent through the model grid and back (as a perfect model's fractions,
    through the application's own probability mapping) keeps its voxels on its own grid; on a 3 mm grid a thick
    block keeps most of them and a 2 mm plate (cortex-like) far fewer; a 6 mm grid loses the plate entirely."""
    from validation.grid_ceiling import case_ceiling, round_trip

    arr = np.zeros((60, 60, 60), np.uint8)
    arr[10:50, 10:50, 10:30] = 1      # 40 x 40 x 20 mm block
    arr[10:50, 10:50, 40:42] = 2      # 2 mm plate
    vol = _volume(arr.shape, (1.0, 1.0, 1.0), arr)
    np.testing.assert_array_equal(round_trip(vol, (1.0, 1.0, 1.0)), arr)
    c = case_ceiling(vol, [3.0, 6.0])
    assert c["3 mm"]["hip_bone_left"] > 0.9 and c["3 mm"]["tumour"] is None
    assert c["3 mm"]["hip_bone_right"] < c["3 mm"]["hip_bone_left"] - 0.05
    assert c["6 mm"]["hip_bone_right"] < 0.5


def test_grid_ceiling_of_hard_targets_is_below_that_of_fractions():
    """``--targets hard``: nearest-neighbour labels on the model grid (the training targets) sent back as one-hot
    probabilities lose more of an oblique plate than a perfect model's fractions do, and nothing on the series'
    own grid."""
    from validation.grid_ceiling import case_ceiling, round_trip_hard

    d, h, w = np.meshgrid(*(np.arange(60),) * 3, indexing="ij")
    arr = (np.abs(d + 0.6 * h - 0.3 * w - 40) < 3).astype(np.uint8)     # a 6 mm-thick oblique plate
    vol = _volume(arr.shape, (1.0, 1.0, 1.0), arr)
    np.testing.assert_array_equal(round_trip_hard(vol, (1.0, 1.0, 1.0)), arr)
    soft, hard = case_ceiling(vol, [3.0])["3 mm"], case_ceiling(vol, [3.0], "hard")["3 mm"]
    assert 0.5 < hard["hip_bone_left"] < soft["hip_bone_left"] - 0.03


def test_bounding_box_is_the_tight_box_of_the_mask():
    from core.volume import bounding_box

    rng = np.random.default_rng(9)
    for _ in range(5):
        mask = np.zeros((20, 30, 40), bool)
        lo = rng.integers(0, 10, 3)
        hi = lo + rng.integers(1, 10, 3)
        mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = rng.random(tuple(hi - lo)) < 0.3
        mask[tuple(lo)] = mask[tuple(hi - 1)] = True
        idx = np.argwhere(mask)
        assert bounding_box(mask) == tuple(slice(int(a), int(b) + 1) for a, b in zip(idx.min(0), idx.max(0)))
    assert bounding_box(np.zeros((3, 4, 5), np.uint8)) is None


def test_lattice_view_reindexes_the_same_voxels_and_refuses_other_grids():
    """core.volume.lattice_view: a larger map of the same lattice with its slice axis reversed and its rows and
    columns swapped gives back exactly the grid's voxels (as fancy indexing voxel by voxel does); a grid shifted
    by half a voxel, one reaching outside the map, or one with other spacing gives None."""
    from core.volume import lattice_view

    rng = np.random.default_rng(5)
    grid = _volume((6, 7, 8), (2.5, 0.8, 0.6), np.zeros((6, 7, 8), np.uint8), feet_first=True)
    big_shape = (10, 9, 12)                       # src axes: (grid d reversed, grid w, grid h), 2-3 voxels larger
    src_aff = np.eye(4)
    src_aff[:3, 0] = -grid.affine[:3, 0]
    src_aff[:3, 1] = grid.affine[:3, 2]
    src_aff[:3, 2] = grid.affine[:3, 1]
    src_aff[:3, 3] = grid.affine[:3, 3] - src_aff[:3, :3] @ np.array([8, 1, 2])   # grid voxel 0 at src (8, 1, 2)
    src = Volume(rng.integers(0, 255, big_shape).astype(np.uint8), src_aff)
    got = lattice_view(src, grid.affine, grid.shape)
    idx = np.indices(grid.shape).reshape(3, -1).T.astype(float)
    want = src.array[tuple(np.rint(src.lps_to_index(grid.index_to_lps(idx))).astype(int).T)].reshape(grid.shape)
    assert got is not None and np.array_equal(got, want) and np.shares_memory(got, src.array)
    shifted = grid.affine.copy()
    shifted[:3, 3] += grid.affine[:3, 1] * 0.5
    assert lattice_view(src, shifted, grid.shape) is None
    assert lattice_view(src, grid.affine, (10, 7, 8)) is None          # slices beyond the map's first one
    finer = grid.affine.copy()
    finer[:3, 2] *= 0.5
    assert lattice_view(src, finer, grid.shape) is None
