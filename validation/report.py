"""report.html: the validation report for readers outside engineering, one self-contained offline page.

Everything comes from the metrics.json document; plots are drawn with matplotlib (Agg) into PNGs embedded as
``data:image/png;base64`` URIs; the CSS is inline; no script, font or stylesheet is loaded from anywhere.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.codes import TUMOUR_TYPE_CODES, class_display_name
from core.status import ANALYSED

#: display names of the values that are not tumour classes (a class's comes from its key: :func:`pretty`)
OTHER_NAMES = {"none": "No tumour", "tumour": "Sacral tumour", "hip_bone_left": "Hip bone, left",
               "hip_bone_right": "Hip bone, right"}
CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#1a1a1a;
line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0.2em}h2{border-bottom:2px solid #2c5d8a;padding-bottom:3px;margin-top:1.8em;color:#2c5d8a}
h3{margin-bottom:0.3em}
table{border-collapse:collapse;margin:8px 0 14px 0;font-size:0.92em}
th,td{border:1px solid #c8c8c8;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef3f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
.banner{background:#fff4e5;border:1px solid #f0b35a;padding:8px 12px;margin:10px 0}
.kpi{display:inline-block;border:1px solid #c8d6e5;background:#f6f9fc;padding:8px 14px;margin:4px 8px 4px 0;
min-width:180px}.kpi b{display:block;font-size:1.35em}
.fig{display:inline-block;margin:6px 12px 6px 0;vertical-align:top}.fig img{border:1px solid #ddd;max-width:100%}
.muted{color:#666}.bad{color:#a40000}code{background:#f2f2f2;padding:0 3px}
"""


# ------------------------------------------------------------------------------------------------ format
def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def fmt_ci(m: dict[str, Any] | None, digits: int = 3, pct: bool = False) -> str:
    """'0.873 (0.790-0.920)' from {value, ci_low, ci_high}; 'n/a' when undefined."""
    if not m or m.get("value") is None:
        return "n/a"
    k = 100.0 if pct else 1.0
    unit = " %" if pct else ""
    d = 1 if pct else digits
    s = f"{m['value'] * k:.{d}f}{unit}"
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        s += f" ({m['ci_low'] * k:.{d}f}&ndash;{m['ci_high'] * k:.{d}f})"
    return s


def pretty(name: str) -> str:
    """Display name of a tumour class key (derived from the key, :func:`core.codes.class_display_name`), of the
    other reference and structure values (:data:`OTHER_NAMES`); anything else (subgroup values) unchanged."""
    return class_display_name(name) if name in TUMOUR_TYPE_CODES else OTHER_NAMES.get(name, name)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], num_cols: Sequence[int] = ()) -> str:
    """HTML table; cells are pre-escaped HTML strings."""
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td class='num'>{c}</td>" if i in num_cols else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------- plots
def png_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f"<div class='fig'><img src='{uri}' alt='{_e(alt)}'></div>"


def plot_roc(cls: dict[str, Any]) -> str | None:
    curves = cls.get("roc_curves") or {}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    for name, c in curves.items():
        auc = cls["per_class"][name]["auc"]
        ax.step(c["fpr"], c["tpr"], where="post", lw=1.8,
                label=f"{pretty(name)} (n={cls['per_class'][name]['n']}), AUC {fmt_ci(auc).replace('&ndash;', '-')}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="1 - specificity (false-positive rate)",
           ylabel="Sensitivity (true-positive rate)", title="ROC curves, one class vs the rest")
    ax.legend(loc="lower right", fontsize=7.5)
    ax.grid(alpha=0.3)
    return png_data_uri(fig)


def plot_confusion(cls: dict[str, Any]) -> str | None:
    cm = cls.get("confusion_matrix")
    if not cm or cls["n"] == 0:
        return None
    counts = np.array(cm["counts"])
    cols = list(cm["columns"])
    if counts[:, -1].sum() == 0:  # the model never answers 'none'
        counts, cols = counts[:, :-1], cols[:-1]
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    im = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(cols)), [pretty(c) for c in cols], rotation=35, ha="right")
    ax.set_yticks(range(len(cm["rows"])), [pretty(c) for c in cm["rows"]])
    thr = counts.max() / 2 if counts.max() else 1
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                    color="white" if counts[i, j] > thr else "black", fontsize=9)
    ax.set(xlabel="Predicted class", ylabel="Reference class", title=f"Confusion matrix (n={cls['n']})")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return png_data_uri(fig)


