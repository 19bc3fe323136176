"""The shipped models on real CT: the real vendor abdominal series in ../shared/data (no pelvis).

The application answers ``not_applicable`` for this series already because its coverage (38 mm) is below the
configured minimum (tests/test_robustness.py). That rule would hide what the models do, so here the two
segmentation models run directly on the series exactly as the application runs them (``core.segment.segment``,
then the largest component of each structure): there is no hip bone and no sacral tumour in an upper abdomen, so
no hip-bone component may reach the application's minimum hip-bone volume (50 mL) and no tumour component may
reach its reporting threshold (10 mL).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from core.dicom_input import load_volume, scan_folder, select_series
from core.models import load_model
from core.postprocess import HIP_LEFT, HIP_RIGHT, TUMOUR, largest_component
from core.segment import segment

REAL_ABDOMEN = SHARED_DATA / "real_ct_abdomen_j2k"
MIN_HIP_ML = 50.0
MIN_TUMOUR_ML = 10.0


@pytest.fixture(scope="module")
def real_labels(models_dir: Path) -> dict[str, np.ndarray | float]:
    if not REAL_ABDOMEN.is_dir():
        pytest.fail(f"{REAL_ABDOMEN} missing: ../shared/data must lie beside the repository")
    loaded = load_volume(select_series(scan_folder(REAL_ABDOMEN)).series)
    ct = loaded.volume
    cpu = torch.device("cpu")
    out: dict[str, np.ndarray | float] = {"voxel_ml": ct.voxel_volume_ml}
    for name in ("hip_bone_seg", "tumour_seg"):
        model = load_model(models_dir, name, cpu)
        out[name] = segment(ct, model.module, model.metadata, cpu)
    return out


def test_real_abdomen_has_no_hip_bone(real_labels: dict) -> None:
    labels = real_labels["hip_bone_seg"]
    for value, side in ((HIP_LEFT, "left"), (HIP_RIGHT, "right")):
        ml = float(largest_component(labels == value).sum()) * real_labels["voxel_ml"]
        assert ml < MIN_HIP_ML, f"{ml:.1f} mL of {side} hip bone found in an upper abdomen"


def test_real_abdomen_has_no_tumour(real_labels: dict) -> None:
    tumour = real_labels["tumour_seg"] == TUMOUR
    ml = float(largest_component(tumour).sum()) * real_labels["voxel_ml"] if tumour.any() else 0.0
    assert ml < MIN_TUMOUR_ML, f"a {ml:.1f} mL sacral tumour found in an upper abdomen"
