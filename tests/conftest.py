"""Shared fixtures: the repository's models, generated phantom studies, and running the real application.

The application is run as deployed: ``python -m app -i IN -o OUT -m MODELS`` in a subprocess
(:func:`app.launch.run_app`). Every test carries one tier marker (``unit``, ``app`` or ``system``,
registered in pyproject.toml); a test without one is a collection error.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import pytest

from app.launch import AppRun, run_app, run_apps

__all__ = ["MODELS", "REPO", "SHARED_DATA", "AppRun", "assert_nested_close", "run_app", "run_apps"]

REPO = Path(__file__).resolve().parents[1]
TIERS = ("unit", "app", "system")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test belongs to a tier: one without a tier marker is an error (it would escape the tier selections
    silently). A test of a ``unit`` module marked ``app`` or ``system`` itself belongs to that slower tier
    (``make test-fast`` selects ``unit and not app and not system``)."""
    untiered = [item.nodeid for item in items if not any(item.get_closest_marker(t) for t in TIERS)]
    if untiered:
        raise pytest.UsageError(f"tests without a tier marker ({', '.join(TIERS)}): {', '.join(untiered[:10])}")
SHARED_DATA = REPO.parent / "shared" / "data"


def assert_nested_close(a: Any, b: Any, *, rel: float, abs_tol: float, path: str = "") -> None:
    """``a`` equals ``b`` through nested dicts and lists, numbers where either side is a float to within ``rel``
    (relative) or ``abs_tol`` (absolute), everything else exactly; the message names the path that differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_nested_close(a[k], b[k], rel=rel, abs_tol=abs_tol, path=f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_nested_close(x, y, rel=rel, abs_tol=abs_tol, path=f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), f"{path}: {a!r} != {b!r}"
        assert math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
MODELS = Path(os.environ.get("SACRAL_TEST_MODELS", REPO / "models"))


@pytest.fixture(scope="session")
def models_dir() -> Path:
    if not (MODELS / "hip_bone_seg" / "metadata.json").is_file():
        pytest.fail(f"no models in {MODELS}: run `python -m training.train_all` (see models/README.md)")
    return MODELS


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> dict[str, tuple[dict, AppRun]]:
    """Two generated studies (a chordoma and one without tumour), each run once through the app per session:
    ``{"tumour": (manifest row + "root", run), "none": (...)}``."""
    from training.phantom import generate_cohort

    root = tmp_path_factory.mktemp("app_studies")
    manifest = generate_cohort(root / "cohort", n=2, seed=424242, classes=["chordoma"], no_tumour_fraction=0.5,
                               workers=2)
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    runs = run_apps([(manifest.parent / r["dicom_dir"], root / "out" / r["case_id"]) for r in rows], models_dir)
    return {("tumour" if row["tumour_class"] != "none" else "none"): (dict(row, root=str(manifest.parent)), run)
            for row, run in zip(rows, runs)}


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> AppRun:
    """The real 20-slice vendor series (contrast-enhanced abdomen, no pelvis) run once through the app."""
    real = SHARED_DATA / "real_ct_abdomen_j2k"
    if not real.is_dir():
        pytest.fail(f"{real} missing: ../shared/data must be beside the repository")
    return run_app(real, tmp_path_factory.mktemp("real_run") / "out", models_dir)


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated cohort (one case per tumour class plus one without tumour); returns manifest.csv."""
    from training.phantom import TUMOUR_CLASSES, generate_cohort

    out = tmp_path_factory.mktemp("phantom_cohort")
    return generate_cohort(out, n=7, seed=20261127, classes=list(TUMOUR_CLASSES) + ["none"], workers=2)
