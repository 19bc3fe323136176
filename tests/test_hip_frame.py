"""core.hip_frame on analytic scenes: two ellipsoid hip bones and a spherical tumour.

Scene (LPS mm, before any transform): left hip bone (label 1) ellipsoid centred (+90, 0, 0),
right (label 2) at (-90, 0, 0), semi-axes (30, 45, 60) mm along x, y, z; tumour (label 3) sphere
radius 15 mm at (0, 30, 20). Expected frame: O = 0, axes = identity, s_x = 180 mm,
s_y = 4 sd_y = 4 * 45 / sqrt(5), s_z = 4 * 60 / sqrt(5) (a uniform ellipsoid's marginal along a
semi-axis b has variance b^2 / 5).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import REPO
from core.hip_frame import (
    FACE_NAMES, FrameRegion, HipFrame, HipFrameError, NoTumourError, hip_bone_truncated, hip_frame_from_labels,
    truncated_faces, tumour_location,
)
from core.model_metadata import SacralRegion
from core.models import read_metadata
from core.volume import Volume

pytestmark = pytest.mark.unit

SEMI = np.array([30.0, 45.0, 60.0])
LEFT, RIGHT = np.array([90.0, 0.0, 0.0]), np.array([-90.0, 0.0, 0.0])
TUMOUR, TUMOUR_R = np.array([0.0, 30.0, 20.0]), 15.0
EXPECTED_SCALE = np.array([180.0, 4 * SEMI[1] / np.sqrt(5), 4 * SEMI[2] / np.sqrt(5)])
EXPECTED_MM = TUMOUR.copy()
EXPECTED_UVW = EXPECTED_MM / EXPECTED_SCALE


def rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def render(pixel: float = 2.0, slice_mm: float = 3.0, lo=(-150.0, -95.0, -90.0), hi=(150.0, 95.0, 90.0),
           rotation: np.ndarray | None = None, scale: float = 1.0, shift=(0.0, 0.0, 0.0)) -> Volume:
    """Axial label map (d -> +z, h -> +y, w -> +x) of the scene mapped by p -> scale * R p + shift."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    n = np.floor((hi - lo) / np.array([pixel, pixel, slice_mm])).astype(int) + 1  # x, y, z counts
    aff = np.eye(4)
    aff[:3, 0] = [0, 0, slice_mm]
    aff[:3, 1] = [0, pixel, 0]
    aff[:3, 2] = [pixel, 0, 0]
    aff[:3, 3] = lo
    z = lo[2] + slice_mm * np.arange(n[2])
    y = lo[1] + pixel * np.arange(n[1])
    x = lo[0] + pixel * np.arange(n[0])
    rinv = np.eye(3) if rotation is None else np.asarray(rotation).T
    qx, qy, qz = (x[None, None, :] - shift[0], y[None, :, None] - shift[1], z[:, None, None] - shift[2])
    # scene coordinates of every voxel centre: R^T (q - shift) / scale
    px = (rinv[0, 0] * qx + rinv[0, 1] * qy + rinv[0, 2] * qz) / scale
    py = (rinv[1, 0] * qx + rinv[1, 1] * qy + rinv[1, 2] * qz) / scale
    pz = (rinv[2, 0] * qx + rinv[2, 1] * qy + rinv[2, 2] * qz) / scale
    labels = np.zeros((n[2], n[1], n[0]), np.uint8)
    for value, c in ((1, LEFT), (2, RIGHT)):
        inside = ((px - c[0]) / SEMI[0]) ** 2 + ((py - c[1]) / SEMI[1]) ** 2 + ((pz - c[2]) / SEMI[2]) ** 2 <= 1
        labels[inside] = value
    labels[(px - TUMOUR[0]) ** 2 + (py - TUMOUR[1]) ** 2 + (pz - TUMOUR[2]) ** 2 <= TUMOUR_R ** 2] = 3
    return Volume(labels, aff)


def flip(vol: Volume, axis: int) -> Volume:
    """Same scene, index axis reversed (affine adjusted so every voxel keeps its LPS position)."""
    arr = np.flip(vol.array, axis=axis).copy()
    aff = vol.affine.copy()
    aff[:3, 3] = vol.affine[:3, 3] + vol.affine[:3, axis] * (vol.shape[axis] - 1)
    aff[:3, axis] = -vol.affine[:3, axis]
    return Volume(arr, aff)


