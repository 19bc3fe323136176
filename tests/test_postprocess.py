"""core.postprocess: largest connected component, per label."""
import numpy as np
import pytest

from core.hip_frame import FrameRegion
from core.postprocess import keep_largest_per_label, largest_component, merge_structures

pytestmark = pytest.mark.unit


def _two_blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    big = np.zeros((16, 20, 24), bool)
    big[2:8, 3:10, 4:12] = True          # 6*7*8 = 336 voxels
    small = np.zeros_like(big)
    small[10:14, 12:16, 15:20] = True    # 4*4*5 = 80 voxels
    return big | small, big, small


def test_two_blobs_larger_kept_exactly():
    mask, big, _ = _two_blobs()
    out = largest_component(mask)
    assert out.dtype == bool and out.shape == mask.shape
    np.testing.assert_array_equal(out, big)
    assert mask.sum() == 336 + 80  # input untouched


def test_larger_blob_later_in_raster_order_wins():
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[0:2, 0:2, 0:2] = 1              # 8 voxels, first in raster order
    mask[5:9, 5:9, 5:9] = 1              # 64 voxels
    out = largest_component(mask)
    assert out.sum() == 64 and out[6, 6, 6] and not out[0, 0, 0]


def test_connectivity_26_vs_6():
    mask = np.zeros((6, 6, 6), bool)
    mask[1:3, 1:3, 1:3] = True           # 8 voxels
    mask[3, 3, 3] = True                 # touches the cube only by a corner
    mask[4, 3, 3] = True
    assert largest_component(mask, connectivity=26).sum() == 10
    out6 = largest_component(mask, connectivity=6)
    assert out6.sum() == 8 and not out6[3, 3, 3]
    with pytest.raises(ValueError):
        largest_component(mask, connectivity=18)


def test_empty_mask_stays_empty():
    out = largest_component(np.zeros((4, 5, 6), bool))
    assert out.shape == (4, 5, 6) and out.dtype == bool and not out.any()


def test_rejects_non_3d():
    with pytest.raises(ValueError):
        largest_component(np.zeros((4, 5), bool))


def test_keep_largest_per_label_other_labels_untouched():
    mask, big, small = _two_blobs()
    labels = np.zeros(mask.shape, np.int16)
    labels[mask] = 1                     # label 1: two blobs
    labels[0, 0:3, 0:3] = 2              # label 2: 9 voxels ...
    labels[15, 19, 23] = 2               # ... plus a stray voxel
    labels[12, 2:4, 2:4] = 3             # label 3 (not cleaned): two blobs
    labels[14, 10, 10] = 3
    labels[8, 18, 0] = 7                 # extra anatomy, not cleaned
    before = labels.copy()
    out = keep_largest_per_label(labels, [1, 2])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out == 1, big)
    assert (out == 2).sum() == 9 and out[15, 19, 23] == 0
    for v in (3, 7):
        np.testing.assert_array_equal(out == v, before == v)
    np.testing.assert_array_equal(labels, before)  # input not modified
    assert set(np.unique(out[small])) == {0}


def test_keep_largest_per_label_absent_value_and_touching_labels():
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[1:4, 1:4, 1:4] = 1            # 27 voxels of 1 ...
    labels[4:6, 1:4, 1:4] = 3            # ... touching an 18-voxel tumour
    labels[7, 7, 7] = 3
    out = keep_largest_per_label(labels, (1, 2, 3))   # 2 absent: no error
    assert (out == 1).sum() == 27 and (out == 3).sum() == 18 and out[7, 7, 7] == 0


def test_keep_largest_per_label_rejects_bad_input():
    with pytest.raises(ValueError):
        keep_largest_per_label(np.zeros((4, 4, 4), np.float32), [1])
    with pytest.raises(ValueError):
        keep_largest_per_label(np.full((4, 4, 4), 300, np.int32), [1])
    with pytest.raises(ValueError):
        keep_largest_per_label(np.zeros((4, 4, 4), np.uint8), [0])


def test_merge_structures_tumour_wins_overlap_and_each_structure_keeps_its_largest_part():
    hip = np.zeros((10, 10, 10), np.uint8)
    hip[0:4, 0:4, 0:4] = 1                # left hip, 64 voxels
    hip[0:4, 6:10, 6:10] = 2              # right hip, 64 voxels
    hip[9, 9, 0] = 1                      # stray left-hip voxel: removed
    tumour = np.zeros_like(hip)
    tumour[2:6, 2:5, 2:5] = 3             # 36 voxels, 8 of them inside the left hip
    tumour[9, 0, 9] = 3                   # stray tumour voxel: removed
    out, rejected, located, frame, _ = merge_structures(hip, tumour)
    assert frame is None  # no affine: no frame
    assert rejected == () and located
    assert out.dtype == np.uint8
    assert (out == 3).sum() == 36
    assert (out == 1).sum() == 64 - 8 and out[9, 9, 0] == 0
    assert (out == 2).sum() == 64 and out[9, 0, 9] == 0
    np.testing.assert_array_equal(hip[9, 9, 0], 1)  # inputs not modified


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_merge_structures_takes_only_hip_bone_values_from_the_hip_map(dtype):
    hip = np.zeros((6, 6, 6), dtype)
    hip[0:2, 0:2, 0:2], hip[0:2, 4:6, 4:6], hip[4:6, 0:2, 4:6] = 1, 2, 7   # 7: not a hip-bone value
    out = merge_structures(hip, np.zeros((6, 6, 6), np.uint8)).labels
    assert out.dtype == np.uint8 and sorted(np.unique(out)) == [0, 1, 2] and (out == 1).sum() == (out == 2).sum() == 8


