"""Cohorts: many cases with a manifest, and the clinical-only difficulty check (no rendering)."""
from __future__ import annotations

import csv
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from training.phantom.acquisition import sample_scan
from training.phantom.dicom_io import TRANSFER_SYNTAXES, write_case
from training.phantom.params import NO_TUMOUR, TUMOUR_CLASSES, PatientParams
from training.phantom.patient import sample_patient
from training.phantom.render import render

log = logging.getLogger("training.phantom")


def cohort_classes(n: int, seed: int, no_tumour_fraction: float = 0.15,
                   classes: Sequence[str] | None = None) -> list[str]:
    """Class of each of ``n`` cases: ``round(n * no_tumour_fraction)`` 'none', the rest balanced over
    ``classes`` (default all six), in a seeded random order."""
    classes = list(classes or TUMOUR_CLASSES)
    for c in classes:
        if c not in TUMOUR_CLASSES and c != NO_TUMOUR:
            raise ValueError(f"unknown tumour class {c!r}")
    if not 0.0 <= no_tumour_fraction <= 1.0:
        raise ValueError("no_tumour_fraction must be in [0, 1]")
    rng = np.random.default_rng([seed, 0xC1A55])
    n_none = int(round(n * no_tumour_fraction))
    order = list(rng.permutation(len(classes)))
    labels = [NO_TUMOUR] * n_none + [classes[order[i % len(classes)]] for i in range(n - n_none)]
    return [labels[i] for i in rng.permutation(n)]


def generate_cohort(out: Path, n: int, seed: int, full_size: bool = False, no_tumour_fraction: float = 0.15,
                    workers: int = 1, **opts: Any) -> Path:
    """Generate ``n`` cases under ``out`` and write ``out/manifest.csv``; returns the manifest path.

    Options: ``classes`` (sequence of tumour classes), ``protocol`` ('standard' routine pelvic CT, default, or
    'varied': coverage, kernels and patient position as hospitals scan), ``matrix`` (int; same FOV),
    ``transfer_syntax`` ('explicit', 'implicit', 'jpeg2000', 'rle' or a UID), ``pixel_representation`` (0/1),
    ``localizer`` (bool), ``contrast_series`` (bool), ``patient_name`` / ``patient_id`` / ``birth_date`` /
    ``accession_number`` (format strings with ``{case_id}``, ``{i}``), ``case_prefix`` (default 'C'),
    ``start_index`` (default 1), ``tumour_world`` ('v1', default, or 'v2': see :mod:`training.phantom.tumour_v2`),
    ``site`` (None, default: drawn per case; or an external site, e.g. 'SITE_E', for every case:
    :data:`training.phantom.acquisition.EXTERNAL_SITES`), ``coverage`` (None, default: drawn; or a coverage kind
    for every case, e.g. 'upper_abdomen': :data:`training.phantom.acquisition.FORCED_COVERAGE`).
    ``workers`` > 1 renders cases in that many processes (same cases, same order).
    """
    known = {"classes", "matrix", "transfer_syntax", "pixel_representation", "localizer", "contrast_series",
             "patient_name", "patient_id", "birth_date", "accession_number", "case_prefix", "start_index",
             "protocol", "tumour_world", "site", "coverage"}
    bad = set(opts) - known
    if bad:
        raise TypeError(f"unknown options {sorted(bad)}")
    if n < 1:
        raise ValueError("n must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = cohort_classes(n, seed, no_tumour_fraction, opts.get("classes"))
    ts = opts.get("transfer_syntax")
    if ts is not None:
        ts = str(TRANSFER_SYNTAXES.get(str(ts).lower(), ts))
    t0 = time.perf_counter()
    start = int(opts.get("start_index", 1))
    jobs = [(i, start, seed, classes[i], full_size, opts, ts, out, n, t0) for i in range(n)]
    workers = int(workers)
    if workers > 1 and n > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers) as pool:
            rows = pool.map(_one_case, jobs, chunksize=1)
    else:
        rows = [_one_case(j) for j in jobs]
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


def _one_case(job: tuple) -> dict[str, Any]:
    i, start, seed, cls, full_size, opts, ts, out, n, t0 = job
    case_id = f"{opts.get('case_prefix', 'C')}{start + i:04d}"
    rng = np.random.default_rng([seed, start + i])
    patient = sample_patient(rng, case_id, cls, tumour_world=str(opts.get("tumour_world") or "v1"))
    ident = {k: str(opts[k]).format(case_id=case_id, i=start + i)
             for k in ("patient_name", "patient_id", "birth_date", "accession_number") if opts.get(k)}
    if ident:
        patient = replace(patient, **ident)
    scan = sample_scan(rng, patient, full_size=full_size, protocol=str(opts.get("protocol") or "standard"),
                       site=opts.get("site"), coverage=opts.get("coverage"))
    if opts.get("matrix"):
        scan = scan.with_matrix(int(opts["matrix"]))
    if ts is not None:
        scan = replace(scan, transfer_syntax_uid=ts)
    if opts.get("pixel_representation") is not None:
        scan = replace(scan, pixel_representation=int(opts["pixel_representation"]))
    ct, labels = render(patient, scan)
    row = write_case(patient, scan, ct, labels, out, localizer=bool(opts.get("localizer")),
                     contrast_series=bool(opts.get("contrast_series")))
    log.info("case %d/%d %s %s: %d slices (%.1f s elapsed)", i + 1, n, case_id, patient.tumour_class,
             ct.shape[0], time.perf_counter() - t0)
    return row


def clinical_features(p: PatientParams) -> list[float]:
    """(age years, sex 1=M, tumour volume mL from the analytic shape)."""
    return [float(p.age), 1.0 if p.sex == "M" else 0.0, p.tumour_volume_ml_analytic]


def clinical_only_auc(n_train: int = 600, n_test: int = 600, seed: int = 0, model: str = "logreg",
                      tumour_world: str = "v1") -> float:
    """Macro one-vs-rest AUC of a standardised clinical-only classifier (age, sex, volume) trained on
    ``n_train`` sampled patients and evaluated on ``n_test`` others (classes drawn by prevalence) of
    ``tumour_world``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    def draw(n: int, s: int):
        rng = np.random.default_rng(s)
        ps = [sample_patient(rng, f"X{i:04d}", tumour_world=tumour_world) for i in range(n)]
        return np.array([clinical_features(p) for p in ps]), np.array([p.tumour_class for p in ps])

    xtr, ytr = draw(n_train, seed)
    xte, yte = draw(n_test, seed + 1)
    clf = (make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)) if model == "logreg"
           else make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)))
    clf.fit(xtr, ytr)
    return float(roc_auc_score(yte, clf.predict_proba(xte), multi_class="ovr", average="macro",
                               labels=clf.classes_))
