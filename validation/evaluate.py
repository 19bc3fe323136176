"""metrics.json: every statistic of a validation run, computed from the case records (see runner.case_record).

Which cases count where (also in docs/validation.md):

* **failures**: status ``error`` (non-zero exit, crash, timeout) or ``not_applicable``: listed with the
  reason, excluded from every metric.
* **unlabelled**: no ``tumour_class`` in the manifest: listed, excluded from every metric.
* **detection** (tumour present vs absent): analysed cases (``tumour_found`` / ``no_tumour``) with a reference,
  including reference ``none``.
* **classification** (six classes): reference tumour class and status ``tumour_found``. A reference tumour
  with status ``no_tumour`` is a *missed detection* (listed) and is not in the class metrics; a reference
  ``none`` with ``tumour_found`` is a *false-positive detection* (listed, counted in detection only).
* **segmentation**: analysed cases with a reference label map; tumour Dice and volume error over cases whose
  reference has a tumour, hip bones over cases whose reference has that bone.
* **readers**: the classification cases where the reader gave an answer; the model on the same cases.
* **ablation**: the classification cases whose result.json has every variant.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.status import ANALYSED, Status
from validation import metrics as M
from validation.manifest import NONE

SCHEMA = "sacral-tumour-validation/1"
#: ablation variant key in result.json -> label; "all" = the deployed model's probabilities
ABLATION_VARIANTS: dict[str, str] = {
    "image_only": "image only", "clinical_only": "clinical only",
    "clinical_location": "clinical + location", "all": "all (deployed model)",
}
SEG_STRUCTURES = ("tumour", "hip_bone_left", "hip_bone_right")


def _canon(name: str | None) -> str | None:
    from core.codes import tumour_class_key
    return None if name is None else tumour_class_key(name)


def _scores(probs: dict[str, float], classes: Sequence[str]) -> list[float]:
    canon = {_canon(k): float(v) for k, v in probs.items()}
    return [canon.get(c, float("nan")) for c in classes]


def class_arrays(records: list[dict[str, Any]], classes: Sequence[str], key: str = "probabilities"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y_true, y_pred, scores) of classification records; ``key`` selects the deployed probabilities or an
    ablation variant (``ablation.<variant>``); the prediction is then the arg-max of that variant."""
    idx = {c: i for i, c in enumerate(classes)}
    y_true = np.array([idx[r["truth"]] for r in records], dtype=int)
    if key == "probabilities":
        scores = np.array([_scores(r["probabilities"], classes) for r in records],
                          dtype=float).reshape(-1, len(classes))
        y_pred = np.array([idx[_canon(r["predicted_class"])] for r in records], dtype=int)
    else:
        variant = key.split(".", 1)[1]
        scores = np.array([_scores(r["ablation"][variant], classes) for r in records],
                          dtype=float).reshape(-1, len(classes))
        y_pred = scores.argmax(axis=1) if len(records) else np.zeros(0, dtype=int)
    return y_true, y_pred, scores


def is_classification_case(r: dict[str, Any]) -> bool:
    return r["truth"] not in (None, NONE) and r["status"] == Status.TUMOUR_FOUND and r["predicted_class"] is not None


def is_detection_case(r: dict[str, Any]) -> bool:
    return r["truth"] is not None and r["status"] in ANALYSED


def _summary(rep: dict[str, Any]) -> dict[str, Any]:
    return {k: rep[k] for k in ("n", "macro_auc", "macro_f1", "accuracy", "balanced_accuracy")}


def classification_block(records: list[dict[str, Any]], classes: Sequence[str], n_resamples: int, seed: int,
                         curves: bool = True) -> dict[str, Any]:
    y_true, y_pred, scores = class_arrays(records, classes)
    rep = M.classification_report(y_true, y_pred, scores, classes, n_resamples, seed)
    if curves:
        rep["roc_curves"] = M.roc_curves(y_true, scores, classes)
        conf = scores.max(axis=1) if len(records) else np.zeros(0)
        rep["calibration"] = M.calibration(conf, y_true == y_pred)
        rep["calibration"]["what"] = "probability of the predicted class vs fraction correct"
    return rep


def detection_block(records: list[dict[str, Any]], n_resamples: int, seed: int) -> dict[str, Any]:
    det = [r for r in records if is_detection_case(r)]
    return M.detection_report(np.array([r["truth"] != NONE for r in det], dtype=bool),
                              np.array([r["status"] == Status.TUMOUR_FOUND for r in det], dtype=bool),
                              n_resamples, seed)


