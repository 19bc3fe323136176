"""core.hip_frame properties on the synthetic phantom (training.phantom): the hip-frame location of a
tumour must not depend on table position, voxel spacing, coverage, slice order, small rotations about S
or patient size. Label maps are rendered at 128x128 (about 0.5 s each)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.hip_frame import hip_frame_from_labels, truncated_faces, tumour_location
from core.volume import Volume
from training.phantom import render, sample_patient, sample_scan
from training.phantom.anatomy import hip_landmarks

pytestmark = pytest.mark.unit

CASES = [(11, "chordoma"), (29, "giant_cell_tumour")]


def labels_of(patient, scan) -> Volume:
    lab = render(patient, scan)[1]
    assert truncated_faces(lab) == (), "precondition: hip bones fully inside the scan"
    return lab


def loc(lab: Volume) -> dict:
    return tumour_location(lab, frame=hip_frame_from_labels(lab))


@pytest.fixture(scope="module", params=CASES, ids=[c[1] for c in CASES])
def case(request):
    seed, cls = request.param
    rng = np.random.default_rng(seed)
    patient = sample_patient(rng, f"T{seed:04d}", cls)
    scan = sample_scan(rng, patient)
    # a centred patient, so that the narrower fields of view below still hold both hip bones
    scan = replace(scan, table_offset_mm=(0.0, 0.0, scan.table_offset_mm[2]))
    lab = labels_of(patient, scan)
    return patient, scan, lab, loc(lab)


def close(a: dict, b: dict, mm: float = 1.0, uvw: float = 0.02) -> None:
    np.testing.assert_allclose(a["location_hip_frame_mm"], b["location_hip_frame_mm"], atol=mm)
    np.testing.assert_allclose(a["location_hip_frame"], b["location_hip_frame"], atol=uvw)


def test_tumour_lies_between_the_hips_posteriorly(case):
    patient, scan, lab, base = case
    u, v, w = base["location_hip_frame"]
    assert abs(u) < 0.25 and v > 0.1  # midline, behind the hip-bone centroids (sacrum)
    # the frame origin is the midpoint of the hip centroids, so it moves with the table
    f = hip_frame_from_labels(lab)
    np.testing.assert_allclose(f.to_normalised(f.left_centroid_lps), [0.5, 0, 0], atol=1e-9)


def test_table_move(case):
    patient, scan, lab, base = case
    shift = np.array([9.3, -7.9, 143.7])
    moved = replace(scan, table_offset_mm=tuple(np.add(scan.table_offset_mm, shift)))
    lab2 = labels_of(patient, moved)
    close(loc(lab2), base)
    np.testing.assert_allclose(hip_frame_from_labels(lab2).origin_lps - shift,
                               hip_frame_from_labels(lab).origin_lps, atol=1.0)


@pytest.mark.parametrize("pixel, slice_mm, matrix", [(2.4, 3.0, 160), (3.5, 5.0, 110)])
def test_voxel_spacing(case, pixel, slice_mm, matrix):
    patient, scan, lab, base = case
    other = replace(scan, matrix=matrix, pixel_spacing_mm=pixel, slice_spacing_mm=slice_mm,
                    slice_thickness_mm=slice_mm)
    close(loc(labels_of(patient, other)), base, mm=1.0, uvw=0.02)


def test_rotation_about_superior_axis(case):
    patient, scan, lab, base = case
    rotated = loc(labels_of(patient, replace(scan, rotation_deg=scan.rotation_deg + 10.0)))
    assert np.abs(np.subtract(rotated["location_hip_frame"], base["location_hip_frame"])).max() < 0.05


def test_patient_scale(case):
    patient, scan, lab, base = case
    z0, z1 = scan.z_range_mm
    k = int(np.ceil(40.0 / scan.slice_spacing_mm))   # 40 mm more coverage at both ends, on the same slice grid
    wider = replace(scan, z_range_mm=(z0 - k * scan.slice_spacing_mm, z1 + k * scan.slice_spacing_mm))
    bigger = loc(labels_of(replace(patient, scale=patient.scale * 1.15), wider))
    assert np.abs(np.subtract(bigger["location_hip_frame"], base["location_hip_frame"])).max() < 0.05
    np.testing.assert_allclose(bigger["location_hip_frame_mm"], 1.15 * np.asarray(base["location_hip_frame_mm"]),
                               atol=2.0)


def test_coverage_cut_above_and_below_hips(case):
    patient, scan, lab, base = case
    z0, z1 = scan.z_range_mm
    lm = hip_landmarks(patient)     # this patient's own (deformed, tilted) hip bones
    lo_hip, hi_hip = lm["lo"] * patient.scale, lm["hi"] * patient.scale
    k0 = int(np.floor((lo_hip - 8.0 - z0) / scan.slice_spacing_mm))   # same slice positions, tighter coverage
    k1 = int(np.ceil((hi_hip + 8.0 - z0) / scan.slice_spacing_mm))
    assert k0 > 0 and z0 + k1 * scan.slice_spacing_mm < z1
    tight = replace(scan, z_range_mm=(z0 + k0 * scan.slice_spacing_mm, z0 + k1 * scan.slice_spacing_mm))
    lab2 = labels_of(patient, tight)
    assert lab2.shape[0] < lab.shape[0]
    assert np.count_nonzero(lab2.array == 3) == np.count_nonzero(lab.array == 3)
    close(loc(lab2), base, mm=1e-6, uvw=1e-6)


def test_reversed_slice_order(case):
    patient, scan, lab, base = case
    aff = lab.affine.copy()
    aff[:3, 3] += aff[:3, 0] * (lab.shape[0] - 1)
    aff[:3, 0] *= -1
    close(loc(Volume(lab.array[::-1].copy(), aff)), base, mm=1e-6, uvw=1e-6)


def test_truncation_detected(case):
    patient, scan, lab, base = case
    z0, _ = scan.z_range_mm
    cut = render(patient, replace(scan, z_range_mm=(z0, 0.0)))[1]  # coverage ends mid-pelvis
    assert "d_last" in truncated_faces(cut)
    narrow = render(patient, replace(scan, matrix=int(240 / scan.pixel_spacing_mm)))[1]   # 240 mm field of view
    faces = truncated_faces(narrow)
    assert "w_first" in faces and "w_last" in faces