def plot_calibration(cal: dict[str, Any] | None) -> str | None:
    if not cal or not cal.get("n"):
        return None
    bins = cal["bins"]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5.2, 5.8), height_ratios=[3, 1], sharex=True)
    mids = [(b["low"] + b["high"]) / 2 for b in bins]
    acc = [b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins]
    ax.bar(mids, acc, width=0.09, color="#5b8db8", edgecolor="#2c5d8a", label="fraction correct")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    conf = [(b["confidence"], b["accuracy"]) for b in bins if b["n"]]
    ax.plot([c for c, _ in conf], [a for _, a in conf], "o", color="#a40000", ms=4, label="mean confidence")
    ax.set(ylim=(0, 1.02), ylabel="Fraction correct",
           title=f"Reliability diagram (ECE {fmt(cal['ece'])}, n={cal['n']})")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    ax2.bar(mids, [b["n"] for b in bins], width=0.09, color="#999")
    ax2.set(xlim=(0, 1), xlabel="Probability of the predicted class", ylabel="Studies")
    return png_data_uri(fig)


def plot_dice(cases: list[dict[str, Any]]) -> str | None:
    data, labels = [], []
    for s in ("tumour", "hip_bone_left", "hip_bone_right"):
        vals = [c["segmentation"][s]["dice"] for c in cases
                if c.get("segmentation") and c["status"] in ANALYSED
                and c["segmentation"][s]["reference_ml"] and c["segmentation"][s]["dice"] is not None]
        if vals:
            data.append(vals)
            labels.append(f"{pretty(s)}\n(n={len(vals)})")
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    ax.boxplot(data, tick_labels=labels, showmeans=True)
    ax.set(ylim=(-0.02, 1.02), ylabel="Dice", title="Segmentation overlap per study")
    ax.grid(alpha=0.3, axis="y")
    return png_data_uri(fig)


# ------------------------------------------------------------------------------------------------ sections
def _kpis(m: dict[str, Any]) -> str:
    c, d = m["classification"], m["detection"]
    items = [("Macro AUC (6 classes)", fmt_ci(c["macro_auc"])), ("Macro F1", fmt_ci(c["macro_f1"])),
             ("Accuracy", fmt_ci(c["accuracy"], pct=True)),
             ("Detection sensitivity", fmt_ci(d["sensitivity"], pct=True)),
             ("Detection specificity", fmt_ci(d["specificity"], pct=True)),
             ("Tumour Dice (mean)", fmt_ci(m["segmentation"]["tumour"]["dice"].get("mean")))]
    return "".join(f"<div class='kpi'><span class='muted'>{k}</span><b>{v}</b></div>" for k, v in items)


def _cohort(m: dict[str, Any]) -> str:
    co = m["cohort"]
    rows = [[_e(k), str(v)] for k, v in co["by_status"].items()]
    refs = [[_e(pretty(k) if k != "None" else "(no reference)"), str(v)] for k, v in co["by_reference"].items()]
    return (f"<p>{co['n_studies']} studies in the manifest; {co['n_detection']} analysed with a reference "
            f"(tumour detection); {co['n_classification']} classified with a reference tumour class (six-class "
            f"metrics); {co['n_failed']} failed or not applicable; {co['n_missed_detections']} missed "
            f"detection(s); {co['n_false_positive_detections']} false-positive detection(s); "
            f"{co['n_unlabelled']} without a reference.</p>"
            + "<div class='fig'><h3>Outcome of the application</h3>" + table(["status", "studies"], rows, [1]) + "</div>"
            + "<div class='fig'><h3>Reference standard</h3>" + table(["reference", "studies"], refs, [1]) + "</div>")