def detection_confidence_block(records: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`validation.metrics.detection_operating_points` of the detection cases; ``{"n", "why"}`` instead
    when a found tumour has no mean probability (a run of an application version before 1 Dec 2026)."""
    det = [r for r in records if is_detection_case(r)]
    found = [r["status"] == Status.TUMOUR_FOUND for r in det]
    if any(f and r.get("tumour_mean_probability") is None for r, f in zip(det, found)):
        return {"n": len(det), "why": "a found tumour without tumour.mean_probability in its result.json"}
    return M.detection_operating_points(
        np.array([r["truth"] != NONE for r in det], dtype=bool), np.array(found, dtype=bool),
        np.array([r["tumour_mean_probability"] if f else math.nan for r, f in zip(det, found)], dtype=float))


def scored_segmentation(record: dict[str, Any], structure: str) -> dict[str, Any] | None:
    """The study's segmentation figures of ``structure`` (dice, volumes) if they count in the segmentation
    summary: an analysed study whose reference holds the structure (a missed tumour counts, with Dice 0);
    None otherwise (no reference structure, study not analysed, SEG not compared)."""
    seg = record.get("segmentation") or {}
    if record["status"] not in ANALYSED or structure not in seg or not seg[structure]["reference_ml"] > 0:
        return None
    return seg[structure]


def segmentation_block(records: list[dict[str, Any]], n_resamples: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in SEG_STRUCTURES:
        rows = [x for x in (scored_segmentation(r, s) for r in records) if x is not None]
        d = np.array([x["dice"] for x in rows], dtype=float)
        e = np.array([x["volume_error_ml"] for x in rows], dtype=float)
        out[s] = {"n": len(rows), "dice": M.summary_with_ci(d, n_resamples, seed),
                  "volume_error_ml": M.summary_with_ci(e, n_resamples, seed),
                  "absolute_volume_error_ml": M.summary_with_ci(np.abs(e), n_resamples, seed)}
    out["errors"] = [{"case_id": r["case_id"], "error": r["segmentation_error"]} for r in records
                     if r.get("segmentation_error")]
    return out


def subgroup_block(records: list[dict[str, Any]], columns: Sequence[str], classes: Sequence[str],
                   n_resamples: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in columns:
        values = sorted({r["subgroups"].get(col, "") for r in records}, key=lambda v: (v == "", _sort_key(v)))
        groups = {}
        for v in values:
            rs = [r for r in records if r["subgroups"].get(col, "") == v]
            cls = [r for r in rs if is_classification_case(r)]
            seg = segmentation_block(rs, n_resamples, seed)
            groups[v if v != "" else "(missing)"] = {
                "n_studies": len(rs),
                "n_failed": sum(r["status"] not in ANALYSED for r in rs),
                "detection": detection_block(rs, n_resamples, seed),
                "classification": _summary(classification_block(cls, classes, n_resamples, seed, curves=False)),
                "tumour_dice": seg["tumour"]["dice"],
            }
        out[col] = groups
    return out


def _sort_key(v: str) -> tuple[int, float, str]:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def reader_block(cls_records: list[dict[str, Any]], classes: Sequence[str], n_resamples: int, seed: int
                 ) -> dict[str, Any]:
    names = sorted({n for r in cls_records for n in r["readers"]})
    idx = {c: i for i, c in enumerate(classes)}
    out = {}
    for name in names:
        rs = [r for r in cls_records if r["readers"].get(name) is not None]
        y_true, y_model, s_model = class_arrays(rs, classes)
        y_reader = np.array([idx.get(r["readers"][name], -1) for r in rs], dtype=int)  # 'none' -> -1
        s_reader = M.one_hot(y_reader, len(classes))
        reader = M.classification_report(y_true, y_reader, s_reader, classes, n_resamples, seed)
        model = M.classification_report(y_true, y_model, s_model, classes, n_resamples, seed)
        yt, sm, sr, ym, yr = y_true, s_model, s_reader, y_model, y_reader  # bound per reader (called right here)
        diff = M.paired_difference(lambda i, yt=yt, sm=sm: M.macro_auc_of(yt[i], sm[i]),
                                   lambda i, yt=yt, sr=sr: M.macro_auc_of(yt[i], sr[i]), y_true, n_resamples, seed)
        diff_acc = M.paired_difference(lambda i, yt=yt, ym=ym: float(np.mean(yt[i] == ym[i])),
                                       lambda i, yt=yt, yr=yr: float(np.mean(yt[i] == yr[i])), y_true, n_resamples,
                                       seed)
        out[name] = {"n": len(rs), "reader": reader, "model_same_cases": _summary(model),
                     "macro_auc_model_minus_reader": diff, "accuracy_model_minus_reader": diff_acc}
    return out


def ablation_block(cls_records: list[dict[str, Any]], classes: Sequence[str], n_resamples: int, seed: int
                   ) -> dict[str, Any] | None:
    variants = [v for v in ABLATION_VARIANTS if v != "all"]
    rs = [r for r in cls_records if all(v in r.get("ablation", {}) for v in variants)]
    if not rs:
        return None
    y_true, _, s_all = class_arrays(rs, classes)
    out: dict[str, Any] = {"n": len(rs), "variants": {}}
    for v, label in ABLATION_VARIANTS.items():
        yt, yp, s = class_arrays(rs, classes, "probabilities" if v == "all" else f"ablation.{v}")
        if v == "all":  # the deployed prediction is the arg-max of its probabilities too
            yp = s.argmax(axis=1)
        rep = M.classification_report(yt, yp, s, classes, n_resamples, seed)
        entry = {"label": label, **_summary(rep),
                 "per_class_auc": {c: rep["per_class"][c]["auc"] for c in classes}}
        if v != "all":
            entry["macro_auc_all_minus_variant"] = M.paired_difference(
                lambda i: M.macro_auc_of(y_true[i], s_all[i]), lambda i, s=s: M.macro_auc_of(y_true[i], s[i]),
                y_true, n_resamples, seed)
        out["variants"][v] = entry
    return out


def build_metrics(records: list[dict[str, Any]], *, classes: Sequence[str],
                  subgroup_columns: Sequence[str] = (), n_resamples: int = 1000, seed: int = 0,
                  provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metrics.json document (JSON-ready: nan -> null, floats to 6 digits). ``classes``: the validated
    classifier's class keys in its output order (from its metadata, ``validation.__main__.model_classes``)."""
    classes = list(classes)
    for r in records:
        if r["truth"] not in (None, NONE) and r["truth"] not in classes:
            raise ValueError(f"case {r['case_id']}: reference class {r['truth']!r} is not a model class {classes}")
    cls_records = [r for r in records if is_classification_case(r)]
    failures = [{"case_id": r["case_id"], "status": r["status"], "exit_code": r["exit_code"],
                 "reason": r["reason"] or "; ".join(r["warnings"]) or None, "warnings": r["warnings"]}
                for r in records if r["status"] not in ANALYSED]
    missed = [{"case_id": r["case_id"], "truth": r["truth"]} for r in records
              if r["truth"] not in (None, NONE) and r["status"] == Status.NO_TUMOUR]
    false_pos = [{"case_id": r["case_id"], "predicted_class": r["predicted_class"]} for r in records
                 if r["truth"] == NONE and r["status"] == Status.TUMOUR_FOUND]
    seg = segmentation_block(records, n_resamples, seed)
    doc = {
        "schema": SCHEMA,
        "provenance": provenance or {},
        "settings": {"bootstrap_resamples": n_resamples, "seed": seed, "confidence_level": 1 - M.ALPHA,
                     "ci_method": "percentile bootstrap, stratified by reference class",
                     "classes": classes, "subgroup_columns": list(subgroup_columns)},
        "cohort": {
            "n_studies": len(records),
            "by_status": dict(sorted(Counter(str(r["status"]) for r in records).items())),
            "by_reference": dict(sorted(Counter(str(r["truth"]) for r in records).items())),
            "n_detection": sum(is_detection_case(r) for r in records),
            "n_classification": len(cls_records),
            "n_failed": len(failures),
            "n_missed_detections": len(missed),
            "n_false_positive_detections": len(false_pos),
            "n_unlabelled": sum(r["truth"] is None for r in records),
        },
        "detection": detection_block(records, n_resamples, seed),
        "detection_by_confidence": detection_confidence_block(records),
        "classification": classification_block(cls_records, classes, n_resamples, seed),
        "segmentation": seg,
        "subgroups": subgroup_block(records, subgroup_columns, classes, n_resamples, seed),
        "readers": reader_block(cls_records, classes, n_resamples, seed),
        "ablation": ablation_block(cls_records, classes, n_resamples, seed),
        "failures": failures,
        "missed_detections": missed,
        "false_positive_detections": false_pos,
        "unlabelled": [r["case_id"] for r in records if r["truth"] is None],
        "cases": [_case_row(r) for r in records],
    }
    return M.jsonable(doc)


def _case_row(r: dict[str, Any]) -> dict[str, Any]:
    row = {k: r[k] for k in ("case_id", "truth", "status", "exit_code", "predicted_class", "probabilities",
                             "tumour_volume_ml", "hip_bone_left_ml", "hip_bone_right_ml", "reason", "warnings")}
    row["tumour_mean_probability"] = r.get("tumour_mean_probability")
    row["ablation"] = r.get("ablation") or {}
    row["segmentation"] = r.get("segmentation")
    row["segmentation_error"] = r.get("segmentation_error")
    row["readers"] = r["readers"]
    row["subgroups"] = r["subgroups"]
    return row


def compare_runs(doc_a: dict[str, Any], doc_b: dict[str, Any], n_resamples: int = 2000, seed: int = 0
                 ) -> dict[str, Any]:
    """Two validation runs of the same cohort (two metrics.json documents, e.g. two classifier versions), paired.

    The cases compared are those that are classification cases in both runs (same reference class): for the
    deployed probabilities and each ablation variant present in both, the macro AUC of each run and the paired
    difference ``a - b`` with its stratified bootstrap 95 % CI and p-value (:func:`validation.metrics.
    paired_difference`); detection is compared on the cases analysed in both (sensitivity and specificity of
    each run). Segmentation is compared per structure on the cases where both runs have a Dice (a reference
    structure and a SEG that could be compared; a missed tumour counts 0): each run's mean Dice and the paired
    difference ``a - b`` of the means with its bootstrap 95 % CI. Raises ValueError when the runs share no
    classification case or disagree on a reference class.
    """
    classes = list(doc_a["settings"]["classes"])
    if list(doc_b["settings"]["classes"]) != classes:
        raise ValueError("the two runs' classifiers have different classes")
    rows_a = {c["case_id"]: c for c in doc_a["cases"]}
    rows_b = {c["case_id"]: c for c in doc_b["cases"]}
    common = sorted(set(rows_a) & set(rows_b))
    for cid in common:
        if rows_a[cid]["truth"] != rows_b[cid]["truth"]:
            raise ValueError(f"case {cid}: the runs' reference classes differ")
    both = [cid for cid in common if is_classification_case(rows_a[cid]) and is_classification_case(rows_b[cid])]
    if not both:
        raise ValueError("no case is a classification case in both runs")
    ra, rb = [rows_a[c] for c in both], [rows_b[c] for c in both]
    out: dict[str, Any] = {"n_cases": len(both), "cases": both, "macro_auc": {}}
    for v in ABLATION_VARIANTS:
        key = "probabilities" if v == "all" else f"ablation.{v}"
        if v != "all" and not all(v in r.get("ablation", {}) for r in ra + rb):
            continue
        y, _, sa = class_arrays(ra, classes, key)
        _, _, sb = class_arrays(rb, classes, key)
        out["macro_auc"][v] = M.paired_difference(lambda i, y=y, sa=sa: M.macro_auc_of(y[i], sa[i]),
                                                  lambda i, y=y, sb=sb: M.macro_auc_of(y[i], sb[i]), y, n_resamples,
                                                  seed)
    det = [c for c in common if is_detection_case(rows_a[c]) and is_detection_case(rows_b[c])]
    out["detection"] = {"n_cases": len(det)}
    for name, rows in (("a", rows_a), ("b", rows_b)):
        truth = np.array([rows[c]["truth"] != NONE for c in det], dtype=bool)
        found = np.array([rows[c]["status"] == Status.TUMOUR_FOUND for c in det], dtype=bool)
        out["detection"][name] = {"true_positives": int((truth & found).sum()), "positives": int(truth.sum()),
                                  "true_negatives": int((~truth & ~found).sum()), "negatives": int((~truth).sum())}
    out["segmentation_dice"] = _paired_dice(rows_a, rows_b, common, n_resamples, seed)
    return M.jsonable(out)


def _paired_dice(rows_a: dict[str, dict[str, Any]], rows_b: dict[str, dict[str, Any]], common: list[str],
                 n_resamples: int, seed: int) -> dict[str, Any]:
    """Per structure: mean Dice of each run and the paired difference a - b (:func:`validation.metrics.
    paired_mean_difference`) on the cases both runs score (:func:`scored_segmentation`), as in each
    run's own segmentation summary."""
    out: dict[str, Any] = {}
    for s in SEG_STRUCTURES:
        pairs = [(scored_segmentation(rows_a[c], s), scored_segmentation(rows_b[c], s)) for c in common]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        if not pairs:
            continue
        a = np.array([x["dice"] for x, _ in pairs], dtype=float)
        b = np.array([y["dice"] for _, y in pairs], dtype=float)
        out[s] = M.paired_mean_difference(a, b, n_resamples, seed)
    return out
