"""The tumour model's confidence rule: the mean probability over the kept tumour (``core.segment.
mean_probability_in``, across grids) and the rule that reports a tumour below it as none (``core.assessment``;
the threshold is the tumour model's metadata ``min_mean_probability``). Unit tier, no models."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.assessment import low_confidence_warning, tumour_confident, tumour_reported
from core.config import AnalysisConfig
from core.model_metadata import MetadataError, ModelMetadata
from core.segment import mean_probability_in
from core.volume import Volume, affine_from_dicom
from conftest import MODELS

pytestmark = pytest.mark.unit


def _model_grid() -> Volume:
    """A canonical LPS model grid, 3 mm, voxel centres at multiples of 3 mm from (-60, -60, -30) mm: the
    probability is 0.8 where the centre's LPS z > 0 (superior), 0.2 elsewhere."""
    shape = (21, 41, 41)  # D-H-W: z from -30 to +30 mm, y and x from -60 to +60 mm
    aff = np.eye(4)
    aff[:3, :3] = np.diag([3.0, 3.0, 3.0])[::-1]  # D-H-W index -> LPS: d moves z, h moves y, w moves x
    aff[:3, 3] = (-60.0, -60.0, -30.0)
    z = -30.0 + 3.0 * np.arange(shape[0])
    p = np.where(z > 0, 0.8, 0.2).astype(np.float32)[:, None, None] * np.ones(shape, np.float32)
    return Volume(p, aff)


def _series(n_slices: int, first_z: float) -> Volume:
    """A feet-first series (slices run to inferior), 5 mm slices, 0.8 mm pixels, centred on x = y = 0."""
    aff = affine_from_dicom(np.array([-20.0, -20.0, first_z]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                            np.array([0, 0, -1.0]), (0.8, 0.8), 5.0)
    return Volume(np.zeros((n_slices, 50, 50), bool), aff)


def test_mean_probability_is_over_the_model_grid_voxels_whose_centre_lies_in_the_mask() -> None:
    grid = _model_grid()
    series = _series(5, 11.0)  # slice centres at z = 11, 6, 1, -4, -9 mm: the mask spans z from 13.5 to -11.5 mm
    mask = series.array.copy()
    mask[:, 10:20, 10:20] = True  # x and y from -12 to -4.8 mm (+- 0.4): model-grid centres -12, -9, -6 mm
    # model-grid centres inside: z = 12, 9, 6, 3 (0.8) and 0, -3, -6, -9 (0.2), each with 3 x 3 in-plane
    assert mean_probability_in(series.with_array(mask), grid) == pytest.approx(0.5, abs=1e-6)
    only_top = np.zeros_like(mask)
    only_top[0, 10:20, 10:20] = True  # z from 13.5 to 8.5 mm: model-grid centres z = 12 and 9
    assert mean_probability_in(series.with_array(only_top), grid) == pytest.approx(0.8, abs=1e-6)


def test_the_same_structure_gives_the_same_value_at_any_series_resolution() -> None:
    rng = np.random.default_rng(3)
    grid = _model_grid()
    grid = grid.with_array(rng.random(grid.shape).astype(np.float32))
    values = []
    for pixel, slice_mm in ((0.8, 5.0), (0.5, 1.0), (1.5, 2.0)):
        n = int(round(60 / pixel))
        aff = affine_from_dicom(np.array([-30.0, -30.0, 25.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                                np.array([0, 0, -1.0]), (pixel, pixel), slice_mm)
        series = Volume(np.zeros((int(round(50 / slice_mm)), n, n), bool), aff)
        lps = series.index_to_lps(np.argwhere(np.ones(series.shape, bool)).astype(float)).reshape(*series.shape, 3)
        # at each resolution the mask's voxels (centre +- half a voxel) hold the same model-grid centres:
        # x -9..9, y -15..3, z -6..6 mm; no face lies within half a series voxel of a model-grid centre
        box = np.all((lps >= (-10.2, -16.2, -7.2)) & (lps <= (10.2, 4.4, 7.2)), axis=-1)
        values.append(mean_probability_in(series.with_array(box), grid))
    assert values[0] == pytest.approx(values[1], abs=1e-6) and values[0] == pytest.approx(values[2], abs=1e-6)


def test_a_mask_smaller_than_a_model_voxel_and_one_outside_the_grid() -> None:
    grid = _model_grid()
    series = _series(1, 21.0)  # z = 21 mm: inside (the grid reaches 30 mm); x from -20 mm
    mask = series.array.copy()
    mask[0, 0, 0] = True   # 0.8 x 0.8 x 5 mm holding no model-grid centre: its nearest model-grid voxel (z = 21)
    assert mean_probability_in(series.with_array(mask), grid) == pytest.approx(0.8, abs=1e-6)
    far = Volume(mask, series.affine.copy())
    far.affine[:3, 3] = (-200.0, -20.0, 21.0)  # x = -200 mm: outside the model grid's -60..60 mm
    assert mean_probability_in(far, grid) == 0.0
    assert mean_probability_in(series.with_array(np.zeros_like(mask)), grid) is None


def test_the_confidence_rule_and_its_warning() -> None:
    assert tumour_confident(0.5, None) and tumour_confident(None, None)
    assert tumour_confident(0.85, 0.85) and not tumour_confident(0.8499, 0.85)
    assert not tumour_confident(None, 0.85)  # a rule and nothing measured: not reported
    # a tumour cut by the scan edge passes whatever its probability (models 0.6.4 hid one)
    assert tumour_confident(0.30, 0.85, cut_by_edge=True) and tumour_confident(None, 0.85, cut_by_edge=True)
    assert not tumour_confident(0.30, 0.85, cut_by_edge=False)
    assert low_confidence_warning(23.7, 0.7134, 0.85) == (
        "a tumour candidate of 24 mL in the sacral region was not reported: its mean probability 0.71 is below "
        "the tumour model's threshold 0.85")


def test_a_tumour_is_reported_past_the_volume_threshold_and_the_rule_unless_cut_by_the_edge() -> None:
    """:func:`core.assessment.tumour_reported`, the rule training and inference share: the volume threshold
    (10 mL by default) always applies; the confidence rule only to a tumour touching no face of the grid."""
    a = AnalysisConfig()
    assert tumour_reported(10.0, 0.90, (), a, 0.85) and not tumour_reported(9.99, 0.90, (), a, 0.85)
    assert not tumour_reported(50.0, 0.80, (), a, 0.85) and tumour_reported(50.0, 0.80, (), a, None)
    assert tumour_reported(50.0, 0.80, ("h_last",), a, 0.85)
    assert not tumour_reported(9.0, 0.99, ("h_last",), a, 0.85)  # the cut does not lift the volume threshold
    assert tumour_reported(6.0, 0.90, (), AnalysisConfig(min_tumour_volume_ml=5.0), 0.85)


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.1])
def test_the_threshold_lives_in_the_tumour_models_metadata_within_0_and_1(value: float) -> None:
    d = json.loads((MODELS / "tumour_seg" / "metadata.json").read_text())
    d["min_mean_probability"] = 0.85
    meta = ModelMetadata.from_dict(d)
    assert meta.seg.min_mean_probability == 0.85
    assert ModelMetadata.from_dict(meta.to_dict()).seg.min_mean_probability == 0.85
    d["min_mean_probability"] = value
    with pytest.raises(MetadataError) as err:
        ModelMetadata.from_dict(d)
    assert err.value.key == "min_mean_probability"