def _detection(d: dict[str, Any]) -> str:
    rows = [["Sensitivity (tumour found | tumour present)", fmt_ci(d["sensitivity"], pct=True)],
            ["Specificity (no tumour | no tumour present)", fmt_ci(d["specificity"], pct=True)],
            ["Positive predictive value", fmt_ci(d["ppv"], pct=True)],
            ["Negative predictive value", fmt_ci(d["npv"], pct=True)]]
    counts = f"TP {d['tp']}, FP {d['fp']}, FN {d['fn']}, TN {d['tn']} (n = {d['n']})"
    return table(["measure", "value (95% CI)"], rows) + f"<p class='muted'>{counts}</p>"


def _classification(c: dict[str, Any]) -> str:
    summary = table(["measure", "value (95% CI)"], [
        ["Macro one-vs-rest AUC", fmt_ci(c["macro_auc"])], ["Macro F1", fmt_ci(c["macro_f1"])],
        ["Accuracy", fmt_ci(c["accuracy"], pct=True)], ["Balanced accuracy", fmt_ci(c["balanced_accuracy"], pct=True)]])
    rows = []
    for name, p in c["per_class"].items():
        rows.append([_e(pretty(name)), str(p["n"]), fmt_ci(p["auc"]), fmt_ci(p["sensitivity"], pct=True),
                     fmt_ci(p["specificity"], pct=True), fmt_ci(p["ppv"], pct=True), fmt_ci(p["f1"])])
    per_class = table(["class", "n", "AUC", "sensitivity", "specificity", "PPV", "F1"], rows, [1])
    figs = []
    for fn, alt in ((plot_roc, "ROC curves"), (plot_confusion, "confusion matrix")):
        uri = fn(c)
        if uri:
            figs.append(_img(uri, alt))
    cal = plot_calibration(c.get("calibration"))
    if cal:
        figs.append(_img(cal, "reliability diagram"))
    if not figs:
        figs.append("<p class='bad'>No study was classified: no ROC curve, confusion matrix or calibration plot.</p>")
    return (f"<p>{c['n']} studies (reference tumour class, tumour found by the application).</p>" + summary
            + per_class + "".join(figs))


def _segmentation(m: dict[str, Any]) -> str:
    seg = m["segmentation"]
    rows = []
    for s in ("tumour", "hip_bone_left", "hip_bone_right"):
        b = seg[s]
        dice_b, ve = b["dice"], b["volume_error_ml"]
        rows.append([_e(pretty(s)), str(b["n"]), fmt_ci(dice_b.get("mean")),
                     fmt(dice_b.get("median")), fmt_ci(ve.get("mean"), 1),
                     fmt_ci(b["absolute_volume_error_ml"].get("mean"), 1)])
    out = table(["structure", "studies", "Dice, mean (95% CI)", "Dice, median", "volume error mL, mean (95% CI)",
                 "absolute volume error mL, mean (95% CI)"], rows, [1])
    uri = plot_dice(m["cases"])
    if uri:
        out += _img(uri, "Dice per structure")
    if seg["errors"]:
        out += "<h3>Studies whose segmentation could not be compared</h3>" + table(
            ["study", "reason"], [[_e(x["case_id"]), _e(x["error"])] for x in seg["errors"]])
    return out


def _subgroups(m: dict[str, Any]) -> str:
    if not m["subgroups"]:
        return "<p class='muted'>No subgroup column in the manifest.</p>"
    rows = []
    for col, groups in m["subgroups"].items():
        for v, g in groups.items():
            c, d = g["classification"], g["detection"]
            rows.append([_e(col), _e(v), str(g["n_studies"]), str(g["n_failed"]),
                         fmt_ci(d["sensitivity"], pct=True), fmt_ci(d["specificity"], pct=True), str(c["n"]),
                         fmt_ci(c["macro_auc"]), fmt_ci(c["accuracy"], pct=True), fmt_ci(g["tumour_dice"].get("mean"))])
    return table(["column", "value", "studies", "failed", "detection sensitivity", "detection specificity",
                  "classified", "macro AUC", "accuracy", "tumour Dice"], rows, [2, 3, 6])


