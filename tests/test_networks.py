"""The classifier's late fusion: the (weighted) product of the members' posteriors, the same after TorchScript
export; fusion weights fitted by minimum NLL."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.networks import FusionClassifier, LateFusion
from training.train_classifier import fit_fusion_weights

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


def test_weighted_late_fusion_is_the_product_of_tempered_posteriors() -> None:
    image, tab = _members()
    x, t = torch.rand(3, 2, 16, 16, 16), torch.randn(3, 6)
    with torch.no_grad():
        p = torch.softmax(LateFusion([image, tab], weights=[0.5, 1.5]).eval()(x, t), 1)
        prod = torch.softmax(image(x, t), 1) ** 0.5 * torch.softmax(tab(x, t), 1) ** 1.5
        ts = torch.jit.trace(LateFusion([image, tab], weights=[0.5, 1.5]).eval(),
                             (torch.zeros(1, 2, 16, 16, 16), torch.zeros(1, 6)), check_trace=False)
        torch.testing.assert_close(torch.softmax(ts(x, t), 1), p)
    torch.testing.assert_close(p, prod / prod.sum(1, keepdim=True), rtol=1e-5, atol=1e-6)
    for bad in ([1.0], [1.0, -0.5], [0.0, 0.0]):
        with pytest.raises(ValueError, match="weight"):
            LateFusion([image, tab], weights=bad)


def test_fitted_fusion_weights_favour_the_informative_member() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 300)
    informative = np.full((300, 6), 0.04)
    informative[np.arange(300), y] = 0.8                      # right 80 % of the time (calibrated)
    noise = rng.dirichlet(np.full(6, 0.3), 300)               # confident and uninformative
    w_inf, w_noise = fit_fusion_weights([informative, noise], y)
    assert w_inf >= 1.0 and w_noise == 0.25                   # the noise gets the smallest weight on the grid
    assert fit_fusion_weights([informative, informative], y[:0]) == (1.0, 1.0)
