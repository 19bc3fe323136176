"""Difficulty of a tumour world, measured on the generator's own parameters (no rendering, no trained model).

An *oracle* classifier sees the parameters a tumour was drawn with: the image-side ones
(:data:`training.phantom.tumour_v2.IMAGE_FEATURES`: matrix, HU, texture, shape, margin, rim, cysts, residual
bone, soft-tissue extension, other lesions), the clinical ones (age in years, sex, volume in mL) and the location
(tumour centroid, pelvis-local mm before the patient's scale, which is what the hip-frame location normalises
away). What simple classifiers reach on them bounds what a network can learn from the images, so the world's
difficulty is fixed before any training (issue 13: image-side macro AUC 0.85-0.93, clinical + location
0.80-0.90, no single image-side parameter above 0.85 one-vs-rest).

Classes are balanced (six tumour types, no tumour-free patients); macro AUC is the mean of the one-vs-rest AUCs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.phantom.params import TUMOUR_CLASSES
from training.phantom.patient import sample_patient
from training.phantom.tumour import check_world
from training.phantom.tumour_v2 import IMAGE_FEATURES, LOCATION_FEATURES, image_features, location_features

CLINICAL_FEATURES: tuple[str, ...] = ("age_years", "sex_male", "volume_ml")


@dataclass(frozen=True)
class OracleTable:
    """Parameters of ``n`` sampled tumour patients: ``image`` (n, len(IMAGE_FEATURES)), ``clinical``
    (n, 3: age years, sex 1 = male, volume mL), ``location`` (n, 3: centroid x, y, z local mm), ``y`` class names."""

    image: np.ndarray
    clinical: np.ndarray
    location: np.ndarray
    y: np.ndarray


def oracle_table(n_per_class: int, seed: int, tumour_world: str = "v2") -> OracleTable:
    """Draw ``n_per_class`` patients of each tumour class of ``tumour_world`` (seeded) and tabulate them."""
    check_world(tumour_world)
    if n_per_class < 2:
        raise ValueError("n_per_class must be >= 2")
    rng = np.random.default_rng([seed, 0x0AC1E])
    img, cli, loc, y = [], [], [], []
    for i in range(n_per_class):
        for c in TUMOUR_CLASSES:
            p = sample_patient(rng, f"O{i:05d}", c, tumour_world=tumour_world)
            assert p.tumour is not None
            f = image_features(p.tumour)
            img.append([f[k] for k in IMAGE_FEATURES])
            cli.append([float(p.age), 1.0 if p.sex == "M" else 0.0, p.tumour_volume_ml_analytic])
            lf = location_features(p.tumour)
            loc.append([lf[k] for k in LOCATION_FEATURES])
            y.append(c)
    return OracleTable(np.asarray(img, float), np.asarray(cli, float), np.asarray(loc, float), np.asarray(y))


def _macro_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))


def macro_auc(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              model: str = "gbm") -> float:
    """Macro one-vs-rest AUC on the test rows of a classifier fitted on the training rows: ``"logreg"``
    (standardised logistic regression) or ``"gbm"`` (histogram gradient boosting, 150 shallow trees)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    if model == "logreg":
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    elif model == "gbm":
        clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, max_depth=3, random_state=0)
    else:
        raise ValueError(f"unknown model {model!r}")
    with threadpool_limits(1):   # one thread: deterministic and fast on a shared machine (tiny problems)
        clf.fit(x_train, y_train)
        proba = clf.predict_proba(x_test)
    return _macro_auc(y_test, proba, clf.classes_)


def single_parameter_aucs(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                          names: tuple[str, ...], n_bins: int = 12) -> dict[tuple[str, str], float]:
    """One-vs-rest AUC of each single parameter for each class, ``{(parameter, class): AUC}``.

    The score of a test row is the training frequency of the class in the row's bin of the parameter (quantile
    bins, or one bin per value for parameters with few values), so a parameter that separates a class in any
    way (high, low or a middle band) scores high; AUC is 0.5 for an uninformative parameter.
    """
    from sklearn.metrics import roc_auc_score

    out: dict[tuple[str, str], float] = {}
    for j, name in enumerate(names):
        tr, te = x_train[:, j], x_test[:, j]
        values = np.unique(tr)
        if len(values) <= n_bins:
            edges = (values[:-1] + values[1:]) / 2.0
        else:
            edges = np.unique(np.quantile(tr, np.linspace(0, 1, n_bins + 1)[1:-1]))
        b_tr, b_te = np.digitize(tr, edges), np.digitize(te, edges)
        for c in np.unique(y_train):
            hit = (y_train == c).astype(float)
            freq = np.array([hit[b_tr == b].mean() if np.any(b_tr == b) else hit.mean()
                             for b in range(len(edges) + 1)])
            out[(name, str(c))] = float(roc_auc_score(y_test == c, freq[b_te]))
    return out


def calibration_report(tumour_world: str = "v2", n_per_class: int = 150, seed: int = 0) -> dict[str, object]:
    """Every oracle figure of ``tumour_world``: macro AUCs (logistic regression and gradient boosting) on the
    image-side, clinical + location and clinical-only parameters, and the largest single-parameter one-vs-rest
    AUC (with its parameter and class). Trained on ``n_per_class`` patients per class of ``seed``, tested on as
    many of ``seed + 1``."""
    tr, te = oracle_table(n_per_class, seed, tumour_world), oracle_table(n_per_class, seed + 1, tumour_world)
    cl_tr, cl_te = np.hstack([tr.clinical, tr.location]), np.hstack([te.clinical, te.location])
    rep: dict[str, object] = {"tumour_world": tumour_world, "n_train": len(tr.y), "n_test": len(te.y)}
    for model in ("logreg", "gbm"):
        rep[f"image_{model}"] = macro_auc(tr.image, tr.y, te.image, te.y, model)
        rep[f"clinical_location_{model}"] = macro_auc(cl_tr, tr.y, cl_te, te.y, model)
        rep[f"clinical_{model}"] = macro_auc(tr.clinical, tr.y, te.clinical, te.y, model)
        rep[f"all_{model}"] = macro_auc(np.hstack([tr.image, cl_tr]), tr.y, np.hstack([te.image, cl_te]), te.y,
                                        model)
    single = single_parameter_aucs(tr.image, tr.y, te.image, te.y, IMAGE_FEATURES)
    (name, cls), auc = max(single.items(), key=lambda kv: kv[1])
    rep.update(max_single_auc=auc, max_single_parameter=name, max_single_class=cls)
    return rep


if __name__ == "__main__":  # python -m training.phantom.calibration [v1|v2]
    import json
    import sys

    print(json.dumps(calibration_report(sys.argv[1] if len(sys.argv) > 1 else "v2"), indent=1))