def _readers(m: dict[str, Any]) -> str:
    if not m["readers"]:
        return "<p class='muted'>No reader column (<code>reader_&lt;name&gt;</code>) in the manifest.</p>"
    rows = []
    for name, r in m["readers"].items():
        d = r["macro_auc_model_minus_reader"]
        diff = "n/a" if d["difference"] is None else (
            f"{d['difference']:+.3f} ({fmt(d['ci_low'])}&ndash;{fmt(d['ci_high'])}), p = {fmt(d['p_value'])}")
        rows.append([_e(name), str(r["n"]), fmt_ci(r["reader"]["macro_auc"]), fmt_ci(r["model_same_cases"]["macro_auc"]),
                     diff, fmt_ci(r["reader"]["accuracy"], pct=True), fmt_ci(r["model_same_cases"]["accuracy"], pct=True)])
    return (table(["reader", "studies", "reader macro AUC", "model macro AUC", "model - reader (95% CI), p",
                   "reader accuracy", "model accuracy"], rows, [1])
            + "<p class='muted'>A reader gives one class, so the reader's per-class score is 1 for that class and 0 "
              "otherwise (one-vs-rest AUC = (sensitivity + specificity) / 2). Difference: paired stratified "
              "bootstrap on the same studies; two-sided bootstrap p-value.</p>")


def _ablation(m: dict[str, Any]) -> str:
    a = m.get("ablation")
    if not a:
        return "<p class='muted'>No ablation probabilities in the results.</p>"
    rows = []
    for e in a["variants"].values():
        d = e.get("macro_auc_all_minus_variant")
        diff = "" if not d or d["difference"] is None else (
            f"{d['difference']:+.3f} ({fmt(d['ci_low'])}&ndash;{fmt(d['ci_high'])}), p = {fmt(d['p_value'])}")
        rows.append([_e(e["label"]), fmt_ci(e["macro_auc"]), fmt_ci(e["macro_f1"]), fmt_ci(e["accuracy"], pct=True), diff])
    return (f"<p>{a['n']} studies; each variant's prediction is the class of highest probability.</p>"
            + table(["classifier inputs", "macro AUC", "macro F1", "accuracy", "all - variant, macro AUC (95% CI), p"], rows))


def _failures(m: dict[str, Any]) -> str:
    out = []
    if m["failures"]:
        out.append(table(["study", "status", "exit code", "reason"],
                         [[_e(f["case_id"]), _e(f["status"]), _e(f["exit_code"]), _e(f["reason"])] for f in m["failures"]]))
    else:
        out.append("<p>No study failed.</p>")
    out.append("<h3>Missed detections (reference tumour, application found none)</h3>")
    out.append(table(["study", "reference class"], [[_e(x["case_id"]), _e(pretty(x["truth"]))]
                                                     for x in m["missed_detections"]]) if m["missed_detections"] else "<p>None.</p>")
    out.append("<h3>False-positive detections (no reference tumour, application found one)</h3>")
    out.append(table(["study", "predicted class"], [[_e(x["case_id"]), _e(pretty(x["predicted_class"] or ""))]
                                                    for x in m["false_positive_detections"]])
               if m["false_positive_detections"] else "<p>None.</p>")
    if m["unlabelled"]:
        out.append(f"<p>Without a reference (not scored): {_e(', '.join(m['unlabelled']))}</p>")
    return "".join(out)


def _cases(m: dict[str, Any]) -> str:
    rows = []
    for c in m["cases"]:
        p = (c["probabilities"] or {}).get(c["predicted_class"]) if c["predicted_class"] else None
        seg = c.get("segmentation") or {}
        rows.append([_e(c["case_id"]), _e(pretty(c["truth"]) if c["truth"] else "-"), _e(c["status"]),
                     _e(pretty(c["predicted_class"]) if c["predicted_class"] else "-"), fmt(p, 2),
                     fmt((seg.get("tumour") or {}).get("dice")), fmt(c["tumour_volume_ml"], 1)])
    return table(["study", "reference", "status", "predicted", "probability", "tumour Dice", "tumour volume mL"],
                 rows, [4, 5, 6])


