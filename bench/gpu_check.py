"""GPU check of the network stages: mixed-precision inference on CUDA against the CPU reference.

The lent GPU machines carry no SimpleITK/Holoscan/DICOM stack, so the check is split in two:

    python -m bench.gpu_check prepare --study DICOM_DIR --out DIR   # here: model inputs + CPU reference
    python -m bench.gpu_check run --data DIR --out RESULT.json      # on the GPU machine (torch + MONAI only)

``prepare`` builds, with the application's own preprocessing, the model-grid inputs of both segmentation
models and the classifier crop + standardised tabular vector of the study's reference tumour, and stores the
CPU (float32) predictions. ``run`` loads the same TorchScript models (sha256 checked) on CUDA, times
sliding-window inference with float16 autocast (first call and steady state), and reports agreement with the
CPU reference (Dice per label on the model grid, largest probability difference of the classifier).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from core.inference import predict_proba, predict_probabilities
from core.models import load_model, load_variant

REPO = Path(__file__).resolve().parents[1]
SEG_MODELS = ("hip_bone_seg", "tumour_seg")


def prepare(study: Path, label_path: Path, out: Path, models: Path) -> None:
    import SimpleITK as sitk

    from core import clinical, hip_frame
    from core.classify import tumour_crop
    from core.dicom_header import scan_folder
    from core.dicom_input import load_volume
    from core.segment import model_input
    from core.series_selection import select_series
    from core.volume import from_sitk

    out.mkdir(parents=True, exist_ok=True)
    loaded = load_volume(select_series(scan_folder(study)).series)
    ct = loaded.volume
    arrays: dict[str, np.ndarray] = {}
    cpu = torch.device("cpu")
    for name in SEG_MODELS:
        m = load_model(models, name, cpu)
        _, image = model_input(ct, m.metadata)
        t0 = time.perf_counter()
        probs = predict_probabilities(m.module, image, m.metadata, cpu)
        arrays[f"{name}_cpu_s"] = np.array(time.perf_counter() - t0)
        arrays[f"{name}_input"] = image.astype(np.float16)
        arrays[f"{name}_ref"] = probs.argmax(0).astype(np.uint8)
    labels = from_sitk(sitk.ReadImage(str(label_path)))
    labels = labels.with_array(labels.array.astype(np.uint8))
    clf = load_model(models, "tumour_classifier", cpu)
    crop = tumour_crop(ct, labels.array == 3, clf.metadata.clf.crop)
    loc = hip_frame.tumour_location(labels, 3, hip_frame.hip_frame_from_labels(labels))
    values = {"sex": clinical.sex(loaded.datasets[0]), "age_years": clinical.age_years(loaded.datasets[0]),
              "tumour_volume_ml": clinical.tumour_volume_ml(labels.array == 3, labels.voxel_volume_ml),
              **dict(zip(("loc_u", "loc_v", "loc_w"), loc["location_hip_frame"]))}
    tab, _ = clinical.standardise(values, clf.metadata.clf.features)
    arrays["crop"], arrays["tabular"] = crop, tab
    arrays["clf_ref"] = predict_proba(clf.module, crop, tab, cpu)
    arrays["ct_shape"] = np.array(ct.shape)
    np.savez_compressed(out / "gpu_check.npz", **arrays)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / s) if s else 1.0


def run(data: Path, out: Path, models: Path, repeats: int = 5) -> dict:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    dev = torch.device("cuda")
    z = np.load(data / "gpu_check.npz")
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                    "host": platform.node(), "ct_shape_dhw": z["ct_shape"].tolist(), "models": {}}
    for name in SEG_MODELS:
        m = load_model(models, name, dev)
        image = z[f"{name}_input"].astype(np.float32)
        t0 = time.perf_counter()
        probs = predict_probabilities(m.module, image, m.metadata, dev)
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            probs = predict_probabilities(m.module, image, m.metadata, dev)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        pred, ref = probs.argmax(0), z[f"{name}_ref"]
        values = sorted(set(np.unique(ref)) - {0})
        report["models"][name] = {
            "model_grid_dhw": list(image.shape[1:]), "first_call_s": round(first, 3),
            "steady_s_median": round(float(np.median(times)), 4),
            "cpu_fp32_s_here": round(float(z[f"{name}_cpu_s"]), 3),
            "dice_vs_cpu_fp32": {int(v): round(_dice(pred == v, ref == v), 4) for v in values},
            "voxel_agreement": round(float((pred == ref).mean()), 6)}
    clf = load_model(models, "tumour_classifier", dev)
    variants = {v: load_variant(clf, v) for v in clf.metadata.clf.variants}
    p = predict_proba(clf.module, z["crop"], z["tabular"], dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        p = predict_proba(clf.module, z["crop"], z["tabular"], dev)
        for mod in variants.values():
            predict_proba(mod, z["crop"], z["tabular"], dev)
    torch.cuda.synchronize()
    report["models"]["tumour_classifier"] = {
        "steady_s_with_variants": round((time.perf_counter() - t0) / repeats, 4),
        "max_abs_prob_diff_vs_cpu": float(np.abs(p - z["clf_ref"]).max()),
        "same_class_as_cpu": bool(p.argmax() == z["clf_ref"].argmax())}
    report["gpu_network_total_s"] = round(sum(v.get("steady_s_median", v.get("steady_s_with_variants", 0.0))
                                              for v in report["models"].values()), 3)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--study", type=Path, required=True, help="DICOM folder of a full-size phantom case")
    p.add_argument("--labels", type=Path, required=True, help="its reference labels.nii.gz")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--models", type=Path, default=REPO / "models")
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--models", type=Path, default=REPO / "models")
    a = ap.parse_args(argv)
    if a.cmd == "prepare":
        prepare(a.study, a.labels, a.out, a.models)
    else:
        run(a.data, a.out, a.models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
