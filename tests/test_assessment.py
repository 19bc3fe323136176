"""core.assessment: the rules that decide whether a series is analysed, each at and around its threshold."""
from __future__ import annotations

import numpy as np
import pytest

from core.assessment import (
    NOT_APPLICABLE, Verdict, assess_coverage, assess_hip_bones, coverage_mm, rejected_candidates_warning,
    tumour_edge_margin_mm,
    size_refusal, tumour_present, tumour_truncation_warning,
)
from core.config import AnalysisConfig
from core.volume import Volume

pytestmark = pytest.mark.unit

A = AnalysisConfig()  # 100 mm, 50 mL, ratio 2, 10 mL, 250 M voxels


def test_coverage_is_the_superior_extent_of_voxel_centres_in_any_orientation() -> None:
    # columns: the LPS step of one voxel along d, h, w
    axial = np.array([[0, 0, 0.8, 0], [0, 0.8, 0, 0], [2.5, 0, 0, 0], [0, 0, 0, 1]])  # d along +z, 2.5 mm slices
    assert coverage_mm(Volume(np.zeros((41, 4, 4), np.float32), axial)) == pytest.approx(100.0)
    feet_first = axial.copy()
    feet_first[2, 0] = -2.5
    assert coverage_mm(Volume(np.zeros((41, 4, 4), np.float32), feet_first)) == pytest.approx(100.0)
    coronal = np.array([[0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]])  # h along z, 3 mm rows
    assert coverage_mm(Volume(np.zeros((2, 11, 5), np.float32), coronal)) == pytest.approx(30.0)


def test_coverage_rule_at_its_threshold() -> None:
    assert assess_coverage(100.0, A) == Verdict()
    short = assess_coverage(99.6, A)
    assert not short.applicable
    assert short.warnings == (f"{NOT_APPLICABLE}the scan covers 100 mm along the patient axis, "
                              "less than the 100 mm a pelvis needs",)
    assert assess_coverage(38.0, AnalysisConfig(min_coverage_mm=30.0)).applicable


def test_a_missing_hip_bone_is_not_applicable_and_named() -> None:
    v = assess_hip_bones(49.9, 300.0, (), A)
    assert not v.applicable and v.warnings == (
        f"{NOT_APPLICABLE}no left hip bone in the field of view (< 50 mL segmented)",)
    both = assess_hip_bones(0.0, 10.0, ("d_first",), A)
    assert not both.applicable and "no left and right hip bone" in both.warnings[0]
    assert assess_hip_bones(50.0, 50.0, (), A).applicable


@pytest.mark.parametrize("left, right, applicable", [
    (200.0, 400.0, True),     # ratio exactly 2: plausible
    (200.0, 401.0, False),    # just above
    (401.0, 200.0, False),    # either side
    (300.0, 310.0, True),
])
def test_left_right_ratio_rule(left: float, right: float, applicable: bool) -> None:
    v = assess_hip_bones(left, right, (), A)
    assert v.applicable is applicable
    if not applicable:
        assert v.warnings == (f"{NOT_APPLICABLE}implausible hip-bone segmentation (left {left:.0f} mL, "
                              f"right {right:.0f} mL, ratio above 2)",)
    assert assess_hip_bones(left, right, (), AnalysisConfig(max_hip_bone_volume_ratio=3.0)).applicable


def test_hip_bone_cut_by_the_scan_edge_is_a_warning_only() -> None:
    v = assess_hip_bones(300.0, 310.0, ("d_first", "w_last"), A)
    assert v.applicable and v.warnings == (
        "hip bone cut by the edge of the scan (d_first, w_last): the hip-frame location is approximate",)
    # the absent-bone reason wins over truncation
    assert assess_hip_bones(10.0, 310.0, ("d_first",), A).warnings[0].startswith(NOT_APPLICABLE)


def test_tumour_threshold_and_rejected_candidates() -> None:
    assert tumour_present(10.0, A) and not tumour_present(9.99, A)
    assert tumour_present(5.0, AnalysisConfig(min_tumour_volume_ml=5.0))
    assert rejected_candidates_warning([3.0, 9.9], A) is None
    assert rejected_candidates_warning([3.0, 12.4, 40.0], A) == (
        "2 larger tumour candidate(s) outside the sacral region left out (12, 40 mL)")
    assert rejected_candidates_warning([61.6], A, located=False) == (
        "1 larger tumour candidate(s) that could not be placed without a hip frame left out (62 mL)")


def test_tumour_truncation_warning() -> None:
    assert tumour_truncation_warning(()) is None
    assert tumour_truncation_warning(("h_last",)) == (
        "sacral tumour touches the edge of the scan (h_last): its volume and location may be underestimated")


def test_memory_guard() -> None:
    assert size_refusal(512, 512, 950, A, "8Gi") is None  # 249 M voxels
    why = size_refusal(512, 512, 1000, A, "8Gi")
    assert why is not None and why.startswith("series too large: 512 x 512 x 1000 = 262.1 M voxels, above the "
                                              "limit of 250.0 M (analysis.max_voxels; about 7.4 GiB")
    assert why.endswith("the package requests 8Gi)")
    assert size_refusal(4096, 4096, 4096, AnalysisConfig(max_voxels=None), "8Gi") is None


def test_tumour_edge_margin_is_one_tumour_model_voxel_unless_configured() -> None:
    """Default (``analysis.tumour_edge_margin_mm: null``): the tumour model's grid spacing from its metadata, so a
    model on a 2 mm grid gets a 2 mm margin without a configuration change; a configured value wins."""
    assert A.tumour_edge_margin_mm is None
    assert tumour_edge_margin_mm(A, 3.0) == 3.0 and tumour_edge_margin_mm(A, 2.0) == 2.0
    assert tumour_edge_margin_mm(AnalysisConfig(tumour_edge_margin_mm=5.0), 3.0) == 5.0
    with pytest.raises(ValueError, match="tumour_edge_margin_mm"):
        tumour_edge_margin_mm(A, None)


def test_tumour_edge_margins_are_one_voxel_of_the_coarser_grid_per_axis() -> None:
    """Default: per axis the larger of the tumour model's voxel and the series voxel (a 3 mm model mask on a series
    of 5 mm slices and 3.43 mm pixels can stop one series voxel short of the edge); a configured value wins."""
    from core.assessment import tumour_edge_margins_mm
    assert tumour_edge_margins_mm(A, 3.0, (5.0, 3.43, 0.7)) == (5.0, 3.43, 3.0)
    assert tumour_edge_margins_mm(AnalysisConfig(tumour_edge_margin_mm=4.0), 3.0, (5.0, 3.43, 0.7)) == (4.0,) * 3
    with pytest.raises(ValueError, match="tumour_edge_margin_mm"):
        tumour_edge_margins_mm(A, None, (1.0, 1.0, 1.0))
