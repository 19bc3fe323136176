"""Validation runs (validation/): statistics against scikit-learn, the runner on the real application,
resume after a kill, Ray, and the HTML report rendered in headless Chromium.

Split for speed: (a) metric functions on synthetic predictions (no app); (b) the CLI on synthetic finished runs
(result.json files written here: the CLI reuses finished studies, so no app runs) for rich statistics; (c) the
CLI end to end on a tiny generated cohort with the real application (one module-scoped run reused by the
resume and Ray tests, which copy it and re-run only one or two studies).
"""
from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score,
    roc_curve,
)

from conftest import MODELS, assert_nested_close
from tools import require_tool
from validation import metrics as M
from validation.manifest import ManifestError, age_band, read_manifest
from core.models import read_metadata
from core.status import ANALYSED, Status

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
#: the repository classifier's class order (its metadata): what the CLI validates by default
CLASSES = list(read_metadata(REPO / "models" / "tumour_classifier").clf.classes)
K = len(CLASSES)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def synthetic_predictions(n: int, seed: int, absent: tuple[int, ...] = (), strength: float = 1.5
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    present = [c for c in range(K) if c not in absent]
    y = rng.choice(present, size=n)
    logits = rng.normal(0, 1, (n, K))
    logits[np.arange(n), y] += strength
    p = np.round(softmax(logits), 2)  # rounding creates ties, as real probabilities do
    return y, p.argmax(axis=1), p


# ------------------------------------------------------------------------------------------- (a) metrics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_auc_and_roc_curve_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(80) < 0.3
    s = np.round(rng.random(80) + 0.4 * y, 1)  # many ties
    assert M.binary_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = M.roc_curve(y, s)
    f2, t2, th2 = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    np.testing.assert_allclose(thr[1:], th2[1:])
    assert np.isnan(M.binary_auc(np.ones(5, bool), np.arange(5.0)))


@pytest.mark.parametrize("absent", [(), (5,), (1, 4)])
def test_class_statistics_match_sklearn(absent: tuple[int, ...]) -> None:
    y, pred, p = synthetic_predictions(150, seed=len(absent), absent=absent)
    if absent:  # the model also predicts classes absent from the reference
        pred[:7] = absent[0]
    st = M.class_statistics(y, pred, p, K)
    present = sorted(set(y.tolist()))
    aucs = [roc_auc_score(y == c, p[:, c]) for c in present]
    assert st["macro_auc"] == pytest.approx(np.mean(aucs), abs=1e-12)
    if not absent:  # sklearn's multi-class form needs rows summing to 1
        q = p / p.sum(axis=1, keepdims=True)
        assert M.class_statistics(y, pred, q, K)["macro_auc"] == pytest.approx(
            roc_auc_score(y, q, multi_class="ovr", average="macro"), abs=1e-12)
    f1 = f1_score(y, pred, labels=present, average="macro", zero_division=0)
    assert st["macro_f1"] == pytest.approx(f1, abs=1e-12)
    assert st["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about predicted classes absent from y_true
        assert st["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    f1 = f1_score(y, pred, labels=list(range(K)), average=None, zero_division=0)
    sens = recall_score(y, pred, labels=list(range(K)), average=None, zero_division=0)
    ppv = precision_score(y, pred, labels=list(range(K)), average=None, zero_division=0)
    cm = confusion_matrix(y, pred, labels=list(range(K)))
    np.testing.assert_array_equal(M.confusion_matrix(y, pred, K)[:, :K], cm)
    for c in range(K):
        row = st["per_class"][c]
        assert row["n"] == int((y == c).sum())
        tn = cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]
        assert (row["tp"], row["tn"]) == (cm[c, c], tn)
        if c in present:
            assert row["f1"] == pytest.approx(f1[c]) and row["sensitivity"] == pytest.approx(sens[c])
            assert row["auc"] == pytest.approx(roc_auc_score(y == c, p[:, c]))
        else:  # absent from the reference: no sensitivity, no AUC
            assert np.isnan(row["sensitivity"]) and np.isnan(row["auc"])
        if row["tp"] + row["fp"]:
            assert row["ppv"] == pytest.approx(ppv[c])
        assert row["specificity"] == pytest.approx(tn / (tn + cm[:, c].sum() - cm[c, c]))


def test_reader_one_hot_auc_is_mean_of_sensitivity_and_specificity() -> None:
    y, _, _ = synthetic_predictions(90, seed=4)
    rng = np.random.default_rng(5)
    reader = np.where(rng.random(90) < 0.6, y, rng.integers(0, K, 90))
    reader[:3] = -1  # the reader answered 'none' on three tumour studies: wrong for every class
    st = M.class_statistics(y, reader, M.one_hot(reader, K), K)
    for c in range(K):
        r = st["per_class"][c]
        assert r["auc"] == pytest.approx((r["sensitivity"] + r["specificity"]) / 2)
    assert st["accuracy"] == pytest.approx(np.mean(reader == y))
    assert M.confusion_matrix(y, reader, K)[:, K].sum() == 3


def test_bootstrap_ci_contains_point_estimate_and_is_reproducible() -> None:
    y, pred, p = synthetic_predictions(120, seed=7, absent=(2,))
    a = M.classification_report(y, pred, p, CLASSES, n_resamples=300, seed=11)
    b = M.classification_report(y, pred, p, CLASSES, n_resamples=300, seed=11)
    c = M.classification_report(y, pred, p, CLASSES, n_resamples=300, seed=12)
    assert M.jsonable(a) == M.jsonable(b)  # (nan != nan in plain dicts)
    assert a["macro_auc"] != c["macro_auc"]
    for m in ("macro_auc", "macro_f1", "accuracy", "balanced_accuracy"):
        assert a[m]["ci_low"] <= a[m]["value"] <= a[m]["ci_high"], m
        assert a[m]["ci_high"] - a[m]["ci_low"] > 0.01, m
    assert np.isnan(a["per_class"]["osteosarcoma"]["auc"]["value"])
    assert a["classes_present"] == [c for i, c in enumerate(CLASSES) if i != 2]
    # stratified: every resample keeps the class counts
    idx = M.stratified_resamples(y, 50, seed=1)
    for row in idx:
        np.testing.assert_array_equal(np.bincount(y[row], minlength=K), np.bincount(y, minlength=K))


def test_paired_difference_and_detection() -> None:
    y, pred, p = synthetic_predictions(100, seed=9)
    same = M.paired_difference(lambda i: M.macro_auc_of(y[i], p[i]), lambda i: M.macro_auc_of(y[i], p[i]), y, 200, 0)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    noise = np.random.default_rng(1).random(p.shape)
    d = M.paired_difference(lambda i: M.macro_auc_of(y[i], p[i]), lambda i: M.macro_auc_of(y[i], noise[i]), y, 400, 0)
    assert d["difference"] > 0.2 and d["ci_low"] > 0 and d["p_value"] < 0.01
    truth = np.array([True] * 30 + [False] * 10)
    found = np.array([True] * 27 + [False] * 3 + [True] * 2 + [False] * 8)
    det = M.detection_report(truth, found, 300, 0)
    assert (det["tp"], det["fn"], det["fp"], det["tn"]) == (27, 3, 2, 8)
    assert det["sensitivity"]["value"] == pytest.approx(0.9)
    assert det["specificity"]["value"] == pytest.approx(0.8)
    assert det["sensitivity"]["ci_low"] <= 0.9 <= det["sensitivity"]["ci_high"]


def test_calibration_dice_and_json() -> None:
    conf = np.array([0.05, 0.15, 0.95, 1.0, 0.55, 0.58])
    ok = np.array([False, False, True, True, True, False])
    cal = M.calibration(conf, ok, n_bins=10)
    assert [b["n"] for b in cal["bins"]] == [1, 1, 0, 0, 0, 2, 0, 0, 0, 2]
    manual = (abs(0 - 0.05) + abs(0 - 0.15) + 2 * abs(0.5 - 0.565) + 2 * abs(1 - 0.975)) / 6
    assert cal["ece"] == pytest.approx(manual)
    a = np.zeros((4, 5, 5), bool)
    b = a.copy()
    a[1:3, 1:3, 1:3] = True
    b[1:3, 1:3, 2:4] = True
    assert M.dice(a, b) == pytest.approx(0.5)
    assert np.isnan(M.dice(np.zeros(3, bool), np.zeros(3, bool)))
    assert M.jsonable({"x": float("nan"), "y": np.float32(0.1234567891), "z": np.arange(2)}) == \
        {"x": None, "y": 0.123457, "z": [0, 1]}


def test_manifest_checks(tmp_path: Path) -> None:
    def write(rows: list[dict[str, str]]) -> Path:
        path = tmp_path / "m.csv"
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        return path

    cases, groups = read_manifest(write([
        {"case_id": "A1", "dicom_dir": "a", "tumour_class": "Giant cell tumor", "age": "39", "sex": "F",
         "reader_X": "Chordoma", "reader_Y": ""},
        {"case_id": "A2", "dicom_dir": "b", "tumour_class": "none", "age": "60", "sex": "M", "reader_X": "none",
         "reader_Y": "metastasis"}]))
    assert [c.truth for c in cases] == ["giant_cell_tumour", "none"]
    assert groups == ["sex", "age_band"] and cases[0].subgroups == {"sex": "F", "age_band": "<40"}
    assert cases[0].readers == {"X": "chordoma", "Y": None} and cases[1].readers == {"X": "none", "Y": "metastasis"}
    assert cases[0].dicom_dir == (tmp_path / "a").resolve()
    assert age_band("59.9") == "40-59" and age_band("") == ""
    for bad in ({"case_id": "../x", "dicom_dir": "a"}, {"case_id": "A", "dicom_dir": "a", "tumour_class": "lipoma"},
                {"case_id": "A", "tumour_class": "none"}):
        with pytest.raises(ManifestError):
            read_manifest(write([bad]))
    with pytest.raises(ManifestError, match="duplicate"):
        read_manifest(write([{"case_id": "A", "dicom_dir": "a"}, {"case_id": "A", "dicom_dir": "b"}]))


# --------------------------------------------------------------------- (b) CLI on synthetic finished runs
def make_synthetic_runs(root: Path, n: int = 60, seed: int = 3) -> Path:
    """A manifest and finished runs (result.json + runner.json) of every status, with readers and ablation."""
    rng = np.random.default_rng(seed)
    rows = []
    # the repository's classifier, which the CLI validates by default: its results are reused, not run again
    clf_meta = json.loads((REPO / "models" / "tumour_classifier" / "metadata.json").read_text())
    for i in range(n):
        cid = f"S{i:03d}"
        truth = "none" if i % 8 == 0 else CLASSES[i % 6]
        status = (Status.TUMOUR_FOUND if i % 16 == 0 else Status.NO_TUMOUR) if truth == "none" else \
            (Status.NO_TUMOUR if i % 13 == 5 else Status.TUMOUR_FOUND)
        status = Status.NOT_APPLICABLE if i % 17 == 3 else "error" if i % 19 == 7 else status
        doc: dict[str, Any] = {"schema": "sacral-tumour-result/1", "status": status, "predicted_class": None,
                               "probabilities": {}, "warnings": [], "outputs": {},
                               "models": {"tumour_classifier": {"version": clf_meta["version"],
                                                                "sha256": clf_meta["sha256"]}}}

        def probs(strength: float, truth: str = truth) -> dict[str, float]:
            logit = rng.normal(0, 1, K)
            if truth != "none":
                logit[CLASSES.index(truth)] += strength
            return {c: round(float(v), 6) for c, v in zip(CLASSES, softmax(logit[None])[0])}

        if status == Status.TUMOUR_FOUND:
            doc["probabilities"] = probs(1.8)
            doc["predicted_class"] = max(doc["probabilities"], key=doc["probabilities"].get)
            doc["ablation"] = {"image_only": probs(1.2), "clinical_only": probs(0.4), "clinical_location": probs(0.9)}
            doc["tumour"] = {"volume_ml": float(rng.uniform(20, 400))}
        if status == Status.ERROR:
            doc["reason"] = "no CT series in the input"
        if status == Status.NOT_APPLICABLE:
            doc["warnings"] = ["not applicable: no right hip bone in the field of view (< 5 mL segmented)"]
        d = root / "runs" / cid
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(doc))
        (d / "runner.json").write_text(json.dumps({"exit_code": 2 if status == Status.ERROR else 0}))

        def reader(acc: float, truth: str = truth) -> str:
            return "none" if truth == "none" else truth if rng.random() < acc else CLASSES[int(rng.integers(K))]

        rows.append({"case_id": cid, "dicom_dir": f"dicom/{cid}", "tumour_class": truth, "sex": "MF"[i % 2],
                     "age": str(20 + (i * 7) % 60), "site": f"SITE_{'ABC'[i % 3]}",
                     "reader_A": reader(0.6), "reader_B": reader(0.8) if i % 10 else ""})
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root / "manifest.csv"


def sklearn_class_metrics(y_true: list[str], probs: list[dict[str, float]], pred: list[str]) -> dict[str, float]:
    """The six-class metrics computed independently with scikit-learn (classes present in the reference)."""
    y = np.array([CLASSES.index(t) for t in y_true])
    p = np.array([[pr[c] for c in CLASSES] for pr in probs]).reshape(-1, K)
    yp = np.array([CLASSES.index(c) if c in CLASSES else -1 for c in pred])
    present = sorted(set(y.tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"macro_auc": float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present])),
                "macro_f1": f1_score(y, yp, labels=present, average="macro", zero_division=0),
                "accuracy": accuracy_score(y, yp), "balanced_accuracy": balanced_accuracy_score(y, yp)}