@pytest.fixture(scope="module")
def base() -> Volume:
    return render()


def test_known_scene_gives_known_frame(base):
    f = hip_frame_from_labels(base)
    np.testing.assert_allclose(f.left_centroid_lps, LEFT, atol=0.3)
    np.testing.assert_allclose(f.right_centroid_lps, RIGHT, atol=0.3)
    np.testing.assert_allclose(f.origin_lps, 0.0, atol=0.3)
    np.testing.assert_allclose(f.axes, np.eye(3), atol=1e-3)
    np.testing.assert_allclose(f.scale_mm, EXPECTED_SCALE, atol=0.5)
    loc = tumour_location(base, frame=f)
    np.testing.assert_allclose(loc["centroid_lps_mm"], TUMOUR, atol=0.3)
    np.testing.assert_allclose(loc["location_hip_frame_mm"], EXPECTED_MM, atol=0.5)
    np.testing.assert_allclose(loc["location_hip_frame"], EXPECTED_UVW, atol=0.01)
    # frame built on the fly when not given
    assert tumour_location(base) == loc


def test_frame_is_orthonormal_right_handed_and_maps_points(base):
    f = hip_frame_from_labels(base)
    assert np.linalg.det(f.axes) == pytest.approx(1.0)
    np.testing.assert_allclose(f.to_frame_mm(f.left_centroid_lps), [90, 0, 0], atol=0.3)
    np.testing.assert_allclose(f.to_normalised(f.left_centroid_lps), [0.5, 0, 0], atol=1e-9)
    pts = np.zeros((4, 5, 3))
    assert f.to_frame_mm(pts).shape == (4, 5, 3) and f.to_normalised(pts).shape == (4, 5, 3)
    g = HipFrame.from_dict(f.to_dict())
    np.testing.assert_array_equal(g.axes, f.axes)
    np.testing.assert_array_equal(g.scale_mm, f.scale_mm)
    with pytest.raises(ValueError):
        f.axes[0, 0] = 2.0  # read-only
    with pytest.raises(ValueError):
        HipFrame(f.origin_lps, -np.eye(3), f.scale_mm, f.left_centroid_lps, f.right_centroid_lps)


def test_table_move_translation_invariant(base):
    shift = np.array([23.7, -17.3, 131.9])
    # grid follows the table to the nearest 10 mm, so the voxel sampling phase changes too
    moved = render(lo=np.array([-150.0, -95.0, -90.0]) + np.round(shift, -1),
                   hi=np.array([150.0, 95.0, 90.0]) + np.round(shift, -1), shift=shift)
    f0, f1 = hip_frame_from_labels(base), hip_frame_from_labels(moved)
    np.testing.assert_allclose(f1.origin_lps - shift, f0.origin_lps, atol=1.0)
    a, b = tumour_location(base, frame=f0), tumour_location(moved, frame=f1)
    np.testing.assert_allclose(b["location_hip_frame_mm"], a["location_hip_frame_mm"], atol=1.0)
    np.testing.assert_allclose(b["location_hip_frame"], a["location_hip_frame"], atol=0.02)


@pytest.mark.parametrize("pixel, slice_mm", [(1.5, 2.0), (1.0, 5.0)])
def test_voxel_spacing_invariant(base, pixel, slice_mm):
    fine = render(pixel=pixel, slice_mm=slice_mm)
    a, b = tumour_location(base), tumour_location(fine)
    np.testing.assert_allclose(b["location_hip_frame_mm"], a["location_hip_frame_mm"], atol=1.0)
    np.testing.assert_allclose(b["location_hip_frame"], a["location_hip_frame"], atol=0.02)
    np.testing.assert_allclose(b["location_hip_frame"], EXPECTED_UVW, atol=0.01)
    np.testing.assert_allclose(hip_frame_from_labels(fine).scale_mm, EXPECTED_SCALE, atol=0.5)


