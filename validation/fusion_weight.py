"""The classifier's late-fusion weight, chosen on a development run's per-study member probabilities.

The full model pools its two members log-linearly (``core.networks.LateFusion``): ``softmax(w log p_image +
log p_clinical+location)``. A validation run's metrics.json holds, for every classified study, both members'
probabilities (``ablation.image_only``, ``ablation.clinical_location``), so the macro AUC of any weight ``w`` can be
computed from it without running the application again. This tool does that for a grid of weights, with the paired
bootstrap difference of the best weight against ``w = 1`` (the plain product of posteriors):

    python -m validation.fusion_weight --metrics DEV/metrics.json [--metrics DEV2/metrics.json] \\
        [--weight 0.25 --weight 0.5 ...] --out choice.json

The first ``--metrics`` chooses; any further ones are reported beside it. Use development runs only
(``training/config.yaml`` ``evaluation.development*``): it informs a decision (models/README.md, decisions).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.networks import log_linear_pool
from validation import metrics as M
from validation.evaluate import class_arrays, is_classification_case

MEMBERS = ("image_only", "clinical_location")
DEFAULT_GRID = (0.25, 0.5, 0.75, 1.0)


def member_probabilities(doc: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """From a validation metrics.json: the class index of each classification case (reference class, a tumour
    found) whose record has both members, and their probabilities ``(n, k)`` in the class order of the run's
    probabilities. Returns ``(y, p_image, p_clinical_location, classes)``."""
    rows = [c for c in doc["cases"] if is_classification_case(c) and all(m in (c.get("ablation") or {})
                                                                        for m in MEMBERS)]
    if not rows:
        raise ValueError("no classified study with both members' probabilities in this metrics.json")
    classes = list(rows[0]["probabilities"])
    y, _, p_image = class_arrays(rows, classes, f"ablation.{MEMBERS[0]}")
    _, _, p_tabular = class_arrays(rows, classes, f"ablation.{MEMBERS[1]}")
    return y, p_image, p_tabular, classes


def fuse(p_image: np.ndarray, p_tabular: np.ndarray, w: float) -> np.ndarray:
    """``softmax(w log p_image + log p_tabular)`` row by row (probabilities ``(n, k)`` in, ``(n, k)`` out):
    :func:`core.networks.log_linear_pool`, the pooling ``core.networks.LateFusion`` applies to its members'
    outputs, with weights ``(w, 1)``."""
    logs = [torch.log(torch.from_numpy(np.clip(p, 1e-12, 1.0)).double()) for p in (p_image, p_tabular)]
    pooled = log_linear_pool(logs, torch.tensor([w, 1.0], dtype=torch.float64))
    out: np.ndarray = torch.softmax(pooled, dim=1).numpy()
    return out


def weight_table(y: np.ndarray, p_image: np.ndarray, p_tabular: np.ndarray, grid: Sequence[float],
                 n_resamples: int = 1000, seed: int = 20261202) -> dict[str, Any]:
    """Macro AUC of each weight of ``grid``, the best (first on ties, in grid order) and its paired bootstrap
    difference against ``w = 1`` (stratified by class; None when the best is 1)."""
    auc = {float(w): M.macro_auc_of(y, fuse(p_image, p_tabular, w)) for w in grid}
    best = max(auc, key=lambda w: auc[w])
    diff = None
    if best != 1.0:
        diff = M.paired_difference(lambda i: M.macro_auc_of(y[i], fuse(p_image[i], p_tabular[i], best)),
                                   lambda i: M.macro_auc_of(y[i], fuse(p_image[i], p_tabular[i], 1.0)),
                                   y, n_resamples, seed)
    return {"n": int(y.size), "macro_auc_by_weight": {str(w): round(a, 4) for w, a in auc.items()},
            "members_alone": {"image_only": round(M.macro_auc_of(y, p_image), 4),
                              "clinical_location": round(M.macro_auc_of(y, p_tabular), 4)},
            "best_weight": best, "best_minus_weight_1": diff}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validation.fusion_weight", description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", type=Path, action="append", required=True,
                    help="a development run's metrics.json; the first chooses")
    ap.add_argument("--weight", type=float, action="append", help=f"weights to try (default {DEFAULT_GRID})")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    grid = tuple(a.weight or DEFAULT_GRID)
    runs = []
    for path in a.metrics:
        y, pi, pt, _ = member_probabilities(json.loads(path.read_text()))
        runs.append({"metrics": str(path), **weight_table(y, pi, pt, grid)})
    doc = {"tool": "validation.fusion_weight", "grid": list(grid), "chooses": runs[0]["metrics"], "runs": runs}
    text = json.dumps(doc, indent=2) + "\n"
    if a.out:
        a.out.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
