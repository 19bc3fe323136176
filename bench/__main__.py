"""Benchmark: our full pipeline against the SDK's stock single-model pipeline on one full-size study.

``python -m bench [--work DIR] [--device cpu|cuda|auto] [--skip-stock] [--models DIR]`` (``make bench``):

1. generates (once per work folder) a full-size phantom study with ``training.phantom``: 512 x 512, >= 300
   slices of 1 mm, plus a localizer and a contrast-enhanced series of the same study;
2. checks that our input stage decodes pixel data of the selected series only (counts the files that
   ``core.dicom_input.load_volume`` decodes, against the files in the folder);
3. runs ``python -m app`` (two segmentations, classification, SEG, SR) and ``python -m bench.stock_app``
   (DICOMDataLoader -> SeriesSelector -> SeriesToVolume -> MonaiSegInference with the hip-bone model ->
   DICOMSegmentationWriter) on it, each in its own process, measuring wall time and the peak resident memory of
   the process tree (psutil, polled every 50 ms) and the bytes it read;
4. prints per-stage times (ours from result.json ``timings_s``, the stock app's per operator), the ratio of the
   two wall times and the peak memory, and writes everything with a description of the machine to
   ``bench/results/<date>-<host>.json`` and ``bench/results/latest.json``.

Targets (this 2-core machine, no GPU): ratio ours / stock <= 1.0; our peak memory <= 4 GiB.
The stock pipeline's Orientationd needs ``nibabel``, which our application does not: it is installed into
``WORK/deps`` (``pip install --target``) when missing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from app.launch import app_command

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TARGET_RATIO = 1.0
TARGET_PEAK_GIB = 4.0


# --------------------------------------------------------------------------------------------- measuring
def measure(cmd: list[str], env: dict[str, str], log: Path, interval: float = 0.05) -> dict[str, Any]:
    """Run ``cmd``; wall time, peak RSS of the process tree (bytes), bytes read (rchar) and the exit code."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        peak, read = 0, {}
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                    read[p.pid] = p.io_counters().read_chars
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak = max(peak, rss)
            time.sleep(interval)
        rc = proc.wait()
    return {"wall_s": round(time.perf_counter() - t0, 2), "peak_rss_bytes": peak,
            "peak_rss_gib": round(peak / 2**30, 3), "read_bytes": int(sum(read.values())), "exit_code": rc,
            "log": str(log)}


def machine(device: str) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions = {}
    for mod in ("torch", "monai", "holoscan", "pydicom", "highdicom", "SimpleITK", "numpy"):
        try:
            from importlib.metadata import version
            versions[mod] = version({"holoscan": "holoscan-cu13"}.get(mod, mod))
        except Exception:  # noqa: BLE001
            versions[mod] = None
    return {"host": socket.gethostname(), "cpu_model": cpu, "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "gpu": gpu, "device_requested": device, "python": platform.python_version(), "versions": versions,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


# ------------------------------------------------------------------------------------------------- steps
def generate(work: Path, seed: int) -> Path:
    """The full-size study (generated once per work folder); returns its DICOM folder."""
    manifest = work / "study" / "manifest.csv"
    if not manifest.is_file():
        from training.phantom import generate_cohort

        t0 = time.perf_counter()
        generate_cohort(work / "study", n=1, seed=seed, full_size=True, classes=["chordoma"], localizer=True,
                        contrast_series=True)
        print(f"generated the full-size study in {time.perf_counter() - t0:.0f} s")
    import csv

    with open(manifest, newline="") as fh:
        row = next(csv.DictReader(fh))
    return work / "study" / row["dicom_dir"]


def decoded_files(dicom_dir: Path) -> dict[str, Any]:
    """How many files our input stage decodes: scan (headers only) + selection + load of the selected series."""
    import core.dicom_input as di
    from core.dicom_header import scan_folder
    from core.series_selection import select_series

    decoded: list[str] = []
    original = di.pixel_array

    def counting(path: Any, *a: Any, **k: Any) -> Any:
        decoded.append(str(path))
        return original(path, *a, **k)

    di.pixel_array = counting
    try:
        t0 = time.perf_counter()
        scan = scan_folder(dicom_dir)
        t_scan = time.perf_counter() - t0
        n_after_scan = len(decoded)
        sel = select_series(scan)
        loaded = di.load_volume(sel.series)
        t_total = time.perf_counter() - t0
    finally:
        di.pixel_array = original
    n_files = sum(s.n_files for s in scan.series)
    return {"files_in_folder": n_files, "series_in_folder": len(scan.series),
            "selected_series_files": sel.series.n_files, "decoded_during_scan": n_after_scan,
            "decoded_total": len(decoded), "only_selected_series_decoded":
                n_after_scan == 0 and sorted(decoded) == sorted(str(p) for p in sel.series.files),
            "selected": sel.reason, "volume_shape": list(loaded.volume.shape),
            "scan_s": round(t_scan, 3), "scan_select_load_s": round(t_total, 3)}


def ensure_nibabel(work: Path) -> str | None:
    """A PYTHONPATH entry providing nibabel for the stock app (None when the environment has it)."""
    try:
        import nibabel  # noqa: F401
        return None
    except ImportError:
        pass
    deps = work / "deps"
    if not (deps / "nibabel").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(deps),
                        "nibabel"], check=True)
    return str(deps)