def run_cli(*args: str, timeout: int = 1800, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "validation", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_validation")
    manifest = make_synthetic_runs(root)
    proc = run_cli("run", "--manifest", str(manifest), "--out", str(root), "--bootstrap", "200", "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    assert "60/60 studies done (0 run now, 60 reused)" in proc.stderr
    return root


def test_cli_metrics_on_synthetic_runs_match_sklearn(synthetic_report: Path) -> None:
    m = json.loads((synthetic_report / "metrics.json").read_text())
    cases, _ = read_manifest(synthetic_report / "manifest.csv")
    truth = {c.case_id: c.truth for c in cases}
    results = {c.case_id: json.loads((synthetic_report / "runs" / c.case_id / "result.json").read_text())
               for c in cases}
    cls_ids = [cid for cid in truth if truth[cid] != "none" and results[cid]["status"] == Status.TUMOUR_FOUND]
    ref = sklearn_class_metrics([truth[c] for c in cls_ids], [results[c]["probabilities"] for c in cls_ids],
                                [results[c]["predicted_class"] for c in cls_ids])
    for key, value in ref.items():
        assert m["classification"][key]["value"] == pytest.approx(value, abs=1e-6), key
    assert m["classification"]["n"] == len(cls_ids)
    # no study dropped: every study is classified, missed, a none-case, or a listed failure
    failed = {f["case_id"] for f in m["failures"]}
    assert failed == {cid for cid, r in results.items() if r["status"] in ("error", Status.NOT_APPLICABLE)}
    assert all(f["reason"] for f in m["failures"])
    assert {f["exit_code"] for f in m["failures"] if f["status"] == Status.ERROR} == {2}
    missed = {x["case_id"] for x in m["missed_detections"]}
    assert missed == {cid for cid in truth if truth[cid] != "none" and results[cid]["status"] == Status.NO_TUMOUR}
    none_analysed = {cid for cid in truth if truth[cid] == "none" and cid not in failed}
    assert len(cls_ids) + len(missed) + len(none_analysed) + len(failed) == m["cohort"]["n_studies"] == 60
    det = m["detection"]
    assert det["tp"] == len(cls_ids) and det["fn"] == len(missed)
    assert det["fp"] == len(m["false_positive_detections"]) and det["fp"] + det["tn"] == len(none_analysed)
    # subgroup sex = F, against sklearn on the same cases
    f_ids = [c for c in cls_ids if next(x for x in cases if x.case_id == c).subgroups["sex"] == "F"]
    sub = m["subgroups"]["sex"]["F"]["classification"]
    ref_f = sklearn_class_metrics([truth[c] for c in f_ids], [results[c]["probabilities"] for c in f_ids],
                                  [results[c]["predicted_class"] for c in f_ids])
    assert sub["n"] == len(f_ids) and sub["macro_auc"]["value"] == pytest.approx(ref_f["macro_auc"], abs=1e-6)
    # readers: one-hot scores on the cases each reader read, paired difference
    for name in ("A", "B"):
        rd = {c.case_id: c.readers[name] for c in cases}
        ids = [c for c in cls_ids if rd[c] is not None]
        onehot = [{k: float(k == rd[c]) for k in CLASSES} for c in ids]
        ref_r = sklearn_class_metrics([truth[c] for c in ids], onehot, [rd[c] for c in ids])
        ref_m = sklearn_class_metrics([truth[c] for c in ids], [results[c]["probabilities"] for c in ids],
                                      [results[c]["predicted_class"] for c in ids])
        r = m["readers"][name]
        assert r["n"] == len(ids)
        assert r["reader"]["macro_auc"]["value"] == pytest.approx(ref_r["macro_auc"], abs=1e-6)
        assert r["reader"]["accuracy"]["value"] == pytest.approx(ref_r["accuracy"], abs=1e-6)
        d = r["macro_auc_model_minus_reader"]
        assert d["difference"] == pytest.approx(ref_m["macro_auc"] - ref_r["macro_auc"], abs=1e-5)
        assert d["ci_low"] <= d["ci_high"] and 0 < d["p_value"] <= 1
    # ablation: each variant against sklearn
    for v in ("image_only", "clinical_only", "clinical_location"):
        probs = [results[c]["ablation"][v] for c in cls_ids]
        pred = [max(p, key=p.get) for p in probs]
        ref_v = sklearn_class_metrics([truth[c] for c in cls_ids], probs, pred)
        assert m["ablation"]["variants"][v]["macro_auc"]["value"] == pytest.approx(ref_v["macro_auc"], abs=1e-6)
        assert m["ablation"]["variants"][v]["accuracy"]["value"] == pytest.approx(ref_v["accuracy"], abs=1e-6)
    assert m["provenance"]["manifest"]["sha256"] and m["provenance"]["seed"] == 5
    assert m["settings"]["subgroup_columns"] == ["sex", "age_band", "site"]


def test_cli_is_deterministic(synthetic_report: Path, tmp_path: Path) -> None:
    shutil.copytree(synthetic_report / "runs", tmp_path / "runs")
    shutil.copy(synthetic_report / "manifest.csv", tmp_path / "manifest.csv")
    proc = run_cli("run", "--manifest", str(synthetic_report / "manifest.csv"), "--out", str(tmp_path),
                   "--bootstrap", "200", "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    a = json.loads((synthetic_report / "metrics.json").read_text())
    b = json.loads((tmp_path / "metrics.json").read_text())
    assert comparable(a) == comparable(b)


def test_compare_pairs_two_runs_of_one_cohort(synthetic_report: Path, tmp_path: Path) -> None:
    """``python -m validation compare``: run b is run a with the image-only variant replaced by noise on every
    case; the paired image-only difference equals the two sklearn macro AUCs' difference, the deployed model's
    difference is exactly 0, and comparing a run with itself gives 0 with a zero-width interval."""
    a = json.loads((synthetic_report / "metrics.json").read_text())
    b = copy.deepcopy(a)
    rng = np.random.default_rng(11)
    for row in b["cases"]:
        if row["ablation"].get("image_only"):
            p = rng.dirichlet(np.ones(K))
            row["ablation"]["image_only"] = {c: float(v) for c, v in zip(CLASSES, p)}
    (tmp_path / "b.json").write_text(json.dumps(b))
    proc = run_cli("compare", str(synthetic_report / "metrics.json"), str(tmp_path / "b.json"),
                   "--out", str(tmp_path / "cmp.json"), "--bootstrap", "300")
    assert proc.returncode == 0, proc.stderr
    cmp_ = json.loads((tmp_path / "cmp.json").read_text())
    ids = cmp_["cases"]
    assert cmp_["n_cases"] == len(ids) == a["classification"]["n"]
    rows_a, rows_b = ({r["case_id"]: r for r in d["cases"]} for d in (a, b))
    truth = [rows_a[c]["truth"] for c in ids]

    def auc(rows: dict[str, Any]) -> float:
        probs = [rows[c]["ablation"]["image_only"] for c in ids]
        return sklearn_class_metrics(truth, probs, [max(p, key=p.get) for p in probs])["macro_auc"]
    d = cmp_["macro_auc"]["image_only"]
    assert d["difference"] == pytest.approx(auc(rows_a) - auc(rows_b), abs=1e-5) and d["difference"] > 0.1
    assert d["ci_low"] <= d["difference"] <= d["ci_high"]
    assert cmp_["macro_auc"]["all"]["difference"] == 0 and cmp_["macro_auc"]["clinical_only"]["difference"] == 0
    assert cmp_["detection"]["a"] == cmp_["detection"]["b"]
    proc = run_cli("compare", str(synthetic_report / "metrics.json"), str(synthetic_report / "metrics.json"))
    assert proc.returncode == 0 and "+0.000 (+0.000 to +0.000)" in proc.stdout
    proc = run_cli("compare", str(synthetic_report / "metrics.json"), str(tmp_path / "missing.json"))
    assert proc.returncode == 2 and proc.stderr.startswith("error:")


def test_compare_pairs_segmentation_dice_as_each_run_summarises_it(synthetic_report: Path) -> None:
    """compare_runs' Dice block: per structure, the cases each run's own segmentation summary counts (an analysed
    study with the structure in its reference; a missed tumour counts with Dice 0), the means of both runs, and
    their paired difference. Run b is run a with every hip-bone-left Dice lowered by 0.05: the difference is
    exactly 0.05 with a zero-width interval; the tumour block counts the tumour-free studies of neither run."""
    from validation.evaluate import compare_runs
    a = json.loads((synthetic_report / "metrics.json").read_text())
    rng = np.random.default_rng(3)
    for row in a["cases"]:
        tumour_ml = 0.0 if row["truth"] == "none" else 40.0
        missed = row["truth"] != "none" and row["status"] == Status.NO_TUMOUR
        row["segmentation"] = {
            "tumour": {"dice": None if not tumour_ml else (0.0 if missed else float(rng.uniform(0.5, 0.95))),
                       "reference_ml": tumour_ml, "predicted_ml": 0.0, "volume_error_ml": 0.0},
            "hip_bone_left": {"dice": float(rng.uniform(0.85, 0.95)), "reference_ml": 250.0,
                              "predicted_ml": 250.0, "volume_error_ml": 0.0},
            "hip_bone_right": {"dice": float(rng.uniform(0.85, 0.95)), "reference_ml": 250.0,
                               "predicted_ml": 250.0, "volume_error_ml": 0.0}}
    b = copy.deepcopy(a)
    for row in b["cases"]:
        row["segmentation"]["hip_bone_left"]["dice"] -= 0.05
    cmp_ = compare_runs(a, b, n_resamples=200)["segmentation_dice"]
    analysed = [r for r in a["cases"] if r["status"] in ANALYSED]
    tumour = [r["segmentation"]["tumour"]["dice"] for r in analysed if r["truth"] != "none"]
    assert cmp_["tumour"]["n"] == len(tumour) < len(analysed) and 0.0 in tumour
    assert cmp_["tumour"]["a"] == pytest.approx(np.mean(tumour), abs=1e-6) and cmp_["tumour"]["difference"] == 0
    left = cmp_["hip_bone_left"]
    assert left["n"] == len(analysed)
    assert left["a"] == pytest.approx(np.mean([r["segmentation"]["hip_bone_left"]["dice"] for r in analysed]),
                                      abs=1e-6)
    assert left["difference"] == pytest.approx(0.05, abs=1e-6)
    assert left["ci_low"] == pytest.approx(0.05, abs=1e-6) and left["ci_high"] == pytest.approx(0.05, abs=1e-6)
    assert cmp_["hip_bone_right"]["difference"] == 0


def comparable(doc: dict[str, Any], drop_execution: bool = False) -> dict[str, Any]:
    """metrics.json without the fields allowed to differ: the date, the repository state (other work may
    change it meanwhile) and, for Ray against the pool, how the studies were executed."""
    d = copy.deepcopy(doc)
    d["provenance"].pop("date")
    d["provenance"].pop("git")
    if drop_execution:
        d["provenance"].pop("execution")
    return d


# ---------------------------------------------------------------------------------------- report render
def chromium() -> str:
    return require_tool("chromium", "chromium-browser", "google-chrome", install="apt-get install chromium")


def screenshot(html_path: Path, tmp: Path) -> np.ndarray:
    exe = chromium()
    png = tmp / "shot.png"
    proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp / 'chromium-profile'}", f"--screenshot={png}",
                           "--window-size=1280,2000", html_path.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert png.is_file(), proc.stderr[-2000:]
    import matplotlib.image
    return matplotlib.image.imread(str(png))


def assert_offline_html(text: str) -> None:
    low = text.lower()
    assert "<script" not in low
    for attr in ("src=", "href="):
        for proto in ("http:", "https:", "//"):
            assert f"{attr}'{proto}" not in low and f'{attr}"{proto}' not in low


@pytest.mark.system
def test_report_html_renders_with_plots(synthetic_report: Path, tmp_path: Path) -> None:
    text = (synthetic_report / "report.html").read_text()
    assert_offline_html(text)
    assert text.count("data:image/png;base64,") >= 3  # ROC, confusion matrix, reliability diagram
    for heading in ("Tumour detection", "Subgroups", "Readers", "Ablation", "Failed and excluded", "Provenance"):
        assert heading in text
    img = screenshot(synthetic_report / "report.html", tmp_path)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    rgb = img[..., :3]
    assert rgb.std() > 0.05                                  # not a blank page
    assert len(np.unique((rgb.reshape(-1, 3) * 255).astype(int), axis=0)) > 100   # text, tables and plots


# -------------------------------------------------------------------- (c) end to end, the real application
E2E_CLASSES = ["chordoma", "metastasis", "none"]


@pytest.fixture(scope="module")
def e2e_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generated studies (default matrix) plus one study whose folder has no DICOM (an error)."""
    from training.phantom import generate_cohort

    root = tmp_path_factory.mktemp("validation_cohort")
    manifest = generate_cohort(root, n=3, seed=20261128, classes=E2E_CLASSES, workers=2)
    (root / "EMPTY").mkdir()
    (root / "EMPTY" / "note.txt").write_text("not DICOM")
    with open(manifest) as fh:
        rows = list(csv.DictReader(fh))
    rows.append({**{k: "" for k in rows[0]}, "case_id": "X0001", "dicom_dir": "EMPTY", "tumour_class": "chordoma",
                 "sex": "F", "age": "50", "site": "SITE_A"})
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def e2e_report(e2e_cohort: Path, models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("validation_report")
    proc = run_cli("run", "--manifest", str(e2e_cohort), "--out", str(out), "--models", str(models_dir),
                   "--bootstrap", "200", "--seed", "3", "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "4/4 studies done (4 run now, 0 reused)" in proc.stderr
    return out


@pytest.mark.system
def test_e2e_metrics_agree_with_results(e2e_report: Path, e2e_cohort: Path) -> None:
    import highdicom as hd
    import SimpleITK as sitk

    from core.dicom_header import scan_folder
    from core.dicom_input import load_volume

    m = json.loads((e2e_report / "metrics.json").read_text())
    cases, _ = read_manifest(e2e_cohort)
    assert [c["case_id"] for c in m["cases"]] == [c.case_id for c in cases]
    results = {c.case_id: json.loads((e2e_report / "runs" / c.case_id / "result.json").read_text()) for c in cases}
    runner = {c.case_id: json.loads((e2e_report / "runs" / c.case_id / "runner.json").read_text()) for c in cases}
    # the empty folder is an error with the app's own reason and exit code; nothing silently dropped
    assert results["X0001"]["status"] == Status.ERROR and runner["X0001"]["exit_code"] == 2
    failures = {f["case_id"]: f for f in m["failures"]}
    assert set(failures) == {cid for cid, r in results.items() if r["status"] not in ANALYSED}
    assert failures["X0001"]["reason"] == results["X0001"]["reason"] and failures["X0001"]["exit_code"] == 2
    assert m["cohort"]["by_status"] == {s: sum(r["status"] == s for r in results.values())
                                        for s in sorted({r["status"] for r in results.values()})}
    truth = {c.case_id: c.truth for c in cases}
    cls_ids = [c for c in truth if truth[c] != "none" and results[c]["status"] == Status.TUMOUR_FOUND]
    assert m["classification"]["n"] == len(cls_ids)
    if cls_ids:
        ref = sklearn_class_metrics([truth[c] for c in cls_ids], [results[c]["probabilities"] for c in cls_ids],
                                    [results[c]["predicted_class"] for c in cls_ids])
        assert m["classification"]["accuracy"]["value"] == pytest.approx(ref["accuracy"], abs=1e-6)
        if len({truth[c] for c in cls_ids}) > 1:
            assert m["classification"]["macro_auc"]["value"] == pytest.approx(ref["macro_auc"], abs=1e-6)
    det_ids = [c for c in truth if results[c]["status"] in (Status.TUMOUR_FOUND, Status.NO_TUMOUR)]
    assert m["detection"]["n"] == len(det_ids)
    # segmentation read back from the SEG: an independent computation on load_volume's grid
    checked = 0
    for case in cases:
        row = next(r for r in m["cases"] if r["case_id"] == case.case_id)
        seg_name = (results[case.case_id].get("outputs") or {}).get("seg")
        if case.label_path is None or results[case.case_id]["status"] == Status.ERROR or not seg_name:
            continue
        loaded = load_volume(next(s for s in scan_folder(case.dicom_dir).series
                                  if s.series_instance_uid == results[case.case_id]["series_instance_uid"]))
        seg = hd.seg.segread(e2e_report / "runs" / case.case_id / seg_name)
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label_path)))
        voxel_ml = float(np.prod(loaded.volume.spacing)) / 1000
        for item in seg.SegmentSequence:
            name = {"sacral tumour": "tumour", "hip bone left": "hip_bone_left",
                    "hip bone right": "hip_bone_right"}[str(item.SegmentLabel)]
            pred = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=loaded.volume.meta["sop_instance_uids"],
                segment_numbers=[int(item.SegmentNumber)], assert_missing_frames_are_empty=True)[..., 0] > 0
            value = {"tumour": 3, "hip_bone_left": 1, "hip_bone_right": 2}[name]
            r = ref == value
            got = row["segmentation"][name]
            expected = 2 * (pred & r).sum() / (pred.sum() + r.sum()) if pred.sum() + r.sum() else None
            assert got["dice"] == (None if expected is None else pytest.approx(expected, abs=1e-6))
            assert got["predicted_ml"] == pytest.approx(pred.sum() * voxel_ml, rel=1e-5)
            assert got["volume_error_ml"] == pytest.approx((pred.sum() - r.sum()) * voxel_ml, rel=1e-4, abs=1e-3)
            checked += 1
    assert checked >= 1
    prov = m["provenance"]
    assert prov["software_version"] and prov["models"]["tumour_seg"]["sha256"] and not prov["models_mismatch"]
    assert prov["execution"] == {"kind": "process_pool", "workers": 2, "runner": "python -m app"}


@pytest.mark.system
def test_e2e_report_renders(e2e_report: Path, tmp_path: Path) -> None:
    text = (e2e_report / "report.html").read_text()
    assert_offline_html(text)
    assert "X0001" in text
    img = screenshot(e2e_report / "report.html", tmp_path)
    assert img[..., :3].std() > 0.05


def _mtimes(report: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (report / "runs").glob("*/result.json")
            if not p.parent.name.startswith(".")}


@pytest.mark.system
def test_e2e_resume_after_kill(e2e_report: Path, e2e_cohort: Path, models_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    shutil.copytree(e2e_report / "runs", out / "runs")
    # two studies to redo at once: the empty folder's error takes seconds, the phantom a whole analysis, which the
    # kill interrupts
    redo = ["X0001", "C0002"]
    for cid in redo:
        shutil.rmtree(out / "runs" / cid)
    kept = _mtimes(out)
    args = [sys.executable, "-m", "validation", "run", "--manifest", str(e2e_cohort), "--out", str(out),
            "--models", str(models_dir), "--bootstrap", "200", "--seed", "3", "--workers", "2"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not any((out / "runs" / c / "result.json").exists() for c in redo):
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its pool worker and the running app
        proc.wait()
    after_kill = _mtimes(out)
    assert set(after_kill) != set(_mtimes(e2e_report)), "the kill came too late: every study had finished"
    assert not (out / "metrics.json").exists()
    done = run_cli(*args[3:])
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"4 studies, {len(after_kill)} already finished" in done.stderr
    assert f"({4 - len(after_kill)} run now, {len(after_kill)} reused)" in done.stderr
    final = _mtimes(out)
    for cid, t in after_kill.items():  # nothing finished was run again
        assert final[cid] == t
    assert set(kept) <= set(final) and all(final[c] == kept[c] for c in kept)
    assert not list((out / "runs").glob(".partial-*"))
    a = json.loads((e2e_report / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    # the study run again alone had both cores (two threads), in the first run it had one: numbers may differ in
    # their last bits, nothing else
    assert_nested_close(comparable(a), comparable(b), rel=1e-9, abs_tol=1e-12)


@pytest.mark.system
def test_e2e_ray_local_gives_identical_metrics(e2e_report: Path, e2e_cohort: Path, models_dir: Path,
                                               tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "report"
    shutil.copytree(e2e_report / "runs", out / "runs")
    # one study runs as a Ray task (the empty folder: the task and its record are what is tested, not the models),
    # the others are read back by tasks
    shutil.rmtree(out / "runs" / "X0001")
    proc = run_cli("run", "--manifest", str(e2e_cohort), "--out", str(out), "--models", str(models_dir),
                   "--bootstrap", "200", "--seed", "3", "--ray", "local", "--cpus-per-study", "1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "(1 run now, 3 reused)" in proc.stderr
    a = json.loads((e2e_report / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert b["provenance"]["execution"]["kind"] == "ray"
    assert comparable(a, drop_execution=True) == comparable(b, drop_execution=True)


# ------------------------------------------------------------------------------------- runner mechanics
def test_concurrent_runs_share_the_cpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Runs started together get one share of the usable CPUs each (at least one thread); one run alone, or a
    caller that set OMP_NUM_THREADS itself, keeps its own; the pool gives each study of a 2-worker run the share."""
    from app.launch import threads_per_run
    from validation.manifest import Case
    from validation.runner import RunConfig, run_all

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert threads_per_run(1) == {} and threads_per_run(0) == {}
    assert threads_per_run(2) == {"OMP_NUM_THREADS": "2"}
    assert threads_per_run(3) == {"OMP_NUM_THREADS": "1"} and threads_per_run(8) == {"OMP_NUM_THREADS": "1"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_run(2) == {}
    monkeypatch.delenv("OMP_NUM_THREADS")
    # the environment each study's application process gets in a 2-worker pool (a shell script stands in for
    # the interpreter; its arguments are those of python: -m app -i IN -o OUT -m MODELS)
    script = tmp_path / "fake_python"
    script.write_text(f"#!{shutil.which('sh') or '/bin/sh'}\nenv > \"$6.env\"\nexit 1\n")
    script.chmod(0o755)
    cfg = RunConfig(report_dir=tmp_path / "rep", models=tmp_path, python=str(script))
    records = run_all(cfg, [Case(f"K{i}", tmp_path, "none", None) for i in range(2)], workers=2)
    assert [r["exit_code"] for r in records] == [1, 1]
    envs = sorted((tmp_path / "rep" / "runs").glob(".partial-K*.env"))
    assert len(envs) == 2
    for env in envs:
        assert "OMP_NUM_THREADS=2\n" in env.read_text()


def test_runner_records_a_crash_and_resumes(tmp_path: Path) -> None:
    """An app that exits without result.json (here /bin/false stands in for the interpreter) is a finished
    study of status error with a generated reason; it is not run again unless retry_errors is set."""
    from validation.manifest import Case
    from validation.runner import RunConfig, app_command, case_record, run_study

    case = Case("K1", tmp_path, "chordoma", None)
    cfg = RunConfig(report_dir=tmp_path / "rep", models=tmp_path, python=shutil.which("false") or "/bin/false")
    assert run_study(cfg, case) is True
    rec = case_record(cfg, case)
    assert rec["status"] == Status.ERROR and rec["exit_code"] == 1 and rec["runner_generated"]
    assert "exited with code 1 without writing result.json" in rec["reason"]
    assert not list((tmp_path / "rep" / "runs").glob(".partial-*"))
    assert run_study(cfg, case) is False                       # finished: not run twice
    retry = RunConfig(report_dir=tmp_path / "rep", models=tmp_path, python=cfg.python, retry_errors=True)
    assert run_study(retry, case) is True
    image = RunConfig(report_dir=tmp_path / "rep", image="sacral:0.1.0", models=tmp_path / "m")
    cmd = app_command(image, case, tmp_path / "out")
    assert cmd[:5] == ["podman", "run", "--rm", "--network", "none"] and cmd[-1] == "sacral:0.1.0"
    assert f"{tmp_path}:/var/holoscan/input:ro" in cmd and f"{tmp_path / 'm'}:/opt/holoscan/models:ro" in cmd
    assert f"{tmp_path / 'out'}:/var/holoscan/output" in cmd


def test_runner_runs_again_a_study_of_other_models(tmp_path: Path) -> None:
    """A published result whose models block names another sha256 than the validated models' metadata.json is
    run again (retrained models); one of the same sha256, or of a model not in the folder, is reused."""
    from validation.manifest import Case
    from validation.runner import RunConfig, is_finished, run_study, stale_models, validated_models

    models = tmp_path / "models"
    (models / "tumour_seg").mkdir(parents=True)
    meta = {**json.loads((REPO / "models" / "tumour_seg" / "metadata.json").read_text()),   # a complete metadata.json
            "version": "0.2.0", "sha256": "a" * 64}
    (models / "tumour_seg" / "metadata.json").write_text(json.dumps(meta))
    cfg = RunConfig(report_dir=tmp_path / "rep", models=models, python=shutil.which("false") or "/bin/false")
    assert validated_models(cfg) == {"tumour_seg": "a" * 64}
    case = Case("K2", tmp_path, "chordoma", None)
    done = tmp_path / "rep" / "runs" / "K2"
    done.mkdir(parents=True)

    def publish(sha: str) -> None:
        (done / "result.json").write_text(json.dumps({"status": Status.NO_TUMOUR, "models": {
            "tumour_seg": {"version": "0.1.0", "sha256": sha}, "hip_bone_seg": {"sha256": "c" * 64}}}))

    publish("a" * 64)
    assert is_finished(cfg, "K2") and run_study(cfg, case) is False
    publish("b" * 64)
    assert stale_models(json.loads((done / "result.json").read_text()), validated_models(cfg)) == ["tumour_seg"]
    assert not is_finished(cfg, "K2")
    assert run_study(cfg, case) is True                          # ran again (here: /bin/false, an error)
    rerun = json.loads((done / "result.json").read_text())
    assert rerun["status"] == Status.ERROR and rerun["runner_generated"]
    image = RunConfig(report_dir=tmp_path / "rep", image="sacral:0.1.0")   # the image's own models: unknown
    publish("b" * 64)
    assert validated_models(image) == {} and is_finished(image, "K2")


def _label_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random D-H-W label map on a feet-first grid: rows run to patient right (-x), slices to the feet (-z)."""
    from core.volume import affine_from_dicom
    labels = rng.integers(0, 4, size=(5, 6, 7)).astype(np.uint8)
    affine = affine_from_dicom(np.array([40.0, -30.0, 100.0]), np.array([-1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]),
                               np.array([0.0, 0.0, -1.0]), (0.8, 0.7), 2.5)
    return labels, affine


def _write_labels(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    import SimpleITK as sitk
    from core.volume import Volume, to_sitk
    sitk.WriteImage(to_sitk(Volume(array, affine)), str(path))
    return path


def test_reference_on_the_dicom_grid_is_read_voxel_for_voxel(tmp_path: Path) -> None:
    """The reference label map is compared voxel for voxel with the SEG on the DICOM grid: the same grid as is,
    the grid of a feet-first series written foot to head (slice axis reversed: every feet-first study of the
    0.4.x held-out cohort was left out of the segmentation figures before this), or with its rows and columns
    swapped. Another grid, shifted by half a voxel or cropped, is refused, never resampled."""
    from validation.segmentation import SegEvaluationError, read_reference
    labels, affine = _label_volume(np.random.default_rng(3))
    shape = labels.shape
    same = _write_labels(tmp_path / "same.nii.gz", labels, affine)
    assert np.array_equal(read_reference(same, affine, shape), labels)
    flipped_affine = affine.copy()                    # the same voxels, slices from the last DICOM slice upwards
    flipped_affine[:3, 3] = affine[:3, :3] @ [shape[0] - 1, 0, 0] + affine[:3, 3]
    flipped_affine[:3, 0] = -affine[:3, 0]
    reversed_ = _write_labels(tmp_path / "reversed.nii.gz", labels[::-1].copy(), flipped_affine)
    assert np.array_equal(read_reference(reversed_, affine, shape), labels)
    swapped_affine = affine.copy()                    # rows and columns swapped
    swapped_affine[:3, [1, 2]] = affine[:3, [2, 1]]
    swapped = _write_labels(tmp_path / "swapped.nii.gz", labels.transpose(0, 2, 1).copy(), swapped_affine)
    assert np.array_equal(read_reference(swapped, affine, shape), labels)
    shifted_affine = affine.copy()
    shifted_affine[:3, 3] += affine[:3, 2] * 0.5
    with pytest.raises(SegEvaluationError, match="not on the DICOM grid"):
        read_reference(_write_labels(tmp_path / "shifted.nii.gz", labels, shifted_affine), affine, shape)
    with pytest.raises(SegEvaluationError, match="voxel for voxel"):
        read_reference(_write_labels(tmp_path / "cropped.nii.gz", labels[1:].copy(),
                                     flipped_affine), affine, shape)


class _Threshold(torch.nn.Module):
    """A real segmenter of known behaviour: voxels brighter than the middle of the intensity window are the
    structure (logits +/-10 about 0.5 of the scaled intensity)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-(x - 0.5) * 10.0, (x - 0.5) * 10.0], dim=1)


def test_model_grid_dice_and_paired_comparison_on_a_prepared_cache(tmp_path: Path) -> None:
    """validation.model_grid: Dice per study on the model grid against the cached reference, exactly; a study
    whose reference lacks the structure is left out; the paired difference of two models is their mean gap."""
    import json as _json
    from core.model_metadata import ModelMetadata
    from validation.model_grid import compare, model_grid_dice
    meta_dict = _json.loads((MODELS / "tumour_seg" / "metadata.json").read_text())
    meta_dict["sliding_window"] = {**meta_dict["sliding_window"], "roi_size": [16, 16, 16]}
    meta = ModelMetadata.from_dict(meta_dict)
    value = meta.seg.foreground[0].source_value
    ct = np.full((20, 24, 24), -1000.0, np.float32)
    lab = np.zeros(ct.shape, np.uint8)
    ct[4:12, 4:12, 4:12] = 1000.0
    lab[4:12, 4:12, 4:12] = value                      # seen: bright
    np.savez(tmp_path / "A.npz", tumour_seg_ct=ct, tumour_seg_lab=lab)
    lab_b = lab.copy()
    lab_b[12:20, 4:12, 4:12] = value                   # half of it dark: the threshold model misses it
    np.savez(tmp_path / "B.npz", tumour_seg_ct=ct, tumour_seg_lab=lab_b)
    np.savez(tmp_path / "C.npz", tumour_seg_ct=ct, tumour_seg_lab=np.zeros_like(lab))  # no structure
    per = model_grid_dice(tmp_path, ["A", "B", "C"], "tumour_seg", _Threshold().eval(), meta)
    (label,) = per
    assert set(per[label]) == {"A", "B"}
    assert per[label]["A"] == pytest.approx(1.0)
    assert per[label]["B"] == pytest.approx(2 * 512 / (512 + 1024))
    worse = {label: {"A": 0.5, "B": 0.5}}
    result = compare([per, worse], n_resamples=200, seed=0)[label]
    assert result["n"] == 2
    assert result["first_minus_second"]["difference"] == pytest.approx((1.0 + 2 / 3) / 2 - 0.5)
    # false positives: only C lacks the structure; its bright 8 x 8 x 8 cube is predicted, 512 voxels of the grid
    from validation.model_grid import largest_component_ml_where_absent
    fp = largest_component_ml_where_absent(tmp_path, ["A", "B", "C"], "tumour_seg", _Threshold().eval(), meta)
    voxel_ml = float(np.prod(meta.seg.spacing_mm)) / 1000.0
    assert fp == {label: {"C": pytest.approx(512 * voxel_ml)}}


def test_detection_operating_points_count_what_each_confidence_threshold_would_report() -> None:
    from sklearn.metrics import roc_auc_score
    truth = np.array([True, True, True, True, False, False, False])
    found = np.array([True, True, True, False, True, True, False])
    p = np.array([0.95, 0.90, 0.84, np.nan, 0.88, 0.80, np.nan])
    out = M.detection_operating_points(truth, found, p)
    rows = {pt["min_mean_probability"]: (pt["tp"], pt["fp"], pt["fn"], pt["tn"]) for pt in out["operating_points"]}
    # three tumour-free studies: two with a (false) tumour at 0.88 and 0.80, one without
    assert rows == {0.0: (3, 2, 1, 1), 0.8: (3, 2, 1, 1), 0.84: (3, 1, 1, 2), 0.88: (2, 1, 2, 2),
                    0.9: (2, 0, 2, 3), 0.95: (1, 0, 3, 3)}
    at_088 = next(pt for pt in out["operating_points"] if pt["min_mean_probability"] == 0.88)
    assert at_088["sensitivity"] == pytest.approx(0.5) and at_088["specificity"] == pytest.approx(2 / 3)
    assert out["auc_mean_probability"] == pytest.approx(roc_auc_score(truth, np.where(found, p, 0.0)))
    with pytest.raises(ValueError):
        M.detection_operating_points(truth, found, np.where(found, np.nan, 0.5))
