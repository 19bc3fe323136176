"""Read the application configuration (``app.yaml``).

The ``outputs:`` section is checked here (:func:`check_outputs`) and completed with its defaults.

Looked up in this order: ``HOLOSCAN_CONFIG_PATH`` (set in the MAP image to /var/holoscan/app.yaml), then
``app/app.yaml`` beside this file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path(__file__).with_name("app.yaml")


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The parsed configuration; raises ValueError with a one-line reason when it is unusable."""
    path = Path(path or os.environ.get("HOLOSCAN_CONFIG_PATH") or DEFAULT_CONFIG)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read configuration {path}: {type(e).__name__}") from None
    for key in ("application", "series_selection", "models"):
        if key not in (cfg or {}):
            raise ValueError(f"configuration {path} lacks the '{key}' section")
    cfg["outputs"] = check_outputs(cfg.get("outputs"), path)
    return cfg


#: defaults of the ``outputs:`` section (a configuration without it writes everything)
OUTPUT_DEFAULTS: dict[str, Any] = {"key_images": True, "key_object_selection": True, "kos_title": "of_interest"}


def check_outputs(section: Any, path: Path | str = "app.yaml") -> dict[str, Any]:
    """The ``outputs:`` section with defaults filled in; ValueError for unknown keys or values."""
    from core.codes import KOS_TITLES

    section = {} if section is None else section
    if not isinstance(section, dict):
        raise ValueError(f"configuration {path}: 'outputs' must be a mapping")
    unknown = sorted(set(section) - set(OUTPUT_DEFAULTS))
    if unknown:
        raise ValueError(f"configuration {path}: unknown 'outputs' key(s) {unknown}; known: {sorted(OUTPUT_DEFAULTS)}")
    out = {**OUTPUT_DEFAULTS, **section}
    for key in ("key_images", "key_object_selection"):
        if not isinstance(out[key], bool):
            raise ValueError(f"configuration {path}: outputs.{key} must be true or false, got {out[key]!r}")
    if out["kos_title"] not in KOS_TITLES:
        raise ValueError(f"configuration {path}: outputs.kos_title must be one of {sorted(KOS_TITLES)}, "
                         f"got {out['kos_title']!r}")
    return out
