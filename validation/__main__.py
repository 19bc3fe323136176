"""Validation runs: ``python -m validation run --manifest COHORT.csv --out REPORT_DIR [options]``.

Runs the application on every study of the manifest exactly as deployed, resumably (finished studies of the
same models are never run again), and writes ``REPORT_DIR/metrics.json`` and ``REPORT_DIR/report.html``. See
docs/validation.md. ``python -m validation report --out REPORT_DIR`` re-renders report.html from metrics.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from core.models import ModelError, read_metadata
from validation.evaluate import build_metrics
from validation.manifest import ManifestError, read_manifest
from validation.provenance import REPO, provenance
from validation.report import render_html
from validation.runner import RunConfig, run_all, write_json_atomic


def model_classes(models: Path | None, records: list[dict[str, Any]]) -> list[str]:
    """The validated classifier's class order (canonical keys): its metadata's ``classes`` in the models folder;
    with a container image and no models folder here, the order of the probabilities in its results (the
    application writes them in its classifier's order).

    Raises:
        ModelError: the classifier's metadata is unreadable, or (image) no study reported probabilities.
    """
    from core.codes import tumour_class_key
    if models is not None:
        names: list[str] = list(read_metadata(models / "tumour_classifier").clf.classes)
    else:
        names = next((list(r["probabilities"]) for r in records if r.get("probabilities")), [])
        if not names:
            raise ModelError("the classifier's classes are unknown: no models folder and no study was classified "
                             "(pass --models with the image's models)")
    return [tumour_class_key(c) for c in names]


def write_text_atomic(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False,
                                     encoding="utf-8") as fh:
        fh.write(text)
    Path(fh.name).replace(path)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m validation", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the application over a cohort and compute the statistics")
    r.add_argument("--manifest", type=Path, required=True, help="cohort CSV (docs/validation.md)")
    r.add_argument("--out", type=Path, required=True, help="report folder (runs/, logs/, metrics.json, report.html)")
    r.add_argument("--models", type=Path, default=None,
                   help="models folder (default: the repository's models/; with --image: the image's own)")
    r.add_argument("--workers", type=int, default=1, help="parallel studies in the local process pool (default 1)")
    r.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs (default 1000)")
    r.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    r.add_argument("--image", default=None, help="run the MAP container image with podman instead of python -m app")
    r.add_argument("--container-engine", default="podman", help="with --image: podman (default) or docker")
    r.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="one Ray task per study on this cluster ('auto', 'ray://host:10001', or 'local')")
    r.add_argument("--gpu", action="store_true", help="request one GPU per study (Ray num_gpus=1; podman CDI GPUs)")
    r.add_argument("--cpus-per-study", type=float, default=2.0, help="Ray num_cpus per study (default 2)")
    r.add_argument("--subgroups", default=None,
                   help="comma-separated subgroup columns (default: sex, age_band, site, manufacturer, "
                        "slice_thickness_mm where present)")
    r.add_argument("--timeout", type=float, default=3600.0, help="seconds per study before it is an error")
    r.add_argument("--retry-errors", action="store_true", help="run again the finished studies of status error")
    rep = sub.add_parser("report", help="re-render report.html from REPORT_DIR/metrics.json")
    rep.add_argument("--out", type=Path, required=True)
    cmp_ = sub.add_parser("compare",
                          help="pair two runs of one cohort: macro AUC and Dice differences a - b with 95%% CIs")
    cmp_.add_argument("a", type=Path, help="metrics.json of run a (e.g. the candidate)")
    cmp_.add_argument("b", type=Path, help="metrics.json of run b (e.g. the shipped version)")
    cmp_.add_argument("--out", type=Path, default=None, help="write the comparison here (JSON)")
    cmp_.add_argument("--bootstrap", type=int, default=2000)
    a = ap.parse_args(argv)
    if a.command == "run":
        if a.workers < 1:
            ap.error("--workers must be >= 1")
        if a.bootstrap < 0:
            ap.error("--bootstrap must be >= 0")
    return a


def cmd_run(a: argparse.Namespace) -> int:
    try:
        cases, groups = read_manifest(a.manifest, a.subgroups.split(",") if a.subgroups else None)
    except (ManifestError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    missing = [c.case_id for c in cases if not c.dicom_dir.is_dir()]
    if missing:
        print(f"warning: {len(missing)} dicom_dir folder(s) missing (the studies will end as errors): "
              f"{', '.join(missing[:10])}", file=sys.stderr)
    models = a.models.resolve() if a.models else (None if a.image else REPO / "models")
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(report_dir=out, models=models, image=a.image, container_engine=a.container_engine,
                    gpu=a.gpu, timeout_s=a.timeout, retry_errors=a.retry_errors)
    try:  # the validated classifier's classes, before any study runs when its models folder is here
        classes = model_classes(models, []) if models is not None else None
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    records = run_all(cfg, cases, workers=a.workers, ray_address=a.ray, gpu=a.gpu, cpus_per_study=a.cpus_per_study)
    results_models: dict[str, set[tuple[str, str]]] = {}
    for r in records:
        for name, m in (r.get("models") or {}).items():
            results_models.setdefault(name, set()).add((str(m.get("version")), str(m.get("sha256"))))
    execution = ({"kind": "ray", "address": a.ray, "gpu_per_study": a.gpu, "cpus_per_study": a.cpus_per_study}
                 if a.ray else {"kind": "process_pool", "workers": a.workers})
    execution["runner"] = "container image" if a.image else "python -m app"
    prov = provenance(manifest=a.manifest.resolve(), models_dir=models, seed=a.seed, n_resamples=a.bootstrap,
                      image=a.image, execution=execution, results_models=results_models)
    try:
        classes = classes or model_classes(None, records)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    doc = build_metrics(records, classes=classes, subgroup_columns=groups,
                        n_resamples=a.bootstrap, seed=a.seed, provenance=prov)
    write_json_atomic(out / "metrics.json", doc)
    write_text_atomic(out / "report.html", render_html(doc))
    co = doc["cohort"]
    print(f"[validation] {co['n_studies']} studies: {co['n_classification']} classified, {co['n_failed']} failed/"
          f"not applicable, {co['n_missed_detections']} missed detections; macro AUC "
          f"{doc['classification']['macro_auc']['value']}; wrote {out / 'metrics.json'} and {out / 'report.html'}",
          file=sys.stderr)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    doc = json.loads((a.out / "metrics.json").read_text())
    write_text_atomic(a.out / "report.html", render_html(doc))
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from validation.evaluate import compare_runs
    try:
        doc = compare_runs(json.loads(a.a.read_text()), json.loads(a.b.read_text()), n_resamples=a.bootstrap)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    doc = {"a": str(a.a), "b": str(a.b), **doc}
    if a.out is not None:
        write_json_atomic(a.out, doc)
    for v, d in doc["macro_auc"].items():
        print(f"{v:18s} macro AUC a {d['a']:.3f}  b {d['b']:.3f}  a - b {d['difference']:+.3f} "
              f"({d['ci_low']:+.3f} to {d['ci_high']:+.3f}), {doc['n_cases']} cases")
    for s, d in doc["segmentation_dice"].items():
        print(f"{s:18s} Dice      a {d['a']:.3f}  b {d['b']:.3f}  a - b {d['difference']:+.3f} "
              f"({d['ci_low']:+.3f} to {d['ci_high']:+.3f}), {d['n']} cases")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    return {"run": cmd_run, "report": cmd_report, "compare": cmd_compare}[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