def test_rotation_about_superior_axis(base):
    rotated = render(rotation=rot_z(10.0))
    f = hip_frame_from_labels(rotated)
    np.testing.assert_allclose(f.axes[0], rot_z(10.0)[:, 0], atol=2e-3)  # e_x turns with the pelvis
    np.testing.assert_allclose(f.axes[2], [0, 0, 1], atol=1e-9)
    a, b = tumour_location(base), tumour_location(rotated, frame=f)
    assert np.abs(np.subtract(b["location_hip_frame"], a["location_hip_frame"])).max() < 0.05
    np.testing.assert_allclose(b["location_hip_frame_mm"], EXPECTED_MM, atol=1.0)


def test_patient_size_scaling(base):
    big = render(scale=1.15)
    f = hip_frame_from_labels(big)
    np.testing.assert_allclose(f.scale_mm, 1.15 * EXPECTED_SCALE, atol=0.5)
    a, b = tumour_location(base), tumour_location(big, frame=f)
    assert np.abs(np.subtract(b["location_hip_frame"], a["location_hip_frame"])).max() < 0.05
    np.testing.assert_allclose(b["location_hip_frame_mm"], 1.15 * EXPECTED_MM, atol=1.0)


def test_tilted_pelvis_gram_schmidt():
    tilted = render(rotation=rot_y(-20.0))  # left hip 30.8 mm higher than the right
    f = hip_frame_from_labels(tilted)
    e_x, e_y, e_z = f.axes
    np.testing.assert_allclose(e_x, rot_y(-20.0)[:, 0], atol=2e-3)
    assert e_x[2] > 0.3 and abs(e_x @ e_z) < 1e-12 and e_z[2] > 0.9 and e_z[1] == pytest.approx(0, abs=1e-9)
    np.testing.assert_allclose(np.cross(e_z, e_x), e_y, atol=1e-12)
    np.testing.assert_allclose(e_y, [0, 1, 0], atol=1e-9)
    np.testing.assert_allclose(tumour_location(tilted, frame=f)["location_hip_frame_mm"], EXPECTED_MM, atol=1.0)


@pytest.mark.parametrize("axis", [0, 2])
def test_reversed_index_order_same_result(base, axis):
    flipped = flip(base, axis)
    f0, f1 = hip_frame_from_labels(base), hip_frame_from_labels(flipped)
    for name in ("origin_lps", "axes", "scale_mm", "left_centroid_lps", "right_centroid_lps"):
        np.testing.assert_allclose(getattr(f1, name), getattr(f0, name), atol=1e-6)
    a, b = tumour_location(base, frame=f0), tumour_location(flipped, frame=f1)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], atol=1e-6)


def test_coverage_cut_above_and_below_hips_unchanged(base):
    n = base.shape[0]
    z = base.index_to_lps(np.stack([np.arange(n), np.zeros(n), np.zeros(n)], 1))[:, 2]
    keep = np.flatnonzero((z > -66) & (z < 66))  # hips span z = -60..60 mm
    assert 0 < keep[0] and keep[-1] < base.shape[0] - 1
    aff = base.affine.copy()
    aff[:3, 3] = base.index_to_lps([[keep[0], 0, 0]])[0]
    cropped = Volume(base.array[keep[0]:keep[-1] + 1].copy(), aff)
    assert not hip_bone_truncated(cropped)
    a, b = tumour_location(base), tumour_location(cropped)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], atol=1e-6)


def test_truncation_detection(base):
    assert not hip_bone_truncated(base) and truncated_faces(base) == ()
    cut_top = Volume(base.array[:45].copy(), base.affine)          # last slice at z = 42 mm < 60 mm
    assert hip_bone_truncated(cut_top) and truncated_faces(cut_top) == ("d_last",)
    cut_left = Volume(base.array[:, :, :120].copy(), base.affine)  # last column x = 88 mm: left hip (60..120) cut
    assert truncated_faces(cut_left) == ("w_last",)
    assert not hip_bone_truncated(cut_left, values=(2,))           # right hip intact
    assert not hip_bone_truncated(cut_top, values=(3,))            # tumour (z 5..35 mm) intact


