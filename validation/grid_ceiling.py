"""The Dice a perfect model could reach on a given model grid: reference label maps sent through that grid.

For each study of a manifest, every structure of the reference label map is box-averaged onto the canonical model
grid (:func:`core.segment.canonical_resample` with anti-aliasing, fill 0): the fraction of each model voxel that the
structure fills, which is what a perfect model's probability would be. These fractions are then mapped back onto
the series grid exactly as the application maps its probabilities (:func:`core.segment.probabilities_to_labels`:
linear interpolation, argmax against background). The Dice of that round trip with the reference is the ceiling
of any model working on that grid through the application's own resampling: the part of the error that comes from
the grid, not from the network.

``--targets hard`` asks a second question: the Dice of a model that reproduces exactly its training targets, the
label map resampled to the model grid by nearest neighbour (what ``training.data.prepare`` caches), as one-hot
probabilities through the same mapping back. The gap between the two is what training on hard labels costs.

    python -m validation.grid_ceiling --manifest COHORT/manifest.csv --spacing 3 --spacing 2 --out ceiling.json

Use development cohorts only (``training/config.yaml`` ``evaluation.development``): it informs a decision.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.segment import canonical_resample, probabilities_to_labels
from core.volume import Volume
from validation import metrics, segmentation

#: label value -> name of the structures the validation compares (:data:`validation.segmentation.STRUCTURES`), in
#: value order
STRUCTURES = {value: name for name, (value, _) in sorted(segmentation.STRUCTURES.items(), key=lambda kv: kv[1][0])}


def round_trip(labels: Volume, spacing_dhw: Sequence[float], values: Sequence[int] = tuple(STRUCTURES)) -> np.ndarray:
    """``labels`` (D-H-W, LPS) through a model grid of ``spacing_dhw`` mm and back: uint8 labels on its grid.

    Each value of ``values`` becomes a fraction map on the canonical model grid (box average, then linear
    resampling); the fractions, with background = 1 - their sum, go back as the application's probabilities.
    """
    fractions = [canonical_resample(labels.with_array((labels.array == v).astype(np.float32)), spacing_dhw,
                                    antialias=True, fill=0.0) for v in values]
    grid = fractions[0]
    fg = np.stack([f.array for f in fractions])
    probs = np.concatenate([np.clip(1.0 - fg.sum(0), 0.0, 1.0)[None], fg]).astype(np.float32)
    return probabilities_to_labels(probs, grid, labels, values)


def round_trip_hard(labels: Volume, spacing_dhw: Sequence[float],
                    values: Sequence[int] = tuple(STRUCTURES)) -> np.ndarray:
    """``labels`` (D-H-W, LPS) resampled to a model grid of ``spacing_dhw`` mm by nearest neighbour (the training
    targets), then back as one-hot probabilities through the application's mapping: uint8 labels on its grid."""
    hard = canonical_resample(labels, spacing_dhw, is_label=True)
    probs = np.stack([hard.array == v for v in (0, *values)]).astype(np.float32)
    return probabilities_to_labels(probs, hard, labels, values)


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """:func:`validation.metrics.dice` of two boolean masks, None (for JSON) when both are empty."""
    d = metrics.dice(a, b)
    return None if math.isnan(d) else d


def case_ceiling(labels: Volume, spacings: Sequence[float], targets: str = "soft"
                 ) -> dict[str, dict[str, float | None]]:
    """{f"{s:g} mm": {structure: Dice of the round trip}} for each isotropic spacing ``s`` (mm); ``targets``
    "soft" (:func:`round_trip`, a perfect model) or "hard" (:func:`round_trip_hard`, the training targets)."""
    trip = {"soft": round_trip, "hard": round_trip_hard}[targets]
    out: dict[str, dict[str, float | None]] = {}
    for s in spacings:
        back = trip(labels, (s, s, s))
        out[f"{s:g} mm"] = {name: dice(labels.array == v, back == v) for v, name in STRUCTURES.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    from training.data import load_case
    from validation.manifest import read_manifest

    ap = argparse.ArgumentParser(prog="python -m validation.grid_ceiling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--spacing", type=float, action="append", required=True, help="isotropic model grid, mm")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--targets", choices=("soft", "hard"), default="soft",
                    help="soft: a perfect model's fractions (default); hard: nearest-neighbour training targets")
    a = ap.parse_args(argv)
    cases, _ = read_manifest(a.manifest)
    rows: list[dict[str, Any]] = []
    for case in cases:
        if case.label_path is None:
            continue
        _, labels, _ = load_case(case)
        row = {"case_id": case.case_id, "spacing_mm": [float(x) for x in labels.spacing],
               "ceiling": case_ceiling(labels, a.spacing, a.targets)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for s in a.spacing:
        key = f"{s:g} mm"
        summary[key] = {}
        for name in STRUCTURES.values():
            vals = [r["ceiling"][key][name] for r in rows if r["ceiling"][key][name] is not None]
            if vals:
                summary[key][name] = {"n": len(vals), "mean": round(float(np.mean(vals)), 4),
                                      "min": round(float(np.min(vals)), 4), "max": round(float(np.max(vals)), 4)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"manifest": str(a.manifest), "targets": a.targets, "summary": summary, "cases": rows}
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
