"""Provenance of a validation run: software version, git commit, models, manifest, seed, date, machine."""
from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from core.models import ModelError, read_metadata, sha256_of

REPO = Path(__file__).resolve().parents[1]


def software_version(app_yaml: Path = REPO / "app" / "app.yaml") -> str:
    try:
        return str(yaml.safe_load(app_yaml.read_text())["application"]["version"])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return "unknown"


def git_commit(repo: Path = REPO) -> dict[str, Any]:
    """``{"commit": sha or 'unknown', "dirty": bool | None}`` (dirty: tracked files modified)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=20, check=True).stdout.strip()
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                            capture_output=True, text=True, timeout=20, check=True).stdout
        return {"commit": sha or "unknown", "dirty": bool(st.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def models_provenance(models_dir: Path | None) -> dict[str, Any]:
    """name -> {version, sha256, variants: {name: sha256}} from each ``<models>/<name>/metadata.json``."""
    out: dict[str, Any] = {}
    if models_dir is None or not Path(models_dir).is_dir():
        return out
    for meta_path in sorted(Path(models_dir).glob("*/metadata.json")):
        try:
            meta = read_metadata(meta_path.parent)
        except (OSError, ModelError):
            out[meta_path.parent.name] = {"error": "unreadable metadata.json"}
            continue
        entry: dict[str, Any] = {"version": meta.version, "sha256": meta.sha256}
        variants = meta.classification.variants if meta.classification is not None else {}
        if variants:
            entry["variants"] = {k: v.sha256 for k, v in sorted(variants.items())}
        out[meta_path.parent.name] = entry
    return out


def gpu_description() -> str:
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            names = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                   text=True, timeout=20).stdout.split("\n")
            names = [n.strip() for n in names if n.strip()]
            if names:
                return ", ".join(names)
        except (OSError, subprocess.SubprocessError):
            pass
    return "none"


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "gpu": gpu_description()}


def provenance(*, manifest: Path, models_dir: Path | None, seed: int, n_resamples: int, image: str | None,
               execution: dict[str, Any], results_models: dict[str, set[tuple[str, str]]]) -> dict[str, Any]:
    """The provenance block of metrics.json (``date`` is the only field that changes between identical runs)."""
    models = models_provenance(models_dir)
    seen = {name: [{"version": v, "sha256": s} for v, s in sorted(vals, key=str)]
            for name, vals in sorted(results_models.items())}
    mismatch = sorted(name for name, vals in results_models.items()
                      if name in models and {s for _, s in vals} != {models[name].get("sha256")})
    return {
        "software": "sacral-tumour MAP",
        "software_version": software_version(),
        "git": git_commit(),
        "image": image,
        "models_dir": str(models_dir) if models_dir else None,
        "models": models,
        "models_in_results": seen,
        "models_mismatch": mismatch,
        "manifest": {"path": str(manifest), "sha256": sha256_of(manifest)},
        "seed": seed,
        "bootstrap_resamples": n_resamples,
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": machine(),
        "execution": execution,
    }