def test_truncation_margin_in_mm():
    """A structure whose last voxel lies 2 rows (1.5 mm at 0.75 mm rows) inside the posterior edge touches
    that face only with a margin of at least 1.5 mm; the margin counts in mm per axis (here 2.5 mm slices)."""
    arr = np.zeros((10, 20, 20), np.uint8)
    arr[4:6, 10:17, 5:8] = 3              # last tumour row 16; outer row 19: 3 rows = 2.25 mm away
    aff = np.array([[0, 0, 0.75, 0], [0, 0.75, 0, 0], [2.5, 0, 0, 0], [0, 0, 0, 1.0]])  # d->z, h->y, w->x
    vol = Volume(arr, aff)
    assert truncated_faces(vol, (3,)) == ()
    assert truncated_faces(vol, (3,), margin_mm=2.2) == ()
    assert truncated_faces(vol, (3,), margin_mm=2.25) == ("h_last",)
    assert truncated_faces(vol, (3,), margin_mm=3.0) == ("h_last",)
    # slices: tumour slices 4-5 of 10 are 4 slices = 10 mm from either end; columns 5-7: 5 columns = 3.75 mm
    assert truncated_faces(vol, (3,), margin_mm=3.75) == ("h_last", "w_first")
    assert truncated_faces(vol, (3,), margin_mm=10.0) == FACE_NAMES  # 4 slices, 13 rows / columns: all
    # per axis (D-H-W): 2.25 mm on rows reaches the posterior face, 3.7 mm on columns stops short of w_first
    assert truncated_faces(vol, (3,), margin_mm=(0.0, 2.25, 3.7)) == ("h_last",)
    with pytest.raises(ValueError, match="margin_mm"):
        truncated_faces(vol, (3,), margin_mm=-1.0)
    with pytest.raises(ValueError, match="margin_mm"):
        truncated_faces(vol, (3,), margin_mm=(1.0, 1.0))


def test_errors(base):
    no_left = base.with_array(np.where(base.array == 1, 0, base.array).astype(np.uint8))
    with pytest.raises(HipFrameError, match="left hip bone .label 1. missing"):
        hip_frame_from_labels(no_left)
    tiny = base.array.copy()
    tiny[tiny == 2] = 0
    tiny[40:42, 40:42, 10:12] = 2  # 8 voxels * 12 mm^3 = 0.1 mL
    with pytest.raises(HipFrameError, match="right hip bone .label 2. missing or too small: 0.1 mL < 5 mL"):
        hip_frame_from_labels(base.with_array(tiny))
    with pytest.raises(HipFrameError, match="swapped"):
        hip_frame_from_labels(base, left_value=2, right_value=1)
    no_tumour = base.with_array(np.where(base.array == 3, 0, base.array).astype(np.uint8))
    with pytest.raises(NoTumourError):
        tumour_location(no_tumour)
    with pytest.raises(ValueError):
        hip_frame_from_labels(base.with_array(base.array.astype(np.float32)))


def test_frame_region_box_round_trip_and_checks():
    locs = np.array([[-0.2, 0.1, 0.0], [0.3, 0.5, 0.4], [0.0, 0.2, -0.1]])
    region = FrameRegion.around(locs, margin=0.1)
    assert region.low == pytest.approx((-0.3, 0.0, -0.2)) and region.high == pytest.approx((0.4, 0.6, 0.5))
    assert region.contains((0.4, 0.0, 0.5)) and not region.contains((0.41, 0.3, 0.0))
    assert not region.contains((0.0, -0.01, 0.0)) and not region.contains((0.0, 0.3, 0.51))
    stored = SacralRegion.around(locs, 0.1, "three test points")
    assert stored.low == (-0.3, 0.0, -0.2) and stored.high == (0.4, 0.6, 0.5)   # rounded to 4 decimals, as stored
    assert SacralRegion.from_dict(stored.to_dict(), "sacral_region") == stored
    meta = read_metadata(REPO / "models" / "tumour_seg")
    tumour_model = replace(meta, segmentation=replace(meta.seg, sacral_region=stored))
    assert tumour_model.frame_region == FrameRegion((-0.3, 0.0, -0.2), (0.4, 0.6, 0.5))
    assert read_metadata(REPO / "models" / "hip_bone_seg").frame_region is None
    with pytest.raises(ValueError, match="low < high"):
        FrameRegion((0.0, 0.0, 0.0), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        FrameRegion.around(np.zeros((0, 3)), 0.1)
