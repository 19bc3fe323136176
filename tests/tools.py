"""External tools the tests need (validators, a browser, a PACS): one rule for when one is missing.

On a developer machine a missing tool skips the test with the way to install it; under CI (environment
variable ``CI`` set: ``.ci/run`` exports ``CI=1``) it fails, so that CI never goes green without the check.
"""
from __future__ import annotations

import os
import shutil

import pytest


def unavailable(reason: str) -> None:
    """Skip with ``reason`` on a developer machine; fail under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"[CI] {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(*names: str, install: str) -> str:
    """The path of the first of ``names`` found on PATH; else skip (fail under CI) saying ``install``."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    unavailable(f"{' / '.join(names)} not installed ({install})")
    raise AssertionError("unreachable")  # pytest.skip and pytest.fail raise
