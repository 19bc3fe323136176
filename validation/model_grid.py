"""Segmentation models compared on a prepared cohort's model grid: per-study Dice, paired, with bootstrap intervals.

A decision tool for development data (``training/config.yaml`` ``evaluation.development``): is a retrained
segmenter better than the shipped one, on studies neither was trained on, without running the whole application on
every study? The cohort is prepared exactly as training prepares its own (:func:`training.data.prepare`: the CT
and the reference label map resampled to each model's grid, canonical LPS, arrays D-H-W); each model predicts on
that grid (:func:`core.inference.predict_probabilities`, then argmax) and its Dice with the nearest-neighbour
reference on the same grid is taken per structure (:func:`validation.metrics.dice`), on the studies whose reference
holds the structure. The same function gives the internal-validation figures written into each trained model's
metadata (``training.train_all``).

These are model-grid figures: the application's figures (``python -m validation``) add the mapping back to the
series grid, the largest connected component and the sacral-region rule.

    python -m validation.model_grid --cache PREPARED_CACHE --models models_new --models models \\
        --name tumour_seg --out comparison.json [--false-positive-ml 10]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.model_metadata import ModelMetadata
from validation import metrics


def _argmax_on_grid(z: Any, name: str, module: torch.nn.Module, meta: ModelMetadata) -> np.ndarray:
    """The model's label map (channel indices, D-H-W) of a cached study ``z`` (:func:`core.inference.
    predict_probabilities` on the scaled CT, then argmax): what both figures below score."""
    from core.inference import predict_probabilities
    from core.segment import scale_intensity
    probs = predict_probabilities(module, scale_intensity(z[f"{name}_ct"], meta.seg.intensity)[None], meta,
                                  torch.device("cpu"))
    return probs.argmax(0)


def model_grid_dice(cache: Path, case_ids: Sequence[str], name: str, module: torch.nn.Module,
                    meta: ModelMetadata) -> dict[str, dict[str, float]]:
    """``{structure label: {case_id: Dice}}`` of segmentation model ``name`` on the prepared ``cache``.

    ``cache/<case_id>.npz`` holds ``<name>_ct`` (HU) and ``<name>_lab`` (label values of the reference, the
    metadata's ``source_value``), both D-H-W on the model grid (:func:`training.data.prepare`). A study enters a
    structure's figures only if its reference holds that structure (Dice in [0, 1]; a missed structure counts 0);
    a study holding none of them is not run.
    """
    out: dict[str, dict[str, float]] = {lab.label: {} for lab in meta.seg.foreground}
    for cid in case_ids:
        z = np.load(Path(cache) / f"{cid}.npz")
        present = [(ch, lab, ref) for ch, lab in enumerate(meta.seg.foreground, start=1)
                   if (ref := z[f"{name}_lab"] == lab.source_value).any()]
        if not present:
            continue
        pred = _argmax_on_grid(z, name, module, meta)
        for ch, lab, ref in present:
            out[lab.label][cid] = metrics.dice(pred == ch, ref)
    return out


def largest_component_ml_where_absent(cache: Path, case_ids: Sequence[str], name: str, module: torch.nn.Module,
                                      meta: ModelMetadata) -> dict[str, dict[str, float]]:
    """``{structure label: {case_id: mL}}``: on the studies whose reference lacks the structure, the volume (mL,
    model grid) of the largest 26-connected component the model predicts for it (0.0 when none): false
    positives before the application's post-processing (its sacral-region rule and reporting volume)."""
    from scipy import ndimage

    voxel_ml = float(np.prod(meta.seg.spacing_mm)) / 1000.0
    out: dict[str, dict[str, float]] = {lab.label: {} for lab in meta.seg.foreground}
    for cid in case_ids:
        z = np.load(Path(cache) / f"{cid}.npz")
        absent = [(ch, lab) for ch, lab in enumerate(meta.seg.foreground, start=1)
                  if not (z[f"{name}_lab"] == lab.source_value).any()]
        if not absent:
            continue
        pred = _argmax_on_grid(z, name, module, meta)
        for ch, lab in absent:
            cc, n = ndimage.label(pred == ch, structure=np.ones((3, 3, 3), bool))
            sizes = np.bincount(cc.ravel())[1:] if n else np.zeros(1)
            out[lab.label][cid] = float(sizes.max()) * voxel_ml
    return out


def with_cpu_precision(meta: ModelMetadata, precision: str) -> ModelMetadata:
    """``meta`` with its sliding window's ``cpu_precision`` replaced (to score one model both ways)."""
    seg = meta.seg
    sw = dataclasses.replace(seg.sliding_window, cpu_precision=precision)
    return dataclasses.replace(meta, segmentation=dataclasses.replace(seg, sliding_window=sw))


def compare(per_model: Sequence[dict[str, dict[str, float]]], n_resamples: int = 2000, seed: int = 0
            ) -> dict[str, Any]:
    """Per structure: each model's mean Dice with its 95 % bootstrap CI on the studies all models were scored on,
    and (for two or more models) the paired difference first minus second (:func:`validation.metrics.
    paired_mean_difference`: CI and two-sided bootstrap p-value)."""
    result: dict[str, Any] = {}
    for label in per_model[0]:
        common = sorted(set.intersection(*(set(m.get(label, {})) for m in per_model)))
        values = [np.array([m[label][c] for c in common], dtype=float) for m in per_model]
        entry: dict[str, Any] = {"n": len(common),
                                 "models": [metrics.summary_with_ci(v, n_resamples, seed) for v in values]}
        if len(values) >= 2 and common:
            a, b = values[0], values[1]
            entry["first_minus_second"] = metrics.paired_mean_difference(a, b, n_resamples, seed)
        result[label] = entry
    return result


def main(argv: list[str] | None = None) -> int:
    from core.models import load_model
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True, help="a cohort prepared by training.data.prepare")
    ap.add_argument("--models", type=Path, action="append", required=True,
                    help="a models folder (give two to compare: first minus second)")
    ap.add_argument("--name", action="append", help="segmentation model(s) to score (default: both)")
    ap.add_argument("--cpu-precision", action="append", choices=("model", "fp32", "bf16"),
                    help="forward-pass precision on CPU, one per --models (default: each model's own setting)")
    ap.add_argument("--out", type=Path, help="write the figures and per-study Dice here (JSON)")
    ap.add_argument("--first", type=int, help="score only the first N studies of the cache (in case-id order)")
    ap.add_argument("--false-positive-ml", type=float, default=None,
                    help="also count, over ALL the cache's studies whose reference lacks a structure, those with a "
                         "predicted component of at least this many mL (model grid)")
    a = ap.parse_args(argv)
    index = json.loads((a.cache / "index.json").read_text())
    ids = sorted(e["case_id"] for e in index)[:a.first]
    from core.inference import forward_precision
    precisions = a.cpu_precision or ["model"] * len(a.models)
    if len(precisions) != len(a.models):
        ap.error("give one --cpu-precision per --models")
    report: dict[str, Any] = {"cache": str(a.cache), "n_studies": len(ids), "models": [str(m) for m in a.models]}
    for name in a.name or ["hip_bone_seg", "tumour_seg"]:
        per_model, versions, fp = [], [], []
        for folder, precision in zip(a.models, precisions):
            loaded = load_model(folder, name)
            meta = loaded.metadata if precision == "model" else with_cpu_precision(loaded.metadata, precision)
            print(f"scoring {name} of {folder} on {len(ids)} studies ({precision})", flush=True)
            per_model.append(model_grid_dice(a.cache, ids, name, loaded.module, meta))
            versions.append(f"{loaded.metadata.version} ({forward_precision(meta, torch.device('cpu'))})")
            if a.false_positive_ml is not None:   # over all the cache's studies, not only the first N
                fp.append(largest_component_ml_where_absent(a.cache, sorted(e["case_id"] for e in index), name,
                                                            loaded.module, meta))
        report[name] = {"versions": versions, "figures": compare(per_model), "per_study": per_model}
        if a.false_positive_ml is not None:
            report[name]["false_positives"] = {
                "min_component_ml": a.false_positive_ml,
                "per_study_largest_component_ml": fp,
                "counts": [{label: {"studies_without": len(v), "with_component":
                                    sum(x >= a.false_positive_ml for x in v.values())} for label, v in m.items()}
                           for m in fp]}
            for v, c in zip(versions, report[name]["false_positives"]["counts"]):
                print(f"{name} {v}: " + "; ".join(f"{label}: {x['with_component']} of {x['studies_without']} studies "
                                                   f"without it have a component >= {a.false_positive_ml:g} mL"
                                                   for label, x in c.items()), flush=True)
        for label, entry in report[name]["figures"].items():
            means = ", ".join(f"{v} {m['mean']['value']:.4f} ({m['mean']['ci_low']:.4f}-{m['mean']['ci_high']:.4f})"
                              for v, m in zip(versions, entry["models"]) if m.get("mean"))
            diff = entry.get("first_minus_second")
            extra = (f"; difference {diff['difference']:+.4f} ({diff['ci_low']:+.4f} to {diff['ci_high']:+.4f}), "
                     f"p {diff['p_value']:.3f}") if diff else ""
            print(f"{name} / {label} (n={entry['n']}): {means}{extra}", flush=True)
    if a.out:
        a.out.write_text(json.dumps(metrics.jsonable(report), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
