"""Read the application configuration (``app.yaml``).

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
    return cfg