def test_merge_structures_rejects_grids_of_different_shape():
    with pytest.raises(ValueError, match="differ in shape"):
        merge_structures(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8))


def _pelvis_with_two_tumour_candidates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hip labels, tumour labels and affine of a 2 mm grid (index (d, h, w) -> LPS (2w, 2h, 2d) mm).

    Left hip (label 1) at x 60..78 mm, right hip (2) at x 0..18 mm, both y 20..38, z 10..48 mm: hip-frame origin
    (39, 29, 29) mm, axes +x, +y, +z, scale (60, 23.0, 46.1) mm. A 64-voxel candidate behind the origin (a sacral
    position, (u, v, w) = (0, 0.61, 0)) and a 216-voxel one in front of the left hip ((0.63, -1.04, -0.09)).
    """
    hip = np.zeros((30, 30, 45), np.uint8)
    hip[5:25, 10:20, 30:40] = 1
    hip[5:25, 10:20, 0:10] = 2
    tumour = np.zeros_like(hip)
    tumour[13:17, 20:24, 18:22] = 3            # 4*4*4 = 64 voxels, centroid (39, 43, 31) mm: behind O
    tumour[10:16, 0:6, 36:42] = 3              # 6*6*6 = 216 voxels, centroid (77, 5, 25) mm: left, in front
    affine = np.diag([2.0, 2.0, 2.0, 1.0])[[2, 1, 0, 3]]  # (d, h, w) -> (x = 2w, y = 2h, z = 2d)
    return hip, tumour, affine


def test_merge_structures_keeps_the_largest_tumour_component_inside_the_sacral_region():
    hip, tumour, affine = _pelvis_with_two_tumour_candidates()
    region = FrameRegion(low=(-0.4, 0.0, -0.3), high=(0.4, 0.8, 0.5))
    plain, rejected, *_ = merge_structures(hip, tumour)
    assert (plain == 3).sum() == 216 and rejected == ()        # plain largest: the false positive
    out, rejected, located, frame, frame_error = merge_structures(hip, tumour, affine=affine, region=region)
    assert frame_error is None and frame is not None
    np.testing.assert_allclose(frame.origin_lps, (39.0, 29.0, 29.0))   # the frame of the docstring above
    np.testing.assert_allclose(frame.scale_mm[0], 60.0)
    assert located
    assert (out == 3).sum() == 64 and out[15, 22, 20] == 3     # the sacral candidate is kept
    assert rejected == (pytest.approx(216 * 8 / 1000),)       # 216 voxels of 8 mm^3, in mL
    assert (out == 1).sum() == 2000 and (out == 2).sum() == 2000


def test_merge_structures_with_no_candidate_in_the_region_keeps_no_tumour():
    hip, tumour, affine = _pelvis_with_two_tumour_candidates()
    far = FrameRegion((-0.1, 2.0, -0.1), (0.1, 3.0, 0.1))
    out, rejected, *_ = merge_structures(hip, tumour, affine=affine, region=far)
    assert not (out == 3).any() and sorted(rejected) == [pytest.approx(0.512), pytest.approx(1.728)]


def test_merge_structures_without_a_hip_frame_keeps_no_tumour_and_reports_every_candidate():
    """A hip bone missing (e.g. a scan of the thighs): no candidate can be placed in the sacral region, so none is
    drawn as "sacral tumour"; all are reported, largest first, as not located. Without a region: plain largest."""
    hip, tumour, affine = _pelvis_with_two_tumour_candidates()
    hip[hip == 2] = 0                                          # right hip missing: no frame
    out, rejected, located, frame, frame_error = merge_structures(hip, tumour, affine=affine,
                                                                  region=FrameRegion((-1, -1, -1), (1, 1, 1)))
    assert frame is None and frame_error is not None and "right hip bone" in frame_error
    assert not (out == 3).any() and (out == 1).sum() == 2000
    assert not located and rejected == (pytest.approx(1.728), pytest.approx(0.512))
    assert (merge_structures(hip, tumour).labels == 3).sum() == 216
    with pytest.raises(ValueError, match="affine"):
        merge_structures(hip, tumour, region=FrameRegion((-1, -1, -1), (1, 1, 1)))
