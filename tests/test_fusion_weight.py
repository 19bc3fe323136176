"""validation.fusion_weight: the late-fusion weight computed from a run's member probabilities."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.networks import LateFusion
from validation.fusion_weight import fuse, member_probabilities, weight_table

pytestmark = pytest.mark.unit

CLASSES = ["metastasis", "chondrosarcoma", "osteosarcoma", "chordoma", "neurogenic_tumour", "giant_cell_tumour"]


class _Fixed(torch.nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_fuse_is_what_late_fusion_computes() -> None:
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 6, generator=g) * 3, torch.randn(5, 6, generator=g) * 3
    for w in (0.25, 0.5, 1.0):
        net = LateFusion([_Fixed(a), _Fixed(b)], weights=[w, 1.0])
        expected = torch.softmax(net(torch.zeros(5, 1), torch.zeros(5, 1)), 1).numpy()
        got = fuse(torch.softmax(a, 1).numpy(), torch.softmax(b, 1).numpy(), w)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    p, q = np.array([[0.64, 0.36]]), np.array([[0.5, 0.5]])
    np.testing.assert_allclose(fuse(p, q, 0.5), [[0.8 / 1.4, 0.6 / 1.4]])   # sqrt(p) * q, renormalised


def _record(case_id: str, truth: str, status: str, image: np.ndarray | None, tab: np.ndarray) -> dict:
    probs = dict(zip(CLASSES, tab.tolist()))
    r = {"case_id": case_id, "truth": truth, "status": status,
         "predicted_class": CLASSES[int(tab.argmax())] if status == "tumour_found" else None,
         "probabilities": probs if status == "tumour_found" else None,
         "ablation": {"clinical_location": probs} if status == "tumour_found" else {}}
    if image is not None and status == "tumour_found":
        r["ablation"]["image_only"] = dict(zip(CLASSES, image.tolist()))
    return r


def test_an_uninformative_overconfident_image_member_gets_the_smallest_weight() -> None:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(120):
        y = i % 6
        tab = rng.dirichlet(np.ones(6))
        tab[y] += 0.6                                   # informative tabular member
        image = np.full(6, 0.01)
        image[rng.integers(6)] = 0.95                   # confident and random
        cases.append(_record(f"C{i:04d}", CLASSES[y], "tumour_found", image / image.sum(), tab / tab.sum()))
    # not classification cases, or without the image member: left out
    cases += [_record("N1", "none", "no_tumour", None, np.full(6, 1 / 6)),
              _record("M1", "chordoma", "no_tumour", None, np.full(6, 1 / 6)),
              _record("X1", "chordoma", "tumour_found", None, np.full(6, 1 / 6))]
    y, pi, pt, classes = member_probabilities({"cases": cases})
    assert classes == CLASSES and y.size == 120 and pi.shape == pt.shape == (120, 6)
    table = weight_table(y, pi, pt, (0.25, 0.5, 1.0), n_resamples=200)
    auc = table["macro_auc_by_weight"]
    assert table["best_weight"] == 0.25
    assert auc["0.25"] > auc["0.5"] > auc["1.0"]
    assert table["members_alone"]["image_only"] == pytest.approx(0.5, abs=0.08)
    d = table["best_minus_weight_1"]
    assert d["difference"] == pytest.approx(auc["0.25"] - auc["1.0"], abs=1e-4) and d["ci_low"] > 0


def test_a_run_without_member_probabilities_is_refused() -> None:
    with pytest.raises(ValueError, match="no classified study"):
        member_probabilities({"cases": [_record("N1", "none", "no_tumour", None, np.full(6, 1 / 6))]})
