"""core.config: app.yaml parsed once into frozen typed values; every default in one place and equal to the
shipped app.yaml; a bad value is a ValueError that names its key."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import load_config
from core.config import AnalysisConfig, AppConfig, ModelsConfig, OutputsConfig, parse_config
from core.dicom_header import DEFAULT_RULES

pytestmark = pytest.mark.unit

APP_YAML = Path(__file__).resolve().parents[1] / "app" / "app.yaml"


def minimal(**sections: Any) -> dict[str, Any]:
    return {"application": {"title": "T", "version": "1.2.3"}, "series_selection": {}, "models": {}, **sections}


def test_shipped_app_yaml_agrees_with_the_defaults() -> None:
    """The defaults in code are those of app.yaml (the yaml wins: a test fails when they drift apart)."""
    cfg = load_config(APP_YAML)
    assert cfg.analysis == AnalysisConfig()
    assert cfg.outputs == OutputsConfig()
    assert cfg.models == ModelsConfig()
    assert dict(cfg.series_selection) == DEFAULT_RULES
    raw = yaml.safe_load(APP_YAML.read_text())
    assert set(raw["analysis"]) == {f.name for f in dataclasses.fields(AnalysisConfig)}, "every threshold in app.yaml"
    assert (cfg.application.version, cfg.memory) == (str(raw["application"]["version"]), raw["resources"]["memory"])


def test_absent_sections_take_the_defaults() -> None:
    cfg = parse_config(minimal())
    assert (cfg.analysis, cfg.outputs, cfg.models) == (AnalysisConfig(), OutputsConfig(), ModelsConfig())
    assert cfg.analysis.min_coverage_mm == 100.0 and cfg.analysis.max_voxels == 250_000_000
    assert cfg.models.segmentation == ("hip_bone_seg", "tumour_seg")
    partial = parse_config(minimal(analysis={"min_tumour_volume_ml": 5}, outputs={"key_images": False}))
    assert parse_config(minimal(analysis={"tumour_edge_margin_mm": None})).analysis.tumour_edge_margin_mm is None
    assert parse_config(minimal(analysis={"tumour_edge_margin_mm": 4})).analysis.tumour_edge_margin_mm == 4.0
    assert partial.analysis == AnalysisConfig(min_tumour_volume_ml=5.0)
    assert partial.outputs == OutputsConfig(key_images=False)


def test_values_are_frozen() -> None:
    cfg = parse_config(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.analysis.min_tumour_volume_ml = 0.0  # type: ignore[misc]
    assert isinstance(cfg, AppConfig)


@pytest.mark.parametrize("sections, key", [
    ({"analysis": {"min_coverage_mm": "far"}}, "analysis.min_coverage_mm"),
    ({"analysis": {"min_hip_bone_volume_ml": -1}}, "analysis.min_hip_bone_volume_ml"),
    ({"analysis": {"max_hip_bone_volume_ratio": True}}, "analysis.max_hip_bone_volume_ratio"),
    ({"analysis": {"max_voxels": 1.5}}, "analysis.max_voxels"),
    ({"analysis": {"tumour_edge_margin_mm": "one voxel"}}, "analysis.tumour_edge_margin_mm"),
    ({"analysis": {"tumour_edge_margin_mm": 0}}, "analysis.tumour_edge_margin_mm"),
    ({"analysis": {"min_tumor_volume_ml": 10}}, "min_tumor_volume_ml"),
    ({"outputs": {"kos_title": "for_the_bin"}}, "outputs.kos_title"),
    ({"outputs": {"key_images": "no"}}, "outputs.key_images"),
    ({"outputs": {"key_image": False}}, "key_image"),
    ({"models": {"device": "gpu"}}, "models.device"),
    ({"models": {"tumour_seg": ""}}, "models.tumour_seg"),
    ({"series_selection": {"slice_cont": [1, 2]}}, "slice_cont"),
    ({"analysis": [1, 2]}, "'analysis' must be a mapping"),
    ({"application": {"title": "T"}}, "application.version"),
])
def test_a_bad_value_names_its_key(sections: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        parse_config(minimal(**sections), "site.yaml")


def test_a_missing_section_or_file_is_named(tmp_path: Path) -> None:
    raw = minimal()
    del raw["models"]
    with pytest.raises(ValueError, match="lacks the 'models' section"):
        parse_config(raw)
    with pytest.raises(ValueError, match="cannot read configuration"):
        load_config(tmp_path / "absent.yaml")
