"""training.reweight_fusion: the shipped classifier's full model rebuilt from its own variant files at new weights."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core.models import load_model, load_variant, read_metadata, write_model
from core.networks import LateFusion
from training.reweight_fusion import reweighted
from training.train_classifier import FULL_FUSION_OF, export_classifier, fusion_architecture

pytestmark = pytest.mark.unit

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "tumour_classifier"


def _copy_with_fusion(tmp_path: Path, module_weights: list[float], stated_weights: list[float]) -> Path:
    """A copy of the shipped classifier whose model.ts fuses its variant files at ``module_weights`` while its
    metadata states ``stated_weights``."""
    folder = tmp_path / "models" / "tumour_classifier"
    shutil.copytree(SHIPPED, folder)
    meta = read_metadata(folder)
    model = load_model(folder.parent, folder.name, torch.device("cpu"))
    members = [load_variant(model, v) for v in FULL_FUSION_OF]
    ts = export_classifier(LateFusion(members, weights=module_weights).eval(), (2, *meta.clf.crop.size),
                           len(meta.clf.features))
    arch = fusion_architecture(dict(dict(meta.architecture or {})["members"]), stated_weights)
    write_model(folder, ts, replace(meta, version="0.0.1", architecture=arch))
    return folder


def _probabilities(folder: Path, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    model = load_model(folder.parent, folder.name, torch.device("cpu"))
    with torch.no_grad():
        full, image, tab = (torch.softmax(m(x, t), 1) for m in
                            (model.module, *(load_variant(model, v) for v in FULL_FUSION_OF)))
    return full, image, tab


def test_reweighting_an_equal_weight_fusion(tmp_path: Path) -> None:
    folder = _copy_with_fusion(tmp_path, [1.0, 1.0], [1.0, 1.0])
    variants_before = {v: e.sha256 for v, e in read_metadata(folder).clf.variants.items()}
    reweighted(folder, [0.25, 1.0], "0.0.2")
    meta = read_metadata(folder)
    assert meta.version == "0.0.2"
    assert dict(meta.architecture or {})["member_weights"] == {"image_only": 0.25, "clinical_location": 1.0}
    assert {v: e.sha256 for v, e in meta.clf.variants.items()} == variants_before      # members untouched
    assert "0.0.1" in dict(meta.training or {})["reweighted_from"]
    g = torch.Generator().manual_seed(2)
    x, t = torch.rand(3, 2, *meta.clf.crop.size, generator=g), torch.randn(3, 6, generator=g)
    full, image, tab = _probabilities(folder, x, t)
    expected = image ** 0.25 * tab
    torch.testing.assert_close(full, expected / expected.sum(1, keepdim=True), rtol=1e-4, atol=1e-5)


def test_an_already_weighted_fusion_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "tumour_classifier"
    shutil.copytree(SHIPPED, folder)        # the shipped 0.4.2 weighs the image member 0.5
    with pytest.raises(ValueError, match="not an equal-weight"):
        reweighted(folder, [0.25, 1.0], "9.9.9")
    assert read_metadata(folder).version == read_metadata(SHIPPED).version


def test_a_model_that_its_variant_files_do_not_reproduce_is_refused(tmp_path: Path) -> None:
    folder = _copy_with_fusion(tmp_path, [0.5, 1.0], [1.0, 1.0])   # the metadata claims equal weights
    sha = read_metadata(folder).sha256
    with pytest.raises(ValueError, match="do not reproduce"):
        reweighted(folder, [0.25, 1.0], "0.0.2")
    assert read_metadata(folder).sha256 == sha                      # nothing written
