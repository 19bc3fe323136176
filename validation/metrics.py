"""Statistics of a validation run: plain, typed numpy functions (no I/O), unit-tested against scikit-learn.

Conventions used throughout:

* ``y_true``: int array (n,), the reference class index ``0..k-1`` of each case (``k`` = number of classes).
* ``y_pred``: int array (n,), the predicted class index ``0..k-1``; ``-1`` means "no class" (a reader who
  answered ``none``): it is wrong for every class.
* ``scores``: float array (n, k), the score (probability) of each class; rows need not sum to 1. A reader
  gives a class, not a probability, so a reader's scores are the one-hot encoding of ``y_pred``.
* Binary arrays (``y``, detection) are bool; ``score`` is float (n,).

Undefined values (0/0, an AUC with one class only) are ``nan``; :func:`jsonable` turns them into ``null``.

Definitions:

* One-vs-rest AUC of class ``c``: the Mann-Whitney probability that a case of class ``c`` scores higher than a
  case of another class (ties count 1/2) = ``sklearn.metrics.roc_auc_score(y_true == c, scores[:, c])``.
* Macro AUC, macro F1, balanced accuracy: unweighted means over the classes **present in the reference**
  (a class absent from the reference has no sensitivity and no AUC). Macro F1 = ``f1_score(labels=present,
  average="macro", zero_division=0)``; balanced accuracy = mean sensitivity = ``balanced_accuracy_score``.
* Sensitivity TP/(TP+FN), specificity TN/(TN+FP), PPV TP/(TP+FP), NPV TN/(TN+FN), F1 2TP/(2TP+FP+FN).
* 95% CI: percentile bootstrap, resampling cases with replacement **within each stratum** (the reference
  class), so that every resample has the same class counts as the data and every statistic stays defined.
  Seeded with ``numpy.random.default_rng(seed)``; resample ``b`` uses the same indices for every statistic.
* Paired comparison (model vs reader): the difference of a statistic on the same cases, its CI from the
  same stratified resamples, and the two-sided bootstrap p-value
  ``min(1, 2 * min((1 + #{d_b <= 0}) / (B + 1), (1 + #{d_b >= 0}) / (B + 1)))``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

ALPHA = 0.05


# ------------------------------------------------------------------------------------------------ basics
def _safe_div(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _check_labels(y_true: np.ndarray, y_pred: np.ndarray | None, k: int) -> None:
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y_true.shape}")
    if y_true.size and (y_true.min() < 0 or y_true.max() >= k):
        raise ValueError(f"y_true must hold class indices 0..{k - 1}")
    if y_pred is not None:
        if y_pred.shape != y_true.shape:
            raise ValueError(f"y_pred shape {y_pred.shape} != y_true shape {y_true.shape}")
        if y_pred.size and (y_pred.min() < -1 or y_pred.max() >= k):
            raise ValueError(f"y_pred must hold class indices -1..{k - 1}")


def one_hot(y_pred: np.ndarray, k: int) -> np.ndarray:
    """(n, k) float one-hot scores of predicted classes; a row of ``-1`` (no class) is all zeros."""
    y_pred = np.asarray(y_pred, dtype=int)
    out = np.zeros((y_pred.size, k), dtype=float)
    ok = y_pred >= 0
    out[np.flatnonzero(ok), y_pred[ok]] = 1.0
    return out


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of a binary problem (Mann-Whitney U with average ranks for ties); nan if ``y`` has one class."""
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=float)
    if y.shape != score.shape or y.ndim != 1:
        raise ValueError(f"y {y.shape} and score {score.shape} must be 1-D of equal length")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(y.size, dtype=float)
    # average ranks over ties (1-based)
    boundaries = np.flatnonzero(np.diff(s)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of a binary problem, one point per distinct score, starting at (0, 0).

    ``thresholds[i]``: a case is called positive when ``score >= thresholds[i]`` (the first is ``inf``).
    Empty arrays if ``y`` has one class only.
    """
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(-score, kind="mergesort")
    s, yy = score[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(yy)[last]
    fps = (last + 1) - tps
    return (np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, s[last]])


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k + 1) int counts: row = reference class, column = predicted class; the last column counts
    predictions of "no class" (``-1``; always 0 for the model)."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    _check_labels(y_true, y_pred, k)
    cm = np.zeros((k, k + 1), dtype=int)
    np.add.at(cm, (y_true, np.where(y_pred < 0, k, y_pred)), 1)
    return cm


def binary_rates(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV and F1 of binary counts (nan where undefined)."""
    return {
        "sensitivity": _safe_div(tp, tp + fn),
        "specificity": _safe_div(tn, tn + fp),
        "ppv": _safe_div(tp, tp + fp),
        "npv": _safe_div(tn, tn + fn),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
    }


# ------------------------------------------------------------------------------------ multi-class point
def class_statistics(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, k: int) -> dict[str, Any]:
    """Point estimates of the multi-class metrics.

    Returns ``{"per_class": [{"n", "auc", "sensitivity", "specificity", "ppv", "npv", "f1", "tp", "fp", "fn",
    "tn"} x k], "macro_auc", "macro_f1", "accuracy", "balanced_accuracy", "n"}`` (means over the classes
    present in ``y_true``; see the module docstring).
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    scores = np.asarray(scores, dtype=float)
    _check_labels(y_true, y_pred, k)
    if scores.shape != (y_true.size, k):
        raise ValueError(f"scores must have shape {(y_true.size, k)}, got {scores.shape}")
    per_class = []
    for c in range(k):
        t, p = y_true == c, y_pred == c
        tp, fp = int((t & p).sum()), int((~t & p).sum())
        fn, tn = int((t & ~p).sum()), int((~t & ~p).sum())
        row = {"n": int(t.sum()), "auc": binary_auc(t, scores[:, c]), **binary_rates(tp, fp, fn, tn),
               "tp": tp, "fp": fp, "fn": fn, "tn": tn}
        per_class.append(row)
    present = [c for c in range(k) if per_class[c]["n"] > 0]
    return {
        "n": int(y_true.size),
        "per_class": per_class,
        "macro_auc": _nanmean([per_class[c]["auc"] for c in present]),
        "macro_f1": _nanmean([per_class[c]["f1"] for c in present]),
        "accuracy": _safe_div(int((y_true == y_pred).sum()), y_true.size),
        "balanced_accuracy": _nanmean([per_class[c]["sensitivity"] for c in present]),
    }


def _summary_vector(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, k: int) -> dict[str, float]:
    """Flat name -> value of every statistic that gets a CI (used for point estimate and resamples alike)."""
    st = class_statistics(y_true, y_pred, scores, k)
    out = {m: st[m] for m in ("macro_auc", "macro_f1", "accuracy", "balanced_accuracy")}
    for c, row in enumerate(st["per_class"]):
        for m in ("auc", "sensitivity", "specificity", "ppv", "f1"):
            out[f"{c}.{m}"] = row[m]
    return out


# ------------------------------------------------------------------------------------------- bootstrap
def stratified_resamples(strata: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) int indices: each row resamples, with replacement, the cases of each stratum
    within that stratum (so each row keeps the stratum sizes). Reproducible for a given ``seed``."""
    strata = np.asarray(strata)
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    rng = np.random.default_rng(seed)
    n = strata.size
    out = np.empty((n_resamples, n), dtype=np.int64)
    pos = 0
    for s in sorted(set(strata.tolist()), key=str):
        members = np.flatnonzero(strata == s)
        m = members.size
        out[:, pos:pos + m] = members[rng.integers(0, m, size=(n_resamples, m))]
        pos += m
    return out


def percentile_ci(samples: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """(lower, upper) percentile interval of the finite bootstrap samples; nan if none is finite."""
    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(x, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap(statistic: Callable[[np.ndarray], Mapping[str, float]], strata: np.ndarray, n_resamples: int,
              seed: int, alpha: float = ALPHA) -> dict[str, dict[str, float]]:
    """Point estimate and percentile CI of every value returned by ``statistic(indices)``.

    ``statistic`` receives an int index array into the cases (``arange(n)`` for the point estimate) and
    returns name -> value. Returns name -> ``{"value", "ci_low", "ci_high"}``.
    """
    strata = np.asarray(strata)
    point = dict(statistic(np.arange(strata.size)))
    if strata.size == 0 or n_resamples == 0:
        return {k: {"value": float(v), "ci_low": float("nan"), "ci_high": float("nan")} for k, v in point.items()}
    idx = stratified_resamples(strata, n_resamples, seed)
    samples = {k: np.empty(n_resamples) for k in point}
    for b in range(n_resamples):
        res = statistic(idx[b])
        for k in point:
            samples[k][b] = res.get(k, float("nan"))
    out = {}
    for k, v in point.items():
        lo, hi = percentile_ci(samples[k], alpha)
        out[k] = {"value": float(v), "ci_low": lo, "ci_high": hi}
    return out


def paired_difference(statistic_a: Callable[[np.ndarray], float], statistic_b: Callable[[np.ndarray], float],
                      strata: np.ndarray, n_resamples: int, seed: int, alpha: float = ALPHA) -> dict[str, float]:
    """Difference ``a - b`` of two statistics on the same cases: value, percentile CI and two-sided
    bootstrap p-value (both statistics evaluated on the same stratified resamples)."""
    strata = np.asarray(strata)
    full = np.arange(strata.size)
    a, b = float(statistic_a(full)), float(statistic_b(full))
    out = {"a": a, "b": b, "difference": a - b, "ci_low": float("nan"), "ci_high": float("nan"),
           "p_value": float("nan"), "n": int(strata.size)}
    if strata.size == 0 or n_resamples == 0 or not math.isfinite(a - b):
        return out
    idx = stratified_resamples(strata, n_resamples, seed)
    d = np.array([statistic_a(i) - statistic_b(i) for i in idx], dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return out
    out["ci_low"], out["ci_high"] = percentile_ci(d, alpha)
    le = (1 + int((d <= 0).sum())) / (d.size + 1)
    ge = (1 + int((d >= 0).sum())) / (d.size + 1)
    out["p_value"] = float(min(1.0, 2 * min(le, ge)))
    return out



def paired_mean_difference(a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int) -> dict[str, float]:
    """:func:`paired_difference` of the means of two per-case value arrays aligned case by case (``a[k]`` and
    ``b[k]`` are the same case, e.g. two models' Dice on one study), resampled without strata."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-D arrays of one length, got {a.shape} and {b.shape}")
    return paired_difference(lambda i: float(a[i].mean()), lambda i: float(b[i].mean()),
                             np.zeros(a.size, dtype=int), n_resamples, seed)

# ------------------------------------------------------------------------------------- with confidence
def classification_report(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, classes: Sequence[str],
                          n_resamples: int, seed: int) -> dict[str, Any]:
    """Multi-class metrics with stratified-bootstrap 95% CIs, the confusion matrix and ROC curves.

    Returns ``{"n", "classes_present", "macro_auc": {"value", "ci_low", "ci_high"}, "macro_f1", "accuracy",
    "balanced_accuracy", "per_class": {name: {"n", "tp", "fp", "fn", "tn", "auc": {...}, "sensitivity": {...},
    "specificity", "ppv", "f1"}}, "confusion_matrix": {"rows", "columns", "counts"}}``.
    """
    k = len(classes)
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    scores = np.asarray(scores, dtype=float).reshape(y_true.size, k)
    point = class_statistics(y_true, y_pred, scores, k)
    ci = bootstrap(lambda i: _summary_vector(y_true[i], y_pred[i], scores[i], k), y_true, n_resamples, seed)
    per_class = {}
    for c, name in enumerate(classes):
        row = point["per_class"][c]
        per_class[name] = {key: row[key] for key in ("n", "tp", "fp", "fn", "tn")}
        per_class[name]["npv"] = row["npv"]
        for m in ("auc", "sensitivity", "specificity", "ppv", "f1"):
            per_class[name][m] = ci[f"{c}.{m}"]
    cm = confusion_matrix(y_true, y_pred, k)
    return {
        "n": int(y_true.size),
        "classes_present": [classes[c] for c in range(k) if point["per_class"][c]["n"] > 0],
        **{m: ci[m] for m in ("macro_auc", "macro_f1", "accuracy", "balanced_accuracy")},
        "per_class": per_class,
        "confusion_matrix": {"rows": list(classes), "columns": list(classes) + ["none"], "counts": cm.tolist()},
    }


def detection_report(truth_tumour: np.ndarray, found: np.ndarray, n_resamples: int, seed: int) -> dict[str, Any]:
    """Tumour detection (reference tumour vs none, app tumour_found vs no_tumour): counts, sensitivity,
    specificity, PPV, NPV with stratified-bootstrap CIs (strata = reference)."""
    t = np.asarray(truth_tumour, dtype=bool)
    f = np.asarray(found, dtype=bool)
    if t.shape != f.shape:
        raise ValueError("truth_tumour and found must have the same shape")

    def stat(i: np.ndarray) -> dict[str, float]:
        tt, ff = t[i], f[i]
        r = binary_rates(int((tt & ff).sum()), int((~tt & ff).sum()), int((tt & ~ff).sum()), int((~tt & ~ff).sum()))
        return {m: r[m] for m in ("sensitivity", "specificity", "ppv", "npv")}

    ci = bootstrap(stat, t, n_resamples, seed)
    return {"n": int(t.size), "tp": int((t & f).sum()), "fp": int((~t & f).sum()), "fn": int((t & ~f).sum()),
            "tn": int((~t & ~f).sum()), **ci}


def detection_operating_points(truth_tumour: np.ndarray, found: np.ndarray, mean_probability: np.ndarray
                               ) -> dict[str, Any]:
    """Detection at each confidence threshold the run allows: for every distinct mean probability ``t`` of a found
    tumour (``result.json`` ``tumour.mean_probability``, 0-1; nan where none was found), the counts and rates if
    the tumour model's rule ``min_mean_probability`` were ``t`` (found tumours below ``t`` reported as none), and
    the AUC of the mean probability (0 where no tumour was found) for reference tumour vs none. What a site reads
    to choose its own operating point; valid for thresholds above any rule the run was made with."""
    t = np.asarray(truth_tumour, dtype=bool)
    f = np.asarray(found, dtype=bool)
    p = np.asarray(mean_probability, dtype=float)
    if not (t.shape == f.shape == p.shape):
        raise ValueError("truth_tumour, found and mean_probability must have the same shape")
    if np.any(f & np.isnan(p)):
        raise ValueError("a found tumour without its mean probability")
    score = np.where(f, p, 0.0)
    points = []
    for thr in [0.0, *sorted(set(np.round(p[f], 4).tolist()))]:
        kept = f & (score >= thr - 1e-9)
        tp, fp = int((t & kept).sum()), int((~t & kept).sum())
        fn, tn = int(t.sum()) - tp, int((~t).sum()) - fp
        r = binary_rates(tp, fp, fn, tn)
        points.append({"min_mean_probability": thr, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
                       "sensitivity": r["sensitivity"], "specificity": r["specificity"]})
    return {"n": int(t.size), "auc_mean_probability": binary_auc(t, score) if 0 < t.sum() < t.size else math.nan,
            "operating_points": points}


def roc_curves(y_true: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """One-vs-rest ROC curve of each class present (``{"fpr", "tpr"}``), for plots."""
    y_true = np.asarray(y_true, dtype=int)
    scores = np.asarray(scores, dtype=float).reshape(y_true.size, len(classes))
    out = {}
    for c, name in enumerate(classes):
        fpr, tpr, _ = roc_curve(y_true == c, scores[:, c])
        if fpr.size:
            out[name] = {"fpr": [round(float(x), 6) for x in fpr], "tpr": [round(float(x), 6) for x in tpr]}
    return out


def calibration(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Reliability diagram of the top-class probability: equal-width bins on [0, 1] (the last closed),
    each with count, mean confidence and accuracy; ECE = sum_b n_b/n * |acc_b - conf_b|; MCE = max."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    if conf.shape != ok.shape:
        raise ValueError("confidence and correct must have the same shape")
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidence must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    bins, ece, mce = [], 0.0, 0.0
    for b in range(n_bins):
        m = which == b
        cnt = int(m.sum())
        acc = float(ok[m].mean()) if cnt else float("nan")
        mc = float(conf[m].mean()) if cnt else float("nan")
        if cnt:
            gap = abs(acc - mc)
            ece += cnt / conf.size * gap
            mce = max(mce, gap)
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": cnt, "confidence": mc, "accuracy": acc})
    return {"n": int(conf.size), "bins": bins, "ece": float(ece) if conf.size else float("nan"),
            "mce": float(mce) if conf.size else float("nan")}


def macro_auc_of(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro one-vs-rest AUC over the classes present in ``y_true`` (scores (n, k))."""
    y_true = np.asarray(y_true, dtype=int)
    scores = np.asarray(scores, dtype=float)
    return _nanmean([binary_auc(y_true == c, scores[:, c]) for c in range(scores.shape[1]) if (y_true == c).any()])


def summary_with_ci(values: np.ndarray, n_resamples: int, seed: int) -> dict[str, Any]:
    """Mean (with a plain bootstrap 95% CI), SD, median, quartiles, min and max of finite values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0, "mean": None}
    ci = bootstrap(lambda i: {"mean": float(x[i].mean())}, np.zeros(x.size, dtype=int), n_resamples, seed)["mean"]
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    return {"n": int(x.size), "mean": ci, "sd": float(x.std(ddof=1)) if x.size > 1 else float("nan"),
            "median": float(med), "q1": float(q1), "q3": float(q3), "min": float(x.min()), "max": float(x.max())}


# ---------------------------------------------------------------------------------- segmentation overlap
def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice 2|A∩B|/(|A|+|B|) of two boolean masks of one shape; nan when both are empty."""
    a, b = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    s = int(a.sum()) + int(b.sum())
    return float(2 * int(np.logical_and(a, b).sum()) / s) if s else float("nan")


# ------------------------------------------------------------------------------------------------ JSON
def jsonable(obj: Any, digits: int = 6) -> Any:
    """A JSON-ready copy: numpy scalars/arrays to Python, floats rounded to ``digits``, nan/inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), digits)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return round(f, digits) if math.isfinite(f) else None
    return obj
