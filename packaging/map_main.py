"""MAP entry point, installed as /opt/holoscan/app/__main__.py.

app.json's command is ``python3 /opt/holoscan/app`` (what holoscan-cli writes for a Python application
folder). /opt/holoscan/app holds the repository's packages side by side (app/, operators/, core/), so this
file runs the package ``app`` exactly as ``python -m app`` does from the repository root; command-line
arguments pass through (none in a hosted run: the app then reads the HOLOSCAN_* variables).

``app.__main__`` makes sure ``libcudart.so.13`` is loaded before holoscan is imported (``app/runtime.py``).
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path


def main() -> None:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    os.environ.setdefault("HOLOSCAN_APPLICATION", here)
    runpy.run_module("app", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