def _provenance(p: dict[str, Any], settings: dict[str, Any]) -> str:
    git = p.get("git") or {}
    rows = [["Software", _e(f"{p.get('software')} {p.get('software_version')}")],
            ["Git commit", _e(f"{git.get('commit')}" + (" (uncommitted changes)" if git.get("dirty") else ""))],
            ["Container image", _e(p.get("image") or "none (python -m app)")],
            ["Manifest", _e(f"{p['manifest']['path']}  sha256 {p['manifest']['sha256']}")],
            ["Bootstrap", _e(f"{settings['bootstrap_resamples']} resamples, seed {settings['seed']}, "
                             f"{settings['ci_method']}")],
            ["Date (UTC)", _e(p.get("date"))],
            ["Machine", _e(", ".join(f"{k}: {v}" for k, v in (p.get("machine") or {}).items()))],
            ["Execution", _e(", ".join(f"{k}: {v}" for k, v in (p.get("execution") or {}).items()))]]
    for name, e in (p.get("models") or {}).items():
        s = f"version {e.get('version')}, sha256 {e.get('sha256')}"
        for v, h in (e.get("variants") or {}).items():
            s += f"; variant {v} sha256 {h}"
        rows.append([_e(f"Model {name}"), _e(s)])
    if p.get("models_mismatch"):
        rows.append(["<span class='bad'>Model mismatch</span>",
                     _e("results were produced by other model files than the models folder: "
                        + ", ".join(p["models_mismatch"]))])
    return table(["item", "value"], rows)


METHODS = """
<ul>
<li><b>Studies counted.</b> Failures (status <code>error</code> or <code>not_applicable</code>) are listed and excluded
from every measure. Tumour detection uses every analysed study with a reference (reference <i>no tumour</i> included).
The six-class measures use studies with a reference tumour class in which the application found a tumour; a
reference tumour that the application did not find is a missed detection (listed above, not in the class measures).</li>
<li><b>Measures.</b> One-vs-rest AUC from the predicted probabilities; sensitivity, specificity, PPV and F1 from the
predicted class (highest probability). Macro AUC, macro F1 and balanced accuracy (mean sensitivity) average the
classes present in the reference standard.</li>
<li><b>95% confidence intervals.</b> Percentile bootstrap: studies resampled with replacement within each reference
class (stratified), the number of resamples and the seed as in the provenance.</li>
<li><b>Segmentation.</b> The application's DICOM SEG is read back and compared voxel by voxel with the reference label
map on the CT grid; volume error = application - reference (mL).</li>
<li><b>Calibration.</b> Probability of the predicted class against the fraction of correct predictions in ten equal
bins; ECE = weighted mean absolute gap.</li>
</ul>
"""


def render_html(m: dict[str, Any]) -> str:
    """The complete report page (self-contained: inline CSS, base64 PNG images, no script)."""
    p = m.get("provenance") or {}
    sections = [
        ("Summary", _kpis(m)),
        ("Cohort", _cohort(m)),
        ("Tumour detection", _detection(m["detection"])),
        ("Tumour classification (six classes)", _classification(m["classification"])),
        ("Segmentation", _segmentation(m)),
        ("Subgroups", _subgroups(m)),
        ("Readers", _readers(m)),
        ("Ablation of the classifier's inputs", _ablation(m)),
        ("Failed and excluded studies", _failures(m)),
        ("Per-study results", _cases(m)),
        ("Methods", METHODS),
        ("Provenance", _provenance(p, m["settings"])),
    ]
    body = "\n".join(f"<h2>{i}. {title}</h2>\n{content}" for i, (title, content) in enumerate(sections, start=1))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Validation report: sacral tumour MAP {_e(p.get('software_version'))}</title>
<style>{CSS}</style></head>
<body>
<h1>Validation report: sacral tumour classification from noncontrast pelvic CT</h1>
<p class="muted">Software {_e(p.get('software_version'))}, commit {_e((p.get('git') or {}).get('commit'))},
manifest sha256 {_e((p.get('manifest') or {}).get('sha256', '')[:16])}&hellip;, generated {_e(p.get('date'))}</p>
<div class="banner">Research use only. Figures describe this cohort and these model files; see the provenance section.</div>
{body}
</body></html>
"""
