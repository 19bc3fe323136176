"""Train all three shipped models from scratch with one command.

    python -m training.train_all --out models --work build/train [--config training/config.yaml]
                                 [--manifest COHORT.csv] [--quick]

Without ``--manifest`` a synthetic cohort is generated with ``training.phantom`` (seed and size from the
config). With ``--manifest`` a hospital's own cohort is used (format in ``training/data.py``). ``--quick``
trains a few iterations of everything (the smoke test in the test suite). Internal validation figures (a
split of the training cohort) go into each metadata.json; held-out figures come from ``python -m validation``.

Each model's metadata is built as a :class:`core.model_metadata.ModelMetadata` from the config and written only
by ``core.models.write_model``. The classifier's class list is the generator's
(:data:`training.phantom.params.TUMOUR_CLASSES`), written into its metadata; everything downstream reads it there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from core import clinical
from core.config import AnalysisConfig
from core.model_metadata import (
    ClassificationSpec, CropSpec, ModelMetadata, ModelVariant, SacralRegion, SegmentationSpec,
)
from core.models import load_model, write_model
from core.networks import LateFusion, MirrorAveraged
from training.data import combine_manifests, prepare, segmented_classifier_inputs
from training.phantom.params import TUMOUR_CLASSES
from training.train_classifier import (
    FULL_FUSION_OF, VARIANTS, export_classifier, fusion_architecture, fusion_weights, predict, tabular_matrix,
    train_variant,
)
from training.train_seg import export_segmenter, train_segmenter

REPO = Path(__file__).resolve().parents[1]
STAGES = ("hip_bone_seg", "tumour_seg", "tumour_classifier")


def _split(ids: list[str], frac: float, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(ids))
    n_val = max(1, int(round(frac * len(ids)))) if len(ids) > 2 else 0
    return sorted(order[n_val:]), sorted(order[:n_val])


def _seg_validation(cache: Path, name: str, ids: list[str], meta: ModelMetadata, net: torch.nn.Module
                    ) -> dict[str, float]:
    """Mean model-grid Dice per structure on the internal validation cases (:func:`validation.model_grid.
    model_grid_dice`, the one implementation the development comparisons use too)."""
    from validation.model_grid import model_grid_dice
    per_case = model_grid_dice(cache, ids, name, net, meta)
    return {f"dice_{k.replace(' ', '_')}_model_grid": round(float(np.mean(list(v.values()))), 4)
            for k, v in per_case.items() if v}


def _macro_auc(y: np.ndarray, p: np.ndarray, k: int) -> float:
    from sklearn.metrics import roc_auc_score
    present = [c for c in range(k) if 0 < (y == c).sum() < len(y)]
    return float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present])) if present else float("nan")


def _sacral_region(index: list[dict], train_ids: list[str], margin: float) -> SacralRegion | None:
    """The tumour model's domain in the hip frame: the box around the training tumours' reference centroids
    (normalised ``(u, v, w)``), widened by ``margin`` (:class:`core.model_metadata.SacralRegion`)."""
    ids = set(train_ids)
    locs = np.array([[e["tabular"][k] for k in ("loc_u", "loc_v", "loc_w")] for e in index
                     if e["case_id"] in ids and e["tabular"].get("loc_u") is not None])
    if not len(locs):
        return None
    return SacralRegion.around(locs, margin, f"centroids of the {len(locs)} training tumours (reference masks)")


# Parallel training (--seg-workers > 1): the jobs not yet finished, shared between the worker processes, so that a
# model still training takes the CPUs of one that has finished (:func:`_threads_now`).
_REMAINING: Any = None
_CPUS = 1
_WORKERS = 1


def _init_seg_worker(remaining: Any, cpus: int, workers: int) -> None:
    global _REMAINING, _CPUS, _WORKERS
    _REMAINING, _CPUS, _WORKERS = remaining, cpus, workers
    torch.set_num_threads(_threads_now())


def _threads_now() -> int:
    """Torch threads for one worker: the CPUs shared by the jobs still training (at most one per worker)."""
    return max(1, _CPUS // max(1, min(_WORKERS, _REMAINING.value)))


@dataclass(frozen=True)
class SegStageJob:
    """One segmentation model to train, validate on the internal split and write (:func:`train_seg_stage`)."""
    name: str
    spec: dict[str, Any]            # the model's section of training/config.yaml
    seg_spec: SegmentationSpec
    common: dict[str, str]          # version, training_data, intended_use, trained_on
    cache: Path
    train_ids: list[str]
    val_ids: list[str]
    index: list[dict[str, Any]]
    out: Path
    iterations: int
    seed: int


def train_seg_stage(job: SegStageJob) -> str:
    """Train one segmentation model, validate it on (up to 16 of) the internal validation cases on the model grid
    and write it to ``job.out / job.name``; returns the model's folder. Deterministic given the job and the
    number of torch threads (in parallel mode they rise when the other model has finished: :func:`_threads_now`)."""
    spec = job.spec
    meta = ModelMetadata(name=job.name, task="segmentation", description=spec["description"],
                         architecture=spec["architecture"], segmentation=job.seg_spec, **job.common)
    threads_at_start = torch.get_num_threads()
    net, summary = train_segmenter(job.cache, job.name, job.train_ids, meta, iterations=job.iterations,
                                   batch_size=int(spec.get("batch_size", 2)), seed=job.seed,
                                   precision=str(spec.get("precision", "fp32")),
                                   batch_dice=bool(spec.get("batch_dice", False)),
                                   hard_negatives=spec.get("hard_negatives"),
                                   flip_augment=tuple(spec.get("flip_augment", ())),
                                   edge_fraction=float(spec.get("edge_fraction", 0.0)),
                                   threads=_threads_now if _REMAINING is not None else None)
    if _REMAINING is not None:
        with _REMAINING.get_lock():
            _REMAINING.value -= 1
        torch.set_num_threads(_threads_now())
    region = _sacral_region(job.index, job.train_ids, float(spec["sacral_region_margin"])) \
        if "sacral_region_margin" in spec else None
    if region is not None:
        meta = replace(meta, segmentation=replace(meta.seg, sacral_region=region))
    validation = _seg_validation(job.cache, job.name, job.val_ids[:16], meta, net) if job.val_ids else {}
    meta = replace(meta, training={**summary, "torch_threads": threads_at_start,
                                   "loss": "DiceCE" + (" (batch Dice)" if summary["batch_dice"] else "")
                                           + ", deep supervision",
                                   "patch_size_dhw": list(meta.seg.sliding_window.roi_size)},
                   internal_validation=validation)
    print(f"[{job.name}] internal validation {validation}", flush=True)
    write_model(job.out / job.name, export_segmenter(net, meta), meta)
    return str(job.out / job.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "models")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "train")
    ap.add_argument("--config", type=Path, default=REPO / "training" / "config.yaml")
    ap.add_argument("--manifest", type=Path, help="existing cohort manifest (default: generate a phantom cohort)")
    ap.add_argument("--quick", action="store_true", help="tiny cohort and a few iterations (smoke test)")
    ap.add_argument("--skip-prepare", action="store_true", help="reuse an existing cache in --work")
    ap.add_argument("--reuse-cohort", action="store_true",
                    help="reuse the phantom studies already generated in --work (same config), prepare them again")
    ap.add_argument("--seg-workers", type=int, default=2,
                    help="train the segmentation models in this many processes at once, the CPUs shared between "
                         "them (default 2: on 2 cores, 15 %% more iterations per second than one after the other)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                    help="train only these models (the others are read from --out); default: all")
    a = ap.parse_args(argv)
    cfg = yaml.safe_load(a.config.read_text())
    t_start = time.time()
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    cohort_cfg = cfg["cohort"]
    n_cases = 12 if a.quick else int(cohort_cfg["n"])
    manifest = a.manifest
    world, protocol = str(cohort_cfg.get("tumour_world", "v1")), str(cohort_cfg.get("protocol", "standard"))
    if manifest is None:
        from training.phantom import generate_cohort
        manifest = work / "cohort" / "manifest.csv"
        reuse = a.skip_prepare or a.reuse_cohort
        if not (reuse and manifest.exists()):
            print(f"generating {n_cases} phantom cases (seed {cohort_cfg['seed']}, tumour world {world})", flush=True)
            manifest = generate_cohort(work / "cohort", n=n_cases, seed=int(cohort_cfg["seed"]),
                                       no_tumour_fraction=float(cohort_cfg["no_tumour_fraction"]),
                                       protocol=protocol, tumour_world=world, workers=2)
        neg = cohort_cfg.get("negatives") or {}
        if int(neg.get("n", 0)) > 0:   # studies without a pelvis (cohort.negatives), appended to the cohort
            neg_manifest = work / "negatives" / "manifest.csv"
            n_neg = 2 if a.quick else int(neg["n"])
            if not (reuse and neg_manifest.exists()):
                print(f"generating {n_neg} studies without a pelvis ({neg['coverage']})", flush=True)
                generate_cohort(work / "negatives", n=n_neg, seed=int(cohort_cfg["seed"]), no_tumour_fraction=1.0,
                                classes=["none"], protocol=protocol, tumour_world=world,
                                coverage=str(neg["coverage"]), case_prefix="N", start_index=int(neg["start_index"]),
                                workers=2)
            manifest = combine_manifests([manifest, neg_manifest], work / "manifest_all.csv")
    seg_cfg = cfg["segmentation"]
    seg_specs = {name: SegmentationSpec.from_dict(spec) for name, spec in seg_cfg.items()}
    clf_cfg = cfg["classifier"]
    crop = CropSpec.from_dict(clf_cfg["crop"], "classifier.crop")
    cache = work / "cache"
    if not (a.skip_prepare and (cache / "index.json").exists()):
        print("preparing cache", flush=True)
        prepare(manifest, cache, seg_specs, crop, clf_cfg.get("mask_augmentation"), workers=2)
    index = json.loads((cache / "index.json").read_text())
    ids = [e["case_id"] for e in index]
    train_ids, val_ids = _split(ids, float(cohort_cfg["validation_fraction"]), int(cohort_cfg["seed"]))
    split = f"{len(ids)} cases; {len(train_ids)} train / {len(val_ids)} internal validation"
    if a.manifest is None:
        data_desc = (f"synthetic pelvic CT phantoms (training.phantom, seed {cohort_cfg['seed']}, tumour world "
                     f"{world}, {split}); NOT patient data")
    else:
        data_desc = f"cohort of manifest {manifest.name} ({split})"
    common = {"version": str(cfg["version"]), "training_data": data_desc,
              "intended_use": "Demonstration weights trained on synthetic data. Not for clinical use.",
              "trained_on": f"{platform.node()} {platform.machine()} torch {torch.__version__}"}

    seg_jobs = [SegStageJob(name=name, spec=spec, seg_spec=seg_specs[name], common=common, cache=cache,
                            train_ids=train_ids, val_ids=val_ids, index=index, out=a.out,
                            iterations=3 if a.quick else int(spec["iterations"]), seed=int(cohort_cfg["seed"]))
                for name, spec in seg_cfg.items() if name in a.stages]
    workers = max(1, min(len(seg_jobs), a.seg_workers))
    if workers == 1:
        for job in seg_jobs:
            train_seg_stage(job)
    else:  # one process per model, each with its share of the CPUs (torch threads)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        ctx = multiprocessing.get_context("spawn")
        remaining = ctx.Value("i", len(seg_jobs))
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_seg_worker,
                                 initargs=(remaining, len(os.sched_getaffinity(0)), workers)) as pool:
            list(pool.map(train_seg_stage, seg_jobs))

    if "tumour_classifier" not in a.stages:
        print(f"models written to {a.out} in {time.time() - t_start:.0f} s", flush=True)
        return 0
    # Classifier and its ablation variants, trained on inputs cut with the reference tumour mask and with the
    # tumour model's own mask (what the application gives it); validated on the latter.
    classes = list(TUMOUR_CLASSES)
    sources = list(clf_cfg.get("inputs", ["reference_mask"]))
    samples: dict[str, list[tuple[str, np.ndarray, dict, int]]] = {
        "reference_mask": [], "reference_mask_dilated": [], "reference_mask_eroded": [], "tumour_seg_mask": []}
    tum = []  # index entries of the tumour cases (those with a reference crop)
    for e in index:
        if e["tumour_class"] not in classes:
            continue
        z = np.load(cache / e["file"])
        if "crop" not in z.files:
            continue
        tum.append(e)
        for key, source in (("crop", "reference_mask"), ("crop_dilated", "reference_mask_dilated"),
                            ("crop_eroded", "reference_mask_eroded")):
            if key in z.files:  # the perturbed masks' crops share the reference tabular values
                samples[source].append((e["case_id"], z[key], e["tabular"], classes.index(e["tumour_class"])))
    if "tumour_seg_mask" in sources:
        t_seg = time.time()
        tumour_model = load_model(a.out, "tumour_seg")
        seg_inputs = segmented_classifier_inputs(manifest, [e["case_id"] for e in tum], tumour_model.module,
                                                 tumour_model.metadata, crop, AnalysisConfig())  # == app.yaml
        samples["tumour_seg_mask"] = segmented_samples(seg_inputs, tum, classes)
        print(f"[classifier] inputs from the tumour model's masks: {len(seg_inputs)} of {len(tum)} cases "
              f"({time.time() - t_seg:.0f} s)", flush=True)
    train_set, val_set = set(train_ids), set(val_ids)
    tr = [s_ for src in sources for s_ in samples[src] if s_[0] in train_set]
    val_source = "tumour_seg_mask" if samples["tumour_seg_mask"] else "reference_mask"
    va = [s_ for s_ in samples[val_source] if s_[0] in val_set]
    names = list(clf_cfg["features"])
    feature_meta = clinical.fit_feature_spec({n: [s_[2][n] for s_ in tr] for n in names}, names)

    def arrays(entries: list[tuple[str, np.ndarray, dict, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not entries:
            return (np.zeros((0, 2, *crop.size), np.float32), np.zeros((0, len(names)), np.float32),
                    np.zeros(0, np.int64))
        tab, _ = tabular_matrix([s_[2] for s_ in entries], feature_meta)
        return np.stack([s_[1] for s_ in entries]), tab, np.array([s_[3] for s_ in entries], dtype=np.int64)

    ctr, ttr, ytr = arrays(tr)
    cva, tva, yva = arrays(va)
    print(f"[classifier] {len(tr)} training inputs ({', '.join(sources)}), {len(va)} validation inputs ({val_source})",
          flush=True)
    epochs = 2 if a.quick else int(clf_cfg["epochs"])
    variants_meta: dict[str, ModelVariant] = {}
    clf_folder = a.out / clf_cfg["name"]
    results: dict[str, Any] = {}
    nets: dict[str, torch.nn.Module] = {}
    crop_shape = ctr.shape[1:] if len(ctr) else (2, *crop.size)
    for vname, v in VARIANTS.items():
        feats = names if v["features"] is None else v["features"]
        arch = {**clf_cfg["architecture"], "use_image": v["use_image"], "use_tabular": v["use_tabular"],
                "n_tabular": len(names), "tabular_index": [names.index(f) for f in feats], "n_classes": len(classes)}
        net, summary = train_variant(arch, ctr, ttr, ytr, epochs=epochs, batch_size=int(clf_cfg["batch_size"]),
                                     lr=float(clf_cfg["lr"]), seed=int(cohort_cfg["seed"]), log_prefix=vname)
        if v["use_image"]:  # test-time augmentation, part of the exported model
            net = MirrorAveraged(net).eval()
            arch = {**arch, "test_time_augmentation": "mean log-posterior of the crop and its left-right mirror "
                                                      "(core.networks.MirrorAveraged)"}
        nets[vname] = net
        results[vname] = (arch, {**summary, "inputs": sources})
    weights = fusion_weights(clf_cfg)
    fused = LateFusion([nets[v] for v in FULL_FUSION_OF], weights=weights).eval()
    nets["full"] = fused
    results["full"] = (fusion_architecture({v: results[v][0] for v in FULL_FUSION_OF}, weights),
                       {"members": {v: results[v][1] for v in FULL_FUSION_OF}, "inputs": sources})
    exported: dict[str, Any] = {}
    for vname, net in nets.items():
        auc = _macro_auc(yva, predict(net, cva, tva), len(classes)) if len(yva) else float("nan")
        print(f"[{vname}] internal validation macro AUC {auc:.3f} ({val_source} inputs)", flush=True)
        exported[vname] = (export_classifier(net, crop_shape, len(names)), *results[vname], auc)
    from core.models import sha256_of
    for vname in ("image_only", "clinical_only", "clinical_location"):
        ts, arch, summary, auc = exported[vname]
        vdir = clf_folder / "variants"
        vdir.mkdir(parents=True, exist_ok=True)
        torch.jit.save(ts, str(vdir / f"{vname}.ts"))
        variants_meta[vname] = ModelVariant(
            file=f"variants/{vname}.ts", sha256=sha256_of(vdir / f"{vname}.ts"), architecture=arch, training=summary,
            internal_validation={"macro_auc": round(auc, 4), "inputs": val_source})
    ts, arch, summary, auc = exported["full"]
    meta = ModelMetadata(
        name=clf_cfg["name"], task="classification", description=clf_cfg["description"], architecture=arch,
        training=summary, internal_validation={"macro_auc": round(auc, 4), "inputs": val_source},
        classification=ClassificationSpec(classes=tuple(classes), features=feature_meta, crop=crop,
                                          variants=variants_meta), **common)
    write_model(clf_folder, ts, meta)
    print(f"all models written to {a.out} in {time.time() - t_start:.0f} s", flush=True)
    return 0


def segmented_samples(seg_inputs: Mapping[str, tuple[np.ndarray, dict]], tumour_entries: Sequence[Mapping[str, Any]],
                      classes: Sequence[str]) -> list[tuple[str, np.ndarray, dict, int]]:
    """Classifier samples ``(case_id, crop, raw tabular values, class index)`` of the tumour cases (cache index
    entries, in their order) whose tumour the tumour model found (``seg_inputs``: :func:`training.data.
    segmented_classifier_inputs`); the others are left out."""
    return [(e["case_id"], *seg_inputs[e["case_id"]], classes.index(e["tumour_class"]))
            for e in tumour_entries if e["case_id"] in seg_inputs]


if __name__ == "__main__":
    raise SystemExit(main())
