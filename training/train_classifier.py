"""Train the fused tumour classifier and its ablation variants from a prepared cache.

Variants (same code, ``core.networks.FusionClassifier`` with branches switched off): ``image_only`` (the
tumour crop), ``clinical_only`` (sex, age, volume) and ``clinical_location`` (sex, age, volume, u, v, w).
The shipped ``full`` model is their late fusion (``core.networks.LateFusion`` of ``image_only`` and
``clinical_location``: the product of the two posteriors, each raised to its weight in ``classifier.fusion_weights``
of training/config.yaml), as in the published method's late-fusion design.
A jointly trained network (image features concatenated with the tabular ones) was tried first: its image
features swamped the six tabular values and it scored below the image-only model on held-out phantoms.
Standardisation statistics are fitted on the training split with ``core.clinical.fit_feature_spec`` and stored
in the metadata; the same ``core.clinical.standardise`` is used at inference.
"""
from __future__ import annotations

import time
from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from core import clinical
from core.model_metadata import FeatureSpec
from core.networks import FusionClassifier

VARIANTS: dict[str, dict[str, Any]] = {
    "image_only": {"use_image": True, "use_tabular": False, "features": []},
    "clinical_only": {"use_image": False, "use_tabular": True, "features": ["sex", "age_years", "tumour_volume_ml"]},
    "clinical_location": {"use_image": False, "use_tabular": True, "features": None},
}
#: The full model: late fusion of these trained variants.
FULL_FUSION_OF: tuple[str, ...] = ("image_only", "clinical_location")


def fusion_weights(clf_cfg: Mapping[str, Any]) -> list[float]:
    """The full model's member weights in :data:`FULL_FUSION_OF` order, from the classifier config's
    ``fusion_weights`` (member name -> weight; a member not listed, or no such key, weighs 1)."""
    given = dict(clf_cfg.get("fusion_weights") or {})
    unknown = set(given) - set(FULL_FUSION_OF)
    if unknown:
        raise ValueError(f"classifier.fusion_weights names members the full model does not have: {sorted(unknown)}")
    return [float(given.get(v, 1.0)) for v in FULL_FUSION_OF]


def fusion_architecture(members: Mapping[str, Any], weights: Sequence[float]) -> dict[str, Any]:
    """The full model's ``architecture`` record for its metadata: the pooling, each member's weight and each
    member's own architecture record (``members``: name -> record, in :data:`FULL_FUSION_OF` order)."""
    return {"name": "LateFusion",
            "pooling": "weighted sum of member log-probabilities (log-linear pooling: the product of the members' "
                       "posteriors, each raised to its weight; core.networks.LateFusion)",
            "member_weights": {v: float(w) for v, w in zip(FULL_FUSION_OF, weights)},
            "members": {v: members[v] for v in FULL_FUSION_OF}}


def tabular_matrix(rows: Sequence[dict[str, float | None]], spec: Sequence[FeatureSpec]
                   ) -> tuple[np.ndarray, list[list[str]]]:
    """Standardised (N, F) float32 matrix in spec order and the imputed names of each row."""
    out, imputed = [], []
    for r in rows:
        x, imp = clinical.standardise(r, spec)
        out.append(x)
        imputed.append(imp)
    return np.stack(out).astype(np.float32), imputed


def train_variant(arch: dict[str, Any], crops: np.ndarray, tab: np.ndarray, y: np.ndarray, *, epochs: int,
                  batch_size: int = 16, lr: float = 1e-3, seed: int = 0, log_prefix: str = ""
                  ) -> tuple[nn.Module, dict]:
    """Train one variant; crops (N, C, D, H, W), tab (N, F) standardised, y (N,) class indices."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = FusionClassifier(arch)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-3 if arch["use_image"] else 1e-2)
    steps = max(1, epochs * int(np.ceil(len(y) / batch_size)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    counts = np.bincount(y, minlength=int(arch["n_classes"])).astype(np.float32)
    weight = torch.from_numpy(counts.sum() / np.maximum(counts, 1) / len(counts))
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.05)
    t0 = time.time()
    net.train()
    for ep in range(epochs):
        order = rng.permutation(len(y))
        losses = []
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            x = crops[idx].copy() if arch["use_image"] else np.zeros((len(idx), 1, 1, 1, 1), np.float32)
            if arch["use_image"]:
                flip = rng.random(len(idx)) < 0.5
                x[flip] = x[flip][..., ::-1]
                shape = (len(idx), 1, 1, 1)
                x[:, 0] = x[:, 0] * rng.uniform(0.9, 1.1, shape) + rng.normal(0, 0.02, shape)
            t = tab[idx] + rng.normal(0, 0.05, tab[idx].shape).astype(np.float32)
            logits = net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(t))
            loss = loss_fn(logits, torch.from_numpy(y[idx]).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        if log_prefix and ((ep + 1) % 5 == 0 or ep == epochs - 1):
            print(f"[{log_prefix}] epoch {ep + 1}/{epochs} loss {np.mean(losses):.4f} ({time.time() - t0:.0f} s)",
                  flush=True)
    net.eval()
    return net, {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "n_cases": int(len(y)),
                 "train_seconds": round(time.time() - t0, 1)}


@torch.no_grad()
def predict(net: nn.Module, crops: np.ndarray, tab: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Softmax probabilities (N, K)."""
    out = []
    for b in range(0, len(tab), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(crops[b:b + batch_size], dtype=np.float32))
        out.append(torch.softmax(net(x, torch.from_numpy(tab[b:b + batch_size])), 1).numpy())
    return np.concatenate(out)


def export_classifier(net: nn.Module, crop_shape: Sequence[int], n_features: int) -> torch.jit.ScriptModule:
    """TorchScript of a trained classifier variant (traced; inputs (1, C, D, H, W) and (1, F))."""
    with torch.no_grad():
        return torch.jit.trace(net.eval(), (torch.zeros(1, *crop_shape), torch.zeros(1, n_features)), check_trace=False)
