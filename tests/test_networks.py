"""The classifier's late fusion: the (weighted) product of the members' posteriors, unchanged by TorchScript export."""
from __future__ import annotations

import pytest
import torch

from core.networks import FusionClassifier, LateFusion, MirrorAveraged

pytestmark = pytest.mark.unit

ARCH = {"in_channels": 2, "init_features": 4, "growth_rate": 4, "block_config": [1, 1], "bn_size": 2,
        "hidden": [8], "dropout": 0.0, "n_tabular": 6, "n_classes": 6}


def _members() -> tuple[FusionClassifier, FusionClassifier]:
    torch.manual_seed(0)
    image = FusionClassifier({**ARCH, "use_image": True, "use_tabular": False, "tabular_index": []}).eval()
    tab = FusionClassifier({**ARCH, "use_image": False, "use_tabular": True, "tabular_index": list(range(6))}).eval()
    return image, tab


def test_late_fusion_is_the_normalised_product_of_member_posteriors() -> None:
    image, tab = _members()
    x, t = torch.rand(3, 2, 16, 16, 16), torch.randn(3, 6)
    with torch.no_grad():
        p = torch.softmax(LateFusion([image, tab]).eval()(x, t), 1)
        prod = torch.softmax(image(x, t), 1) * torch.softmax(tab(x, t), 1)
    torch.testing.assert_close(p, prod / prod.sum(1, keepdim=True), rtol=1e-5, atol=1e-6)
    # each member uses only its own modality: changing the tabular values leaves the image member unchanged
    with torch.no_grad():
        torch.testing.assert_close(image(x, t + 3.0), image(x, t))


def test_late_fusion_traces_to_the_same_function() -> None:
    image, tab = _members()
    fused = LateFusion([image, tab]).eval()
    x, t = torch.rand(2, 2, 16, 16, 16), torch.randn(2, 6)
    with torch.no_grad():
        ts = torch.jit.trace(fused, (torch.zeros(1, 2, 16, 16, 16), torch.zeros(1, 6)), check_trace=False)
        torch.testing.assert_close(ts(x, t), fused(x, t))


def test_late_fusion_needs_two_members() -> None:
    with pytest.raises(ValueError, match="at least two"):
        LateFusion([_members()[0]])


def test_mirror_averaged_is_the_mean_log_posterior_of_the_crop_and_its_left_right_mirror() -> None:
    image, _ = _members()
    x, t = torch.rand(2, 2, 16, 16, 16), torch.randn(2, 6)
    tta = MirrorAveraged(image).eval()
    with torch.no_grad():
        expected = 0.5 * (torch.log_softmax(image(x, t), 1) + torch.log_softmax(image(x.flip(4), t), 1))
        torch.testing.assert_close(tta(x, t), expected)
        torch.testing.assert_close(tta(x.flip(4), t), tta(x, t))      # mirror-invariant
        assert not torch.allclose(tta(x.flip(3), t), tta(x, t))       # but only along W (left-right)
        ts = torch.jit.trace(tta, (torch.zeros(1, 2, 16, 16, 16), torch.zeros(1, 6)), check_trace=False)
        torch.testing.assert_close(ts(x, t), tta(x, t))


def test_weighted_late_fusion_raises_each_posterior_to_its_weight_and_keeps_it_in_the_export() -> None:
    image, tab = _members()
    x, t = torch.rand(3, 2, 16, 16, 16), torch.randn(3, 6)
    fused = LateFusion([image, tab], weights=[0.5, 1.0]).eval()
    with torch.no_grad():
        p = torch.softmax(fused(x, t), 1)
        pw = torch.softmax(image(x, t), 1) ** 0.5 * torch.softmax(tab(x, t), 1)
        torch.testing.assert_close(p, pw / pw.sum(1, keepdim=True), rtol=1e-5, atol=1e-6)
        # not the equal-weight product
        assert not torch.allclose(p, torch.softmax(LateFusion([image, tab]).eval()(x, t), 1), atol=1e-3)
        ts = torch.jit.trace(fused, (torch.zeros(1, 2, 16, 16, 16), torch.zeros(1, 6)), check_trace=False)
        torch.testing.assert_close(ts(x, t), fused(x, t))
    assert ts.weights.tolist() == [0.5, 1.0]


@pytest.mark.parametrize("weights", [[1.0], [1.0, 0.0], [1.0, -0.5], [float("nan"), 1.0], [float("inf"), 1.0]])
def test_late_fusion_refuses_weights_that_do_not_fit(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        LateFusion(list(_members()), weights=weights)


def test_shipped_full_model_is_the_fusion_its_metadata_states() -> None:
    """The shipped classifier's model.ts equals LateFusion of its own variant files at the metadata's
    ``member_weights`` (and differs from the equal-weight fusion when those are not all 1): the weights the
    model card reports are the ones that run."""
    from pathlib import Path

    from core.models import load_model, load_variant
    from training.train_classifier import FULL_FUSION_OF
    model = load_model(Path(__file__).resolve().parents[1] / "models", "tumour_classifier", torch.device("cpu"))
    weights = dict(model.metadata.architecture["member_weights"])
    assert list(weights) == list(FULL_FUSION_OF)
    members = [load_variant(model, v) for v in FULL_FUSION_OF]
    g = torch.Generator().manual_seed(1)
    x, t = torch.rand(4, 2, *model.metadata.clf.crop.size, generator=g), torch.randn(4, 6, generator=g)
    with torch.no_grad():
        shipped = torch.softmax(model.module(x, t), 1)
        stated = torch.softmax(LateFusion(members, weights=[weights[v] for v in FULL_FUSION_OF])(x, t), 1)
        torch.testing.assert_close(shipped, stated, rtol=1e-4, atol=1e-5)
        if any(w != 1.0 for w in weights.values()):
            assert not torch.allclose(shipped, torch.softmax(LateFusion(members)(x, t), 1), atol=1e-3)
