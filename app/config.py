"""Find and read the application configuration (``app.yaml``) into a typed :class:`core.config.AppConfig`.

Looked up in this order: the path given (``--config``), ``HOLOSCAN_CONFIG_PATH`` (set in the MAP image to
/var/holoscan/app.yaml), then ``app/app.yaml`` beside this file. Parsing, checking and every default live in
:mod:`core.config`.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from core.config import AppConfig, parse_config

DEFAULT_CONFIG = Path(__file__).with_name("app.yaml")


def load_config(path: Path | None = None) -> AppConfig:
    """The parsed configuration; raises ValueError with a one-line reason (naming the key) when it is unusable."""
    path = Path(path or os.environ.get("HOLOSCAN_CONFIG_PATH") or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read configuration {path}: {type(e).__name__}") from None
    return parse_config(raw or {}, str(path))