def _config(work: Path, device: str) -> Path:
    import yaml

    cfg = yaml.safe_load((REPO / "app" / "app.yaml").read_text())
    cfg["models"]["device"] = device
    path = work / "app.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "sacral-bench",
                    help="work folder: the generated study and the outputs (kept between runs)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    ap.add_argument("--models", type=Path, default=REPO / "models")
    ap.add_argument("--seed", type=int, default=20261127)
    ap.add_argument("--skip-stock", action="store_true", help="measure our pipeline only")
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))

    info = machine(a.device)
    dicom_dir = generate(work, a.seed)
    decode = decoded_files(dicom_dir)
    print(f"input: {decode['files_in_folder']} files in {decode['series_in_folder']} series; decoded "
          f"{decode['decoded_total']} (selected series: {decode['selected_series_files']} files; during the "
          f"header scan: {decode['decoded_during_scan']}) -> only the selected series decoded: "
          f"{decode['only_selected_series_decoded']}")

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if a.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    runs: dict[str, Any] = {}
    out = work / "out_ours"
    shutil.rmtree(out, ignore_errors=True)
    ours = measure(app_command(dicom_dir, out, a.models.resolve(), "--config", str(_config(work, a.device))),
                   env, work / "ours.log")
    result = json.loads((out / "result.json").read_text()) if (out / "result.json").is_file() else {}
    ours.update(status=result.get("status"), timings_s=result.get("timings_s"),
                devices={k: v.get("device") for k, v in (result.get("models") or {}).items()})
    runs["ours"] = ours
    if not a.skip_stock:
        out = work / "out_stock"
        shutil.rmtree(out, ignore_errors=True)
        senv = dict(env)
        extra = ensure_nibabel(work)
        if extra:
            senv["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
        stock = measure([sys.executable, "-m", "bench.stock_app", "-i", str(dicom_dir), "-o", str(out), "-m",
                         str(a.models.resolve())], senv, work / "stock.log")
        t = out / "stock_timings.json"
        stock["timings_s"] = json.loads(t.read_text()) if t.is_file() else None
        runs["stock"] = stock

    report: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"), "machine": info,
        "study": {"dicom_dir": str(dicom_dir), "shape_dhw": decode["volume_shape"],
                  "voxels": int(decode["volume_shape"][0] * decode["volume_shape"][1] * decode["volume_shape"][2])},
        "input_decoding": decode, "runs": runs,
    }
    print(f"\nours  ({ours['status']}, devices {ours['devices']}): wall {ours['wall_s']:.1f} s, peak RSS "
          f"{ours['peak_rss_gib']:.2f} GiB, read {ours['read_bytes'] / 2**20:.0f} MiB, exit {ours['exit_code']}")
    for k, v in (ours.get("timings_s") or {}).items():
        print(f"    {k:28s} {v:8.2f} s")
    if "stock" in runs:
        s = runs["stock"]
        print(f"stock (hip-bone model only): wall {s['wall_s']:.1f} s, peak RSS {s['peak_rss_gib']:.2f} GiB, "
              f"read {s['read_bytes'] / 2**20:.0f} MiB, exit {s['exit_code']}")
        for k, v in (s.get("timings_s") or {}).items():
            print(f"    {k:28s} {v:8.2f} s")
        ratio = ours["wall_s"] / s["wall_s"] if s["wall_s"] else None
        report["ratio_ours_to_stock"] = round(ratio, 3) if ratio else None
        print(f"\nratio ours / stock (wall): {ratio:.2f} (target <= {TARGET_RATIO})")
    report["targets"] = {"ratio_max": TARGET_RATIO, "peak_gib_max": TARGET_PEAK_GIB,
                         "ratio_met": report.get("ratio_ours_to_stock") is not None
                         and report["ratio_ours_to_stock"] <= TARGET_RATIO,
                         "peak_met": ours["peak_rss_gib"] <= TARGET_PEAK_GIB}
    vox = report["study"]["voxels"]
    report["memory_model"] = {"bytes_per_voxel_upper_bound": round(ours["peak_rss_bytes"] / vox, 2)}
    print(f"our peak memory: {ours['peak_rss_gib']:.2f} GiB (target <= {TARGET_PEAK_GIB} GiB); "
          f"{ours['peak_rss_bytes'] / vox:.1f} bytes per voxel of the {vox / 1e6:.1f} M-voxel series, all included")

    a.results.mkdir(parents=True, exist_ok=True)
    name = f"{dt.date.today().isoformat()}-{info['host']}{'' if a.device == 'cpu' else '-' + a.device}.json"
    text = json.dumps(report, indent=2) + "\n"
    (a.results / name).write_text(text)
    (a.results / "latest.json").write_text(text)
    print(f"written {a.results / name}")
    ok = ours["exit_code"] == 0 and runs.get("stock", {"exit_code": 0})["exit_code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
