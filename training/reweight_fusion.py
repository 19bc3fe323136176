"""Re-export the shipped classifier's full model with other late-fusion weights, without retraining.

    python -m training.reweight_fusion --model models/tumour_classifier --version 0.4.2 [--config training/config.yaml]

The full model is the late fusion (``core.networks.LateFusion``) of the classifier's own ``image_only`` and
``clinical_location`` variant files; this rebuilds it from those two files with the weights of
``classifier.fusion_weights`` in the config (:func:`training.train_classifier.fusion_weights`), traces it as training
does (:func:`training.train_classifier.export_classifier`) and writes it with ``core.models.write_model``: new
``model.ts``, its sha256, ``version`` and the ``architecture`` record with ``member_weights``. The variant files are
not touched. Before writing, it checks that the two variant files rebuilt with weights 1 reproduce the model being
replaced (equal-weight fusions only), so that what is reweighted is exactly what was shipped.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from core.models import load_model, load_variant, read_metadata, write_model
from core.networks import LateFusion
from training.train_classifier import FULL_FUSION_OF, export_classifier, fusion_architecture, fusion_weights

REPO = Path(__file__).resolve().parents[1]


def reweighted(folder: Path, weights: list[float], version: str, check_inputs: int = 8) -> Path:
    """Rewrite ``folder`` (a classifier model folder) with its full model rebuilt at ``weights`` (in
    :data:`FULL_FUSION_OF` order) as ``version``; returns the path of the new ``model.ts``.

    Raises ValueError when the folder's full model is not an equal-weight fusion of its variant files (checked on
    ``check_inputs`` random crops and tabular vectors, max |difference| of the logits <= 1e-4).
    """
    meta = read_metadata(folder)
    arch = dict(meta.architecture or {})
    if arch.get("name") != "LateFusion" or any(w != 1.0 for w in dict(arch.get("member_weights") or {}).values()):
        raise ValueError(f"{folder}: the full model is not an equal-weight late fusion; retrain instead")
    model = load_model(folder.parent, folder.name, torch.device("cpu"))
    members = [load_variant(model, v) for v in FULL_FUSION_OF]
    crop_shape = (2, *meta.clf.crop.size)
    n_features = len(meta.clf.features)
    g = torch.Generator().manual_seed(0)
    x, t = torch.rand(check_inputs, *crop_shape, generator=g), torch.randn(check_inputs, n_features, generator=g)
    with torch.no_grad():
        diff = float((LateFusion(members).eval()(x, t) - model.module(x, t)).abs().max())
    if not np.isfinite(diff) or diff > 1e-4:
        raise ValueError(f"{folder}: the variant files do not reproduce the shipped full model (max |d| {diff:.2e})")
    fused = LateFusion(members, weights=weights).eval()
    ts = export_classifier(fused, crop_shape, n_features)
    previous = meta.version
    iv = dict(meta.internal_validation or {})
    if iv:
        iv["of_version"] = f"{previous} (equal weights); not recomputed for the reweighted fusion"
    new = replace(meta, version=version,
                  architecture=fusion_architecture(dict(arch["members"]), weights),
                  internal_validation=iv or None,
                  training={**dict(meta.training or {}),
                            "reweighted_from": f"{previous} by training.reweight_fusion (member weights only)"})
    write_model(folder, ts, new)
    return folder / new.file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.reweight_fusion", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "tumour_classifier")
    ap.add_argument("--config", type=Path, default=REPO / "training" / "config.yaml")
    ap.add_argument("--version", required=True)
    a = ap.parse_args(argv)
    weights = fusion_weights(yaml.safe_load(a.config.read_text())["classifier"])
    path = reweighted(a.model.resolve(), weights, a.version)
    print(f"{path}: full model = LateFusion{tuple(FULL_FUSION_OF)} with weights {weights}, version {a.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
